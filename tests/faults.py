"""Fault injection for the fault-tolerance tests: hooks the library calls after each
training step (`fit(..., hook=...)`), shipped to Ray workers by value (the workers cannot
import this test module by name)."""

from __future__ import annotations

import os
import signal
import sys
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


def kill_once(step: int, rank: int, marker: str | os.PathLike) -> KillOnce:
    """A KillOnce hook, picklable into Ray workers."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return KillOnce(step, rank, marker)
