"""The skeleton both Ray Train loops (pretraining, fine-tuning) are written on.

Every worker function does the same five things, here once:

- `start(cpus)`: its rank, world size and device, with torch's threads set to the CPUs
  Ray granted it (not every core of the node); it removes the checkpoint staging
  directories killed workers left on the node (`remove_dead_staging`);
- `ddp(model, worker)`: DistributedDataParallel when there is more than one worker;
- `restore(load, checkpoints, world)`: the run's newest intact checkpoint on disk (a
  relaunch on the same storage, a restart after a worker died, a requeued job whose
  driver died before Ray recorded its last checkpoint), loaded by the job's
  `load(directory)`; a damaged or incomplete one (truncated, bytes flipped, a rank's part
  missing: see `train.sealed`) is passed over for the newest intact one, and the note
  says so;
- `report(metrics, save)`: a report from every rank (Ray Train's barrier), with a
  checkpoint when `save(directory)` writes this rank's part of one, sealed with its hashes;
- a `StepHook(step, rank)` after each step: None in production; fault-tolerance tests
  pass one that kills the worker (`fit(..., hook=...)`), so no fault code lives here;
- `fail_once`: Ray restarts a failed worker group `max_failures` times, which mends a
  dead node, not bad input or a diverged loss (an SslHpcError), which recurs from the
  same data and checkpoint. The first attempt to raise one writes it to the run's
  ``failed.json``; every retry raises it again before building anything.

On the driver (after `run_dir.claim_run`), `connect` joins or starts Ray, and
`torch_trainer` builds the TorchTrainer both `fit`s launch: relaunched with the same
storage and name, Ray Train restores the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import to_dict
from ..errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
    SslHpcError,
    TransientError,
)
from ..utils.atomic import out_of_space, write_json_atomic
from ..utils.hardware import cpu_threads
from ..utils.procfs import alive
from .sealed import damage, newest_first, seal

#: a checkpoint's staging directory in the node's temp dir: prefix, worker pid, random part
STAGING_PREFIX = "ssl-hpc-checkpoint-"

#: called after every step with (step, rank): fault injection in tests, None in production
StepHook = Callable[[int, int], None]

#: in a run directory: the error no retry can mend that stopped its latest `fit`
FAILED_FILE = "failed.json"


@dataclass(frozen=True)
class Worker:
    """This Ray Train worker: its rank, the world size and its device."""

    rank: int
    world: int
    device: torch.device


def start(cpus: float) -> Worker:
    """This worker's place in the group; torch uses as many threads as CPUs Ray granted."""
    import ray.train  # lazy: only Ray Train worker processes call this
    import ray.train.torch

    ctx = ray.train.get_context()
    torch.set_num_threads(cpu_threads(cpus))
    remove_dead_staging()
    return Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())


def ddp(model: torch.nn.Module, worker: Worker, broadcast_buffers: bool = True):
    """`model` under DistributedDataParallel for more than one worker, else itself."""
    if worker.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [worker.device] if worker.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=broadcast_buffers)


@dataclass(frozen=True)
class Restored:
    """A worker resumed from a checkpoint, passing over the newer ones listed."""

    passed_over: tuple[str, ...] = ()  # "checkpoint_<time>: why it cannot be trusted"

    def note(self, step: int) -> str:
        """The line the run's log gets: where it resumed, and what it skipped."""
        text = f"restored from step {step}"
        return text + (f" (passed over {'; '.join(self.passed_over)})" if self.passed_over else "")


