"""Build the synthetic SDSS-like survey (the embedded default data set).

Galaxies with real SDSS colour-redshift relations, Sersic bulges and spiral disks, bars,
edge-on disks, irregulars and mergers; per-object PSF, extinction and SDSS-depth noise;
spectroscopic redshifts for r < 17.77 and Galaxy Zoo 2-like votes for r < 17.0; rare
anomalies with a ground-truth flag. A rerun with the same config resumes.

example:
  ssl-hpc synth --out runs/survey n_objects=20000 rows_per_shard=1000 workers=2
  ssl-hpc synth --out runs/survey --config jobs/configs/synth.yaml seed=3

keys (key=value overrides; see ssl_hpc/data/synth/config.py for each one's meaning):
  survey n_objects rows_per_shard image_size pixel_scale_arcsec bands seed id_start
  faint_range spec_mag_limit spec_completeness gz_mag_limit gz_completeness gz_volunteers
  seeing_r_median seeing_scatter_dex depth_scatter_dex ebv_csc_scale neighbours_mean
  anomaly_fraction image_dtype compression workers
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="survey directory to write (created; resumed)")
    p.add_argument("--config", help="YAML file of SynthConfig keys (applied before overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.config import load_config
    from ssl_hpc.data.info import format_summary, summarize
    from ssl_hpc.data.synth import SynthConfig, generate_survey

    cfg = load_config(SynthConfig, args.config, args.overrides)
    manifest = generate_survey(cfg, args.out)
    print(format_summary(summarize(args.out)))
    g = manifest.generator
    print(
        f"{args.out}: {manifest.n_objects} objects in {len(manifest.shards)} shards "
        f"({len(manifest.shards) - g['shards_reused']} written, {g['shards_reused']} kept from "
        f"an earlier run) in {g['seconds']} s"
    )
    return 0
