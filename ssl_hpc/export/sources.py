"""Per-object results of later stages, as catalogue columns aligned with the embedding set.

`ssl-hpc report` scores every object: anomalies.csv (each object's rank and every anomaly
score) and trust.npz (trust and the distances it is calibrated from; only for surveys with
redshifts). `ssl-hpc probe` saves one fitted head per task (heads/, `downstream.predict`),
which gives photo-z and morphology columns for every object, computed from each shard's
vectors; from a probe directory without heads (made before they were saved) only the
held-out test objects' photo-z (photoz_pdfs.npz) can be exported.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..downstream.predict import HEADS, HeadFileError, columns, load_heads, predict, trained_on
from ..errors import SslHpcError
from ..report.files import ANOMALIES, TRUST
from .table import DerivedColumns, ExtraColumn, Spec

PHOTOZ_PDFS = "photoz_pdfs.npz"


class ExportInputError(SslHpcError):
    """A report or probe directory whose files are missing, unreadable or of another set."""


def rows_in_set(file_ids: np.ndarray, set_ids: np.ndarray, path: Path, every: bool) -> np.ndarray:
    """The embedding-set row of each id in `file_ids` (read from `path`); an error naming
    the file if an id is unknown or repeated, or (`every`) if the file misses objects."""
    file_ids = np.asarray(file_ids, dtype=np.int64)
    order = np.argsort(set_ids, kind="stable")
    pos = np.searchsorted(set_ids, file_ids, sorter=order).clip(0, max(len(set_ids) - 1, 0))
    rows = order[pos]
    unknown = set_ids[rows] != file_ids
    if unknown.any():
        raise ExportInputError(
            f"{path}: object_id {int(file_ids[unknown][0])} is not in the embedding set "
            "(a report or probe of another survey?)"
        )
    if len(np.unique(rows)) != len(rows):
        raise ExportInputError(f"{path}: an object_id appears more than once")
    if every and len(rows) != len(set_ids):
        raise ExportInputError(
            f"{path}: {len(rows)} objects, the embedding set has {len(set_ids)} "
            "(a report of another set?)"
        )
    return rows


def _aligned(values: np.ndarray, rows: np.ndarray, n: int, fill) -> np.ndarray:
    out = np.full(n, fill, dtype=values.dtype)
    out[rows] = values
    return out


def check_made_from(root: Path, embedding_set, key: str) -> None:
    """Refuse a report or probe directory `root` whose metrics.json records another
    embedding set (`key` embeddings_sha256: these vectors) or encoder (checkpoint_sha256)
    than `embedding_set`'s; one made before they recorded it passes (ids are still checked)."""
    try:
        made = json.loads((root / "metrics.json").read_text())
    except (OSError, ValueError):
        return  # the columns' own files say what is missing or unreadable
    mine = embedding_set.provenance()
    theirs = made.get(key) if isinstance(made, dict) else None
    if theirs is None or mine[key] is None or theirs == mine[key]:
        return
    what = "vectors" if key == "embeddings_sha256" else "encoder"
    if made.get("embeddings") == mine["embeddings"]:  # the same directory, embedded again
        raise ExportInputError(
            f"{root}: made from {embedding_set.root} before its {what} changed ({key} "
            f"{str(theirs)[:12]}..., now {mine[key][:12]}...): run it again on the set"
        )
    raise ExportInputError(
        f"{root}: made from embedding set {made.get('embeddings')} ({what} sha256 "
        f"{str(theirs)[:12]}...), not {embedding_set.root} ({mine[key][:12]}...): its "
        f"columns describe other vectors; export it with --embeddings {made.get('embeddings')}"
    )


def report_columns(root: Path, set_ids: np.ndarray) -> list[ExtraColumn]:
    """The anomaly (every report) and trust (surveys with redshifts) columns of report
    directory `root`, in embedding-set order."""
    path = root / ANOMALIES
    if not path.is_file():
        raise ExportInputError(f"{path}: missing; is {root} an ssl-hpc report directory?")
    table = _read_csv(path)
    rows = rows_in_set(table.pop("object_id"), set_ids, path, every=True)
    n = len(set_ids)
    rank_by = _rank_by(root)
    out = [
        ExtraColumn(
            Spec("anomaly_rank", "int64", "rank by the report's anomaly score (1: most unusual)"),
            _aligned(table.pop("rank").astype(np.int64), rows, n, -1),
        ),
        ExtraColumn(
            Spec("anomaly_score", "float64", f"the report's anomaly score ({rank_by})"),
            _aligned(table.pop("score"), rows, n, np.nan),
        ),
    ]
    for name, values in table.items():  # score_<view>_<method>: every score of every view
        what = name.removeprefix("score_")
        spec = Spec(f"anomaly_{what}", "float64", f"anomaly score {what} (higher: more unusual)")
        out.append(ExtraColumn(spec, _aligned(values, rows, n, np.nan)))
    if (root / TRUST).exists():
        out += _trust_columns(root / TRUST, set_ids)
    return out


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    ints = {"rank": pa.int64(), "object_id": pa.int64()}
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=ints))
    except (pa.ArrowInvalid, OSError) as e:
        raise ExportInputError(f"{path}: unreadable ({str(e).splitlines()[0]})") from e
    missing = {"rank", "object_id", "score"} - set(table.column_names)
    if missing:
        raise ExportInputError(f"{path}: no column(s) {sorted(missing)}; not ssl-hpc's ranking")
    out = {}
    for name in table.column_names:
        column = table[name] if name in ints else table[name].cast(pa.float64())
        out[name] = column.to_numpy(zero_copy_only=False)  # nulls ("nan") become NaN
    return out


