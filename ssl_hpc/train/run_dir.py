"""A run directory's claims: which config and which survey it trains, and which run.

A relaunch on the same directory resumes, so it must be the same run: `claim_run` writes
``config.yaml`` and ``survey.json`` (the survey by content: a copy staged elsewhere is the
same survey) or checks them, and `check_run_name` refuses another run's name in it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import claim_file, to_yaml
from ..data.manifest import load_manifest
from ..errors import ConfigError
from ..utils.atomic import write_json_atomic
from ..utils.outdir import check_out_dir

#: in a run directory: the survey it trains on (`claim_survey`)
SURVEY_FILE = "survey.json"


def claim_run(out: str | Path, config, what: str, survey: str | Path) -> Path:
    """The run directory `out` (absolute, created), claimed for `config` and `survey`: its
    config.yaml and SURVEY_FILE are written, or on a rerun checked to be the same (a
    ConfigError names what differs otherwise). A run that never reached a checkpoint (it
    failed at its start) trained nothing to resume: a corrected config or survey takes its
    place."""
    out = check_out_dir(out, own=SURVEY_FILE).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = ("encoder.pt", "model.pt", "metrics.json")
    if not any((out / "ray").glob("*/checkpoint_*")) and not any(
        (out / r).exists() for r in results
    ):
        (out / "config.yaml").unlink(missing_ok=True)
        (out / SURVEY_FILE).unlink(missing_ok=True)
    claim_file(out / "config.yaml", to_yaml(config), what)
    claim_survey(out / SURVEY_FILE, survey)
    return out


def claim_survey(path: Path, survey: str | Path) -> None:
    """Record which survey a run trains on, by content (`Manifest.content_sha256`, so a copy
    staged elsewhere, node-local disk say, is the same survey), or check a resume's. A run
    directory from before survey.json existed takes the survey it is resumed on."""
    manifest = load_manifest(survey)
    claim = {
        "survey": manifest.survey,
        "n_objects": manifest.n_objects,
        "content_sha256": manifest.content_sha256,
    }
    held = json.loads(path.read_text()) if path.exists() else {}
    if "content_sha256" not in held:  # a new run, or one from before survey.json
        write_json_atomic(path, {**claim, "path": str(Path(survey).resolve())})
        return
    if {k: held.get(k) for k in claim} != claim:
        raise ConfigError(
            f"{path.parent} holds a run on survey {held.get('survey')!r} ({held.get('n_objects')}"
            f" objects, content sha256 {str(held.get('content_sha256'))[:12]}..., at "
            f"{held.get('path')}), not {Path(survey)} ({claim['survey']!r}, "
            f"{claim['n_objects']} objects, {claim['content_sha256'][:12]}...): resume on "
            "the same survey, or choose another --out (if this is the same survey mended in "
            f"place, delete {path} to resume on it)"
        )


def check_run_name(out: Path, name: str) -> None:
    """Refuse to start run `name` in a directory that holds another run's results: a fresh
    start would rewrite its metrics.csv and encoder.pt."""
    runs = sorted(p.name for p in (out / "ray").glob("[!.]*") if p.is_dir())
    if runs and name not in runs:
        raise ConfigError(
            f"{out}: holds the run {', '.join(runs)}, not {name}: rerun with --name "
            f"{runs[0]} to resume it, or give another --out"
        )
