"""Sharded, deterministic, resumable streaming of survey batches to training ranks.

Each epoch the shards are dealt to ranks whole (balanced by rows), so a rank reads only
its own files. Within a rank the sample order is a pure function of (seed, epoch, rank,
world_size): shards in a shuffled order, rows shuffled within each shard, then shuffled
again across a sliding window so a batch mixes several shards. Batch b of that order is
produced by DataLoader worker ``b % num_workers``; PyTorch's DataLoader takes batches from
its workers round-robin, so the stream is the same for any number of workers, and a
position (epoch, batch) is all a checkpoint needs to resume mid-epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import SurveyError
from . import format as fmt
from .batch_buffers import SLOT_KEY, Parcel, batch_tensor, new_flags, track
from .survey import Survey, open_shard, read_rows, read_rows_into


@dataclass(frozen=True)
class ReaderPosition:
    """Where a rank's stream stands: the next batch to produce in `epoch`."""

    epoch: int = 0
    batch: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    @classmethod
    def from_state_dict(cls, d: dict[str, int]) -> ReaderPosition:
        return cls(epoch=int(d["epoch"]), batch=int(d["batch"]))


def assign_shards(
    sizes: np.ndarray,
    world_size: int,
    epoch: int,
    seed: int,
    shuffle: bool = True,
    idle_ok: bool = False,
) -> list[list[int]]:
    """Deal whole shards to `world_size` ranks, balanced by row count.

    Shards are taken largest first (ties in a per-epoch random order when `shuffle`) and
    each goes to the rank with the fewest rows so far (ties to the lowest rank). Returns,
    per rank, its shard indices in the order it will read them. With fewer non-empty
    shards than ranks: an error, since training ranks must step together, unless
    `idle_ok` (inference: the extra ranks have nothing to do).
    """
    sizes = np.asarray(sizes)
    if world_size < 1:
        raise SurveyError(f"world_size={world_size}: must be >= 1")
    n_full = int((sizes > 0).sum())
    if n_full < world_size and not idle_ok:
        raise SurveyError(
            f"{n_full} non-empty shards cannot feed {world_size} ranks (each rank reads whole "
            "shards); rebuild the survey with fewer rows per shard"
        )
    tiebreak = (
        np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(sizes))
        if shuffle
        else np.arange(len(sizes))
    )
    order = [s for s in np.lexsort((tiebreak, -sizes)) if sizes[s] > 0]  # empty: no one
    load = np.zeros(world_size, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(world_size)]
    for s in order:
        r = int(np.argmin(load))
        out[r].append(int(s))
        load[r] += sizes[s]
    if not shuffle:
        return [sorted(lst) for lst in out]
    rng = np.random.default_rng([seed, epoch, 0xD0D0])
    return [[lst[i] for i in rng.permutation(len(lst))] for lst in out]


