"""``ssl-hpc ingest``: a catalogue plus a directory of cutouts -> a sharded survey.

The catalogue (CSV, FITS table, anything ``astropy.table.Table.read`` reads) is validated
whole before any image is read: the id column must exist and hold unique integers. Its
rows are then split, in catalogue order, into shards of ``rows_per_shard``; each shard is
read, checked and written atomically by one worker, so an interrupted run leaves only
complete shards behind.

Resume: the config's hash (every option but ``workers``, paths made absolute) is kept in
``OUT/.ingest.json`` and in every shard's attributes, together with the shard's index and
a hash of its catalogue rows. A rerun reuses a shard whose file records the same three
and redoes the rest; a rerun with other options into the same directory is refused.
Image files of finished shards are not re-read, so delete a shard to redo it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
from astropy.table import Table
from threadpoolctl import threadpool_limits

from .. import __version__
from ..config import to_dict
from ..errors import ConfigError, IngestError
from ..utils.atomic import write_json_atomic, write_text_atomic
from ..utils.hashing import sha256_json
from ..utils.progress import progress
from . import format as fmt
from .cutouts import (
    EXTENSIONS,
    IMAGE_FORMATS,
    CutoutError,
    CutoutSpec,
    format_of,
    load_cutout,
    pattern_fields,
    sky_sigma,
)
from .manifest import Manifest, ShardEntry
from .shards import ShardTable, SurveyMeta, build_manifest, write_shard

STATE_NAME = ".ingest.json"
REJECTS_NAME = "rejects.csv"
ON_ERROR = ("fail", "skip")
FLOAT16_MAX = 65504.0

#: Canonical column -> accepted catalogue spellings (case-insensitive), in priority order.
#: A bare "z" comes last: in photometric catalogues it is usually the z-band magnitude.
SPELLINGS = {
    "ra": ("ra", "ra_deg", "raj2000", "ra_j2000", "alpha_j2000"),
    "dec": ("dec", "dec_deg", "dej2000", "decj2000", "dec_j2000", "delta_j2000"),
    "ebv": ("ebv", "e_bv", "e(b-v)", "ebmv"),
    "z_spec": ("z_spec", "zspec", "spec_z", "specz", "redshift", "z"),
}

#: Per-format image_dtype and flux_unit where the config says "auto" / None (else FITS's).
DEFAULT_DTYPE = {"png": "float16", "jpeg": "float16"}  # 8 bits fit float16's 11-bit mantissa
DEFAULT_FLUX_UNIT = {"png": "display (8-bit / 255)", "jpeg": "display (8-bit / 255)"}


@dataclass(frozen=True)
class IngestConfig:
    """What ``ssl-hpc ingest`` reads and how it writes the survey.

    Column options: None auto-detects a common spelling (see SPELLINGS), "" means the
    catalogue has no such column. `crop` and `resize` are in pixels. `pixel_scale_arcsec`
    is the input images' scale (default SDSS's); the survey's is larger by crop / resize.
    `psf_fwhm` (arcsec) is one value for every band or one per band; empty means unknown
    (NaN). `image_dtype` "auto" is float16 for 8-bit images and float32 for FITS;
    `flux_unit` None is "display (8-bit / 255)" for 8-bit images and "unknown" for FITS.
    """

    catalog: str
    images: str
    out: str
    id_column: str
    bands: tuple[str, ...]
    crop: int
    resize: int | None = None
    pixel_scale_arcsec: float = fmt.SDSS_PIXEL_SCALE
    ra_column: str | None = None
    dec_column: str | None = None
    ebv_column: str | None = None
    z_column: str | None = None
    label_columns: tuple[str, ...] = ()
    image_format: str = "auto"
    pattern: str | None = None
    psf_fwhm: tuple[float, ...] = ()
    image_dtype: str = "auto"
    flux_unit: str | None = None
    rows_per_shard: int = 512
    workers: int = 1
    on_error: str = "fail"
    survey: str | None = None

    def __post_init__(self) -> None:
        for name in ("catalog", "images", "out"):
            object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("bands", "label_columns"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "psf_fwhm", tuple(float(x) for x in self.psf_fwhm))
        self._validate()

    def _validate(self) -> None:
        bands = len(self.bands)
        _require(
            self.image_format in ("auto", *IMAGE_FORMATS),
            f"image_format {self.image_format!r}: expected auto or one of {IMAGE_FORMATS}",
        )
        _require(
            self.image_dtype in ("auto", *fmt.IMAGE_DTYPES),
            f"image_dtype {self.image_dtype!r}: expected auto or one of {fmt.IMAGE_DTYPES}",
        )
        _require(
            self.on_error in ON_ERROR, f"on_error {self.on_error!r}: expected one of {ON_ERROR}"
        )
        _require(self.id_column != "", "id_column: required")
        _require(bands > 0, "bands: at least one band is required")
        _require(len(set(self.bands)) == bands, f"bands {list(self.bands)}: a band is repeated")
        _require(self.crop > 0, f"crop {self.crop}: must be a positive number of pixels")
        _require(self.resize is None or self.resize > 0, f"resize {self.resize}: must be positive")
        _require(
            self.pixel_scale_arcsec > 0,
            f"pixel_scale_arcsec {self.pixel_scale_arcsec}: must be > 0",
        )
        _require(
            len(self.psf_fwhm) in (0, 1, bands),
            f"psf_fwhm: {len(self.psf_fwhm)} values for {bands} bands; give 1 or one per band",
        )
        _require(self.rows_per_shard > 0, f"rows_per_shard {self.rows_per_shard}: must be positive")
        _require(self.workers > 0, f"workers {self.workers}: must be positive")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class Reject(NamedTuple):
    """An object left out in skip mode (object_id None: the catalogue row had no valid id)."""

    object_id: int | None
    file: str
    reason: str


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


@dataclass
class Catalogue:
    """The catalogue rows to ingest (valid ids only) as survey columns."""

    object_id: np.ndarray  # (N,) int64
    ra: np.ndarray  # (N,) float64 deg
    dec: np.ndarray  # (N,) float64 deg
    columns: dict[str, np.ndarray]  # output name -> (N,)
    column_map: dict[str, str]
    skipped_columns: dict[str, str]
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class ShardTask:
    """One shard's catalogue rows and everything a worker needs to write it."""

    index: int
    path: str
    object_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    columns: dict[str, np.ndarray]
    spec: CutoutSpec
    meta: SurveyMeta
    psf_fwhm: np.ndarray  # (B,) float32 arcsec
    attrs: dict[str, Any]
    skip_bad: bool


