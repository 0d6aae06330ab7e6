"""One galaxy and its augmented views, per augmentation code and combined: the panels of
`ssl-hpc show --augment` (drawn by `viz.grid`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import format as fmt
from ..data.survey import Survey
from ..errors import ConfigError
from .config import AugmentConfig, parse_codes
from .pipeline import Augmenter
from .stats import survey_stats


def views_by_code(
    survey: Survey,
    row: int,
    codes: tuple[str, ...],
    n_views: int = 6,
    seed: int = 0,
    config: AugmentConfig | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """(panels, captions): for each code in `codes` alone, then all of them together, the
    cutout at survey `row` followed by `n_views` views of it (reference backend)."""
    base = config or AugmentConfig()
    stats = survey_stats(survey, base.psf_percentiles, base.extinction)
    image = torch.from_numpy(survey.images(np.array([row]))).float()
    meta = {"psf_fwhm": torch.from_numpy(survey.per_band(fmt.PSF_FWHM)[[row]])}
    if "ebv" in survey.manifest.columns:
        meta["ebv"] = torch.from_numpy(survey.column("ebv")[[row]])
    original = image[0].numpy()
    combos = [(c,) for c in codes] + ([tuple(codes)] if len(codes) > 1 else [])
    panels, captions = [], []
    oid = int(survey.column("object_id")[row])
    for combo in combos:
        aug = Augmenter(dataclasses.replace(base, codes=combo), stats, seed, "reference")
        panels.append(original)
        captions.append(f"{oid}\n{original.shape[-1]}px original")
        for k, view in enumerate(aug.views(image, meta, views_per_image=n_views).numpy()):
            panels.append(view)
            captions.append(f"{'+'.join(combo)} #{k + 1}")
    return panels, captions


SELECTIONS = ("random", "labelled", "unlabelled", "anomalies", "first")


@dataclass(frozen=True)
class ShowConfig:
    """What `ssl-hpc show` draws: a grid of cutouts, or one galaxy under augmentations."""

    n: int = 24
    """cutouts in the grid; with views, views per code"""
    select: str = "random"
    """which objects: random, labelled (has z_spec), unlabelled, anomalies (synthetic
    truth), first (survey order)"""
    ids: tuple[int, ...] = ()
    """show these object ids instead"""
    ncols: int = 8
    """grid columns"""
    seed: int = 0
    """seed of the random selection"""
    views: tuple[str, ...] = ()
    """instead: one galaxy (the first selected, or ids) and n views per code given here
    (e.g. RR,JC,GN,GR,PS), one row per code and one with all combined"""
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ConfigError(f"select {self.select!r}: expected one of {SELECTIONS}")
        if self.n < 1 or self.ncols < 1:
            raise ConfigError(f"n {self.n}, ncols {self.ncols}: each must be at least 1")
        object.__setattr__(self, "views", parse_codes(self.views))
