"""Matplotlib without a display, and figures written atomically."""

from __future__ import annotations

import os

from ..utils.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (batch jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110, tight: bool = True) -> None:
    """Write `fig` as PNG to `path` (temporary name, then rename) and close it."""
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
