"""Downstream targets from a survey's label columns: redshifts and morphology answers.

Morphology questions are Galaxy Zoo's, as vote fractions (soft labels): a question's
answers are columns of the survey, or one minus a column for a yes/no question. The
Galaxy Zoo 2-like columns of the synthetic survey give five questions; a survey ingested
with a Galaxy Zoo 1 ``class`` column (``../shared/data/gz1_sdss_dev``) gives one hard-label
question, with the two spiral classes merged (rotations erase the winding direction) and
"don't know" left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .survey import Survey


@dataclass(frozen=True)
class Question:
    """A morphology question: answer names and, per answer, its column ("1-col": the
    complement of a yes/no column)."""

    name: str
    answers: tuple[str, ...]
    columns: tuple[str, ...]


GZ2_QUESTIONS = {
    q.name: q
    for q in (
        Question(
            "smooth_or_featured",
            ("smooth", "featured", "artifact"),
            ("gz2_smooth", "gz2_features", "gz2_artifact"),
        ),
        Question("edge_on", ("edge_on", "not_edge_on"), ("gz2_edgeon", "1-gz2_edgeon")),
        Question("bar", ("bar", "no_bar"), ("gz2_bar", "1-gz2_bar")),
        Question("spiral", ("spiral", "no_spiral"), ("gz2_spiral", "1-gz2_spiral")),
        Question("merger", ("merger", "not_merger"), ("gz2_merger", "1-gz2_merger")),
    )
}
#: Galaxy Zoo 1 leaf classes, by the integer in the ``class`` column
GZ1_CLASS_NAMES = ("elliptical", "spiral CW", "spiral ACW", "edge-on", "don't know", "merger")
#: Galaxy Zoo 1 leaf class -> merged answer (None: left out)
GZ1_MERGE = {0: 0, 1: 1, 2: 1, 3: 2, 4: None, 5: 3}
GZ1_QUESTION = Question("gz1_class", ("elliptical", "spiral", "edge_on", "merger"), ("class",) * 4)


def questions(survey: Survey) -> dict[str, Question]:
    """The morphology questions this survey's columns can answer."""
    cols = survey.manifest.columns
    out = {
        name: q
        for name, q in GZ2_QUESTIONS.items()
        if all(c.removeprefix("1-") in cols for c in q.columns)
    }
    if "class" in cols:
        out[GZ1_QUESTION.name] = GZ1_QUESTION
    return out


def vote_fractions(survey: Survey, question: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, votes): the survey rows that answer `question`, and their vote fractions
    (len(rows), n_answers), each row summing to 1."""
    known = questions(survey)
    if question not in known:
        raise ConfigError(
            f"{survey.root}: morphology question {question!r} not answerable from its "
            f"columns; answerable: {sorted(known) or 'none'}"
        )
    q = known[question]
    if q is GZ1_QUESTION:
        cls = survey.column("class")
        merged = np.array([_gz1_answer(c) for c in cls], dtype=np.int64)
        rows = np.flatnonzero(merged >= 0)
        votes = np.zeros((len(rows), len(q.answers)))
        votes[np.arange(len(rows)), merged[rows]] = 1.0
        return rows, votes
    parts = []
    for col in q.columns:
        values = survey.column(col.removeprefix("1-")).astype(np.float64)
        parts.append(1 - values if col.startswith("1-") else values)
    votes = np.stack(parts, axis=1)
    rows = np.flatnonzero(np.all(np.isfinite(votes), axis=1) & (votes.sum(axis=1) > 0))
    votes = votes[rows] / votes[rows].sum(axis=1, keepdims=True)
    return rows, votes


def _gz1_answer(leaf) -> int:
    """The merged answer of a Galaxy Zoo 1 leaf class, -1 if left out or missing."""
    if not np.isfinite(leaf):
        return -1
    answer = GZ1_MERGE.get(int(leaf))
    return -1 if answer is None else answer


def redshifts_or_nan(z: np.ndarray) -> np.ndarray:
    """`z` with NaN for every value that is no redshift: a placeholder such as -9999 or 0
    (a redshift is finite and > 0); floating types kept, others as float64."""
    z = z if z.dtype.kind == "f" else z.astype(np.float64)
    return np.where(np.isfinite(z) & (z > 0), z, np.nan).astype(z.dtype)


def spec_z(survey: Survey) -> np.ndarray:
    """Every object's z_spec (float64), NaN where it has none: missing, or a placeholder
    (`redshifts_or_nan`); all NaN without a z_spec column."""
    if "z_spec" not in survey.manifest.columns:
        return np.full(len(survey), np.nan)
    return redshifts_or_nan(survey.column("z_spec").astype(np.float64))


def redshifts(survey: Survey, z_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, z): rows with a spectroscopic redshift (below `z_max` if given)."""
    if "z_spec" not in survey.manifest.columns:
        raise ConfigError(f"{survey.root}: no z_spec column: no redshift labels")
    z = spec_z(survey)
    keep = np.isfinite(z)
    if z_max is not None:
        keep &= z < z_max
    rows = np.flatnonzero(keep)
    return rows, z[rows]
