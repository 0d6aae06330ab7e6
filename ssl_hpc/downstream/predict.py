"""The heads `ssl-hpc probe` fitted, saved so that they apply to any embedding vector.

One file per task, DIR/heads/<task>.pt, that ``torch.load(weights_only=True)`` opens (a
dict of tensors, strings and numbers): the Head's state_dict (`mean`, `std`: the inputs'
standardisation, from the training set; `net.*`: the linear layer, or the two of a
hidden-layer head), its input size, hidden width and output count, the output's meaning
(photoz: the redshift bin edges; morphology: the question's answer names), and the object
ids it was fitted on. DIR/heads/index.json lists them. Applied to (N, D) vectors they give
catalogue columns: photoz (the PDF's probability-weighted mean, the probe's own point
estimate) and photoz_err (the PDF's standard deviation); per morphology question
p_<task>_<answer> (each answer's probability) and <task>_class (the likeliest answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SslHpcError
from ..utils.atomic import atomic_path, write_json_atomic
from .heads import Head, predict_proba
from .tasks import PHOTOZ, Task

HEADS = "heads"
INDEX = "index.json"
FORMAT = 1


class HeadFileError(SslHpcError):
    """A saved head that is missing, unreadable or does not fit the vectors."""


@dataclass(frozen=True)
class SavedHead:
    """A fitted head and what its outputs mean."""

    task: str
    model: Head
    answers: tuple[str, ...]  # morphology: the question's answers; photoz: ()
    bin_edges: np.ndarray | None  # photoz: (n_bins + 1,) redshift bin edges
    train_ids: np.ndarray  # (n_train,) object ids of the labels it was fitted on
    fraction: float  # of the training pool
    repeat: int

    @property
    def dim(self) -> int:
        return self.model.mean.numel()


@dataclass(frozen=True)
class Column:
    """One output column: name, kind (float64, float32, string, bool), description; `width`
    a string's longest value in bytes."""

    name: str
    kind: str
    description: str
    width: int = 1


def save_head(
    directory: Path,
    task: Task,
    model: Head,
    train_ids: np.ndarray,
    fraction: float,
    repeat: int = 0,
) -> dict:
    """Write `model` (fitted for `task` on the objects `train_ids`) atomically to
    directory/<task>.pt; returns its index entry (write them with `write_index`)."""
    directory.mkdir(parents=True, exist_ok=True)
    hidden = model.net[0].out_features if isinstance(model.net, nn.Sequential) else 0
    n_out = (model.net[-1] if hidden else model.net).out_features
    photoz = task.name == PHOTOZ
    saved = {
        "format": FORMAT,
        "task": task.name,
        "input_dim": model.mean.numel(),
        "hidden": hidden,
        "n_out": n_out,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "answers": [] if photoz else list(task.answers),
        "bin_edges": torch.from_numpy(task.bins.edges) if photoz else None,
        "train_object_id": torch.as_tensor(np.asarray(train_ids, np.int64)),
        "fraction": float(fraction),
        "repeat": int(repeat),
    }
    file = f"{task.name}.pt"
    with atomic_path(directory / file) as tmp:
        torch.save(saved, tmp)
    return {"file": file, "n_train": len(train_ids), "fraction": fraction, "repeat": repeat}


def write_index(directory: Path, entries: dict[str, dict]) -> None:
    """directory/index.json: {"format", "tasks": {task: index entry}}."""
    write_json_atomic(directory / INDEX, {"format": FORMAT, "tasks": entries})


def has_heads(probe_dir: Path) -> bool:
    """True if the probe directory holds saved heads (probes before them did not)."""
    return (Path(probe_dir) / HEADS / INDEX).is_file()


