"""ASHA, the sweeps' default scheduler, on a local Ray cluster: the trials it cuts must
hand their CPUs back. With the Ray dashboard off (tried for start-up speed) they did not:
Ray Train's PlacementGroupCleaner reads its controller's state through the dashboard, a cut
trial's workers kept their CPUs, and the next trial's worker group timed out starting, again
and again: this sweep was still running after 15 minutes."""

from __future__ import annotations

import pytest
import ray  # noqa: E402  (a dependency: fail, never skip, without it)
from test_tune import TINY, sweep_file

from ssl_hpc.tune.report import STATUS_CUT, STATUS_DONE, collect
from ssl_hpc.tune.run import read_attempts, sweep
from ssl_hpc.tune.space import load_sweep

TEMPERATURES = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]


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
    ray.init(num_cpus=2)  # the dashboard on, as `connect` starts a local cluster
    try:
        results = sweep(config, small_survey, tmp / "out")
    finally:
        ray.shutdown()
    return collect(results, config), tmp / "out"


# With the dashboard off the sweep never ends (a trial waits for CPUs that never come):
# fail in 10 minutes rather than the suite's 15 (142 s here when it works)
@pytest.mark.timeout(600)
def test_asha_cuts_some_trials_and_every_other_trial_still_gets_its_cpus(asha_rows):
    rows, _ = asha_rows
    assert sorted(r["temperature"] for r in rows) == TEMPERATURES
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {STATUS_DONE, STATUS_CUT}, [r.get("error") for r in rows]
    assert STATUS_CUT in statuses and STATUS_DONE in statuses, statuses
    for r in rows:  # cut at a rung, or run to the end
        assert r["step"] in ({2, 4} if r["status"] == STATUS_CUT else {TINY["steps"]}), r


def test_each_trial_started_once(asha_rows):
    _, out = asha_rows
    trials = sorted((out / "sweep").glob("trial_*"))
    assert len(trials) == len(TEMPERATURES)
    for path in trials:  # none restarted after waiting in vain for its workers
        assert sum(e["event"] == "start" for e in read_attempts(path)) == 1, path.name
