"""Downstream science: the metrics against hand-computed values, the 180-bin redshift
classifier, the morphology targets, label-efficiency splits and the equivalent-labels
ratio, linear probes on an embedding set (command line), and fine-tuning on 2 Ray Train
workers that survives a killed worker.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import ray
from conftest import drawn_png, nan_centred_copy
from faults import kill_once

from jobs.cli import main
from ssl_hpc.config import build, load_config
from ssl_hpc.data.labels import GZ2_QUESTIONS, _gz1_answer, questions, vote_fractions
from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.efficiency import (
    FINETUNED,
    LINEAR,
    PRIOR,
    SUPERVISED,
    curve,
    equivalent_labels,
    labels_to_reach,
    monotone,
    prior_curve,
    ratio_line,
)
from ssl_hpc.downstream.heads import HeadConfig, RedshiftBins, fit_head, predict_proba
from ssl_hpc.downstream.study import ProbeConfig
from ssl_hpc.downstream.tasks import (
    Task,
    check_fractions,
    distinct_fractions,
    load_task,
    splits,
    tasks_of,
)
from ssl_hpc.errors import ConfigError, DivergedError
from ssl_hpc.metrics import morphology_metrics, photoz_metrics
from ssl_hpc.report.label_studies import per_repeat
from ssl_hpc.report.learning import overview
from ssl_hpc.train.ray_loop import start_local
from ssl_hpc.utils.atomic import write_json_atomic

# -- metrics --------------------------------------------------------------------------------


def test_photoz_metrics_by_hand():
    z_true = np.array([0.1, 0.2, 0.3, 0.1])
    z_pred = np.array([0.1, 0.2, 0.4, 0.2])
    # dz = 0, 0, 0.1/1.3, 0.1/1.1; median 0.1/2.6; |dz - median| = 0.1/2.6 (x3), 0.0524...
    m = photoz_metrics(z_pred, z_true)
    assert m["sigma_mad"] == pytest.approx(1.4826 * 0.1 / 2.6)
    assert m["eta"] == 50.0  # 0.0769 and 0.0909 exceed 0.05
    assert m["bias"] == pytest.approx((0.1 / 1.3 + 0.1 / 1.1) / 4)
    with pytest.raises(ValueError, match="shapes"):
        photoz_metrics(z_pred[:3], z_true)
    # a diverged network's NaN predictions are outliers, not good ones
    z_pred[:2] = np.nan
    m = photoz_metrics(z_pred, z_true)
    assert m["eta"] == 100.0 and math.isnan(m["sigma_mad"]) and math.isnan(m["bias"])


def test_morphology_metrics_by_hand():
    votes = np.array([[0.9, 0.1], [0.2, 0.8], [0.85, 0.15], [0.5, 0.5]])
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    m = morphology_metrics(probs, votes)
    # confident (> 0.8): rows 0 and 2 (row 1 has exactly 0.8); both truly answer 0
    assert m["n_confident"] == 2 and m["accuracy"] == 0.5
    assert m["confusion"] == [[1, 1], [0, 0]]
    ce = -np.mean((votes * np.log(probs)).sum(axis=1))
    assert m["cross_entropy"] == pytest.approx(ce)
    # only class 0 has confident members: its recall, but nothing to tell apart (answering
    # class 0 every time would score a "balanced accuracy" of 1)
    assert m["recall"] == [0.5, None]
    assert math.isnan(m["balanced_accuracy"]) and math.isnan(m["macro_f1"])


def test_class_scores_equal_sklearn_on_imbalanced_labels():
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    rng = np.random.default_rng(3)
    truth = rng.choice(4, 500, p=[0.7, 0.15, 0.12, 0.03])  # GZ1-like: mergers rare
    # a classifier that mostly answers the commonest class
    guess = np.where(rng.random(500) < 0.6, truth, 0)
    m = morphology_metrics(np.eye(4)[guess] * 0.9 + 0.025, np.eye(4)[truth])
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, guess))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro"))
    assert m["recall"] == pytest.approx(list(recall_score(truth, guess, average=None)))
    # guesses of a class absent from the truth cost macro-F1, as in sklearn (not recall)
    no_mergers = truth != 3
    wrong = np.where(no_mergers & (rng.random(500) < 0.2), 3, guess)[no_mergers]
    m = morphology_metrics(np.eye(4)[wrong], np.eye(4)[truth[no_mergers]])
    assert m["macro_f1"] == pytest.approx(f1_score(truth[no_mergers], wrong, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(truth[no_mergers], wrong)
    )
    # answering the commonest class every time: high accuracy, balanced accuracy 1/4
    always = morphology_metrics(np.tile([0.97, 0.01, 0.01, 0.01], (500, 1)), np.eye(4)[truth])
    assert always["accuracy"] == pytest.approx(np.mean(truth == 0))
    assert always["balanced_accuracy"] == 0.25 and always["recall"][3] == 0.0


def test_class_weights_reach_the_loss_and_find_the_rare_class():
    from ssl_hpc.downstream.heads import soft_cross_entropy
    from ssl_hpc.downstream.tasks import Task

    targets = np.eye(3)[[0] * 90 + [1] * 8 + [2] * 2]
    task = Task("gz1_class", np.arange(100), targets, ("e", "s", "m"))
    weights = task.class_weights(np.arange(100))
    assert weights == pytest.approx([100 / (3 * 90), 100 / (3 * 8), 100 / (3 * 2)])
    assert Task("photoz", np.arange(3), np.eye(3), ("a", "b", "c")).class_weights([0]) is None
    # the weighted loss by hand: sum_i w_y(i) (-log p_i,y(i)) / sum_i w_y(i)
    import torch

    logits = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    y = torch.as_tensor(targets, dtype=torch.float32)
    w = torch.as_tensor(weights, dtype=torch.float32)
    nll = -torch.log_softmax(logits, 1)[torch.arange(100), y.argmax(1)]
    by_hand = (w[y.argmax(1)] * nll).sum() / w[y.argmax(1)].sum()
    assert float(soft_cross_entropy(logits, y, w)) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(soft_cross_entropy(logits, y)) == pytest.approx(float(nll.mean()), rel=1e-6)
    # a rare class that overlaps the common one: unweighted, the head never answers it;
    # balanced, it finds most of it
    rng = np.random.default_rng(0)
    label = (rng.random(2000) < 0.04).astype(int)
    x = rng.normal(size=(2000, 4)) + 1.5 * label[:, None] * np.array([1.0, 1.0, 0, 0])
    onehot = np.eye(2)[label]
    cfg = HeadConfig(epochs=40)
    plain = predict_proba(fit_head(x[:1500], onehot[:1500], cfg), x[1500:])
    task2 = Task("merger", np.arange(2000), onehot, ("no", "yes"))
    balanced = predict_proba(
        fit_head(x[:1500], onehot[:1500], cfg, task2.class_weights(np.arange(1500))), x[1500:]
    )
    recall = [morphology_metrics(p, onehot[1500:])["recall"][1] for p in (plain, balanced)]
    assert recall[0] < 0.2 and recall[1] > 0.6, recall


def test_class_weights_count_plurality_answers_not_minority_votes():
    """Vote fractions: a minority answer that is no row's plurality (GZ2's star/artifact)
    keeps weight 1; weighted by the votes' soft mass it got ~7x, and a head answered it for
    the galaxies where it drew most votes, every one of them graded as smooth."""
    smooth, featured, starry = [0.9, 0.08, 0.02], [0.1, 0.88, 0.02], [0.65, 0.05, 0.3]
    groups = np.array([0] * 70 + [1] * 20 + [2] * 10)
    votes = np.array([smooth, featured, starry])[groups]
    task = Task("smooth_or_featured", np.arange(100), votes, ("smooth", "featured", "star"))
    weights = task.class_weights(np.arange(100))
    assert weights == pytest.approx([100 / (2 * 80), 100 / (2 * 20), 1.0])
    rng = np.random.default_rng(1)
    x = np.eye(3)[groups] * 3 + rng.normal(scale=0.1, size=(100, 3))
    soft_mass = votes.sum(axis=0)
    by_votes = soft_mass.sum() / (3 * soft_mass)  # the old weights: star/artifact 6.9x
    cfg = HeadConfig(epochs=200)
    for w, starry_answer in ((weights, 0), (by_votes, 2)):
        guess = predict_proba(fit_head(x, votes, cfg, w), x).argmax(axis=1)
        assert set(guess[groups == 2]) == {starry_answer}, (w, guess[groups == 2])
        assert set(guess[groups < 2]) == {0, 1}


# -- the redshift classifier ----------------------------------------------------------------


class _ZOnly:
    """A survey as the redshift readers see it: a z_spec column and a length."""

    def __init__(self, z: np.ndarray) -> None:
        self.z, self.root = z, "a catalogue"
        self.manifest = type("Manifest", (), {"columns": {"z_spec": None}})()

    def __len__(self) -> int:
        return len(self.z)

    def column(self, name: str) -> np.ndarray:
        return self.z


def test_placeholder_redshifts_are_no_redshifts():
    """Catalogues write -9999 or 0 for "no spectrum": every stage reads them as missing
    (the report's kNN check and maps took them as redshifts while the probes did not)."""
    from ssl_hpc.data.labels import redshifts, spec_z

    survey = _ZOnly(np.array([0.1, -9999.0, np.nan, 0.0, 0.35]))
    np.testing.assert_array_equal(spec_z(survey), [0.1, np.nan, np.nan, np.nan, 0.35])
    rows, z = redshifts(survey)
    assert rows.tolist() == [0, 4] and z.tolist() == [0.1, 0.35]
    # the report's overview counts redshifts, not the manifest's finite values (4 here)
    m = survey.manifest
    m.labels, m.bands, m.image_shape, m.shards = {"z_spec": 4}, ("r",), (1, 8, 8), [0]
    m.pixel_scale_arcsec, m.survey = 0.396, "a catalogue"
    searcher = type("Searcher", (), {"set": type("Set", (), {"dim": 4})()})()
    assert overview(survey, searcher, {}).metrics["labels"] == {"z_spec": 2}
    # nor do the pictures' captions and selections, search tables or the server's trust
    from ssl_hpc.data.captions import captions, select_rows
    from ssl_hpc.search.query import ResultCatalogue

    table = {"z_spec": survey.z, "object_id": np.arange(5), "ra": np.zeros(5), "dec": np.zeros(5)}
    m.columns, m.generator = dict.fromkeys(table), {}
    survey.column = table.__getitem__
    assert select_rows(survey, "labelled", 5).tolist() == [0, 4]
    assert select_rows(survey, "unlabelled", 5).tolist() == [1, 2, 3]
    assert captions(survey, np.arange(5)) == ["0\nz=0.100", "1", "2", "3", "4\nz=0.350"]
    shown = ResultCatalogue(survey).table(np.arange(5), np.ones(5))
    assert [r["z_spec"] for r in shown] == [0.1, None, None, None, 0.35]


def test_redshift_bins_as_hayat():
    bins = RedshiftBins()
    assert bins.n_bins == 180 and len(bins.edges) == 181 and bins.edges[-1] == 0.4
    width = 0.4 / 180
    z = np.array([0.0, width * 1.5, 0.39999, 0.4, -0.1, 0.7])
    assert bins.index(z).tolist() == [0, 1, 179, 179, 0, 179]
    assert bins.point(bins.one_hot(z[:3])) == pytest.approx(
        [width / 2, width * 1.5, 0.4 - width / 2]
    )
    # a two-bin PDF: the probability-weighted mean of the centres
    pdf = np.zeros((1, 180))
    pdf[0, [10, 20]] = [0.25, 0.75]
    assert bins.point(pdf)[0] == pytest.approx(0.25 * bins.centres[10] + 0.75 * bins.centres[20])


def test_180_bin_classifier_recovers_z_from_clean_colours():
    rng = np.random.default_rng(0)
    z = rng.uniform(0.02, 0.38, 3000)
    # two "colours" that are clean functions of z, and three nuisance dimensions
    colours = np.stack([2.5 * z, 1.0 - 1.5 * z], axis=1) + rng.normal(0, 0.002, (3000, 2))
    features = np.concatenate([colours, rng.normal(size=(3000, 3))], axis=1)
    bins = RedshiftBins()
    head = fit_head(features[:2000], bins.one_hot(z[:2000]), HeadConfig(epochs=80))
    pdf = predict_proba(head, features[2000:])
    assert pdf.shape == (1000, 180) and np.allclose(pdf.sum(axis=1), 1)
    m = photoz_metrics(bins.point(pdf), z[2000:])
    assert m["sigma_mad"] < 0.01 and m["eta"] < 1.0 and abs(m["bias"]) < 0.005, m
    # the same seed trains the same head
    again = predict_proba(
        fit_head(features[:2000], bins.one_hot(z[:2000]), HeadConfig(epochs=80)), features[2000:]
    )
    assert np.array_equal(pdf, again)


# -- targets and splits ---------------------------------------------------------------------


def test_morphology_targets_from_the_synthetic_survey(small_survey):
    survey = Survey(small_survey)
    assert set(questions(survey)) == set(GZ2_QUESTIONS)
    assert tasks_of(survey)[0] == "photoz"
    rows, votes = vote_fractions(survey, "smooth_or_featured")
    assert len(rows) > 20 and votes.shape == (len(rows), 3)
    assert np.allclose(votes.sum(axis=1), 1)
    smooth = survey.column("gz2_smooth")[rows]
    assert np.allclose(
        votes[:, 0],
        smooth
        / (smooth + survey.column("gz2_features")[rows] + survey.column("gz2_artifact")[rows]),
    )
    photoz = load_task(survey, "photoz")
    assert np.all((photoz.z > 0) & (photoz.z < 0.4)) and photoz.targets.shape[1] == 180
    with pytest.raises(ConfigError, match="'bulge_size' unknown here"):
        load_task(survey, "bulge_size")


def test_galaxy_zoo_1_classes_merge_the_spirals():
    # 0 elliptical, 1 and 2 spirals (winding erased by rotations), 3 edge-on, 4 don't know
    assert [_gz1_answer(c) for c in (0, 1, 2, 3, 4, 5, float("nan"))] == [0, 1, 1, 2, -1, 3, -1]


def test_splits_are_nested_disjoint_and_repeatable():
    a = splits(200, repeats=3, test_fraction=0.25, seed=1)
    b = splits(200, repeats=3, test_fraction=0.25, seed=1)
    for s, t in zip(a, b):
        assert np.array_equal(s.test, t.test) and np.array_equal(s.pool, t.pool)
        assert len(s.test) == 50 and not set(s.test) & set(s.pool)
        small, large = set(s.train(0.1)), set(s.train(0.5))
        assert len(small) == 15 and small < large and len(s.train(1.0)) == 150
        assert len(s.train(0.14)) == 21  # 0.14 x 150 is 21.000000000000004 in floating point
    assert not np.array_equal(a[0].test, a[1].test)
    with pytest.raises(ConfigError, match="too few"):
        splits(4, 1, test_fraction=0.3)
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        check_fractions(["0.1", "1.5"])
    # 98 labels in the pool: 1% and 2% both train on the same 2 (counted once), 5% on 5
    [split] = splits(140, 1, test_fraction=0.3, seed=0)
    fractions = check_fractions([0.01, 0.02, 0.05, 1])
    assert distinct_fractions(fractions, split) == (0.01, 0.05, 1.0)
    task = Task("q", np.arange(140), np.eye(2)[np.arange(140) % 2], ("a", "b"))
    rows = prior_curve(task, distinct_fractions(fractions, split), [split])
    assert [r["n_train"] for r in rows] == [2, 5, 98]


def test_a_published_test_set_is_kept_in_every_repeat(small_survey, tmp_path):
    from ssl_hpc.downstream.tasks import indices_of_ids, read_test_ids, write_test_ids

    survey = Survey(small_survey)
    task = load_task(survey, "photoz")
    path = tmp_path / "test.csv"
    ids = write_test_ids(path, task, survey, 0.3, seed=4)
    assert np.array_equal(read_test_ids(path), ids)  # the header comment is skipped
    fixed = indices_of_ids(task, survey, ids)
    assert np.array_equal(survey.column("object_id")[task.rows[fixed]], np.sort(ids))
    runs = splits(len(task.rows), 3, seed=9, test=fixed)
    for s in runs:
        assert np.array_equal(s.test, fixed) and not set(s.pool) & set(fixed)
        assert len(s.pool) + len(fixed) == len(task.rows)
        assert set(s.train(0.2)) < set(s.train(0.5))
    assert not np.array_equal(runs[0].pool, runs[1].pool)  # repeats reorder the pool
    with pytest.raises(ConfigError, match="not labelled for task photoz"):
        indices_of_ids(task, survey, np.array([10**12]))
    path.write_text("objid\n1\n")
    with pytest.raises(ConfigError, match="first column is object_id"):
        read_test_ids(path)


# -- equivalent labels ----------------------------------------------------------------------


def test_labels_to_reach_interpolates_in_log_labels():
    n, sigma = [10, 100, 1000], [0.10, 0.05, 0.02]
    assert labels_to_reach(0.05, n, sigma, higher=False) == pytest.approx(100)
    assert labels_to_reach(0.035, n, sigma, higher=False) == pytest.approx(math.sqrt(1e5))
    assert labels_to_reach(0.2, n, sigma, higher=False) == 10  # reached at the start
    assert math.isinf(labels_to_reach(0.01, n, sigma, higher=False))
    assert labels_to_reach(0.85, [10, 100], [0.7, 0.9], higher=True) == pytest.approx(10**1.75)


def test_equivalent_labels_ratio_per_repeat():
    rows = []
    for rep, shift in ((0, 0.0), (1, 0.005)):
        for n, s in ((10, 0.10), (100, 0.05), (1000, 0.02)):
            rows.append({"method": SUPERVISED, "repeat": rep, "n_train": n, "sigma_mad": s + shift})
        for n, s in ((10, 0.05), (100, 0.01)):
            rows.append({"method": LINEAR, "repeat": rep, "n_train": n, "sigma_mad": s})
    out = {r["n_train"]: r for r in equivalent_labels(rows, LINEAR, "sigma_mad", higher=False)}
    # repeat 0: supervised reaches 0.05 at 100 labels: 10x; repeat 1 (curve 0.005 worse):
    # 0.05 lies between 0.055 at 100 and 0.025 at 1000
    r1 = labels_to_reach(0.05, [10, 100, 1000], [0.105, 0.055, 0.025], higher=False) / 10
    assert out[10]["ratios"] == [10.0, round(r1, 3)]
    assert out[10]["ratio_mean"] == pytest.approx((10 + r1) / 2, rel=1e-3)
    assert not out[10]["bound"]
    # 0.01 at 100 labels: supervised never gets there; a lower bound of 1000/100
    assert out[100]["bound"] and out[100]["ratio_mean"] == 10.0
    # the printed line carries the spread, and says when only some repeats were reached
    spread = f"{out[10]['ratio_mean']:.2g} +- {out[10]['ratio_std']:.2g}x"
    assert ratio_line(LINEAR, list(out.values())).endswith(f"10: {spread}, 100: >10x")
    partial = {"n_train": 50, "bound": False, "ratio_mean": 2.0, "ratio_std": 0.0}
    partial.update(ratios=[2.0], repeats_unreached=2)
    assert ratio_line(LINEAR, [partial]).endswith("50: 2 +- 0x (1 of 3)")
    # (b) with 20 labels: in repeat 0 supervised beats its 0.2 with its fewest labels (10),
    # so the ratio is at most 0.5; repeat 1's 0.08 is reached by interpolation, exactly
    rows += [
        {"method": FINETUNED, "repeat": rep, "n_train": 20, "sigma_mad": s}
        for rep, s in ((0, 0.2), (1, 0.08))
    ]
    [at_20] = equivalent_labels(rows, FINETUNED, "sigma_mad", higher=False)
    assert at_20["ratios"] == [
        0.5,
        round(labels_to_reach(0.08, [10, 100], [0.105, 0.055], False) / 20, 3),
    ]
    assert at_20["at_most"] == [True, False]
    assert "(1 at most)" in ratio_line(FINETUNED, [at_20])
    assert out[10]["at_most"] == [False, False]


def test_diverged_runs_are_left_out_of_the_ratio_and_counted():
    """A run whose score is NaN (a diverged network) is no evidence either way: not
    "supervised never got there" (a lower bound), and not a point of the supervised curve
    (isotonic regression refuses NaN); it is left out and counted."""
    rows = [
        {"method": SUPERVISED, "repeat": rep, "n_train": n, "balanced_accuracy": s}
        for rep in (0, 1)
        for n, s in ((10, 0.5), (100, 0.7 if rep == 0 else math.nan), (1000, 0.9))
    ]
    rows += [
        {"method": FINETUNED, "repeat": rep, "n_train": 10, "balanced_accuracy": s}
        for rep, s in ((0, 0.7), (1, 0.7), (2, math.nan))
    ]
    [at_10] = equivalent_labels(rows, FINETUNED, "balanced_accuracy", higher=True)
    assert at_10["ratios"] == [10.0, 10.0]  # repeat 1 reads 0.7 between 10 and 1000 labels
    assert not at_10["bound"] and at_10["repeats_unreached"] == 0
    assert at_10["repeats_invalid"] == 1
    assert ratio_line(FINETUNED, [at_10]).endswith("(1 without a score, left out)")
    assert per_repeat(at_10) == "10.00, 10.00, no score"
    # the curve's mean is over the finite repeats, whether the NaN is in memory or read back
    # from a run's metrics.json as null
    for diverged in (math.nan, None):
        rows[-1]["balanced_accuracy"] = diverged
        [point] = curve(rows, FINETUNED, "balanced_accuracy")
        assert (point["mean"], point["std"], point["repeats"]) == (0.7, 0.0, 2)


def test_equivalent_labels_read_on_a_monotone_supervised_curve():
    """A supervised run that scores worse with more labels (0.76 with 5, 0.37 with 10: a
    lucky draw of 5) is pooled with its neighbour before the ratio is read: otherwise
    every score up to 0.76 would read "5 labels", a ratio capped at 0.5 for 10 labels."""
    assert monotone([0.76, 0.37, 0.60], higher=True) == pytest.approx([0.565, 0.565, 0.60])
    assert monotone([0.02, 0.04, 0.03, 0.01], higher=False) == pytest.approx(
        [0.03, 0.03, 0.03, 0.01]  # errors: pooled until they fall (mean of 0.02, 0.04, 0.03)
    )
    rows = [
        {"method": SUPERVISED, "repeat": 0, "n_train": n, "balanced_accuracy": s}
        for n, s in ((5, 0.76), (10, 0.37), (25, 0.60))
    ]
    rows += [{"method": FINETUNED, "repeat": 0, "n_train": 10, "balanced_accuracy": 0.58}]
    [at_10] = equivalent_labels(rows, FINETUNED, "balanced_accuracy", higher=True)
    need = labels_to_reach(0.58, [5, 10, 25], [0.565, 0.565, 0.60], higher=True)
    assert 10 < need < 25 and at_10["ratios"] == [round(need / 10, 3)]
    assert at_10["at_most"] == [False] and not at_10["bound"]
    rows[-1]["balanced_accuracy"] = 0.63  # above the pooled curve's best: a lower bound
    [above] = equivalent_labels(rows, FINETUNED, "balanced_accuracy", higher=True)
    assert above["bound"] and above["ratio_mean"] == 2.5


def test_report_lists_each_repeats_ratio_and_the_repeats_never_reached():
    """The report's per-repeat cell: "<=" on an upper bound, and "never" for a repeat whose
    supervised curve did not reach the score (left out of the mean, so it must show)."""
    rows = [
        {"method": SUPERVISED, "repeat": rep, "n_train": n, "balanced_accuracy": s}
        for rep, curve in ((0, ((5, 0.70), (10, 0.75))), (1, ((5, 0.50), (10, 0.55))))
        for n, s in curve
    ]
    rows += [
        {"method": FINETUNED, "repeat": rep, "n_train": 5, "balanced_accuracy": 0.6}
        for rep in (0, 1)
    ]
    [at_5] = equivalent_labels(rows, FINETUNED, "balanced_accuracy", higher=True)
    assert at_5["ratios"] == [1.0] and at_5["repeats_unreached"] == 1
    assert per_repeat(at_5) == "<= 1.00, never"
    assert per_repeat({"ratios": [1.5, 0.25], "repeats_unreached": 0}) == "1.50, 0.25"  # older JSON


def test_prior_curve_scores_knowing_nothing():
    """The training labels' prior: one redshift for every test galaxy (the mean of the
    training redshifts' bin centres); morphology the commonest answer."""
    rng = np.random.default_rng(0)
    z = rng.uniform(0.02, 0.2, 300)
    bins = RedshiftBins()
    photoz = Task("photoz", np.arange(300), bins.one_hot(z), (), z=z)
    [split] = splits(300, 1, 0.3, seed=0)
    rows = prior_curve(photoz, (0.1, 1.0), [split])
    for row, fraction in zip(rows, (0.1, 1.0)):
        train = split.train(fraction)
        z_one = bins.centres[bins.index(z[train])].mean()
        want = photoz_metrics(np.full(len(split.test), z_one), z[split.test])
        assert row["method"] == PRIOR and row["n_train"] == len(train)
        assert row["sigma_mad"] == pytest.approx(want["sigma_mad"])
        assert row["bias"] == pytest.approx(want["bias"])
    # 80% smooth, all votes confident: every galaxy called smooth, a balanced accuracy of
    # one half and the plain accuracy of the majority
    smooth = rng.random(300) < 0.8
    morphology = Task("smooth", np.arange(300), np.stack([smooth, ~smooth], 1) * 1.0, ("s", "f"))
    [row] = prior_curve(morphology, (1.0,), [split])
    assert row["balanced_accuracy"] == 0.5 and row["recall"] == [1.0, 0.0]
    assert row["accuracy"] == pytest.approx(smooth[split.test].mean())


# -- linear probes on an embedding set, from the command line --------------------------------


def test_metrics_files_are_strict_json_with_null_for_what_was_not_measured(tmp_path):
    # a probe row with no confident test labels has NaN metrics; Python's json would write a
    # bare NaN, which a browser's JSON.parse (the web page) and most other parsers reject
    path = tmp_path / "metrics.json"
    write_json_atomic(
        path,
        {
            "acc": float("nan"),
            "mean": np.float32(0.5),
            "curve": np.array([1.0, np.inf]),
            "n": (np.int64(3),),
            7: -math.inf,
        },
    )

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "acc": None,
        "mean": 0.5,
        "curve": [1.0, None],
        "n": [3],
        "7": None,
    }


