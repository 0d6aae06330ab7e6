"""Progress bars: live on a terminal, a line every 30 s in batch logs, SSL_HPC_PROGRESS=0 off."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kw: Any) -> tqdm:
    """A tqdm bar on stderr, throttled when stderr is a file (Slurm output), optional off."""
    disable = kw.pop("disable", False) or os.environ.get("SSL_HPC_PROGRESS") == "0"
    interactive = sys.stderr.isatty()
    kw.setdefault("mininterval", 0.1 if interactive else 30.0)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, **kw)
