"""A resumable job that writes one output shard per input shard, written once.

synth, ingest, embed and ``search --all`` all have this shape:

- **one job per directory.** `claim_dir` writes the job's identity (what makes its outputs
  what they are: the config, the inputs' checksums) into the directory, or, on a rerun,
  checks that the directory holds the same job; another job's directory is refused with
  the differences named.
- **atomic shards with done-records.** A job's `make` function writes one shard under its
  final name through `utils.atomic` and returns its `ShardEntry`; `record` then writes
  ``<shard>.done``: the identity's checksum, the shard index, rows, bytes and sha256.
- **resume keeps only what is finished and intact.** `finished` is true for a shard whose
  done-record names this job and the same inputs, and whose file still has the recorded
  sha256; everything else is made again. A temporary left by a killed writer is never
  read (its name is hidden) and is removed by `remove_temporaries`.
- **a pool with a progress bar and a clean abort.** `run_shards` makes the rest in this
  process or in `workers` spawned processes (fork is unsafe with the threads BLAS and
  HDF5 start); each `make` ticks a shared counter per row and polls the abort flag, so
  after the first error the other workers stop before writing, finished shards stay, and
  the error is raised once all have stopped.

MPI embedding keeps its own rank loop (ranks are launched by mpiexec, not forked here) and
uses `claim_dir`, `finished` and `record` directly.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from ..errors import SslHpcError
from ..utils.atomic import remove_stale_temporaries, write_json_atomic
from ..utils.faults import kill_point
from ..utils.hashing import sha256_file, sha256_json
from ..utils.progress import progress
from .manifest import ShardEntry

JOB_FILE = "job.json"


class JobError(SslHpcError):
    """A directory that belongs to another job, or a pool that lost a worker."""


class Aborted(Exception):
    """Raised inside `make` when another shard of the job failed: stop, write nothing."""


@dataclass(frozen=True)
class ShardPlan:
    """One output shard to make: its index, file, rows (for progress), a checksum of its
    own inputs where the job identity does not cover them (a catalogue's rows, an input
    shard's sha256; "" if it does), and the picklable `payload` the job's `make` needs."""

    index: int
    path: str
    rows: int
    payload: Any = None
    inputs: str = ""


@dataclass(frozen=True)
class ShardRecord:
    """A finished shard: its manifest entry, and what its job noted (`extra`)."""

    index: int
    entry: ShardEntry
    extra: dict = field(default_factory=dict)


class Progress:
    """What `make` sees of the job: `tick(n)` after n rows, `aborted()` to poll."""

    def __init__(self, tick: Callable[[int], None], aborted: Callable[[], bool]) -> None:
        self.tick, self.aborted = tick, aborted

    def check(self) -> None:
        """Raise `Aborted` if another shard of the job failed."""
        if self.aborted():
            raise Aborted


#: make(plan, progress) -> (entry of the shard it wrote atomically at plan.path, extra)
Make = Callable[[ShardPlan, Progress], tuple[ShardEntry, dict]]


# -- the directory ----------------------------------------------------------------------------
def claim_dir(
    out: str | os.PathLike,
    job: str,
    identity: dict,
    info: dict | None = None,
    name: str = JOB_FILE,
) -> str:
    """Make `out` this job's and return the identity's checksum.

    `identity` is what must match for a rerun to resume (a moved directory, or another
    worker count, is still the same job: keep paths and workers in `info`, which is
    recorded but not compared). A directory holding another job, or a survey this job did
    not write, raises JobError naming the differences.
    """
    out = Path(out)
    digest = sha256_json(identity)
    claim = out / name
    if claim.is_file():
        try:
            there = json.loads(claim.read_text())
        except (OSError, ValueError) as e:
            raise JobError(f"{claim}: unreadable ({e}); delete {out} to start again") from e
        if there.get("job") not in (None, job):  # another command's: its keys mean nothing here
            raise JobError(
                f"{out}: holds the outputs of {there['job']}, not {job}; use another --out"
            )
        if there.get("identity_sha256") != digest:
            old = there.get("identity", {})
            diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in identity.items() if old.get(k) != v]
            raise JobError(
                f"{out}: holds the outputs of another {there.get('job', 'job')} "
                f"({'; '.join(diff) or 'another version'}); use another --out, or delete it "
                "to start again"
            )
        return digest
    if out.exists() and not out.is_dir():
        raise JobError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(p.suffix in (".h5", ".json") for p in out.iterdir()):
        raise JobError(f"{out}: holds files no {job} made; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    record = {"job": job, "identity_sha256": digest, "identity": identity, **(info or {})}
    write_json_atomic(claim, record)
    return digest


def read_claim(out: str | os.PathLike, name: str = JOB_FILE) -> dict:
    """The claim `claim_dir` wrote in `out` (its identity and info)."""
    path = Path(out) / name
    if not path.is_file():
        raise JobError(f"{path}: missing (not a directory an ssl-hpc job wrote)")
    return json.loads(path.read_text())


def remove_temporaries(out: str | os.PathLike) -> None:
    """Delete the hidden temporaries of writers that are no longer running."""
    remove_stale_temporaries(out)


# -- shards -----------------------------------------------------------------------------------
def done_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".done")


def record(plan: ShardPlan, digest: str, entry: ShardEntry, extra: dict) -> ShardRecord:
    """Write the done-record of a shard `make` has just written."""
    kill_point("shard-before-record")  # renamed, not yet recorded: see utils.faults
    write_json_atomic(
        done_path(plan.path),
        {
            "identity_sha256": digest,
            "index": plan.index,
            "inputs": plan.inputs,
            "file": entry.file,
            "n_rows": entry.n_rows,
            "bytes": entry.n_bytes,
            "sha256": entry.sha256,
            "extra": extra,
        },
    )
    return ShardRecord(plan.index, entry, extra)


def finished(plan: ShardPlan, digest: str) -> ShardRecord | None:
    """The record of a shard this job finished and that is still intact, else None."""
    path, done = Path(plan.path), done_path(plan.path)
    if not (path.is_file() and done.is_file()):
        return None
    try:
        rec = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    same = (rec.get("identity_sha256"), rec.get("index"), rec.get("inputs", ""))
    if same != (digest, plan.index, plan.inputs):
        return None
    if path.stat().st_size != rec.get("bytes") or sha256_file(path) != rec.get("sha256"):
        return None  # truncated or corrupted since: make it again
    entry = ShardEntry(rec["file"], int(rec["n_rows"]), rec["sha256"], int(rec["bytes"]))
    return ShardRecord(plan.index, entry, rec.get("extra") or {})


def run_shards(
    plans: Sequence[ShardPlan],
    make: Make,
    digest: str,
    workers: int = 1,
    desc: str = "",
    unit: str = "obj",
) -> tuple[list[ShardRecord], list[ShardRecord]]:
    """(shards kept from an earlier run, shards made now), each list in index order.

    `make` must be a module-level function (spawned workers import it by name).
    """
    kept = [r for r in (finished(p, digest) for p in plans) if r is not None]
    done = {r.index for r in kept}
    todo = [p for p in plans if p.index not in done]
    with progress(total=sum(p.rows for p in plans), desc=desc, unit=unit) as bar:
        bar.update(sum(p.rows for p in plans if p.index in done))
        if workers <= 1 or len(todo) <= 1:
            made = _run_inline(todo, make, digest, bar)
        else:
            made = _run_pool(todo, make, digest, workers, bar)
    return kept, sorted(made, key=lambda r: r.index)


def _run_inline(plans, make: Make, digest: str, bar) -> list[ShardRecord]:
    progress_ = Progress(bar.update, lambda: False)
    with threadpool_limits(1):  # as in the pool: the same arithmetic, whatever `workers`
        return [record(p, digest, *make(p, progress_)) for p in plans]


_worker: dict[str, Any] = {}  # set in each pool process by _init_worker


def _init_worker(counter: Any, abort: Any) -> None:
    # One BLAS thread per process: the per-shard work is small matrices, and threaded BLAS
    # in every worker oversubscribes the cores (ingest measured 4x slower with 2 workers).
    threadpool_limits(1)
    _worker.update(counter=counter, abort=abort)


def _tick(n: int = 1) -> None:
    counter = _worker["counter"]
    with counter.get_lock():
        counter.value += n


def _pool_task(plan: ShardPlan, make: Make, digest: str) -> ShardRecord | None:
    """One shard in a pool worker; None if it was abandoned after a failure elsewhere."""
    try:
        return record(plan, digest, *make(plan, Progress(_tick, _worker["abort"].is_set)))
    except Aborted:
        return None


def _run_pool(plans, make: Make, digest: str, workers: int, bar) -> list[ShardRecord]:
    ctx = mp.get_context("spawn")
    counter, abort = ctx.Value("q", 0), ctx.Event()
    shown, made, error = 0, [], None
    with ProcessPoolExecutor(
        min(workers, len(plans)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(counter, abort),
    ) as pool:
        pending = {pool.submit(_pool_task, p, make, digest) for p in plans}
        while pending:
            finished_, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            bar.update(counter.value - shown)
            shown = counter.value
            for future in finished_:
                try:
                    result = future.result()
                except Exception as e:  # keep the first; let the other workers stop cleanly
                    abort.set()
                    error = error or e
                    continue
                if result is not None:
                    made.append(result)
    if isinstance(error, BrokenProcessPool):
        raise JobError(
            f"a worker process died ({error}); finished shards are kept: rerun to resume"
        ) from error
    if error is not None:
        raise error
    return made
