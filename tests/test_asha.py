"""ASHA, the sweeps' default scheduler, on a local Ray cluster: the trials it cuts must
hand their CPUs back. Ray Train's PlacementGroupCleaner frees them, asking the State API
(served by the dashboard) whether the cut trial's controller still lives. It did not work
with the dashboard off (tried for start-up speed), nor with a second Ray cluster on the
machine, as under pytest-xdist or on a shared login node: it could not tell which cluster
to ask ("Found multiple active Ray instances"). Either way a cut trial's workers kept
their CPUs and the next trial's worker group timed out starting, again and again: the
sweep was still running after 10 minutes. Worse, with the dashboard off and another
cluster's on the default port, that cluster answered, and a live run's workers were
removed. `start_local` keeps the dashboard and gives Ray's processes the cluster's address;
the tests start a second cluster beside their own to hold it to that."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray  # noqa: E402  (a dependency: fail, never skip, without it)
from test_tune import TINY, sweep_file

from ssl_hpc.train.ray_loop import free_port, start_local
from ssl_hpc.tune.report import STATUS_CUT, STATUS_DONE, collect
from ssl_hpc.tune.run import read_attempts, sweep
from ssl_hpc.tune.space import load_sweep

# four trials in grid order: the first two run to the end and the next two are cut (0.2 and
# 0.5 score below them at the first rung); each trial needs the cluster's CPUs, so every
# one after a cut one also shows that the cut one handed them back
TEMPERATURES = [0.05, 0.1, 0.2, 0.5]


@pytest.fixture(scope="module")
def asha_rows(tmp_path_factory, small_survey):
    tmp = tmp_path_factory.mktemp("asha")
    # each trial takes both CPUs of the cluster (0.1 for Tune's function, 1.9 for the
    # worker), so trials run one at a time and a cut trial that kept its CPUs would starve
    # every trial after it; rungs at steps 2 and 4 of 8
    overrides = {**TINY, "cpus_per_worker": 1.9, "eval_every": 2, "checkpoint_every": 2}
    path = sweep_file(
        tmp,
        overrides=overrides,
        search={"temperature": {"grid": TEMPERATURES}},
        scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 2},
    )
    config = load_sweep(path)
    with another_ray_cluster():
        start_local(num_cpus=2)  # as `connect` starts one
        try:
            results = sweep(config, small_survey, tmp / "out")
        finally:
            ray.shutdown()
    return collect(results, config), tmp / "out"


# When cut trials keep their CPUs the sweep never ends (a trial waits for CPUs that never
# come) and the suite's 15-minute timeout fails it. It takes ~2 minutes alone; beside the
# suite's other workers Ray's processes (at nice 15) run several times slower, and a
# 10-minute limit was once not enough.
def test_asha_cuts_some_trials_and_every_other_trial_still_gets_its_cpus(asha_rows):
    rows, _ = asha_rows
    assert sorted(r["temperature"] for r in rows) == TEMPERATURES
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {STATUS_DONE, STATUS_CUT}, [r.get("error") for r in rows]
    assert STATUS_CUT in statuses and STATUS_DONE in statuses, statuses
    for r in rows:
        # ASHA decides at a rung (step 2 or 4) and the stop reaches the trial
        # asynchronously: under load it may report one more evaluation (step 6) first
        assert r["step"] in ({2, 4, 6} if r["status"] == STATUS_CUT else {TINY["steps"]}), r


def test_each_trial_started_once(asha_rows):
    _, out = asha_rows
    trials = sorted((out / "sweep").glob("trial_*"))
    assert len(trials) == len(TEMPERATURES)
    for path in trials:  # none restarted after waiting in vain for its workers
        assert sum(e["event"] == "start" for e in read_attempts(path)) == 1, path.name


@ray.remote(num_cpus=0)
class Cleaner:
    """Asks what Ray Train's PlacementGroupCleaner asks, from a worker of the cluster."""

    def sees_alive(self, actor_id: str):
        from ray.train.v2._internal.state.util import is_actor_alive

        try:
            return bool(is_actor_alive(actor_id, timeout=30))
        except ConnectionError as e:  # the cluster could not be resolved
            return str(e)

    def actor_id(self) -> str:
        return ray.get_runtime_context().get_actor_id()


def cleaner_verdict(**start) -> bool | str:
    """Whether a live actor of a local cluster, started with `start`, looks alive."""
    if start.pop("plain", False):
        ray.init(num_cpus=1, **start)
    else:
        start_local(num_cpus=1, **start)
    try:
        cleaner = Cleaner.remote()
        return ray.get(cleaner.sees_alive.remote(ray.get(cleaner.actor_id.remote())))
    finally:
        ray.shutdown()


def test_ray_train_sees_its_live_controller_beside_another_cluster():
    with another_ray_cluster():  # its dashboard on, likely on the default port
        assert cleaner_verdict() is True
        assert "RAY_ADDRESS" not in os.environ  # the driver's environment as it was
        # the two ways it failed: without the address, the cluster cannot be resolved
        # (the cleaner's thread died; cut trials kept their CPUs) ...
        assert "multiple active Ray instances" in cleaner_verdict(plain=True)
        # ... and without its own dashboard the State API on the default port answered,
        # another cluster's: a live controller declared dead (a run's workers removed)
        assert cleaner_verdict(include_dashboard=False) is False


@contextlib.contextmanager
def another_ray_cluster():
    """A second local Ray cluster with its dashboard, as another user's on a login node.
    Started in its own process group so that it alone is stopped (`ray stop` stops every
    Ray on the machine, other pytest workers' too)."""
    # short: Ray's unix socket paths under it may not exceed 107 bytes
    temp_dir = tempfile.mkdtemp(prefix="ray-other-", dir="/tmp")
    start = subprocess.Popen(
        [Path(sys.executable).with_name("ray"), "start", "--head", "--port", str(free_port()),
         "--num-cpus", "0", "--disable-usage-stats",
         "--temp-dir", temp_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    _, err = start.communicate(timeout=180)
    assert start.returncode == 0, err.decode()[-2000:]
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(start.pid, signal.SIGKILL)  # its processes kept the group
        shutil.rmtree(temp_dir, ignore_errors=True)
