"""Shared fixtures: a small synthetic survey built once per session, and the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssl_hpc.data.synth import SynthConfig, generate_survey

REPO = Path(__file__).resolve().parents[1]

#: Small enough for the 2-core CI machine, big enough for sharding and label statistics.
SMALL_SURVEY = dict(
    n_objects=384, rows_per_shard=48, image_size=48, seed=7, anomaly_fraction=0.05, workers=2
)


def require_services() -> bool:
    """True where a missing real service (MPI, Slurm, shared data) must fail, not skip."""
    return os.environ.get("SSL_HPC_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    if require_services():
        pytest.fail(f"required by SSL_HPC_REQUIRE_SERVICES=1: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """tests/data: the few real survey files the tests read (provenance in its README)."""
    return REPO / "tests" / "data"


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory) -> Path:
    """A 384-object, 8-shard synthetic survey of 48x48 cutouts (built once, read-only)."""
    out = tmp_path_factory.mktemp("survey") / "small"
    generate_survey(SynthConfig(**SMALL_SURVEY), out)
    return out


def drawn_png(path: Path, min_colours: int = 64):
    """The pixels of the PNG at `path` (H, W, channels) after checking that it decodes and is
    a drawn figure: many distinct colours, not a blank or single-colour canvas."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", f"{path}: {image.format}, not a PNG"
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, f"{path}: {len(colours)} colours, a blank figure?"
    return pixels
