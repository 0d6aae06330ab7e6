"""The catalogue side of an ingest: reading the table, the ids, the column spellings.

The catalogue (CSV, FITS table, anything ``astropy.table.Table.read`` reads) is validated
whole before any image is read: the id column must exist and hold unique integers; ra,
dec, E(B-V) and z_spec are found under their common spellings (`SPELLINGS`) unless named.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io.registry import IORegistryError
from astropy.table import Table

from ...errors import IngestError
from .. import format as fmt
from ..labels import redshifts_or_nan
from .config import IngestConfig

#: Canonical column -> accepted catalogue spellings (case-insensitive), in priority order.
#: A bare "z" comes last: in photometric catalogues it is usually the z-band magnitude.
SPELLINGS = {
    "ra": ("ra", "ra_deg", "raj2000", "ra_j2000", "alpha_j2000"),
    "dec": ("dec", "dec_deg", "dej2000", "decj2000", "dec_j2000", "delta_j2000"),
    "ebv": ("ebv", "e_bv", "e(b-v)", "ebmv"),
    "z_spec": ("z_spec", "zspec", "spec_z", "specz", "redshift", "z"),
}


class Reject(NamedTuple):
    """An object left out in skip mode (object_id None: the catalogue row had no valid id)."""

    object_id: int | None
    file: str
    reason: str


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
    rows: np.ndarray | None = None  # (N,) the kept rows' indices in the table read


#: catalogue file suffix -> astropy reader (a trailing .gz is read through)
CATALOGUE_SUFFIXES = {
    ".csv": "ascii.csv",
    ".tsv": "ascii.tab",
    ".ecsv": "ascii.ecsv",
    ".txt": "ascii",
    ".dat": "ascii",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
}


def table_format(name: str) -> str | None:
    """astropy's reader for a catalogue file name; None where the name says nothing (astropy
    then identifies the format from the content, or refuses)."""
    base = name.lower().removesuffix(".gz")
    return next((f for s, f in CATALOGUE_SUFFIXES.items() if base.endswith(s)), None)


def read_table(path: str) -> Table:
    """The catalogue as an astropy Table; IngestError naming the file if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"{path}: catalogue not found")
    kind = table_format(p.name)
    with open(p, "rb") as f:
        start = f.read(4)
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise IngestError(f"{path}: the catalogue is UTF-16 text; save it as UTF-8")
    try:
        table = Table.read(path, format=kind)
    except IORegistryError as e:
        raise IngestError(
            f"{path}: cannot read catalogue (format not known from its name; "
            f"use one of {', '.join(CATALOGUE_SUFFIXES)}, optionally .gz)"
        ) from e
    except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise IngestError(f"{path}: cannot read catalogue ({type(e).__name__}: {first})") from e
    for column in list(table.colnames):  # a UTF-8 byte-order mark (Excel) is not a name
        if column.startswith("\ufeff"):
            table.rename_column(column, column.removeprefix("\ufeff"))
    if len(table) == 0:
        raise IngestError(f"{path}: the catalogue has no rows")
    return table


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
    ids, bad = parse_ids(table[config.id_column], config.id_column)
    return catalogue_from_table(table, ids, bad, config, config.catalog)


def catalogue_from_table(
    table: Table,
    ids: np.ndarray,
    bad: dict[int, str],
    config: IngestConfig,
    where: str,
    lower_case: bool = False,
) -> Catalogue:
    """The Catalogue of `table`'s rows with integer `ids` ({row: problem} in `bad`): the
    positions and canonical columns found, the other numeric columns copied (names
    lower-cased with `lower_case`, for files whose column case varies). `where` names the
    source in errors and rejects."""
    names = list(table.colnames)
    valid, rejects = _check_ids(ids, bad, config, where)
    column_map = _column_map(names, config)
    ra, dec = (_position(table, column_map.get(c), where) for c in ("ra", "dec"))
    _check_sky(dec, column_map.get("dec"), where)
    ra = np.where(np.isfinite(ra), ra % 360.0, ra)  # -180..180 conventions to 0..360
    columns, skipped = _catalogue_columns(table, column_map, config.id_column, lower_case)
    return Catalogue(
        object_id=ids[valid],
        ra=ra[valid],
        dec=dec[valid],
        columns={k: v[valid] for k, v in columns.items()},
        column_map=column_map,
        skipped_columns=skipped,
        rejects=rejects,
        rows=np.flatnonzero(valid),
    )


def stable_ids(names: np.ndarray) -> np.ndarray:
    """Integer ids (N,) int64 for string object ids, the same for a string every time.

    A non-negative base-10 integer that fits int64 (HSC's and Legacy Surveys' ids) is kept
    as that integer; any other string gets -(1 + the first 63 bits of its BLAKE2b hash), a
    negative number, so the two kinds never collide.
    """
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        text = name.decode() if isinstance(name, bytes) else str(name)
        text = text.strip()
        if text.isdigit() and int(text) <= np.iinfo(np.int64).max:
            out[i] = int(text)
        else:
            digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
            out[i] = -1 - (int.from_bytes(digest, "big") >> 1)
    return out


def _check_ids(
    ids: np.ndarray, bad: dict[int, str], config: IngestConfig, source: str
) -> tuple[np.ndarray, list[Reject]]:
    """Rows with a usable unique id, and rejects for the others (fail mode: IngestError)."""
    where = f"{source}: id column {config.id_column!r}"
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
        Reject(None, source, f"catalogue row {r + 1}: {why}") for r, why in sorted(bad.items())
    ]
    for object_id, rows in dups.items():
        valid[rows] = False
        reason = f"duplicate id on catalogue rows {[r + 1 for r in rows]}"
        rejects += [Reject(object_id, source, reason) for _ in rows]
    return valid, rejects


def explicit_columns(config: IngestConfig) -> dict[str, str | None]:
    """Canonical name -> the column the config names for it (None: find a known spelling;
    "": none)."""
    return {
        "ra": config.ra_column,
        "dec": config.dec_column,
        "ebv": config.ebv_column,
        "z_spec": config.z_column,
    }


def _column_map(names: list[str], config: IngestConfig) -> dict[str, str]:
    """Canonical name -> catalogue column, for the canonical columns the catalogue has."""
    explicit = explicit_columns(config)
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


def _check_sky(dec: np.ndarray, name: str | None, catalog: str) -> None:
    """IngestError if a declination is off the sky: the columns are swapped or not in
    degrees (a missing value, NaN, is allowed: that object has no position)."""
    off = np.flatnonzero(np.abs(dec) > 90)
    if len(off):
        raise IngestError(
            f"{catalog}: column {name!r}: {len(off)} declination(s) beyond +-90 degrees (first:"
            f" data row {off[0] + 1}, {dec[off[0]]}); are ra and dec swapped, or not degrees?"
        )


def _catalogue_columns(
    table: Table, column_map: dict[str, str], id_column: str, lower_case: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Columns to store (canonical ones renamed) and {catalogue column: why skipped}."""
    renamed = {src: canon for canon, src in column_map.items() if canon not in (fmt.RA, fmt.DEC)}
    used = {id_column, *column_map.values()}
    columns: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name in table.colnames:
        if name in used and name not in renamed:
            continue
        out_name = renamed.get(name, name.lower() if lower_case else name)
        why = _name_problem(out_name, name in renamed, column_map)
        values, dtype_why = (None, why) if why else numeric_column(table[name])
        if values is None:
            skipped[name] = dtype_why
        elif out_name == "z_spec":  # "no spectrum" as the format says: NaN, not -9999 or 0
            columns[out_name] = redshifts_or_nan(values)
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
