"""Publishing a catalogue: written under a temporary name beside CAT, renamed when whole.

`utils.atomic.atomic_path` does this for one file; a catalogue may also be a directory
(Parquet parts, a HATS collection), and may replace an old one (--overwrite), so it is
done here for both: the old CAT is moved aside only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DiskFullError, SslHpcError
from ..utils.atomic import fsync_path, out_of_space, remove_stale_temporaries, temporary_name


class CatalogueExistsError(SslHpcError):
    """The output catalogue is there already and --overwrite was not given."""


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse an existing `path` unless `overwrite` and it is a catalogue an export wrote
    (a message naming it): --overwrite must not delete a survey or a run given as --out."""
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise CatalogueExistsError(
            f"{path}: exists; choose another --out, or give --overwrite to replace it"
        )
    if not is_a_catalogue(path):
        raise CatalogueExistsError(
            f"{path}: not a catalogue an export wrote (a Parquet or FITS file that holds an "
            "export's provenance, a directory of such part-*.parquet files, or a HATS "
            "collection); --overwrite replaces only those: choose another --out"
        )


#: the Parquet schema metadata key that holds an export's provenance (JSON)
PROVENANCE_KEY = "ssl_hpc"
#: the FITS header keyword (of the CATALOGUE extension) every export writes: its version
FITS_VERSION_KEY = "SSLHPCV"


def is_a_catalogue(path: Path) -> bool:
    """Whether `path` is what an export writes: a Parquet or FITS file with an export's
    provenance in it (not any Parquet table or FITS image), a directory of such Parquet
    parts (or an empty one; dotfiles such as NFS's .nfsXXXX aside), a HATS collection of
    such tables (not a survey's downloaded catalogue), or a symbolic link (replacing it
    replaces the link, not what it names)."""
    if path.is_symlink():
        return True
    try:
        if path.is_file():
            return _exported_file(path)
        if not path.is_dir():
            return False  # a FIFO, a socket, a device
        names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        if "collection.properties" in names:  # a HATS collection: ours if its tables are
            first = next(path.rglob("*.parquet"), None)  # any table: not the whole tree
            return first is not None and _exported_file(first)
        parts = all(n.startswith("part-") and n.endswith(".parquet") for n in names)
        return parts and (not names or _exported_file(path / names[0]))
    except OSError:  # unreadable: not to be replaced unseen
        return False


def _exported_file(path: Path) -> bool:
    """Whether the file `path` is a Parquet table or FITS catalogue an export wrote."""
    with open(path, "rb") as f:
        head = f.read(16)
    try:
        if head.startswith(b"PAR1"):
            return PROVENANCE_KEY.encode() in (pq.read_schema(path).metadata or {})
        if head.startswith(b"SIMPLE  ="):
            from astropy.io import fits  # lazy: astropy is slow to import

            with fits.open(path) as hdul:
                return len(hdul) > 1 and FITS_VERSION_KEY in hdul[1].header
    except (ValueError, pa.ArrowException):  # garbled: not ours to replace
        return False
    return False


def check_not_an_input(path: Path, inputs: list[Path]) -> None:
    """Refuse a `path` that is, or holds, one of the `inputs`: --overwrite would move it
    aside and delete it once the catalogue is written."""
    target = path.resolve()
    for source in inputs:
        held = source.resolve()
        if held == target or target in held.parents:
            raise CatalogueExistsError(
                f"{path}: is or holds the input {source}; choose another --out"
            )


@contextlib.contextmanager
def staged(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the writer to make (a file or a
    directory); when the block succeeds, fsync it and rename it onto `path`, replacing an
    old `path` only if `overwrite`. A failed write leaves `path` as it was and removes the
    temporary; a full disk raises DiskFullError naming `path`."""
    path = Path(path)
    check_target(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise CatalogueExistsError(f"{path}: a part of its directory is a file ({e})") from e
    remove_stale_temporaries(path.parent, path.name)  # a killed export's partial copy
    tmp = temporary_name(path)
    remove(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        check_target(path, overwrite)  # another writer may have published it meanwhile
        _publish(tmp, path)
    except Exception as e:
        if out_of_space(e, path.parent):
            raise DiskFullError(
                f"no space left writing {path} ({shutil.disk_usage(path.parent).free} bytes "
                "free on its filesystem); free some space and rerun"
            ) from e
        raise
    finally:
        remove(tmp)


def _publish(tmp: Path, path: Path) -> None:
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    had_old = path.exists() or path.is_symlink()
    if had_old:
        os.replace(path, aside)  # a directory cannot be renamed over another one
    try:
        os.replace(tmp, path)
    except OSError:
        if had_old:
            os.replace(aside, path)
        raise
    fsync_path(path.parent)
    remove(aside)


def remove(path: Path) -> None:
    """Remove a file or directory tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under `path` (a rename is durable only
    once what it names is)."""
    if not path.is_dir():
        fsync_path(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))
