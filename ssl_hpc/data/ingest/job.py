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
from ...utils.hashing import sha256_json
from .. import format as fmt
from .. import healpix
from ..cutouts import CutoutError, CutoutSpec, load_cutout, sky_sigma
from ..manifest import Manifest, ShardEntry, load_manifest
from ..sharded_job import (
    JOB_FILE,
    ShardPlan,
    claim_dir,
    done_path,
    remove_temporaries,
    run_shards,
)
from ..shards import ShardTable, SurveyMeta, build_manifest, write_shard
from .arrays import ArraySource, detect_kind, file_stamp, find_files, load_array_input
from .catalogue import Catalogue, Reject, label_roles, load_catalogue
from .config import IngestConfig, resampled_size
from .layout import resolve_layout, survey_meta
from .pixels import N_MASKED, LoadedRows, load_rows

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
    """One shard's catalogue rows and everything a worker needs to write it: a cutout
    spec (a file per object) or an array source with each row's (file, row) locator."""

    object_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    columns: dict[str, np.ndarray]
    images: CutoutSpec | ArraySource
    meta: SurveyMeta
    psf_fwhm: np.ndarray  # (B,) float32 arcsec
    attrs: dict[str, Any]
    skip_bad: bool
    locator: np.ndarray | None = None  # (n, 2) int64, array sources


def ingest_shard(plan: ShardPlan, progress) -> tuple[ShardEntry, dict]:
    """Read, check and write one shard (the job's `make`); bad objects raise (fail mode)
    or are rejected. Polls for a failure elsewhere before each object or block."""
    task: ShardTask = plan.payload
    if isinstance(task.images, ArraySource):
        loaded = load_rows(task.images, task.locator, task.object_id, task.skip_bad, progress)
    else:
        loaded = load_cutouts(task, progress)
    keep, meta = loaded.keep, task.meta
    if meta.image_dtype == "float16":
        for i in np.flatnonzero(keep):
            oid = int(task.object_id[i])
            where = (
                task.images.files[task.locator[i, 0]]
                if isinstance(task.images, ArraySource)
                else task.images.paths(oid)[0]
            )
            check_dtype_range(loaded.images[i], loaded.sky_sigma[i], meta.image_dtype, oid, where)
    columns = dict(task.columns)
    if isinstance(task.images, ArraySource) and task.images.kind == "mmu":
        columns[N_MASKED] = loaded.n_masked
    kept = slice(None) if keep.all() else keep  # a slice: no copy of the images
    table = ShardTable(
        object_id=task.object_id[kept],
        ra=task.ra[kept],
        dec=task.dec[kept],
        images=loaded.images[kept],
        psf_fwhm=loaded.psf_fwhm[kept],
        sky_sigma=loaded.sky_sigma[kept],
        columns={k: v[kept] for k, v in columns.items()},
    )
    rejects = loaded.rejects
    attrs = {**task.attrs, "ingest_rejects": json.dumps([list(r) for r in rejects])}
    entry = write_shard(plan.path, table, meta, attrs=attrs)
    return entry, {"rejects": [list(r) for r in rejects]}


def load_cutouts(task: ShardTask, progress) -> LoadedRows:
    """A shard's objects read from their own files (`task.images`, a CutoutSpec)."""
    n, b = len(task.object_id), len(task.meta.bands)
    out = LoadedRows(
        images=np.zeros((n, b, *task.meta.image_size), dtype=np.float32),
        sky_sigma=np.zeros((n, b), dtype=np.float32),
        psf_fwhm=np.tile(task.psf_fwhm, (n, 1)),
        n_masked=np.zeros(n, np.int64),
        keep=np.zeros(n, dtype=bool),
        rejects=[],
    )
    for i, object_id in enumerate(task.object_id.tolist()):
        progress.check()
        try:
            out.images[i] = load_cutout(task.images, object_id)
        except CutoutError as e:
            if not task.skip_bad:
                raise
            out.rejects.append(Reject(object_id, e.file, e.reason))
        else:
            out.sky_sigma[i] = sky_sigma(out.images[i])
            out.keep[i] = True
        progress.tick(1)
    return out


