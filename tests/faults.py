"""Fault injection for the fault-tolerance tests: hooks the library calls after each
training step (`fit(..., hook=...)`), shipped to Ray workers by value (the workers cannot
import this test module by name)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


class KillOnce:
    """SIGKILL the worker of `rank` when it finishes `step`, once: the marker file stops
    the restarted worker from dying again at the same step."""

    def __init__(self, step: int, rank: int, marker: str | os.PathLike) -> None:
        self.step, self.rank, self.marker = step, rank, str(marker)

    def __call__(self, step: int, rank: int) -> None:
        if step == self.step and rank == self.rank and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)


class DamageThenKill(KillOnce):
    """At `step`: wait until Ray Train has recorded the checkpoint of `checkpointed` as its
    latest (so that is the one it hands back), flip bytes in the middle of its files, then
    SIGKILL the worker as KillOnce does."""

    def __init__(self, step, rank, marker, storage: str | os.PathLike, checkpointed: int):
        super().__init__(step, rank, marker)
        self.storage, self.checkpointed = Path(storage), checkpointed

    def __call__(self, step: int, rank: int) -> None:
        if step != self.step or rank != self.rank or Path(self.marker).exists():
            return
        snapshot = self.storage / "checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 300  # a busy machine (CI) can take minutes
        while time.monotonic() < deadline:
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
            if latest["metrics"]["step"] == self.checkpointed:
                break
            time.sleep(0.2)
        for path in (self.storage / latest["checkpoint_dir_name"]).glob("*.pt"):
            data = bytearray(path.read_bytes())
            middle = len(data) // 2
            data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
            path.write_bytes(bytes(data))
        super().__call__(step, rank)


class CountSteps:
    """Append each step a worker finishes to file `path`, one line per step and rank."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)

    def __call__(self, step: int, rank: int) -> None:
        with open(self.path, "a") as f:
            f.write(f"{rank} {step}\n")


def _by_value() -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def kill_once(step: int, rank: int, marker: str | os.PathLike) -> KillOnce:
    """A KillOnce hook, picklable into Ray workers."""
    _by_value()
    return KillOnce(step, rank, marker)


def damage_then_kill(step, rank, marker, storage, checkpointed) -> DamageThenKill:
    """A DamageThenKill hook, picklable into Ray workers."""
    _by_value()
    return DamageThenKill(step, rank, marker, storage, checkpointed)


def count_steps(path: str | os.PathLike) -> CountSteps:
    """A CountSteps hook, picklable into Ray workers."""
    _by_value()
    return CountSteps(path)
