"""All-vs-all top-k for a whole embedding set, written beside it, chunk by chunk.

``EMB/neighbours/nn-00000.h5`` holds, for the rows of embedding shard 0: ``object_id``,
``neighbour_id`` (N, k), ``neighbour_row`` (N, k) and ``similarity`` (N, k), the query
itself left out. Each file is written under a temporary name, renamed, then recorded in a
``.done`` JSON naming the embedding set and k; a rerun skips recorded files and computes
the rest, and a table of another k or another embedding set is refused, never mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import SslHpcError
from ..utils.atomic import atomic_path, write_json_atomic
from ..utils.hashing import sha256_file
from ..utils.progress import progress
from .exact import BLOCK_ROWS, exact_search
from .vectors import ShardVectors

NEIGHBOURS = "neighbours"
QUERY_CHUNK = 2048


def source_of(embeddings) -> dict:
    """What a derived product was computed from: the embedding set's manifest hash."""
    manifest = embeddings.root / "manifest.json"
    return {"embeddings": str(embeddings.root.resolve()), "sha256": sha256_file(manifest)}


def all_neighbours(
    embeddings, k: int, search=None, block_rows: int = BLOCK_ROWS, query_chunk: int = QUERY_CHUNK
) -> dict:
    """Top-`k` neighbours of every row, one output file per embedding shard (resumable).

    `search(queries, k, exclude_rows)` -> (similarities, rows): exact blocked search by
    default; an ANN index's search can be passed for very large sets. Returns the manifest.
    """
    vectors = ShardVectors(embeddings)
    out = embeddings.root / NEIGHBOURS
    out.mkdir(exist_ok=True)
    request = {"k": int(k), "source": source_of(embeddings)}
    if search is None:

        def search(q, kk, exclude):
            return exact_search(vectors, q, kk, exclude, block_rows)

    ids = vectors.object_id
    files = []
    bar = progress(len(vectors), desc="all-vs-all top-k", unit="obj")
    for shard, size in enumerate(vectors.sizes):
        path = out / f"nn-{shard:05d}.h5"
        files.append(path.name)
        if _finished(path, request):
            bar.update(int(size))
            continue
        first = int(vectors.offsets[shard])
        sims = np.empty((size, k), np.float32)
        rows = np.empty((size, k), np.int64)
        for a in range(0, int(size), query_chunk):
            b = min(a + query_chunk, int(size))
            global_rows = np.arange(first + a, first + b)
            s, r = search(vectors.take(global_rows), k, global_rows)
            sims[a:b], rows[a:b] = s, r
            bar.update(b - a)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("object_id", data=ids[first : first + size])
            f.create_dataset("neighbour_row", data=rows)
            f.create_dataset("neighbour_id", data=np.where(rows >= 0, ids[rows], -1))
            f.create_dataset("similarity", data=sims)
        write_json_atomic(_done(path), {**request, "rows": int(size)})
    bar.close()
    manifest = {**request, "files": files, "n_rows": len(vectors)}
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def load_neighbours(embeddings) -> dict[str, np.ndarray]:
    """The finished all-vs-all table (object_id, neighbour_id, neighbour_row, similarity)."""
    root = embeddings.root / NEIGHBOURS
    mpath = root / "manifest.json"
    if not mpath.exists():
        raise SslHpcError(f"{root}: no neighbour table (run ssl-hpc search --all)")
    manifest = json.loads(mpath.read_text())
    if manifest["source"] != source_of(embeddings):
        raise SslHpcError(f"{root}: computed from another version of {embeddings.root}")
    parts: dict[str, list] = {}
    for name in manifest["files"]:
        with h5py.File(root / name, "r") as f:
            for key in f:
                parts.setdefault(key, []).append(f[key][()])
    return {key: np.concatenate(v) for key, v in parts.items()}


def _done(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _finished(path: Path, request: dict) -> bool:
    """Whether `path` is a finished table for `request`; refuses one made for another."""
    done = _done(path)
    if not (path.exists() and done.exists()):
        return False
    record = json.loads(done.read_text())
    if record.get("source") != request["source"]:
        return False  # the embeddings were remade: recompute
    if record.get("k") != request["k"]:
        raise SslHpcError(
            f"{path}: holds top-{record.get('k')} neighbours, asked for top-{request['k']}; "
            f"remove {path.parent} to recompute"
        )
    return True