def test_probe_command_on_an_embedding_set(small_survey, tmp_path, capsys):
    from test_embed import make_checkpoint

    from ssl_hpc.embed import EmbedOptions, embed_survey, load

    ckpt = make_checkpoint(tmp_path / "encoder.pt", seed=0)
    emb = tmp_path / "emb"
    embed_survey(ckpt, small_survey, emb, EmbedOptions(batch_size=128))
    out = tmp_path / "probe"
    args = [
        "probe",
        "--embeddings",
        str(emb),
        "--data",
        str(small_survey),
        "--out",
        str(out),
        "--fractions",
        "0.2,1",
        "--repeats",
        "2",
        "--epochs",
        "20",
    ]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["tasks"]) == set(tasks_of(Survey(small_survey)))
    assert summary["checkpoint_sha256"] == load(emb).manifest["checkpoint_sha256"]
    # the merged config beside the outputs reloads to the settings the flags gave
    saved = load_config(ProbeConfig, out / "config.yaml", [])
    assert (saved.fractions, saved.repeats, saved.head.epochs) == ((0.2, 1.0), 2, 20)
    photoz = summary["tasks"]["photoz"]
    assert [p["repeats"] for p in photoz["curve"]] == [2, 2]
    assert all(0 < r["sigma_mad"] < 0.2 and r["n"] > 10 for r in photoz["rows"])
    smooth = summary["tasks"]["smooth_or_featured"]["curve"]
    assert 0.3 < smooth[-1]["mean"] <= 1.0
    with np.load(out / "photoz_pdfs.npz") as z:
        assert z["pdf"].shape == (len(z["z_spec"]), 180) and len(z["bin_edges"]) == 181
    # the photo-z curve and the z_phot-z_spec scatter are two files, neither overwritten
    figures = [drawn_png(out / name) for name in ("photoz.png", "curve_photoz.png")]
    assert figures[0].shape != figures[1].shape or (figures[0] != figures[1]).any()
    drawn_png(out / "curve_smooth_or_featured.png")
    # a survey the embeddings are not of is refused, naming both
    other = tmp_path / "other"
    from ssl_hpc.data.synth import SynthConfig, generate_survey

    generate_survey(SynthConfig(n_objects=40, rows_per_shard=20, image_size=48, seed=3), other)
    args[4] = str(other)
    assert main(args) == 2
    assert f"384 vectors, but {other} has 40 objects" in capsys.readouterr().err
    # bad fractions or an unknown task: refused before the output directory is made
    args[4], args[6] = str(small_survey), str(tmp_path / "refused")
    assert main([*args[:8], "1.5", *args[9:]]) == 2
    assert "each must be in (0, 1]" in capsys.readouterr().err
    assert main([*args, "--task", "colour_of_the_sky"]) == 2
    assert "colour_of_the_sky" in capsys.readouterr().err
    # a test set the survey does not label, or no repeats: refused before config.yaml
    (tmp_path / "unknown.csv").write_text("object_id\n123456789\n")
    assert main([*args, "--test-ids", str(tmp_path / "unknown.csv")]) == 2
    assert "not labelled for task" in capsys.readouterr().err
    assert main([*args[:10], "0", *args[11:]]) == 2
    assert "repeats=0: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_saved_probe_heads_reload_and_reproduce_the_probe(small_survey, tmp_path):
    """Each task's head at the largest fraction opens with weights_only=True and, applied
    to the vectors, gives the probe's own test-set PDFs' means and its recorded scores."""
    import torch

    from ssl_hpc.downstream.predict import load_heads, predict, trained_on
    from ssl_hpc.downstream.study import probe_study

    survey = Survey(small_survey)
    ids = survey.column("object_id")
    vectors = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    names = ["photoz", "smooth_or_featured"]
    head = HeadConfig(hidden=6, epochs=5)  # the hidden-layer head; the export's is linear
    summary = probe_study(vectors, survey, tmp_path, names, (0.5, 1.0), 1, head=head)
    index = json.loads((tmp_path / "heads" / "index.json").read_text())
    assert list(index["tasks"]) == names
    saved = {n: torch.load(tmp_path / "heads" / f"{n}.pt", weights_only=True) for n in names}
    for name, s in saved.items():
        assert (s["task"], s["input_dim"], s["hidden"]) == (name, 8, 6)
        assert set(s["state_dict"]) >= {"mean", "std"}  # the inputs' standardisation
    np.testing.assert_array_equal(saved["photoz"]["bin_edges"].numpy(), RedshiftBins().edges)
    assert saved["smooth_or_featured"]["answers"] == ["smooth", "featured", "artifact"]
    heads = load_heads(tmp_path)
    got = predict(heads, vectors, block=100)  # several blocks
    with np.load(tmp_path / "photoz_pdfs.npz") as z:
        test_ids, z_pred = z["object_id"], z["z_pred"]
    at = {int(v): i for i, v in enumerate(ids)}
    np.testing.assert_allclose(got["photoz"][[at[int(v)] for v in test_ids]], z_pred, rtol=1e-6)
    assert (got["photoz_err"] > 0).all()
    for name in names:
        task = load_task(survey, name)
        split = splits(len(task.rows), 1, 0.3, head.seed)[0]
        train, test = split.train(1.0), task.rows[split.test]
        in_train = trained_on(heads, ids)[f"in_train_{name}"]
        np.testing.assert_array_equal(np.flatnonzero(in_train), np.sort(task.rows[train]))
        (row,) = [r for r in summary["tasks"][name]["rows"] if r["fraction"] == 1.0]
        if name == "photoz":
            assert photoz_metrics(got["photoz"][test], task.z[split.test]) == pytest.approx(
                {k: row[k] for k in ("sigma_mad", "eta", "bias")}, rel=1e-6
            )
        else:
            probs = np.stack([got[f"p_{name}_{a}"] for a in task.answers], axis=1)
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
            score = morphology_metrics(probs[test], task.targets[split.test])
            assert score["balanced_accuracy"] == pytest.approx(row["balanced_accuracy"])
            best = np.array(task.answers)[probs.argmax(axis=1)]
            assert list(got[f"{name}_class"]) == list(best)


