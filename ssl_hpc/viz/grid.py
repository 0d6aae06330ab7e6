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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.9 * ncols, 2.1 * nrows + (0.4 if title else 0)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions):
        ax.imshow(
            rgb_composite(img, bands, display_values=display_values, softening=softening),
            origin="lower",
            interpolation="nearest",
        )
        ax.set_title(cap, fontsize=6.5, pad=2)
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=9)
        top = 1.0 - 0.4 / fig.get_figheight()  # room for the title above the captions
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, top))
    save_figure(fig, out, tight=False)
