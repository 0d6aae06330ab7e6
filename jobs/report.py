"""The end-to-end report: one self-contained HTML page of every figure and metric.

From an embedding set and its survey: the survey and encoder; the pretraining curve; linear
probes (photo-z as Hayat et al. 2021, Galaxy Zoo morphology) against the number of labels;
label-efficiency studies (--efficiency, from ssl-hpc finetune); similarity-search examples;
anomaly scores scored on injected anomalies; trust scores (distance to the labelled set)
against photo-z error; UMAP (or t-SNE) maps coloured by redshift, class, labels, anomaly
score and trust;
and the encoder's invariance to each augmentation. OUT gets index.html (figures inlined),
the PNGs, metrics.json, anomalies.csv (every object ranked) and trust.npz (every object's
trust score).

example:
  ssl-hpc report --embeddings runs/demo/embeddings --data runs/demo/survey --out runs/demo/report
  ssl-hpc report --embeddings EMB --data SURVEY --out REPORT --efficiency runs/demo/efficiency
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args, save_config
from ssl_hpc.report.build import ReportOptions

FLAGS = {
    "--efficiency": ("efficiency", list),
    "--k": "k",
    "--map-points": "map_points",
    "--map": "map_method",
    "--seed": "seed",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", help="the survey it embeds (default: the one in EMB/run.json)")
    p.add_argument("--out", required=True, help="report directory (index.html goes here)")
    p.add_argument("--checkpoint", help="the encoder (default: the one in EMB/run.json)")
    add_config_arguments(p, ReportOptions, FLAGS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssl_hpc.embed import load
    from ssl_hpc.report.build import build_report, check_inputs
    from ssl_hpc.report.learning import REPRESENTATION_ROWS
    from ssl_hpc.search.searcher import survey_of
    from ssl_hpc.utils.outdir import check_out_dir

    opts = config_from_args(ReportOptions, args)
    check_out_dir(args.out, own="index.html")
    embeddings = load(args.embeddings)
    survey = survey_of(embeddings, args.data)
    checkpoint = check_inputs(embeddings, survey, opts, args.checkpoint)  # before any output
    save_config(opts, Path(args.out) / "config.yaml")
    metrics = build_report(embeddings, survey, args.out, opts, checkpoint)
    learned = metrics["sections"].get("representation")
    if learned:  # the headline: did pretraining beat the same network's random weights?
        print("encoder against its random initialisation (random -> trained):")
        for key, name, _ in REPRESENTATION_ROWS:
            a, b = learned["random_init"].get(key), learned["trained"].get(key)
            if a is not None and b is not None:
                print(f"  {name}: {a:.4g} -> {b:.4g}")
    took = sum(metrics["seconds"].values())
    print(f"report written in {took:.0f} s: {Path(args.out).resolve() / 'index.html'}")
    return 0
