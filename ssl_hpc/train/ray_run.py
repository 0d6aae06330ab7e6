"""Pretraining on Ray Train: the per-worker loop, checkpoints from every rank, and `fit`.

A run lives in one directory: ``config.yaml``, ``metrics.csv`` (rank 0, one row per log
step), ``ray/<name>/`` (Ray Train's checkpoints), and after the last step ``encoder.pt``
(the query encoder, ``torch.load(weights_only=True)``) and ``learning_curve.png``.
Relaunching with the same directory resumes from the latest checkpoint: Ray Train V2
restores it for the same ``RunConfig(storage_path, name)``. A worker that dies is
restarted from the latest checkpoint up to ``max_failures`` times.

Every rank reports to Ray Train at each `eval_every` and `checkpoint_every` step (a
barrier); each report carries rank 0's latest kNN evaluation and the step it was made at
(``eval_step``), evaluated afresh when a run starts or restores, so a Tune scheduler
reading the reports (`ssl_hpc.tune`) always finds its objective.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import torch

from ..config import build, claim_file, to_dict, to_yaml
from ..utils.atomic import write_json_atomic
from ..utils.hardware import cpu_threads, describe
from ..utils.progress import progress
from .config import PretrainConfig
from .export import TRAINER_FILE, export_run
from .metrics_log import MetricsLog
from .pretrainer import Pretrainer, Throughput

ENVIRONMENT_FILE = "environment.json"  # device, precision, threads of the latest start
RANK_FILE = "rank-{rank}.pt"  # other ranks: what differs per rank (BN statistics, RNG)
SHARED_BUFFERS = ("queue", "queue_ptr")  # identical on every rank: kept once, in rank 0's


def without(d: dict, *keys: str) -> dict:
    """`d` less `keys`."""
    return {k: v for k, v in d.items() if k not in keys}


def save_checkpoint(directory: Path, trainer: Pretrainer) -> None:
    """This rank's part of a checkpoint into `directory`."""
    state = trainer.state_dict()
    if trainer.rank == 0:
        torch.save(state, directory / TRAINER_FILE)
        return
    names = {k for k, _ in trainer.bare.named_buffers() if k.split(".")[-1] not in SHARED_BUFFERS}
    buffers = {k: v for k, v in trainer.bare.state_dict().items() if k in names}
    torch.save(
        {"buffers": buffers, "rng_cpu": state["rng_cpu"], "rng_cuda": state["rng_cuda"]},
        directory / RANK_FILE.format(rank=trainer.rank),
    )


def load_checkpoint(directory: Path, trainer: Pretrainer) -> None:
    """Rank 0's whole state, then this rank's own BN statistics and RNG states."""
    state = torch.load(directory / TRAINER_FILE, map_location=trainer.device, weights_only=True)
    own = directory / RANK_FILE.format(rank=trainer.rank)
    if trainer.rank > 0 and own.exists():
        mine = torch.load(own, map_location=trainer.device, weights_only=True)
        state["model"].update(mine["buffers"])
        state["rng_cpu"], state["rng_cuda"] = mine["rng_cpu"], mine["rng_cuda"]
    state["rng_cpu"] = state["rng_cpu"].cpu()
    state["rng_cuda"] = state["rng_cuda"].cpu()
    trainer.load_state_dict(state)


