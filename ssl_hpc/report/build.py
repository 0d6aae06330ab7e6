"""Build the report: run every section on an embedding set and its survey, then write
metrics.json, the PNGs and index.html into one directory (atomically per file)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.survey import Survey
from ..downstream.representation import against_random_init
from ..downstream.tasks import check_fractions
from ..embed.store import EmbeddingSet
from ..errors import SslHpcError
from ..models.checkpoint import EncoderCheckpoint
from ..search.searcher import Searcher
from ..utils.atomic import write_json_atomic, write_text_atomic
from ..utils.hardware import resolve_precision
from ..viz.maps import MAP_METHODS
from . import discovery, label_studies, learning
from .html import render


@dataclass(frozen=True)
class ReportOptions:
    """What the report computes, and how much of it."""

    k: int = 10  # neighbours: search examples, anomaly knn score, trust
    examples: int = 4  # similarity-search queries shown
    anomalies_shown: int = 24
    """the most anomalous galaxies drawn"""
    map_points: int = 4000
    """galaxies on the map"""
    map_method: str = "umap"
    """umap or tsne"""
    invariance_objects: int = 256
    """galaxies in the invariance check"""
    representation_objects: int = 2048  # kNN and pair cosine, trained vs random init
    precision: str = "auto"  # the encoder runs (bf16 on CPUs with native bf16)
    probe_fractions: tuple[float, ...] = (0.05, 0.2, 1.0)
    """label fractions of the linear probes"""
    probe_repeats: int = 2
    """random splits of the linear probes"""
    efficiency: tuple[str, ...] = ()  # ssl-hpc finetune output dirs
    seed: int = 0
    """the map, the probes and every sample follow from it"""

    def __post_init__(self) -> None:
        for name, least in (("k", 1), ("map_points", 10), ("examples", 1)):
            if getattr(self, name) < least:
                raise SslHpcError(f"{name} {getattr(self, name)}: must be at least {least}")
        check_fractions(self.probe_fractions)
        if self.map_method not in MAP_METHODS:
            raise SslHpcError(f"map_method {self.map_method!r}: expected one of {MAP_METHODS}")


def check_inputs(
    embeddings: EmbeddingSet,
    survey: Survey,
    opts: ReportOptions,
    checkpoint: str | Path | None = None,
) -> EncoderCheckpoint:
    """The report's encoder, once the inputs are known to belong together: the set's own
    checkpoint (the one its run.json names unless `checkpoint`), taking the survey's bands,
    unique object ids, and finished `--efficiency` studies. Refused before any section runs."""
    run = embeddings.run_record()
    ckpt = EncoderCheckpoint(checkpoint or run["checkpoint"])
    manifest = embeddings.manifest
    ckpt.check_embedded(manifest.get("checkpoint_sha256"), embeddings.root, run["checkpoint"])
    ckpt.check_bands(survey.bands, survey.root)
    survey.check_ids()
    studies = [Path(d) for d in opts.efficiency]
    label_studies.check_studies(studies, ckpt.sha256, survey.manifest.content_sha256)
    return ckpt


def build_report(
    embeddings: EmbeddingSet,
    survey: Survey,
    out: str | Path,
    options: ReportOptions | None = None,
    checkpoint: str | Path | EncoderCheckpoint | None = None,
    log=print,
) -> dict:
    """Every section of the report for `embeddings` of `survey`, written to `out`; returns
    the metrics (also out/metrics.json). `checkpoint`: the encoder, for the invariance
    check and the pretraining curve (default: the one named in the set's run.json); one
    `check_inputs` returned is taken as checked.

    long: the report's table of contents, one timed call per section, in page order.
    """
    opts = options or ReportOptions()
    out = Path(out)
    run = embeddings.run_record()
    if isinstance(checkpoint, EncoderCheckpoint):
        ckpt = checkpoint
    else:
        ckpt = check_inputs(embeddings, survey, opts, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    searcher = Searcher(embeddings, survey)
    _, vectors = embeddings.load()
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        log(f"report: {name} ...")
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    parts = [timed("overview", learning.overview, survey, searcher, run)]
    parts.append(timed("pretraining", learning.pretraining, ckpt.path, out))
    parts += timed("representation", _representation, ckpt, survey, out, opts)
    parts.append(
        timed(
            "probes",
            label_studies.probes,
            vectors,
            survey,
            out,
            opts.probe_fractions,
            opts.probe_repeats,
            embeddings.provenance(),
        )
    )
    parts.append(
        timed("efficiency", label_studies.efficiency, [Path(d) for d in opts.efficiency], out)
    )
    parts.append(
        timed("search", discovery.search_examples, searcher, out, opts.k, opts.examples, opts.seed)
    )
    anomaly_section, anomaly_score = timed(
        "anomalies",
        discovery.anomalies,
        vectors,
        embeddings.field(),
        survey,
        out,
        opts.k,
        opts.anomalies_shown,
        opts.seed,
        embeddings.texture(),
    )
    parts.append(anomaly_section)
    trust_section, trust = timed("trust", discovery.trust, vectors, survey, out, opts.k, opts.seed)
    parts.append(trust_section)
    parts.append(
        timed(
            "maps",
            discovery.maps,
            vectors,
            survey,
            out,
            anomaly_score,
            opts.map_points,
            opts.seed,
            opts.map_method,
            trust,
        )
    )
    present = [p for p in parts if p is not None]
    metrics = {
        **embeddings.provenance(),
        "survey": str(survey.root),
        "checkpoint": str(ckpt.path),
        "sections": {p.id: p.metrics for p in present},
        "seconds": timings,
    }
    write_json_atomic(out / "metrics.json", metrics)
    meta = [
        f"survey {survey.root} ({len(survey)} objects) · embeddings {embeddings.root} "
        f"({embeddings.dim} dims) · encoder {ckpt.path}",
        f"made {time.strftime('%Y-%m-%d %H:%M')} by ssl-hpc report; numbers in metrics.json",
    ]
    page = render(f"ssl-hpc report: {survey.manifest.survey}", meta, present, out)
    write_text_atomic(out / "index.html", page)
    return metrics


def _representation(
    ckpt: EncoderCheckpoint, survey: Survey, out: Path, opts: ReportOptions
) -> list[dict]:
    precision = resolve_precision(opts.precision, torch.device("cpu"))
    result = against_random_init(
        ckpt, survey, opts.representation_objects, opts.invariance_objects, opts.seed, precision
    )
    return learning.representation_section(result, out)
