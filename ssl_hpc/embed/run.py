"""Embed a whole survey with a trained encoder: MPI ranks share the shards, resumably.

Each rank takes whole shards, balanced by row count (the reader's `assign_shards`, in
survey order), and writes one embedding shard per survey shard. A rerun skips shards whose
output is finished and intact and embeds the rest; outputs of another checkpoint or survey
are refused. Rank 0 writes the manifest only when every rank has succeeded; a failure on
any rank ends the job non-zero with a message naming the rank and the shard.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ..config import to_dict
from ..data import format as fmt
from ..data.reader import assign_shards
from ..data.sharded_job import (
    JobError,
    ShardPlan,
    claim_dir,
    finished,
    read_claim,
    record,
    remove_temporaries,
)
from ..data.survey import Survey, open_shard
from ..errors import SslHpcError
from ..models.checkpoint import EncoderCheckpoint
from ..models.inference import autocast, centre_crop, check_window, field_factor, field_view
from ..utils.atomic import write_json_atomic
from ..utils.hardware import resolve_precision
from ..utils.hashing import sha256_file
from ..utils.progress import progress
from . import store
from .placement import pick_device, rank_threads

JOB = "ssl-hpc embed"
#: what `embed_shard` returns, in `store.write_embedding_shard`'s order
FIELDS = ("id", "ra", "dec", "emb", "proj", "field", "texture")


@dataclass
class EmbedOptions:
    """How `ssl-hpc embed` runs (the checkpoint, survey and output are its arguments)."""

    batch_size: int = 512
    """images per forward pass"""
    device: str = "auto"
    """auto (this rank's GPU if any, else the CPU), cpu or cuda:N"""
    with_head: bool = False
    """also store the projection head's output"""
    pca_dims: int = 0
    """also fit a PCA of this many dimensions on a sample, stored as pca.npz (0: none)"""
    pca_sample: int = 100_000
    """embeddings the PCA is fitted on"""
    field: bool = True
    """also embed each cutout's whole field binned to the view size (the vectors anomaly
    detection uses; doubles the work)"""
    precision: str = "auto"
    """auto: bf16 on GPUs and on CPUs with native bf16, else fp32; or bf16, fp32"""
    texture_stage: int = 1
    """also store the texture of this encoder stage, 1-4 (`ResNet.with_texture`: each
    channel's mean and spread over its feature map, from the same forward pass), which
    finds rings and lensed arcs that the pooled representation blurs; 0: none"""

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("pca_dims", 0), ("pca_sample", 1)):
            if getattr(self, name) < low:
                raise SslHpcError(f"{name} {getattr(self, name)}: must be >= {low}")


