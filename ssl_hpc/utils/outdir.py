"""The output directory a command is given, checked before any work.

A command writes its config.yaml and results into `--out`; given a survey, an embedding
set or another sharded job's directory by mistake, it would write among their files (and
replace a survey's own config.yaml). Those directories are known by the files that claim
them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

#: a survey's or an embedding set's manifest, a sharded job's claim, an embedding set's run
CLAIMED_BY = ("manifest.json", "job.json", "run.json")
#: what marks each command's own output directory, and what it is: another command given it
#: as --out would write its config.yaml and results among that one's
MARKS = {
    "survey.json": "a training run (ssl-hpc pretrain)",
    "sweep.yaml": "a sweep (ssl-hpc tune)",
    "study.yaml": "a label-efficiency study (ssl-hpc finetune)",
    "heads": "a probe (ssl-hpc probe)",
    "index.html": "a report (ssl-hpc report)",
}


def check_out_dir(out: str | os.PathLike, option: str = "--out", own: str | None = None) -> Path:
    """`out` as a Path, once it is known to be a directory this command may write in: absent,
    or a directory that no survey, embedding set or sharded job claims, and that holds no
    other command's outputs (`own`: the mark in MARKS of this command's, allowed). A
    ConfigError naming `option` and `out` otherwise."""
    if own is not None and own not in MARKS:
        raise ValueError(f"check_out_dir: own={own!r} is not one of {list(MARKS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: is a file; give a directory")
    held = [name for name in CLAIMED_BY if (out / name).exists()]
    if held:
        raise ConfigError(
            f"{option} {out}: holds a survey, an embedding set or another job's outputs "
            f"({', '.join(held)}); choose another directory"
        )
    for mark, what in MARKS.items():
        if mark != own and (out / mark).exists():
            raise ConfigError(f"{option} {out}: holds {what} ({mark}); choose another directory")
    return out
