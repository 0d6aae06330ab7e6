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
    mid = [0.5 * (r["trust_min"] + r["trust_max"]) for r in bins]
    ax[0].plot(mid, [r["median_abs_error"] for r in bins], "o-", label="median |dz|")
    ax[0].plot(mid, [r["mean_abs_error"] for r in bins], "s--", label="mean |dz|")
    ax[0].set_xlabel("trust (quintile centre)")
    ax[0].set_ylabel("|dz|")
    ax[0].legend()
    ax[1].plot(mid, [100 * r["outlier_fraction"] for r in bins], "o-", color="C3")
    ax[1].set_xlabel("trust (quintile centre)")
    ax[1].set_ylabel(f"outliers |dz| > {outlier} (%)")
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
