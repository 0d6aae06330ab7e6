"""The ingest job: the catalogue's rows cut into shards, each read, checked and written by
one worker of a sharded job (`data.sharded_job`), then the rejects and the manifest.

Resume: the job's identity is the config (every option but ``workers``, paths made
absolute), kept in ``OUT/job.json``; each shard's done-record also holds a hash of its
catalogue rows. A rerun keeps a shard whose record matches both and whose file is intact,
and redoes the rest; a rerun with other options into the same directory is refused. Image
files of finished shards are not re-read, so delete a shard to redo it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...config import to_dict
from ...errors import IngestError
from ...utils.atomic import write_text_atomic
from .. import format as fmt
from ..cutouts import CutoutError, CutoutSpec, load_cutout, sky_sigma
from ..manifest import Manifest, ShardEntry
from ..sharded_job import ShardPlan, claim_dir, done_path, remove_temporaries, run_shards
from ..shards import ShardTable, SurveyMeta, build_manifest, write_shard
from .catalogue import Catalogue, Reject, label_roles, load_catalogue
from .config import IngestConfig
from .layout import resolve_layout, survey_meta

JOB = "ssl-hpc ingest"
REJECTS_NAME = "rejects.csv"
FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did: counts, where things went, and what it left out."""

    out: Path
    n_ingested: int
    rejects: tuple[Reject, ...]
    shards_written: int
    shards_skipped: int
    rejects_path: Path
    image_format: str
    pattern: str
    column_map: dict[str, str]  # canonical name -> catalogue column
    skipped_columns: dict[str, str]  # catalogue column -> why it was not copied
    manifest: Manifest

    @property
    def n_rejected(self) -> int:
        return len(self.rejects)


@dataclass(frozen=True)
class ShardTask:
    """One shard's catalogue rows and everything a worker needs to write it."""

    object_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    columns: dict[str, np.ndarray]
    spec: CutoutSpec
    meta: SurveyMeta
    psf_fwhm: np.ndarray  # (B,) float32 arcsec
    attrs: dict[str, Any]
    skip_bad: bool


def ingest_shard(plan: ShardPlan, progress) -> tuple[ShardEntry, dict]:
    """Read, check and write one shard (the job's `make`); bad objects raise (fail mode)
    or are rejected. Polls for a failure elsewhere before each object."""
    task: ShardTask = plan.payload
    spec, meta = task.spec, task.meta
    n, b = len(task.object_id), len(meta.bands)
    images = np.zeros((n, b, *meta.image_size), dtype=np.float32)
    sigma = np.zeros((n, b), dtype=np.float32)
    keep = np.zeros(n, dtype=bool)
    rejects: list[Reject] = []
    for i, object_id in enumerate(task.object_id.tolist()):
        progress.check()
        try:
            images[i] = load_cutout(spec, object_id)
        except CutoutError as e:
            if not task.skip_bad:
                raise
            rejects.append(Reject(object_id, e.file, e.reason))
        else:
            check_dtype_range(images[i], meta.image_dtype, object_id, spec)
            sigma[i] = sky_sigma(images[i])
            keep[i] = True
        progress.tick(1)
    table = ShardTable(
        object_id=task.object_id[keep],
        ra=task.ra[keep],
        dec=task.dec[keep],
        images=images[keep],
        psf_fwhm=np.tile(task.psf_fwhm, (int(keep.sum()), 1)),
        sky_sigma=sigma[keep],
        columns={k: v[keep] for k, v in task.columns.items()},
    )
    attrs = {**task.attrs, "ingest_rejects": json.dumps([list(r) for r in rejects])}
    entry = write_shard(plan.path, table, meta, attrs=attrs)
    return entry, {"rejects": [list(r) for r in rejects]}


def check_dtype_range(image: np.ndarray, dtype: str, object_id: int, spec: CutoutSpec) -> None:
    """IngestError (fatal in either mode: it is a config problem) if float16 would overflow."""
    peak = float(np.abs(image).max(initial=0))
    if dtype == "float16" and peak > FLOAT16_MAX:
        raise IngestError(
            f"object {object_id} ({spec.paths(object_id)[0]}): pixel values up to {peak:.4g} "
            f"overflow float16 (max {FLOAT16_MAX:g}); use image_dtype float32"
        )


