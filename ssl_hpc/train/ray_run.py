"""Pretraining on Ray Train: the per-worker loop and `fit`, on the `ray_loop` skeleton.

A run lives in one directory: ``config.yaml`` and ``survey.json`` (what it trains, on
what: `run_dir`), ``environment.json`` (device, precision, threads), ``metrics.csv`` (rank
0, one row per log step), ``ray/<name>/`` (Ray Train's checkpoints, `train.checkpoint`),
and after the last step ``encoder.pt`` (the query encoder,
``torch.load(weights_only=True)``) and ``learning_curve.png``. Relaunching with the same
directory resumes from the latest checkpoint: Ray Train V2 restores it for the same
``RunConfig(storage_path, name)``. A worker that dies is restarted from the latest
checkpoint up to ``max_failures`` times; an error that names bad input or a diverged loss
is recorded in ``failed.json`` and not retrained (`ray_loop.fail_once`).

Every rank reports to Ray Train at each `eval_every` and `checkpoint_every` step (a
barrier); each report carries rank 0's latest kNN evaluation and the step it was made at
(``eval_step``), evaluated afresh when a run starts or restores, so a Tune scheduler
reading the reports (`ssl_hpc.tune`) always finds its objective.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import build
from ..data.manifest import load_manifest
from ..utils.atomic import write_json_atomic
from ..utils.hardware import describe
from ..utils.progress import progress
from .checkpoint import load_checkpoint, save_checkpoint
from .config import PretrainConfig
from .export import export_run
from .metrics_log import MetricsLog
from .pretrainer import Pretrainer, Throughput
from .ray_loop import (
    Restored,
    StepHook,
    Worker,
    check_cluster_fits,
    connect,
    ddp,
    report,
    restore,
    run_fit,
    start,
    torch_trainer,
)
from .run_dir import check_run_name, claim_run

ENVIRONMENT_FILE = "environment.json"  # device, precision, threads of the latest start


def without(d: dict, *keys: str) -> dict:
    """`d` less `keys`."""
    return {k: v for k, v in d.items() if k not in keys}


def train_loop_per_worker(loop: dict) -> None:
    """The Ray Train worker function: build, restore, train, report."""
    config = build(PretrainConfig, loop["config"])
    worker = start(config.cpus_per_worker)
    # BN statistics stay per rank (shuffle-BN); the queue is kept equal by all-gather
    wrap = (lambda m: ddp(m, worker, broadcast_buffers=False)) if worker.world > 1 else None
    trainer = Pretrainer(config, loop["survey"], worker.rank, worker.world, worker.device, wrap)
    restored = restore(lambda d: load_checkpoint(d, trainer), loop["checkpoints"], worker.world)
    # Every report carries rank 0's latest evaluation (and the step it was made at), so a
    # Tune scheduler reading these metrics always finds its objective.
    latest_eval = {"eval_step": trainer.step, **trainer.evaluate()} if worker.rank == 0 else {}
    if trainer.step >= config.steps:  # a relaunch of a finished run: report its end again
        metrics = {"step": trainer.step, "epoch": trainer.epoch, **latest_eval}
        report(metrics, lambda d: save_checkpoint(d, trainer))
        return
    steps = StepReporter(config, worker, trainer, Path(loop["out"]), latest_eval, restored)
    steps.hook = loop.get("hook")
    trainer.train(config.steps, steps)
    steps.close()


class StepReporter:
    """What happens after each step of one worker: the progress bar, rank 0's metrics.csv
    row and kNN evaluation, the reports (with checkpoints) every rank makes, the hook."""

    def __init__(
        self,
        config: PretrainConfig,
        worker: Worker,
        trainer: Pretrainer,
        run_dir: Path,
        latest_eval: dict,
        restored: Restored | None,
    ) -> None:
        self.config, self.worker, self.latest_eval = config, worker, latest_eval
        self.hook: StepHook | None = None
        self.log = None
        if worker.rank == 0:  # what the numbers were measured on (precision is per machine)
            env = describe(worker.device, trainer.precision, trainer.channels_last)
            write_json_atomic(run_dir / ENVIRONMENT_FILE, {**env, "workers": worker.world})
            resumed_at = trainer.step if restored else None  # a fresh start keeps no rows
            self.log = MetricsLog(run_dir / "metrics.csv", resume_step=resumed_at)
            if restored:
                self.log.note(restored.note(trainer.step))
            elif trainer.step == 0:  # the random-initialisation baseline of the kNN check
                self.log.write({"step": 0, "epoch": 0, **without(latest_eval, "eval_step")})
        self.bar = progress(
            total=config.steps, initial=trainer.step, desc="pretrain", disable=worker.rank != 0
        )
        self.clock = Throughput(worker.device)
        self.clock.restart(trainer.step)  # a resumed run's first rate is over its own steps

    def __call__(self, t: Pretrainer, stats: dict) -> None:
        cfg, step = self.config, t.step
        self.bar.update(1)
        last = step == cfg.steps
        logs, evaluates, checkpoint = (
            step % every == 0 or last
            for every in (cfg.log_every, cfg.eval_every, cfg.checkpoint_every)
        )
        if logs or evaluates or checkpoint:
            t.check_finite()  # every rank: a diverged run fails before it logs or saves
        metrics: dict = {"step": step, "epoch": t.epoch}
        if logs:
            rate = self.clock.lap(step, cfg.batch_size)
            metrics.update(loss=float(stats["loss"]), lr=t.current_lr())
            metrics.update(pairs_per_s_worker=rate, pairs_per_s_total=rate * self.worker.world)
            if "top1" in stats:
                metrics["top1"] = float(stats["top1"])
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2g}")
        if evaluates and self.worker.rank == 0:
            self.latest_eval.update(eval_step=step, **t.evaluate())
            metrics.update(without(self.latest_eval, "eval_step"))
        if self.log and len(metrics) > 2:
            self.log.write(metrics)
        if checkpoint or evaluates:  # every rank reports: a barrier
            save = (lambda d: save_checkpoint(d, t)) if checkpoint else None
            report({**metrics, **self.latest_eval}, save)
            self.clock.restart(step)  # throughput counts training only
        if self.hook is not None:
            self.hook(step, self.worker.rank)

    def close(self) -> None:
        self.bar.close()


def fit(
    config: PretrainConfig,
    survey: str | os.PathLike,
    out: str | os.PathLike,
    address: str | None = None,
    name: str = "pretrain",
    hook: StepHook | None = None,
    callbacks: list | None = None,
):
    """Run (or resume) pretraining into directory `out` on Ray Train; returns the Result.

    `address`: a running Ray cluster ("auto", "ray://...") or None for a local one.
    `hook(step, rank)`: called in every worker after each step (fault-tolerance tests).
    `callbacks`: Ray Train callbacks, e.g. Tune's TuneReportCallback inside a sweep trial.
    """
    check_run_name(Path(out).resolve(), name)
    connect(address)
    if address is None:
        check_cluster_fits(config)
    out = claim_run(out, config, "pretraining config", survey)
    trainer = torch_trainer(
        train_loop_per_worker, config, survey, out, hook, name, config.keep_checkpoints, callbacks
    )
    result = run_fit(trainer, out)
    if result.checkpoint is not None:
        export_run(out, result.checkpoint, config, load_manifest(survey).bands)
    return result
