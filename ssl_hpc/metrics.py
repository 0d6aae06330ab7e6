"""The downstream metrics, as the papers define them.

Photometric redshift (Hayat et al. 2021, after Pasquet et al. 2019): with
dz = (z_p - z_s) / (1 + z_s), sigma_MAD = 1.4826 x median(|dz - median(dz)|), the outlier
rate eta = percentage of |dz| > 0.05, and the bias = mean(dz).
Morphology (Galaxy Zoo vote fractions as soft labels): on confident labels (the winning
answer has more than `confident` of the votes) the accuracy, and, because the classes are
far from balanced (answering "elliptical" every time scores 0.71 on Galaxy Zoo 1), the
balanced accuracy (mean per-class recall), each class's recall and the macro-averaged F1;
the cross-entropy against the vote fractions, and the confusion matrix of the confident
labels (rows: true answer).
"""

from __future__ import annotations

import numpy as np

OUTLIER_DZ = 0.05


def photoz_metrics(z_pred: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """sigma_MAD, eta (%) and bias of dz = (z_p - z_s)/(1 + z_s). A non-finite prediction
    (a diverged network) counts as an outlier in eta, and makes sigma_MAD and bias NaN."""
    z_pred, z_true = np.asarray(z_pred, np.float64), np.asarray(z_true, np.float64)
    if z_pred.shape != z_true.shape or z_true.size == 0:
        raise ValueError(f"photoz_metrics: shapes {z_pred.shape} and {z_true.shape}")
    dz = (z_pred - z_true) / (1 + z_true)
    return {
        "sigma_mad": float(1.4826 * np.median(np.abs(dz - np.median(dz)))),
        "eta": float(100 * np.mean(~(np.abs(dz) <= OUTLIER_DZ))),
        "bias": float(np.mean(dz)),
    }


def morphology_metrics(
    probs: np.ndarray, votes: np.ndarray, confident: float = 0.8
) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-class recall and macro-F1 on confident labels, soft
    cross-entropy (nats) and the confident confusion matrix, for predicted class
    probabilities `probs` (N, C) and vote fractions `votes`.

    Balanced accuracy averages recall over the classes present among the confident labels
    (a class with no true member has no recall); macro-F1 averages F1 over the classes
    present or predicted, as sklearn does (a class never predicted has F1 0, and guesses of
    a class absent from the truth cost F1). With fewer than two classes present, both are
    NaN: there is nothing to tell apart, and either would read as plain accuracy.
    """
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
        **class_scores(confusion),
        "n_confident": int(sure.sum()),
        "cross_entropy": float(-np.mean(np.sum(votes * np.log(np.clip(probs, 1e-12, 1)), 1))),
        "confusion": confusion.tolist(),
    }


def class_scores(confusion: np.ndarray) -> dict[str, object]:
    """Balanced accuracy (over the classes present), per-class recall (None for a class
    with no true member) and macro-F1 (over the classes present or predicted), from a
    confusion matrix (rows: true class); both scores NaN with under two classes present."""
    confusion = np.asarray(confusion, np.float64)
    true_n, pred_n = confusion.sum(axis=1), confusion.sum(axis=0)
    hits = np.diag(confusion)
    present = true_n > 0
    recall = np.divide(hits, true_n, out=np.zeros_like(hits), where=present)
    recalls = [float(r) if p else None for r, p in zip(recall, present)]
    if present.sum() < 2:
        return {"balanced_accuracy": float("nan"), "recall": recalls, "macro_f1": float("nan")}
    precision = np.divide(hits, pred_n, out=np.zeros_like(hits), where=pred_n > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return {
        "balanced_accuracy": float(recall[present].mean()),
        "recall": recalls,
        "macro_f1": float(f1[present | (pred_n > 0)].mean()),
    }
