"""Label efficiency: fine-tuned SSL and supervised-from-scratch against a linear probe.

For each label fraction and repeated split, trains (b) the pretrained encoder with a new
head, fine-tuned at a small learning rate, and (c) the same network from random weights at
the full rate: same labels, same augmentations (the pretraining run's), same number of
steps; each is a Ray Train run, resumable, in OUT/<init>-f<fraction>-r<repeat>/. It also
fits (a) a linear head on the frozen encoder's representations of the same objects. OUT
gets metrics.json (every run's test metrics, the mean curves, and the equivalent-labels
ratio: how many times more labels (c) needs to match (a) and (b)), efficiency.png and, for
photoz, photoz.png of the fine-tuned run at the largest fraction.

example:
  ssl-hpc finetune --checkpoint runs/demo/pretrain --data runs/demo/survey \\
      --out runs/demo/efficiency --task photoz --fractions 0.05,0.2,1 --repeats 2 steps=200
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args, save_config
from ssl_hpc.downstream.study import StudyConfig

FLAGS = {
    "--task": "task",
    "--fractions": "fractions",
    "--repeats": "repeats",
    "--methods": "methods",
    "--test-ids": "test_ids",  # as probe spells it; test_ids=FILE works too
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="pretraining run dir or its encoder.pt")
    p.add_argument("--data", required=True, help="labelled survey")
    p.add_argument("--out", required=True, help="output directory (a rerun resumes)")
    p.add_argument("--address", help="Ray cluster to join; default: a local one")
    add_config_arguments(p, StudyConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from ssl_hpc.data.survey import Survey
    from ssl_hpc.downstream.efficiency import ratio_line
    from ssl_hpc.downstream.finetune import task_splits
    from ssl_hpc.downstream.heads import RedshiftBins
    from ssl_hpc.downstream.study import efficiency_study
    from ssl_hpc.downstream.tasks import check_fractions, load_task
    from ssl_hpc.models.checkpoint import EncoderCheckpoint
    from ssl_hpc.train.ray_loop import connect
    from ssl_hpc.utils.outdir import check_out_dir

    check_out_dir(args.out, own="study.yaml")
    pretrained = EncoderCheckpoint(args.checkpoint)
    # the pretraining run's network, input scaling, augmentations and crop size, unless the
    # config says otherwise (absolute paths: Ray workers do not share our directory)
    base = {
        "augment": pretrained.augment,
        "arch": pretrained.arch,
        "stem": pretrained.stem,
        "input_stretch": pretrained.input_stretch,
        "neck": pretrained.neck,
        "input_softening": pretrained.config.get("input_softening", 3.0),
        "checkpoint": str(pretrained.path),
    }
    cfg = config_from_args(StudyConfig, args, base)
    if cfg.test_ids:
        cfg = replace(cfg, test_ids=str(Path(cfg.test_ids).resolve()))
    survey = Survey(args.data)
    cfg.augment.check_geometry(survey.manifest.image_shape[1:])
    fractions = check_fractions(cfg.fractions)
    task = load_task(survey, cfg.task, RedshiftBins(cfg.z_bins, cfg.z_max))  # before Ray
    task_splits(task, survey, cfg.run_config(), cfg.repeats)  # the test ids, before Ray too
    if cfg.methods:  # the linear heads alone need no cluster
        connect(args.address)

    def progress(method, fraction, repeat, test):
        score = "sigma_mad" if "sigma_mad" in test else "balanced_accuracy"
        print(f"{method} fraction {fraction:g} repeat {repeat}: {score}={test[score]:.4g}")

    study_file = Path(args.out) / "study.yaml"
    if not (Path(args.out) / "metrics.json").exists():
        save_config(cfg, study_file)  # marks the study under way (utils.outdir)
    summary = efficiency_study(
        cfg.run_config(), args.data, Path(args.out), fractions, cfg.repeats, progress, cfg.methods
    )
    save_config(cfg, study_file)  # what the metrics.json beside it was made with
    for method, ratios in summary["equivalent_labels"].items():
        print(ratio_line(method, ratios))
    print(f"{args.out}/metrics.json")
    return 0
