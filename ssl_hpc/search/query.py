"""What a person searches from, and what they get back.

A query is a galaxy of the embedding set (by object id, or by the nearest position to an
ra/dec), or a new FITS cutout embedded on the fly with the set's checkpoint. Results are a
table (rank, id, similarity, position, the labels the survey knows) and a picture: the
query and its k nearest as colour composites, like Figure 1 of Stein et al. (2021).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.captions import captions
from ..data.cutouts import CutoutError, read_fits_image
from ..data.healpix import angular_sep_arcsec
from ..data.labels import spec_z
from ..data.survey import Survey
from ..embed.store import EmbeddingSet
from ..errors import SslHpcError
from ..models.checkpoint import EncoderCheckpoint
from ..models.inference import centre_crop, embed
from ..utils.atomic import atomic_path
from ..viz.grid import save_cutout_grid

#: Default largest separation for a position query, arcsec (a few SDSS PSF widths).
MAX_SEP_ARCSEC = 3.0


class QueryError(SslHpcError):
    """A query that names nothing in the set (unknown id, empty sky, unusable file)."""


@dataclass
class Query:
    """A resolved query: its name, unit vector, and its row in the set (None for a new
    image, whose pixels `image` then holds)."""

    label: str
    vector: np.ndarray
    row: int | None = None
    image: np.ndarray | None = None  # (B, H, W) of an uploaded cutout


def row_of_id(object_ids: np.ndarray, object_id: int, where: str) -> int:
    """The row of `object_id`; QueryError naming the set if it is not there."""
    hits = np.flatnonzero(object_ids == int(object_id))
    if not len(hits):
        raise QueryError(f"{where}: object_id {object_id} not in the embedding set")
    return int(hits[0])


def row_of_position(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float, max_sep: float, where: str
) -> tuple[int, float]:
    """(row, separation in arcsec) of the object nearest (ra0, dec0), within `max_sep`."""
    if not (0 <= ra0 < 360 and -90 <= dec0 <= 90):
        raise QueryError(f"ra={ra0}, dec={dec0}: expected 0 <= ra < 360, -90 <= dec <= 90 (deg)")
    sep = angular_sep_arcsec(ra, dec, ra0, dec0)
    row = int(np.argmin(sep)) if len(sep) else -1
    if row < 0 or sep[row] > max_sep:
        nearest = f"; nearest is {sep[row]:.1f} arcsec away" if row >= 0 else ""
        raise QueryError(
            f"{where}: no object within {max_sep} arcsec of ra={ra0}, dec={dec0}{nearest}"
        )
    return row, float(sep[row])


def cutout_from_fits(path: str | os.PathLike, survey: Survey, crop: int) -> np.ndarray:
    """A FITS cutout checked against the survey: (B, H, W) float32, B = the survey's bands,
    at least `crop` px, finite inside the central crop, and at the survey's pixel scale when
    the header states one (CDELT2 / CD2_2 / PIXSCALE)."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise QueryError(f"{path}: no such FITS file")
    try:
        image = read_fits_image(path, -1)
    except CutoutError as e:
        raise QueryError(f"{path}: {e.reason}") from e
    bands = survey.bands
    if image.shape[0] != len(bands):
        raise QueryError(
            f"{path}: {image.shape[0]} image plane(s); the survey has {len(bands)} bands "
            f"({','.join(bands)}): give a (bands, H, W) cube in that order"
        )
    if min(image.shape[1:]) < crop:
        raise QueryError(f"{path}: {image.shape[1]}x{image.shape[2]} px, smaller than {crop} px")
    if not np.isfinite(centre_crop(image, crop)).all():
        raise QueryError(f"{path}: NaN or infinite pixels inside the central {crop} px")
    with fits.open(path) as hdul:
        header = next((h.header for h in hdul if h.data is not None), hdul[0].header)
    scale = _pixel_scale_arcsec(header)
    want = survey.manifest.pixel_scale_arcsec
    if scale is not None and want and abs(scale / want - 1) > 0.02:
        raise QueryError(
            f"{path}: pixel scale {scale:.4g} arcsec, the survey's is {want:.4g}: resample first"
        )
    return image


def _pixel_scale_arcsec(header) -> float | None:
    for key, to_arcsec in (("PIXSCALE", 1.0), ("CDELT2", 3600.0), ("CD2_2", 3600.0)):
        if key in header:
            try:
                return abs(float(header[key])) * to_arcsec
            except (TypeError, ValueError):
                return None
    return None