# -- fine-tuning on Ray Train ---------------------------------------------------------------

TINY_FINETUNE = {
    "task": "photoz",
    "init": "random",
    "arch": "resnet18",
    "steps": 12,
    "batch_size": 8,
    "lr": 0.05,
    "warmup_steps": 2,
    "augment": {"codes": ["RR", "JC", "GN"], "out_size": 24, "max_shift": 4},
    "eval_every": 6,
    "checkpoint_every": 3,
    "num_workers": 2,
    "cpus_per_worker": 1,
    "max_failures": 2,
    "fraction": 0.5,
}


def test_class_weights_reach_the_fine_tuning_loss(small_survey, monkeypatch):
    import torch

    from ssl_hpc.downstream import finetune

    seen = []

    def recording(logits, targets, class_weights=None):
        seen.append(class_weights)
        return finetune_loss(logits, targets, class_weights)

    finetune_loss = finetune.soft_cross_entropy
    monkeypatch.setattr(finetune, "soft_cross_entropy", recording)
    values = {**TINY_FINETUNE, "task": "smooth_or_featured", "num_workers": 1, "steps": 2}
    t = finetune.Finetuner(build(finetune.FinetuneConfig, values), str(small_survey))
    expected = t.task.class_weights(t.train_index)
    assert expected is not None and expected.max() > 2 * expected[expected > 0].min()
    t.train_step()
    assert torch.allclose(seen[-1], torch.as_tensor(expected, dtype=torch.float32))
    t = finetune.Finetuner(
        build(finetune.FinetuneConfig, {**values, "balance": False}), str(small_survey)
    )
    t.train_step()
    assert seen[-1] is None


