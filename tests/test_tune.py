"""Sweeps: the search-space file and its errors, the ablation generator, the report, and a
real Ray Tune sweep on a local cluster that is killed mid-way and resumed.

The Ray sweep runs the command line twice (a Tune-over-Train sweep costs ~20 s per tiny
trial here), and one run checks everything that needs Ray: 4 trials, 2 at a time, a kill
after the first trial finished, a resume that does not start finished trials again, the
ranked table, the best config, the plots, and the per-evaluation reports a scheduler reads.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import drawn_png

from jobs.cli import main
from ssl_hpc.config import load_config
from ssl_hpc.data.synth import SynthConfig, generate_survey
from ssl_hpc.errors import ConfigError
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.run_dir import claim_survey
from ssl_hpc.tune.report import STATUS_CUT, STATUS_DONE, ablation_table, write_report
from ssl_hpc.tune.run import SURVEY_CLAIM, max_concurrent, read_attempts
from ssl_hpc.tune.space import ablation_subsets, parse_sweep, subset_label

REPO = Path(__file__).resolve().parents[1]

#: A pretraining run that takes ~10 s on one CPU: 8 steps, evaluated every 4.
TINY = {
    "arch": "resnet18",
    "num_workers": 1,
    "cpus_per_worker": 0.9,
    "batch_size": 16,
    "queue_size": 64,
    "momentum": 0.99,
    "base_lr": 0.3,
    "warmup_steps": 2,
    "steps": 8,
    "loader_workers": 0,
    "augment": {"out_size": 24, "max_shift": 4},
    "checkpoint_every": 4,
    "log_every": 2,
    "eval_every": 4,
    "eval_objects": 128,
}


def sweep_file(tmp_path: Path, **extra) -> Path:
    raw = {"overrides": TINY, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# -- the ablation generator ---------------------------------------------------------------


def test_ablation_subsets_leave_one_out_and_only_one():
    subsets = ablation_subsets(["RR", "JC", "GN"], ["all", "leave_one_out", "only_one", "none"])
    assert subsets == [
        "RR,JC,GN",
        "JC,GN",
        "RR,GN",
        "RR,JC",
        "RR",
        "JC",
        "GN",
        "none",
    ]
    # explicit sets join them; duplicates (here RR,JC and "jc+rr") appear once
    assert ablation_subsets(["RR", "JC"], ["all"], sets=[["JC", "RR"], "gn"]) == ["RR,JC", "GN"]
    full = ("RR", "JC", "GN")
    labels = [subset_label(s, full) for s in subsets]
    assert labels == ["all", "no RR", "no JC", "no GN", "RR only", "JC only", "GN only", "none"]


def test_ablation_rejects_unknown_codes_and_kinds():
    with pytest.raises(ConfigError, match="'XX' unknown"):
        ablation_subsets(["RR", "XX"])
    with pytest.raises(ConfigError, match="'leave_two_out' unknown"):
        ablation_subsets(["RR", "JC"], ["leave_two_out"])


# -- the sweep file -----------------------------------------------------------------------


def test_sweep_file_builds_a_tune_space_and_valid_trials(tmp_path):
    path = sweep_file(
        tmp_path,
        search={"temperature": {"grid": [0.1, 0.5]}, "base_lr": {"loguniform": [0.01, 0.3]}},
        ablation={"codes": ["RR", "GN"], "subsets": ["all", "only_one"]},
        num_samples=3,
    )
    from ssl_hpc.tune import load_sweep

    sweep = load_sweep(path)
    assert sweep.metric == "knn_sigma_mad" and sweep.mode == "min"
    assert sweep.n_grid() == 2 * 3 and sweep.num_samples == 3
    space = sweep.param_space()
    assert space["temperature"] == {"grid_search": [0.1, 0.5]}
    assert space["augment.codes"] == {"grid_search": ["RR,GN", "RR", "GN"]}
    assert (space["base_lr"].lower, space["base_lr"].upper) == (0.01, 0.3)
    trial = sweep.trial_config({"temperature": 0.5, "augment.codes": "GN", "base_lr": 0.02})
    assert trial.temperature == 0.5 and trial.augment.codes == ("GN",)
    assert trial.base_lr == 0.02 and trial.steps == TINY["steps"]
    # accuracy metrics are maximised unless told otherwise
    assert parse_sweep({"overrides": TINY, "metric": "knn_morph_acc"}).mode == "max"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"serach": {}}, r"unknown key\(s\) \['serach'\]"),
        ({"search": {"temprature": {"grid": [0.1]}}}, "search.temprature: not a PretrainConfig"),
        ({"search": {"temperature": {"gird": [0.1]}}}, "domain 'gird' unknown"),
        ({"search": {"temperature": [0.1, 0.2]}}, "expected one domain"),
        ({"search": {"temperature": {"grid": []}}}, "needs a non-empty list"),
        ({"search": {"base_lr": {"uniform": [0.3, 0.1]}}}, r"range \[0.3, 0.1\] is empty"),
        ({"search": {"base_lr": {"loguniform": [0, 0.1]}}}, "loguniform needs low > 0"),
        ({"search": {"base_lr": {"uniform": [0.1]}}}, r"needs \[low, high\]"),
        # a value the pretraining config refuses is named with its key
        ({"search": {"temperature": {"grid": [0.1, -1.0]}}}, "temperature=-1.0"),
        # a combination: the queue is no multiple of the global batch (batch_size 16 x 2)
        (
            {"search": {"queue_size": {"grid": [64, 80]}, "num_workers": {"grid": [1, 2]}}},
            "queue_size=80, num_workers=2",
        ),
        (
            {"search": {"augment.codes": {"grid": [["RR"]]}}, "ablation": {"codes": ["RR"]}},
            "not both",
        ),
        ({"ablation": {"codes": ["RR", "ZZ"]}}, "'ZZ' unknown"),
        ({"ablation": {"codes": ["RR"], "subsets": []}}, "the sweep has no trials"),
        ({"metric": "accuracy"}, "metric 'accuracy' unknown"),
        ({"mode": "best"}, "mode 'best'"),
        ({"scheduler": {"type": "hyperband"}}, "scheduler.type='hyperband'"),
        ({"scheduler": {"type": "asha", "grace": 3}}, r"unknown key\(s\) \['grace'\]"),
        ({"num_samples": 0}, "num_samples=0"),
        ({"search": [{"temperature": {"grid": [0.1]}}]}, "search: expected a mapping"),
        ({"search": {"base_lr": {"uniform": [0.1, float("inf")]}}}, "needs finite ends"),
        ({"search": {"queue_size": {"uniform": [64, 128]}}}, "queue_size is an integer"),
        # both ends are multiples of the global batch (16), the values between mostly not
        ({"search": {"queue_size": {"randint": [64, 128]}}}, "queue_size=65"),
        ({"search": {"augment": {"grid": [1]}}}, "augment: expected a mapping"),
    ],
)
def test_bad_sweep_files_name_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep({"overrides": TINY, **raw}, "my-sweep.yaml")


def test_bad_sweep_fails_on_the_command_line_before_anything_is_written(
    tmp_path, small_survey, capsys
):
    path = sweep_file(tmp_path, search={"temperature": {"grid": [0.1, 0.0]}})
    out = tmp_path / "out"
    rc = main(["tune", "--data", str(small_survey), "--out", str(out), "--config", str(path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(path) in err and "temperature=0.0" in err
    assert not out.exists()
    rc = main(["tune", "--data", str(small_survey), "--out", str(out), "--config", "no.yaml"])
    assert rc == 2 and "no.yaml: sweep file not found" in capsys.readouterr().err
    # a mistyped key=value is the command line's, not the file's
    path = sweep_file(tmp_path, search={"temperature": {"grid": [0.1]}})
    cmd = ["tune", "--data", str(small_survey), "--out", str(out), "--config", str(path)]
    rc = main([*cmd, "stepz=3"])
    err = capsys.readouterr().err
    assert rc == 2 and "key=value: unknown key(s) ['stepz']" in err and str(path) not in err
    assert not out.exists()
    # a sweep directory of another survey: refused before Ray starts, not reported as done
    other = tmp_path / "other"
    generate_survey(SynthConfig(n_objects=40, rows_per_shard=40, image_size=48, seed=3), other)
    out.mkdir()
    claim_survey(out / SURVEY_CLAIM, other)
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert f"{out} holds a run on survey" in err and f"not {small_survey}" in err


def test_trials_at_once_follow_the_cluster():
    cpu = load_config(PretrainConfig, None, ["num_workers=2", "cpus_per_worker=0.9"])
    assert max_concurrent(cpu, {"CPU": 8}) == 4  # 2 x 0.9 + 0.1 driver = 1.9 CPUs a trial
    gpu = load_config(PretrainConfig, None, ["num_workers=2", "use_gpu=true", "cpus_per_worker=4"])
    assert max_concurrent(gpu, {"CPU": 64, "GPU": 8}) == 4  # GPUs / GPUs per trial
    assert max_concurrent(gpu, {"CPU": 16, "GPU": 8}) == 1  # here CPUs are short
    with pytest.raises(ConfigError, match="one trial needs 8.1 CPUs and 2 GPUs"):
        max_concurrent(gpu, {"CPU": 64, "GPU": 1})


# -- the report, from trial rows ------------------------------------------------------------


def test_ablation_table_and_report_files(tmp_path):
    sweep = parse_sweep(
        {
            "overrides": TINY,
            "ablation": {"codes": ["RR", "GN"], "subsets": ["all", "only_one"]},
            "search": {"temperature": {"grid": [0.1, 0.5]}},
        }
    )
    rows = []
    scores = {
        ("RR,GN", 0.1): 0.030,
        ("RR,GN", 0.5): 0.034,
        ("RR", 0.1): 0.040,
        ("RR", 0.5): 0.044,
        ("GN", 0.1): 0.050,
        ("GN", 0.5): None,
    }
    for i, ((codes, t), score) in enumerate(scores.items()):
        rows.append(
            {
                "rank": i + 1,
                "trial": f"t{i}",
                "augment.codes": codes,
                "temperature": t,
                "status": STATUS_DONE if score else STATUS_CUT,
                "step": 8 if score else 4,
                "knn_sigma_mad": score,
                "random_init": 0.05,
                "time_s": 10.0 + i,
            }
        )
    table = {t["subset"]: t for t in ablation_table(rows, sweep)}
    assert list(table) == ["all", "RR only", "GN only"]
    assert table["all"]["mean"] == pytest.approx(0.032)
    assert table["all"]["std"] == pytest.approx(0.004 / math.sqrt(2))
    assert table["RR only"]["minus_all"] == pytest.approx(0.010)
    assert table["GN only"]["n"] == 1 and table["GN only"]["std"] is None  # the cut one is out
    summary = write_report(rows, sweep, tmp_path, wall_s=60.0)
    assert summary["best"]["trial"] == "t0" and summary["trial_time_s_median"] == 12.5
    assert summary["status"] == {STATUS_DONE: 5, STATUS_CUT: 1, "error": 0}
    with open(tmp_path / "trials.csv") as f:
        table_rows = list(csv.DictReader(f))
    assert [r["trial"] for r in table_rows] == [f"t{i}" for i in range(6)]
    best = load_config(PretrainConfig, tmp_path / "best_config.yaml", [])
    assert best.temperature == 0.1 and best.augment.codes == ("RR", "GN")
    drawn_png(tmp_path / "ablation.png")
    drawn_png(tmp_path / "params.png")
    assert "| all | RR,GN | 2 | 0.032 |" in (tmp_path / "trials.md").read_text()
    # a perfect score of 0 (no outliers, metric knn_eta) is the best, not skipped as falsy
    rows[0]["knn_sigma_mad"] = 0.0
    assert write_report(rows, sweep, tmp_path, wall_s=60.0)["best"]["trial"] == "t0"


# -- a real sweep on a local Ray cluster, killed and resumed --------------------------------


def tune_statuses(experiment: Path) -> dict[str, str]:
    """trial id -> status in Tune's latest saved experiment state ({} before the first)."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # being rewritten: ask again
        return {}
    out = {}
    for trial_json, _ in data["trial_data"]:
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = trial["status"]
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def resumed_sweep(tmp_path_factory, small_survey):
    tmp = tmp_path_factory.mktemp("sweep")
    path = sweep_file(
        tmp,
        search={"temperature": {"grid": [0.1, 0.5]}},
        ablation={"codes": ["RR", "GN"], "subsets": ["all"], "sets": [["RR"]]},
        scheduler={"type": "fifo"},
        max_concurrent_trials=2,
    )
    out = tmp / "out"
    cmd = [
        sys.executable,
        "-m",
        "jobs.cli",
        "tune",
        "--data",
        str(small_survey),
        "--out",
        str(out),
        "--config",
        str(path),
    ]
    env = {**os.environ, "SSL_HPC_PROGRESS": "0"}
    log = open(tmp / "first.log", "w")  # noqa: SIM115  (the child writes it until killed)
    first = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.time() + 400
    statuses: dict[str, str] = {}
    try:
        while time.time() < deadline and first.poll() is None:
            statuses = tune_statuses(out / "sweep")
            if "TERMINATED" in statuses.values():
                break
            time.sleep(0.5)
    finally:  # kill the driver and with it its local Ray cluster, as a lost node would
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()
    assert "TERMINATED" in statuses.values(), (tmp / "first.log").read_text()[-3000:]
    assert list(statuses.values()).count("TERMINATED") < 4, "finished before the kill"
    before = {t: read_attempts(out / "sweep" / f"trial_{t}") for t in statuses}
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return out, statuses, before, second.stdout


