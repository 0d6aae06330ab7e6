"""All-vs-all top-k for a whole embedding set, written beside it, shard by shard.

``EMB/neighbours/nn-00000.h5`` holds, for the rows of embedding shard 0: ``object_id``,
``neighbour_id`` (N, k), ``neighbour_row`` (N, k) and ``similarity`` (N, k), the query
itself left out. It is a sharded job (`data.sharded_job`): the directory is claimed for
one embedding set and k (``neighbours/job.json``), each file is written atomically and
recorded, a rerun computes only the missing files, and a table of another k is refused,
never mixed; if the embeddings were remade, their new identity is another job.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ..data.manifest import ShardEntry
from ..data.sharded_job import (
    JOB_FILE,
    ShardPlan,
    claim_dir,
    finished,
    read_claim,
    record,
    remove_temporaries,
)
from ..errors import SslHpcError
from ..utils.atomic import atomic_path, write_json_atomic
from ..utils.h5write import new_h5_file
from ..utils.hashing import sha256_file
from ..utils.progress import progress
from .exact import BLOCK_ROWS, exact_search
from .vectors import ShardVectors

NEIGHBOURS = "neighbours"
QUERY_CHUNK = 2048
JOB = "ssl-hpc search --all"

#: search(queries (Q, D), k, exclude_rows (Q,)) -> (similarities, rows), each (Q, k)
Search = Callable[[np.ndarray, int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def source_of(embeddings) -> dict:
    """What a derived product (an ANN index, the neighbour table) was computed from: the
    set's vectors, named by its shards' sha256s. Not its directory or its manifest file: a
    set moved, or whose manifest a rerun of embed rewrote (its timings), is the same set,
    and a 10^8-row index is hours to rebuild."""
    return {"sha256": embeddings.vectors_sha256()}


def legacy_source_of(embeddings) -> dict:
    """`source_of` as it was until 2026-12-08 (the set's path and manifest.json's sha256):
    indexes and tables built then are kept while that still holds, not rebuilt for hours."""
    manifest = embeddings.root / "manifest.json"
    return {"embeddings": str(embeddings.root.resolve()), "sha256": sha256_file(manifest)}


def all_neighbours(
    embeddings,
    k: int,
    search: Search | None = None,
    block_rows: int = BLOCK_ROWS,
    query_chunk: int = QUERY_CHUNK,
) -> dict:
    """Top-`k` neighbours of every row, one output file per embedding shard (resumable).

    `search`: exact blocked search by default (`Searcher.neighbours` brings an ANN index
    for very large sets). Returns the manifest.
    """
    vectors = ShardVectors(embeddings)
    if not 1 <= k < len(vectors):  # before the directory is claimed for this k
        raise SslHpcError(f"k {k}: expected 1..{len(vectors) - 1} (the set's other objects)")
    out = embeddings.root / NEIGHBOURS
    source = source_of(embeddings)
    identity = {"k": int(k), "embeddings_sha256": source["sha256"]}
    old = read_claim(out)["identity"] if (out / JOB_FILE).exists() else identity
    legacy = legacy_source_of(embeddings)
    if old == {**identity, "embeddings_sha256": legacy["sha256"]}:  # a table from before
        source, identity = legacy, old  # 2026-12-08, of these vectors: resumed as it is
    if old.get("k") != identity["k"]:
        raise SslHpcError(
            f"{out}: holds top-{old.get('k')} neighbours, asked for top-{k}; remove it to recompute"
        )
    if old != identity:  # the embeddings were remade: the old table is of nothing now
        shutil.rmtree(out)
    digest = claim_dir(out, JOB, identity)
    remove_temporaries(out)  # of a killed earlier run: never a finished shard
    if search is None:

        def search(q, kk, exclude):
            return exact_search(vectors, q, kk, exclude, block_rows)

    files = []
    with progress(len(vectors), desc="all-vs-all top-k", unit="obj") as bar:
        for shard, size in enumerate(vectors.sizes):
            plan = ShardPlan(shard, str(out / f"nn-{shard:05d}.h5"), int(size))
            files.append(Path(plan.path).name)
            if finished(plan, digest) is None:
                entry = _write_table(plan, vectors, k, search, query_chunk, bar)
                record(plan, digest, entry, {})
            else:
                bar.update(int(size))
    manifest = {"k": int(k), "source": source, "files": files, "n_rows": len(vectors)}
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _write_table(plan: ShardPlan, vectors, k: int, search: Search, chunk: int, bar) -> ShardEntry:
    """One embedding shard's rows' top k, searched `chunk` queries at a time."""
    size, first = plan.rows, int(vectors.offsets[plan.index])
    ids = vectors.object_id
    sims = np.empty((size, k), np.float32)
    rows = np.empty((size, k), np.int64)
    for a in range(0, size, chunk):
        b = min(a + chunk, size)
        global_rows = np.arange(first + a, first + b)
        sims[a:b], rows[a:b] = search(vectors.take(global_rows), k, global_rows)
        bar.update(b - a)
    with atomic_path(plan.path) as tmp:
        with new_h5_file(tmp) as f:
            f.create_dataset("object_id", data=ids[first : first + size])
            f.create_dataset("neighbour_row", data=rows)
            f.create_dataset("neighbour_id", data=np.where(rows >= 0, ids[rows], -1))
            f.create_dataset("similarity", data=sims)
        entry = ShardEntry.of_file(tmp, size, name=Path(plan.path).name)
    return entry


def load_neighbours(embeddings) -> dict[str, np.ndarray]:
    """The finished all-vs-all table (object_id, neighbour_id, neighbour_row, similarity)."""
    root = embeddings.root / NEIGHBOURS
    mpath = root / "manifest.json"
    if not mpath.exists():
        raise SslHpcError(f"{root}: no neighbour table (run ssl-hpc search --all)")
    manifest = json.loads(mpath.read_text())
    if manifest["source"] not in (source_of(embeddings), legacy_source_of(embeddings)):
        raise SslHpcError(f"{root}: computed from another version of {embeddings.root}")
    parts: dict[str, list] = {}
    for name in manifest["files"]:
        with h5py.File(root / name, "r") as f:
            for key in f:
                parts.setdefault(key, []).append(f[key][()])
    return {key: np.concatenate(v) for key, v in parts.items()}
