"""Ingest a catalogue and its image cutouts (FITS, PNG or JPEG) into a sharded survey.

Example, SDSS colour JPEGs (R=i, G=r, B=g) named <objid>.jpeg, with a class label:

    ssl-hpc ingest --catalog labels.csv --images images/ --out surveys/gz1 \\
        --id-column objid --label-columns class --bands i,r,g \\
        --crop 128 --resize 64 --pixel-scale 0.396 --workers 8 --on-error skip

Rerunning the same command resumes: finished shards are kept, the rest are redone.
Rerunning with other options into the same --out is refused. With --on-error skip, objects
that cannot be read are left out and listed in OUT/rejects.csv; with fail (the default) the
first one stops the run with an error naming the object and its file.
"""

from __future__ import annotations

import argparse


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected numbers separated by commas"
        ) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ingest options; each maps to one field of IngestConfig."""
    io = p.add_argument_group("inputs and output")
    io.add_argument(
        "--catalog", required=True, help="catalogue: CSV or FITS table, a row per object"
    )
    io.add_argument("--images", required=True, help="directory holding the image files")
    io.add_argument("--out", required=True, help="survey directory to create (or resume)")
    io.add_argument(
        "--survey-name", default=None, help="survey name in the manifest (default: --out's name)"
    )

    cols = p.add_argument_group(
        "catalogue columns",
        "Position, extinction and redshift columns are found by common spellings (ra/RA,\n"
        "dec/DEC, ebv/EBV, z_spec/redshift/z, ...) unless named; '' says there is none.\n"
        "They are stored as ra, dec, ebv and z_spec; other numeric columns are copied as is.",
    )
    cols.add_argument("--id-column", required=True, help="column of unique integer object ids")
    cols.add_argument("--ra-column", default=None, help="right ascension in degrees (J2000)")
    cols.add_argument("--dec-column", default=None, help="declination in degrees (J2000)")
    cols.add_argument("--ebv-column", default=None, help="Galactic reddening E(B-V) in mag")
    cols.add_argument(
        "--z-column", default=None, help="spectroscopic redshift, stored as z_spec (a label)"
    )
    cols.add_argument(
        "--label-columns",
        type=_names,
        default=(),
        help="comma-separated columns to mark as labels (targets of downstream tasks); "
        "z_spec and gz2_* columns are labels anyway",
    )

    img = p.add_argument_group("images")
    img.add_argument(
        "--format",
        choices=("auto", "fits", "fits-per-band", "png", "jpeg"),
        default="auto",
        help="fits: a band cube per object; fits-per-band: a FITS file per object and band; "
        "png/jpeg: 8-bit colour composites; auto (default): from the extension of the "
        "<id>.* files",
    )
    img.add_argument(
        "--pattern",
        default=None,
        help="file name under --images with {id} and, for fits-per-band, {band} (default: "
        "{id}.<ext> as found in the directory; {id}-{band}.fits for fits-per-band)",
    )
    img.add_argument(
        "--bands",
        type=_names,
        required=True,
        help="comma-separated band names in the order of the cube's planes or the image's "
        "R,G,B channels (e.g. i,r,g for SDSS composites)",
    )
    img.add_argument("--crop", type=int, required=True, help="side of the centre crop, input px")
    img.add_argument(
        "--resize",
        type=int,
        default=None,
        help="resample the crop to this many px by area averaging (FITS flux is summed, so "
        "conserved); default: keep the crop",
    )
    img.add_argument(
        "--pixel-scale",
        type=float,
        default=0.396,
        help="input pixel scale in arcsec/px (default: SDSS's 0.396; HSC: 0.168); the "
        "survey's is larger by crop/resize",
    )
    img.add_argument(
        "--psf-fwhm",
        type=_floats,
        default=(),
        help="PSF FWHM in arcsec: one value for all bands or one per band, comma-separated "
        "(default: unknown, stored as NaN)",
    )
    img.add_argument(
        "--dtype",
        choices=("auto", "float16", "float32"),
        default="auto",
        help="stored pixel type; auto: float16 for 8-bit images, float32 for FITS (float16 "
        "overflows above 65504)",
    )
    img.add_argument(
        "--flux-unit",
        default=None,
        help="unit of the pixel values (default: 'display (8-bit / 255)' for PNG/JPEG, "
        "'unknown' for FITS)",
    )

    run_ = p.add_argument_group("running")
    run_.add_argument(
        "--rows-per-shard", type=int, default=512, help="catalogue rows per shard (default: 512)"
    )
    run_.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes reading images in parallel, a shard each (default: 1, in this process)",
    )
    run_.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="fail (default): stop at the first bad object; skip: leave bad objects out and "
        "list them in OUT/rejects.csv",
    )


def run(args: argparse.Namespace) -> int:
    """Build the IngestConfig from `args`, ingest, and print what was done."""
    from ssl_hpc.data.ingest import IngestConfig, ingest

    config = IngestConfig(
        catalog=args.catalog,
        images=args.images,
        out=args.out,
        id_column=args.id_column,
        bands=args.bands,
        crop=args.crop,
        pixel_scale_arcsec=args.pixel_scale,
        resize=args.resize,
        ra_column=args.ra_column,
        dec_column=args.dec_column,
        ebv_column=args.ebv_column,
        z_column=args.z_column,
        label_columns=args.label_columns,
        image_format=args.format,
        pattern=args.pattern,
        psf_fwhm=args.psf_fwhm,
        image_dtype=args.dtype,
        flux_unit=args.flux_unit,
        rows_per_shard=args.rows_per_shard,
        workers=args.workers,
        on_error=args.on_error,
        survey=args.survey_name,
    )
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
