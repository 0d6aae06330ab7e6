"""Two-dimensional maps of the representation space, coloured by what is known.

UMAP (McInnes et al. 2018; the maps of the self-supervised survey papers) by default, or
t-SNE. Vectors are L2-normalised and reduced to 50 principal components first (the usual
recipe: faster, and less noise), on a seeded sample of at most `max_points`; UMAP uses the
cosine metric, as the search does, on neighbours found exactly here (under 4,096 points
umap-learn would compare every pair through a Python call each: the whole map of the
demo's 4,000 vectors took 17 s that way, 8 s this way). Both are deterministic for a given
seed (UMAP then runs single-threaded: its parallel layout is not reproducible).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..utils.arrays import normalise
from .figures import pyplot, save_figure

MAP_METHODS = ("umap", "tsne")
#: how each method is named in titles and captions
MAP_NAMES = {"umap": "UMAP", "tsne": "t-SNE"}


def cosine_neighbours(x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (n, k): every row's `k` nearest rows of `x` by cosine
    distance (1 - cosine similarity), nearest first, the row itself first of all (UMAP
    reads the first non-zero distance as the local scale). The search's exact top-k
    (`search.exact`) does the same over shards with FAISS; viz imports no science layer."""
    unit = normalise(np.asarray(x, np.float64))
    n = len(unit)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = np.inf  # itself, first
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, nearest, axis=1), axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(nearest, order, axis=1)
        distances[start:stop] = 1.0 - np.take_along_axis(sims, indices[start:stop], axis=1)
    distances[:, 0] = 0.0
    return indices, np.clip(distances, 0.0, None)


def embedding_map(
    vectors: np.ndarray,
    max_points: int = 5000,
    seed: int = 0,
    method: str = "umap",
    neighbours: int = 15,
    perplexity: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, (n, 2) coordinates): a 2-D map of a seeded sample of `vectors`' rows by
    `method` ("umap": `neighbours` nearest, min_dist 0.1, cosine; "tsne": `perplexity`)."""
    from sklearn.decomposition import PCA

    if method not in MAP_METHODS:
        raise ValueError(f"map method {method!r}: expected one of {MAP_METHODS}")
    n = len(vectors)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, max_points), replace=False))
    x = normalise(vectors[rows])
    x = PCA(n_components=min(50, x.shape[1], len(x) - 1), random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(
            n_components=2,
            perplexity=min(perplexity, (len(x) - 1) / 3),
            init="pca",
            random_state=seed,
        )
        return rows, tsne.fit_transform(x)
    import umap  # lazy: pulls in numba, compiled on first use

    k = min(neighbours, len(x) - 1)
    reducer = umap.UMAP(
        n_neighbors=k,
        min_dist=0.1,
        metric="cosine",
        precomputed_knn=cosine_neighbours(x, k),
        random_state=seed,  # also makes it single-threaded: reproducible
        n_jobs=1,
    )
    with warnings.catch_warnings():  # that new points cannot be placed: none are
        warnings.filterwarnings("ignore", "precomputed_knn", UserWarning)
        return rows, np.asarray(reducer.fit_transform(x), np.float64)


def plot_maps(coords: np.ndarray, panels: list[dict], path: str | os.PathLike, title: str = ""):
    """One scatter panel per entry of `panels`: {"title", "values" (n,), "kind":
    "continuous" or "categorical" (codes into "names"); NaN, or a code with no name,
    drawn grey, underneath}."""
    plt = pyplot()
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        values = np.asarray(panel["values"])
        ax.set_title(panel["title"], fontsize=10)
        if panel["kind"] == "categorical":
            names = panel["names"]
            cmap = plt.get_cmap("tab10")
            values = values.astype(np.float64)
            known = np.isfinite(values) & (values >= 0) & (values < len(names))
            if not known.all():  # unlabelled (NaN) or a code without a name: grey, below
                ax.scatter(*coords[~known].T, s=2, color="0.85", label="unknown")
            for code in np.unique(values[known]):
                sel = values == code
                ax.scatter(*coords[sel].T, s=3, color=cmap(int(code) % 10), label=names[int(code)])
            ax.legend(fontsize=7, markerscale=3, loc="best", frameon=False)
        else:
            known = np.isfinite(values)
            ax.scatter(*coords[~known].T, s=2, color="0.85", label="unknown")
            order = np.flatnonzero(known)[np.argsort(values[known])]  # high values on top
            sc = ax.scatter(
                *coords[order].T, s=3, c=values[order], cmap=panel.get("cmap", "viridis")
            )
            fig.colorbar(sc, ax=ax, shrink=0.8, label=panel.get("label", ""))
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)
