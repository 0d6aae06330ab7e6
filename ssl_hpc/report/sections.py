"""The report's sections. Each function computes one part of the science on the
representations, writes its figures and files into the report directory, and returns a
section: {"id", "title", "text": [paragraphs], "tables": [(caption, rows)],
"figures": [(file, caption)], "metrics": {...}} (the metrics go to metrics.json)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from ..data.survey import Survey
from ..downstream.anomaly import METHODS, anomaly_scores, detection_metrics
from ..downstream.heads import HeadConfig, fit_head, predict_proba
from ..downstream.labels import GZ1_CLASS_NAMES
from ..downstream.metrics import OUTLIER_DZ
from ..downstream.study import probe_study
from ..downstream.tasks import PHOTOZ, load_task, splits, tasks_of
from ..downstream.trust import error_by_trust, trust_scores
from ..errors import SslHpcError
from ..search.query import Query, save_result_grid
from ..search.searcher import Searcher
from ..search.vectors import normalise
from ..utils.atomic import atomic_path
from ..viz.captions import captions
from ..viz.figures import pyplot, save_figure
from ..viz.grid import save_cutout_grid
from ..viz.maps import MAP_NAMES, embedding_map, plot_maps


def _section(id_: str, title: str, **parts) -> dict:
    return {
        "id": id_,
        "title": title,
        "text": [],
        "tables": [],
        "figures": [],
        "metrics": {},
        **parts,
    }


def _truth(survey: Survey, name: str) -> np.ndarray | None:
    return survey.column(name) if name in survey.manifest.columns else None


def overview(survey: Survey, searcher: Searcher, run: dict) -> dict:
    """What was embedded with what: survey size, bands, labels, encoder, vectors."""
    m = survey.manifest
    labels = m.labels
    rows = [
        {"quantity": "objects", "value": len(survey)},
        {"quantity": "bands", "value": ",".join(m.bands)},
        {"quantity": "cutout (px)", "value": "x".join(map(str, m.image_shape[1:]))},
        {"quantity": "pixel scale (arcsec)", "value": m.pixel_scale_arcsec},
        {"quantity": "representation dims", "value": searcher.set.dim},
        {"quantity": "encoder", "value": run.get("checkpoint", "?")},
    ]
    rows += [{"quantity": f"labelled: {c}", "value": n} for c, n in sorted(labels.items())]
    return _section(
        "overview",
        "Survey and representations",
        text=[
            f"{m.survey}: {len(survey)} galaxies in {len(m.shards)} HDF5 shards, embedded "
            f"into {searcher.set.dim}-dimensional representations by the self-supervised "
            "encoder. Every section below uses these vectors only (cosine similarity of "
            "L2-normalised vectors), except the invariance check, which runs the encoder.",
        ],
        tables=[("", rows)],
        metrics={"n_objects": len(survey), "dim": searcher.set.dim, "labels": labels},
    )


def pretraining(checkpoint: Path, out: Path) -> dict | None:
    """The pretraining run's learning curve and last evaluation, when its directory has
    them (metrics.csv, learning_curve.png)."""
    run_dir = checkpoint.parent
    curve, metrics_csv = run_dir / "learning_curve.png", run_dir / "metrics.csv"
    if not metrics_csv.exists():
        return None
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    evaluated = [r for r in rows if r.get("knn_sigma_mad")]
    last = evaluated[-1] if evaluated else (rows[-1] if rows else {})
    keys = ("step", "loss", "knn_morph_acc", "knn_sigma_mad", "knn_eta")
    table = [{k: _num(last.get(k)) for k in keys if last.get(k) not in (None, "")}]
    section = _section(
        "pretraining",
        "Pretraining",
        text=[
            "Contrastive pretraining (InfoNCE) of the encoder: loss and learning rate per "
            "step, and the kNN (k=20) morphology accuracy and photo-z sigma_MAD of the "
            "representations measured during training on held-back labelled objects.",
        ],
        tables=[("last evaluation", table)] if table[0] else [],
        metrics={"last_eval": table[0]},
    )
    if curve.exists():
        shutil.copyfile(curve, out / "learning_curve.png")
        section["figures"].append(("learning_curve.png", "Learning curve."))
    return section


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def probes(vectors: np.ndarray, survey: Survey, out: Path, fractions, repeats: int) -> dict:
    """Linear heads on the frozen representations for every labelled task."""
    tasks = tasks_of(survey)
    section = _section("probes", "Photometric redshift and morphology from frozen representations")
    if not tasks:
        section["text"].append("The survey has no labels (z_spec or Galaxy Zoo): no probes.")
        return section
    summary = probe_study(vectors, survey, out / "probe", tasks, fractions, repeats)
    section["text"].append(
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
        section["tables"].append((caption, curve_rows(result["curve"], result["score"], answers)))
    if PHOTOZ in summary["tasks"]:
        shutil.copyfile(out / "probe" / "photoz.png", out / "photoz.png")
        section["figures"].append(("photoz.png", "Photo-z against spectroscopic z (test set)."))
    for name in summary["tasks"]:
        shutil.copyfile(out / "probe" / f"curve_{name}.png", out / f"probe_{name}.png")
        section["figures"].append((f"probe_{name}.png", f"Label-efficiency curve: {name}."))
    section["metrics"] = {
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


def efficiency(dirs: list[Path], out: Path) -> dict | None:
    """Label-efficiency studies (ssl-hpc finetune) to show: curves and equivalent labels."""
    if not dirs:
        return None
    for d in dirs:
        if not (d / "metrics.json").exists() or not (d / "efficiency.png").exists():
            raise SslHpcError(f"{d}: not a finished ssl-hpc finetune study (no metrics.json)")
    found = dirs
    section = _section("efficiency", "Label efficiency: SSL against supervised training")
    section["text"].append(
        "(a) a linear head on the frozen SSL encoder, (b) the SSL encoder fine-tuned, (c) the "
        "same network trained from scratch, on the same labels and augmentations for the "
        "same number of steps. Equivalent labels: how many times more labels (c) needs to "
        "match (a) or (b) (a lower bound '>' where (c) never matched within the labels "
        "available)."
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
                "per repeat": ", ".join(f"{v:.2f}" for v in r["ratios"]),
            }
            for method, rs in summary["equivalent_labels"].items()
            for r in rs
        ]
        section["tables"].append((f"{d}: {summary['task']} ({summary['score']})", rows))
        section["tables"].append((f"{d}: equivalent labels", ratios))
        name = f"efficiency_{i}.png"
        shutil.copyfile(d / "efficiency.png", out / name)
        section["figures"].append((name, f"Label efficiency, {summary['task']} ({d})."))
        section["metrics"][str(d)] = {
            "curves": summary["curves"],
            "equivalent_labels": summary["equivalent_labels"],
        }
    return section


def _example_queries(survey: Survey, n: int, seed: int) -> list[int]:
    """Rows to search from: one per true morphology class (synthetic surveys), one anomaly,
    else random rows; seeded."""
    rng = np.random.default_rng(seed)
    morph, kind = _truth(survey, "morph_class"), _truth(survey, "anomaly_kind")
    rows = []
    if morph is not None:
        normal = kind == 0 if kind is not None else np.ones(len(survey), bool)
        for cls in np.unique(morph)[: max(n - 1, 1)]:
            pool = np.flatnonzero((morph == cls) & normal)
            if len(pool):
                rows.append(int(rng.choice(pool)))
    if kind is not None and (kind > 0).any():
        rows.append(int(rng.choice(np.flatnonzero(kind > 0))))
    while len(rows) < n:
        rows.append(int(rng.integers(len(survey))))
    return rows[:n]


def search_examples(searcher: Searcher, out: Path, k: int, n: int, seed: int) -> dict:
    """Similarity search from a few galaxies: the query and its k nearest."""
    section = _section("search", "Similarity search")
    section["text"].append(
        f"The {k} galaxies most similar to each query (cosine similarity of the "
        "representations, exact search). Captions: object id, spectroscopic z, true class "
        "(synthetic survey), similarity. Search any galaxy with `ssl-hpc search "
        "--embeddings EMB --query OBJID`."
    )
    ids = searcher.catalogue.columns["object_id"]
    summary = []
    for i, row in enumerate(_example_queries(searcher.survey, n, seed)):
        query = Query(f"object {ids[row]}", searcher.vectors.take(np.array([row]))[0], row)
        table = searcher.table(query, k)
        name = f"search_{i}.png"
        save_result_grid(searcher.survey, query, table, out / name)
        section["figures"].append((name, f"Query {ids[row]} and its {k} nearest."))
        entry = {
            "query": int(ids[row]),
            "mean_similarity": float(np.mean([t["similarity"] for t in table])),
        }
        if "true_class" in table[0]:
            own = searcher.catalogue.names["morph_class"][
                int(searcher.catalogue.columns["morph_class"][row])
            ]
            entry["same_class"] = float(np.mean([t["true_class"] == own for t in table]))
        summary.append(entry)
    section["tables"].append(("queries", summary))
    section["metrics"] = {"queries": summary}
    return section


#: what each anomaly view scores
VIEWS = {
    "galaxy": "the centre crop the encoder was trained on",
    "field": "the whole cutout binned to the view size (models.inference.field_view)",
    "galaxy+field": "both unit vectors side by side",
}
#: CSV column prefix of each view
VIEW_COLUMNS = {"galaxy": "score", "field": "score_field", "galaxy+field": "score_both"}


def anomaly_views(vectors: np.ndarray, field: np.ndarray | None) -> dict[str, np.ndarray]:
    """The representations anomalies are scored on: the galaxy's, and where the set has
    them its field's and both together; and the ranking score's (view, method)."""
    views = {"galaxy": vectors}
    if field is not None:
        views["field"] = field
        views["galaxy+field"] = np.concatenate([normalise(vectors), normalise(field)], axis=1)
    return views


def anomalies(
    vectors: np.ndarray,
    field: np.ndarray | None,
    survey: Survey,
    out: Path,
    k: int,
    n_show: int,
    seed: int,
):
    """Anomaly scores on each view, their detection of injected anomalies (per kind), and
    the most anomalous; returns (section, the ranking score of every object)."""
    views = anomaly_views(vectors, field)
    scores = {
        (view, m): anomaly_scores(x, m, k=k, seed=seed)
        for view, x in views.items()
        for m in METHODS
    }
    rank_by = ("galaxy+field", "gmm") if field is not None else ("galaxy", "knn")
    section = _section("anomalies", "Anomaly detection")
    section["text"].append(
        f"Scores, higher = more unusual: knn = mean cosine distance to the {k} nearest "
        "galaxies; gmm = negative log-likelihood under an 8-component Gaussian mixture on "
        "16 whitened principal components; iforest = isolation forest on the same. Each "
        "on " + "; ".join(f"{v}: {d}" for v, d in VIEWS.items() if v in views) + ". "
        f"Galaxies are ranked by {rank_by[1]} on {rank_by[0]}; every score of every object "
        "is in anomalies.csv."
    )
    truth, kind = _truth(survey, "is_anomaly"), _truth(survey, "anomaly_kind")
    metrics: dict = {"rank_by": "/".join(rank_by)}
    if truth is not None and 0 < (truth > 0).sum() < len(truth):
        names = survey.manifest.generator.get("anomaly_kinds", [])
        kinds = {names[i]: kind == i for i in range(1, len(names))} if kind is not None else {}
        rows = []
        for (view, m), score in scores.items():
            d = detection_metrics(score, truth > 0, kinds=kinds)
            metrics[f"{view}/{m}"] = d
            row = {"view": view, "method": m, "ROC AUC": d["roc_auc"]}
            row["avg precision"] = d["average_precision"]
            row.update({f"P@{kk}": v for kk, v in d["precision_at"].items()})
            row.update({f"AUC {n}": v["roc_auc"] for n, v in d["by_kind"].items()})
            rows.append(row)
        best = {
            n: max((r[f"AUC {n}"], f"{r['view']}/{r['method']}") for r in rows)
            for n in kinds
            if f"AUC {n}" in rows[0]
        }
        metrics["best_by_kind"] = {n: {"roc_auc": a, "score": w} for n, (a, w) in best.items()}
        section["text"].append(
            f"Against the synthetic survey's {int((truth > 0).sum())} injected anomalies "
            f"(base rate {np.mean(truth > 0):.3f}; a random ranking has ROC AUC 0.5 and "
            "precision at k equal to the base rate). Best score per kind: "
            + ", ".join(f"{n} {a:.3f} ({w})" for n, (a, w) in best.items())
            + "."
        )
        section["tables"].append(("detection of injected anomalies", rows))
    ids = survey.column("object_id")
    ranking = scores[rank_by]
    order = np.argsort(-ranking, kind="stable")
    columns = [f"{VIEW_COLUMNS[v]}_{m}" for v, m in scores]
    with atomic_path(out / "anomalies.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "object_id", "score", *columns])
        for rank, row in enumerate(order):
            values = [f"{ranking[row]:.6g}", *[f"{x[row]:.6g}" for x in scores.values()]]
            w.writerow([rank + 1, int(ids[row]), *values])
    top = order[:n_show]
    display = survey.manifest.flux_unit.startswith("display")
    caps = [f"#{i + 1} {c}" for i, c in enumerate(captions(survey, top))]
    what = f"{rank_by[1]} on {rank_by[0]}"
    save_cutout_grid(
        survey.images(top),
        survey.bands,
        caps,
        out / "anomalies.png",
        ncols=8,
        title=f"The {len(top)} most anomalous by {what}",
        display_values=display,
    )
    section["figures"].append(("anomalies.png", f"The most anomalous galaxies ({what})."))
    section["metrics"] = metrics
    return section, ranking


def trust(vectors: np.ndarray, survey: Survey, out: Path, k: int, seed: int):
    """Distance to the labelled set, and photo-z error as that distance grows: (section,
    every object's trust score), or (None, None) for a survey without redshifts."""
    if PHOTOZ not in tasks_of(survey):
        return None, None
    task = load_task(survey, PHOTOZ)
    split = splits(len(task.rows), 1, 0.3, seed)[0]
    train = split.pool
    labelled = np.zeros(len(survey), bool)
    labelled[task.rows[train]] = True
    scores = trust_scores(vectors, labelled, k)
    ids = survey.column("object_id")
    with atomic_path(out / "trust.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, object_id=ids, labelled=labelled, **scores)
    model = fit_head(vectors[task.rows[train]], task.targets[train], HeadConfig(seed=seed))
    z_pred = task.bins.point(predict_proba(model, vectors))
    z_true = _truth(survey, "z_true")
    section = _section("trust", "Trust: how far from the labels")
    if z_true is not None:  # synthetic: every galaxy's true redshift is known
        judged = ~labelled
        z_ref, what = z_true, "every galaxy not used for training, against its true redshift"
    else:
        judged = np.zeros(len(survey), bool)
        judged[task.rows[split.test]] = True
        z_ref = np.full(len(survey), np.nan)
        z_ref[task.rows] = task.z
        what = "the held-out spectroscopic objects"
    abs_dz = np.abs(z_pred - z_ref) / (1 + z_ref)
    binned = error_by_trust(scores["trust"][judged], abs_dz[judged], 5, OUTLIER_DZ)
    section["text"].append(
        f"For every galaxy: the mean cosine distance to its {k} nearest labelled galaxies "
        "(the 70% of the spectroscopic sample that trained the photo-z head), a density "
        "ratio (distance to the k nearest of all galaxies over that), and trust, calibrated "
        "on the labelled set itself: the fraction of labelled galaxies at least as far from "
        "the other labels (1 = as close as a typical labelled galaxy, 0 = farther than all). "
        f"Scores for all objects: trust.npz. Photo-z errors |dz| of {what}, by trust "
        f"quintile; Spearman rho(trust, |dz|) = {binned['spearman_rho']:.3f} "
        f"(p = {binned['spearman_p']:.2g}): negative means error grows as trust falls."
    )
    section["tables"].append(("photo-z error by trust quintile (lowest first)", binned["bins"]))
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    b = binned["bins"]
    mid = [0.5 * (r["trust_min"] + r["trust_max"]) for r in b]
    ax[0].plot(mid, [r["median_abs_error"] for r in b], "o-", label="median |dz|")
    ax[0].plot(mid, [r["mean_abs_error"] for r in b], "s--", label="mean |dz|")
    ax[0].set_xlabel("trust (quintile centre)")
    ax[0].set_ylabel("|dz|")
    ax[0].legend()
    ax[1].plot(mid, [100 * r["outlier_fraction"] for r in b], "o-", color="C3")
    ax[1].set_xlabel("trust (quintile centre)")
    ax[1].set_ylabel(f"outliers |dz| > {OUTLIER_DZ} (%)")
    fig.suptitle("Photo-z error against trust")
    save_figure(fig, out / "trust.png")
    section["figures"].append(("trust.png", "Photo-z error by trust quintile."))
    section["metrics"] = {
        "spearman_rho": binned["spearman_rho"],
        "spearman_p": binned["spearman_p"],
        "bins": binned["bins"],
        "judged": what,
    }
    return section, scores["trust"]


def maps(
    vectors: np.ndarray,
    survey: Survey,
    out: Path,
    anomaly: np.ndarray,
    n: int,
    seed: int,
    method: str = "umap",
    trust: np.ndarray | None = None,
):
    """A UMAP (or t-SNE) map of the representations coloured by redshift, class, labels,
    anomaly score and trust."""
    rows, coords = embedding_map(vectors, n, seed, method)
    panels = []
    z = _truth(survey, "z_spec")
    if z is not None:
        panels.append(
            {
                "title": "spectroscopic redshift",
                "values": z[rows],
                "kind": "continuous",
                "label": "z_spec",
            }
        )
    morph = _truth(survey, "morph_class")
    gen = survey.manifest.generator
    if morph is not None and "morph_classes" in gen:
        panels.append(
            {
                "title": "true morphology",
                "values": morph[rows],
                "kind": "categorical",
                "names": gen["morph_classes"],
            }
        )
    elif "gz2_smooth" in survey.manifest.columns:
        panels.append(
            {
                "title": "Galaxy Zoo smooth fraction",
                "values": survey.column("gz2_smooth")[rows],
                "kind": "continuous",
            }
        )
    elif "class" in survey.manifest.columns:
        panels.append(
            {
                "title": "Galaxy Zoo 1 class",
                "values": survey.column("class")[rows],
                "kind": "categorical",
                "names": list(GZ1_CLASS_NAMES),
            }
        )
    if z is not None:
        panels.append(
            {
                "title": "labelled (z_spec) or not",
                "values": np.isfinite(z[rows]).astype(int),
                "kind": "categorical",
                "names": ["unlabelled", "labelled"],
            }
        )
    panels.append(
        {
            "title": "anomaly score (the report's ranking)",
            "values": 100 * np.argsort(np.argsort(anomaly))[rows] / max(len(anomaly) - 1, 1),
            "kind": "continuous",
            "label": "percentile",
            "cmap": "magma",
        }
    )
    if trust is not None:
        panels.append(
            {
                "title": "trust (distance to the labelled set)",
                "values": trust[rows],
                "kind": "continuous",
                "label": "trust",
                "cmap": "cividis",
            }
        )
    name = MAP_NAMES[method]
    plot_maps(coords, panels, out / "maps.png", f"{name} of {len(rows)} representations")
    how = (
        "umap-learn, 15 neighbours, min_dist 0.1, cosine metric"
        if method == "umap"
        else "scikit-learn, perplexity 30"
    )
    return _section(
        "maps",
        "Maps of the representation space",
        text=[
            f"{name} ({how}, on 50 principal components of the unit vectors) of {len(rows)} "
            "randomly chosen galaxies; neighbours on the map are neighbours in "
            "representation space, distances between clumps mean little."
        ],
        figures=[("maps.png", f"The same map, coloured {len(panels)} ways.")],
        metrics={"points": len(rows), "method": method},
    )


#: the representation table's rows: key, what it is, and which way is better
REPRESENTATION_ROWS = (
    ("knn_morph_acc", "kNN morphology accuracy", "higher"),
    ("knn_morph_bacc", "kNN morphology balanced accuracy", "higher"),
    ("knn_sigma_mad", "kNN photo-z sigma_MAD", "lower"),
    ("knn_eta", "kNN photo-z outliers eta (%)", "lower"),
    ("pair_cosine_median", "median cosine of random galaxy pairs", "lower"),
    ("pair_cosine_pooled", "the same, pooled features before the neck", "lower"),
    ("invariance_ratio", "view-to-galaxy / galaxy-to-galaxy distance, all codes", "lower"),
    ("reidentified", "views re-identified among the sample, all codes", "higher"),
)


def representation_section(result: dict, out: Path) -> dict:
    """The trained encoder against its random initialisation (downstream.representation),
    then the per-augmentation invariance of both."""
    trained, untrained = result["trained"], result["random_init"]
    rows = []
    for key, name, better in REPRESENTATION_ROWS:
        if trained.get(key) is None or untrained.get(key) is None:
            continue
        a, b = untrained[key], trained[key]
        rows.append(
            {
                "measure": name,
                "random init": a,
                "trained": b,
                "trained - random": b - a,
                "trained / random": b / a if a else None,
                "better": better,
            }
        )
    section = _section(
        "representation",
        "Did the encoder learn? Trained against random initialisation",
        text=[
            "The same network with the weights it started from (pretraining seeds them) "
            "against the trained weights, on the same galaxies: leave-one-out kNN (k=20, "
            "cosine) morphology and photo-z on labelled galaxies, the median cosine "
            "similarity of random galaxy pairs (near 1: every galaxy in about the same "
            "direction, a collapsed representation), and the invariance check below for "
            "all augmentations together."
        ],
        tables=[("", rows)],
        metrics={
            "trained": _without(trained, "invariance"),
            "random_init": _without(untrained, "invariance"),
        },
    )
    inv = invariance_section(trained["invariance"], out, untrained["invariance"])
    return [section, inv]


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def invariance_section(result: dict, out: Path, random_init: dict | None = None) -> dict:
    """The invariance check's table and bar chart (see downstream.invariance), with the
    random initialisation's ratios beside the trained encoder's when given."""
    rows = []
    for code, r in result["codes"].items():
        row = {
            "augmentation": code,
            "same-galaxy distance": r["same"],
            "ratio to different galaxies": r["ratio"],
            "re-identified": r["reidentified"],
        }
        if random_init and code in random_init["codes"]:
            row["ratio, random init"] = random_init["codes"][code]["ratio"]
            row["re-identified, random init"] = random_init["codes"][code]["reidentified"]
        rows.append(row)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    names = list(result["codes"])
    x = np.arange(len(names))
    width = 0.4 if random_init else 0.8
    ax.bar(x, [result["codes"][c]["ratio"] for c in names], width, color="C0", label="trained")
    if random_init:
        ratios = [random_init["codes"].get(c, {}).get("ratio", np.nan) for c in names]
        ax.bar(x + width, ratios, width, color="0.7", label="random init")
        x = x + width / 2
    ax.set_xticks(x, names)
    ax.axhline(1.0, color="0.4", ls="--", lw=1, label="as far as another galaxy")
    ax.set_ylabel("view-to-own-galaxy / galaxy-to-galaxy")
    ax.legend(fontsize=8)
    save_figure(fig, out / "invariance.png")
    return _section(
        "invariance",
        "Invariance under the augmentations",
        text=[
            f"For {result['n']} galaxies, the cosine distance between each galaxy's centre "
            "crop and one augmented view of it, per augmentation alone and all together, "
            "relative to the mean distance between two different galaxies "
            f"({result['different']:.4f}). 0 = the encoder ignores that transformation; 1 = "
            "the view lands as far away as another galaxy. Re-identified: the fraction of "
            "views whose nearest centre crop is their own galaxy's."
        ],
        tables=[("", rows)],
        figures=[("invariance.png", "Distance ratio per augmentation.")],
        metrics=result,
    )
