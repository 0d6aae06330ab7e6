"""What a sweep leaves: a ranked table of trials, the best config, the ablation, plots.

Written into the sweep's output directory (each file atomically):

- ``trials.csv`` / ``trials.md``: one row per trial: rank, status (completed, stopped early
  by the scheduler, error), the swept values, the step reached, the objective and the other
  kNN metrics at the last evaluation, the random-initialisation value of the objective,
  the wall time of the trial's last attempt and how often it was started.
- ``best_config.yaml``: the base config with the best trial's values: a ready
  ``ssl-hpc pretrain --config`` file (raise ``steps`` for a full run).
- ``summary.json``: the best trial, counts, and the ablation table (mean, spread, n and
  difference to the full set per augmentation subset).
- ``ablation.png``: the objective per augmentation subset (if the sweep has an ablation).
- ``params.png``: the objective against each numeric swept key (temperature, queue size...).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import yaml

from ..config import to_dict
from ..train.metrics_log import read_metrics
from ..utils.atomic import write_json_atomic, write_text_atomic
from ..viz.figures import pyplot, save_figure
from .run import read_attempts
from .space import CODES_KEY, METRICS, SweepConfig, subset_label

STATUS_DONE, STATUS_CUT, STATUS_ERROR = "completed", "stopped early", "error"


def collect(results, sweep: SweepConfig) -> list[dict]:
    """One dict per trial of a Tune ResultGrid, ranked by the objective (errors last)."""
    target = sweep.base_config.steps
    rows = []
    for result in results:
        path = Path(result.path)
        row = {"trial": path.name.removeprefix("trial_")}
        row.update({d.key: result.config.get(d.key) for d in sweep.domains})
        history = _history(path / "metrics.csv")
        step = max((r["step"] for r in history), default=0)
        row["step"] = step
        for name in METRICS:
            row[name] = _last(history, name)
        row["random_init"] = _at_step(history, sweep.metric, 0)
        row["time_s"] = (result.metrics or {}).get("time_total_s")
        row["attempts"] = sum(e["event"] == "start" for e in read_attempts(path))
        if result.error is not None:
            row["status"] = STATUS_ERROR
            row["error"] = f"{type(result.error).__name__}: {result.error}".splitlines()[0]
        else:
            row["status"] = STATUS_DONE if step >= target else STATUS_CUT
        row["encoder"] = str(path / "encoder.pt") if (path / "encoder.pt").exists() else ""
        rows.append(row)
    sign = 1 if sweep.mode == "min" else -1

    def order(r: dict):
        score = r.get(sweep.metric)
        bad = r["status"] == STATUS_ERROR or score is None
        return (bad, r["status"] != STATUS_DONE, sign * (score or 0.0), r["trial"])

    rows.sort(key=order)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def ablation_table(rows: list[dict], sweep: SweepConfig) -> list[dict]:
    """Per augmentation subset: mean and standard deviation of the objective over its
    completed trials, n, and the mean's difference to the full set's."""
    if not sweep.ablation_codes:
        return []
    order = next(d.values for d in sweep.domains if d.key == CODES_KEY)
    groups: dict[str, list[float]] = {codes: [] for codes in order}
    for r in rows:
        if r["status"] == STATUS_DONE and r.get(sweep.metric) is not None:
            groups[r[CODES_KEY]].append(r[sweep.metric])
    full = ",".join(sweep.ablation_codes)
    ref = float(np.mean(groups[full])) if groups.get(full) else None
    table = []
    for codes, scores in groups.items():
        mean = float(np.mean(scores)) if scores else None
        table.append(
            {
                "subset": subset_label(codes, sweep.ablation_codes),
                CODES_KEY: codes,
                "n": len(scores),
                "mean": mean,
                "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
                "minus_all": None if mean is None or ref is None else mean - ref,
            }
        )
    return table


def write_report(rows: list[dict], sweep: SweepConfig, out: Path, wall_s: float) -> dict:
    """Write the files listed in the module docstring; returns the summary. `wall_s`: the
    wall time of this invocation."""
    out = Path(out)
    keys = [d.key for d in sweep.domains]
    columns = ["rank", "trial", "status", *keys, "step", sweep.metric]
    columns += [m for m in METRICS if m != sweep.metric]
    columns += ["random_init", "time_s", "attempts", "encoder"]
    if any("error" in r for r in rows):
        columns.append("error")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: _plain(r.get(k)) for k in columns} for r in rows])
    write_text_atomic(out / "trials.csv", buf.getvalue())

    ablation = ablation_table(rows, sweep)
    best = next(
        (r for r in rows if r["status"] == STATUS_DONE and r.get(sweep.metric) is not None), None
    )
    summary = {
        "metric": sweep.metric,
        "mode": sweep.mode,
        "steps": sweep.base_config.steps,
        "trials": len(rows),
        "status": {
            s: sum(r["status"] == s for r in rows) for s in (STATUS_DONE, STATUS_CUT, STATUS_ERROR)
        },
        "this_run_wall_s": wall_s,
        "trial_time_s_median": _median([r["time_s"] for r in rows]),
        "best": {k: _plain(best.get(k)) for k in columns} if best else None,
        "ablation": ablation,
    }
    write_text_atomic(out / "trials.md", _markdown(rows, columns, sweep, ablation, summary))
    if best:
        params = {k: best[k] for k in keys}
        config = sweep.trial_config(params)
        header = (
            f"# Best of {len(rows)} trials by {sweep.metric} ({sweep.mode}): trial {best['trial']}"
            f"\n# {sweep.metric}={best[sweep.metric]:.5g} after {best['step']} steps with "
            + ", ".join(f"{k}={v}" for k, v in params.items())
            + "\n# A ready `ssl-hpc pretrain --config` file: raise steps for a full run.\n"
        )
        write_text_atomic(
            out / "best_config.yaml", header + yaml.safe_dump(to_dict(config), sort_keys=False)
        )
    write_json_atomic(out / "summary.json", summary)
    if ablation:
        plot_ablation(ablation, rows, sweep, out / "ablation.png")
    numeric = [d.key for d in sweep.domains if d.key != CODES_KEY and _numeric(rows, d.key)]
    if numeric:
        plot_params(rows, sweep, numeric, out / "params.png")
    return summary


def plot_ablation(table: list[dict], rows: list[dict], sweep: SweepConfig, path: Path) -> None:
    """Bars of the objective per augmentation subset (mean, standard deviation, each trial
    as a dot), the full set's level and the random-initialisation level dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(table) + 2), 3.8))
    x = np.arange(len(table))
    means = [t["mean"] if t["mean"] is not None else np.nan for t in table]
    errs = [t["std"] or 0.0 for t in table]
    colours = [_subset_colour(t["subset"]) for t in table]
    ax.bar(x, means, yerr=errs, color=colours, capsize=3, alpha=0.85)
    dots = []
    for i, t in enumerate(table):
        pts = [
            r[sweep.metric]
            for r in rows
            if r[CODES_KEY] == t[CODES_KEY]
            and r["status"] == STATUS_DONE
            and r[sweep.metric] is not None
        ]
        ax.plot([i] * len(pts), pts, "k.", ms=4)
        dots += pts
    full = next((t["mean"] for t in table if t["subset"] == "all"), None)
    if full is not None:
        ax.axhline(full, color="C0", lw=0.8, label="all codes")
    init = [r["random_init"] for r in rows if r.get("random_init") is not None]
    if init:
        ax.axhline(float(np.mean(init)), color="grey", ls="--", lw=0.8, label="random init")
    # zoomed on the differences (bars from the bottom of the axis, not from zero)
    shown = (
        dots + init + [m + s * e for m, e in zip(means, errs) for s in (-1, 1) if np.isfinite(m)]
    )
    if shown:
        lo, hi = min(shown), max(shown)
        pad = 0.1 * max(hi - lo, 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(x, [t["subset"] for t in table], rotation=30, ha="right")
    better = "lower" if sweep.mode == "min" else "higher"
    ax.set(
        ylabel=f"{sweep.metric} ({better} is better)",
        title=f"Augmentation ablation: {sweep.base_config.steps} steps, "
        f"n = {max((t['n'] for t in table), default=0)} per subset",
    )
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_params(rows: list[dict], sweep: SweepConfig, keys: list[str], path: Path) -> None:
    """The objective against each numeric swept key, one panel each (log axis where the
    values span more than a factor of 10); cut trials hollow, completed ones filled."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for status, face in ((STATUS_DONE, "C0"), (STATUS_CUT, "none")):
            pts = [
                (float(r[key]), r[sweep.metric])
                for r in rows
                if r["status"] == status and r.get(sweep.metric) is not None
            ]
            if pts:
                ax.plot(*zip(*pts), "o", mfc=face, mec="C0", ls="none", label=status)
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel=sweep.metric)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Sweep: {sweep.metric} at the last evaluation", fontsize=10)
    save_figure(fig, path)


def _history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [r for r in read_metrics(path) if r.get("note") is None]


def _last(history: list[dict], key: str):
    values = [r[key] for r in history if r.get(key) is not None]
    return values[-1] if values else None


def _at_step(history: list[dict], key: str, step: int):
    return next((r[key] for r in history if r["step"] == step and r.get(key) is not None), None)


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _numeric(rows: list[dict], key: str) -> bool:
    return any(
        isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows
    )


def _plain(v):
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 6)
    return v


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _markdown(rows, columns, sweep: SweepConfig, ablation, summary) -> str:
    shown = [c for c in columns if c not in ("encoder", "error")]
    lines = [
        f"# Sweep: {len(rows)} trials, {sweep.metric} ({sweep.mode}), "
        f"{sweep.base_config.steps} steps each",
        "",
        f"Wall time of this run (a resumed sweep counts from its restart): "
        f"{summary['this_run_wall_s']:.0f} s; median trial "
        f"{_fmt(summary['trial_time_s_median'])} s.",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in shown) + " |" for r in rows]
    if ablation:
        lines += [
            "",
            "## Augmentation ablation",
            "",
            f"| subset | codes | n | mean {sweep.metric} | std | minus all |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['subset']} | {t[CODES_KEY]} | {t['n']} | {_fmt(t['mean'])} | "
            f"{_fmt(t['std'])} | {_fmt(t['minus_all'])} |"
            for t in ablation
        ]
    return "\n".join(lines) + "\n"


def _subset_colour(label: str) -> str:
    if label == "all":
        return "C0"
    if label.startswith("no "):
        return "C1"
    if label.endswith(" only"):
        return "C2"
    return "C7"
