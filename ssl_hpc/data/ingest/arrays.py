"""Array inputs to an ingest: Multimodal Universe (MMU) trees and plain array HDF5 files.

Both hold the catalogue and the images of many objects in one file, one dataset per
column. This module finds the files, checks their schema, reads their catalogue columns
(small: read whole at plan time) and describes the images (`ArraySource`, picklable, read
block by block by `pixels.load_rows` in the shard workers).

MMU (``<root>/<dataset>/<config>/healpix=<N>/001-of-001.hdf5``): ``object_id`` bytes,
``ra``, ``dec``, ``image_band`` (N, nb) names such as b"hsc-g", ``image_array`` and
``image_ivar`` (N, nb, H, W), ``image_mask`` (N, nb, H, W) or (N, H, W) with True = clean,
``image_psf_fwhm`` and ``image_scale`` (N, nb) arcsec, catalogue columns in any case.
Array HDF5 (Hayat et al.'s SDSS files, Stein et al.'s Legacy Survey files): one image
dataset (N, B, H, W) or (N, H, W, B), named or found, and 1-D catalogue columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from ...errors import IngestError
from .. import format as fmt
from .array_columns import ID_SPELLINGS, catalogue_columns, find_column
from .catalogue import (
    SPELLINGS,
    Catalogue,
    Reject,
    catalogue_from_table,
    parse_ids,
    stable_ids,
)
from .config import IngestConfig, resampled_size

MMU_IMAGE = "image_array"
MMU_IVAR = "image_ivar"
MMU_MASK = "image_mask"
MMU_SCALE = "image_scale"
#: Datasets of an MMU file that are not catalogue columns (MMU's own nside-16 healpix is
#: dropped: a partitioned survey writes its own at its order).
MMU_RESERVED = ("object_id", "ra", "dec", "healpix", "image_band")
IMAGE_SPELLINGS = ("images", "image_array", "image", "cutouts")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


@dataclass(frozen=True)
class ArraySource:
    """The images of an array input, as the shard workers read them.

    `band_index` picks the stored planes in survey band order. The stored cutout is the
    central `crop` px (0: per object, from `out_scale`) resampled to `size` px. `in_scale`
    is every object's input scale, or None to read each object's MMU ``image_scale``.
    """

    kind: str  # "mmu" or "hdf5"
    files: tuple[str, ...]
    image_dataset: str
    channels_last: bool
    band_index: tuple[int, ...]
    crop: int
    size: int
    in_scale: float | None
    out_scale: float | None
    psf_fwhm: tuple[float, ...]  # hdf5: the config's (one per band, NaN unknown)


@dataclass
class ArrayInput:
    """What planning needs from an array input: the catalogue (with `locator`: each row's
    (file index, row in file)), the image source, and the survey's band names and scale."""

    catalogue: Catalogue
    locator: np.ndarray  # (N, 2) int64
    source: ArraySource
    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    file_rejects: list[Reject]


def find_files(images: str, kind: str) -> list[Path]:
    """The input's HDF5 files in a stable order: `images` itself if it is a file; for MMU
    every ``healpix=*/*.hdf5`` below it; else every .h5/.hdf5 file below it."""
    root = Path(images)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise IngestError(f"{images}: no such file or directory")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in H5_SUFFIXES and p.is_file())
    if kind == "mmu":
        found = [p for p in found if p.parent.name.startswith("healpix=")] or found
    if not found:
        raise IngestError(f"{images}: no HDF5 files (.h5, .hdf5) found below it")
    return found


def detect_kind(path: Path) -> str:
    """ "mmu" if the file has MMU's image_array and image_band datasets, else "hdf5"."""
    with _open(path) as f:
        return "mmu" if MMU_IMAGE in f and "image_band" in f else "hdf5"


def load_array_input(config: IngestConfig, kind: str) -> ArrayInput:
    """Read every file's catalogue columns, check the schema, and describe the images.

    A file that breaks the schema (no image_band, band counts that disagree, no ids, an
    unreadable dataset) raises IngestError naming it, or in skip mode is left out whole
    and listed as a reject.
    """
    files = find_files(config.images, kind)
    if kind == "hdf5" and not config.bands:
        raise IngestError(f"{files[0]}: array HDF5 files need --bands, a name per image plane")
    skip = config.on_error == "skip"
    layouts, rejects = [], []
    for path in files:
        try:
            layouts.append(_read_layout(path, config, kind))
        except IngestError as e:
            if not skip:
                raise
            rejects.append(Reject(None, str(path), str(e).removeprefix(f"{path}: ")))
    layouts = _same_as_first(layouts, skip, rejects)
    if not layouts:
        raise IngestError(f"{config.images}: no readable input file; reasons in the rejects")
    first = layouts[0]
    bands, band_index = _select_bands(first, config)
    table, names, locator = _concatenate(layouts)
    if kind == "mmu":
        ids, bad = stable_ids(names), {}
        config_for_ids = config if config.id_column else _with_id_column(config, "object_id")
    else:
        ids, bad = parse_ids(names, first.id_column)
        config_for_ids = _with_id_column(config, first.id_column)
    where = str(config.images)
    catalogue = catalogue_from_table(table, ids, bad, config_for_ids, where, lower_case=True)
    for lay in layouts:
        catalogue.skipped_columns.update({k: f"{lay.path}: {v}" for k, v in lay.odd.items()})
    if kind == "mmu":
        width = max(1, max(len(n) for n in names))
        catalogue.columns[fmt.SOURCE_ID] = names.astype(f"S{width}")[catalogue.rows]
    crop, size, in_scale, out_scale = _geometry(first, config, kind)
    psf = np.full(len(bands), np.nan, dtype=np.float32)
    psf[:] = config.psf_fwhm or np.nan
    source = ArraySource(
        kind=kind,
        files=tuple(str(lay.path) for lay in layouts),
        image_dataset=first.image_dataset,
        channels_last=first.channels_last,
        band_index=band_index,
        crop=crop,
        size=size,
        in_scale=in_scale,
        out_scale=out_scale,
        psf_fwhm=tuple(psf.tolist()),
    )
    return ArrayInput(catalogue, locator[catalogue.rows], source, bands, out_scale, rejects)