class ShardResult(NamedTuple):
    index: int
    entry: ShardEntry
    rejects: list[Reject]


class _Aborted(Exception):
    """Another worker failed in fail mode; this shard was abandoned before writing."""


# --------------------------------------------------------------------------- catalogue


def read_table(path: str) -> Table:
    """The catalogue as an astropy Table; IngestError naming the file if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"{path}: catalogue not found")
    name = p.name.lower()
    kind = "ascii.csv" if name.endswith(".csv") else "fits" if ".fit" in name else None
    try:
        return Table.read(path, format=kind)
    except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
        raise IngestError(f"{path}: cannot read catalogue ({type(e).__name__}: {e})") from e


def parse_ids(column: Any, name: str) -> tuple[np.ndarray, dict[int, str]]:
    """Integer ids of a catalogue column as int64 (N,), and {row: problem} for bad rows."""
    data = np.ma.getdata(column)
    missing = np.ma.getmaskarray(column)
    kind = data.dtype.kind
    if data.ndim != 1 or kind not in "iufUSO":
        raise IngestError(f"id column {name!r}: dtype {data.dtype} is not integer-valued")
    if kind in "iu":
        too_big = data > np.iinfo(np.int64).max if kind == "u" else np.zeros(len(data), bool)
        ids = np.where(too_big, 0, data).astype(np.int64)
        bad = {int(i): f"id {data[i]} exceeds int64" for i in np.flatnonzero(too_big)}
    elif kind == "f":
        ids, bad = _float_ids(data)
    else:
        ids, bad = _string_ids(data)
    bad.update({int(i): "id is missing" for i in np.flatnonzero(missing)})
    return ids, bad


def _float_ids(data: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Float ids that are whole numbers exactly representable (|x| <= 2**53)."""
    finite = np.isfinite(data)
    whole = finite & (np.mod(np.where(finite, data, 0), 1) == 0) & (np.abs(data) <= 2**53)
    bad = {int(i): f"id {data[i]} is not an integer" for i in np.flatnonzero(~whole)}
    return np.where(whole, data, 0).astype(np.int64), bad


