"""The label-efficiency studies behind `ssl-hpc probe` and `ssl-hpc finetune`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from ..config import to_dict
from ..data.survey import Survey
from ..errors import ConfigError
from ..models.checkpoint import EncoderCheckpoint
from ..models.inference import centre_crops, embed
from ..utils.atomic import atomic_path, write_json_atomic
from .efficiency import (
    FINETUNED,
    LINEAR,
    LINEAR_RANDOM,
    PIXEL_PCA,
    SUPERVISED,
    curve,
    plot_curves,
    plot_photoz,
    prior_curve,
    probe_curve,
    summarise,
)
from .finetune import FinetuneConfig, fit, task_splits
from .heads import HeadConfig, RedshiftBins, fit_head, predict_proba
from .predict import HEADS, save_head, write_index
from .representation import untrained_encoder
from .tasks import (
    PHOTOZ,
    Split,
    Task,
    check_fractions,
    distinct_fractions,
    indices_of_ids,
    load_task,
    splits,
    usable_tasks,
)


@dataclass(frozen=True)
class ProbeConfig:
    """What `ssl-hpc probe` fits: linear (or MLP) heads at label fractions over repeats."""

    tasks: tuple[str, ...] = ()
    """photoz or Galaxy Zoo questions; empty: every task the survey's labels support"""
    fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    """label fractions of the training pool"""
    repeats: int = 3
    """random splits (each with its own test set, unless test_ids fixes one)"""
    test_fraction: float = 0.3
    """the labelled objects held out for testing"""
    test_ids: str | None = None
    """a published test set (CSV with an object_id column), kept in every repeat"""
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats}: must be >= 1")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction={self.test_fraction}: must be in (0, 1)")


def probe_splits(
    task: Task,
    survey: Survey,
    repeats: int,
    test_fraction: float,
    seed: int,
    test_ids: np.ndarray | None = None,
) -> list[Split]:
    """The probe's splits of `task`: around the published test set `test_ids` (object ids),
    else drawn with `test_fraction`; a ConfigError naming the task if they cannot be made."""
    fixed = None if test_ids is None else indices_of_ids(task, survey, test_ids)
    try:
        return splits(len(task.rows), repeats, test_fraction, seed, fixed)
    except ConfigError as e:
        raise ConfigError(f"task {task.name}: {e}") from None


def probe_study(
    vectors: np.ndarray,
    survey: Survey,
    out: Path,
    tasks: list[str] | None,
    fractions: tuple[float, ...],
    repeats: int,
    test_fraction: float = 0.3,
    head: HeadConfig | None = None,
    test_ids: np.ndarray | None = None,
    provenance: dict | None = None,
) -> dict:
    """Linear (or MLP) heads on frozen `vectors` (survey order) for each task; writes
    metrics.json, curve_<task>.png, heads/<task>.pt and heads/index.json (each task's head
    at the largest fraction, repeat 0: `predict.load_heads`), and for photoz photoz.png
    (the scatter) and photoz_pdfs.npz. `test_ids`: a published test set (object ids),
    kept in every repeat. `provenance`: the embedding set's (`EmbeddingSet.provenance`), kept
    in metrics.json so that export applies the heads only to vectors of the same encoder."""
    head = head or HeadConfig()
    names, skipped = (list(tasks), {}) if tasks else usable_tasks(survey)
    if not names:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no z_spec or Galaxy Zoo"
        raise ConfigError(f"{survey.root}: no labels to probe ({why})")
    out.mkdir(parents=True, exist_ok=True)
    results, saved = {}, {}
    for name in names:
        task = load_task(survey, name)
        features = vectors[task.rows]
        task_splits = probe_splits(task, survey, repeats, test_fraction, head.seed, test_ids)
        distinct = distinct_fractions(fractions, task_splits[0])
        rows = probe_curve(features, task, distinct, task_splits, head)
        results[name] = {
            "score": task.score_name,
            "answers": list(task.answers) if name != PHOTOZ else [],
            "labelled": len(task.rows),
            "curve": curve(rows, LINEAR, task.score_name),
            "rows": rows,
        }
        plot_curves(rows, task, out / f"curve_{name}.png", f"Linear probe on SSL: {name}")
        # the head at the largest fraction, repeat 0 (fit_head is deterministic: the one
        # probe_curve scored), saved so it applies to every object; photoz: its PDFs
        split = task_splits[0]
        train = split.train(fractions[-1])
        weights = task.class_weights(train) if head.balance else None
        model = fit_head(features[train], task.targets[train], head, weights)
        train_ids = survey.column("object_id")[task.rows[train]]
        saved[name] = save_head(out / HEADS, task, model, train_ids, fractions[-1])
        if name == PHOTOZ:
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
    write_index(out / HEADS, saved)
    summary = {
        **(provenance or {}),
        "method": LINEAR,
        "fractions": list(fractions),
        "repeats": repeats,
        "test_fraction": test_fraction,
        "head": to_dict(head),
        "tasks": results,
        "skipped": skipped,
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
    trained: tuple[str, ...] = (FINETUNED, SUPERVISED),
) -> dict:
    """(a) linear on frozen SSL, (b) fine-tuned SSL, (c) supervised from scratch, on the
    same splits; each (b)/(c) run resumable in out/<init>-f<fraction>-r<repeat>/. Writes
    metrics.json, efficiency.png and (photoz, with (b)) photoz.png; returns the summary.
    `trained`: which of (b) and (c) to run ((a), its two feature baselines and the
    training labels' prior always run: they are cheap; with neither, no Ray is needed).
    `on_run(method, fraction, repeat, metrics)` after each run (progress output)."""
    unknown = set(trained) - {FINETUNED, SUPERVISED}
    if unknown:
        raise ConfigError(f"methods {sorted(unknown)}: expected {FINETUNED} and/or {SUPERVISED}")

    survey = Survey(survey_path)
    encoder = EncoderCheckpoint(base.checkpoint)
    encoder.check_bands(survey.bands, survey.root)
    task = load_task(survey, base.task, RedshiftBins(base.z_bins, base.z_max))
    study_splits = task_splits(task, survey, base, repeats)
    fractions = distinct_fractions(fractions, study_splits[0])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(i, m) for i, m in (("ssl", FINETUNED), ("random", SUPERVISED)) if m in trained]
    for split in study_splits:
        for fraction in fractions:
            for init, method in runs:
                cfg = replace(base, init=init, fraction=fraction, repeat=split.repeat)
                test = fit(cfg, survey_path, out / run_name(init, fraction, split.repeat))
                row = {"method": method, "fraction": fraction, "repeat": split.repeat}
                rows.append({**row, "n_train": len(split.train(fraction)), **test})
                if on_run:
                    on_run(method, fraction, split.repeat, test)
    head = HeadConfig(seed=base.seed, balance=base.balance)
    for method, features in frozen_features(base, survey, task).items():
        rows += probe_curve(features, task, fractions, study_splits, head, method)
    rows += prior_curve(task, fractions, study_splits)
    summary = {
        "task": task.name,
        "score": task.score_name,
        "answers": list(task.answers) if task.name != PHOTOZ else [],
        "labelled": len(task.rows),
        "config": to_dict(base),
        # what a report showing the study checks it against (report.label_studies)
        "checkpoint_sha256": encoder.sha256,
        "survey": str(survey.root),
        "survey_content_sha256": survey.manifest.content_sha256,
        "fractions": list(fractions),
        "repeats": repeats,
        "test_ids": base.test_ids,
        "n_test": len(study_splits[0].test),
        **summarise(rows, task.score_name, task.higher_is_better),
        "rows": rows,
    }
    write_json_atomic(out / "metrics.json", summary)
    plot_curves(rows, task, out / "efficiency.png")
    if task.name == PHOTOZ and FINETUNED in trained:
        with np.load(out / run_name("ssl", fractions[-1], 0) / "predictions.npz") as z:
            n = len(study_splits[0].train(fractions[-1]))
            plot_photoz(z["z_spec"], z["z_pred"], out / "photoz.png", f"Fine-tuned SSL, {n} labels")
    return summary


