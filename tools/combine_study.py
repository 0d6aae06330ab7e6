"""Put one label-efficiency study's frozen-feature rows beside other studies' trained runs.

A new encoder changes only the linear heads of `ssl-hpc finetune` ((a) and its two
baselines, minutes); the supervised networks (c) do not depend on it (hours). Run the new
study with `--methods ""` (linear heads only), then combine it with the study whose (c)
runs it is compared against, on the same published test set:

  python tools/combine_study.py NEW/metrics.json \
      docs/results/gz1-efficiency-supervised-headlr.json OUT.json --survey SURVEY \
      --note "what NEW is"

Several trained studies may be given, e.g. the fine-tuned runs (b) of one
(`--methods finetuned_ssl`) and the supervised runs (c) of another; a run present in two
of them is refused. OUT.json has the study's shape: every row, the mean curves, the
equivalent-labels ratios of (a) and (b) against (c) per repeat; OUT.png draws the curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.efficiency import (
    FINETUNED,
    SUPERVISED,
    plot_curves,
    ratio_line,
    summarise,
)
from ssl_hpc.downstream.tasks import Task, load_task
from ssl_hpc.utils.atomic import write_json_atomic

TRAINED = (FINETUNED, SUPERVISED)


def combine(frozen: dict, trained: list[dict], task: Task, note: str) -> dict:
    """`frozen`'s rows of untrained methods with the (b)/(c) rows of the `trained` studies;
    refuses studies of another task, label set or test set, and a run given twice."""
    for study in trained:
        for key in ("task", "score", "labelled", "n_test", "fractions", "repeats"):
            if frozen[key] != study[key]:
                raise SystemExit(f"{key}: {frozen[key]!r} here, {study[key]!r} in a trained study")
    if frozen["score"] != task.score_name:  # `task` is loaded by frozen's task name
        raise SystemExit(f"the studies score {frozen['score']}, task {task.name} {task.score_name}")
    rows = [r for r in frozen["rows"] if r["method"] not in TRAINED]
    runs = set()
    for study in trained:
        for row in (r for r in study["rows"] if r["method"] in TRAINED):
            run = (row["method"], row["fraction"], row["repeat"])
            if run in runs:
                raise SystemExit(f"{run}: the same run in two trained studies")
            runs.add(run)
            rows.append(row)
    return {
        **{k: v for k, v in frozen.items() if k not in ("rows", "curves", "equivalent_labels")},
        "note": note,
        **summarise(rows, task.score_name, task.higher_is_better),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frozen", type=Path, help="metrics.json whose linear rows are kept")
    parser.add_argument(
        "trained", type=Path, nargs="+", help="metrics.json files whose (b)/(c) runs are kept"
    )
    parser.add_argument("out", type=Path, help="combined study (.json; a .png beside it)")
    parser.add_argument("--note", required=True, help="what the combination holds")
    parser.add_argument("--survey", required=True, help="the survey every study ran on")
    args = parser.parse_args()
    frozen = json.loads(args.frozen.read_text())
    trained = [json.loads(p.read_text()) for p in args.trained]
    task = load_task(Survey(args.survey), frozen["task"])
    study = combine(frozen, trained, task, args.note)
    write_json_atomic(args.out, study)
    plot_curves(study["rows"], task, args.out.with_suffix(".png"), args.out.stem)
    for method, points in study["curves"].items():
        cells = (f"{p['n_train']}: {p['mean']:.3f} +- {p['std']:.3f}" for p in points)
        print(f"{method:20s}", " | ".join(cells))
    for method, ratios in study["equivalent_labels"].items():
        print(ratio_line(method, ratios))


if __name__ == "__main__":
    main()
