"""The report's sections on labels: linear probes and label-efficiency studies."""

from __future__ import annotations

import json
import shutil
from itertools import zip_longest
from pathlib import Path

import numpy as np

from ..data.survey import Survey
from ..downstream.study import probe_study
from ..downstream.tasks import PHOTOZ, load_task, usable_tasks
from ..errors import SslHpcError
from .section import Section


def probes(
    vectors: np.ndarray,
    survey: Survey,
    out: Path,
    fractions,
    repeats: int,
    provenance: dict | None = None,
) -> Section:
    """Linear heads on the frozen representations for every labelled task (in out/probe,
    recording the set's `provenance` for export --probe)."""
    tasks, skipped = usable_tasks(survey)
    section = Section("probes", "Photometric redshift and morphology from frozen representations")
    if skipped:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        section.text.append(f"Not probed, too few labels: {why}.")
    if not tasks:
        section.text.append("The survey has no usable labels (z_spec or Galaxy Zoo): no probes.")
        return section
    summary = probe_study(
        vectors, survey, out / "probe", tasks, fractions, repeats, provenance=provenance
    )
    section.text.append(
        "A linear head per task on frozen representations. Photo-z as Hayat et al. (2021): "
        "a classifier over 180 redshift bins on 0 < z < 0.4, the point estimate the "
        "probability-weighted mean, scored by sigma_MAD = 1.4826 MAD(dz), dz = (z_p - "
        "z_s)/(1 + z_s) (lower is better) and the outlier rate eta = % with |dz| > 0.05. "
        "Morphology: Galaxy Zoo vote fractions as soft labels, the loss weighted so every "
        "answer counts equally, scored on confident answers (vote fraction > 0.8) by the "
        "balanced accuracy (mean recall over the answers: answering the commonest class "
        "every time scores 1/answers), with the accuracy, macro-F1 and each answer's "
        f"recall beside it. Mean +- standard deviation over {repeats} random splits, each "
        "with its own fixed 30% test set."
    )
    for name, result in summary["tasks"].items():
        answers = load_task(survey, name).answers if name != PHOTOZ else ()
        caption = f"{name}: against the number of training labels"
        section.tables.append((caption, curve_rows(result["curve"], result["score"], answers)))
    if PHOTOZ in summary["tasks"]:
        shutil.copyfile(out / "probe" / "photoz.png", out / "photoz.png")
        section.figures.append(("photoz.png", "Photo-z against spectroscopic z (test set)."))
    for name in summary["tasks"]:
        shutil.copyfile(out / "probe" / f"curve_{name}.png", out / f"probe_{name}.png")
        section.figures.append((f"probe_{name}.png", f"Label-efficiency curve: {name}."))
    section.metrics = {
        name: {"score": r["score"], "curve": r["curve"]} for name, r in summary["tasks"].items()
    }
    return section


def curve_rows(points: list[dict], score: str, answers: tuple[str, ...] = ()) -> list[dict]:
    """Table rows of a label-efficiency curve (`downstream.efficiency.curve` points): the
    score and the metrics beside it as "mean +- std" over repeats, and for morphology each
    answer's mean recall."""
    rows = []
    for p in points:
        row = {"labels": p["n_train"], score: _pm(p["mean"], p["std"])}
        for name in ("eta", "bias", "accuracy", "macro_f1"):
            if f"{name}_mean" in p:
                row[name] = _pm(p[f"{name}_mean"], p[f"{name}_std"])
        if p.get("recall_mean"):
            names = answers or tuple(str(i) for i in range(len(p["recall_mean"])))
            row["recall per answer"] = ", ".join(
                f"{a} {r:.2f}" for a, r in zip(names, p["recall_mean"]) if r is not None
            )
        row["repeats"] = p.get("repeats")
        rows.append(row)
    return rows


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4g} +- {std:.2g}"


def per_repeat(ratio: dict) -> str:
    """One `equivalent_labels` entry's ratios per repeat: "<=" before an upper bound, and
    "never" for each repeat whose supervised curve did not reach the score and "no score"
    for each whose own score is not finite (neither in the mean, but a person must see that
    they were left out)."""
    cells = [
        ("<= " if at_most else "") + f"{v:.2f}"
        for v, at_most in zip_longest(ratio["ratios"], ratio.get("at_most", []))
    ]
    never = ["never"] * ratio.get("repeats_unreached", 0)
    return ", ".join(cells + never + ["no score"] * ratio.get("repeats_invalid", 0))


def check_studies(
    dirs: list[Path], checkpoint_sha256: str = "", survey_content_sha256: str = ""
) -> None:
    """Refuse a directory that is not a finished `ssl-hpc finetune` study, or one of another
    encoder or survey than the report's (before a report spends minutes on the sections
    ahead of it). A study from before it recorded them is not checked for those."""
    for d in dirs:
        missing = [n for n in ("metrics.json", "efficiency.png") if not (d / n).exists()]
        if missing:
            raise SslHpcError(
                f"{d}: not a finished ssl-hpc finetune study (no {' or '.join(missing)})"
            )
        try:
            summary = json.loads((d / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            raise SslHpcError(f"{d / 'metrics.json'}: unreadable ({e})") from e
        for key, ours, what in (
            ("checkpoint_sha256", checkpoint_sha256, "encoder"),
            ("survey_content_sha256", survey_content_sha256, "survey"),
        ):
            theirs = summary.get(key) if isinstance(summary, dict) else None
            if ours and theirs and theirs != ours:
                raise SslHpcError(
                    f"{d}: a study of another {what} than this report's ({key} "
                    f"{theirs[:12]}..., the report's {ours[:12]}...; the study's survey: "
                    f"{summary.get('survey')}): report it with its own embeddings"
                )


def efficiency(dirs: list[Path], out: Path) -> Section | None:
    """Label-efficiency studies (ssl-hpc finetune) to show: curves and equivalent labels."""
    if not dirs:
        return None
    found = dirs
    section = Section("efficiency", "Label efficiency: SSL against supervised training")
    section.text.append(
        "(a) a linear head on the frozen SSL encoder, (b) the SSL encoder fine-tuned, (c) the "
        "same network trained from scratch, on the same labels and augmentations for the "
        "same number of steps. Equivalent labels: how many times more labels (c) needs to "
        "match (a) or (b) (a lower bound '>' where (c) never matched within the labels "
        "available; '<=' where (c) matched with the fewest labels it was given; 'never' for "
        "a repeat where (c) did not match: the mean is over the others)."
    )
    for i, d in enumerate(found):
        summary = json.loads((d / "metrics.json").read_text())
        answers = tuple(summary.get("answers", ()))
        rows = []
        for method, points in summary["curves"].items():
            rows += [{"method": method, **r} for r in curve_rows(points, summary["score"], answers)]
        ratios = [
            {
                "method": method,
                "labels": r["n_train"],
                "equivalent labels": ("> " if r["bound"] else "")
                + f"{r['ratio_mean']:.2f}x +- {r['ratio_std']:.2f}",
                "per repeat": per_repeat(r),
            }
            for method, rs in summary["equivalent_labels"].items()
            for r in rs
        ]
        section.tables.append((f"{d}: {summary['task']} ({summary['score']})", rows))
        section.tables.append((f"{d}: equivalent labels", ratios))
        name = f"efficiency_{i}.png"
        shutil.copyfile(d / "efficiency.png", out / name)
        section.figures.append((name, f"Label efficiency, {summary['task']} ({d})."))
        section.metrics[str(d)] = {
            "curves": summary["curves"],
            "equivalent_labels": summary["equivalent_labels"],
        }
    return section
