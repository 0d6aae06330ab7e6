"""A cheap representation-quality check during training: kNN on a labelled subset.

Leave-one-out k nearest neighbours (cosine) in the encoder's representation of centre
crops: accuracy and balanced accuracy of a morphology label (Galaxy Zoo 2-like smooth vs
featured, or the merged Galaxy Zoo 1 class) by the neighbours' majority, and photo-z
sigma_MAD / outlier rate from the neighbours' median spectroscopic redshift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.labels import GZ1_QUESTION, spec_z, vote_fractions
from ..data.survey import Survey
from ..metrics import class_scores, photoz_metrics
from ..models.inference import centre_crops


@dataclass
class EvalSet:
    """Centre crops (N, bands, S, S) with their labels: z (NaN unknown), morph (-1 unknown)."""

    images: torch.Tensor
    z: np.ndarray
    morph: np.ndarray


def load_eval_set(survey: Survey, n: int, size: int, seed: int = 0) -> EvalSet | None:
    """Up to `n` objects with a spectroscopic redshift or a Galaxy Zoo answer (None if the
    survey has neither)."""
    z = spec_z(survey)  # placeholders (-9999) are no redshift
    morph = morphology_classes(survey)
    pool = np.flatnonzero(np.isfinite(z) | (morph >= 0))
    if len(pool) < 10:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(pool, min(n, len(pool)), replace=False))
    return EvalSet(centre_crops(survey, rows, size), z[rows], morph[rows])


def morphology_classes(survey: Survey) -> np.ndarray:
    """Per object, the morphology class the kNN check predicts (-1 unknown): Galaxy Zoo 2
    smooth (0) or featured (1) by the larger vote, else the merged Galaxy Zoo 1 class."""
    cols = survey.manifest.columns
    morph = np.full(len(survey), -1, np.int64)
    if "gz2_smooth" in cols and "gz2_features" in cols:
        smooth, feat = survey.column("gz2_smooth"), survey.column("gz2_features")
        return np.where(np.isfinite(smooth), (feat > smooth).astype(np.int64), -1)
    if "class" in cols:
        rows, votes = vote_fractions(survey, GZ1_QUESTION.name)
        morph[rows] = votes.argmax(axis=1)
    return morph


def knn_metrics(features: torch.Tensor, eval_set: EvalSet, k: int = 20) -> dict[str, float]:
    """Leave-one-out kNN: morphology accuracy and balanced accuracy (majority of the k
    neighbours, ties to the lower class), photo-z sigma_MAD / eta (their median z)."""
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
        n_classes = int(labels.max()) + 1
        counts = np.stack([np.sum(labels[nn] == c, axis=1) for c in range(n_classes)], axis=1)
        vote = counts.argmax(axis=1)
        confusion = np.zeros((n_classes, n_classes), np.int64)
        np.add.at(confusion, (labels, vote), 1)
        out["knn_morph_acc"] = float(np.mean(vote == labels))
        out["knn_morph_bacc"] = class_scores(confusion)["balanced_accuracy"]
    return out