def test_killed_sweep_resumes_without_restarting_finished_trials(resumed_sweep):
    out, at_kill, before, _ = resumed_sweep
    trials = {p.name.removeprefix("trial_"): p for p in (out / "sweep").glob("trial_*")}
    assert len(trials) == 4
    for trial, path in trials.items():
        starts = sum(e["event"] == "start" for e in read_attempts(path))
        if at_kill.get(trial) == "TERMINATED":
            assert starts == 1, trial  # Tune knew it had finished: never started again
        elif before.get(trial):
            assert starts == 2, trial  # interrupted: started once more, from its checkpoint
        else:
            assert starts == 1, trial  # not begun at the kill
        # whatever happened, every logged step appears once, in order
        with open(path / "metrics.csv") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f) if not r["note"]]
        assert steps == [0, 2, 4, 6, 8], (trial, steps)
        assert (path / "encoder.pt").exists()


def test_two_trials_ran_at_a_time(resumed_sweep):
    out, *_ = resumed_sweep
    intervals = []
    for path in (out / "sweep").glob("trial_*"):
        events = read_attempts(path)
        starts = [e["time"] for e in events if e["event"] == "start"]
        ends = [e["time"] for e in events if e["event"] == "end"]
        intervals.append((starts[-1], ends[-1]))  # the attempt that finished
    assert max_overlap(intervals) == 2