def restore(load: Callable[[Path], None], checkpoints: str | Path, world: int) -> Restored | None:
    """Load this run's newest intact checkpoint with `load(directory)`, or return None
    when it has none yet.

    The newest is looked for on disk under `checkpoints` (the run's Ray storage folder),
    not only in what Ray Train hands back: a driver killed between a checkpoint's upload
    and its record of it (a Slurm requeue, a preemption) leaves Ray a record one
    checkpoint behind, or none at all. A damaged or incomplete checkpoint (a missing
    rank's part, flipped bytes) is passed over. Every rank reads the same files, so all
    pick the same.
    """
    import ray.train

    root = Path(checkpoints)
    with contextlib.ExitStack() as stack:
        candidates = newest_first(root)
        if not candidates and (given := ray.train.get_checkpoint()):
            # Ray's storage is elsewhere (remote): the copy it hands back
            candidates = [Path(stack.enter_context(given.as_directory()))]
        if not candidates:
            return None
        passed_over = []
        for directory in candidates:
            why = damage(directory, world)
            if why is None:
                load(directory)
                if passed_over:
                    print(
                        f"checkpoint damaged: {'; '.join(passed_over)}; resuming from {directory}",
                        file=sys.stderr,
                        flush=True,
                    )
                return Restored(tuple(passed_over))
            passed_over.append(f"{directory.name}: {why}")
    raise CheckpointError(
        f"no intact checkpoint in {root}: {'; '.join(passed_over)}. Move the run "
        "directory's ray/ folder aside to start again from step 0."
    )


