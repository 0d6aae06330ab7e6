"""Sweep pretraining hyperparameters and augmentation subsets with Ray Tune.

Each trial is a Ray Train pretraining run, scored in-loop by kNN on a labelled validation
subset (photo-z sigma_MAD and eta, morphology accuracy) every `eval_every` steps, so ASHA
can stop poor trials early. Rerunning the same command resumes an interrupted sweep:
finished trials are kept, unfinished ones continue from their latest checkpoint. The
output directory gets trials.csv / trials.md (every trial, ranked), best_config.yaml (a
ready pretraining config), summary.json, ablation.png and params.png.

example:
  ssl-hpc tune --data runs/demo/survey --out runs/demo/ablation \\
      --config jobs/configs/tune-ablation.yaml
  ssl-hpc tune --data /scratch/sdss --out /scratch/sweep1 --config my-sweep.yaml \\
      --address "$RAY_SLURM_ADDRESS"                      # as slurm/tune.sh does

The sweep file (see ssl_hpc/tune/space.py): pretrain (base config file), overrides,
search (key: {grid|choice: [...]} or {uniform|loguniform|randint: [low, high]}),
ablation (codes, subsets: all / leave_one_out / only_one / none, sets), metric
(knn_sigma_mad, knn_eta, knn_morph_acc, knn_morph_bacc, loss), mode, scheduler ({type: asha|fifo,
grace_period, reduction_factor}), num_samples, max_concurrent_trials, max_failures.
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import keys_help
from ssl_hpc.train.config import PretrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="survey directory to train on")
    p.add_argument("--out", required=True, help="sweep directory (created; a rerun resumes)")
    p.add_argument("--config", help="sweep YAML file (see above)")
    p.add_argument("--num-samples", type=int, help="repeats of the search space (overrides)")
    p.add_argument(
        "--address",
        help="Ray cluster to join, as head ip:port (slurm/tune.sh passes the one "
        "cluster/ray_slurm.sh started); default: a local one",
    )
    p.add_argument("--name", default="sweep", help="Tune experiment name (default sweep)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="base pretraining config overrides"
    )
    # the overrides are PretrainConfig's keys: list them as every command does
    p.epilog = (p.epilog + "\n\n" if p.epilog else "") + keys_help(PretrainConfig)


def run(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace
    from pathlib import Path

    from ssl_hpc.config import parse_overrides
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.errors import ConfigError
    from ssl_hpc.tune.report import collect, write_report
    from ssl_hpc.tune.run import sweep
    from ssl_hpc.tune.space import load_sweep
    from ssl_hpc.utils.outdir import check_out_dir

    check_out_dir(args.out, own="sweep.yaml")
    config = load_sweep(args.config, parse_overrides(args.overrides))
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples {args.num_samples}: must be >= 1")
        config = replace(config, num_samples=args.num_samples)
    survey = Survey(args.data)  # fail here, naming the survey, before Ray starts
    config.base_config.check_fits(survey)
    start = time.perf_counter()
    results = sweep(config, args.data, args.out, address=args.address, name=args.name)
    rows = collect(results, config)
    summary = write_report(rows, config, Path(args.out), time.perf_counter() - start)
    counts = ", ".join(f"{n} {s}" for s, n in summary["status"].items() if n)
    print(f"{args.out}: {len(rows)} trials ({counts}); table in {args.out}/trials.md")
    best = summary["best"]
    if best:
        shown = ", ".join(f"{d.key}={best[d.key]}" for d in config.domains)
        print(f"best: trial {best['trial']} {config.metric}={best[config.metric]:.4g} ({shown})")
        print(f"best config: {args.out}/best_config.yaml")
    return 1 if summary["status"]["error"] else 0
