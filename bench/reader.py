"""Reader throughput vs a raw h5py read of the same shards, per storage choice.

For each of float16/float32 x no compression/lzf: the same synthetic images are stored,
then read (a) raw: each shard's whole ``image_array`` in one h5py call, as float32 (the
limit of the format on this disk) and (b) through ``ShardedReader.loader`` (shuffled
batches as training reads them, with 0, 1 and 2 DataLoader workers). Reports images/s,
GB/s of float32 delivered, bytes on disk and reader/raw ratios, both for a whole epoch
(workers' start-up included) and steady (from the first batch on). Files are read warm
(page cache), as training does after the first epoch on a node-local disk; cold reads
from a parallel file system are bounded by its bandwidth instead.

usage: python bench/reader.py [--n 4096] [--size 107] [--batch 128] [--repeats 3]
                             [--out bench/results/reader.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from harness import machine_info, write_results

from ssl_hpc.data import format as fmt
from ssl_hpc.data.reader import ShardedReader
from ssl_hpc.data.shards import ShardTable, SurveyMeta, build_manifest, write_shard
from ssl_hpc.data.survey import Survey
from ssl_hpc.data.synth import SynthConfig, generate_survey

VARIANTS = [("float16", None), ("float16", "lzf"), ("float32", None), ("float32", "lzf")]


def recode(src: Path, dst: Path, dtype: str, compression: str | None) -> None:
    """Copy survey `src` to `dst` with another image dtype / compression."""
    survey = Survey(src)
    m = survey.manifest
    meta = SurveyMeta(
        m.survey,
        m.bands,
        m.image_shape[1:],
        dtype,
        compression,
        roles={k: c.role for k, c in m.columns.items()},
    )
    dst.mkdir(parents=True)
    entries = []
    for i, path in enumerate(survey.shard_paths):
        with h5py.File(path) as f:
            table = ShardTable(
                f[fmt.OBJECT_ID][()],
                f[fmt.RA][()],
                f[fmt.DEC][()],
                f[fmt.IMAGE][()],
                f[fmt.PSF_FWHM][()],
                f[fmt.SKY_SIGMA][()],
                {k: f[k][()] for k in m.columns},
            )
        entries.append(write_shard(dst / fmt.SHARD_PATTERN.format(index=i), table, meta))
    build_manifest(dst, meta, entries)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def reader_epoch(survey: Survey, batch: int, workers: int) -> tuple[float, float]:
    """(seconds for the whole epoch, images/s once the first batch is in): a loader with
    workers pays their start-up once per epoch, which a long epoch hides."""
    reader = ShardedReader(survey, batch_size=batch, seed=0, even=False)
    t0 = time.perf_counter()
    stamps, sizes = [], []
    for b in reader.loader(workers):
        stamps.append(time.perf_counter())
        sizes.append(len(b["image"]))
    steady = sum(sizes[1:]) / (stamps[-1] - stamps[0])
    return stamps[-1] - t0, steady


def measure(survey_dir: Path, repeats: int, batch: int) -> dict:
    survey = Survey(survey_dir)
    n = len(survey)
    f32_bytes = n * int(np.prod(survey.manifest.image_shape)) * 4

    def raw() -> None:
        for p in survey.shard_paths:
            with h5py.File(p) as f:
                f[fmt.IMAGE][()].astype(np.float32)

    out = {"n_images": n, "disk_bytes": sum(s.n_bytes for s in survey.manifest.shards)}
    t_raw = best_of(raw, repeats)
    out["raw"] = {"images_per_s": n / t_raw, "gb_per_s": f32_bytes / t_raw / 1e9}
    for workers in (0, 1, 2):
        runs = [reader_epoch(survey, batch, workers) for _ in range(repeats)]
        t = min(r[0] for r in runs)
        steady = max(r[1] for r in runs)
        out[f"reader_workers{workers}"] = {
            "images_per_s": n / t,
            "gb_per_s": f32_bytes / t / 1e9,
            "ratio_to_raw": t_raw / t,
            "steady_images_per_s": steady,
            "steady_ratio_to_raw": steady * t_raw / n,
        }
    for workers in (1, 2):
        r, r0 = out[f"reader_workers{workers}"], out["reader_workers0"]
        r["steady_ratio_to_0_workers"] = r["steady_images_per_s"] / r0["steady_images_per_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--size", type=int, default=107)
    p.add_argument("--rows-per-shard", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/reader.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {
        "benchmark": "reader",
        "machine": {**machine_info("cpu"), "h5py": h5py.version.version},
        "config": vars(args),
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        generate_survey(
            SynthConfig(
                n_objects=args.n,
                rows_per_shard=args.rows_per_shard,
                image_size=args.size,
                image_dtype="float32",
            ),
            base,
        )
        for dtype, comp in VARIANTS:
            name = f"{dtype}-{comp or 'none'}"
            path = Path(tmp) / name
            recode(base, path, dtype, comp)
            results["variants"][name] = r = measure(path, args.repeats, args.batch)
            line = f"{name:14s} raw {r['raw']['images_per_s']:6.0f} img/s"
            for w in (0, 1, 2):
                x = r[f"reader_workers{w}"]
                line += (
                    f" | {w}w {x['ratio_to_raw']:.2f}x raw (steady {x['steady_ratio_to_raw']:.2f}x)"
                )
            print(line, flush=True)
    out = Path(args.out)
    write_results(results, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
