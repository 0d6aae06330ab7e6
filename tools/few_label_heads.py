"""Few-label classifiers on frozen embeddings, on the probe's own splits: is the head or
the representation what limits a morphology score with few labels?

Beside the study's linear head (`ssl-hpc probe`), fits a nearest class mean (cosine, on
features centred by the training mean, optionally PCA-whitened), a class-weighted kNN and
scikit-learn's logistic regression (balanced class weights, standardised features) at
each label fraction, on the same nested splits around a published test set:

  python tools/few_label_heads.py --embeddings EMB --data SURVEY --task gz1_class \
      --test-ids jobs/splits/gz1_sdss_dev_test.csv --out heads.json

Prints a Markdown table of balanced accuracy, mean +- std over the repeats.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.efficiency import probe_curve, scored_rows
from ssl_hpc.downstream.heads import HeadConfig
from ssl_hpc.downstream.study import probe_splits
from ssl_hpc.downstream.tasks import Task, load_task, read_test_ids
from ssl_hpc.embed import load


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) rows with a 1 at each label: a hard prediction as probabilities."""
    return np.eye(n_classes)[labels]


def nearest_class_mean(features, labels, n_classes, whiten: int = 0):
    """predict(train, test): the class whose mean training vector is nearest in cosine."""

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        x = features - features[train].mean(axis=0)
        if whiten:
            dims = min(whiten, len(train) - 1)
            x = PCA(dims, whiten=True, random_state=0).fit(x[train]).transform(x)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        means = np.zeros((n_classes, x.shape[1]))
        for c in np.unique(labels[train]):
            means[c] = x[train][labels[train] == c].mean(axis=0)
        means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
        return one_hot((x[test] @ means.T).argmax(axis=1), n_classes)

    return predict


def weighted_knn(features, labels, n_classes, task: Task, k: int = 10, tau: float = 0.1):
    """predict(train, test): votes of the k nearest training vectors (cosine), weighted by
    exp(similarity / tau) and by the class weights that balance the training labels."""

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        x = features - features[train].mean(axis=0)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        sims = x[test] @ x[train].T
        nearest = np.argsort(-sims, axis=1)[:, :k]
        weights = task.class_weights(train)
        votes = np.zeros((len(test), n_classes))
        for j in range(k):
            cls = labels[train][nearest[:, j]]
            s = sims[np.arange(len(test)), nearest[:, j]]
            votes[np.arange(len(test)), cls] += np.exp(s / tau) * weights[cls]
        return votes / votes.sum(axis=1, keepdims=True)

    return predict


def logistic(features, labels, n_classes, strength: float):
    """predict(train, test): scikit-learn's logistic regression, balanced, C=`strength`."""

    def predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        mu, sd = features[train].mean(axis=0), features[train].std(axis=0) + 1e-6
        model = LogisticRegression(C=strength, class_weight="balanced", max_iter=2000)
        model.fit((features[train] - mu) / sd, labels[train])
        out = np.zeros((len(test), n_classes))
        out[:, model.classes_] = model.predict_proba((features[test] - mu) / sd)
        return out

    return predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embeddings", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--task", default="gz1_class")
    p.add_argument("--test-ids", help="a published test set (else test_fraction 0.3)")
    p.add_argument("--fractions", default="0.05,0.1,0.2,1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True, help="JSON of every row")
    args = p.parse_args()
    survey = Survey(args.data)
    ids, vectors = load(args.embeddings).load()
    if not np.array_equal(ids, survey.column("object_id")):
        raise SystemExit(f"{args.embeddings}: its object ids are not those of {args.data}")
    task = load_task(survey, args.task)
    test_ids = read_test_ids(args.test_ids) if args.test_ids else None
    splits = probe_splits(task, survey, args.repeats, 0.3, 0, test_ids)
    fractions = tuple(float(f) for f in args.fractions.split(","))
    features = vectors[task.rows].astype(np.float64)
    labels, n_classes = task.targets.argmax(axis=1), task.targets.shape[1]
    heads = {
        "the probe's linear head": None,
        "nearest class mean": nearest_class_mean(features, labels, n_classes),
        "nearest class mean, PCA-64 whitened": nearest_class_mean(
            features, labels, n_classes, whiten=64
        ),
        "kNN, k=10, class-weighted": weighted_knn(features, labels, n_classes, task),
        "logistic regression, C=0.01": logistic(features, labels, n_classes, 0.01),
        "logistic regression, C=0.001": logistic(features, labels, n_classes, 0.001),
    }
    print("| head | " + " | ".join(f"{f:g}" for f in fractions) + " |")
    print("|---" * (len(fractions) + 1) + "|")
    rows = []
    for name, predict in heads.items():
        if predict is None:
            got = probe_curve(features.astype(np.float32), task, fractions, splits, HeadConfig())
        else:
            got = scored_rows(task, fractions, splits, name, predict)
        rows += [{**r, "head": name} for r in got]
        cells = []
        for f in fractions:
            scores = [r["balanced_accuracy"] for r in got if r["fraction"] == f]
            cells.append(f"{np.mean(scores):.3f} +- {np.std(scores):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
