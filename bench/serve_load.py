"""Load on the similarity-search server over loopback: requests/s and latency percentiles.

Starts the real app (uvicorn, 127.0.0.1, a free port) on an embedding set in this process,
then runs a bounded loop: --requests requests per endpoint from --clients threads, each
with its own HTTP connection. Endpoints: /api/search (k=12, random objects), the cutout
PNG (first render, then the cached one) and /api/search.csv. Nothing leaves the machine.

usage: python bench/serve_load.py [--embeddings runs/demo/embeddings] [--index exact]
                                  [--requests 400] [--clients 4]
                                  [--out bench/results/serve_load.json]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import uvicorn
from harness import machine_info, write_results

from ssl_hpc.embed import load
from ssl_hpc.search.searcher import Searcher, survey_of
from ssl_hpc.serve.app import create_app
from ssl_hpc.serve.state import ServeState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hammer(base: str, paths: list[str], clients: int, token: str) -> dict:
    """GET every path (split over `clients` threads, `token` in the Authorization header,
    as the server asks by default); requests/s and latency (ms)."""
    local = threading.local()

    def one(path: str) -> tuple[float, int]:
        if not hasattr(local, "client"):
            auth = {"Authorization": f"token {token}"}
            local.client = httpx.Client(base_url=base, timeout=60, headers=auth)
        t0 = time.perf_counter()
        code = local.client.get(path).status_code
        return 1000 * (time.perf_counter() - t0), code

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(one, paths))
    wall = time.perf_counter() - t0
    lat = np.array([d[0] for d in done])
    return {
        "requests": len(paths),
        "clients": clients,
        "errors": int(sum(d[1] != 200 for d in done)),
        "requests_per_s": len(paths) / wall,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p90": float(np.percentile(lat, 90)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embeddings", default="runs/demo/embeddings")
    p.add_argument("--index", default="exact", choices=("exact", "ivfpq", "hnsw"))
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--out", default="bench/results/serve_load.json")
    args = p.parse_args()
    es = load(args.embeddings)
    state = ServeState(Searcher(es, survey_of(es, None), args.index))
    port = free_port()
    token = secrets.token_urlsafe(24)
    app = create_app(state, token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port}"
    ids = state.searcher.catalogue.columns["object_id"]
    rng = np.random.default_rng(0)
    pick = rng.choice(ids, args.requests, replace=len(ids) < args.requests)
    results = {
        "machine": machine_info(),
        "embeddings": str(es.root),
        "objects": len(ids),
        "dim": es.dim,
        "index": args.index,
        "endpoints": {
            name: hammer(base, [path.format(i) for i in pick], args.clients, token)
            for name, path in (
                ("search_k12", "/api/search?object_id={}&k=12"),
                ("image_first", "/api/image/{}.png"),
                ("image_cached", "/api/image/{}.png"),
                ("csv_k12", "/api/search.csv?object_id={}&k=12"),
            )
        },
    }
    server.should_exit = True
    for name, r in results["endpoints"].items():
        print(
            f"{name:13s} {r['requests_per_s']:8.1f} req/s  p50 {r['latency_ms_p50']:7.2f} ms  "
            f"p99 {r['latency_ms_p99']:7.2f} ms  errors {r['errors']}"
        )
    print(write_results(results, args.out))


if __name__ == "__main__":
    main()