def test_every_evaluation_reaches_tune_for_its_scheduler(resumed_sweep):
    out, *_ = resumed_sweep
    for path in (out / "sweep").glob("trial_*"):
        with open(path / "result.json") as f:
            results = [json.loads(line) for line in f if line.strip()]
        evaluated = {r["step"]: r["knn_sigma_mad"] for r in results if "knn_sigma_mad" in r}
        assert 8 in evaluated and all(v > 0 for v in evaluated.values())
        if sum(e["event"] == "start" for e in read_attempts(path)) == 1:
            assert set(evaluated) == {4, 8}  # each evaluation, as made
        assert all(r["eval_step"] == r["step"] for r in results)


def test_sweep_writes_a_ranked_table_best_config_and_plots(resumed_sweep):
    out, _, _, stdout = resumed_sweep
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert all(r["status"] == STATUS_DONE and r["step"] == "8" for r in rows)
    scores = [float(r["knn_sigma_mad"]) for r in rows]
    assert scores == sorted(scores) and all(0 < s < 1 for s in scores)
    assert {(r["temperature"], r["augment.codes"]) for r in rows} == {
        ("0.1", "RR,GN"),
        ("0.5", "RR,GN"),
        ("0.1", "RR"),
        ("0.5", "RR"),
    }
    best = load_config(PretrainConfig, out / "best_config.yaml", [])
    assert best.temperature == float(rows[0]["temperature"])
    assert ",".join(best.augment.codes) == rows[0]["augment.codes"]
    assert best.steps == TINY["steps"] and best.queue_size == TINY["queue_size"]
    summary = json.loads((out / "summary.json").read_text())
    assert [(a["subset"], a["n"]) for a in summary["ablation"]] == [("all", 2), ("RR only", 2)]
    drawn_png(out / "ablation.png")
    drawn_png(out / "params.png")
    assert f"best: trial {rows[0]['trial']}" in stdout
