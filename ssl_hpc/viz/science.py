"""Plots of the report's science results, from the numbers they are handed."""

from __future__ import annotations

import os

import numpy as np

from .figures import pyplot, save_figure


def plot_error_by_trust(bins: list[dict], outlier: float, path: str | os.PathLike) -> None:
    """Median and mean |error| and the outlier percentage per trust bin (`error_by_trust`
    rows: trust_min, trust_max, median_abs_error, mean_abs_error, outlier_fraction)."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    # one point per bin, labelled by its trust range: several bins can share trust 0
    at = np.arange(1, len(bins) + 1)
    ranges = [f"{r['trust_min']:.2f}-{r['trust_max']:.2f}" for r in bins]
    ax[0].plot(at, [r["median_abs_error"] for r in bins], "o-", label="median |dz|")
    ax[0].plot(at, [r["mean_abs_error"] for r in bins], "s--", label="mean |dz|")
    ax[0].set_ylabel("|dz|")
    ax[0].legend()
    ax[1].plot(at, [100 * r["outlier_fraction"] for r in bins], "o-", color="C3")
    ax[1].set_ylabel(f"outliers |dz| > {outlier} (%)")
    for a in ax:
        a.set_xticks(at, ranges, fontsize=8)
        a.set_xlabel("trust bin (equal counts, farthest from the labels first)")
    fig.suptitle("Photo-z error against trust")
    save_figure(fig, path)


def plot_invariance(
    names: list[str],
    ratios: list[float],
    path: str | os.PathLike,
    random_init: list[float] | None = None,
) -> None:
    """Bars of the view-to-galaxy / galaxy-to-galaxy distance ratio per augmentation, the
    random initialisation's beside them when given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(len(names))
    width = 0.4 if random_init is not None else 0.8
    ax.bar(x, ratios, width, color="C0", label="trained")
    if random_init is not None:
        ax.bar(x + width, random_init, width, color="0.7", label="random init")
        x = x + width / 2
    ax.set_xticks(x, names)
    ax.axhline(1.0, color="0.4", ls="--", lw=1, label="as far as another galaxy")
    ax.set_ylabel("view-to-own-galaxy / galaxy-to-galaxy")
    ax.legend(fontsize=8)
    save_figure(fig, path)
