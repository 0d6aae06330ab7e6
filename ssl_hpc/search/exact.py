"""Exact cosine-similarity top-k, blocked over the database so memory stays bounded.

Each block of database rows goes through FAISS's brute-force inner-product search (the
kernel behind ``IndexFlatIP``, called as ``faiss.knn`` so the block is not copied into an
index first) and its top k are merged into the running top k: memory is one block plus
(queries x k), so a 10^7 x 2048 set is searched with a few hundred MB whatever its size.
"""

from __future__ import annotations

import numpy as np

from ..utils.arrays import normalise

#: Database rows per block: 32768 x 2048 float32 = 256 MB.
BLOCK_ROWS = 32768


def merge_topk(
    scores: np.ndarray, rows: np.ndarray, new_scores: np.ndarray, new_rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` per query of two candidate lists, sorted by score, descending."""
    s = np.concatenate([scores, new_scores], axis=1)
    r = np.concatenate([rows, new_rows], axis=1)
    if s.shape[1] > k:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        s, r = np.take_along_axis(s, part, 1), np.take_along_axis(r, part, 1)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(s, order, 1), np.take_along_axis(r, order, 1)


def block_topk(queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` inner products of normalised `queries` against one normalised `block`
    (exact, FAISS); rows are block-local, -1 where the block has fewer than k."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    b = np.ascontiguousarray(block, dtype=np.float32)
    return faiss.knn(q, b, k, metric=faiss.METRIC_INNER_PRODUCT)


def exact_search(
    vectors,
    queries: np.ndarray,
    k: int,
    exclude_rows: np.ndarray | None = None,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, global rows), each (Q, k), of the `k` most similar database rows.

    `vectors`: ArrayVectors or ShardVectors (normalised blocks); `queries`: (Q, D), normalised
    here. `exclude_rows`: per query, one global row to leave out (the query itself in an
    all-vs-all search), or -1.
    """
    q = normalise(queries)
    if q.shape[1] != vectors.dim:
        raise ValueError(f"queries have {q.shape[1]} dims, the vectors {vectors.dim}")
    extra = 1 if exclude_rows is not None else 0
    kk = min(k + extra, len(vectors))
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_r = np.full((len(q), 0), -1, np.int64)
    for start, block in vectors.blocks(block_rows):
        s, r = block_topk(q, block, min(kk, len(block)))
        r = np.where(r >= 0, r + start, -1)
        s = np.where(r >= 0, s, -np.inf)
        best_s, best_r = merge_topk(best_s, best_r, s, r, kk)
    if exclude_rows is not None:
        return drop_excluded(best_s, best_r, exclude_rows, k)
    return best_s[:, :k], best_r[:, :k]


def drop_excluded(
    sims: np.ndarray, rows: np.ndarray, exclude_rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `k` of (Q, >= k + 1) results in descending order, its own row
    (`exclude_rows`, -1 for none) left out: the one way a query is kept out of its own
    neighbours, for exact and approximate search alike."""
    drop = rows == np.asarray(exclude_rows)[:, None]
    sims = np.where(drop, -np.inf, sims)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(rows, order, 1)