#: float16's spacing near zero (its subnormals): sky noise under 100 of these steps is
#: quantised by more than 1% of itself, and in maggies (~1e-11) it rounds to zero entirely
FLOAT16_STEP = 2.0**-24


def check_dtype_range(
    image: np.ndarray, sky: np.ndarray, dtype: str, object_id: int, file: str
) -> None:
    """IngestError (fatal in either mode: it is a config problem) if float16 would
    overflow `image`, or could not resolve its sky noise `sky` (per band)."""
    if dtype != "float16":
        return
    peak = float(np.abs(image).max(initial=0))
    if peak > FLOAT16_MAX:
        raise IngestError(
            f"object {object_id} ({file}): pixel values up to {peak:.4g} "
            f"overflow float16 (max {FLOAT16_MAX:g}); use image_dtype float32"
        )
    faint = sky[(sky > 0) & (sky < 100 * FLOAT16_STEP)]
    if len(faint):
        raise IngestError(
            f"object {object_id} ({file}): sky noise {float(faint.min()):.3g} is below what "
            f"float16 resolves (steps of {FLOAT16_STEP:.2g} near zero: the pixels would round "
            "away); use image_dtype float32"
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
    catalogue: Catalogue,
    config: IngestConfig,
    images: CutoutSpec | ArraySource,
    meta: SurveyMeta,
    digest: str,
    locator: np.ndarray | None = None,
) -> list[ShardPlan]:
    """The catalogue's rows cut into shards of at most `rows_per_shard`: in catalogue
    order, or with `healpix_order` grouped by sky pixel (a ``healpix`` column is added)."""
    psf = np.full(len(meta.bands), np.nan, dtype=np.float32)
    psf[:] = config.psf_fwhm or np.nan
    columns_all = dict(catalogue.columns)
    groups, pixel = healpix.shard_rows(
        catalogue.ra, catalogue.dec, config.rows_per_shard, config.healpix_order
    )
    if pixel is not None:
        columns_all[fmt.HEALPIX] = pixel
    plans = []
    for index, rows in enumerate(groups):
        ids, ra, dec = catalogue.object_id[rows], catalogue.ra[rows], catalogue.dec[rows]
        columns = {k: v[rows] for k, v in columns_all.items()}
        inputs = rows_digest(ids, ra, dec, columns)
        where = None if locator is None else locator[rows]
        if where is not None:  # the files' sizes and times: a replaced file redoes its shards
            used = [images.files[i] for i in np.unique(where[:, 0])]
            inputs = sha256_json([inputs, file_stamp(used), where.tolist()])
        attrs = {"config_sha": digest, "shard_index": index, "generator": JOB}
        skip = config.on_error == "skip"
        task = ShardTask(ids, ra, dec, columns, images, meta, psf, attrs, skip, where)
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
    """Build (or resume) the survey in ``config.out`` from a catalogue and its cutouts, or
    from array HDF5 files (Multimodal Universe trees, plain image arrays).

    Raises IngestError for a bad catalogue or input file or (fail mode) the first object
    that cannot be read, naming the object and file, and JobError for a refused out dir;
    finished shards stay on disk.
    """
    prepared = _prepare_arrays(config) if config.arrays else _prepare_cutouts(config)
    catalogue, images, meta, locator, rejects_before, described = prepared
    out = Path(config.out)
    hashed = hashed_config(config)
    digest = claim_dir(out, JOB, hashed, {"version": __version__})
    plans = plan_shards(catalogue, config, images, meta, digest, locator)
    remove_temporaries(out)
    remove_unplanned(out, plans)
    kept, made = run_shards(plans, ingest_shard, digest, config.workers, "ingest", "obj")
    results = sorted(kept + made, key=lambda r: r.index)
    rejects = rejects_before + [Reject(*r) for res in results for r in res.extra["rejects"]]
    write_rejects(out / REJECTS_NAME, rejects)
    n_ingested = sum(r.entry.n_rows for r in results)
    if n_ingested == 0:
        # nothing to resume: a corrected rerun (another --crop, say) must not be refused
        # as another ingest's outputs
        for r in results:
            (out / r.entry.file).unlink(missing_ok=True)
            done_path(out / r.entry.file).unlink(missing_ok=True)
        (out / JOB_FILE).unlink(missing_ok=True)
        raise IngestError(f"no object could be ingested; reasons in {out / REJECTS_NAME}")
    generator = {
        "command": JOB,
        "version": __version__,
        "config": {**hashed, "workers": config.workers},
        "config_hash": digest,
        **described,
        "column_map": catalogue.column_map,
    }
    entries = [r.entry for r in results]
    if config.healpix_order is not None:
        entries = drop_empty_shards(out, entries)
    if not made and (out / fmt.MANIFEST_NAME).is_file():  # complete: keep its bytes (sha256)
        manifest = load_manifest(out)
    else:
        manifest = build_manifest(out, meta, entries, generator, config.healpix_order)
    return IngestReport(
        out=out,
        n_ingested=n_ingested,
        rejects=tuple(rejects),
        shards_written=len(made),
        shards_skipped=len(kept),
        rejects_path=out / REJECTS_NAME,
        image_format=described["image_format"],
        pattern=described["pattern"],
        column_map=catalogue.column_map,
        skipped_columns=catalogue.skipped_columns,
        manifest=manifest,
    )


