"""``ssl-hpc synth``: write the synthetic survey, shard by shard, in parallel, resumably."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ... import __version__
from ...config import changed_keys, load_config, to_dict, to_yaml
from ...errors import SslHpcError
from ...utils.atomic import write_text_atomic
from ...utils.hashing import sha256_json
from .. import format as fmt
from .. import healpix
from ..manifest import Manifest, ShardEntry, load_manifest
from ..sharded_job import (
    JobError,
    Progress,
    ShardPlan,
    claim_dir,
    read_claim,
    remove_temporaries,
    run_shards,
)
from ..shards import ShardTable, SurveyMeta, build_manifest, write_shard
from .catalogue import COLUMN_ROLES, draw_catalogue
from .config import ANOMALY_KINDS, MORPH_CLASSES, SynthConfig
from .render import render_rows

JOB = "ssl-hpc synth"


def config_hash(cfg: SynthConfig) -> str:
    """Hash of everything that changes the survey's content (not `workers`)."""
    return sha256_json(to_dict(replace(cfg, workers=1)))


def _changed_from(out: Path, cfg: SynthConfig) -> str:
    """The content keys `cfg` changes from the config the synth run claiming `out` was
    given (its config.yaml), or "" when `out` is not such a run or that cannot be read."""
    try:
        if read_claim(out).get("job") != JOB:
            return ""
        old = load_config(SynthConfig, out / "config.yaml", [])
    except (SslHpcError, OSError, ValueError):
        return ""
    return changed_keys(to_yaml(replace(old, workers=1)), to_yaml(replace(cfg, workers=1)))


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


def shard_table(block: dict, cfg: SynthConfig, index: int) -> ShardTable:
    """Render shard `index`'s catalogue rows `block` into a ShardTable (seeded by the
    shard, not the worker)."""
    rng = np.random.default_rng([cfg.seed, index, 0x1A6E])
    images = render_rows(block, cfg, rng)
    return ShardTable(
        object_id=block["object_id"],
        ra=block["ra"],
        dec=block["dec"],
        images=images,
        psf_fwhm=block["psf_fwhm"],
        sky_sigma=block["sky_sigma"],
        columns={k: block[k] for k in (*COLUMN_ROLES, fmt.HEALPIX) if k in block},
    )


def _write_one(plan: ShardPlan, progress: Progress) -> tuple[ShardEntry, dict]:
    """Render and write one shard (a sharded-job `make`): its catalogue rows are the plan's
    payload, so a spawned worker needs nothing else."""
    cfg, block = plan.payload
    progress.check()
    table = shard_table(block, cfg, plan.index)
    attrs = {
        "config_sha": config_hash(cfg),
        "shard_index": plan.index,
        "generator": JOB,
    }
    entry = write_shard(plan.path, table, survey_meta(cfg), attrs=attrs)
    progress.tick(len(table))
    return entry, {}


def plan_shards(cfg: SynthConfig, out: Path, catalogue: dict) -> list[ShardPlan]:
    """One plan per shard: runs of `rows_per_shard` catalogue rows, or with `healpix_order`
    each pixel's rows (in catalogue order) cut into such runs, with a ``healpix`` column."""
    groups, pixel = healpix.shard_rows(
        catalogue["ra"], catalogue["dec"], cfg.rows_per_shard, cfg.healpix_order
    )
    if pixel is not None:
        catalogue = {**catalogue, fmt.HEALPIX: pixel}
    plans = []
    for index, rows in enumerate(groups):
        block = {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in catalogue.items()}
        path = str(out / fmt.SHARD_PATTERN.format(index=index))
        plans.append(ShardPlan(index, path, len(rows), (cfg, block)))
    return plans


def generate_survey(cfg: SynthConfig, out: str | os.PathLike) -> Manifest:
    """Write the synthetic survey described by `cfg` into directory `out`.

    A sharded job (`data.sharded_job`): shards already written by the same config are kept
    (a rerun resumes); each new shard is rendered by one of `cfg.workers` processes and
    renamed into place when complete; the manifest is written last, so a survey with a
    manifest is a complete survey.
    """
    out = Path(out)
    try:
        digest = claim_dir(out, JOB, {"config_sha": config_hash(cfg)})
    except JobError as e:  # our claim holds a hash; the survey's config.yaml says more
        changed = _changed_from(out, cfg)
        if not changed:
            raise
        raise JobError(
            f"{out}: holds a survey made with another config ({changed}); use another "
            "--out, or delete it to start again"
        ) from e
    remove_temporaries(out)
    t0 = time.perf_counter()
    plans = plan_shards(cfg, out, draw_catalogue(cfg))
    kept, made = run_shards(plans, _write_one, digest, cfg.workers, "synth", "gal")
    if not made and (out / fmt.MANIFEST_NAME).is_file():
        # complete already: a rewritten manifest (its timing differs) would have another
        # sha256, and every embedding set of this survey would refuse it as another survey.
        # What this call did is returned, not written.
        done = load_manifest(out)
        now = {"shards_reused": len(kept), "seconds": round(time.perf_counter() - t0, 2)}
        return replace(done, generator={**done.generator, **now})
    write_text_atomic(out / "config.yaml", to_yaml(cfg))
    generator = {
        "command": JOB,
        "version": __version__,
        "config_sha": config_hash(cfg),
        "config": to_dict(cfg),
        "morph_classes": list(MORPH_CLASSES),
        "anomaly_kinds": list(ANOMALY_KINDS),
        "shards_reused": len(kept),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    entries = [r.entry for r in sorted(kept + made, key=lambda r: r.index)]
    return build_manifest(out, survey_meta(cfg), entries, generator, cfg.healpix_order)
