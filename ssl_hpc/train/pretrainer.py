"""`Pretrainer`: one worker's share of contrastive pretraining, resumable exactly.

It owns the reader (this rank's shards), the augmenter, the model and optimiser, and the
counters. `state_dict()` holds everything an exact continuation needs: both encoders and
heads, the MoCo queue and pointer, the optimiser, the step (the learning rate is a function
of it), the data position, and the RNG states. The augmenter's call index is the step, so
the views after a resume are the ones the uninterrupted run would have drawn.

Distributed training wraps `model` in DDP from outside (Ray Train's prepare_model); the
Pretrainer reaches the bare model through `self.bare`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..augment import Augmenter, SurveyStats, survey_stats
from ..data.reader import ShardedReader
from ..data.survey import Survey
from ..errors import ConfigError, DivergedError
from ..models import build_encoder
from ..models.inference import embed
from ..models.moco import MoCo, SimCLR
from ..utils.hardware import resolve_precision
from .config import PretrainConfig, require_full_batch
from .evaluate import knn_metrics, load_eval_set
from .optim import lr_at, make_optimizer
from .prefetch import ViewPrefetcher
from .step import prepare_model, train_step


def input_scale(softening: float, stats: SurveyStats) -> list[float]:
    """Per-band input divisor: `softening` x the band's typical sky noise."""
    return [softening * s for s in stats.noise_sigma]


def build_model(config: PretrainConfig, stats: SurveyStats) -> torch.nn.Module:
    """MoCo or SimCLR around the configured encoder trunk, for the bands of a survey with
    `stats` and its input scaled to that survey's noise."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    encoder = build_encoder(
        config.arch, len(stats.bands), config.stem, config.input_stretch, config.neck
    )
    encoder.input.set_scale(input_scale(config.input_softening, stats))
    if config.method == "moco":
        return MoCo(
            encoder,
            encoder.feature_dim,
            config.proj_dim,
            config.proj_hidden,
            config.queue_size,
            config.momentum,
            config.temperature,
            config.shuffle_bn,
            config.bn_splits,
        )
    return SimCLR(
        encoder, encoder.feature_dim, config.proj_dim, config.proj_hidden, config.temperature
    )


class Pretrainer:
    """One rank of a pretraining run on `survey` (see the module docstring)."""

    def __init__(
        self,
        config: PretrainConfig,
        survey: str | Survey,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ) -> None:
        if world_size != config.num_workers:
            raise ConfigError(f"world_size {world_size} != config num_workers {config.num_workers}")
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = torch.device(device)
        self.survey = survey if isinstance(survey, Survey) else Survey(survey)
        gpu = self.device.type == "cuda"
        self.precision = resolve_precision(config.precision, self.device)
        self.channels_last = config.channels_last
        cfg_aug = config.augment
        config.check_geometry(self.survey)
        stats = survey_stats(self.survey, cfg_aug.psf_percentiles, cfg_aug.extinction)
        self.augmenter = Augmenter(cfg_aug, stats, seed=config.seed * 100_003 + rank)
        self.reader = ShardedReader(
            self.survey,
            config.batch_size,
            rank=rank,
            world_size=world_size,
            seed=config.seed,
            shuffle=True,
            even=True,
            columns=("ebv",) if "ebv" in self.survey.manifest.columns else (),
            shuffle_window=config.shuffle_window,
            image_dtype=None if gpu else "float32",
        )
        require_full_batch(self.reader)
        bare = build_model(config, stats)
        self.bare = prepare_model(bare, self.device, self.channels_last, config.compile)
        self.model = wrap(self.bare) if wrap else self.bare
        params = [p for p in self.bare.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(
            config.optimizer, params, config.peak_lr, config.sgd_momentum, config.weight_decay
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self._eval_set = None
        # the first step whose loss was not finite (-1: none), kept on the device so that
        # watching it costs no sync; `check_finite` reads it
        self._first_nonfinite = torch.tensor(-1, device=self.device)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything an exact continuation needs (torch.load(weights_only=True) loads it)."""
        return {
            "model": self.bare.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda"
            else torch.empty(0, dtype=torch.uint8),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` output."""
        self.bare.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and len(state["rng_cuda"]):
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    # -- training ------------------------------------------------------------------------
    def batches(self):
        """(query views, key views, object ids) from the current data position onwards,
        epoch after epoch; the position advances as they are consumed."""
        cfg = self.config
        while True:
            self.reader.set_epoch(self.epoch, self.batch_in_epoch)
            loader = self.reader.loader(cfg.loader_workers, pin_memory=self.device.type == "cuda")
            # the augmenter's call index is the global step: views survive a resume
            self.augmenter.load_state_dict({"seed": self.augmenter.seed, "calls": self.step})
            for q, k, batch in ViewPrefetcher(loader, self.augmenter, self.device):
                self.batch_in_epoch += 1  # consumed once handed out
                yield q, k, batch["object_id"].to(self.device, non_blocking=True)
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def train(self, until_step: int, on_step: Callable[[Pretrainer, dict], None] | None = None):
        """Run steps until `until_step` (or config.steps); `on_step(self, stats)` after each."""
        cfg = self.config
        until = min(until_step, cfg.steps)
        if self.step >= until:
            return
        for q, k, ids in self.batches():
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, cfg.peak_lr, cfg.warmup_steps, cfg.steps)
            stats = train_step(
                self.model, self.optimizer, q, k, self.precision, self.channels_last, ids
            )
            self.step += 1
            bad = ~torch.isfinite(stats["loss"].detach()) & (self._first_nonfinite < 0)
            self._first_nonfinite = torch.where(bad, self.step, self._first_nonfinite)
            if on_step:
                on_step(self, stats)
            if self.step >= until:
                break

    def check_finite(self) -> None:
        """Raise DivergedError if a step since this process started gave a non-finite loss.
        Call it before logging, evaluating or checkpointing (it syncs the device), so that
        no checkpoint ever holds a diverged state."""
        first = int(self._first_nonfinite)
        if first < 0:
            return
        cfg = self.config
        rate = lr_at(first - 1, cfg.peak_lr, cfg.warmup_steps, cfg.steps)
        raise DivergedError(
            f"pretraining on {self.survey.root} diverged: the loss was not finite at step "
            f"{first} (learning rate {rate:.3g}); no checkpoint was written after it. A "
            "NaN or inf pixel in the survey (`ssl-hpc info --pixels` names them) or too "
            "high a learning rate (lower base_lr, or lengthen warmup_steps, in a new --out) "
            "are the usual causes"
        )

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def evaluate(self) -> dict[str, float]:
        """kNN metrics of the query encoder on the labelled validation subset, run at the
        training's precision."""
        if self._eval_set is None:
            # the same objects whatever the run's seed: a sweep over seeds compares what
            # was learnt, not how easy each seed's subset is
            self._eval_set = load_eval_set(
                self.survey, self.config.eval_objects, self.config.embed_window
            )
        if self._eval_set is None:
            return {}
        feats = embed(
            self.bare.encoder_q, self._eval_set.images, self.device, precision=self.precision
        )
        return knn_metrics(feats, self._eval_set, self.config.eval_k)


class Throughput:
    """Pairs per second between calls of `lap` (wall clock, synced on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.t, self.step = device, time.perf_counter(), 0

    def restart(self, step: int) -> None:
        """Start the next interval now (after an evaluation or checkpoint)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t, self.step = time.perf_counter(), step

    def lap(self, step: int, pairs_per_step: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        rate = (step - self.step) * pairs_per_step / max(now - self.t, 1e-9)
        self.t, self.step = now, step
        return rate
