"""Load on the similarity-search server over loopback: mixed traffic from 1, 8 and 32
clients; latency percentiles, errors, and the server's memory under load.

`ssl-hpc serve` runs as its own process (127.0.0.1, a free port, a random token) on an
embedding set; its resident memory is read from /proc: steady (after a warm-up) and peak
(VmHWM) per client count. Each client thread keeps one HTTP connection and sends
--requests requests drawn from a fixed mix: 70% similarity searches (k=12), 15% cutout
PNGs, 10% CSV downloads, 5% FITS uploads embedded by the encoder (uploads need the
embedding set's checkpoint). A 503 with Retry-After (more uploads in flight than the
server embeds at once) is retried after the interval it names, as a browser's script
does; it is counted as `retried`, and only a request that never gets a 200 counts as an
error. Nothing leaves the machine.

usage: python bench/serve_load.py [--embeddings runs/demo/embeddings] [--index exact]
                                  [--clients 1,8,32] [--requests 60]
                                  [--out bench/results/serve_load.json]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from harness import machine_info, write_results

MIX = (("search", 0.70), ("image", 0.15), ("csv", 0.10), ("upload", 0.05))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A /proc/PID/status memory field (VmRSS: now, VmHWM: peak) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def upload_file(embeddings: Path, out: Path) -> Path | None:
    """A FITS cube of one survey cutout, for the uploads (None without a survey)."""
    from astropy.io import fits

    from ssl_hpc.embed import load
    from ssl_hpc.search.searcher import survey_of

    survey = survey_of(load(embeddings), None)
    if survey is None:
        return None
    fits.PrimaryHDU(survey.images([0])[0]).writeto(out)
    return out


def start_server(args, port: int, token: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs.cli", "serve", "--embeddings", args.embeddings]
    cmd += ["--port", str(port), "--token", token, "--index", args.index]
    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"serve exited: {server.stderr.read()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", headers=auth(token), timeout=2)
            return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("serve did not answer within 300 s")


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def plan(ids: np.ndarray, clients: int, per_client: int, uploads: bool, seed: int) -> list:
    """Each client's requests: (kind, object id), drawn from MIX."""
    kinds = [k for k, _ in MIX if uploads or k != "upload"]
    weights = np.array([w for k, w in MIX if k in kinds])
    rng = np.random.default_rng(seed)
    return [
        list(
            zip(
                rng.choice(kinds, per_client, p=weights / weights.sum()),
                rng.choice(ids, per_client),
            )
        )
        for _ in range(clients)
    ]


def run_client(base: str, token: str, requests: list, fits_bytes: bytes | None) -> list:
    """One client's requests in turn; (kind, ms, final status, retries) each."""
    out = []
    with httpx.Client(base_url=base, timeout=120, headers=auth(token)) as client:
        for kind, oid in requests:
            t0 = time.perf_counter()
            retries = 0
            while True:
                if kind == "search":
                    r = client.get("/api/search", params={"object_id": oid, "k": 12})
                elif kind == "image":
                    r = client.get(f"/api/image/{oid}.png")
                elif kind == "csv":
                    r = client.get("/api/search.csv", params={"object_id": oid, "k": 12})
                else:
                    r = client.post("/api/upload", files={"file": ("c.fits", fits_bytes)})
                if r.status_code == 503 and "Retry-After" in r.headers and retries < 30:
                    retries += 1
                    time.sleep(float(r.headers["Retry-After"]))
                    continue
                break
            out.append((kind, 1000 * (time.perf_counter() - t0), r.status_code, retries))
    return out


def load_level(base, token, pid, ids, clients, per_client, fits_bytes, seed) -> dict:
    requests = plan(ids, clients, per_client, fits_bytes is not None, seed)
    peak = {"rss": rss_mib(pid)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak["rss"] = max(peak["rss"], rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [
            x
            for part in pool.map(lambda r: run_client(base, token, r, fits_bytes), requests)
            for x in part
        ]
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    lat = np.array([d[1] for d in done])
    per_kind = {}
    for kind in sorted({d[0] for d in done}):
        k_lat = np.array([d[1] for d in done if d[0] == kind])
        per_kind[kind] = {
            "requests": len(k_lat),
            "latency_ms_p50": float(np.percentile(k_lat, 50)),
            "latency_ms_p99": float(np.percentile(k_lat, 99)),
        }
    return {
        "clients": clients,
        "requests": len(done),
        "errors": int(sum(d[2] != 200 for d in done)),
        "retried_503": int(sum(d[3] for d in done)),
        "requests_per_s": len(done) / wall,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "by_kind": per_kind,
        "server_rss_peak_mib": max(peak["rss"], rss_mib(pid, "VmHWM")),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--embeddings", default="runs/demo/embeddings")
    p.add_argument("--index", default="exact", choices=("exact", "ivfpq", "hnsw"))
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--requests", type=int, default=60, help="requests per client")
    p.add_argument("--out", default="bench/results/serve_load.json")
    args = p.parse_args()
    from ssl_hpc.embed import load

    es = load(args.embeddings)
    ids = es.object_ids()
    port, token = free_port(), secrets.token_urlsafe(24)
    server = start_server(args, port, token)
    base = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = upload_file(Path(args.embeddings), Path(tmp) / "cutout.fits")
            fits_bytes = path.read_bytes() if path else None
        # warm-up: the index, the encoder, the first images; then the steady state
        load_level(base, token, server.pid, ids, 2, 10, fits_bytes, seed=99)
        steady = rss_mib(server.pid)
        levels = []
        for i, clients in enumerate(int(c) for c in args.clients.split(",")):
            r = load_level(base, token, server.pid, ids, clients, args.requests, fits_bytes, i)
            r["server_rss_steady_mib"] = steady
            levels.append(r)
            print(
                f"{clients:3d} clients: {r['requests_per_s']:7.1f} req/s  p50 "
                f"{r['latency_ms_p50']:7.1f} ms  p99 {r['latency_ms_p99']:7.1f} ms  errors "
                f"{r['errors']}  retried {r['retried_503']}  server RSS {steady:.0f} MiB "
                f"steady, {r['server_rss_peak_mib']:.0f} MiB peak",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = {
        "machine": machine_info(),
        "embeddings": str(es.root),
        "objects": len(ids),
        "dim": es.dim,
        "index": args.index,
        "mix": dict(MIX),
        "uploads": fits_bytes is not None,
        "levels": levels,
    }
    print(write_results(results, args.out))


if __name__ == "__main__":
    main()
