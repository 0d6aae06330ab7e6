"""Representation vectors as the search sees them: L2-normalised, read in blocks.

An embedding set of 10^7 x 2048 float32 is 80 GB: it is never loaded whole. `ShardVectors`
memory-maps each embedding shard and hands out blocks of rows; `ArrayVectors` wraps an
in-memory array with the same interface (tests, benchmarks, small samples).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..embed.store import EmbeddingSet
from ..utils.arrays import normalise


class ArrayVectors:
    """An (N, D) array held in memory; vectors are normalised once, at construction."""

    def __init__(self, vectors: np.ndarray, object_id: np.ndarray | None = None) -> None:
        self.vectors = np.ascontiguousarray(normalise(vectors))
        n = len(self.vectors)
        self.object_id = np.arange(n, dtype=np.int64) if object_id is None else object_id

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first global row, normalised block) over all rows, in order."""
        for start in range(0, len(self), block_rows):
            yield start, self.vectors[start : start + block_rows]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Normalised vectors of global `rows` (any order)."""
        return self.vectors[np.asarray(rows, dtype=np.int64)]


class ShardVectors:
    """The vectors of an embedding set, memory-mapped shard by shard (never all in RAM)."""

    def __init__(self, embeddings: EmbeddingSet) -> None:
        self.set = embeddings
        self.sizes = np.array([e["n_rows"] for e in embeddings.manifest["shards"]], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self._maps: dict[int, np.ndarray] = {}
        self._ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self.set.dim

    @property
    def object_id(self) -> np.ndarray:
        """Object ids of every row, in survey order (read once)."""
        if self._ids is None:
            self._ids = self.set.object_ids()
        return self._ids

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            self._maps[shard] = self.set.memmap(shard)
        return self._maps[shard]

    def blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first global row, normalised block); blocks never span two shards."""
        for shard, size in enumerate(self.sizes):
            mm = self._map(shard)
            for start in range(0, int(size), block_rows):
                yield int(self.offsets[shard]) + start, normalise(mm[start : start + block_rows])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Normalised vectors of global `rows` (any order), gathered shard by shard."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for shard in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == shard)
            local = rows[sel] - self.offsets[shard]
            order = np.argsort(local)  # memmap reads in file order
            out[sel[order]] = self._map(int(shard))[local[order]]
        return normalise(out)
