"""MMU ingest throughput vs a raw h5py read of the same Multimodal Universe files.

A synthetic survey is rewritten as an MMU tree (gzip-compressed, per-band masks and
ivar, HEALPix nside-16 files), then (a) raw: every file's datasets that ingest reads
(image_array, image_ivar, image_mask, image_scale, image_psf_fwhm and the 1-D catalogue
columns) read whole with h5py, the limit of the files on this disk; (b) ``ssl-hpc
ingest`` of the tree into a fresh survey (1 worker; and `--workers` if more), which also
fills masked pixels, measures the noise, crops and writes and hashes the shards. Reports
objects/s, MB/s of input (uncompressed bytes of the datasets read, and bytes on disk)
and ingest/raw ratios. Files are read warm (page cache), best of `repeats`.

usage: python bench/ingest.py [--n 4096] [--size 152] [--bands 5] [--repeats 3] [--patch 8]
                             [--workers 1 2] [--out bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import h5py
from harness import machine_info, write_results

from ssl_hpc.data.ingest import IngestConfig, ingest
from ssl_hpc.data.synth import SynthConfig, generate_survey
from ssl_hpc.data.synth.mmu_tree import write_mmu_tree

READ = ("image_array", "image_ivar", "image_mask", "image_scale", "image_psf_fwhm")


def raw_read(files: list[Path]) -> int:
    """Read every dataset ingest needs from every file, whole; returns the bytes read."""
    total = 0
    for path in files:
        with h5py.File(path, "r") as f:
            for name, ds in f.items():
                if name in READ or ds.ndim == 1:
                    total += ds[()].nbytes
    return total


def best_of(repeats: int, fn) -> tuple[float, object]:
    """(fastest wall time, the last result) of `repeats` calls of `fn`."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--size", type=int, default=152, help="cutout side, px (Legacy Surveys: 152)")
    p.add_argument("--bands", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--patch",
        type=float,
        default=8.0,
        help="side of the sky patch, deg: 8 puts ~370 objects in each nside-16 file for "
        "4,096 objects (real MMU files hold thousands)",
    )
    p.add_argument("--out", default="bench/results/ingest.json")
    args = p.parse_args()
    bands = ("u", "g", "r", "i", "z")[: args.bands]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        cfg = SynthConfig(
            n_objects=args.n,
            image_size=args.size,
            bands=bands,
            rows_per_shard=512,
            workers=2,
            footprint=(150.0, 150.0 + args.patch, 0.0, args.patch),
        )
        generate_survey(cfg, tmp / "synth")
        tree = write_mmu_tree(tmp / "synth", tmp / "mmu", band_prefix="ls")
        files = sorted(tree.files)
        on_disk = sum(p.stat().st_size for p in files)
        raw_s, raw_bytes = best_of(args.repeats, lambda: raw_read(files))
        results = {
            "machine": {**machine_info("cpu"), "h5py": h5py.version.version},
            "config": vars(args),
            "input": {
                "objects": args.n,
                "files": len(files),
                "bytes_on_disk": on_disk,
                "bytes_uncompressed": raw_bytes,
                "compression": "gzip",
            },
            "raw_h5py": {
                "seconds": raw_s,
                "objects_per_s": args.n / raw_s,
                "mb_per_s": raw_bytes / raw_s / 1e6,
            },
            "ingest": {},
        }
        for workers in args.workers:

            def run(workers=workers):
                out = tmp / f"survey-{workers}"
                shutil.rmtree(out, ignore_errors=True)
                return ingest(IngestConfig(images=str(tree.root), out=str(out), workers=workers))

            seconds, report = best_of(args.repeats, run)
            assert report.n_ingested == args.n, report.n_ingested
            rate = args.n / seconds
            results["ingest"][f"workers={workers}"] = {
                "seconds": seconds,
                "objects_per_s": rate,
                "mb_per_s": raw_bytes / seconds / 1e6,
                "ratio_to_raw": rate / results["raw_h5py"]["objects_per_s"],
            }
            print(
                f"ingest workers={workers}: {rate:,.0f} obj/s, "
                f"{raw_bytes / seconds / 1e6:,.0f} MB/s; raw h5py "
                f"{results['raw_h5py']['objects_per_s']:,.0f} obj/s: "
                f"{rate / results['raw_h5py']['objects_per_s']:.2f}x"
            )
        write_results(results, args.out)
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
