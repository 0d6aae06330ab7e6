"""Reader throughput vs a raw h5py read of the same shards, per storage choice.

For each of float16/float32 x no compression/lzf: the same synthetic images are stored,
then read (a) raw: each shard's whole ``image_array`` in one h5py call (the limit of the
format on this disk) and (b) through ``ShardedReader`` (shuffled batches as training
reads them, with 0 and 2 DataLoader workers). Reports images/s, GB/s of float32 delivered,
bytes on disk, and reader/raw ratios. Files are read warm (page cache), as training does
after the first epoch on a node-local disk; cold reads from a parallel file system are
bounded by its bandwidth instead.

usage: python bench/reader.py [--n 2048] [--size 107] [--repeats 3]
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
from torch.utils.data import DataLoader

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


def measure(survey_dir: Path, repeats: int, batch: int) -> dict:
    survey = Survey(survey_dir)
    n = len(survey)
    f32_bytes = n * int(np.prod(survey.manifest.image_shape)) * 4

    def raw() -> None:
        for p in survey.shard_paths:
            with h5py.File(p) as f:
                f[fmt.IMAGE][()].astype(np.float32)

    def through_reader(workers: int) -> None:
        reader = ShardedReader(survey, batch_size=batch, seed=0, even=False)
        for b in DataLoader(reader, batch_size=None, num_workers=workers):
            b["image"].sum()

    out = {"n_images": n, "disk_bytes": sum(s.n_bytes for s in survey.manifest.shards)}
    t_raw = best_of(raw, repeats)
    out["raw"] = {"images_per_s": n / t_raw, "gb_per_s": f32_bytes / t_raw / 1e9}
    for workers in (0, 2):
        t = best_of(lambda w=workers: through_reader(w), repeats)
        out[f"reader_workers{workers}"] = {
            "images_per_s": n / t,
            "gb_per_s": f32_bytes / t / 1e9,
            "ratio_to_raw": t_raw / t,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--size", type=int, default=107)
    p.add_argument("--rows-per-shard", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
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
            print(
                f"{name:14s} disk {r['disk_bytes'] / 2**20:7.1f} MiB  raw "
                f"{r['raw']['images_per_s']:8.0f} img/s  reader(0w) "
                f"{r['reader_workers0']['images_per_s']:7.0f} img/s "
                f"({r['reader_workers0']['ratio_to_raw']:.2f}x raw)  reader(2w) "
                f"{r['reader_workers2']['images_per_s']:7.0f} img/s "
                f"({r['reader_workers2']['ratio_to_raw']:.2f}x raw)",
                flush=True,
            )
    out = Path(args.out)
    write_results(results, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