def test_a_nan_loss_stops_fine_tuning_before_the_update(small_survey, tmp_path):
    """NaN pixels (from a writer that broke the format) make the loss NaN: the step raises,
    naming the survey and step, before the optimiser turns every weight into NaN."""
    import torch

    from ssl_hpc.downstream.finetune import FinetuneConfig, Finetuner

    poisoned = nan_centred_copy(small_survey, tmp_path / "nan")
    t = Finetuner(build(FinetuneConfig, {**TINY_FINETUNE, "num_workers": 1}), str(poisoned))
    before = [p.detach().clone() for p in t.model.parameters()]
    with pytest.raises(DivergedError, match=f"{poisoned} diverged: the loss was nan at step 1 "):
        t.train_step()
    assert t.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, t.model.parameters(), strict=True))


def test_fine_tuning_head_starts_at_the_label_prior_with_its_own_rate(small_survey):
    """A default-initialised head starts near a uniform PDF over the 180 bins (mean
    z = 0.2); it must start at the training labels' prior and learn at head_lr."""
    import torch

    from ssl_hpc.downstream.finetune import FinetuneConfig, Finetuner

    values = {**TINY_FINETUNE, "num_workers": 1, "lr": 0.3, "head_lr": 0.02}
    t = Finetuner(build(FinetuneConfig, values), str(small_survey))
    metrics, probs = t.evaluate()
    prior = t.targets.mean(0).numpy()
    assert np.allclose(probs, 0.99 * prior + 0.01 / prior.size, atol=1e-6)  # any image
    z_mean_train = float(t.task.z[t.train_index].mean())
    assert abs(t.task.bins.point(probs[:1])[0] - z_mean_train) < 0.01 * z_mean_train + 0.002
    rates = [g["scale"] for g in t.optimizer.param_groups]
    assert rates == [0.3, 0.02]  # random init: encoder at lr, head at head_lr
    weights = {**values, "task": "smooth_or_featured"}
    t = Finetuner(build(FinetuneConfig, weights), str(small_survey))
    w = torch.as_tensor(t.task.class_weights(t.train_index)).float()
    balanced = (t.targets * w).sum(0) / (t.targets * w).sum()
    assert torch.allclose(t.model.head.bias.exp(), 0.99 * balanced + 0.01 / len(w), atol=1e-6)
    ssl = FinetuneConfig(init="ssl", checkpoint="x.pt", lr=0.3)
    assert ssl.encoder_rate == pytest.approx(0.03)  # fine-tuning at 0.1x


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lr": "nan"}, "lr=nan: must be a finite number > 0"),
        ({"test_fraction": "1.5"}, r"test_fraction=1.5: must be in \(0, 1\)"),
        ({"z_bins": "0"}, "z_bins=0: must be >= 1"),
        ({"z_max": "-1"}, "z_max=-1.0: must be a finite number > 0"),
        ({"encoder_lr_scale": "nan"}, "encoder_lr_scale=nan: must be a finite number >= 0"),
        ({"methods": "bogus"}, r"methods \['bogus'\]"),
        ({"repeats": "0"}, "repeats=0: must be >= 1"),
        ({"fractions": "0.5,nan"}, r"label fractions \[0.5, nan\]"),
    ],
)
def test_a_study_refuses_bad_settings_when_it_is_built(values, message):
    """Before Ray starts or study.yaml is written: NaN passes "x <= 0" checks, and a
    test_fraction, z_bins or method refused only inside the runs cost minutes each."""
    from ssl_hpc.downstream.study import StudyConfig

    with pytest.raises(ConfigError, match=message):
        build(StudyConfig, {"checkpoint": "x.pt", **values})


