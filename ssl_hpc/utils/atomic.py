"""Write-then-rename, so a reader never sees a half-written output."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DiskFullError


def temporary_name(path: Path) -> Path:
    """The hidden name `path` is written under before the rename (same dir: rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block
    succeeds. A write that fails because the filesystem is full raises DiskFullError
    naming `path` (the partial temporary file is removed either way)."""
    path = Path(path)
    tmp = temporary_name(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)  # the rename itself survives a crash only once the dir is synced
    except Exception as e:
        if out_of_space(e, path.parent):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                f"no space left writing {path} ({free} bytes free on its filesystem; "
                f"{type(e).__name__}: {str(e).splitlines()[0][:100]}). Free some space and "
                "rerun: finished outputs are kept and nothing half-written is left behind"
            ) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


#: free bytes below which a failed write is taken to be the filesystem filling up (HDF5,
#: torch.save and numpy report a full disk in their own words, often without an errno)
NEARLY_FULL = 1 << 20


def out_of_space(error: BaseException, directory: Path) -> bool:
    """True if `error`, raised while writing into `directory`, is a full disk or quota."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(directory).free < NEARLY_FULL
    except OSError:
        return False


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike, name: str = "*") -> None:
    """Delete the hidden temporaries (``.NAME.tmp-<pid>``, and ``.NAME.old-<pid>`` set
    aside by a replacing writer) in `directory` whose writer is no longer running: what a
    killed writer leaves behind. Files or whole directories; `name` narrows it to one
    output's."""
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for path in Path(directory).glob(pattern):
            pid = path.name.rsplit("-", 1)[1]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (a temporary file's writer may still run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_safe(obj: Any) -> Any:
    """A copy that strict JSON can hold: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, strict JSON to `path` atomically, fsynced before the rename.

    NaN becomes null: Python's json writes a bare ``NaN`` that browsers' and most other
    languages' parsers reject, and a metric that could not be measured is missing, not a number.
    """
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(json_safe(obj), f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
