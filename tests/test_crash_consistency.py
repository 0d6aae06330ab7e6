"""Kills at any point: synth, ingest (JPEGs and a Multimodal Universe tree), embed (2 MPI
ranks) and `search --all` SIGKILLed (the whole process group) at points spread over their
run, by time, just after a shard's done-record and between a shard's rename and its
done-record (a named kill point, ssl_hpc.utils.faults), then rerun: nothing left behind is
ever taken as complete, and the resumed outputs equal a clean run's bitwise (JSON files
without their run-history keys: wall time, shards reused, rows embedded). Export is killed
mid-write and after its rename; pretraining by time and mid-way through writing a
checkpoint; a Ray Tune sweep and a label-efficiency study (Ray Train runs in sequence)
mid-way through a checkpoint. `bench/faults.py` runs the same with more kill points;
training is compared on what it learnt (encoder.pt, losses, evaluations), a catalogue
without its creation time.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import REPO

from ssl_hpc.utils.faults import ENV as KILL_AT

# bench/faults.py by its path: tests/faults.py (the Ray fault hooks) holds the name
_spec = importlib.util.spec_from_file_location("bench_faults", REPO / "bench" / "faults.py")
crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The jobs' inputs (survey, encoder, embedding set, MMU tree), made once for them all."""
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture
def root(inputs, tmp_path):
    """A job's own directory, its inputs the shared ones."""
    (tmp_path / "inputs").symlink_to(inputs)
    return tmp_path


@pytest.mark.parametrize(
    "job, kills",
    [("synth", 4), ("ingest", 4), ("ingest_mmu", 2), ("embed", 4), ("search_all", 4)],
)
def test_killed_runs_resume_to_the_clean_outputs(job, kills, root):
    result = crash.crash_and_resume(job, root, kills)
    trials = result["trials"]
    assert result["files"] > 10
    for trial in trials:
        assert trial["falsely_complete"] == [], trial
        assert trial["rerun_exit"] == 0, trial
        assert trial["files_differing"] == [], trial
    # the points landed where they test something: before the end, some mid-way through
    assert sum(t["killed"] for t in trials) >= kills - 1
    assert any(0 < t["shards_done_at_kill"] < result["files"] // 2 for t in trials if t["killed"])
    named = [t for t in trials if "kill_at" in t]
    assert len(named) == 1 and named[0]["killed"], trials


def test_killed_export_leaves_the_catalogue_whole_or_absent(root):
    """export (one Parquet file) killed by time, as soon as its temporary appears and just
    after its rename: the final name is absent or holds the whole clean catalogue, and
    the rerun writes the clean catalogue (its creation time aside)."""
    result = crash.crash_and_resume("export", root, kills=4)
    trials = result["trials"]
    assert result["files"] == 1
    for trial in trials:
        assert trial["killed"] and trial["falsely_complete"] == [], trial
        assert trial["rerun_exit"] == 0, trial
        assert "catalogue.parquet" not in trial["files_differing"], trial
    mid_write, renamed = trials[-1], trials[-2]
    assert mid_write["after_temporary"] and mid_write["shards_done_at_kill"] == 0, trials
    assert renamed["after_records"] == 1 and renamed["shards_done_at_kill"] == 1, trials
    # the rerun removes a killed writer's partial temporary: nothing else is left beside it
    assert [f for t in trials for f in t["files_differing"]] == [], trials


def test_killed_pretraining_resumes_to_the_clean_encoder(root):
    """Pretraining (Ray Train, killed with its local Ray cluster) half-way through its run
    and while writing its second checkpoint (files written, not yet sealed): the rerun
    ends with the clean run's encoder.pt, bitwise, and its losses and evaluations, each
    step once."""
    result = crash.crash_and_resume("pretrain", root, kills=2)
    assert result["files"] == 3  # config.yaml, encoder.pt, metrics.csv (without run history)
    for trial in result["trials"]:
        assert trial["killed"] and trial["rerun_exit"] == 0, trial
        assert trial["files_differing"] == [] and trial["staging_left"] == [], trial
    named = result["trials"][-1]
    assert named["kill_at"] == "checkpoint-mid-write:2", result["trials"]
    assert named["shards_done_at_kill"] == 1  # the first checkpoint whole, the second never


def test_a_kill_point_kills_its_command_at_the_named_pass_only():
    """SSL_HPC_KILL_AT=name:3 kills the whole command at the third pass of that point, also
    from a worker in a session of its own (as MPI ranks are); another name, or none,
    changes nothing."""
    worker = "from ssl_hpc.utils.faults import kill_point\nfor i in range(5):\n"
    worker += "    kill_point('shard-before-record')\n    print(i, flush=True)\n"
    command = "import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', sys.argv[1]], "
    command += "start_new_session=True)\ntime.sleep(0.5)\nprint('command done')\n"
    cases = [("shard-before-record:3", -9, "0 1"), ("checkpoint-mid-write", 0, "0 1 2 3 4")]
    for spec, rc, out in [*cases, ("", 0, "0 1 2 3 4")]:
        env = {**os.environ, KILL_AT: spec}
        cmd = [sys.executable, "-c", command, worker]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, start_new_session=True)
        expected = out.split() + (["command", "done"] if rc == 0 else [])
        assert (done.returncode, done.stdout.split()) == (rc, expected), (spec, done.stderr)


#: where each is killed: mid-way through a checkpoint; and for the study also just after
#: its first run's last checkpoint (step 12 of 12), before the driver saves model.pt (the
#: relaunch must report that end again: it once found no metrics and failed)
RAY_POINTS = {
    "tune": [crash.NAMED["tune"]],
    "finetune": [crash.NAMED["finetune"], {"after_records": 3}],
}


@pytest.mark.parametrize("job", sorted(RAY_POINTS))
def test_killed_sweep_and_study_resume_to_the_clean_results(job, root):
    """A 4-trial sweep (2 trials at a time) and a label-efficiency study (2 Ray Train runs
    in turn), each killed with its local Ray cluster: every finished product present at
    the kill was already the clean one, and the rerun ends with the clean run's encoders
    or models, losses, test scores, tables and plots."""
    result = crash.crash_and_resume(job, root, kills=1, points=RAY_POINTS[job])
    for trial in result["trials"]:
        assert trial["killed"] and trial["falsely_complete"] == [], trial
        assert trial["staging_left"] == [], trial  # the killed workers' checkpoint copies
        assert trial["rerun_exit"] == 0 and trial["files_differing"] == [], trial
        assert trial["shards_done_at_kill"] >= 1, trial  # a run's first checkpoint was whole
    products = {"tune": 4 * 3 + 6, "finetune": 2 * 5 + 4}[job]  # see bench/faults.py
    assert result["files"] == products, result
