"""Draw a grid of cutouts from a survey as colour composites, with their labels.

The composite maps the reddest three bands to RGB (i, r, g for SDSS) with the Lupton et
al. (2004) asinh stretch. Captions give the object id and what is known of it: spectroscopic
redshift, Galaxy Zoo answer, and for synthetic surveys the true class and anomaly kind.

example:
  ssl-hpc show runs/survey --out runs/survey.png --n 32 --select labelled
  ssl-hpc show runs/survey --out anomalies.png --select anomalies
  ssl-hpc show runs/survey --out views.png --augment RR,JC,GN,GR,PS --n 6
"""

from __future__ import annotations

import argparse

SELECTIONS = ("random", "labelled", "unlabelled", "anomalies", "first")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("survey", help="survey directory")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=24, help="number of cutouts (default 24)")
    p.add_argument(
        "--select",
        choices=SELECTIONS,
        default="random",
        help="which objects: random, labelled (has z_spec), unlabelled, anomalies "
        "(synthetic truth), first (survey order) (default random)",
    )
    p.add_argument("--ids", type=int, nargs="+", help="show these object ids instead")
    p.add_argument("--ncols", type=int, default=8, help="grid columns (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    p.add_argument(
        "--augment",
        metavar="CODES",
        help="instead: one galaxy (the first selected, or --ids) and --n augmented views per "
        "code in CODES (e.g. RR,JC,GN,GR,PS), one row per code and one with all combined",
    )
    p.add_argument(
        "--augment-set",
        metavar="KEY=VALUE",
        nargs="+",
        default=[],
        help="augmentation settings for --augment, e.g. out_size=48 max_shift=4 ebv=0,1",
    )


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.data.captions import captions, select_rows
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.viz.grid import save_cutout_grid

    survey = Survey(args.survey)
    if args.augment is not None:
        return _show_augment(survey, args)
    rows = (
        survey.locate(args.ids) if args.ids else select_rows(survey, args.select, args.n, args.seed)
    )
    save_cutout_grid(
        survey.images(rows),
        survey.bands,
        captions(survey, rows),
        args.out,
        ncols=args.ncols,
        title=f"{survey.manifest.survey}: {args.select}",
        display_values=survey.manifest.flux_unit.startswith("display"),
    )
    print(f"wrote {len(rows)} cutouts to {args.out}")
    return 0


def _show_augment(survey, args: argparse.Namespace) -> int:
    from ssl_hpc.augment import AugmentConfig, parse_codes
    from ssl_hpc.augment.gallery import views_by_code
    from ssl_hpc.config import load_config
    from ssl_hpc.data.captions import select_rows
    from ssl_hpc.errors import SslHpcError
    from ssl_hpc.viz.composite import composite_softening
    from ssl_hpc.viz.grid import save_cutout_grid

    codes = parse_codes(args.augment)
    if not codes:
        raise SslHpcError("--augment: give at least one code, e.g. RR,JC,GN,GR,PS")
    row = int(
        survey.locate(args.ids[:1])[0]
        if args.ids
        else select_rows(survey, args.select, 1, args.seed)[0]
    )
    config = load_config(AugmentConfig, None, args.augment_set)
    panels, captions = views_by_code(survey, row, codes, args.n, args.seed, config)
    save_cutout_grid(
        panels,
        survey.bands,
        captions,
        args.out,
        ncols=args.n + 1,
        title=f"{survey.manifest.survey}: object {captions[0].split()[0]} under {'+'.join(codes)}",
        softening=composite_softening(panels[0], survey.bands),  # one stretch for all
    )
    print(f"wrote {len(panels)} panels (original + {args.n} views per row) to {args.out}")
    return 0