@pytest.fixture(scope="module")
def ray_local():
    # as `fit` starts one. With the dashboard off, Ray Train asked the State API on the
    # default port, where another test's cluster answered that this run's live controller
    # did not exist, and removed its workers' placement group mid-restart
    start_local(num_cpus=2)
    yield
    ray.shutdown()


def test_finetune_on_two_workers_survives_a_killed_worker(ray_local, small_survey, tmp_path):
    from ssl_hpc.downstream.finetune import FinetuneConfig, fit

    config = build(FinetuneConfig, TINY_FINETUNE)
    out = tmp_path / "run"
    marker = tmp_path / "killed-at-7"
    test = fit(config, small_survey, out, hook=kill_once(7, 1, marker))
    assert marker.exists()  # the worker really was killed
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    notes = [h for h in history if "note" in h]
    # from the step-6 checkpoint, or from step 3 where the controller had not yet taken
    # in step 6's report when the worker died
    assert len(notes) == 1 and notes[0]["note"] in ("restored from step 6", "restored from step 3")
    evals = [h["step"] for h in history if "note" not in h]
    assert evals == [6, 12]  # each evaluation once, the resumed run's
    assert test["n"] > 10 and 0 < test["sigma_mad"] < 0.5
    done = json.loads((out / "metrics.json").read_text())
    assert done["step"] == 12 and done["test"] == test
    import torch

    state = torch.load(out / "model.pt", weights_only=True)
    assert state["state_dict"]["head.weight"].shape[0] == 180
    with np.load(out / "predictions.npz") as z:
        assert np.allclose(
            z["z_pred"], RedshiftBins().point(z["probs"].astype(np.float64)), atol=1e-5
        )
    # a rerun finds the finished run and trains nothing
    mtime = (out / "model.pt").stat().st_mtime_ns
    assert fit(config, small_survey, out) == test
    assert (out / "model.pt").stat().st_mtime_ns == mtime
    # another config into the same directory is refused, finished or not
    with pytest.raises(ConfigError, match="holds a different fine-tuning config"):
        fit(build(FinetuneConfig, {**TINY_FINETUNE, "steps": 13}), small_survey, out)


