"""The downstream metrics, as the papers define them.

Photometric redshift (Hayat et al. 2021, after Pasquet et al. 2019): with
dz = (z_p - z_s) / (1 + z_s), sigma_MAD = 1.4826 x median(|dz - median(dz)|), the outlier
rate eta = percentage of |dz| > 0.05, and the bias = mean(dz).
Morphology (Galaxy Zoo vote fractions as soft labels): accuracy on confident labels (the
winning answer has more than `confident` of the votes), cross-entropy against the vote
fractions, and the confusion matrix of the confident labels (rows: true answer).
"""

from __future__ import annotations

import numpy as np

OUTLIER_DZ = 0.05


def photoz_metrics(z_pred: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """sigma_MAD, eta (%) and bias of dz = (z_p - z_s)/(1 + z_s)."""
    z_pred, z_true = np.asarray(z_pred, np.float64), np.asarray(z_true, np.float64)
    if z_pred.shape != z_true.shape or z_true.size == 0:
        raise ValueError(f"photoz_metrics: shapes {z_pred.shape} and {z_true.shape}")
    dz = (z_pred - z_true) / (1 + z_true)
    return {
        "sigma_mad": float(1.4826 * np.median(np.abs(dz - np.median(dz)))),
        "eta": float(100 * np.mean(np.abs(dz) > OUTLIER_DZ)),
        "bias": float(np.mean(dz)),
    }


def morphology_metrics(
    probs: np.ndarray, votes: np.ndarray, confident: float = 0.8
) -> dict[str, object]:
    """Accuracy on confident labels, soft cross-entropy (nats) and the confident confusion
    matrix, for predicted class probabilities `probs` (N, C) and vote fractions `votes`."""
    probs, votes = np.asarray(probs, np.float64), np.asarray(votes, np.float64)
    if probs.shape != votes.shape or probs.ndim != 2:
        raise ValueError(f"morphology_metrics: shapes {probs.shape} and {votes.shape}")
    n_classes = probs.shape[1]
    sure = votes.max(axis=1) > confident
    truth, guess = votes.argmax(axis=1)[sure], probs.argmax(axis=1)[sure]
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (truth, guess), 1)
    return {
        "accuracy": float(np.mean(truth == guess)) if sure.any() else float("nan"),
        "n_confident": int(sure.sum()),
        "cross_entropy": float(-np.mean(np.sum(votes * np.log(np.clip(probs, 1e-12, 1)), 1))),
        "confusion": confusion.tolist(),
    }