def train_loop_per_worker(loop: dict) -> None:
    """The Ray Train worker function: build, restore, train, report."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    config = build(PretrainConfig, loop["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(cpu_threads(config.cpus_per_worker))  # the CPUs Ray granted

    def wrap(model):
        ids = [device] if device.type == "cuda" else None
        # BN statistics stay per rank (shuffle-BN); the queue is kept equal by all-gather
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    trainer = Pretrainer(config, loop["survey"], rank, world, device, wrap if world > 1 else None)
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            load_checkpoint(Path(d), trainer)
    run_dir = Path(loop["run_dir"])
    # Every report carries rank 0's latest evaluation (and the step it was made at), so a
    # Tune scheduler reading these metrics always finds its objective.
    latest_eval: dict = {}
    if rank == 0:
        latest_eval = {"eval_step": trainer.step, **trainer.evaluate()}
    if trainer.step >= config.steps:  # a relaunch of a finished run: report its end again
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(Path(d), trainer)
            ray.train.report(
                {"step": trainer.step, "epoch": trainer.epoch, **latest_eval},
                checkpoint=ray.train.Checkpoint.from_directory(d),
            )
        return
    if rank == 0:  # what the numbers were measured on (precision is chosen per machine)
        env = describe(device, trainer.precision, trainer.channels_last)
        write_json_atomic(run_dir / ENVIRONMENT_FILE, {**env, "workers": world})
    log = MetricsLog(run_dir / "metrics.csv", resume_step=trainer.step) if rank == 0 else None
    if log and restored:
        log.note(f"restored from step {trainer.step}")
    elif log and trainer.step == 0:  # the random-initialisation baseline of the kNN check
        log.write({"step": 0, "epoch": 0, **without(latest_eval, "eval_step")})
    bar = progress(total=config.steps, initial=trainer.step, desc="pretrain", disable=rank != 0)
    clock = Throughput(device)
    fault_at = loop.get("fault_at_step")

    def on_step(t: Pretrainer, stats: dict) -> None:
        step = t.step
        bar.update(1)
        last = step == config.steps
        metrics: dict = {"step": step, "epoch": t.epoch}
        if step % config.log_every == 0 or last:
            rate = clock.lap(step, config.batch_size)
            metrics.update(
                loss=float(stats["loss"]),
                lr=t.current_lr(),
                pairs_per_s_worker=rate,
                pairs_per_s_total=rate * world,
            )
            if "top1" in stats:
                metrics["top1"] = float(stats["top1"])
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2g}")
        evaluated = (step % config.eval_every == 0 or last) and rank == 0
        if evaluated:
            latest_eval.update(eval_step=step, **t.evaluate())
            metrics.update(without(latest_eval, "eval_step"))
        if log and len(metrics) > 2:
            log.write(metrics)
        checkpoint = step % config.checkpoint_every == 0 or last
        if checkpoint or step % config.eval_every == 0:  # every rank reports: a barrier
            report = {**metrics, **latest_eval}
            if checkpoint:
                with tempfile.TemporaryDirectory() as d:
                    save_checkpoint(Path(d), t)
                    ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(d))
            else:
                ray.train.report(report)
            clock.restart(step)  # throughput counts training only
        if fault_at and step == fault_at and rank == world - 1:
            marker = run_dir / f".fault-injected-{fault_at}"
            if not marker.exists():  # once: the restarted worker must get past this step
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)

    trainer.train(config.steps, on_step)
    bar.close()


def fit(
    config: PretrainConfig,
    survey: str | os.PathLike,
    out: str | os.PathLike,
    address: str | None = None,
    name: str = "pretrain",
    fault_at_step: int | None = None,
    callbacks: list | None = None,
):
    """Run (or resume) pretraining into directory `out` on Ray Train; returns the Result.

    `address`: a running Ray cluster ("auto", "ray://...") or None for a local one.
    `fault_at_step`: kill the last worker once at that step (fault-tolerance tests).
    `callbacks`: Ray Train callbacks, e.g. Tune's TuneReportCallback inside a sweep trial.
    """
    import ray

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    claim_file(out / "config.yaml", to_yaml(config), "pretraining config")
    if not ray.is_initialized():
        ray.init(address=address)
    trainer = torch_trainer(
        train_loop_per_worker,
        {
            "config": to_dict(config),
            "survey": str(Path(survey).resolve()),
            "run_dir": str(out),
            "fault_at_step": fault_at_step,
        },
        config,
        out / "ray",
        name,
        config.keep_checkpoints,
        callbacks,
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        export_run(out, result.checkpoint, config)
    return result


def torch_trainer(
    loop, loop_config: dict, scaling, storage: Path, name: str, keep: int, callbacks=None
):
    """A TorchTrainer of `loop` with `scaling`'s num_workers, use_gpu, cpus_per_worker and
    max_failures, checkpoints in `storage`/`name` (the latest `keep`): relaunched with the
    same storage and name, Ray Train restores the latest checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
        ),
    )
