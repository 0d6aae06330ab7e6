"""Build the synthetic SDSS-like survey (the embedded default data set).

Galaxies with real SDSS colour-redshift relations, Sersic bulges and spiral disks, bars,
edge-on disks, irregulars and mergers; per-object PSF, extinction and SDSS-depth noise;
spectroscopic redshifts for r < 17.77 and Galaxy Zoo 2-like votes for r < 17.0; rare
anomalies with a ground-truth flag. A rerun with the same config resumes.

example:
  ssl-hpc synth --out runs/survey n_objects=20000 rows_per_shard=1000 workers=2
  ssl-hpc synth --out runs/survey --config jobs/configs/synth.yaml seed=3
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.data.synth import SynthConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="survey directory to write (created; resumed)")
    add_config_arguments(p, SynthConfig)


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.data.info import format_summary, summarize
    from ssl_hpc.data.synth import generate_survey

    cfg = config_from_args(SynthConfig, args)
    manifest = generate_survey(cfg, args.out)
    print(format_summary(summarize(args.out)))
    g = manifest.generator
    print(
        f"{args.out}: {manifest.n_objects} objects in {len(manifest.shards)} shards "
        f"({len(manifest.shards) - g['shards_reused']} written, {g['shards_reused']} kept from "
        f"an earlier run) in {g['seconds']} s"
    )
    return 0
