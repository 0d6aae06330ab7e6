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
from collections.abc import Callable

import numpy as np

from ..metrics import OUTLIER_DZ, photoz_metrics
from ..viz.figures import pyplot, save_figure
from .heads import HeadConfig, fit_head, predict_proba
from .tasks import Split, Task

LINEAR, FINETUNED, SUPERVISED = "linear_ssl", "finetuned_ssl", "supervised"
#: linear heads on features that need no training: what (a) must beat to have learned
LINEAR_RANDOM, PIXEL_PCA = "linear_random_init", "linear_pixel_pca"
#: every test object given the training labels' distribution: what knowing nothing scores
PRIOR = "training_prior"
#: what every representation must beat (thin lines in the plots)
BASELINES = (PRIOR, LINEAR_RANDOM, PIXEL_PCA)
#: legend names and line styles of the curves
NAMES = {
    LINEAR: "linear on SSL",
    FINETUNED: "fine-tuned SSL",
    SUPERVISED: "supervised from scratch",
    LINEAR_RANDOM: "linear on random init",
    PIXEL_PCA: "linear on pixel PCA",
    PRIOR: "training labels' prior (no image)",
}


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

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        weights = task.class_weights(train) if head.balance else None
        model = fit_head(features[train], task.targets[train], head, weights)
        return predict_proba(model, features[test])

    return scored_rows(task, fractions, task_splits, method, predict)


def prior_curve(task: Task, fractions: tuple[float, ...], task_splits: list[Split]) -> list[dict]:
    """One row per (fraction, repeat): every test object given the training labels' mean
    distribution. Photo-z: one redshift for all, near the training mean; morphology: the
    commonest answer, balanced accuracy one over the classes. What knowing nothing scores."""

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        counts = task.targets[train].sum(axis=0)
        return np.tile(counts / counts.sum(), (len(test), 1))

    return scored_rows(task, fractions, task_splits, PRIOR, predict)


