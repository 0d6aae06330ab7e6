"""A survey's summary (counts, bands, image shape, storage and label coverage), and the
pixel check the cheap verification leaves out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import read_error
from ..utils.progress import progress
from . import format as fmt
from .manifest import load_manifest
from .survey import open_shard


def summarize(survey_dir: str | os.PathLike) -> dict[str, Any]:
    """Facts about a survey from its manifest (reads no shard)."""
    m = load_manifest(survey_dir)
    n = m.n_objects
    n_bytes = sum(s.n_bytes for s in m.shards)
    rows = [s.n_rows for s in m.shards]
    return {
        "survey": m.survey,
        "path": str(Path(survey_dir)),
        "schema_version": m.schema_version,
        "n_objects": n,
        "n_shards": len(m.shards),
        "rows_per_shard": {"min": min(rows, default=0), "max": max(rows, default=0)},
        "bands": list(m.bands),
        "image_shape": list(m.image_shape),
        "image_dtype": m.image_dtype,
        "compression": m.compression,
        "pixel_scale_arcsec": m.pixel_scale_arcsec,
        "flux_unit": m.flux_unit,
        "partition": m.partition,
        "healpix_pixels": len({sh.healpix for sh in m.shards}) if m.partition else 0,
        "bytes": n_bytes,
        "labels": {k: {"n": v, "fraction": v / n if n else 0.0} for k, v in m.labels.items()},
        "columns": {k: {"role": c.role, "dtype": c.dtype} for k, c in m.columns.items()},
    }


def nonfinite_pixels(survey_dir: str | os.PathLike, block: int = 256) -> list[str]:
    """One line per shard holding objects with NaN or inf pixels (the format forbids them;
    a network fed one trains to NaN), naming the shard, the count and the first ids. Reads
    every pixel: as much I/O as re-hashing the shards."""
    m = load_manifest(survey_dir)
    problems = []
    with progress(total=m.n_objects, desc="pixels", unit="obj") as bar:
        for entry in m.shards:
            path = Path(survey_dir) / entry.file
            bad: list[np.ndarray] = []
            with open_shard(path) as f:
                images, ids = f[fmt.IMAGE], f[fmt.OBJECT_ID]
                for start in range(0, images.shape[0], block):
                    try:
                        pixels = images[start : start + block]
                    except OSError as e:  # HDF5's filters fail on damaged bytes
                        rows = f"rows {start}-{min(start + block, images.shape[0]) - 1}"
                        message = f"{path}: cannot read {fmt.IMAGE!r} {rows} ({e})"
                        raise read_error(message, e) from e
                    finite = np.isfinite(pixels).reshape(len(pixels), -1).all(axis=1)
                    bad.append(ids[start : start + block][~finite])
                    bar.update(len(pixels))
            bad_ids = np.concatenate(bad) if bad else np.empty(0, np.int64)
            if len(bad_ids):
                first = ", ".join(str(i) for i in bad_ids[:5])
                problems.append(
                    f"{path}: {len(bad_ids)} object(s) with NaN or inf pixels (ids {first}"
                    + (", ...)" if len(bad_ids) > 5 else ")")
                )
    return problems


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a short human-readable report."""
    b, h, w = s["image_shape"]
    lines = [
        f"survey       {s['survey']}  ({s['path']}, schema v{s['schema_version']})",
        f"objects      {s['n_objects']:,} in {s['n_shards']} shards "
        f"({s['rows_per_shard']['min']}-{s['rows_per_shard']['max']} rows each)",
        f"images       {b} bands {','.join(s['bands'])} x {h}x{w} px, {s['image_dtype']}, "
        f'compression {s["compression"] or "none"}, {s["pixel_scale_arcsec"]}"/px, '
        f"{s['flux_unit']}",
        f"storage      {s['bytes'] / 2**20:,.1f} MiB",
        "partition    "
        + (
            f"HEALPix order {s['partition']['order']} nested "
            f"(nside {2 ** s['partition']['order']}), {s['healpix_pixels']} pixels"
            if s["partition"]
            else "none (shards in input order)"
        ),
        "labels       "
        + (
            ", ".join(
                f"{k} {v['n']:,} ({100 * v['fraction']:.1f}%)" for k, v in s["labels"].items()
            )
            or "none"
        ),
    ]
    by_role: dict[str, list[str]] = {}
    for name, c in s["columns"].items():
        by_role.setdefault(c["role"], []).append(name)
    for role in ("catalogue", "truth"):
        if role in by_role:
            lines.append(f"{role:<12} {', '.join(by_role[role])}")
    if "problems" in s:
        if s["problems"]:
            lines.append(f"VERIFY FAILED ({s['verified']}): {len(s['problems'])} problem(s)")
            lines += [f"  {p}" for p in s["problems"]]
        else:
            lines.append(f"verified     every shard matches the manifest ({s['verified']})")
    return "\n".join(lines)


@dataclass(frozen=True)
class InfoConfig:
    """How `ssl-hpc info` checks a survey and prints it."""

    quick: bool = False
    """check sizes, row counts and shapes only; skip re-hashing every shard (sha256)"""
    json: bool = False
    """print the summary as JSON"""
    pixels: bool = False
    """also read every pixel and name the objects with NaN or inf ones (the format forbids
    them; as much I/O again as the sha256 check)"""