class Comm:
    """The few collectives the job needs: mpi4py's COMM_WORLD under an MPI launcher,
    otherwise a single process (mpi4py is not even imported)."""

    def __init__(self) -> None:
        launched = any(k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"))
        self.mpi = None
        if launched:
            from mpi4py import MPI

            self.mpi = MPI.COMM_WORLD
        self.rank = self.mpi.Get_rank() if self.mpi else 0
        self.size = self.mpi.Get_size() if self.mpi else 1
        # ranks on this node: they share its cores (a job may span several nodes)
        self.node_size = self.mpi.Split_type(MPI.COMM_TYPE_SHARED).Get_size() if self.mpi else 1

    def bcast(self, obj):
        return self.mpi.bcast(obj, root=0) if self.mpi else obj

    def gather(self, obj):
        return self.mpi.gather(obj, root=0) if self.mpi else [obj]

    def allgather(self, obj):
        return self.mpi.allgather(obj) if self.mpi else [obj]


def run_identity(
    checkpoint: EncoderCheckpoint,
    survey: Survey,
    with_head: bool,
    field: int = 0,
    precision: str = "fp32",
    texture: int = 0,
) -> dict:
    """What an embedding set is of: the exact checkpoint and survey contents (a moved
    directory is still the same run), what it holds (`field`: the field views' binning
    factor, 0 for none; `texture`: the stage whose texture it holds, 0 for none) and how
    it was computed."""
    return {
        "schema": store.SCHEMA,
        "checkpoint_sha256": checkpoint.sha256,
        "survey_content_sha256": survey.manifest.content_sha256,
        "with_head": with_head,
        "field": int(field),
        "precision": precision,
        "texture": int(texture),
    }


def _batches(path: Path, batch: int, crop: int, field: bool):
    """(object_id, ra, dec, crops, field views or None) batches of one shard, read one
    batch ahead on a thread."""
    q: queue.Queue = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            with open_shard(path) as f:
                n = f[fmt.OBJECT_ID].shape[0]
                for i in range(0, n, batch):
                    sl = slice(i, min(i + batch, n))
                    cutouts = f[fmt.IMAGE][sl]
                    images = centre_crop(cutouts, crop)
                    q.put(
                        (
                            f[fmt.OBJECT_ID][sl],
                            f[fmt.RA][sl],
                            f[fmt.DEC][sl],
                            np.ascontiguousarray(images, dtype=np.float32),
                            field_view(cutouts.astype(np.float32), crop) if field else None,
                        )
                    )
            q.put(None)
        except Exception as e:  # handed to the consumer, which names the shard
            q.put(e)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not None:
        if isinstance(item, Exception):
            raise item
        yield item


@torch.no_grad()
def embed_shard(
    path: Path,
    encoder,
    head,
    device: torch.device,
    batch: int,
    crop: int,
    field: bool,
    precision: str = "fp32",
    texture: int = 0,
) -> dict[str, np.ndarray | None]:
    """One survey shard's id, ra, dec, emb (centre crops), proj (their projection, or
    None), field (the field views' representations, or None) and texture (the centre
    crops' texture of stage `texture`, or None for 0), computed at `precision` ("bf16" or
    "fp32")."""

    def run(images: np.ndarray, stage: int = 0):
        x = torch.from_numpy(images).to(device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            return encoder.with_texture(x, stage) if stage else (encoder(x), None)

    parts: dict[str, list] = {k: [] for k in FIELDS}
    for ids, ra, dec, images, fields in _batches(path, batch, crop, field):
        z, tex = run(images, texture)
        if tex is not None:
            parts["texture"].append(tex.cpu().numpy())
        parts["id"].append(ids)
        parts["ra"].append(ra)
        parts["dec"].append(dec)
        parts["emb"].append(z.float().cpu().numpy())
        if head is not None:
            with autocast(device, precision):
                parts["proj"].append(head(z).float().cpu().numpy())
        if fields is not None:
            parts["field"].append(run(fields)[0].float().cpu().numpy())
    return {k: np.concatenate(v) if v else None for k, v in parts.items()}


def embed_survey(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: EmbedOptions | None = None,
    comm: Comm | None = None,
    after_shard: Callable[[int], None] | None = None,
) -> dict | None:
    """Embed survey `data` with `checkpoint` into `out` on this rank's shards; rank 0
    returns the manifest (None on other ranks). Raises SslHpcError on any rank's failure.
    `after_shard(index)` runs once each shard is written and recorded (fault-injection
    tests kill the rank there); None in production."""
    opts = options or EmbedOptions()
    comm = comm or Comm()
    out = Path(out)
    setup = None
    if comm.rank == 0:
        try:
            setup = _prepare(checkpoint, data, out, opts)
        except SslHpcError as e:
            setup = e
    setup = comm.bcast(setup)
    if isinstance(setup, Exception):
        raise setup
    survey = Survey(data, verify="none")
    mine = assign_shards(survey.shard_sizes, comm.size, 0, 0, shuffle=False, idle_ok=True)
    mine = mine[comm.rank]
    device = pick_device(opts.device, comm.rank)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(rank_threads(comm.node_size))
    t0 = time.perf_counter()
    records, embedded, error = _embed_shards(
        survey, mine, out, setup, opts, device, comm.rank, after_shard
    )
    reports = comm.gather(
        {
            "rank": comm.rank,
            "records": records,
            "error": error,
            "embedded": embedded,
            "seconds": time.perf_counter() - t0,
        }
    )
    failure = None
    if comm.rank == 0:
        errors = [r["error"] for r in reports if r["error"]]
        failure = "; ".join(errors) if errors else None
    failure = comm.bcast(failure)
    if failure:
        raise SslHpcError(f"embedding failed: {failure}")
    if comm.rank != 0:
        return None
    return _finish(out, read_claim(out, store.RUN_FILE), survey, reports, opts)


def _embed_shards(
    survey: Survey, mine, out: Path, setup, opts: EmbedOptions, device, rank: int, after_shard
):
    """This rank's loop over its shards: (records by index, rows embedded now, the first
    error as text naming rank and shard, or None). Finished shards are kept."""
    identity, digest, ckpt, crop = setup
    checkpoint = EncoderCheckpoint(ckpt)
    encoder = checkpoint.encoder(device).to(memory_format=torch.channels_last)
    head = checkpoint.head(device) if opts.with_head else None
    run = (encoder, head, device, opts.batch_size, crop, bool(identity["field"]))
    how = (identity["precision"], identity["texture"])
    records, embedded = {}, 0
    total = int(survey.shard_sizes[mine].sum())
    with progress(total=total, desc=f"embed rank {rank}", unit="gal") as bar:
        for index in mine:
            # the survey shard's sha256 is the input: a rewritten shard is embedded again
            src = survey.manifest.shards[index]
            plan = ShardPlan(
                index, str(store.shard_path(out, index)), src.n_rows, inputs=src.sha256
            )
            try:
                done = finished(plan, digest)
                if done is None:
                    out_ = embed_shard(survey.shard_paths[index], *run, *how)
                    entry = store.write_embedding_shard(
                        Path(plan.path), identity, *(out_[k] for k in FIELDS)
                    )
                    done = record(plan, digest, entry, {})
                    embedded += entry.n_rows
                    if after_shard is not None:
                        after_shard(index)
                records[index] = done
                bar.update(done.entry.n_rows)
            except Exception as e:  # reported with rank and shard, then the job fails
                return (
                    records,
                    embedded,
                    f"rank {rank}, shard {survey.shard_paths[index].name}: {e}",
                )
    return records, embedded, None


def _prepare(checkpoint, data, out: Path, opts: EmbedOptions):
    """Rank 0: check inputs, claim `out` for this run (or check it is this run's)."""
    ckpt = EncoderCheckpoint(checkpoint)
    survey = Survey(data)
    crop = ckpt.crop
    factor = field_factor(survey.manifest.image_shape, crop) if opts.field else 0
    # rank 0's machine decides for every rank: one set, one arithmetic
    precision = resolve_precision(opts.precision, pick_device(opts.device, 0))
    identity = run_identity(ckpt, survey, opts.with_head, factor, precision, opts.texture_stage)
    identity = _as_claimed(out, identity, survey)
    check_window(crop, survey, f"{ckpt.path} (its embed_size, else its view size)")
    if not 0 <= opts.texture_stage <= 4:
        raise SslHpcError(
            f"embed option texture_stage={opts.texture_stage}: expected 0 (none) or an "
            "encoder stage, 1 to 4"
        )
    if opts.with_head and not ckpt.has_head:
        raise SslHpcError(f"{ckpt.path}: holds no projection head for --with-head")
    ckpt.check_bands(survey.bands, data)
    survey.check_ids()
    info = {
        "checkpoint": str(ckpt.path),
        "survey": str(survey.root.resolve()),
        "options": to_dict(opts),
    }
    digest = claim_dir(out, JOB, identity, info, name=store.RUN_FILE)
    remove_temporaries(out)  # of a killed earlier run: never a finished shard
    return identity, digest, ckpt.path, crop


def _as_claimed(out: Path, identity: dict, survey: Survey) -> dict:
    """`identity` as a set begun before 2026-12-08 claimed it, when `out` holds one of
    this survey: those named the survey by manifest.json's sha256, not its content's,
    and their finished shards are kept rather than refused as another run's."""
    try:
        held = read_claim(out, store.RUN_FILE).get("identity")
    except (JobError, OSError, ValueError, AttributeError):
        return identity  # none, or unreadable: claim_dir says which
    if not isinstance(held, dict) or "survey_content_sha256" in held:
        return identity
    recorded = held.get("survey_sha256")
    if recorded != sha256_file(survey.root / fmt.MANIFEST_NAME):
        return identity
    legacy = {k: v for k, v in identity.items() if k != "survey_content_sha256"}
    return {**legacy, "survey_sha256": recorded}


def _finish(out: Path, claim: dict, survey: Survey, reports: list, opts: EmbedOptions):
    """Rank 0, after every rank succeeded: the optional PCA, then the manifest."""
    records = {}
    for r in reports:
        records.update(r["records"])
    entries = [records[i].entry for i in range(len(survey.shard_paths)) if i in records]
    shards = [
        {"file": e.file, "n_rows": e.n_rows, "bytes": e.n_bytes, "sha256": e.sha256}
        for e in entries
    ]
    with h5py.File(out / shards[0]["file"], "r") as f:
        dims = int(f["embeddings"].shape[1])
        with_proj = int(f["projection"].shape[1]) if "projection" in f else None
    manifest = {
        **claim["identity"],
        "checkpoint": claim["checkpoint"],
        "survey": claim["survey"],
        "identity_sha256": claim["identity_sha256"],
        "dim": dims,
        "projection_dim": with_proj,
        "dtype": "float32",
        "n_objects": int(sum(s["n_rows"] for s in shards)),
        "shards": shards,
        "ranks": [
            {"rank": r["rank"], "embedded": r["embedded"], "seconds": r["seconds"]} for r in reports
        ],
    }
    if opts.pca_dims:
        sample = _sample(out, shards, opts.pca_sample)
        arrays = store.write_pca(out, sample, opts.pca_dims)
        manifest["pca"] = {
            "file": store.PCA_FILE,
            "dims": int(arrays["components"].shape[0]),
            "sample": int(len(sample)),
            "explained_variance": float(arrays["explained_variance_ratio"].sum()),
        }
    write_json_atomic(out / store.MANIFEST, manifest)
    return manifest


def _sample(out: Path, shards: list[dict], n: int) -> np.ndarray:
    """Up to `n` embeddings spread evenly over the shards."""
    total = sum(s["n_rows"] for s in shards)
    take = min(1.0, n / max(total, 1))
    parts = []
    for s in shards:
        with h5py.File(out / s["file"], "r") as f:
            k = max(1, int(round(s["n_rows"] * take)))
            idx = np.linspace(0, s["n_rows"] - 1, k).astype(np.int64)
            parts.append(f["embeddings"][()][np.unique(idx)])
    return np.concatenate(parts)
