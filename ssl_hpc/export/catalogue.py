"""`ssl-hpc export`: an embedding set and its results as a catalogue people open."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from ..downstream.predict import has_heads
from ..embed.store import load
from ..errors import ConfigError
from ..search.searcher import survey_of
from .options import ExportOptions
from .output import check_not_an_input, check_target
from .sources import check_made_from, probe_columns, probe_head_columns, report_columns
from .table import build_table
from .writers import WRITERS


def export_catalogue(
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    options: ExportOptions | None = None,
    report: str | os.PathLike | None = None,
    probe: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the catalogue of embedding set `embeddings` to `out` in `options.format`,
    with the anomaly and trust scores of `report` (an ssl-hpc report directory) and the
    photo-z and morphology predictions of `probe` (an ssl-hpc probe directory: every
    object's, from its saved heads; an older probe's: its test objects' photo-z) when
    given. `data`: the survey (default: the one the set's run.json names). An existing
    `out` is refused unless `overwrite`. Returns {"path", "format", "rows", "columns"}."""
    opts = options or ExportOptions()
    out = Path(out)
    check_suffix(out, opts.format)
    check_target(out, overwrite)  # before any work, not only at the rename
    embedding_set = load(embeddings)
    survey = survey_of(embedding_set, data)
    inputs = [Path(embeddings), Path(survey.root)]
    check_not_an_input(out, inputs + [Path(p) for p in (report, probe) if p is not None])
    ids = embedding_set.object_ids()
    extra, derived = [], []
    if report is not None:
        check_made_from(Path(report), embedding_set, "embeddings_sha256")
        extra += report_columns(Path(report), ids)
    if probe is not None:  # heads fit one encoder's vectors: another's are noise to them
        check_made_from(Path(probe), embedding_set, "checkpoint_sha256")
    if probe is not None and has_heads(Path(probe)):
        derived.append(probe_head_columns(Path(probe), ids, embedding_set.dim))
    elif probe is not None:  # a probe from before heads were saved: its test objects only
        extra += probe_columns(Path(probe), ids)
    provenance = {
        "report": str(Path(report).resolve()) if report is not None else None,
        "probe": str(Path(probe).resolve()) if probe is not None else None,
        "options": asdict(opts),
    }
    table = build_table(embedding_set, survey, opts, extra, provenance, derived)
    WRITERS[opts.format](table, out, opts, overwrite)
    return {
        "path": str(out),
        "format": opts.format,
        "rows": table.n_rows,
        "columns": [s.name for s in table.specs],
    }


#: file name endings that say which format a catalogue is in
SUFFIXES = {".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".pq": "parquet"}
#: names of formats export does not write: a catalogue under one would be opened as one
OTHER_FORMATS = (".csv", ".tsv", ".txt", ".ecsv", ".json", ".h5", ".hdf5", ".vot", ".xml")


def check_suffix(out: Path, format: str) -> None:
    """Refuse a name that says another format than the one written (cat.fits holding
    Parquet opens in no FITS reader)."""
    said = SUFFIXES.get(out.suffix.lower())
    if out.suffix.lower() in OTHER_FORMATS:
        named = {"fits": "cat.fits", "parquet": "cat.parquet or a directory", "hats": "a directory"}
        raise ConfigError(
            f"--out {out}: a {out.suffix} name, but export writes {format}; give a name "
            f"that says so ({named[format]})"
        )
    if said is not None and said != format:
        raise ConfigError(
            f"--out {out}: a {said} file name, but the format is {format}; give --format "
            f"{said}, or another name"
        )
