"""Embed every galaxy of a survey with a trained encoder (MPI-parallel, resumable).

Each rank embeds whole shards (balanced by rows) with the deterministic centre crop the
encoder was trained at, and each cutout's whole field binned to that size (the `field`
vectors anomaly detection uses; --no-field leaves them out) and the texture of an early
encoder stage (--texture-stage, 0 for none: what finds rings and arcs), on its GPU (bf16)
where there is one, and writes one embedding shard per survey shard, atomically. A rerun
skips finished, intact shards; outputs of another checkpoint or survey are refused. Rank 0
writes EMB/manifest.json at the end.

example:
  ssl-hpc embed --checkpoint runs/demo/pretrain --data runs/demo/survey --out runs/demo/emb
  mpiexec -n 4 ssl-hpc embed --checkpoint RUN --data SURVEY --out EMB --pca 64
  sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-task=1 \\
      --export=ALL,CKPT=RUN,DATA=SURVEY,OUT=EMB slurm/embed.sh
"""

from __future__ import annotations

import argparse

from ssl_hpc.config import add_config_arguments, config_from_args
from ssl_hpc.embed import EmbedOptions

#: the flags people type, onto EmbedOptions' keys
FLAGS = {
    "--batch-size": "batch_size",
    "--device": "device",
    "--pca": "pca_dims",
    "--precision": "precision",
    "--with-head": ("with_head", "true"),
    "--no-field": ("field", "false"),
    "--texture-stage": "texture_stage",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="pretraining run dir or its encoder.pt")
    p.add_argument("--data", required=True, help="survey directory to embed")
    p.add_argument("--out", required=True, help="embedding directory (created; a rerun resumes)")
    add_config_arguments(p, EmbedOptions, FLAGS)


def run(args: argparse.Namespace) -> int:
    from ssl_hpc.embed import embed_survey

    opts = config_from_args(EmbedOptions, args)
    manifest = embed_survey(args.checkpoint, args.data, args.out, opts)
    if manifest is not None:  # rank 0
        made = sum(r["embedded"] for r in manifest["ranks"])
        print(
            f"{args.out}: {manifest['n_objects']} objects x {manifest['dim']} dims in "
            f"{len(manifest['shards'])} shards ({made} embedded now, the rest kept) on "
            f"{len(manifest['ranks'])} rank(s)"
        )
        if "pca" in manifest:
            print(_pca_line(manifest["pca"], opts.pca_dims, manifest["dim"]))
    return 0


def _pca_line(pca: dict, asked: int, dim: int) -> str:
    """What pca.npz holds, and why it holds fewer components than --pca asked for."""
    line = (
        f"pca.npz: {pca['dims']} components from {pca['sample']} objects, "
        f"{pca['explained_variance']:.1%} of the variance"
    )
    if pca["dims"] < asked:
        line += f" (--pca {asked} asked for more than the {min(dim, pca['sample'])} there can be"
        line += f": the embeddings have {dim} dims, the sample {pca['sample']} objects)"
    return line
