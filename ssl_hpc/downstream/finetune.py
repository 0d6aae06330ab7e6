"""Fine-tuning (or supervised training from scratch) of encoder + head on Ray Train.

The same loop serves both sides of the label-efficiency comparison: ``init: ssl`` starts
from a pretrained encoder.pt and trains it at `encoder_lr_scale` (0.1) of `lr` (Hayat et
al.: fine-tuning at a small rate); ``init: random`` trains the same network from scratch at
`lr`, with the same labels, augmentations and budget. The new linear head has its own rate
(`head_lr`) and starts at the training labels' prior (zero weights, log-prior biases).
Each worker holds the task's training rows in memory (labelled sets are small next to the
survey) and draws its own batches; views come from the pretraining augmentations, test
images are the deterministic centre crop. Checkpoints every `checkpoint_every` steps; a
killed worker restarts from the latest (`max_failures`), and rerunning on the same `out`
resumes. `out` gets config.yaml, history.jsonl (test metrics at each evaluation),
metrics.json (the final test metrics), predictions.npz (test rows, predicted
distributions, photo-z point estimates) and model.pt.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..augment import AugmentConfig, Augmenter, SurveyStats, survey_stats
from ..config import build, check_ranges, to_dict
from ..data.survey import Survey
from ..errors import ConfigError, DivergedError
from ..models import ARCHS, build_encoder
from ..models.checkpoint import EncoderCheckpoint
from ..models.inference import autocast, centre_crops, embed
from ..models.resnet import NECKS, STRETCHES
from ..train.optim import lr_at
from ..train.pretrainer import input_scale
from ..train.ray_loop import (
    StepHook,
    check_cluster_fits,
    connect,
    ddp,
    report,
    restore,
    run_fit,
    start,
    torch_trainer,
)
from ..train.run_dir import claim_run
from ..utils.atomic import atomic_path, json_safe, write_json_atomic, write_text_atomic
from ..utils.hardware import PRECISIONS, resolve_precision
from .heads import RedshiftBins, soft_cross_entropy
from .tasks import Split, Task, indices_of_ids, load_task, read_test_ids, splits

INITS = ("ssl", "random")
STATE_FILE = "finetune.pt"


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning (init ssl) or supervised (init random) run on one label fraction."""

    task: str = "photoz"
    """photoz or a Galaxy Zoo question the survey's labels answer"""
    init: str = "ssl"
    """ssl: start from the pretrained encoder; random: train the same network from
    scratch"""
    checkpoint: str | None = None  # encoder.pt or its run directory (init ssl)
    arch: str = "resnet18"  # init random (ssl takes the checkpoint's)
    stem: str = "survey"
    """init random: survey or standard, as pretraining (ssl takes the checkpoint's)"""
    input_stretch: str = "asinh"  # init random, as pretraining (models.resnet.InputScaling)
    input_softening: float = 3.0
    """init random: the per-band input scale in sky-noise units, as pretraining"""
    neck: str = "bn"
    """init random: bn or none, as pretraining"""
    fraction: float = 1.0
    """the fraction of the training pool this run trains on"""
    repeat: int = 0
    """which of the study's random splits"""
    test_fraction: float = 0.3
    """labelled objects held out for testing"""
    test_ids: str | None = None  # a published test set (CSV of object_id); else drawn
    steps: int = 300
    """optimisation steps"""
    batch_size: int = 64  # per worker
    lr: float = 0.2
    """the encoder's SGD learning rate from scratch (init random); init ssl trains the
    encoder at lr x encoder_lr_scale"""
    encoder_lr_scale: float | None = None  # default 0.1 (ssl) or 1.0 (random)
    head_lr: float = 0.01
    """the linear head's learning rate. It reads the BN neck's unit-variance features, so
    one step moves its logits by about head_lr x feature_dim (512): at 0.2 they swung by
    ~100 and the photo-z PDFs came out broad and biased"""
    weight_decay: float = 1e-4
    """SGD weight decay"""
    warmup_steps: int = 20
    """linear warm-up steps before the cosine decay"""
    #: weight the loss so every class counts equally (morphology; never photo-z's bins)
    balance: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    z_bins: int = 180
    """photo-z: redshift bins of the classifier (Hayat et al.: 180)"""
    z_max: float = 0.4
    """photo-z: the bins cover 0 < z < z_max"""
    eval_every: int = 100
    """steps between test evaluations (rank 0)"""
    checkpoint_every: int = 100
    """steps between checkpoints"""
    seed: int = 0
    """splits, weights, batches and views follow from it"""
    precision: str = "auto"  # training steps: bf16 on GPUs and CPUs with native bf16
    channels_last: bool = True
    """channels_last memory format, as pretraining (faster convolutions on CPU and GPU)"""
    num_workers: int = 1
    """Ray Train workers"""
    use_gpu: bool = False
    """train on GPUs"""
    cpus_per_worker: float = 1.0
    """CPUs Ray grants each worker"""
    max_failures: int = 3
    """worker deaths Ray Train restarts from the latest checkpoint"""

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init={self.init!r}: expected one of {INITS}")
        if self.init == "ssl" and not self.checkpoint:
            raise ConfigError("init=ssl needs checkpoint=<encoder.pt or pretraining run>")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.neck not in NECKS:
            raise ConfigError(f"neck={self.neck!r}: expected one of {NECKS}")
        if self.input_stretch not in STRETCHES:
            raise ConfigError(f"input_stretch={self.input_stretch!r}: expected one of {STRETCHES}")
        if self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r}: expected one of {tuple(ARCHS)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction={self.fraction}: must be in (0, 1]")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction={self.test_fraction}: must be in (0, 1)")
        counts = ("steps", "batch_size", "eval_every", "checkpoint_every", "num_workers", "z_bins")
        check_ranges(
            self,
            at_least=dict.fromkeys(counts, 1) | dict.fromkeys(("warmup_steps", "max_failures"), 0),
            positive=("lr", "head_lr", "z_max", "input_softening", "cpus_per_worker"),
            non_negative=("weight_decay", "encoder_lr_scale"),
        )

    @property
    def encoder_rate(self) -> float:
        scale = self.encoder_lr_scale
        return self.lr * (scale if scale is not None else (0.1 if self.init == "ssl" else 1.0))


