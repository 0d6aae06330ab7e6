"""Batch buffers that DataLoader workers fill in shared memory and reuse once released.

A tensor a worker hands to the main process travels as a shared-memory file descriptor;
a fresh one per batch makes the kernel fault in and zero every page, which on a 2-core
node cost a worker as much as reading the batch (1 worker ran at half the speed of none).
So each worker keeps a small ring of shared buffers. A slot is marked in use in a flag
table shared with the main process when the worker fills it, and cleared in the main
process only when the batch's image tensor, and every view or numpy array of it, has
been freed (a weakref finalizer). A worker whose ring is all in use (a consumer holding
many batches) takes a fresh buffer instead: reuse never overwrites a batch still held.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch.utils.data import get_worker_info

#: slots per worker: the DataLoader keeps at most prefetch_factor (2) batches per worker
#: in flight, plus the one being consumed
RING = 4

#: batch key carrying a `Parcel` from the worker to `track`; removed before yielding
SLOT_KEY = "_buffer_slot"


class Parcel:
    """What travels beside a worker's image buffer: its (worker, slot) and the batch's
    small per-object arrays. Not a tensor, so the DataLoader pickles it inline instead of
    making a shared-memory file for each few-hundred-byte column."""

    def __init__(self, worker: int, slot: int, columns: dict[str, np.ndarray]) -> None:
        self.worker, self.slot, self.columns = worker, slot, columns


_rings: dict[int, list[torch.Tensor | None]] = {}  # this worker process's buffers, by slot


def new_flags(num_workers: int) -> torch.Tensor:
    """The in-use table for one DataLoader's workers (made before they start; a fresh
    table per loader, so a batch held from an earlier epoch cannot free a new slot)."""
    return torch.zeros((num_workers, RING), dtype=torch.uint8).share_memory_()


def _shared_empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return torch.empty(0, dtype=torch_dtype).set_(storage, 0, shape)


def batch_tensor(
    shape: tuple[int, ...], dtype: np.dtype, flags: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """An uninitialised tensor to read a batch into, and its ring slot (-1: none).

    In the main process: ordinary memory (numpy's allocator reuses freed pages). In a
    worker: a free slot of its ring when `flags` is given, else a fresh shared buffer.
    """
    info = get_worker_info()
    if info is None:
        return torch.from_numpy(np.empty(shape, dtype)), -1
    if flags is None or info.id >= flags.shape[0]:
        return _shared_empty(shape, dtype), -1
    ring = _rings.setdefault(info.id, [None] * RING)
    for slot in range(RING):
        if flags[info.id, slot]:
            continue
        held = ring[slot]
        if held is None or tuple(held.shape) != shape or held.numpy().dtype != dtype:
            held = ring[slot] = _shared_empty(shape, dtype)
        flags[info.id, slot] = 1
        return held, slot
    return _shared_empty(shape, dtype), -1


def track(batch: dict, flags: torch.Tensor | None) -> dict:
    """In the main process: unpack a worker's `Parcel` into the batch's columns and free
    its slot once the batch's image tensor is gone."""
    parcel = batch.pop(SLOT_KEY, None)
    if parcel is None:
        return batch
    batch.update({k: torch.from_numpy(v) for k, v in parcel.columns.items()})
    if parcel.slot >= 0 and flags is not None:
        weakref.finalize(batch["image"], _release, flags, parcel.worker, parcel.slot)
    return batch


def _release(flags: torch.Tensor, worker: int, slot: int) -> None:
    flags[worker, slot] = 0
