"""Approximate nearest neighbours for surveys too large for exact search.

``ivfpq`` (the 10^8 scale): an inverted file of product-quantised codes (FAISS
``IndexIVFPQ``: 32-64 bytes per galaxy instead of 4 x D), searched in `nprobe` of its
`nlist` cells; the `rerank` x k best candidates are then re-scored exactly with vectors
read from the memory-mapped shards, so the similarities returned are exact and recall is
high. ``hnsw``: a graph over the full vectors (FAISS ``IndexHNSWFlat``), faster and more
accurate, but holding every vector in RAM (10^6 x 2048 is 8 GB).

The index is built once, block by block, and cached in ``EMB/index/`` with a JSON sidecar
naming the embedding set it was built from; a changed set is rebuilt, never used stale.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..utils.arrays import normalise
from ..utils.atomic import atomic_path, write_json_atomic
from ..utils.progress import progress

KINDS = ("ivfpq", "hnsw")
#: Parameters of a search, not of the built index: changing them needs no rebuild.
SEARCH_KEYS = ("nprobe", "ef_search", "rerank")


@dataclass(frozen=True)
class AnnConfig:
    """Index parameters; 0 means "chosen from the data size" (see `resolved`)."""

    kind: str = "ivfpq"
    nlist: int = 0  # IVF cells: 0 -> about 4 sqrt(N), within [16, 65536]
    pq_m: int = 0  # PQ sub-vectors: 0 -> the largest divisor of D up to min(64, D / 4)
    pq_bits: int = 8
    # nprobe 128, rerank 50: recall@10 0.988 at 3.5 ms p50 on 10^6 x 512 vectors with the
    # demo encoder's spectrum, where 32 and 10 gave 0.853 (bench/results/ann_recall-1e6x512.json)
    nprobe: int = 128
    rerank: int = 50  # exact re-scoring of rerank x k candidates
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 512  # recall@10 0.97 at 10^6 x 128 in bench/search.py (128: 0.88)
    train_size: int = 100_000  # at least 40 x nlist are used (FAISS's k-means minimum)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"index kind {self.kind!r}: expected one of {KINDS}")
        for name in ("nprobe", "rerank", "hnsw_m", "ef_search", "train_size", "pq_bits"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index {name}={getattr(self, name)}: must be >= 1")

    def resolved(self, n: int, dim: int) -> AnnConfig:
        """This config with the data-dependent defaults filled in for N x `dim` vectors."""
        nlist = self.nlist or int(np.clip(4 * np.sqrt(n), 16, 65536))
        nlist = max(1, min(nlist, n // 39 or 1))  # FAISS wants ~39 training points per cell
        pq_m = self.pq_m or max(m for m in range(1, min(64, max(dim // 4, 1)) + 1) if dim % m == 0)
        if dim % pq_m:
            raise ConfigError(f"index pq_m={pq_m}: must divide the vector dimension {dim}")
        if self.kind == "ivfpq" and n < 2**self.pq_bits:  # FAISS trains that many centroids
            raise ConfigError(
                f"index ivfpq: {n} vectors, fewer than its 2**pq_bits = {2**self.pq_bits} "
                "codebook entries; search a set this small with the exact index (or hnsw)"
            )
        return AnnConfig(**{**asdict(self), "nlist": nlist, "pq_m": pq_m})


class AnnIndex:
    """A built index over `vectors` (ArrayVectors or ShardVectors) and the config it used."""

    def __init__(self, index, config: AnnConfig, vectors) -> None:
        self.index, self.config, self.vectors = index, config, vectors

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors, config: AnnConfig, block_rows: int = 65536) -> AnnIndex:
        """Train on a seeded sample, then add every vector block by block (ids = rows)."""
        import faiss

        n, dim = len(vectors), vectors.dim
        cfg = config.resolved(n, dim)
        if cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
        else:
            quantizer = faiss.IndexFlatL2(dim)
            # L2 on unit vectors ranks exactly as cosine; PQ encodes L2 residuals best.
            index = faiss.IndexIVFPQ(quantizer, dim, cfg.nlist, cfg.pq_m, cfg.pq_bits)
            rng = np.random.default_rng(cfg.seed)
            n_train = min(n, max(cfg.train_size, 40 * cfg.nlist))
            sample = np.sort(rng.choice(n, n_train, replace=False))
            index.cp.seed = cfg.seed  # k-means of the cells, and of the PQ codebooks
            index.pq.cp.seed = cfg.seed
            # FAISS warns once per sub-quantizer (64 identical lines) when a codebook has
            # fewer than 39 points a centroid; one line says it instead
            index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
            advised = 39 * 2**cfg.pq_bits
            if n_train < advised:
                print(
                    f"ivfpq: {n_train} training vectors for {2**cfg.pq_bits}-entry codebooks "
                    f"(FAISS advises {advised}): the shortlist may miss true neighbours; "
                    "what it holds is still re-scored exactly",
                    file=sys.stderr,
                )
            index.train(vectors.take(sample))
        bar = progress(n, desc=f"{cfg.kind} index", unit="vec")
        for _, block in vectors.blocks(block_rows):
            index.add(np.ascontiguousarray(block))
            bar.update(len(block))
        bar.close()
        return cls(index, cfg, vectors)

    # -- searching --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, global rows), each (Q, k); IVF-PQ candidates re-scored exactly."""
        q = normalise(queries)
        cfg = self.config
        if cfg.kind == "hnsw":
            self.index.hnsw.efSearch = max(cfg.ef_search, k)
            return self.index.search(q, k)
        self.index.nprobe = cfg.nprobe
        _, cand = self.index.search(q, min(k * cfg.rerank, self.index.ntotal))
        return rerank(self.vectors, q, cand, k)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path, source: dict, build_seconds: float | None = None) -> dict:
        """Write the index and its sidecar (config, size, `source`: what it was built from)."""
        import faiss

        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        meta = {
            "config": asdict(self.config),
            "ntotal": int(self.index.ntotal),
            "bytes": path.stat().st_size,
            "source": source,
            "build_seconds": build_seconds,
        }
        write_json_atomic(sidecar(path), meta)
        return meta

    @classmethod
    def load(cls, path: Path, vectors, source: dict, legacy: dict | None = None) -> AnnIndex | None:
        """The index at `path` if it was built from `source` (or, by an older version, from
        `legacy`) with these vectors, else None."""
        import faiss

        side = sidecar(path)
        if not (path.exists() and side.exists()):
            return None
        meta = json.loads(side.read_text())
        if meta.get("source") not in (source, legacy) or meta.get("ntotal") != len(vectors):
            return None
        return cls(faiss.read_index(str(path)), AnnConfig(**meta["config"]), vectors)


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def rerank(vectors, queries: np.ndarray, candidates: np.ndarray, k: int):
    """Exact similarities of each query's candidate rows (-1: none); the best `k`."""
    flat = np.unique(candidates[candidates >= 0])
    vecs = vectors.take(flat)
    pos = np.searchsorted(flat, np.where(candidates >= 0, candidates, flat[0] if len(flat) else 0))
    sims = np.einsum("qd,qcd->qc", queries, vecs[pos]) if len(flat) else np.zeros(candidates.shape)
    sims = np.where(candidates >= 0, sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(candidates, order, 1)


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Mean fraction of each query's exact top k that the approximate top k found."""
    k = exact_rows.shape[1]
    hits = [len(np.intersect1d(a[:k], e)) for a, e in zip(approx_rows, exact_rows)]
    return float(np.mean(hits) / k)


def build_or_load(
    vectors, root: Path, config: AnnConfig, source: dict, legacy: dict | None = None
) -> tuple[AnnIndex, dict]:
    """The cached index in `root` for `config.kind` if still valid (built from `source`, or
    from `legacy` by an older version: its record is brought up to date), else a new one
    (saved). Returns (index, info with build_seconds, bytes, and whether it was cached)."""
    path = root / f"{config.kind}.faiss"
    cached = AnnIndex.load(path, vectors, source, legacy)
    if cached is not None and _same_request(cached.config, config):
        meta = json.loads(sidecar(path).read_text())
        if meta["source"] != source:
            meta["source"] = source
            write_json_atomic(sidecar(path), meta)
        cached.config = replace(cached.config, **{k: getattr(config, k) for k in SEARCH_KEYS})
        return cached, {**meta, "cached": True}
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index = AnnIndex.build(vectors, config)
    seconds = time.perf_counter() - t0
    meta = index.save(path, source, build_seconds=seconds)
    return index, {**meta, "cached": False}


def _same_request(built: AnnConfig, asked: AnnConfig) -> bool:
    """Whether an index built as `built` answers a request for `asked` (zeros: defaults)."""
    b, a = asdict(built), asdict(asked)
    return all(a[key] in (0, b[key]) for key in a if key not in SEARCH_KEYS)
