"""Trust scores: how far each galaxy lies from the labelled set in representation space.

A prediction made for a galaxy unlike any labelled one is an extrapolation, and should be
flagged as such. For every object:

- ``label_distance``: mean cosine distance to its k nearest labelled objects (itself left
  out when labelled);
- ``density_ratio``: the same distance to the k nearest of *all* objects divided by
  ``label_distance``: near 1 where labels are as dense as the survey, near 0 where the
  survey goes on but labels stop;
- ``trust``: calibrated on the labelled set itself, the fraction of labelled objects that
  lie at least as far from the other labels (leave-one-out): 1 = as close to the labels as
  a typical labelled object, 0 = farther than every one of them.

`error_by_trust` bins prediction errors by trust, to show that they grow as trust falls;
`photoz_trust` does it for a photo-z head on a survey with spectroscopic redshifts.
"""

from __future__ import annotations

import numpy as np

from ..data.survey import Survey
from ..errors import ConfigError
from ..metrics import OUTLIER_DZ
from ..search.exact import exact_search
from ..search.vectors import ArrayVectors
from .heads import HeadConfig, fit_head, predict_proba
from .tasks import PHOTOZ, load_task, splits


def _mean_distance(database: ArrayVectors, queries: np.ndarray, k: int, exclude) -> np.ndarray:
    out = np.empty(len(queries))
    for a in range(0, len(queries), 4096):
        b = min(a + 4096, len(queries))
        ex = None if exclude is None else exclude[a:b]
        sims, _ = exact_search(database, queries[a:b], k, ex)
        out[a:b] = (1.0 - sims).mean(axis=1)
    return out


def trust_scores(vectors: np.ndarray, labelled: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """label_distance, density_ratio and calibrated trust (see the module docstring) of
    every row of `vectors`; `labelled` is a boolean mask of the rows with labels."""
    labelled = np.asarray(labelled, dtype=bool)
    n_lab = int(labelled.sum())
    if n_lab <= k:
        raise ConfigError(f"{n_lab} labelled objects: need more than k={k} for trust scores")
    everything = ArrayVectors(vectors)
    lab_rows = np.flatnonzero(labelled)
    labels = ArrayVectors(vectors[lab_rows])
    # a labelled row is excluded from its own neighbours: its position among the labels
    self_in_labels = np.full(len(vectors), -1, np.int64)
    self_in_labels[lab_rows] = np.arange(n_lab)
    label_distance = _mean_distance(labels, everything.vectors, k, self_in_labels)
    all_distance = _mean_distance(everything, everything.vectors, k, np.arange(len(vectors)))
    reference = np.sort(label_distance[lab_rows])
    # fraction of labelled objects at least as far from the labels as this one
    trust = 1.0 - np.searchsorted(reference, label_distance, side="left") / n_lab
    return {
        "label_distance": label_distance,
        "density_ratio": all_distance / np.maximum(label_distance, 1e-12),
        "trust": trust,
    }


def error_by_trust(
    trust: np.ndarray,
    abs_error: np.ndarray,
    bins: int = 5,
    outlier: float | None = None,
    distance: np.ndarray | None = None,
) -> dict:
    """Errors in `bins` equal-count trust bins (lowest trust first): per bin the trust
    range, median and mean |error| and, given an `outlier` threshold, the fraction above
    it; plus the Spearman correlation of trust with |error| (negative: error grows as
    trust falls). `distance` (the label distance trust is calibrated from) orders objects
    of equal trust: every object farther from the labels than all labelled ones has trust
    0, often most of the unlabelled survey, and row order must not split them."""
    from scipy.stats import spearmanr  # lazy: scipy.stats is slow to import

    order = np.lexsort((-distance, trust)) if distance is not None else np.argsort(trust)
    rows = []
    for part in np.array_split(order, bins):
        if len(part):
            row = {"trust_min": float(trust[part].min()), "trust_max": float(trust[part].max())}
            if distance is not None:
                row["label_distance_min"] = float(distance[part].min())
                row["label_distance_max"] = float(distance[part].max())
            rows.append(
                {
                    **row,
                    "n": len(part),
                    "median_abs_error": float(np.median(abs_error[part])),
                    "mean_abs_error": float(np.mean(abs_error[part])),
                }
            )
            if outlier is not None:
                rows[-1]["outlier_fraction"] = float(np.mean(abs_error[part] > outlier))
    rho, p = spearmanr(trust, abs_error)
    return {"bins": rows, "spearman_rho": float(rho), "spearman_p": float(p)}


def photoz_trust(vectors: np.ndarray, survey: Survey, k: int = 10, seed: int = 0) -> dict:
    """Trust against photo-z error on a survey with spectroscopic redshifts.

    A linear 180-bin photo-z head is trained on a seeded 70% of the spectroscopic objects
    (the labelled set trust is measured from). Its errors are judged on every other galaxy
    against its true redshift where the survey knows it (synthetic), else on the held-out
    spectroscopic objects. Returns the scores of every object ("scores", "labelled"), the
    errors binned by trust quintile (`error_by_trust`) and what was judged ("judged").
    """
    task = load_task(survey, PHOTOZ)
    split = splits(len(task.rows), 1, 0.3, seed)[0]
    labelled = np.zeros(len(survey), bool)
    labelled[task.rows[split.pool]] = True
    scores = trust_scores(vectors, labelled, k)
    head = fit_head(vectors[task.rows[split.pool]], task.targets[split.pool], HeadConfig(seed=seed))
    z_pred = task.bins.point(predict_proba(head, vectors))
    if "z_true" in survey.manifest.columns:  # synthetic: every galaxy's true z is known
        judged = ~labelled
        z_ref = survey.column("z_true").astype(np.float64)
        what = "every galaxy not used for training, against its true redshift"
    else:
        judged = np.zeros(len(survey), bool)
        judged[task.rows[split.test]] = True
        z_ref = np.full(len(survey), np.nan)
        z_ref[task.rows] = task.z
        what = "the held-out spectroscopic objects"
    abs_dz = np.abs(z_pred - z_ref) / (1 + z_ref)
    trust, distance = scores["trust"][judged], scores["label_distance"][judged]
    binned = error_by_trust(trust, abs_dz[judged], 5, OUTLIER_DZ, distance)
    return {"scores": scores, "labelled": labelled, "binned": binned, "judged": what}
