"""The catalogue columns of an array HDF5 file: its 1-D datasets, one value per image.

A dataset of another length is left out and said so, unless it is one the ingest reads
(the id, a position, the extinction, the redshift or a label column): left out, that
would silently be NaN or gone, so it is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ...errors import IngestError
from .catalogue import explicit_columns, resolve_column
from .config import IngestConfig

ID_SPELLINGS = ("object_id", "objid", "id", "specobjid")


def catalogue_columns(
    path: Path, f: h5py.File, n: int, skip: tuple[str, ...], config: IngestConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's 1-D datasets of length `n` (the catalogue), but those in `skip`; and the
    1-D ones of another length, left out with why. One of those that the ingest would read
    (the id, position, extinction, redshift or label column) raises IngestError: left out,
    it would silently be NaN or gone."""
    out, odd = {}, {}
    for name, ds in f.items():
        if name in skip or not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
            continue
        if ds.shape[0] == n:
            out[name] = ds[()]
        else:
            odd[name] = f"{ds.shape[0]} values for {n} images"
    for name in read_by_ingest([*out, *odd], config) & set(odd):
        raise IngestError(f"{path}: {name} has {odd[name]}; a catalogue column has one per image")
    return out, odd


def read_by_ingest(names: list[str], config: IngestConfig) -> set[str]:
    """The datasets among `names` that the ingest would read as the id, ra, dec, ebv,
    z_spec or a label column (each the one named, or the first known spelling present)."""
    id_column = config.id_column or find_column(dict.fromkeys(names), ID_SPELLINGS)
    read = {id_column, *config.label_columns}
    for canonical, given in explicit_columns(config).items():
        try:
            read.add(resolve_column(names, canonical, given, id_column) or "")
        except IngestError:  # named but absent, or ambiguous: the catalogue step says so
            continue
    return read - {""}


def find_column(columns: dict, spellings: tuple[str, ...]) -> str:
    lower = {k.lower(): k for k in columns}
    return next((lower[s] for s in spellings if s in lower), "")
