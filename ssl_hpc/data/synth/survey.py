"""``ssl-hpc synth``: write the synthetic survey, shard by shard, in parallel, resumably."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from ... import __version__
from ...config import to_dict, to_yaml
from ...errors import SurveyError
from ...utils.atomic import pid_alive, write_text_atomic
from ...utils.hashing import sha256_json
from ...utils.progress import progress
from .. import format as fmt
from ..manifest import Manifest, ShardEntry, load_manifest
from ..shards import ShardTable, SurveyMeta, build_manifest, write_shard
from .catalogue import COLUMN_ROLES, draw_catalogue
from .config import ANOMALY_KINDS, MORPH_CLASSES, SynthConfig
from .render import render_rows


def config_hash(cfg: SynthConfig) -> str:
    """Hash of everything that changes the survey's content (not `workers`)."""
    return sha256_json(to_dict(replace(cfg, workers=1)))


def survey_meta(cfg: SynthConfig) -> SurveyMeta:
    return SurveyMeta(
        survey=cfg.survey,
        bands=tuple(cfg.bands),
        image_size=(cfg.image_size, cfg.image_size),
        image_dtype=cfg.image_dtype,
        compression=cfg.compression,
        pixel_scale_arcsec=cfg.pixel_scale_arcsec,
        roles=dict(COLUMN_ROLES),
    )


def shard_table(cat: dict, rows: slice, cfg: SynthConfig) -> ShardTable:
    """Render catalogue rows `rows` into a ShardTable (seeded by the shard, not the worker)."""
    index = rows.start // cfg.rows_per_shard
    block = {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in cat.items()}
    rng = np.random.default_rng([cfg.seed, index, 0x1A6E])
    images = render_rows(block, cfg, rng)
    return ShardTable(
        object_id=block["object_id"],
        ra=block["ra"],
        dec=block["dec"],
        images=images,
        psf_fwhm=block["psf_fwhm"],
        sky_sigma=block["sky_sigma"],
        columns={k: block[k] for k in COLUMN_ROLES},
    )


def _reusable(path: Path, digest: str, index: int) -> ShardEntry | None:
    """The entry of an existing shard written by this exact config, else None."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("config_sha") != digest or int(f.attrs.get("shard_index", -1)) != index:
                return None
            n = f[fmt.OBJECT_ID].shape[0]
    except (OSError, KeyError):
        return None  # unreadable leftovers are rewritten
    return ShardEntry.of_file(path, n)


# The catalogue reaches forked workers through this global rather than per-task pickling.
_CATALOGUE: dict | None = None


def _write_one(args: tuple[SynthConfig, str, int]) -> tuple[int, ShardEntry]:
    cfg, out, index = args
    assert _CATALOGUE is not None
    rows = slice(index * cfg.rows_per_shard, min((index + 1) * cfg.rows_per_shard, cfg.n_objects))
    path = Path(out) / fmt.SHARD_PATTERN.format(index=index)
    entry = write_shard(
        path,
        shard_table(_CATALOGUE, rows, cfg),
        survey_meta(cfg),
        attrs={"config_sha": config_hash(cfg), "shard_index": index, "generator": "ssl-hpc synth"},
    )
    return rows.stop - rows.start, entry


def _check_target(out: Path, digest: str) -> None:
    """Refuse to mix this survey into a directory built from another config (finished or
    not); remove temporary files left by a killed run."""
    previous = None
    if (out / fmt.MANIFEST_NAME).is_file():
        previous = load_manifest(out).generator.get("config_sha", "none (not built by synth)")
    for shard in sorted(out.glob("shard-*.h5")):
        if previous is not None:
            break
        try:
            with h5py.File(shard, "r") as f:
                previous = f.attrs.get("config_sha", "none (not built by synth)")
        except OSError:
            continue  # unreadable: rewritten below if it is one of ours
    if previous is not None and previous != digest:
        raise SurveyError(
            f"{out}: holds a survey built with another config (config_sha {previous}); "
            "choose a new --out or delete it"
        )
    for leftover in out.glob(".shard-*.h5.tmp-*"):
        if not pid_alive(int(leftover.name.rsplit("-", 1)[1])):
            leftover.unlink()


def generate_survey(cfg: SynthConfig, out: str | os.PathLike) -> Manifest:
    """Write the synthetic survey described by `cfg` into directory `out`.

    Shards already written by the same config are kept (a rerun resumes); each new shard
    is rendered by one of `cfg.workers` processes and renamed into place when complete;
    the manifest is written last, so a survey with a manifest is a complete survey.
    """
    global _CATALOGUE
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digest = config_hash(cfg)
    _check_target(out, digest)
    t0 = time.perf_counter()
    entries: dict[int, ShardEntry] = {}
    todo = []
    for index in range(cfg.n_shards):
        found = _reusable(out / fmt.SHARD_PATTERN.format(index=index), digest, index)
        if found:
            entries[index] = found
        else:
            todo.append(index)
    if todo:
        _CATALOGUE = draw_catalogue(cfg)
        tasks = [(cfg, str(out), i) for i in todo]
        n_todo = sum(min(cfg.rows_per_shard, cfg.n_objects - i * cfg.rows_per_shard) for i in todo)
        with progress(total=n_todo, desc="synth", unit="gal") as bar:
            if cfg.workers == 1 or len(todo) == 1:
                results = map(_write_one, tasks)
                pool = None
            else:
                ctx = mp.get_context("fork")
                pool = ctx.Pool(min(cfg.workers, len(todo)))
                results = pool.imap_unordered(_write_one, tasks)
            try:
                for n_rows, entry in results:
                    entries[int(entry.file.split("-")[1].split(".")[0])] = entry
                    bar.update(n_rows)
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
        _CATALOGUE = None
    write_text_atomic(out / "config.yaml", to_yaml(cfg))
    generator = {
        "command": "ssl-hpc synth",
        "version": __version__,
        "config_sha": digest,
        "config": to_dict(cfg),
        "morph_classes": list(MORPH_CLASSES),
        "anomaly_kinds": list(ANOMALY_KINDS),
        "shards_reused": cfg.n_shards - len(todo),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return build_manifest(out, survey_meta(cfg), [entries[i] for i in sorted(entries)], generator)
