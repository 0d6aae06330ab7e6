"""Ingest a catalogue and its image cutouts (FITS, PNG or JPEG) into a sharded survey.

Example, SDSS colour JPEGs (R=i, G=r, B=g) named <objid>.jpeg, with a class label:

    ssl-hpc ingest --catalog labels.csv --images images/ --out surveys/gz1 \\
        --id-column objid --label-columns class --bands i,r,g \\
        --crop 128 --resize 64 --pixel-scale 0.396 --workers 8 --on-error skip

A Multimodal Universe tree (<root>/<dataset>/<config>/healpix=<N>/*.hdf5) or array HDF5
files carry their own catalogue: no --catalog. Shards can be partitioned by HEALPix pixel:

    ssl-hpc ingest --images mmu/legacysurvey --out surveys/ls --bands g,r,z \\
        --out-pixel-scale 0.262 --healpix-order 4 --on-error skip
    ssl-hpc ingest --format hdf5 --images sdss_images.h5 --image-dataset images \\
        --id-column objid --bands u,g,r,i,z --axis-order NCHW --out surveys/sdss

Rerunning the same command resumes: finished shards are kept, the rest are redone.
Rerunning with other options into the same --out is refused. With --on-error skip, objects
that cannot be read are left out and listed in OUT/rejects.csv; with fail (the default) the
first one stops the run with an error naming the object and its file.
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.data.ingest import IngestConfig

#: the flags people type, onto IngestConfig's keys
FLAGS = {
    "--catalog": "catalog",
    "--images": "images",
    "--out": "out",
    "--survey-name": "survey",
    "--id-column": "id_column",
    "--ra-column": "ra_column",
    "--dec-column": "dec_column",
    "--ebv-column": "ebv_column",
    "--z-column": "z_column",
    "--label-columns": "label_columns",
    "--format": "image_format",
    "--pattern": "pattern",
    "--bands": "bands",
    "--crop": "crop",
    "--resize": "resize",
    "--pixel-scale": "pixel_scale_arcsec",
    "--out-pixel-scale": "out_pixel_scale",
    "--image-dataset": "image_dataset",
    "--axis-order": "axis_order",
    "--healpix-order": "healpix_order",
    "--psf-fwhm": "psf_fwhm",
    "--dtype": "image_dtype",
    "--flux-unit": "flux_unit",
    "--rows-per-shard": "rows_per_shard",
    "--workers": "workers",
    "--on-error": "on_error",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ingest options: IngestConfig's keys, the common ones as flags."""
    add_config_arguments(p, IngestConfig, FLAGS, group="ingest options")


def run(args: argparse.Namespace) -> int:
    """Build the IngestConfig from `args`, ingest, and print what was done."""
    from ssl_hpc.data.ingest import ingest

    config = config_from_args(IngestConfig, args)
    report = ingest(config)
    m = report.manifest
    print(
        f"ingested {report.n_ingested} objects into {report.out} "
        f"({len(m.shards)} shards: {report.shards_written} written, "
        f"{report.shards_skipped} kept from an earlier run)"
    )
    print(f"images: {report.image_format} {report.pattern} -> {m.image_shape} {m.image_dtype}")
    if report.column_map:
        print("columns: " + ", ".join(f"{k} <- {v}" for k, v in report.column_map.items()))
    if report.skipped_columns:
        print("not copied: " + "; ".join(f"{k} ({v})" for k, v in report.skipped_columns.items()))
    if report.n_rejected:
        print(f"rejected {report.n_rejected} objects; reasons in {report.rejects_path}")
    return 0