def scored_rows(
    task: Task,
    fractions: tuple[float, ...],
    task_splits: list[Split],
    method: str,
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> list[dict]:
    """Rows of `method` whose test probabilities come from predict(train, test)."""
    rows = []
    for split in task_splits:
        for fraction in fractions:
            train = split.train(fraction)
            metrics = task.score(predict(train, split.test), split.test)
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


#: metrics reported beside each task's headline score, as mean and std over repeats
SECONDARY = ("eta", "bias", "accuracy", "macro_f1")


def curve(rows: list[dict], method: str, score: str) -> list[dict]:
    """Per label count of `method`: mean and standard deviation over repeats of `score`
    ("mean", "std") and of each `SECONDARY` metric the rows carry ("<name>_mean",
    "<name>_std"), and the mean per-class recall ("recall_mean", None where no repeat had
    that class in its test set). A repeat without a finite score (a diverged network, or
    one class tested) is left out: "repeats" counts the others."""
    by_n: dict[int, list[dict]] = {}
    for r in rows:
        if r["method"] == method and _finite(r.get(score)):  # NaN, or null once in JSON
            by_n.setdefault(r["n_train"], []).append(r)
    out = []
    for n, group in sorted(by_n.items()):
        point = {"n_train": n, **_mean_std([r[score] for r in group], "mean", "std")}
        point["repeats"] = len(group)
        for name in SECONDARY:
            values = [r[name] for r in group if r.get(name) is not None]
            if values:
                point.update(_mean_std(values, f"{name}_mean", f"{name}_std"))
        recalls = [r["recall"] for r in group if r.get("recall")]
        if recalls:
            per_class = zip(*recalls)
            point["recall_mean"] = [
                float(np.mean(v)) if (v := [x for x in c if x is not None]) else None
                for c in per_class
            ]
        out.append(point)
    return out


def _mean_std(values: list[float], mean: str, std: str) -> dict[str, float]:
    """{mean: the mean, std: the sample standard deviation (0 for one value)}."""
    return {
        mean: float(np.mean(values)),
        std: float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    }


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


def _finite(score: float | None) -> bool:
    return score is not None and math.isfinite(score)


def monotone(scores: list[float], higher: bool) -> list[float]:
    """A curve's scores (in order of label count) made monotone by isotonic regression:
    neighbours that get worse with more labels are pooled to their mean. More labels do
    not make a network worse in expectation; a run that does is noise (a lucky draw of few
    labels), and read as it is it would set the ratio of every score above it."""
    from sklearn.isotonic import IsotonicRegression  # lazy: only the ratios need it

    fit = IsotonicRegression(increasing=higher).fit(np.arange(len(scores)), scores)
    return [float(v) for v in fit.predict(np.arange(len(scores)))]


def equivalent_labels(rows: list[dict], method: str, score: str, higher: bool) -> list[dict]:
    """Per label count of `method`: how many labels supervised training needs for the same
    score, and the ratio, per repeat and as mean +- standard deviation. Read on each repeat's
    supervised curve made `monotone`. A ratio is a lower bound (`bound`) where supervised
    never reaches the score within the measured range, and an upper bound (`at_most`, per
    repeat) where supervised already reaches it with the fewest labels it was given: measure
    it lower to read the ratio there."""
    # a run without a score (NaN: a diverged network, or a one-class test set) is left
    # out (counted in `repeats_invalid`), since no comparison with NaN holds and it would
    # read as "supervised never got there"
    mine: dict[tuple[int, int], float] = {}  # (repeat, labels) -> score
    invalid: dict[int, int] = {}  # labels -> repeats of `method` whose score is not finite
    for r in rows:
        if r["method"] == method and _finite(r[score]):
            mine.setdefault((r["repeat"], r["n_train"]), r[score])
        elif r["method"] == method:
            invalid[r["n_train"]] = invalid.get(r["n_train"], 0) + 1
    supervised = {}  # repeat -> (label counts, monotone scores)
    for rep in sorted({rep for rep, _ in mine}):
        sup = sorted(
            (
                r
                for r in rows
                if r["method"] == SUPERVISED and r["repeat"] == rep and _finite(r[score])
            ),
            key=lambda r: r["n_train"],
        )
        if sup:
            supervised[rep] = (
                [r["n_train"] for r in sup],
                monotone([r[score] for r in sup], higher),
            )
    out = []
    for n in sorted({n for _, n in mine}):
        ratios, bounds, at_most = [], [], []
        for rep, (sup_n, sup_scores) in supervised.items():
            if (rep, n) not in mine:
                continue
            need = labels_to_reach(mine[rep, n], sup_n, sup_scores, higher)
            if math.isinf(need):
                bounds.append(sup_n[-1] / n)
            else:
                ratios.append(need / n)
                at_most.append(need == sup_n[0])
        if not ratios and not bounds:
            continue
        values = ratios or bounds
        out.append(
            {
                "n_train": n,
                "ratio_mean": float(np.mean(values)),
                "ratio_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "ratios": [round(v, 3) for v in ratios],
                "at_most": at_most,
                "bound": not ratios,  # every repeat: supervised never got there
                "repeats_unreached": len(bounds),
                "repeats_invalid": invalid.get(n, 0),
            }
        )
    return out


#: every method a study can hold, in the order its curves are listed
METHODS = (*BASELINES, LINEAR, FINETUNED, SUPERVISED)


def summarise(rows: list[dict], score: str, higher: bool) -> dict:
    """{"curves": the mean curve of every method in `rows`, "equivalent_labels": the ratio
    of (a) and (b) where they ran, only if (c), the yardstick, ran too}."""
    present = {r["method"] for r in rows}
    compared = [m for m in (LINEAR, FINETUNED) if m in present] if SUPERVISED in present else []
    return {
        "curves": {m: curve(rows, m, score) for m in METHODS if m in present},
        "equivalent_labels": {m: equivalent_labels(rows, m, score, higher) for m in compared},
    }


def ratio_line(method: str, ratios: list[dict]) -> str:
    """One line of `equivalent_labels(...)` for a person: mean +- std over the repeats,
    '>' for a lower bound (no repeat reached), '(k of n)' when only some did, '(k at
    most)' when k of them are upper bounds (supervised there with its fewest labels), '(k
    without a score, left out)' for runs whose score is not finite (a diverged network, or
    a test set with one class of a morphology question)."""
    return f"labels {SUPERVISED} needs to match {method}: " + ", ".join(map(_ratio_cell, ratios))


def _ratio_cell(r: dict) -> str:
    if r["bound"]:
        cell = f"{r['n_train']}: >{r['ratio_mean']:.2g}x"
    else:
        cell = f"{r['n_train']}: {r['ratio_mean']:.2g} +- {r['ratio_std']:.2g}x"
        if r["repeats_unreached"]:
            reached = len(r["ratios"])
            cell += f" ({reached} of {reached + r['repeats_unreached']})"
        if any(r.get("at_most", ())):
            cell += f" ({sum(r['at_most'])} at most)"
    if r.get("repeats_invalid"):
        cell += f" ({r['repeats_invalid']} without a score, left out)"
    return cell


def plot_curves(rows: list[dict], task: Task, path, title: str = "") -> dict[str, list]:
    """Score against labels (log axis), one line per method with repeat error bars;
    returns what it drew: {legend name: [(labels, mean, std), ...]}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    styles = {LINEAR: "C0o-", FINETUNED: "C1o-", SUPERVISED: "C2o-"}
    styles.update({LINEAR_RANDOM: "C7s--", PIXEL_PCA: "C5^:", PRIOR: "k.-."})
    drawn = {}
    for method, style in styles.items():
        pts = curve(rows, method, task.score_name)
        if not pts:
            continue
        drawn[NAMES[method]] = [(p["n_train"], p["mean"], p["std"]) for p in pts]
        ax.errorbar(
            [p["n_train"] for p in pts],
            [p["mean"] for p in pts],
            yerr=[p["std"] for p in pts],
            fmt=style,
            capsize=3,
            lw=1.5 if method in styles and method not in BASELINES else 1.0,
            label=NAMES[method],
        )
    ax.set_xscale("log")
    better = "higher" if task.higher_is_better else "lower"
    ax.set(
        xlabel="training labels (error bars: std over repeats)",
        ylabel=f"{task.score_name} ({better} is better)",
        title=title or f"Label efficiency: {task.name}",
    )
    if drawn:  # none where every repeat's test set held one class of the question
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return drawn


def plot_photoz(z_spec: np.ndarray, z_pred: np.ndarray, path, title: str = "") -> None:
    """Predicted against spectroscopic redshift, and dz/(1+z) against z_spec."""
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
