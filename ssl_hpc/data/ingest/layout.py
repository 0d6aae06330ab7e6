"""The image side of an ingest: which files hold each object's cutout, and the survey's
resulting facts (bands, size, dtype, pixel scale, flux unit)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import IngestError
from ..cutouts import EXTENSIONS, CutoutSpec, format_of, pattern_fields
from ..shards import SurveyMeta
from .config import DEFAULT_DTYPE, DEFAULT_FLUX_UNIT, IngestConfig


def resolve_layout(config: IngestConfig, ids: np.ndarray) -> tuple[str, str]:
    """(image format, filename pattern): as given, or found from the files in the dir."""
    if not Path(config.images).is_dir():
        raise IngestError(f"{config.images}: images directory not found")
    image_format, pattern = config.image_format, config.pattern
    if pattern is None and image_format == "fits-per-band":
        pattern = "{id}-{band}.fits"
    if pattern is not None:
        if image_format == "auto":
            image_format = (
                "fits-per-band" if "band" in pattern_fields(pattern) else format_of(pattern)
            )
        if image_format is None:
            raise IngestError(f"pattern {pattern!r}: unknown extension; give the image format")
        return image_format, pattern
    ext = detect_extension(config.images, ids, image_format)
    return EXTENSIONS[ext.lower()] if image_format == "auto" else image_format, "{id}" + ext


def detect_extension(images: str, ids: np.ndarray, image_format: str) -> str:
    """The one extension of the ``{id}.<ext>`` files in `images` (one directory scan)."""
    wanted = {str(int(i)) for i in ids}
    allowed = {e for e, f in EXTENSIONS.items() if image_format in ("auto", f)}
    counts: dict[str, int] = {}
    with os.scandir(images) as entries:
        for entry in entries:
            stem, dot, ext = entry.name.partition(".")
            if dot and stem in wanted and f".{ext.lower()}" in allowed:
                counts[f".{ext}"] = counts.get(f".{ext}", 0) + 1
    if not counts:
        raise IngestError(
            f"{images}: no file named <id>.<ext> for any catalogue id "
            f"(ext one of {sorted(allowed)}); give the format and filename pattern"
        )
    if len(counts) > 1:
        raise IngestError(
            f"{images}: ids have files with several extensions {counts}; give the pattern"
        )
    return next(iter(counts))


def survey_meta(config: IngestConfig, spec: CutoutSpec, roles: dict[str, str]) -> SurveyMeta:
    """The survey-level facts: bands, cutout size, dtype, output pixel scale, roles."""
    dtype = config.image_dtype
    return SurveyMeta(
        survey=config.survey or Path(config.out).resolve().name,
        bands=config.bands,
        image_size=(spec.size, spec.size),
        image_dtype=DEFAULT_DTYPE.get(spec.format, "float32") if dtype == "auto" else dtype,
        pixel_scale_arcsec=config.input_pixel_scale * spec.crop / spec.size,
        flux_unit=config.flux_unit or DEFAULT_FLUX_UNIT.get(spec.format, "unknown"),
        roles=roles,
    )
