"""Similarity-search speed: our blocked exact search vs FAISS IndexFlatIP vs scikit-learn
NearestNeighbors, and the ANN indexes (IVF-PQ re-ranked, HNSW) at larger N.

Vectors are clumped like representations (300 Gaussian clumps in D dims, scatter 1.2 x
the spread of their centres; the recall test's regime) and L2-normalised; queries are
fresh draws from the same clumps. Exact: batch throughput (queries/s for --batch queries
at once) and single-query latency (p50/p99 over --singles queries) for top-10 cosine.
ANN: build seconds, index bytes, throughput, latency and recall@10 against exact, for a
few nprobe (IVF-PQ) and efSearch (HNSW) values.

usage: python bench/search.py [--exact 100000x128,100000x2048,1000000x128]
                              [--ann 1000000x128] [--kinds ivfpq,hnsw]
                              [--out bench/results/search.json]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from harness import machine_info, write_results
from sklearn.neighbors import NearestNeighbors

from ssl_hpc.search.ann import AnnConfig, AnnIndex, recall_at_k
from ssl_hpc.search.exact import exact_search
from ssl_hpc.search.vectors import ArrayVectors, normalise

K = 10


def clumped(n: int, dim: int, seed: int, centres: int = 300, chunk: int = 200_000):
    """(n, dim) unit vectors in clumps, generated in chunks (10^7 x 128 fits in 5 GB)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        x = c[rng.integers(0, centres, b - a)] + 1.2 * rng.normal(size=(b - a, dim))
        out[a:b] = normalise(x)
    return out


def timed(fn, queries: np.ndarray, batch: int, singles: int) -> dict:
    """Batch queries/s, and single-query latency percentiles (ms)."""
    fn(queries[:2])  # warm-up (thread pools, first allocation)
    t0 = time.perf_counter()
    fn(queries[:batch])
    batch_s = time.perf_counter() - t0
    lat = []
    for i in range(singles):
        t0 = time.perf_counter()
        fn(queries[batch + i : batch + i + 1])
        lat.append(1000 * (time.perf_counter() - t0))
    return {
        "batch_queries": batch,
        "batch_queries_per_s": batch / batch_s,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
    }


def bench_exact(n: int, dim: int, batch: int, singles: int) -> dict:
    db = clumped(n + batch + singles, dim, seed=0)
    queries, db = db[n:], db[:n]
    ours = ArrayVectors(db)  # normalises again: already unit vectors, a copy
    flat = faiss.IndexFlatIP(dim)
    flat.add(db)
    nn = NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute").fit(db)
    results = {
        "ssl_hpc_exact_blocked": timed(lambda q: exact_search(ours, q, K), queries, batch, singles),
        "faiss_IndexFlatIP": timed(lambda q: flat.search(q, K), queries, batch, singles),
        "sklearn_NearestNeighbors_brute_cosine": timed(
            lambda q: nn.kneighbors(q, K), queries, batch, singles
        ),
    }
    _, a = exact_search(ours, queries[:50], K)
    _, b = flat.search(queries[:50], K)
    _, c = nn.kneighbors(queries[:50], K)
    results["agree_with_faiss"] = recall_at_k(a, b)
    results["sklearn_agree_with_faiss"] = recall_at_k(c, b)
    base = results["faiss_IndexFlatIP"]["batch_queries_per_s"]
    for name in ("ssl_hpc_exact_blocked", "sklearn_NearestNeighbors_brute_cosine"):
        results[name]["batch_speed_vs_faiss"] = results[name]["batch_queries_per_s"] / base
    return {"n": n, "dim": dim, "database_bytes": db.nbytes, **results}


def bench_ann(
    n: int,
    dim: int,
    batch: int,
    singles: int,
    nprobes: list[int],
    efs: list[int],
    kinds: list[str],
) -> dict:
    db = clumped(n + batch + singles, dim, seed=1)
    queries, db = db[n:], db[:n]
    vectors = ArrayVectors.__new__(ArrayVectors)  # already unit vectors: no copy
    vectors.vectors, vectors.object_id = db, np.arange(n)
    flat = faiss.IndexFlatIP(dim)
    flat.add(db)
    _, truth = flat.search(queries[:batch], K)
    out = {"n": n, "dim": dim, "database_bytes": db.nbytes, "indexes": []}
    for kind in kinds:
        t0 = time.perf_counter()
        index = AnnIndex.build(vectors, AnnConfig(kind=kind))
        build_s = time.perf_counter() - t0
        size = int(faiss.serialize_index(index.index).size)
        key = "nprobe" if kind == "ivfpq" else "ef_search"
        for knob in nprobes if kind == "ivfpq" else efs:
            index.config = AnnConfig(**{**index.config.__dict__, key: knob})
            speed = timed(lambda q, ix=index: ix.search(q, K), queries, batch, singles)
            _, rows = index.search(queries[:batch], K)
            out["indexes"].append(
                {
                    "kind": kind,
                    "nlist": index.config.nlist if kind == "ivfpq" else None,
                    "pq_m": index.config.pq_m if kind == "ivfpq" else None,
                    key: knob,
                    "rerank": index.config.rerank if kind == "ivfpq" else None,
                    "build_s": build_s,
                    "index_bytes": size,
                    "bytes_per_vector": size / n,
                    "recall_at_10": recall_at_k(rows, truth),
                    **speed,
                }
            )
            print(out["indexes"][-1], flush=True)
    return out


def sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exact", default="100000x128,100000x2048,1000000x128")
    p.add_argument("--ann", default="1000000x128")
    p.add_argument("--nprobe", default="16,32,64")
    p.add_argument("--ef", default="128,256,512", help="HNSW efSearch values")
    p.add_argument("--kinds", default="ivfpq,hnsw", help="ANN indexes to build")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--singles", type=int, default=50)
    p.add_argument("--out", default="bench/results/search.json")
    args = p.parse_args()
    results = {
        "machine": machine_info(),
        "faiss": faiss.__version__,
        "k": K,
        "exact": [],
        "ann": [],
    }
    results["machine"]["faiss_threads"] = faiss.omp_get_max_threads()
    for n, dim in sizes(args.exact):
        results["exact"].append(bench_exact(n, dim, args.batch, args.singles))
        print(results["exact"][-1], flush=True)
    for n, dim in sizes(args.ann):
        nprobes = [int(v) for v in args.nprobe.split(",")]
        efs = [int(v) for v in args.ef.split(",")]
        results["ann"].append(
            bench_ann(n, dim, args.batch, args.singles, nprobes, efs, args.kinds.split(","))
        )
    print(write_results(results, args.out))


if __name__ == "__main__":
    main()
