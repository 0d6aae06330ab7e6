"""Write an embedding set and its results as a catalogue: Parquet, FITS or HATS.

One row per object: object_id (and the source catalogue's source_id where the survey keeps
it), ra and dec (deg), healpix (nested; its order in the metadata), the principal
components pca_0.. (from the set's pca.npz), the whole representation as one array column
(embedding; --no-vectors leaves it out), and with --report the anomaly rank and scores and
the trust scores of every object, and with --probe every object's predictions by the heads
the probe saved: photoz and photoz_err (the redshift PDF's mean and standard deviation),
per morphology question p_<task>_<answer> and <task>_class (the likeliest answer), and
in_train_<task> (the head was fitted on that object's label). A probe directory without
heads/ (from before they were saved) gives photoz and photoz_err of its held-out test
objects only. Provenance (embedding set, survey, checkpoint, ssl-hpc version) is in
the Parquet schema metadata, the FITS header and hats.properties.

parquet: one file for pandas, polars, pyarrow (above part_rows rows, a directory of part
files); fits: one binary table for TOPCAT; hats: a HEALPix-partitioned collection for
LSDB (lsdb.read_hats(CAT)), with a margin catalogue for crossmatching. Each is written
shard by shard, under a temporary name, and renamed when complete; an existing CAT is
refused unless --overwrite.

example:
  ssl-hpc export --embeddings runs/demo/embeddings --out runs/demo/catalogue.parquet
  ssl-hpc export --embeddings EMB --report REPORT --probe PROBE --out cat.fits --format fits
  ssl-hpc export --embeddings EMB --report REPORT --out cat_hats --format hats --no-vectors
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.export import ExportOptions

#: the flags people type, onto ExportOptions' keys
FLAGS = {
    "--format": "format",
    "--pca": "pca",
    "--no-vectors": ("vectors", "false"),
    "--healpix-order": "healpix_order",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", help="the survey it embeds (default: the one in EMB/run.json)")
    p.add_argument("--report", help="an ssl-hpc report directory: anomaly and trust columns")
    p.add_argument("--probe", help="an ssl-hpc probe directory: photo-z and morphology columns")
    p.add_argument("--out", required=True, metavar="CAT", help="the catalogue to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CAT")
    add_config_arguments(p, ExportOptions, FLAGS)


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.export import export_catalogue

    opts = config_from_args(ExportOptions, args)
    done = export_catalogue(
        args.embeddings, args.out, opts, args.report, args.probe, args.data, args.overwrite
    )
    print(f"{done['path']}: {done['rows']} objects, {opts.format}; columns:")
    print("  " + " ".join(done["columns"]))
    return 0
