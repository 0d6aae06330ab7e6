"""Grids of cutouts with captions, written as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .composite import rgb_composite
from .figures import pyplot, save_figure


def save_cutout_grid(
    images: np.ndarray,
    bands: Sequence[str],
    captions: Sequence[str],
    out: str | os.PathLike,
    ncols: int = 8,
    title: str | None = None,
    display_values: bool = False,
    softening: float | None = None,
) -> None:
    """Write `images` (n, B, H, W) as a grid of colour composites with one caption each.

    `display_values`: the images hold display intensities (JPEG/PNG ingests), not fluxes.
    `images` may differ in size; `softening` (see `rgb_composite`) is shared by all when set.
    """
    plt = pyplot()
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    # Cells are laid out in inches so multi-line captions never run into the row above.
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    cell, gap = 1.85, 0.05
    caption_h = lines * 6.5 * 1.3 / 72 + 0.06
    title_h = 0.4 if title else 0.0
    width = ncols * (cell + gap) + gap
    height = nrows * (cell + caption_h + gap) + title_h + gap
    fig = plt.figure(figsize=(width, height))
    for i, (img, cap) in enumerate(zip(images, captions)):
        r, c = divmod(i, ncols)
        left = gap + c * (cell + gap)
        bottom = height - title_h - (r + 1) * (cell + caption_h + gap)
        ax = fig.add_axes((left / width, bottom / height, cell / width, cell / height))
        ax.axis("off")
        ax.imshow(
            rgb_composite(img, bands, display_values=display_values, softening=softening),
            origin="lower",
            interpolation="nearest",
            aspect="auto",
        )
        ax.set_title(cap, fontsize=6.5, pad=2)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.12 / height, va="top")
    save_figure(fig, out, tight=False)
