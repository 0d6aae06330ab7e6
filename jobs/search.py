"""Similarity search: the galaxies most like a given one, by cosine similarity.

The query is an object id (--query), the object nearest a sky position (--ra/--dec), or a
new FITS cutout (--fits: a (bands, H, W) cube at the survey's pixel scale), embedded on the
fly with the set's checkpoint. Search is exact (FAISS inner products, blocked over the
memory-mapped shards) or approximate (--index ivfpq or hnsw: built once, cached in
EMB/index/, IVF-PQ candidates re-scored exactly). Results are printed as a table and
written to OUT as <name>.csv and <name>.png (the query and its k nearest as colour
composites). --all computes every object's top k instead, into EMB/neighbours/ (a rerun
resumes).

example:
  ssl-hpc search --embeddings runs/demo/embeddings --query 1017 --k 10
  ssl-hpc search --embeddings EMB --ra 150.112 --dec 2.205 --out results/
  ssl-hpc search --embeddings EMB --fits new_cutout.fits --index ivfpq --nprobe 64
  ssl-hpc search --embeddings EMB --all --k 20
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args, save_config
from ssl_hpc.search.searcher import SearchConfig

#: the flags people type, onto SearchConfig's keys (`serve` takes the index ones too)
INDEX_FLAGS = {
    "--index": "index",
    "--nprobe": "nprobe",
    "--rerank": "rerank",
    "--ef-search": "ef_search",
}
FLAGS = {"--k": "k", "--max-sep": "max_sep", **INDEX_FLAGS}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", help="the survey it embeds (default: the one in EMB/run.json)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", type=int, metavar="OBJID", help="search from this object id")
    what.add_argument("--ra", type=float, help="search from the object nearest ra/dec (deg)")
    what.add_argument("--fits", metavar="FILE", help="embed this FITS cutout and search from it")
    what.add_argument("--all", action="store_true", help="every object's top k (batch mode)")
    p.add_argument("--dec", type=float, help="with --ra (deg)")
    p.add_argument("--checkpoint", help="encoder for --fits (default: the one in EMB/run.json)")
    p.add_argument(
        "--out",
        help="where <name>.csv and <name>.png go (default EMB/queries; not with --all, whose "
        "table goes in EMB/neighbours/)",
    )
    add_config_arguments(p, SearchConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssl_hpc.embed import load
    from ssl_hpc.errors import SslHpcError
    from ssl_hpc.search.query import save_result_grid, write_csv
    from ssl_hpc.search.searcher import Searcher, survey_of
    from ssl_hpc.utils.outdir import check_out_dir

    if (args.ra is None) != (args.dec is None):
        raise SslHpcError("--ra and --dec go together")
    if args.all and args.out:
        raise SslHpcError(
            f"--out {args.out}: --all writes its table into EMB/neighbours/, beside the set it "
            "was computed from (search.batch.load_neighbours reads it there); leave --out out"
        )
    cfg = config_from_args(SearchConfig, args)
    embeddings = load(args.embeddings)
    survey = survey_of(embeddings, args.data)
    searcher = Searcher(embeddings, survey, cfg.index, cfg.ann(), args.checkpoint)
    if args.all:
        manifest = searcher.all_neighbours(cfg.k)
        print(f"{embeddings.root}/neighbours: top-{cfg.k} of {manifest['n_rows']} objects")
        return 0
    if args.query is not None:
        query, name = searcher.by_id(args.query), f"object-{args.query}"
    elif args.ra is not None:
        query = searcher.by_position(args.ra, args.dec, cfg.max_sep)
        name = f"radec-{args.ra:.5f}{args.dec:+.5f}"
    else:
        query, name = searcher.by_fits(args.fits), f"fits-{Path(args.fits).stem}"
    table = searcher.table(query, cfg.k)
    out = check_out_dir(Path(args.out) if args.out else embeddings.root / "queries")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / f"{name}.yaml")
    write_csv(table, out / f"{name}.csv")
    save_result_grid(survey, query, table, out / f"{name}.png")
    _print_table(query.label, table, searcher.index_info["kind"])
    print(f"{out / name}.csv\n{out / name}.png")
    return 0


def _print_table(label: str, table: list[dict], kind: str) -> None:
    keys = [k for k in table[0] if k != "row"]
    print(f"{len(table)} most similar to {label} ({kind} search):")
    print("  ".join(f"{k:>12}" for k in keys))
    for t in table:
        print("  ".join(f"{'' if t[k] is None else t[k]!s:>12}" for k in keys))
