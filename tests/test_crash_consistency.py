"""Kills at any point: synth, ingest (JPEGs and a Multimodal Universe tree), embed (2 MPI
ranks) and `search --all` SIGKILLed (the whole process group) at points spread over their
run, by time, just after a shard's done-record and between a shard's rename and its
done-record (a named kill point, ssl_hpc.utils.faults), then rerun: nothing left behind is
ever taken as complete, and the resumed outputs equal a clean run's bitwise (JSON files
without their run-history keys: wall time, shards reused, rows embedded). Export is killed
mid-write and after its rename; pretraining by time and mid-way through writing a
checkpoint; a label-efficiency study (Ray Train runs in sequence) after a run's last
checkpoint. `bench/faults.py` runs the same with more kill points, and a Ray Tune sweep
(its comparison is checked here); training is compared on what it learnt (encoder.pt,
losses, evaluations), a catalogue without its creation time.
"""

from __future__ import annotations

import importlib.util
import json
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
    """Pretraining (Ray Train, killed with its local Ray cluster) while writing its second
    checkpoint (files written, not yet sealed): the rerun ends with the clean run's
    encoder.pt, bitwise, and its losses and evaluations, each step once. (Kills spread over
    the run's time and checkpoints are bench/faults.py's: each costs two Ray launches.)"""
    named = crash.NAMED["pretrain"]
    result = crash.crash_and_resume("pretrain", root, kills=1, points=[named])
    # config.yaml, survey.json, encoder.pt, metrics.csv (without run history)
    assert result["files"] == 4
    [trial] = result["trials"]
    assert trial["killed"] and trial["rerun_exit"] == 0, trial
    assert trial["files_differing"] == [] and trial["staging_left"] == [], trial
    assert trial["kill_at"] == "checkpoint-mid-write:2", trial
    assert trial["shards_done_at_kill"] == 1  # the first checkpoint whole, the second never


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


def test_killed_study_resumes_to_the_clean_results(root):
    """The label-efficiency study (linear probes, then a Ray Train run: fine-tuning) killed
    with its local Ray cluster just after the run's last checkpoint (step 12 of 12),
    before the driver saves model.pt: the relaunch reports that end again (it once found
    no test metrics and the study died), and the rerun ends with the clean run's model,
    predictions, scores and plots, leaving no checkpoint staging behind. (Killed
    mid-checkpoint, with both trained methods, and the sweep, in bench/faults.py: the same
    sealed checkpoints as pretraining's, whose named point CI kills above.)"""
    point = {"after_records": 3}
    result = crash.crash_and_resume("finetune", root, 1, [point], methods="finetuned_ssl")
    [trial] = result["trials"]
    assert trial["killed"] and trial["falsely_complete"] == [], trial
    assert trial["staging_left"] == [], trial  # the killed workers' checkpoint copies
    assert trial["rerun_exit"] == 0 and trial["files_differing"] == [], trial
    # The kill fires when the third checkpoint appears; Ray then prunes the oldest (the
    # study keeps 2), and the SIGKILL may land on either side of that deletion.
    assert trial["shards_done_at_kill"] in (2, 3), trial
    assert result["files"] == 6 + 4, result  # the run's 6 and the study's 4 (bench/faults.py)


def test_a_sweep_is_compared_by_trial_index_without_its_run_history(tmp_path):
    """Two sweeps that learnt the same differ in Tune's experiment id, wall times and
    attempt counts: the harness sees them equal, and sees a changed encoder or loss."""

    def sweep(root, experiment, seconds, encoder=b"weights"):
        for i in range(2):
            trial = root / "sweep" / f"trial_{experiment}_{i:05d}"
            trial.mkdir(parents=True)
            (trial / "encoder.pt").write_bytes(encoder + bytes([i]))
            (trial / "metrics.csv").write_text("step,loss,pairs_per_s_worker,note\n2,3.5,77.0,\n")
            (trial / "result.json").write_text(f'{{"time_total_s": {seconds}}}')
        rows = [f"{i + 1},{experiment}_{i:05d},{seconds},1,{trial}/encoder.pt" for i in range(2)]
        (root / "trials.csv").write_text("rank,trial,time_s,attempts,encoder\n" + "\n".join(rows))
        summary = {"this_run_wall_s": seconds, "best": {"trial": f"{experiment}_00000"}}
        (root / "summary.json").write_text(json.dumps(summary))
        (root / "best_config.yaml").write_text(f"# best: trial {experiment}_00000\nsteps: 8\n")
        return crash.tree(root)

    first = sweep(tmp_path / "a", "a6302", 21.5)
    assert sweep(tmp_path / "b", "9fa92", 30.1) == first
    assert "sweep/trial_00001/encoder.pt" in first and len(first) == 7
    changed = sweep(tmp_path / "c", "9fa92", 30.1, encoder=b"other")
    assert {k for k in first if first[k] != changed[k]} == {
        "sweep/trial_00000/encoder.pt",
        "sweep/trial_00001/encoder.pt",
    }