def task_splits(task: Task, survey: Survey, config: FinetuneConfig, repeats: int) -> list[Split]:
    """The study's splits of `task`: around the published test set of `config.test_ids`,
    else drawn with `config.test_fraction` (seeded by `config.seed`)."""
    fixed = None
    if config.test_ids:
        fixed = indices_of_ids(task, survey, read_test_ids(config.test_ids))
    return splits(len(task.rows), repeats, config.test_fraction, config.seed, fixed)


class Classifier(nn.Module):
    """Encoder trunk + linear head over the task's answers (or redshift bins)."""

    def __init__(self, encoder: nn.Module, n_out: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    @torch.no_grad()
    def start_at_prior(self, targets: torch.Tensor, class_weights: torch.Tensor | None) -> None:
        """Zero the head's weights and set its biases to the log of the (class-weighted)
        mean training target, mixed with 1% of a uniform so no answer starts at -inf.
        A default-initialised head starts near a uniform distribution: over 180 redshift
        bins its mean is z=0.2, which pulled every early photo-z towards the middle."""
        weighted = targets if class_weights is None else targets * class_weights
        prior = weighted.sum(0) / weighted.sum().clamp_min(1e-12)
        prior = 0.99 * prior + 0.01 / prior.numel()
        self.head.weight.zero_()
        self.head.bias.copy_(prior.log())


def build_classifier(config: FinetuneConfig, stats: SurveyStats, n_out: int) -> Classifier:
    """The network of `config`: pretrained trunk (ssl, its own input scaling) or a fresh
    one (random) whose input is scaled to the survey as pretraining would have."""
    torch.manual_seed(config.seed)
    if config.init == "ssl":
        encoder = EncoderCheckpoint(config.checkpoint).encoder()
    else:
        bands = len(stats.bands)
        encoder = build_encoder(config.arch, bands, config.stem, config.input_stretch, config.neck)
        encoder.input.set_scale(input_scale(config.input_softening, stats))
    return Classifier(encoder, n_out)


class Finetuner:
    """One rank of a fine-tuning run: data, model, optimiser, step; exact resume."""

    def __init__(self, config: FinetuneConfig, survey: str, rank=0, world=1, device="cpu"):
        self.config, self.rank, self.world = config, rank, world
        self.device = torch.device(device)
        self.survey = Survey(survey)
        bins = RedshiftBins(config.z_bins, config.z_max)
        self.task = load_task(self.survey, config.task, bins)
        self.split = task_splits(self.task, self.survey, config, config.repeat + 1)[config.repeat]
        self.train_index = self.split.train(config.fraction)
        rows = self.task.rows[self.train_index]
        self.images = torch.from_numpy(self.survey.images(rows).astype(np.float32))
        self.meta = {
            "psf_fwhm": torch.from_numpy(self.survey.per_band("image_psf_fwhm")[rows]),
            "ebv": torch.from_numpy(self._ebv()[rows]),
        }
        self.targets = torch.as_tensor(self.task.targets[self.train_index], dtype=torch.float32)
        weights = self.task.class_weights(self.train_index) if config.balance else None
        self.class_weights = None if weights is None else torch.as_tensor(weights).float()
        stats = survey_stats(self.survey, config.augment.psf_percentiles, config.augment.extinction)
        self.augmenter = Augmenter(config.augment, stats, seed=config.seed * 7919 + rank)
        self.model = build_classifier(config, stats, self.task.targets.shape[1])
        self.model.start_at_prior(self.targets, self.class_weights)
        memory = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=memory)
        self.memory_format = memory
        self.precision = resolve_precision(config.precision, self.device)
        self.wrapped: nn.Module = self.model
        self.optimizer = torch.optim.SGD(
            [
                {"params": self.model.encoder.parameters(), "scale": config.encoder_rate},
                {"params": self.model.head.parameters(), "scale": config.head_lr},
            ],
            lr=config.head_lr,
            momentum=0.9,
            weight_decay=config.weight_decay,
        )
        self.step = 0
        self._test_images: torch.Tensor | None = None

    def _ebv(self) -> np.ndarray:
        if "ebv" in self.survey.manifest.columns:
            return self.survey.column("ebv").astype(np.float32)
        return np.zeros(len(self.survey), np.float32)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def save(self, directory: Path) -> None:
        """This rank's part of a checkpoint: rank 0 the whole state (the others hold the
        same weights under DDP and draw their batches from (seed, step, rank))."""
        if self.rank == 0:
            torch.save(self.state_dict(), directory / STATE_FILE)

    def load(self, directory: Path) -> None:
        """Continue from a checkpoint directory `save` wrote."""
        path = directory / STATE_FILE
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))

    def train_step(self) -> float:
        """One step on a batch drawn from (seed, repeat, step, rank): resumes exactly."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, cfg.repeat, self.step, self.rank])
        idx = torch.from_numpy(rng.integers(0, len(self.images), cfg.batch_size))
        self.augmenter.load_state_dict({"seed": self.augmenter.seed, "calls": self.step})
        meta = {k: v[idx] for k, v in self.meta.items()}
        views = self.augmenter(self.images[idx].to(self.device), meta)
        views = views.contiguous(memory_format=self.memory_format)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, group["scale"], cfg.warmup_steps, cfg.steps)
        self.wrapped.train()
        weights = None if self.class_weights is None else self.class_weights.to(self.device)
        with autocast(self.device, self.precision):
            logits = self.wrapped(views)
        loss = soft_cross_entropy(logits.float(), self.targets[idx].to(self.device), weights)
        value = float(loss.detach())  # read before the update: a NaN never reaches a weight
        if not np.isfinite(value):
            raise DivergedError(
                f"fine-tuning on {self.survey.root} diverged: the loss was {value} at step "
                f"{self.step + 1} (NaN or inf pixels: `ssl-hpc info --pixels`; or too high a rate)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return value

    def evaluate(self) -> tuple[dict, np.ndarray]:
        """Test metrics (the task's score) and the test predictions."""
        if self._test_images is None:  # read and cropped once, not at every evaluation
            size = self.config.augment.out_size
            self._test_images = centre_crops(self.survey, self.task.rows[self.split.test], size)
        logits = embed(self.model, self._test_images, self.device)
        probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
        metrics = self.task.score(probs, self.split.test)
        return metrics, probs


def finetune_loop(loop: dict) -> None:
    """The Ray Train worker function (on the `train.ray_loop` skeleton): build, restore,
    train, evaluate on rank 0, report with checkpoints from every rank."""
    config = build(FinetuneConfig, loop["config"])
    worker = start(config.cpus_per_worker)
    t = Finetuner(config, loop["survey"], worker.rank, worker.world, worker.device)
    t.wrapped = ddp(t.model, worker)
    out = Path(loop["out"])
    history = out / "history.jsonl"
    restored = restore(t.load, loop["checkpoints"], worker.world)
    if worker.rank == 0:  # drop evaluations after the checkpoint (all, starting afresh)
        kept = []
        if restored:
            kept = [r for r in _read_jsonl(history) if r.get("step", 0) <= t.step]
            kept.append({"note": restored.note(t.step), "step": t.step})
        write_text_atomic(history, "".join(json.dumps(json_safe(r)) + "\n" for r in kept))
    if t.step >= config.steps:  # a relaunch of a run killed after its last checkpoint
        metrics: dict = {"step": t.step}
        if worker.rank == 0:  # its end reported again, for the driver's model.pt
            _evaluate(t, out, metrics, last=True)
        report(metrics, t.save)
        return
    hook: StepHook | None = loop.get("hook")
    while t.step < config.steps:
        loss = t.train_step()
        step, last = t.step, t.step == config.steps
        metrics: dict = {"step": step, "loss": loss}
        if (step % config.eval_every == 0 or last) and worker.rank == 0:
            _evaluate(t, out, metrics, last)
            with open(history, "a") as f:
                f.write(json.dumps(json_safe(metrics)) + "\n")
        if step % config.checkpoint_every == 0 or last:
            report(metrics, t.save)
        if hook is not None:
            hook(step, worker.rank)


def _evaluate(t: Finetuner, out: Path, metrics: dict, last: bool) -> None:
    """Rank 0: the test scores into `metrics` (as test_*), and at the end the predictions."""
    test, probs = t.evaluate()
    metrics.update({f"test_{k}": v for k, v in test.items()})
    if last:
        _write_predictions(out, t, probs)


def _write_predictions(out: Path, t: Finetuner, probs: np.ndarray) -> None:
    arrays = {
        "object_id": t.survey.column("object_id")[t.task.rows[t.split.test]],
        "probs": probs.astype(np.float32),
        "targets": t.task.targets[t.split.test].astype(np.float32),
    }
    if t.task.z is not None:
        arrays["z_spec"] = t.task.z[t.split.test]
        arrays["z_pred"] = t.task.bins.point(probs)
    with atomic_path(out / "predictions.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fit(
    config: FinetuneConfig,
    survey: str | os.PathLike,
    out: str | os.PathLike,
    address: str | None = None,
    hook: StepHook | None = None,
) -> dict:
    """Run (or resume) fine-tuning into `out`; returns the final test metrics.
    `hook(step, rank)`: called in every worker after each step (fault-tolerance tests)."""
    out = claim_run(out, config, "fine-tuning config", survey)
    done = out / "metrics.json"
    if done.exists():  # finished before: nothing to redo
        return json.loads(done.read_text())["test"]
    connect(address)
    if address is None:
        check_cluster_fits(config)
    trainer = torch_trainer(finetune_loop, config, survey, out, hook, "finetune", 2)
    result = run_fit(trainer, out)
    if result.error is not None:
        raise result.error
    test = {k.removeprefix("test_"): v for k, v in result.metrics.items() if k.startswith("test_")}
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"config": to_dict(config), "state_dict": state["model"]}, tmp)
    write_json_atomic(done, {"config": to_dict(config), "test": test, "step": state["step"]})
    return test
