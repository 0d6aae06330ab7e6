"""Training metrics as CSV, one row per logged step, safe across a resume."""

from __future__ import annotations

import csv
import os
from pathlib import Path

#: Columns in order; a row leaves empty what was not measured at its step.
COLUMNS = (
    "step",
    "epoch",
    "loss",
    "top1",
    "lr",
    "pairs_per_s_worker",
    "pairs_per_s_total",
    "knn_morph_acc",
    "knn_morph_bacc",
    "knn_sigma_mad",
    "knn_eta",
    "note",
)


class MetricsLog:
    """Append rows to `path`. Rows after `resume_step` (written by an attempt that died
    before its next checkpoint) are dropped first, every row when the run starts afresh
    (None), so every step appears once, as the run that continues computes it."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None) -> None:
        self.path = Path(path)
        rows = read_metrics(self.path) if self.path.exists() and resume_step is not None else []
        kept = [r for r in rows if r.get("step") is not None and r["step"] <= resume_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            for r in kept:
                w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
        os.replace(tmp, self.path)

    def write(self, metrics: dict) -> None:
        """One row; unknown keys are ignored, missing ones left empty."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS, extrasaction="ignore").writerow(
                {k: metrics.get(k, "") for k in COLUMNS}
            )

    def note(self, text: str) -> None:
        """A row carrying only a note (e.g. where a resume started)."""
        with open(self.path) as f:
            last = list(csv.DictReader(f))
        step = int(float(last[-1]["step"])) if last and last[-1]["step"] else 0
        self.write({"step": step, "note": text})


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics CSV, numbers as floats (step, epoch as int), empty as None."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict = {}
            for k, v in row.items():
                if v in ("", None):
                    parsed[k] = None
                elif k == "note":
                    parsed[k] = v
                elif k in ("step", "epoch"):
                    parsed[k] = int(float(v))
                else:
                    parsed[k] = float(v)
            out.append(parsed)
    return out
