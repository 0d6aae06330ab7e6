"""Survey embedding against its limit: `ssl-hpc embed` images/s beside the bare model's
forward rate, measured in the same process.

A synthetic survey and an untrained encoder are made once. For each precision (fp32,
and bf16 where the device runs it natively) and rank count (CPU: 1 and 2 MPI ranks via
mpiexec; GPU: one process), every rank first times the bare encoder on random batches
already in memory (same batch size, crop, precision, channels_last and threads as embed
uses: the limit), then runs the real embedding job from the shards in the same process.
Rates: embed = objects over the slowest rank's shard loop (start-up excluded; whole
process wall time reported too); each object is two forward passes when the field views
are on (the default), so the limit in objects/s is the forward rate / 2.

usage: python bench/embed.py [--device cpu|cuda] [--arch resnet18] [--n 2048]
                             [--size 48] [--crop 32] [--no-field]
                             [--out bench/results/embed-DEV.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import machine_info, sync, write_results

from ssl_hpc.augment.stats import sdss_like_stats
from ssl_hpc.config import build
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.export import write_untrained_encoder


def bare_rate(checkpoint: Path, device: torch.device, batch: int, precision: str) -> float:
    """Forward passes/s of the checkpoint's encoder alone on a batch already in memory."""
    from ssl_hpc.models.checkpoint import EncoderCheckpoint
    from ssl_hpc.models.inference import autocast

    ckpt = EncoderCheckpoint(checkpoint)
    encoder = ckpt.encoder(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, ckpt.in_channels, ckpt.crop, ckpt.crop, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    rounds = 20 if device.type == "cuda" else 4
    with torch.no_grad(), autocast(device, precision):
        encoder(x)  # warm-up (oneDNN / cuDNN pick their kernels here)
        sync(device)
        t = time.perf_counter()
        for _ in range(rounds):
            encoder(x)
        sync(device)
    return rounds * batch / (time.perf_counter() - t)


def rank_job(args) -> None:
    """One rank (under mpiexec, or alone): the bare rate, then the real job; rank 0 writes
    both to args.rank_job's result file."""
    from ssl_hpc.embed.run import Comm, EmbedOptions, embed_survey, pick_device, rank_threads

    work = Path(args.rank_job)
    comm = Comm()
    device = pick_device(args.device, comm.rank)
    if device.type == "cpu":
        torch.set_num_threads(rank_threads(comm.node_size))  # what embed_survey sets
    rate = bare_rate(work / "encoder.pt", device, args.batch, args.precision)
    comm.allgather(None)  # every rank's model timing done before any embedding starts
    t = time.perf_counter()
    opts = EmbedOptions(
        batch_size=args.batch, device=args.device, precision=args.precision, field=args.field
    )
    embed_survey(work / "encoder.pt", work / "survey", work / args.dest, opts, comm)
    wall = time.perf_counter() - t
    rates = comm.gather({"bare_forwards_per_s": rate, "threads": torch.get_num_threads()})
    if comm.rank == 0:
        (work / f"{args.dest}.json").write_text(json.dumps({"ranks": rates, "wall_s": wall}))


def measure(work: Path, args, ranks: int, precision: str) -> dict:
    dest = f"emb-{ranks}-{precision}"
    cmd = [sys.executable, __file__, "--rank-job", str(work), "--dest", dest]
    cmd += ["--device", args.device, "--precision", precision, "--batch", str(args.batch)]
    cmd += [] if args.field else ["--no-field"]
    if args.device == "cpu":
        search = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        cmd = [shutil.which("mpiexec", path=search), "-n", str(ranks), *cmd]
    env = {**os.environ, "SSL_HPC_PROGRESS": "0"}
    env.pop("OMP_NUM_THREADS", None)  # threads per rank as embed sets them
    subprocess.run(cmd, check=True, env=env)
    timing = json.loads((work / f"{dest}.json").read_text())
    manifest = json.loads((work / dest / "manifest.json").read_text())
    objects = manifest["n_objects"]
    loop = max(r["seconds"] for r in manifest["ranks"])
    passes = 2 if manifest["field"] else 1
    bare = sum(r["bare_forwards_per_s"] for r in timing["ranks"])
    out = {
        "ranks": ranks,
        "precision": manifest["precision"],
        "threads_per_rank": [r["threads"] for r in timing["ranks"]],
        "forward_passes_per_object": passes,
        "objects": objects,
        "loop_s": loop,
        "wall_s": timing["wall_s"],
        "objects_per_s": objects / loop,
        "objects_per_s_wall": objects / timing["wall_s"],
        "bare_forwards_per_s": bare,
        "limit_objects_per_s": bare / passes,
    }
    out["ratio_to_limit"] = out["objects_per_s"] / out["limit_objects_per_s"]
    print(
        f"{ranks} rank(s) {out['precision']}: embed {out['objects_per_s']:,.1f} objects/s, "
        f"bare model {out['limit_objects_per_s']:,.1f} objects/s ({bare:,.1f} forwards/s): "
        f"{out['ratio_to_limit']:.2f}x the limit",
        flush=True,
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default=None, help="default resnet18 on CPU, resnet50 on GPU")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--crop", type=int, default=0, help="default 32 on CPU, 64 on GPU")
    p.add_argument("--batch", type=int, default=0, help="default 128 on CPU, 1024 on GPU")
    p.add_argument("--no-field", dest="field", action="store_false")
    p.add_argument("--out", default=None)
    p.add_argument("--rank-job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dest", default=None, help=argparse.SUPPRESS)
    p.add_argument("--precision", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    args.batch = args.batch or (1024 if gpu else 128)
    if args.rank_job:
        return rank_job(args)
    from ssl_hpc.data.synth import SynthConfig, generate_survey
    from ssl_hpc.utils.hardware import resolve_precision

    args.arch = args.arch or ("resnet50" if gpu else "resnet18")
    args.crop = args.crop or (64 if gpu else 32)
    precisions = sorted({"fp32", resolve_precision("auto", torch.device(args.device))})
    results = {
        "benchmark": "embed",
        "machine": machine_info(args.device),
        "config": vars(args),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shards = 16
        synth = SynthConfig(
            n_objects=args.n, rows_per_shard=args.n // shards, image_size=args.size, seed=1
        )
        generate_survey(synth, work / "survey")
        config = build(PretrainConfig, {"arch": args.arch, "augment.out_size": args.crop})
        write_untrained_encoder(work / "encoder.pt", config, sdss_like_stats())
        for precision in precisions:
            for ranks in (1,) if gpu else (1, 2):
                results["runs"].append(measure(work, args, ranks, precision))
    path = write_results(results, args.out or f"bench/results/embed-{args.device}.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