class CutoutEmbedder:
    """The set's encoder, loaded once, embedding new cutouts as the set was embedded (the
    central crop of the checkpoint's embedding window)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        precision: str,
        embeddings: EmbeddingSet,
        survey: Survey,
    ) -> None:
        """`checkpoint` must be the one `embeddings` (of `survey`) was embedded with, and
        take the survey's bands; `precision`: the set's, so a query is embedded as the
        set was."""
        ckpt = EncoderCheckpoint(checkpoint)
        manifest = embeddings.manifest
        ckpt.check_embedded(
            manifest.get("checkpoint_sha256"), embeddings.root, manifest.get("checkpoint")
        )
        ckpt.check_bands(survey.bands, survey.root)
        self.precision = precision
        self.crop = ckpt.crop
        self.in_channels = ckpt.in_channels
        self.encoder = ckpt.encoder()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(B, H, W) -> (D,) float32 representation."""
        import torch

        x = np.ascontiguousarray(centre_crop(image[None].astype(np.float32), self.crop))
        return embed(self.encoder, torch.from_numpy(x), "cpu", precision=self.precision).numpy()[0]


class ResultCatalogue:
    """The columns a result table shows, read once for the whole survey (a server or a
    batch of queries then builds tables without touching the shards)."""

    SHOWN = ("z_spec", "gz2_smooth", "gz2_features", "class")

    def __init__(self, survey: Survey) -> None:
        cols = survey.manifest.columns
        gen = survey.manifest.generator
        self.columns = {c: survey.column(c) for c in ("object_id", "ra", "dec")}
        self.columns.update({c: survey.column(c) for c in self.SHOWN if c in cols})
        if "z_spec" in self.columns:  # a -9999 or 0 placeholder is shown as no redshift
            self.columns["z_spec"] = spec_z(survey)
        self.names = {}  # truth columns shown by name: morphology class, anomaly kind
        for col, key in (("morph_class", "morph_classes"), ("anomaly_kind", "anomaly_kinds")):
            if col in cols and key in gen:
                self.columns[col] = survey.column(col)
                self.names[col] = gen[key]

    def table(self, rows: np.ndarray, sims: np.ndarray) -> list[dict]:
        """One dict per result: rank, object_id, similarity, ra, dec, the known labels."""
        c = self.columns
        out = []
        for i, row in enumerate(np.asarray(rows, np.int64)):
            entry = {
                "rank": i + 1,
                "object_id": int(c["object_id"][row]),
                "similarity": round(float(sims[i]), 5),
                "ra": round(float(c["ra"][row]), 6),
                "dec": round(float(c["dec"][row]), 6),
            }
            for name in self.SHOWN:
                if name in c:
                    x = float(c[name][row])
                    entry[name] = None if not np.isfinite(x) else round(x, 4)
            if "class" in entry and entry["class"] is not None:
                entry["class"] = int(entry["class"])
            if "morph_class" in self.names:
                entry["true_class"] = self.names["morph_class"][int(c["morph_class"][row])]
            if "anomaly_kind" in self.names:
                kind = int(c["anomaly_kind"][row])
                entry["anomaly"] = self.names["anomaly_kind"][kind] if kind else ""
            entry["row"] = int(row)
            out.append(entry)
        return out


def write_csv(table: list[dict], path: str | os.PathLike) -> None:
    """The result table as CSV (atomic)."""
    if not table:
        raise SslHpcError(f"{path}: no results to write")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def save_result_grid(
    survey: Survey, query: Query, table: list[dict], path: str | os.PathLike, ncols: int = 6
) -> None:
    """The query then its neighbours, colour composites captioned with id, similarity and
    labels; all at the query's size (a new cutout is shown as uploaded)."""
    rows = np.array([t["row"] for t in table], np.int64)
    display = survey.manifest.flux_unit.startswith("display")
    images = list(survey.images(rows))
    caps = [f"{c}\nsim {t['similarity']:.3f}" for c, t in zip(captions(survey, rows), table)]
    if query.image is not None:
        first, first_cap = query.image, f"QUERY\n{query.label}"
    else:
        first = survey.images(np.array([query.row]))[0]
        first_cap = "QUERY\n" + captions(survey, np.array([query.row]))[0]
    save_cutout_grid(
        [first, *images],
        survey.bands,
        [first_cap, *caps],
        path,
        ncols=ncols,
        title=f"{survey.manifest.survey}: the {len(table)} most similar to {query.label}",
        display_values=display,
    )
