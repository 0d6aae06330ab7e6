"""Label-efficiency curves: score against the number of labels for (a) a linear head on
frozen self-supervised representations, (b) the fine-tuned self-supervised network and
(c) the same network trained from scratch, and the "equivalent labels" ratio: how many
times more labels (c) needs to match (a) or (b).

Every method sees the same splits (`tasks.splits`): per repeat one fixed test set, and
nested training sets drawn from one pool, so the curves differ only by method; the spread
over repeats gives the error bars.
"""

from __future__ import annotations

import math

import numpy as np

from .heads import HeadConfig, fit_head, predict_proba
from .tasks import Split, Task

LINEAR, FINETUNED, SUPERVISED = "linear_ssl", "finetuned_ssl", "supervised"


def probe_curve(
    features: np.ndarray,
    task: Task,
    fractions: tuple[float, ...],
    task_splits: list[Split],
    head: HeadConfig | None = None,
    method: str = LINEAR,
) -> list[dict]:
    """One row per (fraction, repeat): a head trained on frozen `features` (aligned with
    `task.rows`), scored on the repeat's test set."""
    head = head or HeadConfig()
    rows = []
    for split in task_splits:
        for fraction in fractions:
            train = split.train(fraction)
            model = fit_head(features[train], task.targets[train], head)
            metrics = task.score(predict_proba(model, features[split.test]), split.test)
            rows.append(
                {
                    "method": method,
                    "fraction": fraction,
                    "repeat": split.repeat,
                    "n_train": len(train),
                    **metrics,
                }
            )
    return rows


def curve(rows: list[dict], method: str, score: str) -> list[dict]:
    """Per label count of `method`: mean and standard deviation of `score` over repeats."""
    by_n: dict[int, list[float]] = {}
    for r in rows:
        if r["method"] == method and r.get(score) is not None:
            by_n.setdefault(r["n_train"], []).append(r[score])
    return [
        {
            "n_train": n,
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "repeats": len(v),
        }
        for n, v in sorted(by_n.items())
    ]


def labels_to_reach(target: float, n: list[int], scores: list[float], higher: bool) -> float:
    """The label count at which a curve first reaches `target`, interpolating linearly in
    log(labels) between measured points; inf if it never does, n[0] if it starts there."""
    better = (lambda s: s >= target) if higher else (lambda s: s <= target)
    for i, s in enumerate(scores):
        if better(s):
            if i == 0:
                return float(n[0])
            s0, s1 = scores[i - 1], s
            t = (target - s0) / (s1 - s0) if s1 != s0 else 1.0
            return float(math.exp(math.log(n[i - 1]) + t * (math.log(n[i]) - math.log(n[i - 1]))))
    return math.inf


def equivalent_labels(rows: list[dict], method: str, score: str, higher: bool) -> list[dict]:
    """Per label count of `method`: how many labels supervised training needs for the same
    score, and the ratio, per repeat and as mean +- standard deviation. A ratio is a lower
    bound (`bound`) where supervised never reaches the score within the measured range."""
    out = []
    repeats = sorted({r["repeat"] for r in rows if r["method"] == method})
    for n in sorted({r["n_train"] for r in rows if r["method"] == method}):
        ratios, bounds = [], []
        for rep in repeats:
            mine = [r for r in rows if r["method"] == method and r["repeat"] == rep]
            sup = sorted(
                (r for r in rows if r["method"] == SUPERVISED and r["repeat"] == rep),
                key=lambda r: r["n_train"],
            )
            at_n = [r[score] for r in mine if r["n_train"] == n]
            if not at_n or not sup:
                continue
            need = labels_to_reach(
                at_n[0], [r["n_train"] for r in sup], [r[score] for r in sup], higher
            )
            if math.isinf(need):
                bounds.append(sup[-1]["n_train"] / n)
            else:
                ratios.append(need / n)
        if not ratios and not bounds:
            continue
        values = ratios or bounds
        out.append(
            {
                "n_train": n,
                "ratio_mean": float(np.mean(values)),
                "ratio_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "ratios": [round(v, 3) for v in ratios],
                "bound": not ratios,  # every repeat: supervised never got there
                "repeats_unreached": len(bounds),
            }
        )
    return out


def plot_curves(rows: list[dict], task: Task, path, title: str = "") -> None:
    """Score against labels (log axis), one line per method with repeat error bars."""
    from ..viz.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    names = {LINEAR: "linear on SSL", FINETUNED: "fine-tuned SSL", SUPERVISED: "supervised"}
    for i, method in enumerate((LINEAR, FINETUNED, SUPERVISED)):
        pts = curve(rows, method, task.score_name)
        if not pts:
            continue
        ax.errorbar(
            [p["n_train"] for p in pts],
            [p["mean"] for p in pts],
            yerr=[p["std"] for p in pts],
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=names[method],
        )
    ax.set_xscale("log")
    better = "higher" if task.higher_is_better else "lower"
    ax.set(
        xlabel="training labels",
        ylabel=f"{task.score_name} ({better} is better)",
        title=title or f"Label efficiency: {task.name}",
    )
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_photoz(z_spec: np.ndarray, z_pred: np.ndarray, path, title: str = "") -> None:
    """Predicted against spectroscopic redshift, and dz/(1+z) against z_spec."""
    from ..viz.figures import pyplot, save_figure
    from .metrics import OUTLIER_DZ, photoz_metrics

    plt = pyplot()
    m = photoz_metrics(z_pred, z_spec)
    dz = (z_pred - z_spec) / (1 + z_spec)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    top = max(float(np.max(z_spec)), float(np.max(z_pred))) * 1.05
    axes[0].scatter(z_spec, z_pred, s=3, alpha=0.5)
    axes[0].plot([0, top], [0, top], "k-", lw=0.8)
    axes[0].set(xlabel="z_spec", ylabel="z_phot", xlim=(0, top), ylim=(0, top))
    axes[0].set_title(
        f"sigma_MAD={m['sigma_mad']:.4f}  eta={m['eta']:.2f}%  bias={m['bias']:+.4f}", fontsize=9
    )
    axes[1].scatter(z_spec, dz, s=3, alpha=0.5)
    for y in (-OUTLIER_DZ, 0, OUTLIER_DZ):
        axes[1].axhline(y, color="k", lw=0.8, ls="-" if y == 0 else "--")
    axes[1].set(xlabel="z_spec", ylabel="dz / (1 + z_spec)")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
