"""Writing shards and assembling a survey's manifest from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import SurveyError
from ..utils.atomic import atomic_path
from ..utils.h5write import new_h5_file
from . import format as fmt
from .manifest import ColumnInfo, Manifest, ShardEntry


@dataclass(frozen=True)
class SurveyMeta:
    """Facts shared by every shard of a survey."""

    survey: str
    bands: tuple[str, ...]
    image_size: tuple[int, int]  # (H, W)
    image_dtype: str = "float16"
    compression: str | None = None
    pixel_scale_arcsec: float = fmt.SDSS_PIXEL_SCALE
    flux_unit: str = fmt.FLUX_UNIT
    roles: dict[str, str] = field(default_factory=dict)  # column -> role, where not default

    def __post_init__(self) -> None:
        if self.image_dtype not in fmt.IMAGE_DTYPES:
            raise SurveyError(
                f"image_dtype {self.image_dtype!r}: expected one of {fmt.IMAGE_DTYPES}"
            )
        if self.compression not in fmt.COMPRESSIONS:
            raise SurveyError(
                f"compression {self.compression!r}: expected one of {fmt.COMPRESSIONS}"
            )
        for name, role in self.roles.items():
            if role not in fmt.ROLES:
                raise SurveyError(f"column {name!r}: role {role!r} not one of {fmt.ROLES}")

    def role(self, column: str) -> str:
        return self.roles.get(column, fmt.default_role(column))


@dataclass
class ShardTable:
    """The rows of one shard in memory, before writing."""

    object_id: np.ndarray  # (N,) int64
    ra: np.ndarray  # (N,) float64 deg
    dec: np.ndarray  # (N,) float64 deg
    images: np.ndarray  # (N, B, H, W)
    psf_fwhm: np.ndarray  # (N, B) arcsec
    sky_sigma: np.ndarray  # (N, B) flux units
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) each

    def __len__(self) -> int:
        return int(self.object_id.shape[0])

    def validate(self, meta: SurveyMeta) -> None:
        """Raise SurveyError naming the first array whose shape or values break the format."""
        n = len(self)
        b = len(meta.bands)
        expect = {
            fmt.RA: (self.ra, (n,)),
            fmt.DEC: (self.dec, (n,)),
            fmt.IMAGE: (self.images, (n, b, *meta.image_size)),
            fmt.PSF_FWHM: (self.psf_fwhm, (n, b)),
            fmt.SKY_SIGMA: (self.sky_sigma, (n, b)),
        }
        expect.update({k: (v, (n,)) for k, v in self.columns.items()})
        for name, (arr, shape) in expect.items():
            if tuple(arr.shape) != shape:
                raise SurveyError(f"{name}: shape {tuple(arr.shape)}, expected {shape}")
        if self.object_id.dtype.kind not in "iu":
            raise SurveyError(f"object_id: dtype {self.object_id.dtype}, expected integers")
        if len(np.unique(self.object_id)) != n:
            raise SurveyError("object_id: duplicate ids within the shard")
        if not np.isfinite(self.images).all():
            raise SurveyError("image_array: NaN or inf pixels")
        if meta.image_dtype == "float16" and np.abs(self.images).max(initial=0) > 65504:
            raise SurveyError("image_array: pixel values overflow float16; use image_dtype=float32")
        clash = set(self.columns) & set(fmt.CORE_DATASETS)
        if clash:
            raise SurveyError(f"catalogue columns {sorted(clash)} clash with core datasets")


def write_shard(
    path: str | os.PathLike,
    table: ShardTable,
    meta: SurveyMeta,
    attrs: dict[str, Any] | None = None,
) -> ShardEntry:
    """Write `table` as one HDF5 shard at `path` (atomically) and return its manifest entry.

    Images are chunked one object per chunk (random access reads one chunk) with the
    Fletcher-32 checksum filter, so a corrupted chunk fails loudly on read.
    """
    path = Path(path)
    table.validate(meta)
    n = len(table)
    with atomic_path(path) as tmp:
        with new_h5_file(tmp, libver="latest") as f:
            f.attrs["schema_version"] = fmt.SCHEMA_VERSION
            f.attrs["survey"] = meta.survey
            f.attrs["pixel_scale_arcsec"] = meta.pixel_scale_arcsec
            f.attrs["flux_unit"] = meta.flux_unit
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
            f.create_dataset(fmt.OBJECT_ID, data=table.object_id.astype(np.int64))
            f.create_dataset(fmt.RA, data=table.ra.astype(np.float64))
            f.create_dataset(fmt.DEC, data=table.dec.astype(np.float64))
            f.create_dataset(fmt.BANDS, data=np.array([b.encode() for b in meta.bands]))
            f.create_dataset(
                fmt.IMAGE,
                data=table.images.astype(meta.image_dtype, copy=False),
                chunks=(1, *table.images.shape[1:]) if n else None,
                compression=meta.compression,
                fletcher32=n > 0,
            )
            f.create_dataset(fmt.PSF_FWHM, data=table.psf_fwhm.astype(np.float32))
            f.create_dataset(fmt.SKY_SIGMA, data=table.sky_sigma.astype(np.float32))
            for name, values in table.columns.items():
                f.create_dataset(name, data=values)
        entry = ShardEntry.of_file(tmp, n, name=path.name)
    return entry


def shard_contents(
    path: str | os.PathLike,
) -> tuple[dict[str, tuple[str, int]], np.ndarray, np.ndarray | None]:
    """One read of a written shard: its catalogue columns (name -> (dtype, rows with a
    value)), its object ids, and its ``healpix`` column if it has one."""
    cols = {}
    with h5py.File(path, "r") as f:
        for name, ds in f.items():
            if name in fmt.CORE_DATASETS or ds.ndim != 1:
                continue
            cols[name] = (str(ds.dtype), fmt.valid_count(ds[()]))
        ids = f[fmt.OBJECT_ID][()]
        pixel = f[fmt.HEALPIX][()] if fmt.HEALPIX in f else None
    return cols, ids, pixel


def shard_pixel(path: Path, pixel: np.ndarray | None) -> int:
    """The one HEALPix pixel of a partitioned shard's rows; SurveyError if it has none or
    several."""
    values = np.unique(pixel) if pixel is not None else np.empty(0)
    if len(values) != 1:
        found = "no healpix column" if pixel is None else f"pixels {values[:5].tolist()}"
        raise SurveyError(f"{path}: a partitioned shard must lie in one pixel; it has {found}")
    return int(values[0])


def build_manifest(
    survey_dir: str | os.PathLike,
    meta: SurveyMeta,
    entries: list[ShardEntry],
    generator: dict[str, Any] | None = None,
    healpix_order: int | None = None,
) -> Manifest:
    """Assemble and write the manifest of `survey_dir` from its shard entries.

    Column counts are summed from the shards themselves, so the manifest states what is on
    disk. Every shard must have the same columns with the same dtypes. With
    `healpix_order`, the survey is partitioned: each shard's pixel is read from its
    ``healpix`` column, which must hold one value.
    """
    survey_dir = Path(survey_dir)
    columns: dict[str, ColumnInfo] = {}
    first: dict[str, str] | None = None
    ids = []
    placed = []
    for entry in sorted(entries, key=lambda e: e.file):
        cols, shard_ids, pixel = shard_contents(survey_dir / entry.file)
        ids.append(shard_ids)
        if healpix_order is not None:
            entry = replace(entry, healpix=shard_pixel(survey_dir / entry.file, pixel))
        placed.append(entry)
        dtypes = {k: d for k, (d, _) in cols.items()}
        if first is None:
            first = dtypes
        elif dtypes != first:
            raise SurveyError(
                f"{survey_dir / entry.file}: columns {sorted(dtypes)} differ from other shards' "
                f"{sorted(first)}"
            )
        for name, (dtype, n_valid) in cols.items():
            prev = columns.get(name)
            total = n_valid + (prev.n_valid if prev else 0)
            columns[name] = ColumnInfo(dtype=dtype, role=meta.role(name), n_valid=total)
    # object_id must be unique over the whole survey, not only within each shard
    all_ids = np.sort(np.concatenate(ids)) if ids else np.empty(0, np.int64)
    dup = all_ids[1:][np.diff(all_ids) == 0]
    if len(dup):
        raise SurveyError(f"{survey_dir}: object_id {int(dup[0])} appears in more than one shard")
    manifest = Manifest(
        survey=meta.survey,
        bands=tuple(meta.bands),
        image_shape=(len(meta.bands), *meta.image_size),  # type: ignore[arg-type]
        image_dtype=meta.image_dtype,
        compression=meta.compression,
        pixel_scale_arcsec=meta.pixel_scale_arcsec,
        flux_unit=meta.flux_unit,
        shards=tuple(placed),
        columns=dict(sorted(columns.items())),
        generator=generator or {},
        partition=None
        if healpix_order is None
        else {"scheme": "healpix", "order": healpix_order, "nest": True},
    )
    manifest.write(survey_dir)
    return manifest
