"""A similarity-search web page for the survey (FastAPI + one HTML page).

Type an object id or ra/dec, or pick a random or anomalous galaxy, or upload a FITS
cutout; see the query and its most similar galaxies with similarity, labels and trust
(distance to the labelled set); click any result to search from it; page through results;
download them as CSV. The JSON API behind the page is documented at /docs
(OpenAPI: /openapi.json). Binds 127.0.0.1 unless told otherwise.

example:
  ssl-hpc serve --embeddings runs/demo/embeddings --data runs/demo/survey
  ssl-hpc serve --embeddings EMB --data SURVEY --index ivfpq --report runs/demo/report
"""

from __future__ import annotations

import argparse

from .search import add_index_arguments, ann_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", help="the survey it embeds (default: the one in EMB/run.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    add_index_arguments(p)
    p.add_argument("--report", help="ssl-hpc report dir: trust and anomaly scores from it")
    p.add_argument("--checkpoint", help="encoder for uploads (default: EMB/run.json's)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="upload limit (default 8)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ssl_hpc.embed import load
    from ssl_hpc.errors import SslHpcError
    from ssl_hpc.search.searcher import Searcher, survey_of
    from ssl_hpc.serve.app import create_app
    from ssl_hpc.serve.state import ServeState

    if not 0 <= args.port < 65536:
        raise SslHpcError(f"--port {args.port}: expected 0..65535")
    if args.max_upload_mb <= 0:
        raise SslHpcError(f"--max-upload-mb {args.max_upload_mb}: must be > 0")
    embeddings = load(args.embeddings)
    survey = survey_of(embeddings, args.data)
    ann = ann_config(args)
    searcher = Searcher(embeddings, survey, args.index, ann, checkpoint=args.checkpoint)
    state = ServeState(searcher, args.report)
    searcher.embedder()  # load the encoder now: the first upload should not wait for it
    app = create_app(state, int(args.max_upload_mb * (1 << 20)))
    port = args.port or _free_port(args.host)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=port, log_level="warning"))
    print(f"serving {len(survey)} galaxies on http://{args.host}:{port}/", flush=True)
    server.run()
    return 0


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
