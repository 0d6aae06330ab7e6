"""MoCo v2 step throughput (pairs/s): ResNet-18/50 at 64x64 (--size), 5 bands, per layout
and mode.

Variants: precision (fp32 / bf16 autocast), memory format (NCHW / channels_last), eager or
torch.compile'd encoders, each on views already on the device. Then the full input path:
ShardedReader.loader (as pretraining reads: DataLoader workers filling reused shared
buffers, pinned memory, float16 as stored) over a 50-batch survey on local
disk + the augmentations (fused kernels on CUDA) making both views, prefetched one batch
ahead on a side stream (ViewPrefetcher), against the same step on views already on the
device; their ratio is what the input pipeline costs.

The survey read here holds noise images written with the shard writer (the reader's cost
does not depend on pixel values), so the benchmark needs no astropy or synth.

usage: python bench/train_step.py [--device cuda] [--batch 256] [--archs resnet18,resnet50]
           [--variants fp32,bf16-cl,bf16-cl-compile] [--loader-variant bf16-cl-compile]
           [--size 64] [--codes RR,JC,GN,GR,PS] [--out bench/results/train_step-DEV.json]

The demo's CPU setting, against its limit (the bare step on views already in memory):
  python bench/train_step.py --device cpu --archs resnet18 --variants fp32,fp32-cl,bf16,bf16-cl \
      --loader-variant bf16-cl --batch 64 --size 32 --codes RR,JC,GN,PS --workers 0
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import machine_info, sync, write_results

from ssl_hpc.augment import AugmentConfig, Augmenter
from ssl_hpc.augment.stats import sdss_like_stats
from ssl_hpc.data import format as fmt
from ssl_hpc.data.reader import ShardedReader
from ssl_hpc.data.shards import ShardTable, SurveyMeta, build_manifest, write_shard
from ssl_hpc.models import build_encoder
from ssl_hpc.models.moco import MoCo
from ssl_hpc.train.prefetch import ViewPrefetcher
from ssl_hpc.train.step import prepare_model, train_step

STATS = sdss_like_stats()


def parse_variant(name: str) -> dict:
    """'bf16-cl-compile' -> precision bf16, channels_last, compiled."""
    parts = name.split("-")
    return {"precision": parts[0], "channels_last": "cl" in parts, "compile": "compile" in parts}


def build(arch: str, device: torch.device, batch: int, variant: dict):
    torch.manual_seed(0)
    enc = build_encoder(arch, 5)
    model = MoCo(enc, enc.feature_dim, queue_size=batch * 64, momentum=0.999, temperature=0.2)
    model = prepare_model(model, device, variant["channels_last"], variant["compile"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.03 * batch / 256, momentum=0.9, weight_decay=1e-4)
    return model, opt


def time_steps(step, device, warmup: int, steps: int, rounds: int) -> dict:
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm_s = time.perf_counter() - t0
    per_step = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        per_step.append((time.perf_counter() - t) / steps)
    return {
        "s_per_step": statistics.median(per_step),
        "s_per_step_spread": [min(per_step), max(per_step)],
        "warmup_s": warm_s,
    }


def write_noise_survey(root: Path, n: int, rows_per_shard: int = 512) -> None:
    """A survey of `n` noise cutouts (float16, 5x107x107) with catalogue ebv."""
    meta = SurveyMeta("bench-noise", tuple("ugriz"), (107, 107), "float16", None)
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    entries = []
    for i, start in enumerate(range(0, n, rows_per_shard)):
        m = min(rows_per_shard, n - start)
        table = ShardTable(
            np.arange(start, start + m, dtype=np.int64),
            np.zeros(m),
            np.zeros(m),
            (rng.standard_normal((m, 5, 107, 107)) * 0.03).astype(np.float16),
            np.full((m, 5), 1.3, np.float32),
            np.full((m, 5), 0.03, np.float32),
            {"ebv": rng.uniform(0, 0.1, m)},
        )
        entries.append(write_shard(root / fmt.SHARD_PATTERN.format(index=i), table, meta))
    build_manifest(root, meta, entries)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=0, help="pairs per step (0: 256 GPU, 32 CPU)")
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--variants", default="")
    p.add_argument("--loader-variant", default="", help="variant for the full input path")
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--size", type=int, default=64, help="view size in px (default 64)")
    p.add_argument("--codes", default="RR,JC,GN,GR,PS", help="augmentations of the input path")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (256 if gpu else 32)
    steps = args.steps or (15 if gpu else 2)
    variants = (args.variants or ("fp32,bf16-cl,bf16-cl-compile" if gpu else "fp32")).split(",")
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    results = {
        "benchmark": "train_step",
        "machine": machine_info(device),
        "config": {**vars(args), "batch": batch, "steps": steps},
        "runs": {},
    }
    out_path = Path(args.out or f"bench/results/train_step-{device.type}.json")

    def save() -> None:
        write_results(results, out_path)

    g = torch.Generator().manual_seed(0)
    x_q = torch.randn(batch, 5, args.size, args.size, generator=g).to(device)
    x_k = torch.randn(batch, 5, args.size, args.size, generator=g).to(device)
    for arch in args.archs.split(","):
        for name in variants:
            v = parse_variant(name)
            key = f"{arch}/{name}/on-device"
            model = opt = None
            try:
                model, opt = build(arch, device, batch, v)
                r = time_steps(
                    lambda m=model, o=opt, v=v: train_step(
                        m, o, x_q, x_k, v["precision"], v["channels_last"]
                    ),
                    device,
                    warmup=3,
                    steps=steps,
                    rounds=args.rounds,
                )
                r["pairs_per_s"] = batch / r["s_per_step"]
                if gpu:
                    r["max_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
                    torch.cuda.reset_peak_memory_stats()
            except Exception as e:  # keep the other variants' numbers
                r = {"error": f"{type(e).__name__}: {e}"[:2000]}
            results["runs"][key] = r
            save()
            print(f"{key:36s} " + (f"{r['pairs_per_s']:9.1f} pairs/s" if "pairs_per_s" in r
                  else r["error"][:200]), flush=True)  # fmt: skip
            del model, opt

    if args.loader_variant:
        arch = args.archs.split(",")[-1]
        v = parse_variant(args.loader_variant)
        with tempfile.TemporaryDirectory() as tmp:
            write_noise_survey(Path(tmp) / "survey", batch * 50)
            reader = ShardedReader(Path(tmp) / "survey", batch, columns=("ebv",), image_dtype=None)
            aug = Augmenter(AugmentConfig(codes=args.codes, out_size=args.size), STATS, seed=0)
            model, opt = build(arch, device, batch, v)

            def endless():  # epoch after epoch, as pretraining reads (workers start each)
                while True:
                    yield from reader.loader(args.workers, pin_memory=gpu)

            it = endless()
            views = iter(ViewPrefetcher(it, aug, device))  # the same stream of batches

            def full_step() -> None:
                q, k, _ = next(views)
                train_step(model, opt, q, k, v["precision"], v["channels_last"])

            def device_step() -> None:
                train_step(model, opt, x_q, x_k, v["precision"], v["channels_last"])

            def load_step() -> None:
                next(it)["image"].to(device, non_blocking=True)

            def load_augment_step() -> None:
                batch_ = next(it)
                aug.two_views(batch_["image"].to(device, non_blocking=True), batch_)

            # where the time goes: the loader alone, loader + augment, then the whole step
            for name, fn in (("loader", load_step), ("loader+augment-only", load_augment_step)):
                r = time_steps(fn, device, 3, steps, args.rounds)
                r["pairs_per_s"] = batch / r["s_per_step"]
                results["runs"][f"input/{name}"] = r
                print(f"input {name:22s} {r['pairs_per_s']:9.1f} pairs/s", flush=True)
            full = time_steps(full_step, device, 3, steps, args.rounds)
            same = time_steps(device_step, device, 1, steps, args.rounds)
            for r in (full, same):
                r["pairs_per_s"] = batch / r["s_per_step"]
            key = f"{arch}/{args.loader_variant}"
            results["runs"][f"{key}/loader+augment"] = full
            results["runs"][f"{key}/on-device-same-run"] = same
            results["input_pipeline_cost"] = 1 - full["pairs_per_s"] / same["pairs_per_s"]
            print(f"{key}: loader+augment {full['pairs_per_s']:.1f} pairs/s, on-device "
                  f"{same['pairs_per_s']:.1f}: input pipeline costs "
                  f"{100 * results['input_pipeline_cost']:.1f}%", flush=True)  # fmt: skip
    save()
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
