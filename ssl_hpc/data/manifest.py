"""``manifest.json``: the index of a survey directory, and its verification."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import SurveyError
from ..utils.atomic import write_json_atomic
from ..utils.hashing import sha256_file, sha256_json
from . import format as fmt


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it."""

    file: str  # relative to the survey directory
    n_rows: int
    sha256: str
    n_bytes: int
    healpix: int | None = None  # the sky pixel all its rows lie in (partitioned surveys)

    @classmethod
    def of_file(cls, path: str | os.PathLike, n_rows: int, name: str | None = None) -> ShardEntry:
        """The entry of a shard file on disk (hashes every byte); `name` if it will be renamed."""
        path = Path(path)
        return cls(name or path.name, n_rows, sha256_file(path), path.stat().st_size)


@dataclass(frozen=True)
class ColumnInfo:
    """A catalogue column: its dtype, role and how many rows have a value."""

    dtype: str
    role: str
    n_valid: int


@dataclass(frozen=True)
class Manifest:
    """Survey-level facts plus every shard with its size and checksum."""

    survey: str
    bands: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (B, H, W)
    image_dtype: str
    compression: str | None
    pixel_scale_arcsec: float
    flux_unit: str
    shards: tuple[ShardEntry, ...]
    columns: dict[str, ColumnInfo]
    generator: dict[str, Any] = field(default_factory=dict)
    partition: dict[str, Any] | None = None  # {"scheme": "healpix", "order": k, "nest": True}
    schema_version: int = fmt.SCHEMA_VERSION

    @property
    def n_objects(self) -> int:
        return sum(s.n_rows for s in self.shards)

    @property
    def content_sha256(self) -> str:
        """A sha256 of what the survey holds: bands, image shape and dtype, the pixel scale
        and flux unit the augmentations read, the partition, and every shard's name, rows
        and sha256; not the manifest's other entries, which record when and how fast it was
        written (a shard regenerated to the same bytes keeps this)."""
        return sha256_json(
            {
                "bands": list(self.bands),
                "image": [list(self.image_shape), self.image_dtype],
                "pixels": [self.pixel_scale_arcsec, self.flux_unit],
                "partition": self.partition,
                "shards": [[s.file, s.n_rows, s.sha256] for s in self.shards],
            }
        )

    @property
    def healpix_order(self) -> int | None:
        """The HEALPix order the shards are partitioned at (NESTED); None if they are not."""
        return None if self.partition is None else int(self.partition["order"])

    def shards_in(self, pixels: Any) -> list[int]:
        """Indices of the shards whose pixel is one of `pixels` (at `healpix_order`); every
        shard if the survey is not partitioned."""
        if self.partition is None:
            return list(range(len(self.shards)))
        wanted = {int(p) for p in pixels}
        return [i for i, s in enumerate(self.shards) if s.healpix in wanted]

    @property
    def labels(self) -> dict[str, int]:
        """Label columns and how many objects have each."""
        return {k: c.n_valid for k, c in self.columns.items() if c.role == "label"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_objects"] = self.n_objects
        d["labels"] = self.labels
        d["shards"] = [
            {k: v for k, v in asdict(s).items() if k != "healpix" or v is not None}
            for s in self.shards
        ]
        if self.partition is None:
            del d["partition"]
        d["bands"] = list(self.bands)
        d["image_shape"] = list(self.image_shape)
        # schema_version first: the first thing a reader of the file should see
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        try:
            version = int(d["schema_version"])
            if version > fmt.SCHEMA_VERSION:
                raise SurveyError(
                    f"{source}: schema_version {version} is newer than this ssl-hpc "
                    f"understands ({fmt.SCHEMA_VERSION}); upgrade ssl-hpc"
                )
            manifest = cls(
                survey=str(d["survey"]),
                bands=tuple(d["bands"]),
                image_shape=tuple(int(x) for x in d["image_shape"]),  # type: ignore[arg-type]
                image_dtype=str(d["image_dtype"]),
                compression=d.get("compression"),
                pixel_scale_arcsec=float(d["pixel_scale_arcsec"]),
                flux_unit=str(d["flux_unit"]),
                shards=tuple(_entry(ShardEntry, s, "shard") for s in d["shards"]),
                columns={
                    k: _entry(ColumnInfo, v, f"column {k!r}") for k, v in d["columns"].items()
                },
                generator=dict(d.get("generator", {})),
                partition=d.get("partition"),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SurveyError(f"{source}: malformed manifest ({type(e).__name__}: {e})") from e
        problem = manifest.malformed()
        if problem:
            raise SurveyError(f"{source}: malformed manifest ({problem})")
        return manifest

    def malformed(self) -> str:
        """What makes the fields unusable ("" if nothing): JSON gives any type anywhere."""
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            return f"image_shape {list(self.image_shape)}: expected [bands, height, width]"
        if len(self.bands) != self.image_shape[0]:
            return f"bands {list(self.bands)}: {self.image_shape[0]} expected from image_shape"
        if self.image_dtype not in fmt.IMAGE_DTYPES:
            return f"image_dtype {self.image_dtype!r}: expected one of {list(fmt.IMAGE_DTYPES)}"
        for s in self.shards:
            counts = (s.n_rows, s.n_bytes)
            if not isinstance(s.file, str) or not all(type(n) is int and n >= 0 for n in counts):
                return f"shard {s.file!r}: file must be a name, n_rows and n_bytes counts"
        for name, column in self.columns.items():
            if column.role not in fmt.ROLES:
                return f"column {name!r}: role {column.role!r}, expected one of {list(fmt.ROLES)}"
        return ""

    def write(self, survey_dir: str | os.PathLike) -> Path:
        """Write ``manifest.json`` atomically into `survey_dir`."""
        path = Path(survey_dir) / fmt.MANIFEST_NAME
        write_json_atomic(path, self.to_dict())
        return path


def _entry(kind, values: dict[str, Any], what: str):
    """A `kind` (ShardEntry, ColumnInfo) from a manifest's JSON object, naming any key it
    does not take (a writer's own keys belong at the top level or in the HDF5 attributes)."""
    if not isinstance(values, dict):
        raise TypeError(f"{what}: a JSON object expected, not {type(values).__name__}")
    known = {x.name for x in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; it takes {sorted(known)}")
    return kind(**values)


def load_manifest(survey_dir: str | os.PathLike) -> Manifest:
    """Read a survey's manifest; a clear error if the directory or file is not a survey."""
    path = Path(survey_dir) / fmt.MANIFEST_NAME
    if Path(survey_dir).exists() and not Path(survey_dir).is_dir():
        raise SurveyError(f"{survey_dir}: a file, not a survey directory")
    if not Path(survey_dir).is_dir():
        raise SurveyError(f"{survey_dir}: no such survey directory")
    if not path.is_file():
        raise SurveyError(f"{path}: missing; is {survey_dir} a survey directory?")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SurveyError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise SurveyError(f"{path}: not a manifest (a JSON {type(d).__name__})")
    if "identity_sha256" in d and "schema_version" not in d:  # an embedding set's manifest
        raise SurveyError(
            f"{survey_dir}: an embedding set, not a survey (give it as --embeddings; its "
            f"survey is {d.get('survey', 'the one its run.json names')})"
        )
    return Manifest.from_dict(d, source=str(path))


def check_shard(
    survey_dir: Path,
    entry: ShardEntry,
    manifest: Manifest,
    full: bool,
    ids: dict[str, np.ndarray] | None = None,
) -> list[str]:
    """Problems with one shard, each naming it: missing, truncated, wrong rows/shape, bad
    hash. Its object ids, if readable and int64, go into `ids` under its file name when a
    dict is given (reading them costs 8 bytes an object)."""
    path = survey_dir / entry.file
    if not path.is_file():
        return [f"{path}: missing"]
    size = path.stat().st_size
    if size != entry.n_bytes:
        return [f"{path}: {size} bytes, manifest says {entry.n_bytes} (truncated or replaced)"]
    if full:
        digest = sha256_file(path)
        if digest != entry.sha256:
            return [f"{path}: sha256 {digest[:12]}... differs from manifest {entry.sha256[:12]}..."]
    problems = []
    try:
        with h5py.File(path, "r") as f:
            n = f[fmt.OBJECT_ID].shape[0]
            if n != entry.n_rows:
                problems.append(f"{path}: {n} rows, manifest says {entry.n_rows}")
            shape = tuple(f[fmt.IMAGE].shape[1:])
            if shape != manifest.image_shape:
                problems.append(f"{path}: image shape {shape}, manifest {manifest.image_shape}")
            problems += _layout_problems(path, f, n, manifest)
            id_dtype = f[fmt.OBJECT_ID].dtype
            if (id_dtype.kind, id_dtype.itemsize) != ("i", 8):  # any byte order
                problems.append(f"{path}: object_id is {id_dtype}, expected int64")
            elif ids is not None:
                ids[entry.file] = f[fmt.OBJECT_ID][()].astype(np.int64)
            if full and entry.healpix is not None and fmt.HEALPIX in f:
                stray = int((f[fmt.HEALPIX][()] != entry.healpix).sum())
                if stray:
                    problems.append(
                        f"{path}: {stray} rows lie outside its HEALPix pixel {entry.healpix}"
                    )
    except (OSError, KeyError) as e:
        problems.append(f"{path}: unreadable HDF5 ({e})")
    return problems


def _layout_problems(path: Path, f: h5py.File, n: int, manifest: Manifest) -> list[str]:
    """What in an open shard disagrees with the manifest, which every reader trusts: a
    per-object dataset of another length than `n` rows, an image or column dtype other
    than the manifest's, bands in another order than `bands`, a listed column missing."""
    problems = []
    for name in (fmt.RA, fmt.DEC, fmt.IMAGE, *fmt.PER_BAND_DATASETS, *manifest.columns):
        if name not in f:
            if name in manifest.columns:
                problems.append(f"{path}: column {name!r} missing")
            continue
        shape = getattr(f[name], "shape", None)  # a group has none
        rows = shape[0] if shape else None
        if rows != n:
            problems.append(f"{path}: {name!r} has {rows} rows, object_id {n}")
        elif name in manifest.columns and f[name].dtype != np.dtype(manifest.columns[name].dtype):
            listed = manifest.columns[name].dtype
            problems.append(f"{path}: column {name!r} is {f[name].dtype}, manifest {listed}")
    dtype = f[fmt.IMAGE].dtype
    if dtype != np.dtype(manifest.image_dtype):
        problems.append(
            f"{path}: image_array is {dtype}, manifest image_dtype {manifest.image_dtype}"
        )
    if fmt.BANDS in f:
        bands = tuple(b.decode() if isinstance(b, bytes) else str(b) for b in f[fmt.BANDS][()])
        if bands != manifest.bands:
            problems.append(
                f"{path}: image_band {list(bands)}, manifest bands {list(manifest.bands)}"
            )
    return problems


def repeated_ids(survey_dir: Path, ids: dict[str, np.ndarray], shown: int = 3) -> list[str]:
    """One line if an object id occurs twice in the survey (within or across shards),
    naming the first few and their shards: every reader looks objects up by id."""
    if not ids:
        return []
    files = list(ids)
    flat = np.concatenate([ids[f] for f in files])
    shard = np.repeat(np.arange(len(files)), [len(ids[f]) for f in files])
    order = np.argsort(flat, kind="stable")
    flat, shard = flat[order], shard[order]
    repeated = np.unique(flat[1:][flat[1:] == flat[:-1]])
    if not len(repeated):
        return []
    where = []
    for value in repeated[:shown]:
        held, times = np.unique(shard[flat == value], return_counts=True)
        holders = [f"{files[i]} x{n}" for i, n in zip(held, times, strict=True)]
        where.append(f"{value} in {', '.join(holders)}")
    more = ", ..." if len(repeated) > shown else ""
    return [
        f"{survey_dir}: {len(repeated)} object_id(s) occur more than once "
        f"({'; '.join(where)}{more}); ids must be unique over the survey"
    ]


def verify_survey(survey_dir: str | os.PathLike, full: bool = True) -> list[str]:
    """All problems found in a survey; empty if it matches its manifest.

    `full` re-hashes every shard (reads every byte) and checks that object ids are unique
    over the survey; otherwise sizes, row counts, shapes and dtypes are checked, which
    catches truncation and replacement but not a flipped bit (`Survey.check_ids`, which
    embed, report and the label studies call, and `Survey.locate` find repeated ids).
    """
    survey_dir = Path(survey_dir)
    manifest = load_manifest(survey_dir)
    problems: list[str] = []
    ids: dict[str, np.ndarray] | None = {} if full else None
    for entry in manifest.shards:
        problems += check_shard(survey_dir, entry, manifest, full, ids)
    if ids is not None:
        problems += repeated_ids(survey_dir, ids)
    listed = {s.file for s in manifest.shards}
    for stray in sorted(survey_dir.glob("shard-*.h5")):
        if stray.name not in listed:
            problems.append(f"{stray}: shard not in the manifest")
    return problems
