"""One object that answers searches over an embedding set and the survey it embeds: the
command line, the report and the web server all go through it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import format as fmt
from ..data.survey import Survey
from ..embed.store import RUN_FILE, EmbeddingError, EmbeddingSet
from ..errors import SslHpcError, SurveyError
from ..utils.arrays import normalise
from ..utils.hashing import sha256_file
from .ann import KINDS, AnnConfig, build_or_load
from .batch import all_neighbours, legacy_source_of, source_of
from .exact import drop_excluded, exact_search
from .query import (
    MAX_SEP_ARCSEC,
    CutoutEmbedder,
    Query,
    QueryError,
    ResultCatalogue,
    cutout_from_fits,
    row_of_id,
    row_of_position,
)
from .vectors import ArrayVectors, ShardVectors

MAX_K = 1000
#: Sets up to this size are held in RAM, normalised; larger ones are read from the shards.
IN_MEMORY_BYTES = 2 << 30


def survey_of(embeddings: EmbeddingSet, data: str | os.PathLike | None) -> Survey:
    """The survey `data`, or the one the set's run.json names; its ids must be the set's."""
    try:
        path = data or embeddings.run_record().get("survey")
    except EmbeddingError as e:
        raise EmbeddingError(f"{e}; give the survey with --data") from e
    if not path:
        raise SslHpcError(f"{embeddings.root}: run.json names no survey; give --data")
    try:
        survey = Survey(path)
    except SurveyError as e:
        if data:
            raise
        raise SurveyError(
            f"{e} (the survey {embeddings.root / RUN_FILE} names: give --data if it moved)"
        ) from e
    if len(survey) != len(embeddings):
        raise SslHpcError(
            f"{embeddings.root}: {len(embeddings)} vectors, but {path} has {len(survey)} objects"
        )
    # ids alone do not tell surveys apart (synthetic ones all count 1..N)
    if not _embeds(embeddings, survey):
        if "survey_content_sha256" in embeddings.manifest:
            why = "its shards, bands or pixels differ from the ones embedded"
        else:  # a set from before 2026-12-08 knows its survey by manifest.json alone
            why = "its manifest.json differs from the one embedded: re-embed if only it changed"
        raise SslHpcError(
            f"{embeddings.root}: embeds another survey than {path} ({why}); give the survey "
            "it was made from"
        )
    return survey


def _embeds(embeddings: EmbeddingSet, survey: Survey) -> bool:
    """Whether `survey` holds what the set was embedded from: its content hash (a survey
    whose manifest was rewritten, or copied, is the same survey); sets from before
    2026-12-08 recorded the sha256 of manifest.json instead, compared as it was."""
    content = embeddings.manifest.get("survey_content_sha256")
    if content:
        return content == survey.manifest.content_sha256
    recorded = embeddings.manifest.get("survey_sha256")
    return not recorded or sha256_file(survey.root / fmt.MANIFEST_NAME) == recorded


@dataclass(frozen=True)
class SearchConfig:
    """How a search is made (`ssl-hpc search`, `ssl-hpc serve`); the ANN defaults are
    AnnConfig's."""

    k: int = 10
    """neighbours returned"""
    index: str = "exact"
    """exact (blocked inner products) or an approximate index cached in EMB/index: ivfpq
    or hnsw"""
    nprobe: int = AnnConfig.nprobe
    """IVF cells searched"""
    rerank: int = AnnConfig.rerank
    """IVF-PQ candidates re-scored exactly, as a multiple of k"""
    ef_search: int = AnnConfig.ef_search
    """HNSW candidate list"""
    max_sep: float = MAX_SEP_ARCSEC
    """a position query's largest separation from its object, arcsec"""

    def __post_init__(self) -> None:
        if self.index not in ("exact", *KINDS):
            raise SslHpcError(f"index {self.index!r}: expected exact or one of {KINDS}")
        if not 1 <= self.k <= MAX_K:
            raise SslHpcError(f"k {self.k}: expected 1..{MAX_K}")
        if self.max_sep <= 0:
            raise SslHpcError(f"max_sep {self.max_sep}: must be > 0 arcsec")

    def ann(self) -> AnnConfig | None:
        """The index these settings ask for; None for exact search."""
        if self.index == "exact":
            return None
        return AnnConfig(
            self.index, nprobe=self.nprobe, rerank=self.rerank, ef_search=self.ef_search
        )


