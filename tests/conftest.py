"""Shared fixtures: a small synthetic survey built once per session, and the real data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest

from ssl_hpc.data.manifest import ShardEntry
from ssl_hpc.data.synth import SynthConfig, generate_survey

REPO = Path(__file__).resolve().parents[1]

#: Small enough for the 2-core CI machine, big enough for sharding and label statistics.
SMALL_SURVEY = dict(
    n_objects=384, rows_per_shard=48, image_size=48, seed=7, anomaly_fraction=0.05, workers=2
)


#: Test files, or single tests (file::test), that start local Ray clusters again and again
#: (relaunch, node loss, kills) and wait on them with their own deadlines. Under
#: pytest-xdist they share one work unit, so they run one after another as they do serially,
#: and first: they are the long pole. The other files fill the other workers (their own
#: kill and full-disk tests among them: those start no Ray).
ONE_AT_A_TIME = (
    "test_crash_consistency.py::test_killed_pretraining_resumes_to_the_clean_encoder",
    "test_crash_consistency.py::test_killed_study_resumes_to_the_clean_results",
    "test_full_disk.py::test_pretrain_checkpoint_on_a_full_disk_stops_cleanly_and_resumes",
    "test_node_loss.py",
    "test_pretrain_ray.py",
    "test_tune.py",
)
#: The Slurm jobs: one file, so one unit (one node's CPUs; a job submitted beside another
#: would wait in the queue against its test's deadline). Their Ray clusters take ports from
#: the job id (cluster/env.sh), clear of the local ones, so the unit runs beside the
#: one-at-a-time unit; it goes last, to whichever worker frees first.
LAST = "test_slurm_local.py"


def _unit_of(nodeid: str) -> str:
    path, _, test = nodeid.partition("::")
    file = Path(path).name
    one_at_a_time = file in ONE_AT_A_TIME or f"{file}::{test.split('[')[0]}" in ONE_AT_A_TIME
    return "one-at-a-time" if one_at_a_time else path


def pytest_collection_modifyitems(items) -> None:
    """The one-at-a-time unit first and the Slurm file last (a stable sort keeps the order
    within each file)."""

    def order(item) -> tuple[bool, bool]:
        file = Path(item.nodeid.partition("::")[0]).name
        return _unit_of(item.nodeid) != "one-at-a-time", file == LAST

    items.sort(key=order)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the ONE_AT_A_TIME files as a single work unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneAtATimeScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit_of(nodeid)

    return OneAtATimeScheduling(config, log)


# Three pytest workers, their Ray workers and Slurm jobs share two cores, each process with
# torch's OpenMP threads. By default an OpenMP thread spins after a parallel region waiting
# for the next, burning the core another process needs: three 2-thread training loops on
# this 2-core VM took 31-34 s each at the default against 12-14 s with passive waits (alone:
# 3.3-3.7 s against 4.0-5.1 s). Set before any test imports torch; inherited by every command
# the tests start, their Ray workers and Slurm jobs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Under pytest-xdist each worker gets its own Ray temp dir: `ray.init()` with no address joins
# the cluster recorded in <temp dir>/ray_current_cluster, so a worker's local Ray would
# otherwise join another worker's test cluster (test_node_loss starts one).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["RAY_TMPDIR"] = f"/tmp/ray-{os.environ['PYTEST_XDIST_WORKER']}"


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


def rewrite_shard(survey: Path, shard: str, edit) -> None:
    """Apply `edit` to open shard `shard` of `survey`, then record the new file in the
    manifest, as another team's writer would: its sha256 and size match the manifest."""
    with h5py.File(survey / shard, "r+") as f:
        edit(f)
    manifest = json.loads((survey / "manifest.json").read_text())
    [entry] = [s for s in manifest["shards"] if s["file"] == shard]
    fresh = ShardEntry.of_file(survey / shard, entry["n_rows"])
    entry.update(sha256=fresh.sha256, n_bytes=fresh.n_bytes)
    (survey / "manifest.json").write_text(json.dumps(manifest))


def nan_centred_copy(survey: Path, dest: Path) -> Path:
    """A copy of `survey` at `dest` with every image's centre 8x8 px NaN in every band (in
    every view, whatever the rotation and jitter), its manifest matching the files."""
    shutil.copytree(survey, dest)

    def centre_nan(f):
        h, w = f["image_array"].shape[-2:]
        f["image_array"][:, :, h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = float("nan")

    for shard in sorted(p.name for p in dest.glob("shard-*.h5")):
        rewrite_shard(dest, shard, centre_nan)
    return dest


def dead_pid() -> int:
    """A pid no process holds: that of a child which has exited and been reaped. A fixed
    number will not do (CI failed at ed87fd1 when pid 999 was a live process there)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


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
