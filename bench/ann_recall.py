"""IVF-PQ recall@10 and single-query latency on an embedding set, over nprobe x rerank.

The server's own path: `Searcher` (exact, then the cached IVF-PQ index with each knob
setting; knobs need no rebuild), queries by object id, the query itself left out. Truth is
the exact top-10 of the same queries. Also reports the set's spectrum (participation
ratio of the covariance eigenvalues, median cosine similarity on a 4,096 sample): ANN
recall depends on it far more than on N.

usage: python bench/ann_recall.py --embeddings runs/emb-1e6 [--queries 200]
                                  [--nprobe 16,32,64,128,256] [--rerank 10,20,50]
                                  [--out bench/results/ann_recall.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from harness import machine_info, write_results

from ssl_hpc.embed import load
from ssl_hpc.search.ann import AnnConfig
from ssl_hpc.search.searcher import Searcher, survey_of
from ssl_hpc.utils.arrays import normalise

K = 10


def spectrum(vectors, sample: int = 4096, seed: int = 0) -> dict:
    """Participation ratio and median pairwise cosine similarity of a sample of `vectors`
    (ArrayVectors or ShardVectors)."""
    pick = np.random.default_rng(seed).choice(len(vectors), min(sample, len(vectors)), False)
    x = normalise(vectors.take(np.sort(pick)))
    ev = np.linalg.eigvalsh(np.cov((x - x.mean(0)).T))
    sim = x @ x.T
    off = sim[~np.eye(len(x), dtype=bool)]
    return {
        "participation_ratio": float(ev.sum() ** 2 / (ev**2).sum()),
        "median_cosine": float(np.median(off)),
    }


def run_queries(searcher: Searcher, ids: np.ndarray) -> tuple[list[set], np.ndarray]:
    """Top-K row sets and per-query seconds for each object id."""
    rows, seconds = [], []
    for i in ids:
        q = searcher.by_id(int(i))
        t0 = time.perf_counter()
        _, r = searcher.search(q, K)
        seconds.append(time.perf_counter() - t0)
        rows.append(set(r.tolist()))
    return rows, np.array(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embeddings", required=True)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nprobe", default="16,32,64,128,256")
    p.add_argument("--rerank", default="10,20,50")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench/results/ann_recall.json")
    args = p.parse_args()
    es = load(args.embeddings)
    survey = survey_of(es, None)
    exact = Searcher(es, survey, "exact")
    all_ids = exact.catalogue.columns["object_id"]
    ids = np.random.default_rng(args.seed).choice(all_ids, args.queries, replace=False)
    truth, exact_s = run_queries(exact, ids)
    results = {
        "machine": machine_info(),
        "embeddings": str(es.root),
        "objects": len(all_ids),
        "dim": es.dim,
        "queries": len(ids),
        "spectrum": spectrum(exact.vectors),
        "exact_latency_ms_p50": float(1e3 * np.median(exact_s)),
        "ivfpq": [],
    }
    for nprobe in [int(v) for v in args.nprobe.split(",")]:
        for rerank in [int(v) for v in args.rerank.split(",")]:
            cfg = AnnConfig(kind="ivfpq", nprobe=nprobe, rerank=rerank)
            searcher = Searcher(es, survey, "ivfpq", ann=cfg)
            found, s = run_queries(searcher, ids)
            row = {
                "nprobe": nprobe,
                "rerank": rerank,
                "recall_at_10": sum(len(a & b) for a, b in zip(truth, found)) / (K * len(ids)),
                "latency_ms_p50": float(1e3 * np.median(s)),
                "latency_ms_p99": float(1e3 * np.percentile(s, 99)),
                "nlist": searcher.ann.config.nlist,
                "pq_m": searcher.ann.config.pq_m,
                "index_bytes": searcher.index_info.get("bytes"),
                "build_seconds": searcher.index_info.get("build_seconds"),
            }
            results["ivfpq"].append(row)
            print(
                f"nprobe {nprobe:4d} rerank {rerank:3d}  recall@10 {row['recall_at_10']:.3f}  "
                f"p50 {row['latency_ms_p50']:.2f} ms  p99 {row['latency_ms_p99']:.2f} ms"
            )
    print(write_results(results, args.out))


if __name__ == "__main__":
    main()
