"""The label-efficiency studies behind `ssl-hpc probe` and `ssl-hpc finetune`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import to_dict
from ..data.survey import Survey
from ..errors import ConfigError
from ..utils.atomic import atomic_path, write_json_atomic
from .efficiency import (
    FINETUNED,
    LINEAR,
    SUPERVISED,
    curve,
    equivalent_labels,
    plot_curves,
    plot_photoz,
    probe_curve,
)
from .finetune import FinetuneConfig, encoder_file, fit
from .heads import HeadConfig, RedshiftBins, fit_head, predict_proba
from .tasks import PHOTOZ, load_task, splits, tasks_of


def probe_study(
    vectors: np.ndarray,
    survey: Survey,
    out: Path,
    tasks: list[str] | None,
    fractions: tuple[float, ...],
    repeats: int,
    test_fraction: float = 0.3,
    head: HeadConfig | None = None,
) -> dict:
    """Linear (or MLP) heads on frozen `vectors` (survey order) for each task; writes
    metrics.json, curve_<task>.png, and for photoz photoz.png (the scatter) and
    photoz_pdfs.npz."""
    head = head or HeadConfig()
    names = tasks or tasks_of(survey)
    if not names:
        raise ConfigError(f"{survey.root}: no labels (z_spec or Galaxy Zoo columns) to probe")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        task = load_task(survey, name)
        features = vectors[task.rows]
        task_splits = splits(len(task.rows), repeats, test_fraction, head.seed)
        rows = probe_curve(features, task, fractions, task_splits, head)
        results[name] = {
            "score": task.score_name,
            "labelled": len(task.rows),
            "curve": curve(rows, LINEAR, task.score_name),
            "rows": rows,
        }
        plot_curves(rows, task, out / f"curve_{name}.png", f"Linear probe on SSL: {name}")
        if name == PHOTOZ:  # the PDFs and the picture at the largest fraction, repeat 0
            split = task_splits[0]
            train = split.train(fractions[-1])
            model = fit_head(features[train], task.targets[train], head)
            pdf = predict_proba(model, features[split.test])
            z_pred = task.bins.point(pdf)
            with atomic_path(out / "photoz_pdfs.npz") as tmp, open(tmp, "wb") as f:
                np.savez(
                    f,
                    object_id=survey.column("object_id")[task.rows[split.test]],
                    z_spec=task.z[split.test],
                    z_pred=z_pred,
                    pdf=pdf.astype(np.float32),
                    bin_edges=task.bins.edges,
                )
            title = f"Linear probe on SSL, {len(train)} training labels"
            plot_photoz(task.z[split.test], z_pred, out / "photoz.png", title)
    summary = {
        "method": LINEAR,
        "fractions": list(fractions),
        "repeats": repeats,
        "test_fraction": test_fraction,
        "head": to_dict(head),
        "tasks": results,
    }
    write_json_atomic(out / "metrics.json", summary)
    return summary


def efficiency_study(
    base: FinetuneConfig,
    survey_path: str | Path,
    out: Path,
    fractions: tuple[float, ...],
    repeats: int,
    on_run=None,
) -> dict:
    """(a) linear on frozen SSL, (b) fine-tuned SSL, (c) supervised from scratch, on the
    same splits; each (b)/(c) run resumable in out/<init>-f<fraction>-r<repeat>/. Writes
    metrics.json, efficiency.png and (photoz) photoz.png; returns the summary.
    `on_run(method, fraction, repeat, metrics)` after each run (progress output)."""
    from ..train.evaluate import centre_crops, embed
    from ..train.export import load_encoder

    survey = Survey(survey_path)
    task = load_task(survey, base.task, RedshiftBins(base.z_bins, base.z_max))
    task_splits = splits(len(task.rows), repeats, base.test_fraction, base.seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in task_splits:
        for fraction in fractions:
            for init, method in (("ssl", FINETUNED), ("random", SUPERVISED)):
                cfg = replace(base, init=init, fraction=fraction, repeat=split.repeat)
                test = fit(cfg, survey_path, out / run_name(init, fraction, split.repeat))
                row = {"method": method, "fraction": fraction, "repeat": split.repeat}
                rows.append({**row, "n_train": len(split.train(fraction)), **test})
                if on_run:
                    on_run(method, fraction, split.repeat, test)
    encoder = load_encoder(encoder_file(base.checkpoint))
    images = centre_crops(survey, task.rows, base.augment.out_size)
    features = embed(encoder, images, "cpu").numpy()
    rows += probe_curve(features, task, fractions, task_splits, HeadConfig(seed=base.seed))
    score, higher = task.score_name, task.higher_is_better
    summary = {
        "task": task.name,
        "score": score,
        "labelled": len(task.rows),
        "config": to_dict(base),
        "fractions": list(fractions),
        "repeats": repeats,
        "curves": {m: curve(rows, m, score) for m in (LINEAR, FINETUNED, SUPERVISED)},
        "equivalent_labels": {
            m: equivalent_labels(rows, m, score, higher) for m in (LINEAR, FINETUNED)
        },
        "rows": rows,
    }
    write_json_atomic(out / "metrics.json", summary)
    plot_curves(rows, task, out / "efficiency.png")
    if task.name == PHOTOZ:
        with np.load(out / run_name("ssl", fractions[-1], 0) / "predictions.npz") as z:
            n = len(task_splits[0].train(fractions[-1]))
            plot_photoz(z["z_spec"], z["z_pred"], out / "photoz.png", f"Fine-tuned SSL, {n} labels")
    return summary


def run_name(init: str, fraction: float, repeat: int) -> str:
    """The directory of one fine-tuning / supervised run of a study."""
    return f"{init}-f{fraction:g}-r{repeat}"