@dataclass
class _Layout:
    """One input file's schema and catalogue columns."""

    path: Path
    n_rows: int
    image_dataset: str
    channels_last: bool
    band_names: tuple[str, ...]  # as stored (MMU) or as configured (hdf5)
    height: int
    width: int
    id_column: str
    ids: np.ndarray  # (N,) the id column as stored
    columns: dict[str, np.ndarray]
    scale: float | None  # MMU: the first object's image_scale, first band
    odd: dict[str, str]  # 1-D datasets of another length than the images: left out, why


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise IngestError(f"{path}: not a readable HDF5 file ({e})") from e


def _read_layout(path: Path, config: IngestConfig, kind: str) -> _Layout:
    with _open(path) as f:
        try:
            return _mmu_layout(path, f, config) if kind == "mmu" else _h5_layout(path, f, config)
        except (OSError, KeyError, ValueError) as e:
            raise IngestError(f"{path}: unreadable ({type(e).__name__}: {e})") from e


def _mmu_layout(path: Path, f: h5py.File, config: IngestConfig) -> _Layout:
    for name in ("object_id", "ra", "dec", MMU_IMAGE, "image_band"):
        if name not in f:
            raise IngestError(f"{path}: no {name!r} dataset; not a Multimodal Universe file")
    image = f[MMU_IMAGE]
    if image.ndim != 4:
        raise IngestError(f"{path}: image_array has shape {image.shape}; expected (N, nb, H, W)")
    n, nb, h, w = image.shape
    band = f["image_band"][()]
    if band.ndim != 2 or band.shape != (n, nb):
        raise IngestError(
            f"{path}: image_band has shape {band.shape} but image_array has {nb} bands "
            f"for {n} objects; expected ({n}, {nb})"
        )
    if n and not (band == band[:1]).all():
        raise IngestError(f"{path}: image_band differs between objects; expected one order")
    for name in (MMU_IVAR, MMU_MASK):
        if name in f and (f[name].shape[0] != n or f[name].shape[-2:] != (h, w)):
            raise IngestError(f"{path}: {name} has shape {f[name].shape}; images {image.shape}")
    names = tuple(b.decode().strip() if isinstance(b, bytes) else str(b) for b in band[0])
    # float32 on disk: 0.168 reads as 0.16799999...; keep the digits float32 holds
    scale = float(f"{f[MMU_SCALE][0, 0]:.7g}") if MMU_SCALE in f and n else None
    columns, odd = catalogue_columns(path, f, n, MMU_RESERVED, config)
    return _Layout(
        path,
        n,
        MMU_IMAGE,
        False,
        names,
        h,
        w,
        "object_id",
        f["object_id"][()],
        {"ra": f["ra"][()], "dec": f["dec"][()], **columns},
        scale,
        odd,
    )


def _h5_layout(path: Path, f: h5py.File, config: IngestConfig) -> _Layout:
    name = config.image_dataset or next((s for s in IMAGE_SPELLINGS if s in f), "")
    if not name or name not in f:
        have = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
        raise IngestError(
            f"{path}: no image dataset {config.image_dataset or IMAGE_SPELLINGS}; have {have}"
        )
    image = f[name]
    if image.ndim != 4:
        raise IngestError(f"{path}: {name} has shape {image.shape}; expected 4 dimensions")
    n = image.shape[0]
    channels_last = _axis_order(path, name, image.shape, len(config.bands), config.axis_order)
    h, w = image.shape[1:3] if channels_last else image.shape[2:]
    columns, odd = catalogue_columns(path, f, n, (name,), config)
    id_column = config.id_column or find_column(columns, ID_SPELLINGS)
    if id_column not in columns:
        raise IngestError(
            f"{path}: no id column {config.id_column or ID_SPELLINGS}; have {sorted(columns)}"
        )
    ids = columns.pop(id_column)
    return _Layout(
        path, n, name, channels_last, config.bands, h, w, id_column, ids, columns, None, odd
    )


