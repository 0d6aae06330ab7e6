"""The report's sections on the encoder itself: the survey and representations, the
pretraining curve, the trained encoder against its random initialisation, invariance."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from ..data.labels import spec_z
from ..data.survey import Survey
from ..search.searcher import Searcher
from ..viz.science import plot_invariance
from .section import Section


def overview(survey: Survey, searcher: Searcher, run: dict) -> Section:
    """What was embedded with what: survey size, bands, labels, encoder, vectors."""
    m = survey.manifest
    labels = dict(m.labels)
    if "z_spec" in labels:  # the manifest counts finite values: -9999 or 0 placeholders too
        labels["z_spec"] = int(np.isfinite(spec_z(survey)).sum())
    rows = [
        {"quantity": "objects", "value": len(survey)},
        {"quantity": "bands", "value": ",".join(m.bands)},
        {"quantity": "cutout (px)", "value": "x".join(map(str, m.image_shape[1:]))},
        {"quantity": "pixel scale (arcsec)", "value": m.pixel_scale_arcsec},
        {"quantity": "representation dims", "value": searcher.set.dim},
        {"quantity": "encoder", "value": run.get("checkpoint", "?")},
    ]
    rows += [{"quantity": f"labelled: {c}", "value": n} for c, n in sorted(labels.items())]
    return Section(
        "overview",
        "Survey and representations",
        text=[
            f"{m.survey}: {len(survey)} galaxies in {len(m.shards)} HDF5 shards, embedded "
            f"into {searcher.set.dim}-dimensional representations by the self-supervised "
            "encoder. Every section below uses these vectors only (cosine similarity of "
            "L2-normalised vectors), except the invariance check, which runs the encoder.",
        ],
        tables=[("", rows)],
        metrics={"n_objects": len(survey), "dim": searcher.set.dim, "labels": labels},
    )


def pretraining(checkpoint: Path, out: Path) -> Section:
    """The pretraining run's learning curve and last evaluation, when its directory has
    them (metrics.csv, learning_curve.png); else a section that says why not."""
    run_dir = checkpoint.parent
    curve, metrics_csv = run_dir / "learning_curve.png", run_dir / "metrics.csv"
    if not metrics_csv.exists():
        return Section(
            "pretraining",
            "Pretraining",
            text=[
                f"Skipped: {run_dir} has no metrics.csv (an encoder copied out of its "
                "`ssl-hpc pretrain` run directory, or made some other way): no learning "
                "curve to show."
            ],
        )
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    evaluated = [r for r in rows if r.get("knn_sigma_mad")]
    last = evaluated[-1] if evaluated else (rows[-1] if rows else {})
    keys = ("step", "loss", "knn_morph_acc", "knn_sigma_mad", "knn_eta")
    table = [{k: _num(last.get(k)) for k in keys if last.get(k) not in (None, "")}]
    section = Section(
        "pretraining",
        "Pretraining",
        text=[
            "Contrastive pretraining (InfoNCE) of the encoder: loss and learning rate per "
            "step, and the kNN (k=20) morphology accuracy and photo-z sigma_MAD of the "
            "representations measured during training on held-back labelled objects.",
        ],
        tables=[("last evaluation", table)] if table[0] else [],
        metrics={"last_eval": table[0]},
    )
    if curve.exists():
        shutil.copyfile(curve, out / "learning_curve.png")
        section.figures.append(("learning_curve.png", "Learning curve."))
    return section


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


#: the representation table's rows: key, what it is, and which way is better
REPRESENTATION_ROWS = (
    ("knn_morph_acc", "kNN morphology accuracy", "higher"),
    ("knn_morph_bacc", "kNN morphology balanced accuracy", "higher"),
    ("knn_sigma_mad", "kNN photo-z sigma_MAD", "lower"),
    ("knn_eta", "kNN photo-z outliers eta (%)", "lower"),
    ("pair_cosine_median", "median cosine of random galaxy pairs", "lower"),
    ("pair_cosine_pooled", "the same, pooled features before the neck", "lower"),
    ("invariance_ratio", "view-to-galaxy / galaxy-to-galaxy distance, all codes", "lower"),
    ("reidentified", "views re-identified among the sample, all codes", "higher"),
)


def representation_section(result: dict, out: Path) -> list[Section]:
    """The trained encoder against its random initialisation (downstream.representation),
    then the per-augmentation invariance of both."""
    trained, untrained = result["trained"], result["random_init"]
    rows = []
    for key, name, better in REPRESENTATION_ROWS:
        if trained.get(key) is None or untrained.get(key) is None:
            continue
        a, b = untrained[key], trained[key]
        rows.append(
            {
                "measure": name,
                "random init": a,
                "trained": b,
                "trained - random": b - a,
                "trained / random": b / a if a else None,
                "better": better,
            }
        )
    section = Section(
        "representation",
        "Did the encoder learn? Trained against random initialisation",
        text=[
            "The same network with the weights it started from (pretraining seeds them) "
            "against the trained weights, on the same galaxies: leave-one-out kNN (k=20, "
            "cosine) morphology and photo-z on labelled galaxies, the median cosine "
            "similarity of random galaxy pairs (near 1: every galaxy in about the same "
            "direction, a collapsed representation), and the invariance check below for "
            "all augmentations together."
        ],
        tables=[("", rows)],
        metrics={
            "trained": _without(trained, "invariance"),
            "random_init": _without(untrained, "invariance"),
        },
    )
    inv = invariance_section(trained["invariance"], out, untrained["invariance"])
    return [section, inv]


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def invariance_section(result: dict, out: Path, random_init: dict | None = None) -> Section:
    """The invariance check's table and bar chart (see downstream.invariance), with the
    random initialisation's ratios beside the trained encoder's when given."""
    rows = []
    for code, r in result["codes"].items():
        row = {
            "augmentation": code,
            "same-galaxy distance": r["same"],
            "ratio to different galaxies": r["ratio"],
            "re-identified": r["reidentified"],
        }
        if random_init and code in random_init["codes"]:
            row["ratio, random init"] = random_init["codes"][code]["ratio"]
            row["re-identified, random init"] = random_init["codes"][code]["reidentified"]
        rows.append(row)
    names = list(result["codes"])
    skipped = [f"{c}: {why}" for c, why in result.get("skipped", {}).items()]
    if not names:
        return Section(
            "invariance",
            "Invariance under the augmentations",
            text=["Skipped: " + "; ".join(skipped or ["no augmentation codes"]) + "."],
            metrics=result,
        )
    plot_invariance(
        names,
        [result["codes"][c]["ratio"] for c in names],
        out / "invariance.png",
        [random_init["codes"].get(c, {}).get("ratio", float("nan")) for c in names]
        if random_init
        else None,
    )
    left_out = ["Left out, this survey cannot be checked under them: " + "; ".join(skipped)]
    return Section(
        "invariance",
        "Invariance under the augmentations",
        text=[
            f"For {result['n']} galaxies, the cosine distance between each galaxy's centre "
            "crop and one augmented view of it, per augmentation alone and all together, "
            "relative to the mean distance between two different galaxies "
            f"({result['different']:.4f}). 0 = the encoder ignores that transformation; 1 = "
            "the view lands as far away as another galaxy. Re-identified: the fraction of "
            "views whose nearest centre crop is their own galaxy's."
        ]
        + left_out * bool(skipped),
        tables=[("", rows)],
        figures=[("invariance.png", "Distance ratio per augmentation.")],
        metrics=result,
    )