def load_heads(probe_dir: str | Path) -> list[SavedHead]:
    """The heads saved in probe directory `probe_dir`, in the order of its index."""
    directory = Path(probe_dir) / HEADS
    try:
        index = json.loads((directory / INDEX).read_text())
        entries = index["tasks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HeadFileError(f"{directory / INDEX}: unreadable ({e})") from e
    return [_load(directory / entry["file"]) for entry in entries.values()]


def _load(path: Path) -> SavedHead:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state = saved["state_dict"]
        model = Head(state["mean"], state["std"], saved["n_out"], saved["hidden"])
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise HeadFileError(f"{path}: not a saved probe head ({e})") from e
    edges = saved["bin_edges"]
    return SavedHead(
        saved["task"],
        model.eval(),
        tuple(saved["answers"]),
        None if edges is None else edges.numpy().astype(np.float64),
        saved["train_object_id"].numpy(),
        saved["fraction"],
        saved["repeat"],
    )


def columns(heads: list[SavedHead]) -> list[Column]:
    """The columns `predict` and `trained_on` return, with their meaning."""
    out = []
    for h in heads:
        fitted = f"probe head fitted on {len(h.train_ids)} labels"
        if h.bin_edges is not None:
            lo, hi, n = h.bin_edges[0], h.bin_edges[-1], len(h.bin_edges) - 1
            pdf = f"{n}-bin redshift PDF over {lo:g} < z < {hi:g}"
            out += [
                Column("photoz", "float64", f"photo-z: mean of the {pdf} ({fitted})"),
                Column(
                    "photoz_err", "float64", "photo-z uncertainty: standard deviation of that PDF"
                ),
            ]
        else:
            out += [
                Column(f"p_{h.task}_{a}", "float32", f"probability of {h.task}={a} ({fitted})")
                for a in h.answers
            ]
            width = max(len(a.encode()) for a in h.answers)
            doc = f"the likeliest answer to {h.task} (argmax of p_{h.task}_*)"
            out.append(Column(class_column(h.task), "string", doc, width))
        doc = f"the {h.task} head was fitted on this object's label (an in-sample prediction)"
        out.append(Column(f"in_train_{h.task}", "bool", doc))
    return out


def predict(
    heads: list[SavedHead], vectors: np.ndarray, block: int = 65536
) -> dict[str, np.ndarray]:
    """Each head applied to (N, D) `vectors`, `block` rows at a time: {column: (N,)}.
    photoz: the PDF's mean (as the probe scores it) and standard deviation, float64;
    morphology: each answer's probability (float32) and the likeliest answer's name."""
    vectors = np.asarray(vectors)
    for h in heads:
        if vectors.ndim != 2 or vectors.shape[1] != h.dim:
            raise HeadFileError(
                f"the {h.task} head takes {h.dim}-dim vectors, given {vectors.shape}"
            )
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, max(len(vectors), 1), block):  # once for no rows: empty columns
        x = vectors[start : start + block]
        for h in heads:
            for name, values in _apply(h, x).items():
                parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


def _apply(h: SavedHead, x: np.ndarray) -> dict[str, np.ndarray]:
    probs = predict_proba(h.model, x)  # (n, C) float64, as the probe's own scoring
    if h.bin_edges is not None:
        centres = 0.5 * (h.bin_edges[1:] + h.bin_edges[:-1])
        mean = probs @ centres  # RedshiftBins.point
        var = (probs * (centres[None, :] - mean[:, None]) ** 2).sum(axis=1)
        return {"photoz": mean, "photoz_err": np.sqrt(var)}
    out = {f"p_{h.task}_{a}": probs[:, i].astype(np.float32) for i, a in enumerate(h.answers)}
    out[class_column(h.task)] = np.array(h.answers, object)[probs.argmax(axis=1)]
    return out


def trained_on(heads: list[SavedHead], object_ids: np.ndarray) -> dict[str, np.ndarray]:
    """{in_train_<task>: (N,) bool}: whether each head was fitted on each object's label."""
    return {f"in_train_{h.task}": np.isin(object_ids, h.train_ids) for h in heads}


def class_column(task: str) -> str:
    """The predicted-class column of a morphology task: ``<task>_class`` (a task already
    named ``*_class``, such as gz1_class, keeps its name)."""
    return task if task.endswith("_class") else f"{task}_class"
