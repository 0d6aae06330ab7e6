"""One galaxy and its augmented views, per augmentation code and combined."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from ..augment import AugmentConfig, Augmenter, survey_stats
from ..data import format as fmt
from ..data.survey import Survey
from .composite import composite_softening
from .grid import save_cutout_grid


def save_augment_grid(
    survey: Survey,
    row: int,
    codes: tuple[str, ...],
    out: str | os.PathLike,
    n_views: int = 6,
    seed: int = 0,
    config: AugmentConfig | None = None,
) -> int:
    """Write a grid: one row per code in `codes` (that code alone), then one row with all of
    them; the first column is the cutout itself. All panels share one stretch, so noise and
    dimming compare by eye. Returns the number of panels."""
    base = config or AugmentConfig()
    stats = survey_stats(survey, base.psf_percentiles, base.extinction)
    image = torch.from_numpy(survey.images(np.array([row]))).float()
    meta = {"psf_fwhm": torch.from_numpy(survey.per_band(fmt.PSF_FWHM)[[row]])}
    if "ebv" in survey.manifest.columns:
        meta["ebv"] = torch.from_numpy(survey.column("ebv")[[row]])
    original = image[0].numpy()
    softening = composite_softening(original, survey.bands)
    rows = [(c,) for c in codes] + ([tuple(codes)] if len(codes) > 1 else [])
    panels, captions = [], []
    oid = int(survey.column("object_id")[row])
    for combo in rows:
        cfg = dataclasses.replace(base, codes=combo)
        aug = Augmenter(cfg, stats, seed=seed, backend="reference")
        views = aug.views(image, meta, views_per_image=n_views).numpy()
        panels.append(original)
        captions.append(f"{oid}\n{original.shape[-1]}px original")
        for k, v in enumerate(views):
            panels.append(v)
            captions.append(f"{'+'.join(combo)} #{k + 1}")
    save_cutout_grid(
        panels,
        survey.bands,
        captions,
        out,
        ncols=n_views + 1,
        title=f"{survey.manifest.survey}: object {oid} under {'+'.join(codes)}",
        softening=softening,
    )
    return len(panels)
