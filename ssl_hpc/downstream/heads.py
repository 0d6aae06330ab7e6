"""Heads trained on frozen representations: a linear (or small MLP) classifier with soft
targets, and the redshift classifier of Hayat et al. 2021 (180 bins over 0 < z < 0.4,
point estimate the probability-weighted mean of the bin centres, the PDF kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class HeadConfig:
    """How to train a head: `hidden` 0 is linear, else one hidden ReLU layer that wide."""

    hidden: int = 0
    """0: a linear head; else one hidden ReLU layer this wide"""
    epochs: int = 100
    """passes over the training labels"""
    lr: float = 0.05
    """AdamW learning rate (cosine decay)"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    batch_size: int = 512
    """rows per step"""
    seed: int = 0
    """splits and head training follow from it"""
    #: weight the loss so every class counts equally (morphology; never photo-z's bins)
    balance: bool = True

    def __post_init__(self) -> None:
        for name, ok, allowed in (
            ("hidden", self.hidden >= 0, ">= 0"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
        ):
            if not ok:
                raise ConfigError(f"head {name}={getattr(self, name)}: must be {allowed}")


class Head(nn.Module):
    """Standardise the features (statistics of the training set), then linear or MLP."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, n_out: int, hidden: int = 0):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        dim = mean.numel()
        if hidden:
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
        else:
            self.net = nn.Linear(dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy against (N, C) target distributions (vote fractions or one-hot).

    Unweighted: the mean over rows. With (C,) `class_weights` w: the weighted mean
    sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic, so a rare class's rows count
    as much in all as a common class's.
    """
    log_p = F.log_softmax(logits, dim=1)
    if class_weights is None:
        return -(targets * log_p).sum(dim=1).mean()
    weighted = targets * class_weights.to(targets.dtype)
    return -(weighted * log_p).sum() / weighted.sum().clamp_min(1e-12)


def fit_head(
    features: np.ndarray,
    targets: np.ndarray,
    config: HeadConfig = HeadConfig(),
    class_weights: np.ndarray | None = None,
) -> Head:
    """Train a head on (N, D) features for (N, C) target distributions, the loss weighted
    per class by `class_weights` (C,) if given; deterministic for a given seed (minibatch
    Adam, cosine learning rate)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ConfigError(f"fit_head: features {tuple(x.shape)} and targets {tuple(y.shape)}")
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    head = Head(x.mean(0), x.std(0).clamp_min(1e-6), y.shape[1], config.hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(x) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * steps_per_epoch)
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = soft_cross_entropy(head(x[idx]), y[idx], w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def predict_proba(head: Head, features: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    return torch.softmax(head(x), dim=1).numpy().astype(np.float64)


@dataclass(frozen=True)
class RedshiftBins:
    """`n_bins` equal bins over 0 < z < `z_max` (Hayat et al.: 180 over 0 < z < 0.4)."""

    n_bins: int = 180
    z_max: float = 0.4

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.z_max, self.n_bins + 1)

    @property
    def centres(self) -> np.ndarray:
        e = self.edges
        return 0.5 * (e[1:] + e[:-1])

    def index(self, z: np.ndarray) -> np.ndarray:
        """The bin of each redshift (values outside the range go to the end bins)."""
        i = np.floor(np.asarray(z, np.float64) / self.z_max * self.n_bins).astype(np.int64)
        return np.clip(i, 0, self.n_bins - 1)

    def one_hot(self, z: np.ndarray) -> np.ndarray:
        """(N, n_bins) targets."""
        out = np.zeros((len(z), self.n_bins))
        out[np.arange(len(z)), self.index(z)] = 1.0
        return out

    def point(self, pdf: np.ndarray) -> np.ndarray:
        """The probability-weighted mean redshift of each (N, n_bins) PDF."""
        return np.asarray(pdf) @ self.centres
