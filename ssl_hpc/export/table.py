"""The catalogue as columns: what each column is, and its values shard by shard.

One row per object of the embedding set, in its order (the survey's): ids and positions
from the set, `source_id` and `healpix` from the survey where it has them, the principal
components and the whole vector from the set, then the later stages' columns
(`sources.py`), some of them computed from the vectors (saved probe heads). Values come
one embedding shard at a time, so no writer needs every vector in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..data import format as fmt
from ..data import healpix
from ..data.survey import Survey, open_shard
from ..embed.store import EmbeddingError, EmbeddingSet
from ..errors import ConfigError, SurveyError
from .options import ExportOptions

#: kinds of column every writer knows
KINDS = ("int64", "float64", "float32", "bool", "string", "vector")

EMBEDDING = "embedding"


@dataclass(frozen=True)
class Spec:
    """One column: name, kind (KINDS), description, unit; `width` is a vector's length or
    a string's longest value in bytes (FITS fixes both in its header); `meta` goes into
    the Parquet field's metadata and the FITS header."""

    name: str
    kind: str
    description: str
    unit: str | None = None
    width: int = 1
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraColumn:
    """A column of a later stage, already aligned with the embedding set's rows."""

    spec: Spec
    values: np.ndarray  # (N,)


@dataclass(frozen=True)
class DerivedColumns:
    """Columns of a later stage computed from each shard's vectors (e.g. saved probe
    heads): `compute(vectors (n, D), object_id (n,))` -> {spec name: (n,) array}."""

    specs: list[Spec]
    compute: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass
class CatalogueTable:
    """The catalogue to write: its columns, row count, provenance, and `batches()`, which
    yields {name: (n,) or (n, width) array} per embedding shard, in row order."""

    specs: list[Spec]
    n_rows: int
    provenance: dict
    batches: Callable[[], Iterator[dict[str, np.ndarray]]]


def healpix_index(ra: np.ndarray, dec: np.ndarray, order: int) -> np.ndarray:
    """(N,) nested HEALPix pixel at `order` of positions in degrees; -1 where unknown (a
    catalogue keeps objects without a position; only HATS must refuse them)."""
    out = np.full(len(ra), -1, np.int64)
    known = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    out[known] = healpix.pixels(ra[known], dec[known], order)
    return out


def survey_healpix_order(survey: Survey) -> int | None:
    """The order of the survey's own `healpix` column (its manifest's partition), or None
    if it is not partitioned."""
    if fmt.HEALPIX not in survey.manifest.columns:
        return None
    return survey.manifest.healpix_order


def build_table(
    embeddings: EmbeddingSet,
    survey: Survey,
    opts: ExportOptions,
    extra: list[ExtraColumn],
    provenance: dict | None = None,
    derived: list[DerivedColumns] = (),
) -> CatalogueTable:
    """The catalogue of `embeddings` (of `survey`) with the `extra` columns, then the
    `derived` ones (computed from each shard's vectors), appended; `provenance` adds to
    what it records of the set, survey and HEALPix order."""
    sizes = [int(s["n_rows"]) for s in embeddings.manifest["shards"]]
    if sizes != [s.n_rows for s in survey.manifest.shards]:
        raise EmbeddingError(
            f"{embeddings.root}: its shards' rows {sizes[:4]}... are not those of {survey.root}"
        )
    own = survey_healpix_order(survey)
    order = opts.healpix_order if opts.healpix_order is not None else own
    order = healpix.MMU_ORDER if order is None else order
    rows = _Rows(
        embeddings,
        survey,
        order,
        own == order,
        fmt.SOURCE_ID in survey.manifest.columns,
        _pca(embeddings, opts.pca),
        opts.vectors,
        extra,
        list(derived),
    )
    specs = rows.specs()
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"columns named twice: {twice}")
    info = {
        "ssl_hpc_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),  # FITS DATE form
        "embeddings": str(embeddings.root.resolve()),
        "embeddings_identity_sha256": embeddings.manifest.get("identity_sha256"),
        "checkpoint": embeddings.manifest.get("checkpoint"),
        "checkpoint_sha256": embeddings.manifest.get("checkpoint_sha256"),
        "survey": str(survey.root.resolve()),
        "survey_name": survey.manifest.survey,
        "survey_content_sha256": survey.manifest.content_sha256,
        "healpix_order": order,
        "healpix_from": "survey" if rows.healpix_from_survey else "computed",
        "embedding_dim": embeddings.dim,
        "pca_components": rows.n_pca,
        **(provenance or {}),
    }
    return CatalogueTable(specs, sum(sizes), info, lambda: rows.batches(names))


