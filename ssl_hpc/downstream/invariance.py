"""Invariance check: does the encoder map augmented views of a galaxy close together?

For a seeded sample of galaxies, the encoder embeds each one's centre crop (the reference)
and one view under each augmentation code alone, then all codes together. Per code:

- ``same``: mean cosine distance between a galaxy's view and its reference;
- ``different``: mean cosine distance between references of two different galaxies;
- ``ratio`` = same / different: 0 = fully invariant, 1 = the view is as far from its
  galaxy as another galaxy is;
- ``reidentified``: fraction of views whose nearest reference is their own galaxy.

An encoder is often run on another survey than it was trained on: a code that survey
cannot support (PS without PSFs, GR on display values) is left out with its reason
(``skipped``), and views that do not fit its cutouts skip the whole check.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..augment import AugmentConfig, Augmenter, survey_stats, view_meta
from ..data.survey import Survey
from ..errors import ConfigError
from ..models.inference import centre_crops, embed
from ..utils.arrays import normalise


def invariance(
    encoder: torch.nn.Module,
    survey: Survey,
    config: AugmentConfig,
    n: int = 256,
    seed: int = 0,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> dict:
    """Per code of `config` (and "all" of them together): same, different, ratio and
    reidentified (see the module docstring), on `n` randomly chosen galaxies; the views
    are drawn on the CPU, the encoder (already on `device`) runs there. "skipped": the
    codes (or "all") this survey cannot be checked under, and why."""
    try:
        config.check_geometry(survey.manifest.image_shape[1:])
    except ConfigError as e:
        return {"n": 0, "different": float("nan"), "codes": {}, "skipped": {"all": str(e)}}
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(survey), min(n, len(survey)), replace=False))
    images = torch.from_numpy(survey.images(rows))
    meta = view_meta(survey, rows)
    stats = survey_stats(survey, config.psf_percentiles, config.extinction)
    crops = centre_crops(survey, rows, config.out_size)
    ref = normalise(embed(encoder, crops, device, precision=precision).numpy())
    pairs = rng.permutation(len(rows))
    pairs = np.where(pairs == np.arange(len(rows)), (pairs + 1) % len(rows), pairs)
    different = float(np.mean(1.0 - np.sum(ref * ref[pairs], axis=1)))
    augmenters, skipped = {}, {}
    for code in config.codes:
        try:
            augmenters[code] = Augmenter(
                dataclasses.replace(config, codes=(code,)), stats, seed, "reference"
            )
        except ConfigError as e:
            skipped[code] = str(e)
    usable = tuple(augmenters)
    if len(usable) > 1:
        augmenters["all"] = Augmenter(
            dataclasses.replace(config, codes=usable), stats, seed, "reference"
        )
    out = {"n": len(rows), "different": different, "codes": {}, "skipped": skipped}
    for name, aug in augmenters.items():
        views = aug(images, meta)
        views = normalise(embed(encoder, views, device, precision=precision).numpy())
        same = 1.0 - np.sum(views * ref, axis=1)
        nearest = np.argmax(views @ ref.T, axis=1)
        out["codes"][name] = {
            "same": float(same.mean()),
            "ratio": float(same.mean() / max(different, 1e-12)),
            "reidentified": float(np.mean(nearest == np.arange(len(rows)))),
        }
    return out
