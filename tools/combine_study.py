"""Put one label-efficiency study's frozen-feature rows beside another's trained runs.

A new encoder changes only the linear heads of `ssl-hpc finetune` ((a) and its two
baselines, minutes); the supervised networks (c) do not depend on it (hours). Run the new
study with `--methods ""` (linear heads only), then combine it with the study whose (c)
runs it is compared against, on the same published test set:

  python tools/combine_study.py NEW/metrics.json \
      docs/results/gz1-efficiency-supervised-headlr.json OUT.json --note "what NEW is"

OUT.json has the study's shape: every row, the mean curves, the equivalent-labels ratio of
(a) against (c) per repeat; with --survey (the task's classes), OUT.png draws the curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.efficiency import (
    FINETUNED,
    LINEAR,
    SUPERVISED,
    curve,
    equivalent_labels,
    plot_curves,
)
from ssl_hpc.downstream.tasks import load_task
from ssl_hpc.utils.atomic import write_json_atomic

TRAINED = (FINETUNED, SUPERVISED)


def combine(frozen: dict, trained: dict, note: str) -> dict:
    """`frozen`'s rows of untrained methods with `trained`'s (b)/(c) rows; refuses studies of
    another task, label set or test set."""
    for key in ("task", "score", "labelled", "n_test", "fractions", "repeats"):
        if frozen[key] != trained[key]:
            raise SystemExit(f"{key}: {frozen[key]!r} here, {trained[key]!r} in the trained study")
    rows = [r for r in frozen["rows"] if r["method"] not in TRAINED]
    rows += [r for r in trained["rows"] if r["method"] in TRAINED]
    score, higher = frozen["score"], frozen["score"] != "sigma_mad"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    compared = [m for m in (LINEAR, FINETUNED) if m in methods]
    return {
        **{k: v for k, v in frozen.items() if k not in ("rows", "curves", "equivalent_labels")},
        "note": note,
        "curves": {m: curve(rows, m, score) for m in methods},
        "equivalent_labels": {m: equivalent_labels(rows, m, score, higher) for m in compared},
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frozen", type=Path, help="metrics.json whose linear rows are kept")
    parser.add_argument("trained", type=Path, help="metrics.json whose (b)/(c) runs are kept")
    parser.add_argument("out", type=Path, help="combined study (.json; a .png beside it)")
    parser.add_argument("--note", required=True, help="what the combination holds")
    parser.add_argument("--survey", help="the survey, to name the task's classes in the plot")
    args = parser.parse_args()
    study = combine(*(json.loads(p.read_text()) for p in (args.frozen, args.trained)), args.note)
    write_json_atomic(args.out, study)
    if args.survey:
        task = load_task(Survey(args.survey), study["task"])
        plot_curves(study["rows"], task, args.out.with_suffix(".png"), args.out.stem)
    for method, points in study["curves"].items():
        cells = (f"{p['n_train']}: {p['mean']:.3f} +- {p['std']:.3f}" for p in points)
        print(f"{method:20s}", " | ".join(cells))
    for method, ratios in study["equivalent_labels"].items():
        cells = (
            f"{r['n_train']}: "
            + (f"{r['ratio_mean']:.2f} +- {r['ratio_std']:.2f}" if r["ratios"] else "-")
            + (f" ({r['repeats_unreached']} not reached)" if r["bound"] else "")
            for r in ratios
        )
        print(f"labels {SUPERVISED} needs to match {method}:", " | ".join(cells))


if __name__ == "__main__":
    main()