def rows_digest(
    object_id: np.ndarray, ra: np.ndarray, dec: np.ndarray, columns: dict[str, np.ndarray]
) -> str:
    """sha256 of a shard's catalogue rows (ids, positions, every column's name and values)."""
    h = hashlib.sha256()
    for name, values in [
        ("object_id", object_id),
        ("ra", ra),
        ("dec", dec),
        *sorted(columns.items()),
    ]:
        h.update(f"{name}:{values.dtype.str}:".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def plan_shards(
    catalogue: Catalogue, config: IngestConfig, spec: CutoutSpec, meta: SurveyMeta, digest: str
) -> list[ShardPlan]:
    """The catalogue's rows cut into shards of `rows_per_shard`, in catalogue order."""
    psf = np.full(len(config.bands), np.nan, dtype=np.float32)
    psf[:] = config.psf_fwhm or np.nan
    plans = []
    for index, start in enumerate(range(0, len(catalogue.object_id), config.rows_per_shard)):
        rows = slice(start, start + config.rows_per_shard)
        ids, ra, dec = catalogue.object_id[rows], catalogue.ra[rows], catalogue.dec[rows]
        columns = {k: v[rows] for k, v in catalogue.columns.items()}
        inputs = rows_digest(ids, ra, dec, columns)
        attrs = {"config_sha": digest, "shard_index": index, "generator": JOB}
        task = ShardTask(ids, ra, dec, columns, spec, meta, psf, attrs, config.on_error == "skip")
        path = str(Path(config.out) / fmt.SHARD_PATTERN.format(index=index))
        plans.append(ShardPlan(index, path, len(ids), task, inputs))
    return plans


def hashed_config(config: IngestConfig) -> dict[str, Any]:
    """The config as the resume hash sees it: absolute paths, no `workers`."""
    d = to_dict(config)
    del d["workers"]
    for name in ("catalog", "images", "out"):
        d[name] = os.path.abspath(d[name])
    return d


def remove_unplanned(out: Path, plans: list[ShardPlan]) -> None:
    """Delete shards (and their records) this plan no longer has: a shorter catalogue."""
    planned = {Path(p.path).name for p in plans}
    for path in out.glob("shard-*.h5"):
        if path.name not in planned:
            path.unlink()
            done_path(path).unlink(missing_ok=True)


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    """``rejects.csv`` (object_id, file, reason), atomically; header only if none."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(Reject._fields)
    writer.writerows(
        ["" if r.object_id is None else r.object_id, r.file, r.reason] for r in rejects
    )
    write_text_atomic(path, buf.getvalue())


def ingest(config: IngestConfig) -> IngestReport:
    """Build (or resume) the survey in ``config.out`` from a catalogue and its cutouts.

    Raises IngestError for a bad catalogue or (fail mode) the first object that cannot
    be read, naming the object and file, and JobError for a refused out dir; finished
    shards stay on disk.
    """
    catalogue = load_catalogue(config)
    image_format, pattern = resolve_layout(config, catalogue.object_id)
    spec = CutoutSpec(
        config.images, image_format, pattern, config.bands, config.crop, config.resize
    )
    meta = survey_meta(config, spec, label_roles(config, catalogue))
    out = Path(config.out)
    hashed = hashed_config(config)
    digest = claim_dir(out, JOB, hashed, {"version": __version__})
    plans = plan_shards(catalogue, config, spec, meta, digest)
    remove_temporaries(out)
    remove_unplanned(out, plans)
    kept, made = run_shards(plans, ingest_shard, digest, config.workers, "ingest", "obj")
    results = sorted(kept + made, key=lambda r: r.index)
    rejects = catalogue.rejects + [Reject(*r) for res in results for r in res.extra["rejects"]]
    write_rejects(out / REJECTS_NAME, rejects)
    n_ingested = sum(r.entry.n_rows for r in results)
    if n_ingested == 0:
        raise IngestError(f"no object could be ingested; reasons in {out / REJECTS_NAME}")
    generator = {
        "command": JOB,
        "version": __version__,
        "config": {**hashed, "workers": config.workers},
        "config_hash": digest,
        "image_format": image_format,
        "pattern": pattern,
        "column_map": catalogue.column_map,
    }
    manifest = build_manifest(out, meta, [r.entry for r in results], generator)
    return IngestReport(
        out=out,
        n_ingested=n_ingested,
        rejects=tuple(rejects),
        shards_written=len(made),
        shards_skipped=len(kept),
        rejects_path=out / REJECTS_NAME,
        image_format=image_format,
        pattern=pattern,
        column_map=catalogue.column_map,
        skipped_columns=catalogue.skipped_columns,
        manifest=manifest,
    )