def _string_ids(data: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Ids stored as text, parsed as base-10 integers."""
    ids = np.zeros(len(data), dtype=np.int64)
    bad = {}
    for i, value in enumerate(data):
        text = value.decode() if isinstance(value, bytes) else str(value)
        try:
            ids[i] = int(text.strip())
        except (ValueError, OverflowError):
            bad[i] = f"id {text!r} is not an integer"
    return ids, bad


def duplicate_rows(ids: np.ndarray, valid: np.ndarray) -> dict[int, list[int]]:
    """Ids that occur on more than one valid row -> those rows (0-based)."""
    values, counts = np.unique(ids[valid], return_counts=True)
    dups = set(values[counts > 1].tolist())
    rows: dict[int, list[int]] = {}
    for row in np.flatnonzero(valid):
        if int(ids[row]) in dups:
            rows.setdefault(int(ids[row]), []).append(int(row))
    return rows


def resolve_column(
    names: list[str], canonical: str, explicit: str | None, exclude: str
) -> str | None:
    """The catalogue column holding `canonical`: the one named, or a known spelling."""
    if explicit == "":
        return None
    if explicit is not None:
        if explicit not in names:
            raise IngestError(f"{canonical} column {explicit!r} not in catalogue; have {names}")
        return explicit
    by_lower: dict[str, list[str]] = {}
    for n in names:
        if n != exclude:
            by_lower.setdefault(n.lower(), []).append(n)
    for spelling in SPELLINGS[canonical]:
        found = by_lower.get(spelling, [])
        if len(found) > 1:
            raise IngestError(f"columns {found} could each be {canonical}; name one explicitly")
        if found:
            return found[0]
    return None


def numeric_column(column: Any) -> tuple[np.ndarray | None, str]:
    """A column as int64, bool, float32 or float64 (masked -> NaN), or None and why not.

    Integers stay int64 unless some are masked (then float64, NaN = missing); floats keep
    their width (float16 -> float32). The dtype depends only on the whole column, so every
    shard gets the same one.
    """
    data = np.ma.getdata(column)
    mask = np.ma.getmaskarray(column)
    kind = data.dtype.kind
    if data.ndim != 1:
        return None, f"multidimensional ({data.shape[1:]} per row)"
    if kind not in "biuf":
        return None, f"non-numeric ({data.dtype})"
    if kind == "u" and len(data) and data.max() > np.iinfo(np.int64).max:
        return None, "uint64 values beyond int64"
    if mask.any() and kind in "biu":
        data, kind = data.astype(np.float64), "f"
    if kind == "f":
        out = data.astype(np.float64 if data.dtype.itemsize >= 8 else np.float32)
        out[mask] = np.nan
        return out, ""
    return data.astype(bool if kind == "b" else np.int64), ""


def load_catalogue(config: IngestConfig) -> Catalogue:
    """Read and validate the whole catalogue: ids, positions, canonical and other columns.

    Bad ids (missing, non-integer, duplicated) raise IngestError in fail mode and become
    rejects in skip mode; a missing id column always raises.
    """
    table = read_table(config.catalog)
    names = list(table.colnames)
    if config.id_column not in names:
        raise IngestError(f"{config.catalog}: no id column {config.id_column!r}; have {names}")
    if len(table) == 0:
        raise IngestError(f"{config.catalog}: catalogue has no rows")
    ids, bad = parse_ids(table[config.id_column], config.id_column)
    valid, rejects = _check_ids(ids, bad, config)
    column_map = _column_map(names, config)
    ra, dec = (_position(table, column_map.get(c), config.catalog) for c in ("ra", "dec"))
    columns, skipped = _catalogue_columns(table, column_map, config.id_column)
    return Catalogue(
        object_id=ids[valid],
        ra=ra[valid],
        dec=dec[valid],
        columns={k: v[valid] for k, v in columns.items()},
        column_map=column_map,
        skipped_columns=skipped,
        rejects=rejects,
    )


def _check_ids(
    ids: np.ndarray, bad: dict[int, str], config: IngestConfig
) -> tuple[np.ndarray, list[Reject]]:
    """Rows with a usable unique id, and rejects for the others (fail mode: IngestError)."""
    where = f"{config.catalog}: id column {config.id_column!r}"
    skip = config.on_error == "skip"
    if bad and not skip:
        shown = "; ".join(f"row {r + 1}: {why}" for r, why in sorted(bad.items())[:5])
        raise IngestError(f"{where}: {len(bad)} bad id(s) ({shown})")
    valid = np.ones(len(ids), dtype=bool)
    valid[list(bad)] = False
    if not valid.any():
        raise IngestError(f"{where}: no row has a valid integer id")
    dups = duplicate_rows(ids, valid)
    if dups and not skip:
        shown = "; ".join(
            f"{i} on rows {[r + 1 for r in rows]}" for i, rows in list(dups.items())[:5]
        )
        raise IngestError(f"{where}: {len(dups)} duplicated id(s): {shown}")
    rejects = [
        Reject(None, config.catalog, f"catalogue row {r + 1}: {why}")
        for r, why in sorted(bad.items())
    ]
    for object_id, rows in dups.items():
        valid[rows] = False
        reason = f"duplicate id on catalogue rows {[r + 1 for r in rows]}"
        rejects += [Reject(object_id, config.catalog, reason) for _ in rows]
    return valid, rejects


def _column_map(names: list[str], config: IngestConfig) -> dict[str, str]:
    """Canonical name -> catalogue column, for the canonical columns the catalogue has."""
    explicit = {
        "ra": config.ra_column,
        "dec": config.dec_column,
        "ebv": config.ebv_column,
        "z_spec": config.z_column,
    }
    found = {c: resolve_column(names, c, e, config.id_column) for c, e in explicit.items()}
    return {c: n for c, n in found.items() if n is not None}


def _position(table: Table, name: str | None, catalog: str) -> np.ndarray:
    """An ra or dec column as float64 degrees; all NaN if the catalogue has none."""
    if name is None:
        return np.full(len(table), np.nan)
    values, why = numeric_column(table[name])
    if values is None:
        raise IngestError(f"{catalog}: position column {name!r} is {why}; expected degrees")
    return values.astype(np.float64)


def _catalogue_columns(
    table: Table, column_map: dict[str, str], id_column: str
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Columns to store (canonical ones renamed) and {catalogue column: why skipped}."""
    renamed = {src: canon for canon, src in column_map.items() if canon not in (fmt.RA, fmt.DEC)}
    used = {id_column, *column_map.values()}
    columns: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name in table.colnames:
        if name in used and name not in renamed:
            continue
        out_name = renamed.get(name, name)
        why = _name_problem(out_name, name in renamed, column_map)
        values, dtype_why = (None, why) if why else numeric_column(table[name])
        if values is None:
            skipped[name] = dtype_why
        else:
            columns[out_name] = values
    return columns, skipped


def _name_problem(name: str, canonical: bool, column_map: dict[str, str]) -> str:
    """Why `name` cannot be a catalogue dataset ("" if it can)."""
    if name in fmt.CORE_DATASETS:
        return f"name clashes with the core dataset {name!r}"
    if not canonical and name in column_map:
        return f"name taken by {name!r}, read from column {column_map[name]!r}"
    if "/" in name or name in ("", "."):
        return "not a valid HDF5 dataset name"
    return ""


def label_roles(config: IngestConfig, catalogue: Catalogue) -> dict[str, str]:
    """{output column: "label"} for each of `config.label_columns` (canonical names resolved)."""
    source_to_canon = {src: canon for canon, src in catalogue.column_map.items()}
    roles = {}
    for name in config.label_columns:
        out_name = source_to_canon.get(name, name)
        if out_name not in catalogue.columns:
            why = catalogue.skipped_columns.get(name, "not a catalogue column that is copied")
            raise IngestError(f"label column {name!r}: {why}")
        roles[out_name] = "label"
    return roles


# --------------------------------------------------------------------------- images


def resolve_layout(config: IngestConfig, ids: np.ndarray) -> tuple[str, str]:
    """(image format, filename pattern): as given, or found from the files in the dir."""
    if not Path(config.images).is_dir():
        raise IngestError(f"{config.images}: images directory not found")
    image_format, pattern = config.image_format, config.pattern
    if pattern is None and image_format == "fits-per-band":
        pattern = "{id}-{band}.fits"
    if pattern is not None:
        if image_format == "auto":
            image_format = (
                "fits-per-band" if "band" in pattern_fields(pattern) else format_of(pattern)
            )
        if image_format is None:
            raise IngestError(f"pattern {pattern!r}: unknown extension; give the image format")
        return image_format, pattern
    ext = detect_extension(config.images, ids, image_format)
    return EXTENSIONS[ext.lower()] if image_format == "auto" else image_format, "{id}" + ext


def detect_extension(images: str, ids: np.ndarray, image_format: str) -> str:
    """The one extension of the ``{id}.<ext>`` files in `images` (one directory scan)."""
    wanted = {str(int(i)) for i in ids}
    allowed = {e for e, f in EXTENSIONS.items() if image_format in ("auto", f)}
    counts: dict[str, int] = {}
    with os.scandir(images) as entries:
        for entry in entries:
            stem, dot, ext = entry.name.partition(".")
            if dot and stem in wanted and f".{ext.lower()}" in allowed:
                counts[f".{ext}"] = counts.get(f".{ext}", 0) + 1
    if not counts:
        raise IngestError(
            f"{images}: no file named <id>.<ext> for any catalogue id "
            f"(ext one of {sorted(allowed)}); give the format and filename pattern"
        )
    if len(counts) > 1:
        raise IngestError(
            f"{images}: ids have files with several extensions {counts}; give the pattern"
        )
    return next(iter(counts))


def survey_meta(config: IngestConfig, spec: CutoutSpec, roles: dict[str, str]) -> SurveyMeta:
    """The survey-level facts: bands, cutout size, dtype, output pixel scale, roles."""
    dtype = config.image_dtype
    return SurveyMeta(
        survey=config.survey or Path(config.out).resolve().name,
        bands=config.bands,
        image_size=(spec.size, spec.size),
        image_dtype=DEFAULT_DTYPE.get(spec.format, "float32") if dtype == "auto" else dtype,
        pixel_scale_arcsec=config.pixel_scale_arcsec * spec.crop / spec.size,
        flux_unit=config.flux_unit or DEFAULT_FLUX_UNIT.get(spec.format, "unknown"),
        roles=roles,
    )


# --------------------------------------------------------------------------- shards


def ingest_shard(
    task: ShardTask, tick: Callable[[], None], aborted: Callable[[], bool]
) -> ShardResult:
    """Read, check and write one shard; bad objects raise (fail mode) or are rejected.

    `tick` is called once per object (progress); `aborted` is polled per object so a
    failure elsewhere stops this shard before anything is written.
    """
    spec, meta = task.spec, task.meta
    n, b = len(task.object_id), len(meta.bands)
    images = np.zeros((n, b, *meta.image_size), dtype=np.float32)
    sigma = np.zeros((n, b), dtype=np.float32)
    keep = np.zeros(n, dtype=bool)
    rejects: list[Reject] = []
    for i, object_id in enumerate(task.object_id.tolist()):
        if aborted():
            raise _Aborted
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
        tick()
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
    entry = write_shard(task.path, table, meta, attrs=attrs)
    return ShardResult(task.index, entry, rejects)


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
) -> list[ShardTask]:
    """The catalogue's rows cut into shards of `rows_per_shard`, in catalogue order."""
    psf = np.full(len(config.bands), np.nan, dtype=np.float32)
    psf[:] = config.psf_fwhm or np.nan
    tasks = []
    for index, start in enumerate(range(0, len(catalogue.object_id), config.rows_per_shard)):
        rows = slice(start, start + config.rows_per_shard)
        ids, ra, dec = catalogue.object_id[rows], catalogue.ra[rows], catalogue.dec[rows]
        columns = {k: v[rows] for k, v in catalogue.columns.items()}
        attrs = {
            "ingest_config_hash": digest,
            "ingest_shard_index": index,
            "ingest_rows_sha256": rows_digest(ids, ra, dec, columns),
        }
        tasks.append(
            ShardTask(
                index=index,
                path=str(Path(config.out) / fmt.SHARD_PATTERN.format(index=index)),
                object_id=ids,
                ra=ra,
                dec=dec,
                columns=columns,
                spec=spec,
                meta=meta,
                psf_fwhm=psf,
                attrs=attrs,
                skip_bad=config.on_error == "skip",
            )
        )
    return tasks


