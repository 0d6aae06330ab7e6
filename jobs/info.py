"""Print a survey's summary and verify every shard against its manifest.

Exits 1 if any shard is missing, truncated, altered or inconsistent, naming each one;
with --pixels, also if any object has NaN or inf pixels, naming them.
"""

from __future__ import annotations

import argparse
import json

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.data.info import InfoConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("survey", help="survey directory (holds manifest.json and shard-*.h5)")
    flags = {"--quick": ("quick", "true"), "--json": ("json", "true")}
    add_config_arguments(p, InfoConfig, {**flags, "--pixels": ("pixels", "true")})


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.data.info import format_summary, nonfinite_pixels, summarize
    from ssl_hpc.data.manifest import verify_survey

    cfg = config_from_args(InfoConfig, args)
    summary = summarize(args.survey)
    problems = verify_survey(args.survey, full=not cfg.quick)
    scanned = cfg.pixels and not problems  # a shard that fails its checks: pixels mean nothing
    if scanned:
        problems = nonfinite_pixels(args.survey)
    summary["verified"] = ("quick" if cfg.quick else "sha256") + (" + pixels" if scanned else "")
    summary["problems"] = problems
    print(json.dumps(summary, indent=2) if cfg.json else format_summary(summary))
    return 1 if problems else 0