def frozen_features(base: FinetuneConfig, survey: Survey, task) -> dict[str, np.ndarray]:
    """Features of the task's objects for linear heads: the SSL encoder's (a), and two
    baselines any representation must beat: the same network at its random
    initialisation, and the principal components of the pixels it sees."""
    checkpoint = EncoderCheckpoint(base.checkpoint)
    trained = checkpoint.encoder()
    images = centre_crops(survey, task.rows, checkpoint.crop)  # as `ssl-hpc embed` sees them
    with torch.no_grad():
        pixels = trained.input(images).flatten(1).numpy()
    n_components = min(PIXEL_PCA_DIMS, *pixels.shape)
    pca = PCA(n_components, random_state=base.seed).fit(pixels)
    return {
        LINEAR_RANDOM: embed(untrained_encoder(checkpoint, survey), images, "cpu").numpy(),
        PIXEL_PCA: pca.transform(pixels),
        LINEAR: embed(trained, images, "cpu").numpy(),
    }


#: principal components of the pixels for the pixel baseline
PIXEL_PCA_DIMS = 64


def run_name(init: str, fraction: float, repeat: int) -> str:
    """The directory of one fine-tuning / supervised run of a study."""
    return f"{init}-f{fraction:g}-r{repeat}"


@dataclass(frozen=True)
class StudyConfig(FinetuneConfig):
    """A label-efficiency study (`ssl-hpc finetune`): the fine-tuning settings every run
    shares (FinetuneConfig's keys) and what the study varies."""

    fractions: tuple[float, ...] = ProbeConfig.fractions
    """label fractions of the training pool"""
    repeats: int = 3
    """random splits"""
    methods: tuple[str, ...] = (FINETUNED, SUPERVISED)
    """the trained methods to run: finetuned_ssl and/or supervised (the linear heads on
    SSL, random-init and pixel-PCA features and the training labels' prior always run;
    '' runs only them, without Ray)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.methods) - {FINETUNED, SUPERVISED}
        if unknown:
            raise ConfigError(
                f"methods {sorted(unknown)}: expected {FINETUNED} and/or {SUPERVISED}"
            )
        if self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats}: must be >= 1")
        check_fractions(self.fractions)

    def run_config(self) -> FinetuneConfig:
        """The settings of each run (the study's own keys left out)."""
        shared = {f.name: getattr(self, f.name) for f in fields(FinetuneConfig)}
        return FinetuneConfig(**shared)
