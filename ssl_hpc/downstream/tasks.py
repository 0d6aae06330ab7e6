"""A downstream task: its labelled rows, targets, how predictions are scored, and the
label-fraction splits of a label-efficiency curve.

Tasks: ``photoz`` (the 180-bin redshift classifier of Hayat et al.) and one per Galaxy
Zoo question the survey can answer (`labels.questions`). Every task trains a classifier
on target distributions, so one head and one fine-tuning loop serve all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.survey import Survey
from ..errors import ConfigError
from .heads import RedshiftBins
from .labels import questions, redshifts, vote_fractions
from .metrics import morphology_metrics, photoz_metrics

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
        """The headline metric: photo-z sigma_MAD (lower is better), else accuracy."""
        return "sigma_mad" if self.name == PHOTOZ else "accuracy"

    @property
    def higher_is_better(self) -> bool:
        return self.name != PHOTOZ

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
        n = max(2, int(np.ceil(fraction * len(self.pool))))
        return self.pool[:n]


def splits(n: int, repeats: int, test_fraction: float = 0.3, seed: int = 0) -> list[Split]:
    """`repeats` random test/pool splits of n labelled objects (indices into the task)."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction={test_fraction}: must be in (0, 1)")
    if repeats < 1:
        raise ConfigError(f"repeats={repeats}: must be >= 1")
    n_test = int(round(test_fraction * n))
    if n_test < 2 or n - n_test < 2:
        raise ConfigError(f"{n} labelled objects: too few to split (test_fraction {test_fraction})")
    out = []
    for r in range(repeats):
        order = np.random.default_rng([seed, r]).permutation(n)
        out.append(Split(r, np.sort(order[:n_test]), order[n_test:]))
    return out


def check_fractions(fractions) -> tuple[float, ...]:
    """Label fractions in (0, 1], ascending."""
    fr = tuple(sorted(float(f) for f in fractions))
    if not fr or fr[0] <= 0 or fr[-1] > 1:
        raise ConfigError(f"label fractions {list(fractions)}: each must be in (0, 1]")
    return fr
