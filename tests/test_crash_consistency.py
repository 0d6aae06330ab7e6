"""Kills at any point: synth, ingest, embed (2 MPI ranks) and `search --all` SIGKILLed
(the whole process group) at points spread over their run, by time and just after a
shard's done-record, then rerun: nothing left behind is ever taken as complete, and the
resumed outputs equal a clean run's bitwise (JSON files without their run-history keys:
wall time, shards reused, rows embedded). `bench/faults.py` runs the same with more kill
points; pretraining is compared on what it learnt (encoder.pt, losses, evaluations)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO

# bench/faults.py by its path: tests/faults.py (the Ray fault hooks) holds the name
_spec = importlib.util.spec_from_file_location("bench_faults", REPO / "bench" / "faults.py")
crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash)


@pytest.mark.parametrize("job", ["synth", "ingest", "embed", "search_all"])
def test_killed_runs_resume_to_the_clean_outputs(job, tmp_path):
    result = crash.crash_and_resume(job, tmp_path, kills=4)
    trials = result["trials"]
    assert result["files"] > 10
    for trial in trials:
        assert trial["falsely_complete"] == [], trial
        assert trial["rerun_exit"] == 0, trial
        assert trial["files_differing"] == [], trial
    # the points landed where they test something: before the end, some mid-way through
    assert sum(t["killed"] for t in trials) >= 3
    assert any(0 < t["shards_done_at_kill"] < result["files"] // 2 for t in trials if t["killed"])


def test_killed_pretraining_resumes_to_the_clean_encoder(tmp_path):
    """Pretraining (Ray Train, killed with its local Ray cluster) half-way through its run
    and just after its first checkpoint: the rerun ends with the clean run's encoder.pt,
    bitwise, and its losses and evaluations, each step once."""
    result = crash.crash_and_resume("pretrain", tmp_path, kills=2)
    assert result["files"] == 3  # config.yaml, encoder.pt, metrics.csv (without run history)
    for trial in result["trials"]:
        assert trial["killed"] and trial["rerun_exit"] == 0, trial
        assert trial["files_differing"] == [], trial
    assert any(t["shards_done_at_kill"] > 0 for t in result["trials"])  # one resumed
