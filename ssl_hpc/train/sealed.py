"""Checkpoints that can be told apart from damaged ones.

Every rank writes its part of a checkpoint and then a seal: the sha256 of each file it
wrote (``sha256-rank-N.json``). A directory is intact when every sealed file is there with
its hash. torch.load alone is not enough: a truncated file fails to open, but flipped
bytes inside a tensor load without complaint. Checkpoints written before seals were kept
are checked by loading every ``.pt`` file in them. A read the filesystem failed (EIO, a
stale handle: `errors.is_transient`) says nothing of the checkpoint: it raises a
TransientError, for the attempt's retry to read again, rather than the checkpoint being
passed over.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import TransientError, is_transient
from ..utils.faults import kill_point
from ..utils.hashing import sha256_file

SEAL = "sha256-rank-{rank}.json"
#: what torch.load raises on a truncated or garbled file
UNREADABLE = (
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    UnicodeDecodeError,
    ValueError,
    KeyError,
    zipfile.BadZipFile,
    OSError,
)


def seal(directory: Path, rank: int) -> None:
    """Write this rank's seal over the files it has just written into `directory`."""
    kill_point("checkpoint-mid-write")  # written, not yet sealed: see utils.faults
    sums = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    (directory / SEAL.format(rank=rank)).write_text(json.dumps(sums, indent=1))


def damage(directory: Path, world: int = 1) -> str | None:
    """Why the checkpoint in `directory` (written by `world` ranks) cannot be trusted, or
    None when it is intact."""
    seals = sorted(directory.glob(SEAL.format(rank="*")))
    if not seals:
        return _unloadable(directory)
    for rank in range(world):
        if not (directory / SEAL.format(rank=rank)).is_file():
            return f"{SEAL.format(rank=rank)} missing (rank {rank}'s part never arrived)"
    for seal_file in seals:
        try:
            sums = json.loads(seal_file.read_text())
        except (OSError, ValueError) as e:
            return _unreadable(seal_file, e, f"{seal_file.name} unreadable ({e})")
        for name, digest in sums.items():
            path = directory / name
            if not path.is_file():
                return f"{name} missing"
            try:
                now = sha256_file(path)
            except OSError as e:
                return _unreadable(path, e, f"{name} unreadable ({e})")
            if now != digest:
                return f"{name} does not match its sha256 (damaged after it was written)"
    return None


def _unloadable(directory: Path) -> str | None:
    files = sorted(directory.glob("*.pt"))
    if not files:
        return "no checkpoint files"
    for path in files:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except UNREADABLE as e:
            detail = f"{type(e).__name__}: {str(e)[:80]}"
            return _unreadable(path, e, f"{path.name} unreadable ({detail})")
    return None


def _unreadable(path: Path, cause: BaseException, why: str) -> str:
    """`why` the checkpoint cannot be trusted, unless the filesystem failed the read: then
    a TransientError, since the file itself may be intact."""
    if not is_transient(cause):
        return why
    raise TransientError(
        f"{path}: the filesystem failed the read ({cause}); Ray's retries read it again. "
        f"If it persists (a bad sector also says EIO), move {path.parent} aside to resume "
        "from the checkpoint before it"
    ) from cause


def newest_first(root: Path) -> list[Path]:
    """The checkpoint directories under `root` (Ray Train names them checkpoint_<time>),
    newest first."""
    found = [p for p in root.glob("checkpoint_*") if p.is_dir()] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name, reverse=True)
