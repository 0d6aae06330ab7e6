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

keys (key=value; see ssl_hpc/downstream/finetune.py): task arch stem input_stretch
  input_softening neck test_fraction test_ids steps batch_size lr encoder_lr_scale weight_decay
  warmup_steps balance augment.<key> z_bins z_max eval_every checkpoint_every seed precision
  num_workers use_gpu cpus_per_worker max_failures
"""

from __future__ import annotations

import argparse

from jobs.probe import DEFAULT_FRACTIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="pretraining run dir or its encoder.pt")
    p.add_argument("--data", required=True, help="labelled survey")
    p.add_argument("--out", required=True, help="output directory (a rerun resumes)")
    p.add_argument("--config", help="YAML of FinetuneConfig keys")
    p.add_argument("--task", help="photoz (default) or a Galaxy Zoo question")
    p.add_argument("--fractions", default=DEFAULT_FRACTIONS, help="label fractions (comma list)")
    p.add_argument("--repeats", type=int, default=3, help="random splits (default 3)")
    p.add_argument(
        "--methods",
        default="finetuned_ssl,supervised",
        help="trained methods to run: finetuned_ssl and/or supervised (default both; the "
        "linear heads on SSL, random-init and pixel-PCA features always run)",
    )
    p.add_argument("--address", help="Ray cluster to join; default: a local one")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import ray

    from ssl_hpc.config import build, parse_overrides, read_yaml_mapping
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.downstream.finetune import FinetuneConfig
    from ssl_hpc.downstream.study import efficiency_study
    from ssl_hpc.downstream.tasks import check_fractions
    from ssl_hpc.errors import ConfigError
    from ssl_hpc.models.checkpoint import EncoderCheckpoint

    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: must be >= 1")
    pretrained = EncoderCheckpoint(args.checkpoint)
    # the pretraining run's network, input scaling, augmentations and crop size, unless the
    # config says otherwise (absolute path: Ray workers do not share our directory)
    values: dict = {
        "augment": pretrained.augment,
        "arch": pretrained.arch,
        "stem": pretrained.stem,
        "input_stretch": pretrained.input_stretch,
        "neck": pretrained.neck,
        "input_softening": pretrained.config.get("input_softening", 3.0),
        "checkpoint": str(pretrained.path),
    }
    if args.config:
        values.update(read_yaml_mapping(args.config))
    if args.task:
        values["task"] = args.task
    values.update(parse_overrides(args.overrides))
    if values.get("test_ids"):  # Ray workers do not share our directory
        values["test_ids"] = str(Path(values["test_ids"]).resolve())
    base = build(FinetuneConfig, values, args.config or "finetune config")
    survey = Survey(args.data)
    base.augment.check_geometry(survey.manifest.image_shape[1:])
    fractions = check_fractions(args.fractions.split(","))
    if not ray.is_initialized():
        ray.init(address=args.address)

    def progress(method, fraction, repeat, test):
        score = "sigma_mad" if "sigma_mad" in test else "balanced_accuracy"
        print(f"{method} fraction {fraction:g} repeat {repeat}: {score}={test[score]:.4g}")

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    summary = efficiency_study(
        base, args.data, Path(args.out), fractions, args.repeats, progress, methods
    )
    for method, ratios in summary["equivalent_labels"].items():
        shown = ", ".join(
            f"{r['n_train']}: {'>' if r['bound'] else ''}{r['ratio_mean']:.2g}x" for r in ratios
        )
        print(f"labels supervised needs to match {method}: {shown}")
    print(f"{args.out}/metrics.json")
    return 0