def drop_empty_shards(out: Path, entries: list[ShardEntry]) -> list[ShardEntry]:
    """The entries with rows; the files of the others are removed. A partitioned survey
    files each shard under its one pixel, and a shard whose every object was rejected has
    none (a rerun rewrites it, as cheaply, and drops it again)."""
    for entry in entries:
        if not entry.n_rows:
            done_path(out / entry.file).unlink(missing_ok=True)
            (out / entry.file).unlink(missing_ok=True)
    return [e for e in entries if e.n_rows]


def _prepare_cutouts(config: IngestConfig):
    """Catalogue, CutoutSpec and survey facts of a catalogue-plus-files input."""
    catalogue = load_catalogue(config)
    image_format, pattern = resolve_layout(config, catalogue.object_id)
    if image_format in ("png", "jpeg") and len(config.bands) not in (1, 3):
        # no such image exists: refused once, not once per object
        raise IngestError(
            f"bands {','.join(config.bands)}: {image_format} cutouts have three channels "
            "(R, G, B: give three bands, e.g. i,r,g for SDSS composites) or one (greyscale)"
        )
    resize = config.resize
    if resize is None and config.out_pixel_scale:
        resize = resampled_size(config.crop, config.input_pixel_scale, config.out_pixel_scale)
    spec = CutoutSpec(config.images, image_format, pattern, config.bands, config.crop, resize)
    meta = survey_meta(config, spec, label_roles(config, catalogue))
    described = {"image_format": image_format, "pattern": pattern}
    return catalogue, spec, meta, None, list(catalogue.rejects), described


def _prepare_arrays(config: IngestConfig):
    """Catalogue, ArraySource and survey facts of an MMU tree or array HDF5 files."""
    kind = config.image_format
    if kind == "auto":
        kind = detect_kind(find_files(config.images, "mmu")[0])
    loaded = load_array_input(config, kind)
    catalogue, source = loaded.catalogue, loaded.source
    meta = SurveyMeta(
        survey=config.survey or Path(config.out).resolve().name,
        bands=loaded.bands,
        image_size=(source.size, source.size),
        image_dtype="float32" if config.image_dtype == "auto" else config.image_dtype,
        pixel_scale_arcsec=loaded.pixel_scale_arcsec,
        flux_unit=config.flux_unit or "unknown",
        roles=label_roles(config, catalogue),
    )
    described = {
        "image_format": kind,
        "pattern": source.image_dataset,
        "files": len(source.files),
        "crop": source.crop,
        "size": source.size,
    }
    rejects = loaded.file_rejects + list(catalogue.rejects)
    return catalogue, source, meta, loaded.locator, rejects, described
