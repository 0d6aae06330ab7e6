"""What Linux's /proc says about a process: its state, its parent, whether it still runs."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, parent pid, ...); the
    name may hold spaces and ')' itself, so the split is at the last ')'. OSError where
    there is no such process or no /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether process `pid` still runs: it answers signal 0 (another user's counts) and is
    not a zombie (killed, its parent not having reaped it yet: it will never run again)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        return stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):  # not Linux, or gone meanwhile
        return True