def finished_shard(task: ShardTask) -> ShardResult | None:
    """The result of a shard a previous run of this config completed, or None to redo it.

    A shard is finished if its file opens and its attributes record the same config hash,
    shard index and catalogue rows; its entry (sha256, size) is recomputed from the file.
    """
    path = Path(task.path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if any(f.attrs.get(k) != v for k, v in task.attrs.items()):
                return None
            n_rows = int(f[fmt.OBJECT_ID].shape[0])
            rejects = [Reject(*r) for r in json.loads(f.attrs["ingest_rejects"])]
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return ShardResult(task.index, ShardEntry.of_file(path, n_rows), rejects)


def run_inline(tasks: list[ShardTask], bar: Any) -> list[ShardResult]:
    """Write the shards one after another in this process; the first error propagates."""
    with threadpool_limits(1):  # see _init_worker
        return [ingest_shard(t, tick=lambda: bar.update(1), aborted=lambda: False) for t in tasks]


_worker_state: dict[str, Any] = {}  # set in each pool process by _init_worker


def _init_worker(counter: Any, abort: Any) -> None:
    # One BLAS thread per process: a cutout's resampling matrices are tiny, and threaded
    # BLAS in every worker oversubscribes the cores (measured 4x slower with 2 workers).
    threadpool_limits(1)
    _worker_state.update(counter=counter, abort=abort)


def _tick() -> None:
    counter = _worker_state["counter"]
    with counter.get_lock():
        counter.value += 1


def _pool_task(task: ShardTask) -> ShardResult | None:
    """One shard in a pool worker; None if it was abandoned after a failure elsewhere."""
    try:
        return ingest_shard(task, tick=_tick, aborted=_worker_state["abort"].is_set)
    except _Aborted:
        return None


def run_pool(tasks: list[ShardTask], workers: int, bar: Any) -> list[ShardResult]:
    """Write the shards with `workers` spawned processes, one shard per task.

    On the first error the other workers stop before writing their current shard (shards
    already written stay) and the error is raised once all have stopped, so no worker is
    killed mid-write. A worker that dies (e.g. killed for memory) fails the run.
    """
    ctx = mp.get_context("spawn")  # fork is unsafe with threads (BLAS, HDF5) in the parent
    counter, abort = ctx.Value("q", 0), ctx.Event()
    shown = 0
    results: list[ShardResult] = []
    error: Exception | None = None
    with ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(counter, abort),
    ) as pool:
        pending = {pool.submit(_pool_task, t) for t in tasks}
        while pending:
            finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            bar.update(counter.value - shown)
            shown = counter.value
            for future in finished:
                try:
                    result = future.result()
                except Exception as e:  # keep the first; let the other workers stop cleanly
                    abort.set()
                    error = error or e
                    continue
                if result is not None:
                    results.append(result)
    if isinstance(error, BrokenProcessPool):
        raise IngestError(
            f"a worker process died ({error}); finished shards are kept: rerun to resume"
        ) from error
    if error is not None:
        raise error
    return results


