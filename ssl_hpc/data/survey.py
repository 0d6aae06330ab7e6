"""Opening a survey directory: manifest, shards, catalogue columns and images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
from h5py import h5s

from ..errors import SurveyError, read_error
from . import format as fmt
from . import healpix
from .manifest import Manifest, load_manifest, repeated_ids, verify_survey

# Shards are read-only once written; HDF5 file locking only gets in the way on parallel
# file systems (Lustre, GPFS) and in forked loader workers.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


def open_shard(path: str | os.PathLike) -> h5py.File:
    """Open a shard read-only; a SurveyError naming the file if HDF5 cannot read it."""
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise read_error(f"{path}: cannot open shard ({e})", e) from e


def read_rows(f: h5py.File, name: str, rows: np.ndarray) -> np.ndarray:
    """Rows of dataset `name` (any order, no repeats), in its stored type in native byte
    order (big-endian data, as FITS columns are, would not reach torch); errors name the
    file."""
    try:
        ds = f[name]
    except KeyError as e:
        raise SurveyError(f"{f.filename}: cannot read {name!r} ({e})") from e
    native = ds.dtype.newbyteorder("=") if ds.dtype.byteorder not in "=|" else ds.dtype
    out = np.empty((len(rows), *ds.shape[1:]), dtype=native)
    read_rows_into(f, name, rows, out, np.arange(len(rows)))
    return out


def read_rows_into(
    f: h5py.File, name: str, rows: np.ndarray, out: np.ndarray, dest: np.ndarray
) -> None:
    """Read rows `rows` of dataset `name` into ``out[dest]`` (converting to out's dtype).

    HDF5 reads straight into `out`, one call per run of rows consecutive in both the file
    and `out` (a shuffled batch: one per row; inference: one per shard), without the
    temporary arrays h5py's slicing makes; rows stored in another dtype (float16 images
    read as float32) go through a scratch buffer and numpy's conversion, which is ~2.5x
    faster than HDF5's. Errors name the file.
    """
    rows = np.asarray(rows, dtype=np.int64)
    dest = np.asarray(dest, dtype=np.int64)
    order = np.argsort(rows, kind="stable")  # file order: the disk and chunk cache prefer it
    rows, dest = rows[order], dest[order]
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(dest) != 1)) + 1
    starts = np.concatenate([[0], breaks]) if len(rows) else np.empty(0, np.int64)
    stops = np.concatenate([breaks, [len(rows)]]) if len(rows) else np.empty(0, np.int64)
    try:
        ds = f[name]
        if not out.flags.c_contiguous or out.shape[1:] != ds.shape[1:]:
            raise ValueError(f"output {out.shape} does not hold rows of {ds.shape}")
        if ds.dtype.kind == "O":  # variable-length strings: h5py's own conversion
            if len(rows):
                out[dest] = ds[rows]
            return
        file_space = ds.id.get_space()
        row_shape = ds.shape[1:]
        origin = (0,) * len(row_shape)
        longest = int((stops - starts).max()) if len(starts) else 0
        # one scratch buffer for every run when the dtype converts, not one per row
        scratch = np.empty((longest, *row_shape), ds.dtype) if out.dtype != ds.dtype else None
        for a, b in zip(starts.tolist(), stops.tolist()):
            n, first, at = b - a, int(rows[a]), int(dest[a])
            file_space.select_hyperslab((first, *origin), (n, *row_shape))
            target = out[at : at + n] if scratch is None else scratch[:n]
            ds.id.read(h5s.create_simple(target.shape), file_space, target)
            if scratch is not None:
                out[at : at + n] = target
    except (OSError, KeyError, ValueError) as e:
        raise read_error(f"{f.filename}: cannot read {name!r} ({e})", e) from e


class Survey:
    """A survey directory, checked against its manifest when opened.

    `verify`: "quick" (sizes, row counts, shapes, dtypes: cheap), "full" (sha256 of every
    shard, unique ids),
    or "none" (trust the manifest; for workers re-opening a survey already checked).
    """

    def __init__(self, path: str | os.PathLike, verify: str = "quick") -> None:
        if verify not in ("quick", "full", "none"):
            raise SurveyError(f"verify={verify!r}: expected quick, full or none")
        self.root = Path(path)
        self.manifest: Manifest = load_manifest(self.root)
        if verify != "none":
            problems = verify_survey(self.root, full=verify == "full")
            if problems:
                raise SurveyError("; ".join(problems))

    def __repr__(self) -> str:
        m = self.manifest
        return f"Survey({str(self.root)!r}, {m.n_objects} objects, {len(m.shards)} shards)"

    def __len__(self) -> int:
        return self.manifest.n_objects

    @property
    def bands(self) -> tuple[str, ...]:
        return self.manifest.bands

    @property
    def shard_paths(self) -> list[Path]:
        return [self.root / s.file for s in self.manifest.shards]

    @property
    def shard_sizes(self) -> np.ndarray:
        return np.array([s.n_rows for s in self.manifest.shards], dtype=np.int64)

    @cached_property
    def shard_offsets(self) -> np.ndarray:
        """Global row index of each shard's first row (rows are numbered shard by shard)."""
        return np.concatenate([[0], np.cumsum(self.shard_sizes)[:-1]]).astype(np.int64)

    def column(self, name: str) -> np.ndarray:
        """A 1-D dataset (core or catalogue) concatenated over all shards, in global row order."""
        known = {fmt.OBJECT_ID, fmt.RA, fmt.DEC, *self.manifest.columns}
        if name not in known:
            raise SurveyError(f"{self.root}: no column {name!r}; have {sorted(known)}")
        parts = []
        for path in self.shard_paths:
            with open_shard(path) as f:
                parts.append(read_rows(f, name, np.arange(f[fmt.OBJECT_ID].shape[0])))
        return np.concatenate(parts) if parts else np.empty(0)

    def per_band(self, name: str) -> np.ndarray:
        """A per-object per-band dataset (image_psf_fwhm, image_sky_sigma) as (N, B)."""
        if name not in fmt.PER_BAND_DATASETS:
            raise SurveyError(f"{name!r} is not a per-band dataset {fmt.PER_BAND_DATASETS}")
        parts = []
        for path in self.shard_paths:
            with open_shard(path) as f:
                part = f[name][()]
                parts.append(part.astype(part.dtype.newbyteorder("="), copy=False))
        return np.concatenate(parts)

    def catalogue(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Object ids, positions and the named (default: all) catalogue columns."""
        names = list(self.manifest.columns) if names is None else list(names)
        return {n: self.column(n) for n in [fmt.OBJECT_ID, fmt.RA, fmt.DEC, *names]}

    @cached_property
    def _id_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids sorted, and their global rows; a SurveyError if any id repeats."""
        ids = self.column(fmt.OBJECT_ID)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if (sorted_ids[1:] == sorted_ids[:-1]).any():
            files = [s.file for s in self.manifest.shards]
            per_shard = dict(zip(files, np.split(ids, self.shard_offsets[1:]), strict=True))
            raise SurveyError("; ".join(repeated_ids(self.root, per_shard)))
        return sorted_ids, order

    def check_ids(self) -> None:
        """A SurveyError naming repeated object ids and their shards, if any repeat (read
        once: the ids are 8 bytes an object, so opening a survey does not read them)."""
        _ = self._id_index

    def locate(self, object_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Global row of each object id; SurveyError naming the first unknown id."""
        sorted_ids, order = self._id_index
        object_ids = np.asarray(object_ids, dtype=np.int64)
        pos = np.searchsorted(sorted_ids, object_ids).clip(0, max(len(sorted_ids) - 1, 0))
        found = (
            sorted_ids[pos] == object_ids if len(sorted_ids) else np.zeros(len(object_ids), bool)
        )
        if not found.all():
            raise SurveyError(f"{self.root}: object_id {int(object_ids[~found][0])} not in survey")
        return order[pos]

    def images(self, global_rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images of the given global rows as float32 (n, B, H, W), in the order asked."""
        global_rows = np.asarray(global_rows, dtype=np.int64)
        bad = (global_rows < 0) | (global_rows >= len(self))
        if bad.any():
            raise SurveyError(
                f"{self.root}: row {int(global_rows[bad][0])} outside 0..{len(self) - 1}"
            )
        shard = np.searchsorted(self.shard_offsets, global_rows, side="right") - 1
        out = np.empty((len(global_rows), *self.manifest.image_shape), dtype=np.float32)
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            with open_shard(self.shard_paths[s]) as f:
                read_rows_into(f, fmt.IMAGE, global_rows[sel] - self.shard_offsets[s], out, sel)
        return out

    def cone(self, ra: float, dec: float, radius_arcsec: float) -> Cone:
        """The objects within `radius_arcsec` of (ra, dec), nearest first. A partitioned
        survey reads only the shards whose HEALPix pixel overlaps the cone; `shards_read`
        says which were opened."""
        if not (0 <= ra < 360 and -90 <= dec <= 90) or not radius_arcsec > 0:
            raise SurveyError(
                f"cone ra={ra}, dec={dec}, radius={radius_arcsec}: expected 0 <= ra < 360, "
                "-90 <= dec <= 90 (deg) and a positive radius (arcsec)"
            )
        m = self.manifest
        wanted = None
        if m.healpix_order is not None:
            wanted = healpix.cone_pixels(ra, dec, radius_arcsec, m.healpix_order)
        found, read = [], []
        for index in m.shards_in(wanted):
            path = self.shard_paths[index]
            read.append(path.name)
            with open_shard(path) as f:
                sep = healpix.angular_sep_arcsec(f[fmt.RA][()], f[fmt.DEC][()], ra, dec)
                rows = np.flatnonzero(sep <= radius_arcsec)
                ids = f[fmt.OBJECT_ID][()][rows]
            found.append((rows + self.shard_offsets[index], ids, sep[rows]))
        rows, ids, sep = (np.concatenate(x) for x in zip(*found)) if found else ([],) * 3
        nearest = np.argsort(sep, kind="stable")
        return Cone(
            np.asarray(rows, np.int64)[nearest],
            np.asarray(ids, np.int64)[nearest],
            np.asarray(sep, np.float64)[nearest],
            tuple(read),
        )


@dataclass(frozen=True)
class Cone:
    """A cone search's result: global rows, object ids and separations (arcsec), nearest
    first, and the shard files it opened."""

    rows: np.ndarray
    object_id: np.ndarray
    sep_arcsec: np.ndarray
    shards_read: tuple[str, ...]
