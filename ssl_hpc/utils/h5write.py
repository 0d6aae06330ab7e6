"""Opening an HDF5 file for writing so that a full disk fails as an exception, not a crash."""

from __future__ import annotations

import os

import h5py


def new_h5_file(path: str | os.PathLike, **kwargs) -> h5py.File:
    """A new HDF5 file at `path`, built in memory and written out in one piece on close.

    HDF5 2.0 with its default (sec2) driver segfaults, at close or at interpreter exit,
    once a write has failed for lack of space; with the core driver every write before
    the close lands in memory and the one write to disk at close raises an ordinary error
    (which `atomic_path` turns into DiskFullError). Shards are already held in memory
    whole while they are written, so this costs at most one more copy of a shard.
    """
    return h5py.File(path, "w", driver="core", backing_store=True, **kwargs)