# --------------------------------------------------------------------------- the job


def hashed_config(config: IngestConfig) -> dict[str, Any]:
    """The config as the resume hash sees it: absolute paths, no `workers`."""
    d = to_dict(config)
    del d["workers"]
    for name in ("catalog", "images", "out"):
        d[name] = os.path.abspath(d[name])
    return d


def claim_out_dir(out: Path, hashed: dict[str, Any], digest: str) -> None:
    """Make `out` this config's: new, or resumed from the same config; else IngestError."""
    state = out / STATE_NAME
    if state.is_file():
        try:
            previous = json.loads(state.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise IngestError(f"{state}: unreadable ({e}); delete {out} to start again") from e
        if previous.get("config_hash") != digest:
            old = previous.get("config", {})
            diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in hashed.items() if old.get(k) != v]
            raise IngestError(
                f"{out} holds an ingest with other options ({'; '.join(diff) or 'version'}); "
                "use another --out, or delete it to start again"
            )
        return
    if out.exists() and not out.is_dir():
        raise IngestError(f"{out}: exists and is not a directory")
    if (out / fmt.MANIFEST_NAME).exists() or any(out.glob("shard-*.h5")):
        raise IngestError(f"{out} holds a survey not written by ingest; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, {"config_hash": digest, "config": hashed, "version": __version__})


def remove_leftovers(out: Path, tasks: list[ShardTask]) -> None:
    """Delete temporaries of a killed run and shards this plan no longer has."""
    planned = {Path(t.path).name for t in tasks}
    for path in out.glob(".*.tmp-*"):
        path.unlink(missing_ok=True)
    for path in out.glob("shard-*.h5"):
        if path.name not in planned:
            path.unlink()


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    """``rejects.csv`` (object_id, file, reason), atomically; header only if none."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(Reject._fields)
    writer.writerows(
        ["" if r.object_id is None else r.object_id, r.file, r.reason] for r in rejects
    )
    write_text_atomic(path, buf.getvalue())


def run_shards(tasks: list[ShardTask], workers: int) -> tuple[list[ShardResult], list[ShardResult]]:
    """(shards finished by an earlier run, shards written now), with a bar over objects."""
    done = [r for r in map(finished_shard, tasks) if r is not None]
    finished = {r.index for r in done}
    todo = [t for t in tasks if t.index not in finished]
    with progress(total=sum(len(t.object_id) for t in tasks), desc="ingest", unit="obj") as bar:
        bar.update(sum(len(t.object_id) for t in tasks if t.index in finished))
        if workers == 1 or len(todo) <= 1:
            return done, run_inline(todo, bar)
        return done, run_pool(todo, workers, bar)


def ingest(config: IngestConfig) -> IngestReport:
    """Build (or resume) the survey in ``config.out`` from a catalogue and its cutouts.

    Raises IngestError for a bad catalogue, a refused out dir, or (fail mode) the first
    object that cannot be read, naming the object and file; finished shards stay on disk.
    """
    catalogue = load_catalogue(config)
    image_format, pattern = resolve_layout(config, catalogue.object_id)
    spec = CutoutSpec(
        config.images, image_format, pattern, config.bands, config.crop, config.resize
    )
    meta = survey_meta(config, spec, label_roles(config, catalogue))
    out = Path(config.out)
    hashed = hashed_config(config)
    digest = sha256_json(hashed)
    claim_out_dir(out, hashed, digest)
    tasks = plan_shards(catalogue, config, spec, meta, digest)
    remove_leftovers(out, tasks)
    done, written = run_shards(tasks, config.workers)
    results = sorted(done + written, key=lambda r: r.index)
    rejects = catalogue.rejects + [r for res in results for r in res.rejects]
    write_rejects(out / REJECTS_NAME, rejects)
    n_ingested = sum(r.entry.n_rows for r in results)
    if n_ingested == 0:
        raise IngestError(f"no object could be ingested; reasons in {out / REJECTS_NAME}")
    generator = {
        "command": "ssl-hpc ingest",
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
        shards_written=len(written),
        shards_skipped=len(done),
        rejects_path=out / REJECTS_NAME,
        image_format=image_format,
        pattern=pattern,
        column_map=catalogue.column_map,
        skipped_columns=catalogue.skipped_columns,
        manifest=manifest,
    )