def report(metrics: dict, save: Callable[[Path], None] | None = None) -> None:
    """Report `metrics` from this rank, with a checkpoint `save(directory)` writes in a
    staging directory of the node's temp dir (Ray copies it to the run's storage)."""
    import ray.train

    if save is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as d:
        save(Path(d))
        seal(Path(d), ray.train.get_context().get_world_rank())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def remove_dead_staging(temp: str | Path | None = None) -> list[Path]:
    """Remove the checkpoint staging directories that workers killed on this node left in
    its temp dir (`temp`; default: tempfile's), one whole checkpoint each (144 MB for the
    demo's), which nothing else would ever delete. Only this user's, and only those whose
    worker process is gone (by pid: workers sharing a temp dir must share a pid namespace,
    as Slurm jobs on a node do); returns what was removed."""
    removed = []
    for directory in Path(temp or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        pid = directory.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and directory.stat().st_uid == os.getuid() and not alive(int(pid)):
                shutil.rmtree(directory)
                removed.append(directory)
    return removed


def check_cluster_fits(config) -> None:
    """Refuse a run whose workers the Ray cluster cannot all host (`num_workers` x
    `cpus_per_worker` CPUs, and a GPU each with `use_gpu`): Ray Train would wait for them
    forever. For the fixed-size local cluster; an autoscaling one may grow."""
    import ray

    have = ray.cluster_resources()
    cpus = config.num_workers * config.cpus_per_worker
    gpus = config.num_workers if config.use_gpu else 0
    if have.get("CPU", 0) + 1e-9 < cpus or have.get("GPU", 0) + 1e-9 < gpus:
        raise ConfigError(
            f"num_workers={config.num_workers} x cpus_per_worker={config.cpus_per_worker:g}"
            + (" and a GPU each" if gpus else "")
            + f": the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} "
            "GPUs (lower them, or give --address of a larger cluster)"
        )


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` ("auto", "ray://..."), or start a local one for
    None (`start_local`); a no-op when this process is already connected."""
    import ray  # lazy: the library imports without a Ray installation's start-up cost

    if ray.is_initialized():
        return
    if address is None:
        start_local()
    else:
        ray.init(address=address)


def start_local(**init_kwargs) -> None:
    """Start a local Ray cluster (`ray.init` keywords: num_cpus, ...) whose every process
    knows its address.

    Ray Train V2's PlacementGroupCleaner frees a run's CPUs when its controller dies
    without shutting down (an ASHA-stopped trial, a killed driver). It asks the State API
    whether the controller lives, and finds the cluster from RAY_ADDRESS, else by scanning
    the machine; with two clusters on one machine (two users on a login node, pytest
    workers) the scan fails, the cleaner's thread dies, and the next trial waits for CPUs
    that never come (tests/test_asha.py). So the GCS port is chosen here and RAY_ADDRESS
    set for the processes Ray starts, which inherit this environment; this process's own
    environment is restored afterwards. The dashboard stays on (ten processes, ~0.8 GB,
    ~4 CPU s to start): it serves that State API."""
    import ray

    port = free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    own = {name: os.environ.get(name) for name in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    os.environ.update(RAY_ADDRESS=address, RAY_GCS_SERVER_PORT=str(port))
    try:
        ray.init(address="local", **init_kwargs)  # "local": RAY_ADDRESS is not joined
    finally:
        for name, value in own.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    started = ray.get_runtime_context().gcs_address
    if started != address:  # another process took the port between the probe and Ray
        warnings.warn(
            f"local Ray started at {started}, not {address}: with another Ray cluster on "
            "this machine, Ray Train may not free a stopped run's CPUs",
            RuntimeWarning,
            stacklevel=2,
        )


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def torch_trainer(
    loop,
    config,
    survey: str | Path,
    out: Path,
    hook: StepHook | None,
    name: str,
    keep: int,
    callbacks=None,
):
    """A TorchTrainer of worker function `loop`, which gets {"config": `config` as a dict,
    "survey", "out", "hook"}; `config`'s num_workers, use_gpu, cpus_per_worker and
    max_failures; checkpoints in `out`/ray/`name` (the latest `keep`): relaunched with the
    same directory and name, Ray Train restores the latest checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = {
        "config": to_dict(config),
        "survey": str(Path(survey).resolve()),
        "out": str(out),
        "checkpoints": str(out / "ray" / name),  # what `restore` searches
        "hook": hook,
    }
    return TorchTrainer(
        fail_once(loop),
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(out / "ray"),
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
        ),
    )


def fail_once(loop: Callable[[dict], None]) -> Callable[[dict], None]:
    """Worker function `loop`, made to raise at once in Ray's retries after any attempt of
    it raised an SslHpcError that a retry meets again (`repeats_on_retry`: bad input, a
    diverged loss), which the first attempt to raise it records in the run's FAILED_FILE."""

    @functools.wraps(loop)
    def once(config: dict) -> None:
        failed = Path(config["out"]) / FAILED_FILE
        recorded = recorded_error(failed)
        if recorded is not None:
            raise recorded
        try:
            loop(config)
        except SslHpcError as e:
            if not repeats_on_retry(e):
                raise
            kind = f"{type(e).__module__}:{type(e).__qualname__}"
            # a full disk: the retries run again, and the error is still the first one
            with contextlib.suppress(OSError, DiskFullError):
                write_json_atomic(failed, {"error": kind, "message": str(e)})
            raise

    return once


def repeats_on_retry(error: SslHpcError) -> bool:
    """Whether a retry meets `error` again: bad input or a diverged loss does; a full disk,
    or a filesystem's hiccup under a read (EIO, ESTALE, too many open files) may not."""
    return not isinstance(error, (DiskFullError, TransientError))


def recorded_error(failed: Path) -> SslHpcError | None:
    """The error `fail_once` recorded in `failed`, as its own class where it can be found
    (an SslHpcError otherwise: the same one-line message and exit); None if there is no
    record, or none that reads whole (the attempt then runs and meets the error itself)."""
    try:
        record = json.loads(failed.read_text())
        module, _, name = str(record["error"]).partition(":")
        message = str(record["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kind = None
    if module == "ssl_hpc" or module.startswith("ssl_hpc."):
        # a retry is a fresh process: the error's module may not be imported yet
        with contextlib.suppress(ImportError):
            kind = getattr(importlib.import_module(module), name, None)
    if isinstance(kind, type) and issubclass(kind, SslHpcError):
        with contextlib.suppress(TypeError):  # (a class built from other arguments)
            return kind(message)
    return SslHpcError(message)


def run_fit(trainer, out: Path):
    """`trainer.fit()`, with a failure caused by the run directory's filesystem filling up
    (a checkpoint copied into it, a metrics row) raised as a DiskFullError naming it. A
    new `fit` starts afresh: the last one's FAILED_FILE (the input may be mended) goes."""
    (out / FAILED_FILE).unlink(missing_ok=True)
    try:
        return trainer.fit()
    except Exception as e:
        failures = [e, *getattr(e, "worker_failures", {}).values()]
        ours = [f for f in failures if isinstance(f, SslHpcError)]
        if ours:  # an input or option found bad in a worker: its one line, not Ray's
            raise ours[0] from None
        if not any(out_of_space(f, out) for f in failures):
            raise
        free = shutil.disk_usage(out).free
        raise DiskFullError(
            f"no space left writing the run under {out} ({free} bytes free on its "
            "filesystem). Free some space and rerun the same command: it resumes from the "
            "newest checkpoint that was written whole"
        ) from e