def _rank_by(root: Path) -> str:
    """What the report ranked anomalies by ('knn on galaxy'), from its metrics.json."""
    try:
        metrics = json.loads((root / "metrics.json").read_text())
        view, method = metrics["sections"]["anomalies"]["rank_by"].split("/")
        return f"{method} on {view}"
    except (OSError, ValueError, KeyError, AttributeError):
        return "its ranking score"


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ExportInputError(f"{path}: no array(s) {missing}")
            return {k: z[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ExportInputError(f"{path}: unreadable ({e})") from e


def _trust_columns(path: Path, set_ids: np.ndarray) -> list[ExtraColumn]:
    keys = ("object_id", "trust", "label_distance", "density_ratio", "labelled")
    z = _load_npz(path, keys)
    rows = rows_in_set(z["object_id"], set_ids, path, every=True)
    n = len(set_ids)
    specs = {
        "trust": "fraction of labelled objects at least as far from the labels (1: as "
        "close as a typical labelled object, 0: farther than all)",
        "label_distance": "mean cosine distance to the k nearest labelled objects",
        "density_ratio": "distance to the k nearest of all objects over label_distance",
    }
    out = [
        ExtraColumn(
            Spec("trust" if k == "trust" else f"trust_{k}", "float64", doc),
            _aligned(z[k].astype(np.float64), rows, n, np.nan),
        )
        for k, doc in specs.items()
    ]
    labelled = Spec("trust_labelled", "bool", "in the labelled set trust is measured from")
    out.append(ExtraColumn(labelled, _aligned(z["labelled"].astype(bool), rows, n, False)))
    return out


def probe_columns(root: Path, set_ids: np.ndarray) -> list[ExtraColumn]:
    """Photo-z point estimate and PDF width of the objects probe directory `root` holds
    predictions for (its held-out test objects; NaN for every other object)."""
    path = root / PHOTOZ_PDFS
    if not path.is_file():
        raise ExportInputError(
            f"{path}: missing; ssl-hpc probe writes it when it fits photoz (it saves no "
            "other per-object predictions)"
        )
    z = _load_npz(path, ("object_id", "z_pred", "pdf", "bin_edges"))
    rows = rows_in_set(z["object_id"], set_ids, path, every=False)
    edges = z["bin_edges"].astype(np.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])
    pdf = z["pdf"].astype(np.float64)
    pdf /= np.maximum(pdf.sum(axis=1, keepdims=True), 1e-300)
    mean = pdf @ centres
    width = np.sqrt(np.maximum(pdf @ centres**2 - mean**2, 0.0))
    n, where = len(set_ids), "the probe's held-out test objects only, NaN for the rest"
    return [
        ExtraColumn(
            Spec("photoz", "float64", f"photo-z, the PDF's mean ({where})"),
            _aligned(z["z_pred"].astype(np.float64), rows, n, np.nan),
        ),
        ExtraColumn(
            Spec(
                "photoz_err",
                "float64",
                f"photo-z uncertainty, the PDF's standard deviation ({where})",
            ),
            _aligned(width, rows, n, np.nan),
        ),
    ]


def probe_head_columns(root: Path, set_ids: np.ndarray, dim: int) -> DerivedColumns:
    """Every object's predictions by the heads saved in probe directory `root`
    (`downstream.predict`), computed shard by shard from the (n, `dim`) vectors."""
    try:
        heads = load_heads(root)
    except HeadFileError as e:
        raise ExportInputError(str(e)) from e
    for h in heads:
        where = root / HEADS / f"{h.task}.pt"
        if h.dim != dim:
            raise ExportInputError(
                f"{where}: a head for {h.dim}-dim vectors; the embedding set has {dim} "
                "(a probe of another set?)"
            )
        rows_in_set(h.train_ids, set_ids, where, every=False)
    specs = [Spec(c.name, c.kind, c.description, width=c.width) for c in columns(heads)]
    return DerivedColumns(
        specs, lambda vectors, ids: {**predict(heads, vectors), **trained_on(heads, ids)}
    )
