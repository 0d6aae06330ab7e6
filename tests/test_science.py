"""Science on representations: anomaly scores find injected outliers, trust falls where
prediction error grows, the invariance check and maps run, and the report has every
section (from the command line)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jobs.cli import main
from ssl_hpc.config import load_config
from ssl_hpc.downstream.anomaly import METHODS, anomaly_scores, auc_interval, detection_metrics
from ssl_hpc.downstream.heads import HeadConfig, RedshiftBins, fit_head, predict_proba
from ssl_hpc.downstream.trust import error_by_trust, trust_scores
from ssl_hpc.embed.store import EmbeddingSet
from ssl_hpc.errors import ConfigError
from ssl_hpc.report.build import ReportOptions


def test_detection_metrics_by_hand():
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    truth = np.array([1, 0, 0, 1, 0, 0], bool)
    m = detection_metrics(scores, truth, ks=(1, 2, 3))
    # pairs (anomaly, normal) ranked right: 0.9 beats all 4, 0.7 beats 3 of 4 -> 7/8
    assert m["roc_auc"] == pytest.approx(7 / 8)
    assert m["precision_at"] == {"1": 1.0, "2": 0.5, "3": 2 / 3}
    assert m["base_rate"] == pytest.approx(1 / 3) and m["n_anomalies"] == 2
    with pytest.raises(ConfigError, match="both anomalies and normal"):
        detection_metrics(scores, np.zeros(6, bool))


def test_auc_interval_brackets_the_auc_and_narrows_with_more_anomalies():
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    negative = rng.normal(size=4000)
    widths = []
    for n in (5, 20, 80):
        # the same distribution at every n (its quantiles), so only n changes
        positive = 1.5 + norm.ppf((np.arange(n) + 0.5) / n)
        low, high = auc_interval(positive, negative)
        auc = roc_auc_score(np.r_[np.ones(n), np.zeros(4000)], np.r_[positive, negative])
        assert low <= auc <= high, (n, low, auc, high)
        widths.append(high - low)
    # the spread of a mean of n, about 1/sqrt(n): measured 0.21, 0.13, 0.065
    assert widths[0] > 1.4 * widths[1] and widths[1] > 1.6 * widths[2], widths
    # ties count half, as in the AUC itself
    assert auc_interval(np.zeros(3), np.zeros(10)) == (0.5, 0.5)
    kinds = {"rare": np.r_[np.ones(5, bool), np.zeros(4000, bool)]}
    m = detection_metrics(np.r_[rng.normal(1.5, 1, 5), negative], kinds["rare"], kinds=kinds)
    low, high = m["by_kind"]["rare"]["roc_auc_90"]
    assert low < m["by_kind"]["rare"]["roc_auc"] < high


def test_umap_maps_are_deterministic_under_a_seed_and_keep_clumps_together():
    from ssl_hpc.viz.maps import embedding_map

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 64)) * 4
    label = rng.integers(0, 5, 600)
    vectors = centres[label] + rng.normal(size=(600, 64))
    rows, first = embedding_map(vectors, max_points=400, seed=7)
    again_rows, again = embedding_map(vectors, max_points=400, seed=7)
    assert np.array_equal(rows, again_rows) and np.array_equal(first, again)
    other_rows, other = embedding_map(vectors, max_points=400, seed=8)
    assert not np.array_equal(rows, other_rows) or not np.allclose(first, other)
    # neighbours on the map are neighbours in the representation: each point's 10
    # nearest on the map share its clump
    d = np.linalg.norm(first[:, None] - first[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :10]
    same = np.mean(label[rows][nearest] == label[rows][:, None])
    assert same > 0.95, same


def test_the_maps_cosine_neighbours_are_exact_with_each_row_first():
    """The kNN graph handed to UMAP: sklearn's brute-force cosine neighbours, across the
    row blocks, with a duplicated row still finding itself first."""
    from sklearn.neighbors import NearestNeighbors

    from ssl_hpc.viz.maps import cosine_neighbours

    x = np.random.default_rng(3).normal(size=(300, 16))
    x[7] = x[250]  # a duplicate: distance 0 to another row
    indices, distances = cosine_neighbours(x, 12, block=64)
    assert np.array_equal(indices[:, 0], np.arange(300)) and not distances[:, 0].any()
    want_d, want_i = NearestNeighbors(n_neighbors=12, metric="cosine").fit(x).kneighbors(x)
    assert indices[7, 1] == 250 and indices[250, 1] == 7
    assert np.allclose(distances, want_d, rtol=0, atol=1e-6)
    others = np.setdiff1d(np.arange(300), [7, 250])  # sklearn may list the twin first
    assert all(set(indices[r]) == set(want_i[r]) for r in others)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_a_survey_with_few_labels_is_reported_with_what_was_left_out(tmp_path):
    """24 galaxies: 14 redshifts, 7 Galaxy Zoo votes. The probes run photo-z and say why
    the GZ questions were left out (they stopped every probe: "7 labelled objects: too
    few to split"), trust says why it was skipped (it stopped the whole report), and a
    map of a class column with unlabelled (NaN) rows draws them grey (it raised)."""
    from conftest import drawn_png

    from ssl_hpc.data.survey import Survey
    from ssl_hpc.data.synth import SynthConfig, generate_survey
    from ssl_hpc.downstream.study import probe_study
    from ssl_hpc.report import discovery, label_studies
    from ssl_hpc.viz.maps import plot_maps

    generate_survey(
        SynthConfig(n_objects=24, rows_per_shard=24, image_size=24, seed=3, workers=1),
        tmp_path / "s",
    )
    survey = Survey(tmp_path / "s")
    vectors = np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32)
    summary = probe_study(vectors, survey, tmp_path / "probe", None, (1.0,), 1)
    assert list(summary["tasks"]) == ["photoz"]
    assert summary["skipped"]["spiral"] == "7 labelled objects (votes), fewer than 10"
    section = label_studies.probes(vectors, survey, tmp_path, (1.0,), 1)
    assert section.text[0].startswith("Not probed, too few labels: bar: 7 labelled objects")
    trust, scores = discovery.trust(vectors, survey, tmp_path, 10, 0)
    assert scores is None and trust.text[0].startswith("Skipped: 10 labelled objects")
    no_z = type("NoRedshifts", (), {"manifest": type("M", (), {"columns": {}})()})()
    trust, scores = discovery.trust(vectors, no_z, tmp_path, 10, 0)
    assert scores is None and "no spectroscopic redshifts (z_spec)" in trust.text[0]
    classes = np.array([0.0, 1.0, np.nan, 3.0, np.nan, 5.0])
    panel = {
        "title": "GZ1 class",
        "values": classes,
        "kind": "categorical",
        "names": list("abcdef"),
    }
    plot_maps(np.random.default_rng(1).normal(size=(6, 2)), [panel], tmp_path / "map.png")
    drawn_png(tmp_path / "map.png")


@pytest.mark.parametrize("method", METHODS)
def test_anomaly_scores_rank_injected_outliers_first(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 32)) * 3
    normal = centres[rng.integers(0, 8, 1000)] + rng.normal(size=(1000, 32))
    odd = rng.normal(size=(20, 32)) * 3  # off the clumps, in random directions
    vectors = np.concatenate([normal, odd]).astype(np.float32)
    truth = np.arange(len(vectors)) >= 1000
    m = detection_metrics(anomaly_scores(vectors, method, seed=0), truth)
    print(method, m["roc_auc"], m["precision_at"])
    assert m["roc_auc"] > 0.95 and m["precision_at"]["10"] >= 0.8
    with pytest.raises(ConfigError, match="anomaly method 'lof'"):
        anomaly_scores(vectors, "lof")


def test_trust_falls_where_photoz_error_grows():
    """Redshift is a smooth function of the representation; only the brighter half of
    the sample has labels (a magnitude-limited spectroscopic survey): predictions for
    objects far from every label extrapolate, and their trust must say so."""
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(size=(n, 6))
    z = np.clip(0.15 + 0.06 * x[:, 0] + 0.01 * np.sin(2 * x[:, 1]), 0.01, 0.39)
    # a constant offset axis keeps every vector in one hemisphere: cosine ~ Euclidean
    vectors = np.concatenate([x, np.full((n, 1), 10.0)], axis=1).astype(np.float32)
    labelled = x[:, 0] < 0.3  # labels stop along one direction of the space
    scores = trust_scores(vectors, labelled, k=10)
    assert scores["trust"].min() >= 0 and scores["trust"].max() <= 1
    # calibration: over the labelled set itself, trust is uniform on [0, 1]
    t_lab = scores["trust"][labelled]
    assert abs(np.median(t_lab) - 0.5) < 0.05
    bins = RedshiftBins()
    head = fit_head(vectors[labelled], bins.one_hot(z[labelled]), HeadConfig(epochs=60))
    z_pred = bins.point(predict_proba(head, vectors))
    err = np.abs(z_pred - z) / (1 + z)
    result = error_by_trust(scores["trust"][~labelled], err[~labelled], bins=4, outlier=0.05)
    low, high = result["bins"][0], result["bins"][-1]
    print(result["spearman_rho"], low, high)
    assert result["spearman_rho"] < -0.3
    assert low["median_abs_error"] > 2 * high["median_abs_error"]
    assert low["trust_max"] <= high["trust_min"]
    # the density ratio falls too, where the survey goes on but labels stop
    ratio = scores["density_ratio"]
    assert np.median(ratio[x[:, 0] > 1.5]) < 0.5 * np.median(ratio[labelled])


def test_objects_of_equal_trust_are_binned_by_their_label_distance():
    """Every object farther from the labels than all labelled ones has trust 0: on the
    demo survey 43% of the judged galaxies. The label distance orders them, so the error
    bins do not depend on the rows' order, and error still grows with distance there."""
    rng = np.random.default_rng(0)
    distance = np.concatenate([rng.uniform(0.0, 0.5, 40), rng.uniform(0.5, 2.0, 60)])
    trust = np.where(distance > 0.5, 0.0, 1 - 2 * distance)
    error = 0.01 + 0.05 * distance
    binned = [
        error_by_trust(trust[o], error[o], 5, 0.05, distance[o])["bins"]
        for o in (slice(None), slice(None, None, -1), rng.permutation(100))
    ]
    assert binned[0] == binned[1] == binned[2]
    assert [b["trust_max"] for b in binned[0][:3]] == [0.0, 0.0, 0.0]
    distances = [(b["label_distance_min"], b["label_distance_max"]) for b in binned[0]]
    assert all(a[0] >= b[1] for a, b in zip(distances, distances[1:]))  # farthest first
    medians = [b["median_abs_error"] for b in binned[0]]
    assert medians == sorted(medians, reverse=True)


@pytest.fixture(scope="module")
def embedded(small_survey, tmp_path_factory):
    from test_embed import make_checkpoint

    from ssl_hpc.embed import EmbedOptions, embed_survey

    root = tmp_path_factory.mktemp("science")
    ckpt = make_checkpoint(root / "encoder.pt", seed=0)
    embed_survey(ckpt, small_survey, root / "emb", EmbedOptions(batch_size=128))
    return root / "emb", ckpt


def test_invariance_check_measures_each_augmentation(embedded, small_survey):
    from ssl_hpc.augment import AugmentConfig
    from ssl_hpc.config import build
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.downstream.invariance import invariance
    from ssl_hpc.models.checkpoint import EncoderCheckpoint

    _, ckpt = embedded
    checkpoint = EncoderCheckpoint(ckpt)
    config = build(AugmentConfig, checkpoint.augment)
    result = invariance(checkpoint.encoder(), Survey(small_survey), config, n=64)
    assert set(result["codes"]) == {*config.codes, "all"}
    assert result["n"] == 64 and result["different"] > 0
    # one code's numbers, recomputed from the same galaxies and draws by hand
    import dataclasses

    import torch

    from ssl_hpc.augment import Augmenter, survey_stats, view_meta
    from ssl_hpc.models.inference import centre_crops, embed

    survey = Survey(small_survey)
    rows = np.sort(np.random.default_rng(0).choice(len(survey), 64, replace=False))
    encoder = checkpoint.encoder()

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    ref = unit(embed(encoder, centre_crops(survey, rows, config.out_size), "cpu").numpy())
    code = config.codes[0]
    aug = Augmenter(
        dataclasses.replace(config, codes=(code,)), survey_stats(survey), 0, "reference"
    )
    images = torch.from_numpy(survey.images(rows))
    views = unit(embed(encoder, aug(images, view_meta(survey, rows)), "cpu").numpy())
    same = float(np.mean(1 - np.sum(views * ref, axis=1)))
    reid = float(np.mean(np.argmax(views @ ref.T, axis=1) == np.arange(64)))
    mine = result["codes"][code]
    assert mine["same"] == pytest.approx(same, rel=1e-4)
    assert mine["ratio"] == pytest.approx(same / result["different"], rel=1e-4)
    assert mine["reidentified"] == pytest.approx(reid)
    # every code together moves a view further than the gentlest one alone
    gentlest = min(r["same"] for c, r in result["codes"].items() if c != "all")
    assert result["codes"]["all"]["same"] > gentlest


def test_invariance_leaves_out_what_another_survey_cannot_support(
    embedded, small_survey, tmp_path, monkeypatch
):
    """An encoder run on a survey it was not trained on: a code that survey cannot support
    is left out with its reason, views that do not fit it skip the check; the report says
    so instead of stopping without a page."""
    import dataclasses

    import ssl_hpc.downstream.invariance as inv
    from ssl_hpc.augment import AugmentConfig, survey_stats
    from ssl_hpc.config import build
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.models.checkpoint import EncoderCheckpoint
    from ssl_hpc.report.learning import invariance_section

    checkpoint = EncoderCheckpoint(embedded[1])
    config = build(AugmentConfig, {**checkpoint.augment, "codes": ["RR", "GN", "PS"]})
    survey = Survey(small_survey)
    no_psfs = dataclasses.replace(survey_stats(survey), objects_without_psf=3)
    monkeypatch.setattr(inv, "survey_stats", lambda *a: no_psfs)
    result = inv.invariance(checkpoint.encoder(), survey, config, n=32)
    assert set(result["codes"]) == {"RR", "GN", "all"}
    assert "3 of the survey's objects lack a finite psf_fwhm" in result["skipped"]["PS"]
    section = invariance_section(result, tmp_path)
    assert section.text[-1].startswith("Left out, this survey cannot be checked under them: PS")
    too_big = dataclasses.replace(config, out_size=survey.manifest.image_shape[1])
    result = inv.invariance(checkpoint.encoder(), survey, too_big, n=32)
    assert result["codes"] == {} and "outside" in result["skipped"]["all"]
    assert invariance_section(result, tmp_path).text[0].startswith("Skipped: all: ")


def test_report_command_has_every_section(embedded, small_survey, tmp_path, capsys):
    emb, _ = embedded
    out = tmp_path / "report"
    args = ["report", "--embeddings", str(emb), "--data", str(small_survey), "--out", str(out)]
    assert main([*args, "--map-points", "300"]) == 0
    assert f"{out.resolve()}/index.html" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    expected = [
        "overview",
        "pretraining",
        "representation",
        "invariance",
        "probes",
        "search",
        "anomalies",
        "trust",
        "maps",
    ]
    assert list(metrics["sections"]) == expected
    assert metrics["embeddings_sha256"] == EmbeddingSet.open(emb).vectors_sha256()
    assert load_config(ReportOptions, out / "config.yaml", []).map_points == 300
    for section in expected:
        assert f"id='{section}'" in page
    # the untrained test encoder has no pretraining run directory beside it: the page says so
    assert metrics["sections"]["pretraining"] == {} and "Skipped: " in page
    assert page.count("data:image/png;base64,") >= 10  # self-contained: figures inlined
    assert 'src="http' not in page and "src='http" not in page
    # the test checkpoint is untrained: rebuilding its random initialisation from the
    # config's seed must give the very same network, so every measure agrees exactly
    rep = metrics["sections"]["representation"]
    assert rep["trained"] == rep["random_init"] and rep["trained"]["knn_sigma_mad"] > 0
    # the detection table is what sklearn makes of anomalies.csv and the survey's truth
    from sklearn.metrics import roc_auc_score

    from ssl_hpc.data.survey import Survey

    survey = Survey(small_survey)
    truth = dict(zip(survey.column("object_id"), survey.column("is_anomaly") > 0))
    table = np.genfromtxt(out / "anomalies.csv", delimiter=",", names=True)
    flags = np.array([truth[int(i)] for i in table["object_id"]])
    detection = metrics["sections"]["anomalies"]
    for m in METHODS:
        columns = {"galaxy": "score", "field": "score_field", "texture": "score_texture"}
        for view, column in ((v, f"{c}_{m}") for v, c in columns.items()):
            auc = roc_auc_score(flags, table[column])
            assert detection[f"{view}/{m}"]["roc_auc"] == pytest.approx(auc, abs=1e-4)
    ranked_by = detection["rank_by"].replace("galaxy+field", "both").replace("/", "_")
    assert np.array_equal(table["score"], table[f"score_{ranked_by}"])
    trust = metrics["sections"]["trust"]
    assert len(trust["bins"]) == 5 and sum(b["n"] for b in trust["bins"]) > 0
    assert "smooth_or_featured" in metrics["sections"]["probes"]
    with np.load(out / "trust.npz") as t:
        assert len(t["trust"]) == 384 and t["labelled"].sum() > 0
    ranked = (out / "anomalies.csv").read_text().splitlines()
    assert len(ranked) == 385 and ranked[0].startswith("rank,object_id,score,score_knn")
    # an efficiency directory that is not a finished study is named, before any work
    fresh = [*args[:-1], str(tmp_path / "refused")]
    assert main([*fresh, "--efficiency", str(tmp_path / "nope")]) == 2
    assert "not a finished ssl-hpc finetune study" in capsys.readouterr().err
    study = tmp_path / "study"  # a probe's directory: metrics.json, but no efficiency.png
    study.mkdir()
    made = {"checkpoint_sha256": "0" * 64, "survey": "/elsewhere/gz1"}
    (study / "metrics.json").write_text(json.dumps(made))
    assert main([*fresh, "--efficiency", str(study)]) == 2
    assert f"{study}: not a finished ssl-hpc finetune study (no efficiency.png)" in (
        capsys.readouterr().err
    )
    shutil.copyfile(out / "index.html", study / "efficiency.png")  # any file will do here
    assert main([*fresh, "--efficiency", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"{study}: a study of another encoder than this report's" in err
    assert "/elsewhere/gz1" in err
    assert main([*fresh, "probe_fractions=0.1,2"]) == 2
    assert "each must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    # another encoder's invariance and curves beside this set's probes: refused, named
    from test_embed import make_checkpoint

    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    elsewhere = tmp_path / "report-other"
    assert main([*args[:-1], str(elsewhere), "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other}: not the encoder {emb} was embedded with" in err
    assert "Traceback" not in err and not elsewhere.exists()


def test_gmm_scores_survive_a_component_with_a_singular_covariance():
    # real field-view vectors where sklearn's default mixture raises "ill-defined empirical
    # covariance" (a component caught a handful of near-identical rows)
    from conftest import REPO

    with np.load(REPO / "tests" / "data" / "field_vectors_singular_gmm.npz") as z:
        vectors = z["vectors"].astype(np.float32)
    scores = anomaly_scores(vectors, "gmm")
    assert scores.shape == (600,) and np.isfinite(scores).all()
    assert np.unique(scores).size > 500  # a density, not a constant
