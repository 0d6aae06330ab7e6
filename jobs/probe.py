"""Linear heads on frozen representations: photo-z and morphology from few labels.

For each task (photoz: the 180-bin redshift classifier of Hayat et al. over 0 < z < 0.4,
point estimate the probability-weighted mean; one per Galaxy Zoo question: soft vote
fractions) a head is trained on the embedding vectors of a growing fraction of the
labelled objects and scored on a fixed test set, over repeated random splits. OUT gets
metrics.json (every fraction and repeat, and the mean curves), curve_<task>.png (score
against labels), photoz.png (z_phot against z_spec at the largest fraction), photoz_pdfs.npz
(the test objects' redshift PDFs), and heads/<task>.pt with heads/index.json: each task's
head at the largest fraction (first repeat), which `ssl-hpc export --probe OUT` applies to
every object.

example:
  ssl-hpc probe --embeddings runs/demo/embeddings --data runs/demo/survey --out runs/demo/probe
  ssl-hpc probe --embeddings EMB --data SURVEY --out OUT --task photoz --repeats 5 --hidden 256
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args, save_config
from ssl_hpc.downstream.study import ProbeConfig

FLAGS = {
    "--task": "tasks",
    "--fractions": "fractions",
    "--repeats": "repeats",
    "--test-fraction": "test_fraction",
    "--test-ids": "test_ids",
    "--hidden": "head.hidden",
    "--epochs": "head.epochs",
    "--seed": "head.seed",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="embedding set (ssl-hpc embed)")
    p.add_argument("--data", required=True, help="the survey it embeds (labels)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--write-test-ids",
        metavar="FILE",
        help="draw the test set of the one task once (test_fraction, head.seed), write its "
        "object ids to FILE, and use it",
    )
    add_config_arguments(p, ProbeConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ssl_hpc.downstream.study import probe_splits, probe_study
    from ssl_hpc.downstream.tasks import (
        check_fractions,
        load_task,
        read_test_ids,
        usable_tasks,
        write_test_ids,
    )
    from ssl_hpc.embed import load
    from ssl_hpc.errors import ConfigError
    from ssl_hpc.search.searcher import survey_of
    from ssl_hpc.utils.outdir import check_out_dir

    cfg = config_from_args(ProbeConfig, args)
    check_out_dir(args.out, own="heads")
    embeddings = load(args.embeddings)
    survey = survey_of(embeddings, args.data)  # ids alone do not tell surveys apart
    ids, vectors = embeddings.load()
    if not np.array_equal(ids, survey.column("object_id")):
        raise ConfigError(f"{args.embeddings}: its object ids are not those of {args.data}")
    fractions = check_fractions(cfg.fractions)
    seed = cfg.head.seed
    for name in cfg.tasks:  # an unknown task or one without labels: named before any output
        load_task(survey, name)
    test_ids = read_test_ids(cfg.test_ids) if cfg.test_ids else None
    if args.write_test_ids:
        if len(cfg.tasks) != 1 or cfg.test_ids:
            raise ConfigError("--write-test-ids needs exactly one --task and no --test-ids")
        task = load_task(survey, cfg.tasks[0])
        test_ids = write_test_ids(args.write_test_ids, task, survey, cfg.test_fraction, seed)
        print(f"{args.write_test_ids}: {len(test_ids)} test objects of {cfg.tasks[0]}")
    for name in cfg.tasks or usable_tasks(survey)[0]:  # the test set: before any output
        probe_splits(
            load_task(survey, name), survey, cfg.repeats, cfg.test_fraction, seed, test_ids
        )
    save_config(cfg, Path(args.out) / "config.yaml")
    summary = probe_study(
        vectors,
        survey,
        Path(args.out),
        list(cfg.tasks) or None,
        fractions,
        cfg.repeats,
        cfg.test_fraction,
        cfg.head,
        test_ids,
        embeddings.provenance(),
    )
    for name, result in summary["tasks"].items():
        if not result["curve"]:  # every repeat's test set held one class of the question
            print(f"{name}: {result['labelled']} labelled; no {result['score']} in any repeat")
            continue
        top = result["curve"][-1]
        print(
            f"{name}: {result['labelled']} labelled; {result['score']} with {top['n_train']} "
            f"labels: {top['mean']:.4g} +- {top['std']:.2g}"
        )
    for name, why in summary["skipped"].items():
        print(f"{name}: not probed, {why}")
    print(f"{args.out}/metrics.json")
    return 0
