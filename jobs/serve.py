"""A similarity-search web page for the survey (FastAPI + one HTML page).

Type an object id or ra/dec, or pick a random or anomalous galaxy, or upload a FITS
cutout; see the query and its most similar galaxies with similarity, labels and trust
(distance to the labelled set); click any result to search from it; page through results;
download them as CSV. The JSON API behind the page is documented at /docs
(OpenAPI: /openapi.json). Binds 127.0.0.1 unless told otherwise and asks for a token
(printed in the URL; --token sets it, --no-token must be asked for): on a shared login
node every other user can reach 127.0.0.1. From a laptop:
  ssh -L 8000:127.0.0.1:8000 login.cluster   # then open the printed URL locally

example:
  ssl-hpc serve --embeddings runs/demo/embeddings --data runs/demo/survey
  ssl-hpc serve --embeddings EMB --data SURVEY --index ivfpq --report runs/demo/report
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.serve.config import ServeConfig

from .search import INDEX_FLAGS

FLAGS = {
    "--host": "host",
    "--port": "port",
    "--report": "report",
    "--max-upload-mb": "max_upload_mb",
    "--token": "token",
    "--no-token": ("no_token", "true"),
    **{flag: f"search.{key}" for flag, key in INDEX_FLAGS.items()},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", help="the survey it embeds (default: the one in EMB/run.json)")
    p.add_argument("--checkpoint", help="encoder for uploads (default: EMB/run.json's)")
    add_config_arguments(p, ServeConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ssl_hpc.embed import load
    from ssl_hpc.search.searcher import Searcher, survey_of
    from ssl_hpc.serve.app import create_app
    from ssl_hpc.serve.state import ServeState

    cfg = config_from_args(ServeConfig, args)
    token = cfg.access_token()
    sock = _listening_socket(cfg.host, cfg.port)  # a taken port is named before any loading
    try:
        embeddings = load(args.embeddings)
        survey = survey_of(embeddings, args.data)
        search = cfg.search
        searcher = Searcher(embeddings, survey, search.index, search.ann(), args.checkpoint)
        state = ServeState(
            searcher, cfg.report, image_cache_bytes=int(cfg.image_cache_mb * (1 << 20))
        )
        searcher.embedder()  # load the encoder now: the first upload should not wait for it
        app = create_app(state, token=token, **cfg.limits())
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host=cfg.host,
            port=port,
            log_level="warning",
            limit_concurrency=cfg.max_connections,
            timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        url = f"http://{cfg.host}:{port}/" + (f"?token={token}" if token else "")
        print(f"serving {len(survey)} galaxies on {url}", flush=True)
        if token is None:
            print("no token: every user who can reach this port can use the page", flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _listening_socket(host: str, port: int):
    """A socket bound to `host`:`port` (port 0: any free one), or a ConfigError naming it:
    a taken port is found before the page's URL is printed, and no other process can take
    the port between choosing and serving it."""
    import socket

    from ssl_hpc.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"port {port} on {host}: cannot listen there ({e.strerror})") from None
    return sock
