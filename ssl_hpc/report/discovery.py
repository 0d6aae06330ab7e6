"""The report's sections on finding things: similarity search, anomalies, trust, maps."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..data.captions import captions
from ..data.labels import GZ1_CLASS_NAMES, spec_z
from ..data.survey import Survey
from ..downstream.anomaly import VIEWS, detection_by_view, score_views
from ..downstream.tasks import PHOTOZ, tasks_of
from ..downstream.trust import photoz_trust
from ..errors import ConfigError
from ..metrics import OUTLIER_DZ
from ..search.query import Query, save_result_grid
from ..search.searcher import Searcher
from ..utils.atomic import atomic_path
from ..viz.grid import save_cutout_grid
from ..viz.maps import MAP_NAMES, embedding_map, plot_maps
from ..viz.science import plot_error_by_trust
from .files import ANOMALIES, TRUST
from .section import Section, truth


def _example_queries(survey: Survey, n: int, seed: int) -> list[int]:
    """`n` rows to search from: one from each of the first n-1 true morphology classes
    (synthetic surveys) and one anomaly, random rows for the rest; seeded."""
    rng = np.random.default_rng(seed)
    morph, kind = truth(survey, "morph_class"), truth(survey, "anomaly_kind")
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


def search_examples(searcher: Searcher, out: Path, k: int, n: int, seed: int) -> Section:
    """Similarity search from a few galaxies: the query and its k nearest."""
    section = Section("search", "Similarity search")
    section.text.append(
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
        section.figures.append((name, f"Query {ids[row]} and its {k} nearest."))
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
    section.tables.append(("queries", summary))
    section.metrics = {"queries": summary}
    return section


#: CSV column prefix of each view
VIEW_COLUMNS = {
    "galaxy": "score",
    "field": "score_field",
    "galaxy+field": "score_both",
    "texture": "score_texture",
}


def anomalies(
    vectors: np.ndarray,
    field: np.ndarray | None,
    survey: Survey,
    out: Path,
    k: int,
    n_show: int,
    seed: int,
    texture: np.ndarray | None = None,
) -> tuple[Section, np.ndarray]:
    """Anomaly scores on each view, their detection of injected anomalies (per kind), and
    the most anomalous; returns (section, the ranking score of every object)."""
    scores, rank_by = score_views(vectors, field, k, seed, texture)
    views = sorted({v for v, _ in scores}, key=list(VIEWS).index)
    section = Section("anomalies", "Anomaly detection")
    section.text.append(
        f"Scores, higher = more unusual: knn = mean cosine distance to the {k} nearest "
        "galaxies; gmm = negative log-likelihood under an 8-component Gaussian mixture on "
        "16 whitened principal components; iforest = isolation forest on the same. Each "
        "on " + "; ".join(f"{v}: {VIEWS[v]}" for v in views) + ". "
        f"Galaxies are ranked by {rank_by[1]} on {rank_by[0]}; every score of every object "
        "is in anomalies.csv."
    )
    section.metrics = {"rank_by": "/".join(rank_by)}
    flags, kind = truth(survey, "is_anomaly"), truth(survey, "anomaly_kind")
    if flags is not None and 0 < (flags > 0).sum() < len(flags):
        names = survey.manifest.generator.get("anomaly_kinds", [])
        kinds = {names[i]: kind == i for i in range(1, len(names))} if kind is not None else {}
        detection = detection_by_view(scores, flags > 0, kinds)
        best = detection.pop("best_by_kind")
        rows = []
        for key, d in detection.items():
            view, method = key.split("/")
            row = {"view": view, "method": method, "ROC AUC": d["roc_auc"]}
            row["avg precision"] = d["average_precision"]
            row.update({f"P@{kk}": v for kk, v in d["precision_at"].items()})
            row.update({f"AUC {n}": v["roc_auc"] for n, v in d["by_kind"].items()})
            rows.append(row)
        section.metrics.update(detection, best_by_kind=best)
        section.text.append(
            f"Against the synthetic survey's {int((flags > 0).sum())} injected anomalies "
            f"(base rate {np.mean(flags > 0):.3f}; a random ranking has ROC AUC 0.5 and "
            "precision at k equal to the base rate). Best score per kind, with the 90% "
            "bootstrap interval of its AUC (a kind with few members is measured loosely, "
            "and the best of several scores is an optimistic pick): "
            + ", ".join(
                f"{n} {b['roc_auc']:.3f} ({b['roc_auc_90'][0]:.2f}-{b['roc_auc_90'][1]:.2f}, "
                f"n = {b['n']}; {b['score']})"
                for n, b in best.items()
            )
            + "."
        )
        section.tables.append(("detection of injected anomalies", rows))
    ranking = scores[rank_by]
    order = np.argsort(-ranking, kind="stable")
    _write_ranking(out / ANOMALIES, survey.column("object_id"), order, ranking, scores)
    top = order[:n_show]
    what = f"{rank_by[1]} on {rank_by[0]}"
    save_cutout_grid(
        survey.images(top),
        survey.bands,
        [f"#{i + 1} {c}" for i, c in enumerate(captions(survey, top))],
        out / "anomalies.png",
        ncols=8,
        title=f"The {len(top)} most anomalous by {what}",
        display_values=survey.manifest.flux_unit.startswith("display"),
    )
    section.figures.append(("anomalies.png", f"The most anomalous galaxies ({what})."))
    return section, ranking


def _write_ranking(path: Path, ids, order, ranking, scores: dict) -> None:
    """anomalies.csv: rank, object_id, the ranking score, then every (view, method)."""
    columns = [f"{VIEW_COLUMNS[v]}_{m}" for v, m in scores]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "object_id", "score", *columns])
        for rank, row in enumerate(order):
            values = [f"{ranking[row]:.6g}", *[f"{x[row]:.6g}" for x in scores.values()]]
            w.writerow([rank + 1, int(ids[row]), *values])


def trust(vectors: np.ndarray, survey: Survey, out: Path, k: int, seed: int):
    """Distance to the labelled set, and photo-z error as that distance grows: (section,
    every object's trust score); without enough redshifts, a section that says why and no
    scores."""
    skipped = Section("trust", "Trust: how far from the labels")
    if PHOTOZ not in tasks_of(survey):
        skipped.text.append(
            "Skipped: the survey has no spectroscopic redshifts (z_spec), and trust is read "
            "as photo-z error against distance to the labelled set."
        )
        return skipped, None
    try:
        result = photoz_trust(vectors, survey, k, seed)
    except ConfigError as e:  # too few redshifts: the rest of the report still stands
        skipped.text.append(f"Skipped: {e}.")
        return skipped, None
    scores, binned, what = result["scores"], result["binned"], result["judged"]
    with atomic_path(out / TRUST) as tmp, open(tmp, "wb") as f:
        np.savez(f, object_id=survey.column("object_id"), labelled=result["labelled"], **scores)
    section = Section("trust", "Trust: how far from the labels")
    section.text.append(
        f"For every galaxy: the mean cosine distance to its {k} nearest labelled galaxies "
        "(the 70% of the spectroscopic sample that trained the photo-z head), a density "
        "ratio (distance to the k nearest of all galaxies over that), and trust, calibrated "
        "on the labelled set itself: the fraction of labelled galaxies at least as far from "
        "the other labels (1 = as close as a typical labelled galaxy, 0 = farther than all). "
        f"Scores for all objects: trust.npz. Photo-z errors |dz| of {what}, by trust "
        f"quintile; Spearman rho(trust, |dz|) = {binned['spearman_rho']:.3f} "
        f"(p = {binned['spearman_p']:.2g}): negative means error grows as trust falls."
    )
    section.tables.append(("photo-z error by trust quintile (lowest first)", binned["bins"]))
    plot_error_by_trust(binned["bins"], OUTLIER_DZ, out / "trust.png")
    section.figures.append(("trust.png", "Photo-z error by trust quintile."))
    section.metrics = {
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
) -> Section:
    """A UMAP (or t-SNE) map of the representations coloured by redshift, class, labels,
    anomaly score and trust."""
    rows, coords = embedding_map(vectors, n, seed, method)
    panels = _map_panels(survey, rows, anomaly, trust)
    name = MAP_NAMES[method]
    plot_maps(coords, panels, out / "maps.png", f"{name} of {len(rows)} representations")
    how = (
        "umap-learn, 15 neighbours, min_dist 0.1, cosine metric"
        if method == "umap"
        else "scikit-learn, perplexity 30"
    )
    return Section(
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


def _map_panels(
    survey: Survey, rows: np.ndarray, anomaly: np.ndarray, trust: np.ndarray | None
) -> list[dict]:
    """The map's colourings (`viz.maps.plot_maps` panels) that this survey's columns and
    the scores allow, for the mapped `rows`."""
    panels = []
    z = spec_z(survey) if "z_spec" in survey.manifest.columns else None  # no placeholders
    if z is not None:
        panels.append(
            {
                "title": "spectroscopic redshift",
                "values": z[rows],
                "kind": "continuous",
                "label": "z_spec",
            }
        )
    morph = truth(survey, "morph_class")
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
    return panels