def test_finetune_passes_over_a_damaged_checkpoint(ray_local, small_survey, tmp_path):
    """The checkpoint Ray Train hands back has bytes flipped inside a tensor (torch.load
    would read it without complaint): the run resumes from the one before and says so."""
    from faults import damage_then_kill

    from ssl_hpc.downstream.finetune import FinetuneConfig, fit

    config = build(FinetuneConfig, TINY_FINETUNE)
    out = tmp_path / "run"
    marker = tmp_path / "damaged"
    hook = damage_then_kill(10, 0, marker, out / "ray" / "finetune", checkpointed=9)
    test = fit(config, small_survey, out, hook=hook)
    assert marker.exists()
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    notes = [h["note"] for h in history if "note" in h]
    assert len(notes) == 1 and notes[0].startswith("restored from step 6 (passed over checkpoint_")
    assert "finetune.pt does not match its sha256" in notes[0]
    assert [h["step"] for h in history if "note" not in h] == [6, 12]
    assert json.loads((out / "metrics.json").read_text())["step"] == 12
    assert test["n"] > 10 and 0 < test["sigma_mad"] < 0.5


def test_finetune_command_compares_three_methods(
    ray_local, small_survey, tmp_path, capsys, monkeypatch
):
    """The label-efficiency study end to end: linear probe, fine-tuned and supervised on
    the same splits, the curves, the equivalent-labels ratio, the plots; a rerun resumes."""
    from test_embed import make_checkpoint

    make_checkpoint(tmp_path / "encoder.pt", seed=0)
    out = tmp_path / "efficiency"
    monkeypatch.chdir(tmp_path)  # a relative --checkpoint must reach the Ray workers
    args = [
        "finetune",
        "--checkpoint",
        "encoder.pt",
        "--data",
        str(small_survey),
        "--out",
        str(out),
        "--fractions",
        "0.5,1",
        "--repeats",
        "1",
        "steps=4",
        "batch_size=8",
        "eval_every=4",
        "checkpoint_every=4",
        "num_workers=1",
        "warmup_steps=1",
    ]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["task"] == "photoz" and summary["score"] == "sigma_mad"
    # what a report checks the study against: its survey and encoder
    assert summary["survey_content_sha256"] == Survey(small_survey).manifest.content_sha256
    assert len(summary["checkpoint_sha256"]) == 64
    # the pretraining run's augmentations, unless told otherwise
    assert summary["config"]["augment"]["out_size"] == 24
    for method in ("linear_ssl", "finetuned_ssl", "supervised"):
        points = summary["curves"][method]
        assert len(points) == 2 and points[0]["n_train"] < points[1]["n_train"], method
        assert all(0 < p["mean"] < 0.5 for p in points)
    assert set(summary["equivalent_labels"]) == {"linear_ssl", "finetuned_ssl"}
    # the checkpoint is untrained, so the SSL features are the random-init baseline's
    assert summary["curves"]["linear_ssl"] == summary["curves"]["linear_random_init"]
    assert len(summary["curves"]["linear_pixel_pca"]) == 2
    for init in ("ssl", "random"):
        for fraction in ("0.5", "1"):
            assert (out / f"{init}-f{fraction}-r0" / "metrics.json").exists()
    # efficiency.png draws the curves metrics.json holds, each with its repeats' spread
    from ssl_hpc.downstream.efficiency import NAMES, plot_curves
    from ssl_hpc.downstream.tasks import load_task

    task = load_task(Survey(small_survey), "photoz")
    drawn = plot_curves(summary["rows"], task, tmp_path / "again.png")
    for method, points in summary["curves"].items():
        assert drawn[NAMES[method]] == [(p["n_train"], p["mean"], p["std"]) for p in points]
    drawn_png(out / "photoz.png")
    assert "labels supervised needs to match linear_ssl" in capsys.readouterr().out
    # a rerun finds every run finished
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")}
    assert len(stamps) == 4  # finetuned_ssl and supervised, at 2 fractions
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")} == stamps
    # --methods '': the linear heads alone, on the same splits, and no trained run
    linear_only = tmp_path / "linear-only"
    assert main([*args[:6], str(linear_only), "--methods", "", *args[7:]]) == 0
    alone = json.loads((linear_only / "metrics.json").read_text())
    assert {r["method"] for r in alone["rows"]} == {
        "linear_ssl",
        "linear_random_init",
        "linear_pixel_pca",
        "training_prior",
    }
    for method, points in alone["curves"].items():
        assert points == summary["curves"][method], method
    assert alone["equivalent_labels"] == {}
    assert not list(linear_only.glob("*-r0"))
    # a rerun refused (another run config; a test set the survey does not label) keeps
    # the study.yaml that describes the metrics.json beside it
    study = (out / "study.yaml").read_text()
    (tmp_path / "unknown.csv").write_text("object_id\n123456789\n")
    for change in ("steps=5", f"test_ids={tmp_path / 'unknown.csv'}"):
        assert main([*args, change]) == 2
        assert (out / "study.yaml").read_text() == study, change
    assert "not labelled for task photoz" in capsys.readouterr().err
