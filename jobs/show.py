"""Draw a grid of cutouts from a survey as colour composites, with their labels.

The composite maps the reddest three bands to RGB (i, r, g for SDSS) with the Lupton et
al. (2004) asinh stretch. Captions give the object id and what is known of it: spectroscopic
redshift, Galaxy Zoo answer, and for synthetic surveys the true class and anomaly kind.
With --augment, one galaxy and its views under each augmentation code instead.

example:
  ssl-hpc show runs/survey --out runs/survey.png --n 32 --select labelled
  ssl-hpc show runs/survey --out anomalies.png --select anomalies
  ssl-hpc show runs/survey --out views.png --augment RR,JC,GN,GR,PS --n 6 augment.out_size=48
"""

from __future__ import annotations

import argparse

from ssl_hpc.augment.gallery import ShowConfig
from ssl_hpc.config import add_config_arguments, config_from_args, save_config

FLAGS = {
    "--n": "n",
    "--select": "select",
    "--ids": "ids",
    "--ncols": "ncols",
    "--seed": "seed",
    "--augment": "views",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("survey", help="survey directory")
    p.add_argument("--out", required=True, help="PNG file to write")
    add_config_arguments(p, ShowConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssl_hpc.augment.gallery import views_by_code
    from ssl_hpc.data.captions import captions, select_rows
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.errors import ConfigError
    from ssl_hpc.viz.composite import composite_softening
    from ssl_hpc.viz.grid import save_cutout_grid

    cfg = config_from_args(ShowConfig, args)
    out = Path(args.out)
    if out.is_dir() or out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: give a .png file to write")
    survey = Survey(args.survey)
    pick = 1 if cfg.views else cfg.n
    rows = survey.locate(cfg.ids) if cfg.ids else select_rows(survey, cfg.select, pick, cfg.seed)
    save_config(cfg, out.with_suffix(".yaml"))  # once the survey and selection hold
    display = survey.manifest.flux_unit.startswith("display")
    if not cfg.views:
        save_cutout_grid(
            survey.images(rows),
            survey.bands,
            captions(survey, rows),
            args.out,
            ncols=cfg.ncols,
            title=f"{survey.manifest.survey}: {cfg.select}",
            display_values=display,
        )
        print(f"wrote {len(rows)} cutouts to {args.out}")
        return 0
    row = int(rows[0])
    panels, names = views_by_code(survey, row, cfg.views, cfg.n, cfg.seed, cfg.augment)
    oid = int(survey.column("object_id")[row])
    save_cutout_grid(
        panels,
        survey.bands,
        names,
        args.out,
        ncols=cfg.n + 1,
        title=f"{survey.manifest.survey}: object {oid} under {'+'.join(cfg.views)}",
        softening=composite_softening(panels[0], survey.bands),  # one stretch for all
    )
    print(f"wrote {len(panels)} panels (original + {cfg.n} views per row) to {args.out}")
    return 0
