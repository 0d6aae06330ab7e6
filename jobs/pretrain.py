"""Pretrain a contrastive encoder (MoCo v2, or SimCLR) on a survey with Ray Train.

Workers read their own shards, make two augmented views per galaxy on their device, and
train with DDP (gloo on CPU, NCCL on GPU). Checkpoints every `checkpoint_every` steps hold
the whole state; a crashed worker is restarted from the latest one (`max_failures`), and
rerunning the same command resumes the run. The run directory gets config.yaml,
metrics.csv (loss, lr, pairs/s, kNN morphology accuracy and photo-z sigma_MAD),
encoder.pt and learning_curve.png.

example:
  ssl-hpc pretrain --data runs/demo/survey --out runs/demo/pretrain \\
      --config jobs/configs/pretrain-demo.yaml steps=300
  ssl-hpc pretrain --data /scratch/sdss --out /scratch/run1 --config jobs/configs/pretrain.yaml \\
      num_workers=16 use_gpu=true --address "$RAY_SLURM_ADDRESS"  # as slurm/pretrain.sh does
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.train.config import PretrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="survey directory to train on")
    p.add_argument("--out", required=True, help="run directory (created; a rerun resumes)")
    p.add_argument(
        "--address",
        help="Ray cluster to join, as head ip:port (slurm/pretrain.sh passes the one "
        "cluster/ray_slurm.sh started); default: a local one",
    )
    p.add_argument("--name", default="pretrain", help="Ray Train run name (default pretrain)")
    add_config_arguments(p, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.data.survey import Survey
    from ssl_hpc.train.ray_run import fit
    from ssl_hpc.train.run_dir import SURVEY_FILE
    from ssl_hpc.utils.outdir import check_out_dir

    cfg = config_from_args(PretrainConfig, args)
    check_out_dir(args.out, own=SURVEY_FILE)  # fail here, before Ray starts
    survey = Survey(args.data)  # fail here, naming the survey, before Ray starts
    cfg.check_fits(survey)
    result = fit(cfg, args.data, args.out, address=args.address, name=args.name)
    if result.error is not None:
        print(f"pretraining failed: {result.error}")
        return 1
    m = result.metrics or {}
    summary = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float))
    print(f"{args.out}: step {m.get('step')} ({summary}); encoder at {args.out}/encoder.pt")
    return 0
