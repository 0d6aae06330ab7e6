"""What the server holds in memory: the searcher, per-object trust and anomaly scores, and
a cache of rendered cutout PNGs bounded in bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..data.labels import spec_z
from ..downstream.anomaly import knn_distance
from ..downstream.trust import trust_scores
from ..export.sources import report_columns
from ..search.searcher import Searcher
from ..utils.byte_cache import ByteLRU
from ..viz.composite import rgb_composite

#: Above this many objects, trust and anomaly scores are not computed at start-up (they
#: are an all-vs-all search); pass a report directory that holds them instead.
SCORE_AT_START_MAX = 200_000


class ServeState:
    """The searcher plus what result cards show: trust (distance to the labelled set,
    calibrated) and the kNN anomaly score, each (N,) or None."""

    def __init__(
        self,
        searcher: Searcher,
        report: str | os.PathLike | None = None,
        log=print,
        image_cache_bytes: int = 64 << 20,
    ):
        self.searcher = searcher
        survey = searcher.survey
        self.n = len(survey)
        self.display = survey.manifest.flux_unit.startswith("display")
        self.trust: np.ndarray | None = None
        self.anomaly: np.ndarray | None = None
        if report is not None:
            self._load_report(Path(report))
        elif self.n <= SCORE_AT_START_MAX:
            log(f"serve: scoring trust and anomalies of {self.n} objects ...")
            _, vectors = searcher.set.load()
            labelled = np.isfinite(spec_z(survey))  # no -9999 or 0 placeholders
            if labelled.sum() > 10:
                self.trust = trust_scores(vectors, labelled)["trust"]
            self.anomaly = knn_distance(vectors)
        self.anomalous = np.argsort(-self.anomaly)[:100] if self.anomaly is not None else None
        self.images = ByteLRU(image_cache_bytes)

    def _load_report(self, root: Path) -> None:
        """The anomaly and trust scores `ssl-hpc report` wrote to `root` for this set (read
        as export reads them): an error naming the file if `root` is no report of it."""
        ids = self.searcher.catalogue.columns["object_id"]
        columns = {c.spec.name: c.values for c in report_columns(root, ids)}
        self.anomaly = columns["anomaly_score"]
        self.trust = columns.get("trust")

    # -- images -----------------------------------------------------------------------------
    def png(self, row: int) -> bytes:
        """The colour composite of survey row `row` as PNG bytes (cached)."""
        row = int(row)
        return self.images.get(row, lambda: self._render(row))

    def _render(self, row: int) -> bytes:
        image = self.searcher.survey.images(np.array([row]))[0]
        return image_png(image, self.searcher.survey.bands, self.display)

    def card(self, entry: dict) -> dict:
        """A result-table entry with its trust, anomaly score and image URL added."""
        row = entry["row"]
        return {
            **{k: v for k, v in entry.items() if k != "row"},
            "id": str(entry["object_id"]),  # exact in JavaScript, whose numbers stop at 2**53
            "trust": None if self.trust is None else round(float(self.trust[row]), 3),
            "anomaly_score": None if self.anomaly is None else round(float(self.anomaly[row]), 5),
            "image": f"/api/image/{entry['object_id']}.png",
        }


def image_png(image: np.ndarray, bands, display: bool, scale: int = 2) -> bytes:
    """(B, H, W) -> PNG bytes of its colour composite, north up, enlarged `scale` times."""
    from PIL import Image

    rgb = rgb_composite(image, bands, display_values=display)[::-1]  # row 0 at the bottom
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
