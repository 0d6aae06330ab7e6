"""Did the encoder learn? Its representation against the same network at random weights.

A trained encoder is only worth its compute if it beats its own random initialisation
(random convolutional features already sort galaxies by colour and size). Both networks
are measured the same way, on the same galaxies:

- kNN morphology accuracy and balanced accuracy, photo-z sigma_MAD and outlier rate
  (`train.evaluate`, leave-one-out on labelled galaxies);
- the median cosine similarity of random galaxy pairs: near 1 when every galaxy maps to
  about the same direction (a collapsed representation, where search cannot rank); of
  the representation, and of the pooled features before the encoder's BatchNorm neck;
- invariance: how far an augmented view moves from its galaxy, relative to the distance
  between two galaxies, and how often the view's nearest galaxy is its own
  (`downstream.invariance`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..augment import AugmentConfig, survey_stats
from ..config import build
from ..data.survey import Survey
from ..models.checkpoint import EncoderCheckpoint
from ..models.inference import centre_crops, embed
from ..train.config import PretrainConfig
from ..train.evaluate import knn_metrics, load_eval_set
from ..train.pretrainer import build_model
from ..utils.arrays import normalise
from .invariance import invariance


def pair_cosine(vectors: np.ndarray, n_pairs: int = 20_000, seed: int = 0) -> float:
    """Median cosine similarity of `n_pairs` random pairs of distinct rows of `vectors`."""
    x = normalise(np.asarray(vectors, np.float64))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), n_pairs)
    j = (i + rng.integers(1, len(x), n_pairs)) % len(x)  # never a row with itself
    return float(np.median(np.sum(x[i] * x[j], axis=1)))


class _Pooled(torch.nn.Module):
    """An encoder's features before its neck, as a module `embed` can run."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled(x)


def untrained_encoder(checkpoint: EncoderCheckpoint, survey: Survey) -> torch.nn.Module:
    """The network of `checkpoint` with the weights it started from (pretraining seeds its
    initialisation), its input scaled as the trained one's; in eval mode."""
    config = build(PretrainConfig, checkpoint.config, f"{checkpoint.path} config")
    stats = survey_stats(survey, config.augment.psf_percentiles, config.augment.extinction)
    encoder = build_model(config, stats).encoder_q
    encoder.input.scale.copy_(checkpoint.payload["state_dict"]["input.scale"])
    return encoder.eval()


def measure(
    encoder: torch.nn.Module,
    survey: Survey,
    augment: AugmentConfig,
    n_eval: int = 2048,
    n_invariance: int = 256,
    seed: int = 0,
    k: int = 20,
    precision: str = "fp32",
    window: int | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """kNN metrics, random-pair cosine and invariance of one encoder (module docstring),
    the encoder moved to `device` and run at `precision`; kNN and pair cosine on centred
    `window` px crops (the embedding window; default the view size), invariance on views."""
    out: dict = {}
    encoder = encoder.to(device)
    window = window or augment.out_size
    eval_set = load_eval_set(survey, n_eval, window, seed)
    if eval_set is not None:
        features = embed(encoder, eval_set.images, device, precision=precision)
        out.update(knn_metrics(features, eval_set, k))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(survey), min(n_eval, len(survey)), replace=False))
    crops = centre_crops(survey, rows, window)
    if hasattr(encoder, "pooled"):  # one pass for both: the neck is applied by hand
        pooled = embed(_Pooled(encoder), crops, device, precision=precision)
        with torch.no_grad():
            vectors = encoder.eval().neck(pooled.to(device)).cpu()
        out["pair_cosine_pooled"] = pair_cosine(pooled.numpy(), seed=seed)
    else:
        vectors = embed(encoder, crops, device, precision=precision)
    out["pair_cosine_median"] = pair_cosine(vectors.numpy(), seed=seed)
    out["invariance"] = invariance(encoder, survey, augment, n_invariance, seed, precision, device)
    together = out["invariance"]["codes"].get("all") or next(
        iter(out["invariance"]["codes"].values()), {}
    )
    out["invariance_ratio"] = together.get("ratio")
    out["reidentified"] = together.get("reidentified")
    return out


def against_random_init(
    checkpoint: EncoderCheckpoint,
    survey: Survey,
    n_eval: int = 2048,
    n_invariance: int = 256,
    seed: int = 0,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> dict:
    """`measure` of the trained encoder and of its random initialisation, on the same
    galaxies and views, each run on `device`: {"trained": ..., "random_init": ...}."""
    augment = build(AugmentConfig, checkpoint.augment, f"{checkpoint.path} augment")
    encoders = {
        "trained": checkpoint.encoder(),
        "random_init": untrained_encoder(checkpoint, survey),
    }
    return {
        name: measure(
            enc,
            survey,
            augment,
            n_eval,
            n_invariance,
            seed,
            precision=precision,
            window=checkpoint.crop,
            device=device,
        )
        for name, enc in encoders.items()
    }
