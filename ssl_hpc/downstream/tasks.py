"""A downstream task: its labelled rows, targets, how predictions are scored, and the
label-fraction splits of a label-efficiency curve.

Tasks: ``photoz`` (the 180-bin redshift classifier of Hayat et al.) and one per Galaxy
Zoo question the survey can answer (`labels.questions`). Every task trains a classifier
on target distributions, so one head and one fine-tuning loop serve all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.labels import questions, redshifts, vote_fractions
from ..data.survey import Survey
from ..errors import ConfigError
from ..metrics import morphology_metrics, photoz_metrics
from ..utils.atomic import write_text_atomic
from .heads import RedshiftBins

PHOTOZ = "photoz"


@dataclass
class Task:
    """Labelled rows of a survey and their (N, C) target distributions."""

    name: str
    rows: np.ndarray
    targets: np.ndarray
    answers: tuple[str, ...]
    z: np.ndarray | None = None  # photoz: the spectroscopic redshifts
    bins: RedshiftBins = field(default_factory=RedshiftBins)

    @property
    def score_name(self) -> str:
        """The headline metric: photo-z sigma_MAD (lower is better), else the balanced
        accuracy (plain accuracy rewards answering the commonest class)."""
        return "sigma_mad" if self.name == PHOTOZ else "balanced_accuracy"

    @property
    def higher_is_better(self) -> bool:
        return self.name != PHOTOZ

    def class_weights(self, index: np.ndarray) -> np.ndarray | None:
        """Per-answer loss weights that make every answer count equally as the scores
        grade it: n / (C x n_c), n_c the training rows at `index` whose plurality answer it
        is (the hard label `morphology_metrics` scores) and C the answers that are some
        row's plurality; 1 (unweighted) for an answer that is only ever a minority vote.
        Counting the votes' soft mass instead gave GZ2's star/artifact answer, 2% of the
        votes and no galaxy's plurality, 15x the weight, and a linear head answered it
        for 61 of 169 confidently labelled test galaxies. None for photoz: its bins are a
        binned regression, and weighting them would bend the redshift distribution."""
        if self.name == PHOTOZ:
            return None
        targets = self.targets[index]
        counts = np.bincount(targets.argmax(axis=1), minlength=targets.shape[1])
        present = counts > 0
        weights = np.ones(len(counts))
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights

    def score(self, probs: np.ndarray, index: np.ndarray) -> dict:
        """Metrics of predicted distributions `probs` for the task's rows at `index`."""
        if self.name == PHOTOZ:
            z_pred = self.bins.point(probs)
            return {**photoz_metrics(z_pred, self.z[index]), "n": len(index)}
        return {**morphology_metrics(probs, self.targets[index]), "n": len(index)}


def tasks_of(survey: Survey) -> list[str]:
    """The task names this survey's labels support."""
    out = [PHOTOZ] if "z_spec" in survey.manifest.columns else []
    return out + sorted(questions(survey))


#: a task with fewer labelled objects is not probed by default: its 30% test set is 3
MIN_LABELLED = 10


def usable_tasks(survey: Survey) -> tuple[list[str], dict[str, str]]:
    """The tasks of `tasks_of` with at least MIN_LABELLED labelled objects, and why each
    other one is left out (a column of NaN or placeholders, redshifts beyond the bins)."""
    usable, skipped = [], {}
    for name in tasks_of(survey):
        # the rows alone: photo-z's (rows, 180) targets cost 0.7 GB at 500k redshifts
        if name == PHOTOZ:
            rows, _ = redshifts(survey, z_max=RedshiftBins().z_max)
        else:
            rows, _ = vote_fractions(survey, name)
        n = len(rows)
        if n >= MIN_LABELLED:
            usable.append(name)
        else:
            what = "0 < z_spec < z_max" if name == PHOTOZ else "votes"
            skipped[name] = f"{n} labelled objects ({what}), fewer than {MIN_LABELLED}"
    return usable, skipped


def load_task(survey: Survey, name: str, bins: RedshiftBins | None = None) -> Task:
    """The task `name` on `survey` (photoz: objects with 0 < z_spec < bins.z_max)."""
    bins = bins or RedshiftBins()
    if name == PHOTOZ:
        rows, z = redshifts(survey, z_max=bins.z_max)
        answers = tuple(f"{c:.4f}" for c in bins.centres)
        return Task(name, rows, bins.one_hot(z), answers, z=z, bins=bins)
    if name not in questions(survey):
        raise ConfigError(
            f"{survey.root}: task {name!r} unknown here; this survey supports {tasks_of(survey)}"
        )
    rows, votes = vote_fractions(survey, name)
    return Task(name, rows, votes, questions(survey)[name].answers)


