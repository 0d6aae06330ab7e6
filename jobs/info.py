"""Print a survey's summary and verify every shard against its manifest.

Exits 1 if any shard is missing, truncated, altered or inconsistent, naming each one.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("survey", help="survey directory (holds manifest.json and shard-*.h5)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="check sizes, row counts and shapes only; skip re-hashing every shard (sha256)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.data.info import format_summary, summarize
    from ssl_hpc.data.manifest import verify_survey

    summary = summarize(args.survey)
    problems = verify_survey(args.survey, full=not args.quick)
    summary["verified"] = "quick" if args.quick else "sha256"
    summary["problems"] = problems
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if problems else 0