class Searcher:
    """Cosine top-k over `embeddings`, exact (blocked) or through a cached ANN index
    (`index`: "exact", "ivfpq" or "hnsw"), with result tables from `survey`. Sets of at
    most `in_memory_bytes` are held in RAM; larger ones are memory-mapped shard by shard."""

    def __init__(
        self,
        embeddings: EmbeddingSet,
        survey: Survey,
        index: str = "exact",
        ann: AnnConfig | None = None,
        checkpoint: str | os.PathLike | None = None,
        in_memory_bytes: int = IN_MEMORY_BYTES,
    ) -> None:
        self.set, self.survey = embeddings, survey
        self.vectors = ShardVectors(embeddings)
        if len(self.vectors) * self.vectors.dim * 4 <= in_memory_bytes:
            # small enough: normalised once and kept (a server answers from RAM)
            ids = self.vectors.object_id
            self.vectors = ArrayVectors(embeddings.load()[1], ids)
        self.catalogue = ResultCatalogue(survey)
        ids = self.catalogue.columns["object_id"]
        if not np.array_equal(ids, self.vectors.object_id):
            raise SslHpcError(f"{embeddings.root}: its object ids are not those of {survey.root}")
        self.index_info: dict = {"kind": "exact"}
        self.ann = None
        if index != "exact":
            cfg = ann or AnnConfig(kind=index)
            self.ann, info = build_or_load(
                self.vectors,
                embeddings.root / "index",
                cfg,
                source_of(embeddings),
                legacy_source_of(embeddings),
            )
            self.index_info = {**info, "kind": cfg.kind}
        self._checkpoint = checkpoint
        self._embedder: CutoutEmbedder | None = None

    # -- queries ----------------------------------------------------------------------------
    def by_id(self, object_id: int) -> Query:
        ids = self.catalogue.columns["object_id"]
        row = row_of_id(ids, object_id, str(self.set.root))
        return Query(f"object {object_id}", self.vectors.take(np.array([row]))[0], row)

    def by_position(self, ra: float, dec: float, max_sep: float = MAX_SEP_ARCSEC) -> Query:
        """The object nearest (ra, dec) within `max_sep` arcsec. A HEALPix-partitioned
        survey is asked by a cone search, which opens only the shards that can hold it."""
        c = self.catalogue.columns
        if self.survey.manifest.healpix_order is None:
            row, sep = row_of_position(c["ra"], c["dec"], ra, dec, max_sep, str(self.set.root))
        else:
            try:
                cone = self.survey.cone(ra, dec, max_sep)
            except SurveyError as e:
                raise QueryError(str(e)) from e
            if not len(cone.rows):
                raise QueryError(
                    f"{self.survey.root}: no object within {max_sep} arcsec of ra={ra}, dec={dec}"
                )
            row, sep = int(cone.rows[0]), float(cone.sep_arcsec[0])
        oid = int(c["object_id"][row])
        label = f'object {oid} ({sep:.2f}" from ra={ra}, dec={dec})'
        return Query(label, self.vectors.take(np.array([row]))[0], row)

    def by_fits(self, path: str | os.PathLike, label: str | None = None) -> Query:
        embedder = self.embedder()
        image = cutout_from_fits(path, self.survey, embedder.crop)
        return Query(label or Path(path).name, normalise(embedder(image)), None, image)

    def embedder(self) -> CutoutEmbedder:
        """The set's encoder (the checkpoint its manifest names unless one was given: it
        must be the same file), loaded once."""
        if self._embedder is None:
            manifest = self.set.manifest
            ckpt = self._checkpoint or manifest.get("checkpoint")
            if not ckpt:
                raise SslHpcError(
                    f"{self.set.root}: its manifest names no checkpoint; give --checkpoint"
                )
            precision = manifest.get("precision") or "fp32"
            self._embedder = CutoutEmbedder(ckpt, precision, self.set, self.survey)
        return self._embedder

    # -- search -----------------------------------------------------------------------------
    def search(self, query: Query, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows) of the `k` nearest, the query itself left out."""
        if not 1 <= k <= min(MAX_K, len(self.vectors) - 1):
            raise SslHpcError(f"--k {k}: expected 1..{min(MAX_K, len(self.vectors) - 1)}")
        exclude = np.array([-1 if query.row is None else query.row])
        s, r = self.neighbours(query.vector[None], k, exclude)
        return s[0], r[0]

    def neighbours(
        self, queries: np.ndarray, k: int, exclude_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows), each (Q, k), of `queries`' nearest by this searcher's index,
        each query's own row (`exclude_rows`, -1 for none) left out."""
        if self.ann is not None:
            s, r = self.ann.search(queries, k + 1)
            return drop_excluded(s, r, exclude_rows, k)
        return exact_search(self.vectors, queries, k, exclude_rows)

    def all_neighbours(self, k: int) -> dict:
        """Every object's top `k` by this searcher's index, written beside the set
        (`search.batch`); returns the table's manifest."""
        return all_neighbours(self.set, k, self.neighbours)

    def table(self, query: Query, k: int = 10) -> list[dict]:
        """The result table of `query`'s `k` nearest (see ResultCatalogue.table)."""
        sims, rows = self.search(query, k)
        return self.catalogue.table(rows, sims)
