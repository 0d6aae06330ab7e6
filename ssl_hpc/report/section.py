"""What every part of the report returns: a typed section."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.survey import Survey


@dataclass
class Section:
    """One part of the report: paragraphs, tables (caption, rows), figures (file in the
    report directory, caption), and the numbers it measured (they go to metrics.json)."""

    id: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def truth(survey: Survey, name: str) -> np.ndarray | None:
    """A survey column, or None where the survey has none (a real survey's truth)."""
    return survey.column(name) if name in survey.manifest.columns else None