class ShardedReader(IterableDataset):
    """Batches of one rank's share of a survey, as dicts of tensors.

    Each batch holds ``image`` (B, bands, H, W) `image_dtype` (None: as stored, e.g.
    float16, half the bytes through workers and host-to-GPU copies; the fused augmentations
    read it as is), ``object_id`` (B,) int64, ``psf_fwhm`` and ``sky_sigma`` (B, bands)
    float32, plus each requested catalogue column (B,). Iterate `loader(num_workers)`
    (or ``DataLoader(reader, batch_size=None, num_workers=k)``, whose workers read each
    batch into a fresh shared buffer: correct, but slower on few cores).

    `even`: every rank yields the same number of full batches per epoch (what data-parallel
    training needs); the rows beyond that are skipped for this epoch only, different ones
    each epoch: at most (world_size - 1) x the largest shard plus a partial batch per rank,
    so keep many shards per rank (>= 10). With ``even=False, shuffle=False`` every row is
    produced exactly once across ranks, in survey order (what inference needs).
    """

    def __init__(
        self,
        survey: str | os.PathLike | Survey,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        even: bool = True,
        columns: tuple[str, ...] = (),
        shuffle_window: int = 8192,
        image_dtype: str | None = "float32",
    ) -> None:
        super().__init__()
        self.survey = survey if isinstance(survey, Survey) else Survey(survey)
        if batch_size < 1:
            raise SurveyError(f"batch_size={batch_size}: must be >= 1")
        if not 0 <= rank < world_size:
            raise SurveyError(f"rank={rank} outside world_size={world_size}")
        missing = [c for c in columns if c not in self.survey.manifest.columns]
        if missing:
            raise SurveyError(f"{self.survey.root}: no column(s) {missing} for the reader")
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.even = seed, shuffle, even
        self.columns = tuple(columns)
        self.shuffle_window = max(1, shuffle_window)
        self.image_dtype = np.dtype(image_dtype or self.survey.manifest.image_dtype)
        self.position = ReaderPosition()
        self._flags: torch.Tensor | None = None  # the current loader's buffer table
        self._main_reads = False  # whether this process reads some of the loader's batches
        self._sizes = self.survey.shard_sizes
        self._paths = [str(p) for p in self.survey.shard_paths]
        assign_shards(self._sizes, world_size, 0, seed, shuffle)  # fail early if too few shards

    # --- the order -----------------------------------------------------------------------
    def rank_order(self, epoch: int, rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row in shard) of every sample `rank` reads in `epoch`, in order."""
        rank = self.rank if rank is None else rank
        shards = assign_shards(self._sizes, self.world_size, epoch, self.seed, self.shuffle)[rank]
        if not shards:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        rng = np.random.default_rng([self.seed, epoch, rank, 0xBEEF])
        shard_idx = np.concatenate([np.full(self._sizes[s], s, np.int64) for s in shards])
        rows = np.concatenate(
            [
                rng.permutation(self._sizes[s]) if self.shuffle else np.arange(self._sizes[s])
                for s in shards
            ]
        ).astype(np.int64)
        if self.shuffle and self.shuffle_window > 1:
            perm = np.arange(len(rows))
            for start in range(0, len(rows), self.shuffle_window):
                stop = min(start + self.shuffle_window, len(rows))
                perm[start:stop] = start + rng.permutation(stop - start)
            shard_idx, rows = shard_idx[perm], rows[perm]
        return shard_idx, rows

    def batches_per_epoch(self, epoch: int = 0) -> int:
        """Batches this rank yields in `epoch` (the same on every rank when `even`)."""
        per_rank = [
            sum(int(self._sizes[s]) for s in lst)
            for lst in assign_shards(self._sizes, self.world_size, epoch, self.seed, self.shuffle)
        ]
        if self.even:
            return min(per_rank) // self.batch_size
        return -(-per_rank[self.rank] // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch(self.position.epoch)

    # --- position ------------------------------------------------------------------------
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Produce `epoch` from batch `start_batch` on the next iteration (resume point)."""
        self.position = ReaderPosition(epoch=epoch, batch=start_batch)

    def load_state_dict(self, d: dict[str, int]) -> None:
        self.position = ReaderPosition.from_state_dict(d)

    # --- reading -------------------------------------------------------------------------
    def loader(self, num_workers: int = 0, pin_memory: bool = False) -> Iterator[dict]:
        """This rank's batches from the current position, read by `num_workers` DataLoader
        worker processes (0: in this process) into shared buffers they reuse once a batch
        is released (see data/batch_buffers.py)."""
        self._flags = new_flags(num_workers) if num_workers > 0 else None
        flags = self._flags
        # One worker alone can at best match this process's own read rate, less the cost
        # of handing each batch over, so with one worker this process reads every other
        # batch itself (reader 0 of 2; first, while the worker starts). Two or more outrun
        # it on their own.
        self._main_reads = num_workers == 1
        try:
            loader = DataLoader(
                self, batch_size=None, num_workers=num_workers, pin_memory=pin_memory
            )
            batches = (track(batch, flags) for batch in loader)  # starts the workers
            yield from _alternate(iter(self), batches) if self._main_reads else batches
        finally:
            self._flags, self._main_reads = None, False

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        # the readers take batches in turn: this process (if it reads), then each worker
        main = int(self._main_reads)
        worker, n_workers = (info.id + main, info.num_workers + main) if info else (0, 1 + main)
        epoch, start = self.position.epoch, self.position.batch
        shard_idx, rows = self.rank_order(epoch)
        n_batches = self.batches_per_epoch(epoch)
        files: dict[int, object] = {}
        try:
            for b in range(start + worker, n_batches, n_workers):
                sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield self._read_batch(shard_idx[sl], rows[sl], files)
        finally:
            for f in files.values():
                f.close()  # type: ignore[attr-defined]

    def _read_batch(self, shard_idx: np.ndarray, rows: np.ndarray, files: dict) -> dict:
        n = len(rows)
        bands, h, w = self.survey.manifest.image_shape
        image_tensor, slot = batch_tensor((n, bands, h, w), self.image_dtype, self._flags)
        image = image_tensor.numpy()
        out: dict[str, np.ndarray] = {}
        for s in np.unique(shard_idx):
            sel = np.flatnonzero(shard_idx == s)
            shard = files.get(int(s))
            if shard is None:
                shard = files[int(s)] = _OpenShard(self._paths[s], self.columns)
            read_rows_into(shard.file, fmt.IMAGE, rows[sel], image, sel)
            for key, values in shard.small.items():
                if key not in out:
                    out[key] = np.empty((n, *values.shape[1:]), values.dtype)
                out[key][sel] = values[rows[sel]]
        info = get_worker_info()
        if info is not None and self._flags is not None:  # for `loader`, which unpacks it
            return {"image": image_tensor, SLOT_KEY: Parcel(info.id, slot, out)}
        return {"image": image_tensor, **{k: torch.from_numpy(v) for k, v in out.items()}}


def _alternate(first: Iterator[dict], second: Iterator[dict]) -> Iterator[dict]:
    """first's item, second's, first's, ... until both run out."""
    for item in first:
        yield item
        other = next(second, None)
        if other is not None:
            yield other
    yield from second


class _OpenShard:
    """An open shard with its small per-object datasets held in memory (a few bytes/row)."""

    def __init__(self, path: str, columns: tuple[str, ...]) -> None:
        self.file = open_shard(path)
        everything = np.arange(self.file[fmt.OBJECT_ID].shape[0])
        names = {"object_id": fmt.OBJECT_ID, "psf_fwhm": fmt.PSF_FWHM, "sky_sigma": fmt.SKY_SIGMA}
        names.update({c: c for c in columns})
        self.small = {k: read_rows(self.file, v, everything) for k, v in names.items()}

    def close(self) -> None:
        self.file.close()
