"""Linear heads on frozen representations: photo-z and morphology from few labels.

For each task (photoz: the 180-bin redshift classifier of Hayat et al. over 0 < z < 0.4,
point estimate the probability-weighted mean; one per Galaxy Zoo question: soft vote
fractions) a head is trained on the embedding vectors of a growing fraction of the
labelled objects and scored on a fixed test set, over repeated random splits. OUT gets
metrics.json (every fraction and repeat, and the mean curves), curve_<task>.png (score
against labels), photoz.png (z_phot against z_spec at the largest fraction) and photoz_pdfs.npz
(the test objects' redshift PDFs).

example:
  ssl-hpc probe --embeddings runs/demo/embeddings --data runs/demo/survey --out runs/demo/probe
  ssl-hpc probe --embeddings EMB --data SURVEY --out OUT --task photoz --repeats 5 --hidden 256
"""

from __future__ import annotations

import argparse

DEFAULT_FRACTIONS = "0.01,0.02,0.05,0.1,0.2,0.5,1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", required=True, help="the survey it embeds (labels)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--task",
        action="append",
        help="photoz or a Galaxy Zoo question (repeatable); default: every task the "
        "survey's labels support",
    )
    p.add_argument("--fractions", default=DEFAULT_FRACTIONS, help="label fractions (comma list)")
    p.add_argument("--repeats", type=int, default=3, help="random splits (default 3)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="held out (default 0.3)")
    p.add_argument(
        "--test-ids",
        help="a published test set (CSV with an object_id column), kept in every repeat",
    )
    p.add_argument(
        "--write-test-ids",
        metavar="FILE",
        help="draw the test set of the one --task once (--test-fraction, --seed), write its "
        "object ids to FILE, and use it",
    )
    p.add_argument("--hidden", type=int, default=0, help="MLP hidden width (default 0: linear)")
    p.add_argument("--epochs", type=int, default=100, help="head training epochs (default 100)")
    p.add_argument("--seed", type=int, default=0, help="splits and head training (default 0)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ssl_hpc.data.survey import Survey
    from ssl_hpc.downstream.heads import HeadConfig
    from ssl_hpc.downstream.study import probe_study
    from ssl_hpc.downstream.tasks import check_fractions, load_task, read_test_ids, write_test_ids
    from ssl_hpc.embed import load
    from ssl_hpc.errors import ConfigError

    survey = Survey(args.data)
    ids, vectors = load(args.embeddings).load()
    if not np.array_equal(ids, survey.column("object_id")):
        raise ConfigError(f"{args.embeddings}: its object ids are not those of {args.data}")
    test_ids = read_test_ids(args.test_ids) if args.test_ids else None
    if args.write_test_ids:
        if not args.task or len(args.task) != 1 or args.test_ids:
            raise ConfigError("--write-test-ids needs exactly one --task and no --test-ids")
        task = load_task(survey, args.task[0])
        test_ids = write_test_ids(args.write_test_ids, task, survey, args.test_fraction, args.seed)
        print(f"{args.write_test_ids}: {len(test_ids)} test objects of {args.task[0]}")
    summary = probe_study(
        vectors,
        survey,
        Path(args.out),
        args.task,
        check_fractions(args.fractions.split(",")),
        args.repeats,
        args.test_fraction,
        HeadConfig(hidden=args.hidden, epochs=args.epochs, seed=args.seed),
        test_ids,
    )
    for name, result in summary["tasks"].items():
        top = result["curve"][-1]
        print(
            f"{name}: {result['labelled']} labelled; {result['score']} with {top['n_train']} "
            f"labels: {top['mean']:.4g} +- {top['std']:.2g}"
        )
    print(f"{args.out}/metrics.json")
    return 0