@dataclass(frozen=True)
class Split:
    """One repeat of a label-efficiency experiment: a fixed test set, and a training pool
    whose first `n` entries are the training set at each label fraction (nested)."""

    repeat: int
    test: np.ndarray
    pool: np.ndarray

    def train(self, fraction: float) -> np.ndarray:
        """The first ceil(fraction x pool) entries of the pool (at least 2)."""
        # rounded first: 0.07 x 100 is 7.000000000000001 in floating point, not 8 labels
        n = max(2, int(np.ceil(round(fraction * len(self.pool), 9))))
        return self.pool[:n]


def splits(
    n: int,
    repeats: int,
    test_fraction: float = 0.3,
    seed: int = 0,
    test: np.ndarray | None = None,
) -> list[Split]:
    """`repeats` random test/pool splits of n labelled objects (indices into the task).

    With a fixed `test` (indices, e.g. from a published split file) every repeat keeps
    that test set and draws its own order of the remaining pool; `test_fraction` is then
    unused.
    """
    if repeats < 1:
        raise ConfigError(f"repeats={repeats}: must be >= 1")
    if test is not None:
        test = np.unique(np.asarray(test, np.int64))
        rest = np.setdiff1d(np.arange(n), test)
        if len(test) < 2 or len(rest) < 2 or test[0] < 0 or test[-1] >= n:
            raise ConfigError(f"fixed test set of {len(test)} out of {n}: too few or out of range")
        return [
            Split(r, test, rest[np.random.default_rng([seed, r]).permutation(len(rest))])
            for r in range(repeats)
        ]
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction={test_fraction}: must be in (0, 1)")
    n_test = int(round(test_fraction * n))
    if n_test < 2 or n - n_test < 2:
        raise ConfigError(f"{n} labelled objects: too few to split (test_fraction {test_fraction})")
    out = []
    for r in range(repeats):
        order = np.random.default_rng([seed, r]).permutation(n)
        out.append(Split(r, np.sort(order[:n_test]), order[n_test:]))
    return out


def read_test_ids(path: str | os.PathLike) -> np.ndarray:
    """Object ids of a published test set: a CSV with an ``object_id`` column ('#' lines
    are comments)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: test-set file not found")
    lines = [line.strip() for line in p.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines or lines[0].split(",")[0] != "object_id":
        raise ConfigError(f"{p}: expected a CSV whose first column is object_id")
    try:
        return np.array([int(line.split(",")[0]) for line in lines[1:]], np.int64)
    except ValueError as e:
        raise ConfigError(f"{p}: object_id values must be integers ({e})") from None


def indices_of_ids(task: Task, survey: Survey, ids: np.ndarray) -> np.ndarray:
    """Indices into `task` of the objects `ids`; every id must be one of its labelled
    objects (a ConfigError names the first few that are not), and ids must be unique over
    the survey (a SurveyError names the repeated ones)."""
    survey.check_ids()
    task_ids = survey.column("object_id")[task.rows]
    where = {int(v): i for i, v in enumerate(task_ids)}
    missing = [int(v) for v in ids if int(v) not in where]
    if missing:
        raise ConfigError(
            f"{survey.root}: {len(missing)} test-set object(s) are not labelled for task "
            f"{task.name}, e.g. {missing[:3]}"
        )
    return np.array(sorted(where[int(v)] for v in ids), np.int64)


def write_test_ids(
    path: str | os.PathLike, task: Task, survey: Survey, test_fraction: float, seed: int
) -> np.ndarray:
    """Draw a test set once (seeded) and publish its object ids as CSV; returns them."""
    test = splits(len(task.rows), 1, test_fraction, seed)[0].test
    ids = survey.column("object_id")[task.rows[test]]
    header = (
        f"# test set of task {task.name} on {survey.manifest.survey}: {len(ids)} of "
        f"{len(task.rows)} labelled objects, drawn with test_fraction={test_fraction}, "
        f"seed={seed} (ssl_hpc.downstream.tasks.splits)\nobject_id\n"
    )
    write_text_atomic(path, header + "".join(f"{int(v)}\n" for v in ids))
    return ids


def distinct_fractions(fractions: tuple[float, ...], split: Split) -> tuple[float, ...]:
    """The `fractions` whose training sets differ on `split`'s pool (every repeat's is the
    same size): on a small pool 1% and 2% both round up to the same 2 labels, and one
    training set counted as two repeats would shrink the spread (the first is kept)."""
    kept: dict[int, float] = {}
    for f in fractions:
        kept.setdefault(len(split.train(f)), f)
    return tuple(kept.values())


def check_fractions(fractions) -> tuple[float, ...]:
    """Label fractions in (0, 1], ascending."""
    fr = tuple(sorted(float(f) for f in fractions))
    if not fr or not all(0 < f <= 1 for f in fr):  # NaN fails the comparison too
        raise ConfigError(f"label fractions {list(fractions)}: each must be in (0, 1]")
    return fr