@dataclass(frozen=True)
class _Rows:
    """Where each column of one export comes from (options resolved against the set and
    the survey), and the reading of them shard by shard."""

    embeddings: EmbeddingSet
    survey: Survey
    order: int  # of the healpix column
    healpix_from_survey: bool  # the survey's own column is at `order`
    source_id: bool
    pca: dict[str, np.ndarray] | None  # mean (D,), components (P, D)
    vectors: bool
    extra: list[ExtraColumn]
    derived: list[DerivedColumns]

    @property
    def n_pca(self) -> int:
        return 0 if self.pca is None else len(self.pca["components"])

    def specs(self) -> list[Spec]:
        order, nside, dim = self.order, 1 << self.order, self.embeddings.dim
        specs = [Spec("object_id", "int64", "the survey's object id")]
        if self.source_id:
            width = _string_width(self.survey, fmt.SOURCE_ID)
            specs.append(
                Spec(fmt.SOURCE_ID, "string", "the source catalogue's own id", width=width)
            )
        specs += [
            Spec("ra", "float64", "right ascension, J2000", unit="deg"),
            Spec("dec", "float64", "declination, J2000", unit="deg"),
            Spec(
                fmt.HEALPIX,
                "int64",
                f"HEALPix pixel, nested ordering, order {order} (nside {nside}); -1: no position",
                meta={"healpix_order": str(order), "healpix_nside": str(nside)}
                | {"healpix_ordering": "nested"},
            ),
        ]
        specs += [
            Spec(f"pca_{i}", "float32", f"principal component {i} of the representation")
            for i in range(self.n_pca)
        ]
        if self.vectors:
            specs.append(Spec(EMBEDDING, "vector", f"the representation ({dim} dims)", width=dim))
        return specs + [c.spec for c in self.extra] + [s for d in self.derived for s in d.specs]

    def batches(self, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """The columns `names` of each embedding shard in turn."""
        offset = 0
        for index, entry in enumerate(self.embeddings.manifest["shards"]):
            path = self.embeddings.root / entry["file"]
            with h5py.File(path, "r") as f:
                batch = {k: f[k][()] for k in ("object_id", "ra", "dec")}
                wanted = self.vectors or self.n_pca or self.derived
                vectors = f["embeddings"][()] if wanted else None
            batch.update(self._survey_columns(index, batch["object_id"], path))
            if fmt.HEALPIX not in batch:
                batch[fmt.HEALPIX] = healpix_index(batch["ra"], batch["dec"], self.order)
            if self.n_pca:
                projected = (vectors - self.pca["mean"]) @ self.pca["components"].T  # (n, P)
                for i in range(self.n_pca):
                    batch[f"pca_{i}"] = projected[:, i].astype(np.float32)
            if self.vectors:
                batch[EMBEDDING] = vectors.astype(np.float32, copy=False)
            n = len(batch["object_id"])
            for c in self.extra:
                batch[c.spec.name] = c.values[offset : offset + n]
            for d in self.derived:
                batch.update(d.compute(vectors, batch["object_id"]))
            offset += n
            yield {name: batch[name] for name in names}

    def _survey_columns(
        self, index: int, object_id: np.ndarray, emb_path: Path
    ) -> dict[str, np.ndarray]:
        """Survey shard `index`'s source_id and healpix, checked to be of the same objects."""
        path = self.survey.shard_paths[index]
        with open_shard(path) as f:
            if not np.array_equal(f[fmt.OBJECT_ID][()], object_id):
                raise SurveyError(f"{emb_path}: its object ids are not those of {path}")
            out = {}
            if self.source_id:
                out[fmt.SOURCE_ID] = _strings(f[fmt.SOURCE_ID][()])
            if self.healpix_from_survey:
                out[fmt.HEALPIX] = f[fmt.HEALPIX][()].astype(np.int64)
        return out


def _pca(embeddings: EmbeddingSet, wanted: int | None) -> dict[str, np.ndarray] | None:
    """The set's PCA cut to `wanted` components (None: all), or None for no columns."""
    if wanted == 0:
        return None
    pca = embeddings.pca()
    if pca is None:
        if wanted is None:
            return None
        raise ConfigError(
            f"{embeddings.root}: no pca.npz for pca={wanted}; embed with --pca N, or pca=0"
        )
    have = len(pca["components"])
    if wanted is not None and wanted > have:
        raise ConfigError(f"pca={wanted}: {embeddings.root}/pca.npz has {have} components")
    keep = have if wanted is None else wanted
    return {"mean": pca["mean"], "components": pca["components"][:keep]}


def _string_width(survey: Survey, name: str) -> int:
    """Bytes of the longest value of string column `name`: its fixed width (ingest stores
    them so), else found by reading it."""
    dtype = np.dtype(survey.manifest.columns[name].dtype)
    if dtype.kind == "S":
        return max(dtype.itemsize, 1)
    longest = 0
    for path in survey.shard_paths:
        with open_shard(path) as f:
            longest = max([longest, *(len(v.encode()) for v in _strings(f[name][()]))])
    return max(longest, 1)


def _strings(values: np.ndarray) -> np.ndarray:
    """Bytes (fixed or variable length) as an object array of str."""
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], object)
