"""The embedding set on disk: one HDF5 shard per survey shard, a done-record per shard, and a
manifest written when every shard is there.

``EMB/run.json``            the job's claim (`data.sharded_job.claim_dir`): what the set is
                            of (checkpoint and survey sha256, head, field, texture,
                            precision), and the checkpoint's and survey's paths
``EMB/emb-00000.h5``        ``embeddings`` (N, D) float32, contiguous (memory-mappable),
                            ``object_id``, ``ra``, ``dec``; optionally ``projection`` (N, P)
                            and ``field`` (N, D): the whole cutout seen at 1/f resolution
                            (`models.inference.field_view`), for anomalies anywhere in it;
                            ``texture`` (N, 2C): one early stage's channel means and
                            spreads on the centre crop (`ResNet.with_texture`)
``EMB/emb-00000.h5.done``   the sharded job's done-record: the run's identity checksum,
                            the survey shard's sha256, the shard's rows, bytes and sha256
``EMB/manifest.json``       the run identity + every shard's rows, bytes, sha256
``EMB/pca.npz``             optional: mean, components, explained variance (fitted on a sample)
``EMB/verified.json``       which shards were last re-hashed against the manifest, by their
                            size and modification time (see `EmbeddingSet.open`)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..data.manifest import ShardEntry
from ..errors import SslHpcError
from ..utils.atomic import atomic_path, write_json_atomic
from ..utils.h5write import new_h5_file
from ..utils.hashing import sha256_file, sha256_json

SCHEMA = 1
RUN_FILE = "run.json"
MANIFEST = "manifest.json"
PCA_FILE = "pca.npz"
VERIFIED_FILE = "verified.json"
SHARD = "emb-{index:05d}.h5"


class EmbeddingError(SslHpcError):
    """An embedding set that is missing, mismatched or corrupt."""


def shard_path(root: Path, index: int) -> Path:
    return root / SHARD.format(index=index)


def write_embedding_shard(
    path: Path,
    identity: dict,
    object_id: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    embeddings: np.ndarray,
    projection: np.ndarray | None = None,
    field: np.ndarray | None = None,
    texture: np.ndarray | None = None,
) -> ShardEntry:
    """Write one shard atomically (its run `identity` in the attributes); returns its
    entry (the done-record is the sharded job's: `data.sharded_job.record`)."""
    with atomic_path(path) as tmp:
        with new_h5_file(tmp) as f:
            f.create_dataset("embeddings", data=embeddings.astype(np.float32))  # contiguous
            f.create_dataset("object_id", data=object_id.astype(np.int64))
            f.create_dataset("ra", data=ra.astype(np.float64))
            f.create_dataset("dec", data=dec.astype(np.float64))
            if projection is not None:
                f.create_dataset("projection", data=projection.astype(np.float32))
            if field is not None:
                f.create_dataset("field", data=field.astype(np.float32))
            if texture is not None:
                f.create_dataset("texture", data=texture.astype(np.float32))
            f.attrs["identity"] = json.dumps(identity, sort_keys=True)
        entry = ShardEntry.of_file(tmp, len(object_id), name=path.name)
    return entry


@dataclass
class EmbeddingSet:
    """A finished embedding set: vectors aligned with object ids, shard by shard.

    `verify="full"` (what every reader of a set uses) re-hashes every shard against the
    manifest, EmbeddingError naming the first bad one: the vectors are memory-mapped with
    no checksum of their own, so a flipped byte would otherwise be searched as a vector.
    A shard whose size and modification time match verified.json, written after the last
    check, is not re-hashed (skipped silently on a read-only set); "quick" checks sizes only.
    """

    root: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | os.PathLike, verify: str = "full") -> EmbeddingSet:
        root = Path(path)
        mpath = root / MANIFEST
        if not mpath.exists():
            raise EmbeddingError(f"{root}: no {MANIFEST} (not an embedding set, or unfinished)")
        try:
            manifest = json.loads(mpath.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EmbeddingError(f"{mpath}: not valid JSON ({e})") from e
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
            raise EmbeddingError(f"{mpath}: malformed (no list of shards)")
        if "schema_version" in manifest and "dim" not in manifest:
            raise EmbeddingError(
                f"{root}: a survey, not an embedding set (give it as --data; --embeddings "
                "takes the --out of ssl-hpc embed)"
            )
        needed = ("file", "bytes", "sha256", "n_rows")
        if not isinstance(manifest.get("dim"), int) or not all(
            isinstance(e, dict) and all(k in e for k in needed) for e in manifest["shards"]
        ):
            raise EmbeddingError(f"{mpath}: malformed (needs dim and, per shard, {needed})")
        checked = _read_verified(root) if verify == "full" else {}
        stamps = {}
        for entry in manifest["shards"]:
            p = root / entry["file"]
            stat = p.stat() if p.exists() else None
            if stat is None or stat.st_size != entry["bytes"]:
                raise EmbeddingError(f"{p}: missing or of the wrong size")
            if verify != "full":
                continue
            stamp = [entry["sha256"], stat.st_size, stat.st_mtime_ns]
            if checked.get(entry["file"]) != stamp and sha256_file(p) != entry["sha256"]:
                raise EmbeddingError(
                    f"{p}: sha256 differs from the manifest (the file was damaged after it "
                    f"was written); rerun ssl-hpc embed with --out {root}: it embeds that "
                    "shard again"
                )
            stamps[entry["file"]] = stamp
        if verify == "full" and stamps != checked:
            # a set others made may be read-only to us: then it is checked every time
            with contextlib.suppress(OSError):
                write_json_atomic(root / VERIFIED_FILE, stamps)
        return cls(root, manifest)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def __len__(self) -> int:
        return int(sum(e["n_rows"] for e in self.manifest["shards"]))

    def shards(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(object_id, embeddings) per shard, in survey order (streaming)."""
        for entry in self.manifest["shards"]:
            with h5py.File(self.root / entry["file"], "r") as f:
                yield f["object_id"][()], f["embeddings"][()]

    def column(self, name: str) -> np.ndarray:
        """One per-row dataset (``object_id``, ``ra``, ``dec``) of every shard, concatenated."""
        parts = []
        for entry in self.manifest["shards"]:
            with h5py.File(self.root / entry["file"], "r") as f:
                parts.append(f[name][()])
        return np.concatenate(parts) if parts else np.empty(0)

    def object_ids(self) -> np.ndarray:
        """Object ids of every row, in survey order."""
        return self.column("object_id").astype(np.int64)

    def memmap(self, index: int) -> np.ndarray:
        """Shard `index`'s (N, D) embeddings memory-mapped, read-only (no copy)."""
        path = self.root / self.manifest["shards"][index]["file"]
        with h5py.File(path, "r") as f:
            ds = f["embeddings"]
            offset, shape = ds.id.get_offset(), ds.shape
        return np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=shape)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """All (object_id (N,), embeddings (N, D)) in survey order."""
        ids, vecs = zip(*self.shards()) if self.manifest["shards"] else ((), ())
        if not ids:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(ids), np.concatenate(vecs)

    def field(self) -> np.ndarray | None:
        """(N, D) representations of each cutout's whole field, or None if not embedded."""
        if not self.manifest.get("field"):
            return None
        return self.column("field").astype(np.float32)

    def texture(self) -> np.ndarray | None:
        """(N, 2C) textures of each centre crop's early encoder stage, or None if not stored."""
        if not self.manifest.get("texture"):
            return None
        return self.column("texture").astype(np.float32)

    def vectors_sha256(self) -> str:
        """The set's identity: its shards' sha256s (not its path or manifest.json, which a
        move or a rerun of embed that only rewrote timings changes)."""
        shards = [[s["file"], s["n_rows"], s["sha256"]] for s in self.manifest["shards"]]
        return sha256_json(shards)

    def provenance(self) -> dict:
        """What results made from this set record of it, for `export` to match them."""
        return {
            "embeddings": str(self.root.resolve()),
            "embeddings_sha256": self.vectors_sha256(),
            "checkpoint_sha256": self.manifest.get("checkpoint_sha256"),
        }

    def run_record(self) -> dict:
        """run.json: the checkpoint and survey this set was embedded from, and its options."""
        path = self.root / RUN_FILE
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EmbeddingError(f"{path}: unreadable ({e})") from e
        if not isinstance(record, dict):
            raise EmbeddingError(f"{path}: malformed (not a JSON object)")
        return record

    def pca(self) -> dict[str, np.ndarray] | None:
        """The PCA fitted at embedding time (mean, components, explained_variance_ratio)."""
        path = self.root / PCA_FILE
        if not path.exists():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}


def load(path: str | os.PathLike, verify: str = "full") -> EmbeddingSet:
    """Open the embedding set at `path`, every shard checked (see EmbeddingSet)."""
    return EmbeddingSet.open(path, verify)


def _read_verified(root: Path) -> dict[str, list]:
    """verified.json's stamps ({} if absent or unreadable: everything is re-hashed)."""
    try:
        stamps = json.loads((root / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def write_pca(root: Path, sample: np.ndarray, dims: int, seed: int = 0) -> dict:
    """Fit PCA on `sample` (n, D) and store it as pca.npz; returns the arrays."""
    from sklearn.decomposition import PCA

    dims = min(dims, sample.shape[1], len(sample))
    pca = PCA(n_components=dims, random_state=seed).fit(sample)
    arrays = {
        "mean": pca.mean_.astype(np.float32),
        "components": pca.components_.astype(np.float32),
        "explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float32),
    }
    with atomic_path(root / PCA_FILE) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return arrays
