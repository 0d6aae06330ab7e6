"""Put one label-efficiency study's frozen-feature rows beside other studies' trained runs.

A new encoder changes only the linear heads of `ssl-hpc finetune` ((a) and its two
baselines, minutes); the supervised networks (c) do not depend on it (hours). Run the new
study with `--methods ""` (linear heads only), then combine it with the study whose (c)
runs it is compared against, on the same published test set:

  python tools/combine_study.py NEW/metrics.json \
      docs/results/gz1-efficiency-supervised-headlr.json OUT.json --survey SURVEY \
      --note "what NEW is"

Several trained studies may be given, e.g. the fine-tuned runs (b) of one
(`--methods finetuned_ssl`) and the supervised runs (c) of another; PATH:METHOD takes only
that method's runs from a study (`docs/results/demo-efficiency-photoz.json:supervised`).
Studies may cover different label fractions of the same split (a study at 0.01,0.02 beside
one at 0.05-1: the pools are nested, so the curves join); `--also-frozen` adds the linear
rows of further studies of the same encoder. A run present twice is refused. OUT.json has
the study's shape: every row, the mean curves, the equivalent-labels ratios of (a) and (b)
against (c) per repeat; OUT.png draws the curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.efficiency import (
    FINETUNED,
    METHODS,
    SUPERVISED,
    plot_curves,
    ratio_line,
    summarise,
)
from ssl_hpc.downstream.tasks import Task, load_task
from ssl_hpc.utils.atomic import write_json_atomic

TRAINED = (FINETUNED, SUPERVISED)


def combine(
    frozen: list[dict], trained: list[tuple[dict, str | None]], task: Task, note: str
) -> dict:
    """The untrained methods' rows of the `frozen` studies with the (b)/(c) rows of the
    `trained` (study, only this method or None) pairs; refuses studies of another task,
    label set, test-set size or repeat count, and a run given twice."""
    first = frozen[0]
    for study in [*frozen[1:], *(s for s, _ in trained)]:
        for key in ("task", "score", "labelled", "n_test", "repeats"):
            if first.get(key) != study.get(key):
                raise SystemExit(f"{key}: {first.get(key)!r} here, {study.get(key)!r} in another")
    if first["score"] != task.score_name:  # `task` is loaded by the first study's task name
        raise SystemExit(f"the studies score {first['score']}, task {task.name} {task.score_name}")
    untrained = set(METHODS) - set(TRAINED)
    picked = [(s, untrained) for s in frozen]
    picked += [(s, set(TRAINED) if only is None else {only}) for s, only in trained]
    rows, runs = [], set()
    for study, methods in picked:
        for row in (r for r in study["rows"] if r["method"] in methods):
            run = (row["method"], row["fraction"], row["repeat"])
            if run in runs:
                raise SystemExit(f"{run}: the same run in two studies")
            runs.add(run)
            rows.append(row)
    return {
        **{k: v for k, v in first.items() if k not in ("rows", "curves", "equivalent_labels")},
        "fractions": sorted({r["fraction"] for r in rows}),
        "note": note,
        **summarise(rows, task.score_name, task.higher_is_better),
        "rows": rows,
    }


def study_and_method(arg: str) -> tuple[Path, str | None]:
    """PATH or PATH:METHOD (METHOD one of the trained methods)."""
    path, _, method = arg.rpartition(":")
    if path and method in TRAINED:
        return Path(path), method
    return Path(arg), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frozen", type=Path, help="metrics.json whose linear rows are kept")
    parser.add_argument(
        "trained",
        nargs="+",
        help=f"metrics.json files whose (b)/(c) runs are kept; PATH:METHOD keeps one of {TRAINED}",
    )
    parser.add_argument("out", type=Path, help="combined study (.json; a .png beside it)")
    parser.add_argument("--note", required=True, help="what the combination holds")
    parser.add_argument("--survey", required=True, help="the survey every study ran on")
    parser.add_argument(
        "--also-frozen",
        type=Path,
        action="append",
        default=[],
        help="another study of the same encoder whose linear rows are kept (repeatable)",
    )
    args = parser.parse_args()
    frozen = [json.loads(p.read_text()) for p in [args.frozen, *args.also_frozen]]
    trained = []
    for path, method in map(study_and_method, args.trained):
        trained.append((json.loads(path.read_text()), method))
    task = load_task(Survey(args.survey), frozen[0]["task"])
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
