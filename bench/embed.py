"""Embedding throughput: images/s for 1 and 2 MPI ranks (CPU), or one GPU in-process.

CPU: a synthetic survey is embedded by `mpiexec -n 1` and `mpiexec -n 2` (one thread per
rank), each into a fresh directory. Rates come from the manifest (rows embedded over the
slowest rank's time in its shard loop, so start-up is excluded; whole-process wall times are
reported too). Parallel efficiency = rate(2) / (2 x rate(1)).
GPU (`--device cuda`): the encoder alone on device-resident batches, bf16 + channels_last,
images/s per GPU (what a rank does once its reader keeps up).

usage: python bench/embed.py [--device cpu|cuda] [--arch resnet18] [--n 2048]
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
from harness import machine_info, write_results

from ssl_hpc.augment.stats import sdss_like_stats
from ssl_hpc.config import build
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.export import write_untrained_encoder


def checkpoint(path: Path, arch: str, crop: int) -> Path:
    config = build(PretrainConfig, {"arch": arch, "augment.out_size": crop})
    return write_untrained_encoder(path, config, sdss_like_stats())


def cpu_scaling(args) -> dict:
    from ssl_hpc.data.synth import SynthConfig, generate_survey

    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        survey = tmp / "survey"
        generate_survey(
            SynthConfig(
                n_objects=args.n,
                rows_per_shard=args.n // 16,
                image_size=args.size,
                seed=1,
                workers=2,
            ),
            survey,
        )
        ckpt = checkpoint(tmp / "encoder.pt", args.arch, args.crop)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SSL_HPC_PROGRESS": "0"}
        for n in (1, 2):
            dest = tmp / f"emb{n}"
            t = time.perf_counter()
            subprocess.run(
                [
                    mpiexec,
                    "-n",
                    str(n),
                    sys.executable,
                    "-m",
                    "jobs.cli",
                    "embed",
                    "--checkpoint",
                    str(ckpt),
                    "--data",
                    str(survey),
                    "--out",
                    str(dest),
                    "--batch-size",
                    "128",
                ],
                check=True,
                env=env,
            )
            wall = time.perf_counter() - t
            m = json.loads((dest / "manifest.json").read_text())
            loop = max(r["seconds"] for r in m["ranks"])
            out[f"ranks_{n}"] = {
                "images": m["n_objects"],
                "loop_s": loop,
                "wall_s": wall,
                "images_per_s": m["n_objects"] / loop,
                "images_per_s_wall": m["n_objects"] / wall,
            }
            print(
                f"{n} rank(s): {out[f'ranks_{n}']['images_per_s']:.1f} images/s "
                f"(wall {wall:.1f} s)",
                flush=True,
            )
    r1, r2 = out["ranks_1"]["images_per_s"], out["ranks_2"]["images_per_s"]
    out["parallel_efficiency"] = r2 / (2 * r1)
    out["parallel_efficiency_wall"] = out["ranks_2"]["images_per_s_wall"] / (
        2 * out["ranks_1"]["images_per_s_wall"]
    )
    return out


def gpu_rate(args) -> dict:
    from ssl_hpc.models import build_encoder

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    enc = build_encoder(args.arch, 5).to(dev).eval().to(memory_format=torch.channels_last)
    out = {}
    for batch in (512, 2048):
        x = torch.randn(batch, 5, args.crop, args.crop, device=dev).contiguous(
            memory_format=torch.channels_last
        )
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):
                enc(x)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(10):
                enc(x)
            torch.cuda.synchronize()
        out[f"batch_{batch}"] = {"images_per_s": 10 * batch / (time.perf_counter() - t)}
        print(f"{args.arch} batch {batch}: {out[f'batch_{batch}']['images_per_s']:,.0f} images/s")
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
    p.add_argument("--out", default=None)
    args = p.parse_args()
    gpu = args.device == "cuda"
    args.arch = args.arch or ("resnet50" if gpu else "resnet18")
    args.crop = args.crop or (64 if gpu else 32)
    results = {
        "benchmark": "embed",
        "machine": machine_info(args.device),
        "config": vars(args),
        "results": gpu_rate(args) if gpu else cpu_scaling(args),
    }
    path = write_results(results, args.out or f"bench/results/embed-{args.device}.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
