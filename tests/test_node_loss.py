"""Losing a whole node: a two-node Ray cluster on this machine (a head and a second raylet
with its own CPU, object store and temp dir), pretraining with one Ray Train worker per
node. Mid-run the second node is killed outright (its raylet and every worker on it, as a
node crash does), and a replacement node joins, as a spare node or a requeued allocation
would. The run must finish from its last checkpoint, losing at most one checkpoint
interval of steps, with every logged step once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from ssl_hpc.train.metrics_log import read_metrics

STEPS, EVERY, KILL_AFTER = 60, 10, 25


SETTINGS = [
    "arch=resnet18",
    "num_workers=2",
    "cpus_per_worker=1",
    "batch_size=16",
    "queue_size=128",
    f"steps={STEPS}",
    f"checkpoint_every={EVERY}",
    f"log_every={EVERY}",
    f"eval_every={STEPS}",
    "eval_objects=128",
    "loader_workers=0",
    "augment.out_size=24",
    "augment.max_shift=4",
    "max_failures=2",
]


def _start(cmd: list[str]) -> subprocess.Popen:
    """The job's driver in its own process, as inside a Slurm job."""
    env = {**os.environ, "SSL_HPC_PROGRESS": "0"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _wait_for(done, driver: subprocess.Popen, timeout: float = 400) -> None:
    """Poll `done()` while the driver runs."""
    deadline = time.monotonic() + timeout
    while not done():
        assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()
        time.sleep(0.2)


def _lose_and_replace(cluster: Cluster, doomed, driver: subprocess.Popen) -> str:
    """Kill node `doomed` outright (raylet, object store, workers), add a replacement as a
    spare node would, and return the driver's output once it has finished."""
    cluster.remove_node(doomed, allow_graceful=False)
    cluster.add_node(num_cpus=1)
    return driver.communicate(timeout=400)[0]


def _tear_down(cluster: Cluster, driver: subprocess.Popen) -> None:
    if driver.poll() is None:
        driver.kill()
    cluster.shutdown()


def _logged(run) -> list[dict]:
    try:
        return [r for r in read_metrics(run / "metrics.csv") if not r.get("note")]
    except (OSError, ValueError, KeyError):
        return []


@pytest.mark.timeout(600)
def test_pretraining_survives_the_loss_of_a_whole_node(small_survey, tmp_path):
    import ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    doomed = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    # the driver in its own process, as `ssl-hpc pretrain --address` runs inside a job;
    # 2 workers of 1 CPU on 2 nodes of 1 CPU: one worker on each node
    cmd = [sys.executable, "-m", "jobs.cli", "pretrain", "--data", str(small_survey)]
    cmd += ["--out", str(run), "--address", cluster.address, *SETTINGS]
    driver = _start(cmd)
    try:
        _wait_for(lambda: any(r["step"] >= KILL_AFTER for r in _logged(run)), driver)
        at_kill = max(r["step"] for r in _logged(run))
        ray.init(address=cluster.address)
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True)
        ray.shutdown()
        on_nodes = sorted(a.node_id == doomed.node_id for a in workers if a.state == "ALIVE")
        assert on_nodes == [False, True], workers  # one worker on the node about to go
        out = _lose_and_replace(cluster, doomed, driver)
    finally:
        _tear_down(cluster, driver)

    assert driver.returncode == 0, out[-3000:]
    assert "WorkerGroupError" in out or "unavailable" in out  # Ray Train saw the loss
    rows = read_metrics(run / "metrics.csv")
    notes = [r["note"] for r in rows if r.get("note")]
    assert len(notes) == 1 and notes[0].startswith("restored from step "), notes
    restored = int(notes[0].split()[3])
    # at most one checkpoint interval lost: the newest checkpoint before the kill
    assert at_kill - EVERY <= restored <= at_kill, (restored, at_kill)
    assert [r["step"] for r in rows if not r.get("note")] == list(range(0, STEPS + 1, EVERY))
    assert (run / "encoder.pt").exists()


@pytest.mark.timeout(600)
def test_a_sweep_survives_the_loss_of_a_whole_node(small_survey, tmp_path):
    """Two trials at once, one per node; the second node dies mid-sweep and a replacement
    joins. Both trials finish, each logging every step once, and the trial that lost its
    worker resumed from its last checkpoint."""
    import yaml
    from test_tune import TINY, tune_statuses

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    doomed = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    sweep = tmp_path / "sweep.yaml"
    overrides = {**TINY, "steps": 40, "checkpoint_every": 10, "log_every": 10, "eval_every": 40}
    sweep.write_text(
        yaml.safe_dump(
            {
                "overrides": overrides,
                "search": {"temperature": {"grid": [0.1, 0.5]}},
                "scheduler": {"type": "fifo"},
                "max_concurrent_trials": 2,
            }
        )
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.cli", "tune", "--data", str(small_survey)]
    cmd += ["--out", str(out), "--config", str(sweep), "--address", cluster.address]
    driver = _start(cmd)

    def trial_runs() -> list:
        return sorted((out / "sweep").glob("trial_*"))

    try:
        # a trial is past its first checkpoint
        _wait_for(lambda: any(r["step"] >= 15 for t in trial_runs() for r in _logged(t)), driver)
        at_kill = {t.name: max([r["step"] for r in _logged(t)], default=0) for t in trial_runs()}
        output = _lose_and_replace(cluster, doomed, driver)
    finally:
        _tear_down(cluster, driver)

    assert driver.returncode == 0, output[-3000:]
    assert sorted(tune_statuses(out / "sweep").values()) == ["TERMINATED", "TERMINATED"]
    resumed = {}
    for trial in trial_runs():
        rows = read_metrics(trial / "metrics.csv")
        assert [r["step"] for r in rows if not r.get("note")] == [0, 10, 20, 30, 40], trial
        notes = [r["note"] for r in rows if r.get("note")]
        if notes:
            resumed[trial.name] = int(notes[-1].split()[3])
    assert resumed, "no trial lost its worker"  # the killed node held one
    for name, step in resumed.items():  # at most one checkpoint interval lost
        assert at_kill.get(name, 0) - 10 <= step, (name, step, at_kill)