def _axis_order(path: Path, name: str, shape: tuple, bands: int, given: str) -> bool:
    """True if the bands are the last axis (NHWC); IngestError if the shape disagrees."""
    nchw = shape[1] == bands
    nhwc = shape[3] == bands
    if given != "auto":
        ok = nhwc if given == "NHWC" else nchw
        if not ok:
            raise IngestError(f"{path}: {name} has shape {shape}; not {given} with {bands} bands")
        return given == "NHWC"
    if nchw == nhwc:
        why = "both" if nchw else "neither"
        raise IngestError(
            f"{path}: {name} has shape {shape}; {why} of axes 1 and 3 match the {bands} "
            "bands: give --axis-order NCHW or NHWC"
        )
    return nhwc


def _same_as_first(layouts: list[_Layout], skip: bool, rejects: list[Reject]) -> list[_Layout]:
    """The files whose bands and image size match the first file's; a file that differs
    raises IngestError naming it, or in skip mode is left out and listed in `rejects`."""
    if not layouts:
        return layouts
    first, kept = layouts[0], layouts[:1]
    for lay in layouts[1:]:
        why = ""
        if lay.band_names != first.band_names:
            why = (
                f"bands {list(lay.band_names)} differ from {first.path}'s {list(first.band_names)}"
            )
        elif (lay.height, lay.width) != (first.height, first.width):
            why = (
                f"images {lay.height}x{lay.width} px, {first.path} has {first.height}x{first.width}"
            )
        if why and not skip:
            raise IngestError(f"{lay.path}: {why}")
        if why:
            rejects.append(Reject(None, str(lay.path), why))
        else:
            kept.append(lay)
    return kept


def _geometry(
    first: _Layout, config: IngestConfig, kind: str
) -> tuple[int, int, float | None, float]:
    """(crop in input px, or 0 to derive it per object from its image_scale; stored size px;
    the one input scale, or None to read each object's; the survey's arcsec/px)."""
    full = min(first.height, first.width)
    crop = config.crop or full
    if crop > full:
        raise IngestError(
            f"{first.path}: images are {first.height}x{first.width} px, smaller than the "
            f"{crop} px crop"
        )
    per_object = kind == "mmu" and config.pixel_scale_arcsec is None
    in_scale = config.pixel_scale_arcsec or (first.scale if kind == "mmu" else fmt.SDSS_PIXEL_SCALE)
    if in_scale is None:
        raise IngestError(f"{first.path}: no image_scale; give the input pixel scale")
    target = config.out_pixel_scale
    size = config.resize or (resampled_size(crop, in_scale, target) if target else crop)
    out_scale = target or in_scale * crop / size
    return (
        (0 if per_object and target else crop),
        size,
        (None if per_object else in_scale),
        out_scale,
    )


def short_band(name: str) -> str:
    """A band name without its survey prefix: "hsc-g" -> "g", "des-r" -> "r", "r" -> "r"."""
    return name.rsplit("-", 1)[-1]


def _select_bands(first: _Layout, config: IngestConfig) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(survey band names, index of each in the stored planes) from `config.bands`."""
    stored = first.band_names
    if not config.bands:
        shorts = tuple(short_band(b) for b in stored)
        names = shorts if len(set(shorts)) == len(shorts) else stored
        return names, tuple(range(len(stored)))
    index = []
    for band in config.bands:
        hits = [i for i, s in enumerate(stored) if band in (s, short_band(s))]
        if len(hits) != 1:
            why = "is not one of" if not hits else "matches several of"
            raise IngestError(f"{first.path}: band {band!r} {why} its bands {list(stored)}")
        index.append(hits[0])
    return tuple(short_band(b) for b in config.bands), tuple(index)


def _concatenate(layouts: list[_Layout]) -> tuple[Table, np.ndarray, np.ndarray]:
    """(catalogue Table of every file's rows, their ids as stored, locator (N, 2)).

    A column missing from some file is left out (ra and dec are always kept, NaN where a
    file has none)."""
    common = set(layouts[0].columns)
    for lay in layouts[1:]:
        common &= set(lay.columns)
    table = Table()
    for name in sorted(common, key=list(layouts[0].columns).index):
        values = np.concatenate([lay.columns[name] for lay in layouts])
        if values.dtype.kind in "biuf" or name in ("ra", "dec"):
            table[name] = values
    for name in ("ra", "dec"):
        if name not in table.colnames:
            spelled = find_column(dict.fromkeys(table.colnames), SPELLINGS[name])
            if not spelled:
                table[name] = np.full(sum(lay.n_rows for lay in layouts), np.nan)
    ids = np.concatenate([lay.ids for lay in layouts])
    locator = np.concatenate(
        [
            np.stack([np.full(lay.n_rows, i), np.arange(lay.n_rows)], 1)
            for i, lay in enumerate(layouts)
        ]
    ).astype(np.int64)
    return table, ids, locator


def _with_id_column(config: IngestConfig, name: str) -> IngestConfig:
    return replace(config, id_column=name)


def file_stamp(paths: list[str]) -> str:
    """Size and modification time of each input file, for a shard's input checksum."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)
