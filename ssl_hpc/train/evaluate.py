"""A cheap representation-quality check during training: kNN on a labelled subset.

Leave-one-out k nearest neighbours (cosine) in the encoder's representation of centre
crops: accuracy of a Galaxy Zoo-like morphology label (smooth vs featured) and photo-z
sigma_MAD / outlier rate from the neighbours' median spectroscopic redshift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.survey import Survey
from ..downstream.metrics import photoz_metrics


@dataclass
class EvalSet:
    """Centre crops (N, bands, S, S) with their labels: z (NaN unknown), morph (-1 unknown)."""

    images: torch.Tensor
    z: np.ndarray
    morph: np.ndarray


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The augmentations' unshifted window: offsets [-size//2, size - size//2) about
    pixel (H-1)//2."""
    h, w = images.shape[-2:]
    y0, x0 = (h - 1) // 2 - size // 2, (w - 1) // 2 - size // 2
    return images[..., y0 : y0 + size, x0 : x0 + size]


def centre_crops(survey: Survey, rows: np.ndarray, size: int) -> torch.Tensor:
    """(len(rows), bands, size, size) float32 centre crops of survey `rows`: what an
    encoder trained on `size` px views sees at evaluation."""
    images = centre_crop(survey.images(rows).astype(np.float32), size)
    return torch.from_numpy(np.ascontiguousarray(images))


def load_eval_set(survey: Survey, n: int, size: int, seed: int = 0) -> EvalSet | None:
    """Up to `n` objects with a spectroscopic redshift or a Galaxy Zoo answer (None if the
    survey has neither)."""
    cols = survey.manifest.columns
    z = survey.column("z_spec") if "z_spec" in cols else np.full(len(survey), np.nan)
    if "gz2_smooth" in cols and "gz2_features" in cols:
        smooth, feat = survey.column("gz2_smooth"), survey.column("gz2_features")
        morph = np.where(np.isfinite(smooth), (feat > smooth).astype(np.int64), -1)
    else:
        morph = np.full(len(survey), -1)
    pool = np.flatnonzero(np.isfinite(z) | (morph >= 0))
    if len(pool) < 10:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(pool, min(n, len(pool)), replace=False))
    return EvalSet(centre_crops(survey, rows, size), z[rows], morph[rows])


@torch.no_grad()
def embed(encoder: torch.nn.Module, images: torch.Tensor, device, batch: int = 256):
    """(N, D) float32 representations, encoder in eval mode (restored afterwards)."""
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [
            encoder(images[i : i + batch].to(device)).float().cpu()
            for i in range(0, len(images), batch)
        ]
    finally:
        encoder.train(was_training)
    return torch.cat(parts)


def knn_metrics(features: torch.Tensor, eval_set: EvalSet, k: int = 20) -> dict[str, float]:
    """Leave-one-out kNN: morphology accuracy and photo-z sigma_MAD / eta."""
    f = F.normalize(features.double(), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-np.inf)
    out: dict[str, float] = {}
    has_z = np.flatnonzero(np.isfinite(eval_set.z))
    if len(has_z) > k:
        s = sim[has_z][:, has_z]
        nn = s.topk(k, dim=1).indices.numpy()
        z = eval_set.z[has_z]
        m = photoz_metrics(np.median(z[nn], axis=1), z)
        out["knn_sigma_mad"], out["knn_eta"] = m["sigma_mad"], m["eta"]
    has_m = np.flatnonzero(eval_set.morph >= 0)
    if len(has_m) > k:
        s = sim[has_m][:, has_m]
        nn = s.topk(k, dim=1).indices.numpy()
        labels = eval_set.morph[has_m]
        vote = (labels[nn].mean(axis=1) > 0.5).astype(np.int64)
        out["knn_morph_acc"] = float(np.mean(vote == labels))
    return out
