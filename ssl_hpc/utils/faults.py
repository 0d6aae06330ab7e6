"""Named kill points: where a crash leaves a state that a kill by time is unlikely to hit.

The library calls `kill_point(name)` at each of them. It does nothing unless the
environment names the point (a dictionary look-up per call, at most once per shard or
checkpoint):

    SSL_HPC_KILL_AT=<name>[:<n>]    SIGKILL at the n-th pass (default 1) of this process

The points:

- ``shard-before-record`` (`data.sharded_job.record`): a shard renamed to its final name,
  its done-record not yet written (synth, ingest, embed, ``search --all``);
- ``checkpoint-mid-write`` (`train.sealed.seal`): a rank's checkpoint files written, its
  seal over them not yet (pretraining, fine-tuning).

The kill is a scheduler's: the whole command dies, not only the process at the point.
SIGKILL goes first to the process group of the command, the outermost ancestor started
with the same SSL_HPC_KILL_AT (Linux /proc), then to this process's own group (Ray
workers, MPI ranks and their proxies lead their own, and die with their command's
driver or mpiexec). Set it for one command started in its own session, as
bench/faults.py does (``Popen(start_new_session=True)``), never in a shell.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from .procfs import stat_fields

ENV = "SSL_HPC_KILL_AT"

_passes: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL the command here if SSL_HPC_KILL_AT names this point and pass; else nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _passes[name] += 1
    if _passes[name] == int(nth or 1):
        os.killpg(os.getpgid(_command(f"{ENV}={spec}".encode())), signal.SIGKILL)
        os.killpg(0, signal.SIGKILL)


def _command(setting: bytes) -> int:
    """The outermost of this process and its ancestors whose environment has `setting`."""
    pid = command = os.getpid()
    while pid > 1:
        try:
            pid = int(stat_fields(pid)[1])  # the parent's pid
            if setting in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                command = pid
        except (OSError, ValueError, IndexError):  # not Linux, or an ancestor we may not read
            break
    return command
