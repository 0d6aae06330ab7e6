"""Pretraining on a real local Ray cluster: 2 workers (gloo, CPU), one killed mid-run.

One run checks several things, since a Ray Train fit costs ~40 s of fixed overhead here:
the run survives a worker killed by SIGKILL (FailureConfig) and resumes from the last
checkpoint, losing fewer steps than the checkpoint interval; the loss falls once the queue
holds real keys; the exported encoder beats its own random initialisation in kNN photo-z.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import ray  # noqa: E402  (a dependency: fail, never skip, without it)
from conftest import nan_centred_copy
from faults import count_steps, kill_once

from ssl_hpc.augment import survey_stats
from ssl_hpc.config import build
from ssl_hpc.data.survey import Survey
from ssl_hpc.data.synth import SynthConfig, generate_survey
from ssl_hpc.errors import ConfigError, DivergedError
from ssl_hpc.models.checkpoint import EncoderCheckpoint
from ssl_hpc.models.inference import embed
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.evaluate import knn_metrics, load_eval_set
from ssl_hpc.train.metrics_log import read_metrics
from ssl_hpc.train.pretrainer import build_model
from ssl_hpc.train.ray_loop import FAILED_FILE, start_local

STEPS, EVERY, FAULT = 120, 20, 50


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-survey") / "survey"
    generate_survey(
        SynthConfig(n_objects=1536, rows_per_shard=96, image_size=48, seed=7, workers=2), out
    )
    return out


@pytest.fixture(scope="module")
def run(survey, tmp_path_factory):
    from ssl_hpc.train.ray_run import fit

    config = build(
        PretrainConfig,
        {
            "arch": "resnet18",
            "num_workers": 2,
            "cpus_per_worker": 1,
            "batch_size": 16,
            "queue_size": 256,
            "momentum": 0.99,
            "base_lr": 0.3,
            "warmup_steps": 5,
            "steps": STEPS,
            "loader_workers": 0,
            "augment.out_size": 24,
            "augment.max_shift": 4,
            "checkpoint_every": EVERY,
            "log_every": 10,
            "eval_every": 60,
            "eval_objects": 512,
            "max_failures": 2,
        },
    )
    out = tmp_path_factory.mktemp("ray-run") / "run"
    start_local(num_cpus=4)  # as `fit` starts one: the dashboard on, its address given
    try:
        killed = out.parent / f"killed-at-{FAULT}"
        result = fit(config, survey, out, hook=kill_once(FAULT, config.num_workers - 1, killed))
    finally:
        ray.shutdown()
    return config, out, result


def test_run_survives_a_killed_worker_and_loses_at_most_one_interval(run):
    config, out, result = run
    assert result.error is None
    assert result.metrics["step"] == STEPS
    assert (out.parent / f"killed-at-{FAULT}").exists()  # the worker really was killed
    rows = read_metrics(out / "metrics.csv")
    notes = [r for r in rows if r.get("note")]
    assert len(notes) == 1 and notes[0]["note"].startswith("restored from step ")
    restored = int(notes[0]["note"].split()[-1])
    assert 0 < restored <= FAULT and FAULT - restored < EVERY
    # after the resume every logged step appears exactly once
    steps = [r["step"] for r in rows if not r.get("note")]
    assert steps == list(range(0, STEPS + 1, 10))  # step 0: the random-init kNN baseline
    assert all(r["pairs_per_s_total"] > 0 for r in rows if r.get("loss") is not None)


def test_loss_falls_once_the_queue_holds_real_keys(run):
    config, out, _ = run
    rows = [r for r in read_metrics(out / "metrics.csv") if r.get("loss") is not None]
    filled = config.queue_size // config.global_batch  # steps until the queue is all keys
    losses = [r["loss"] for r in rows if r["step"] > filled]
    assert np.mean(losses[-3:]) < max(losses) - 0.2, losses


def test_encoder_beats_its_random_initialisation(run, survey):
    config, out, _ = run
    trained = EncoderCheckpoint(out).encoder()  # weights_only=True inside
    random_init = build_model(config, survey_stats(Survey(survey))).encoder_q.eval()
    eval_set = load_eval_set(Survey(survey), 1536, config.augment.out_size, seed=1)
    before = knn_metrics(embed(random_init, eval_set.images, "cpu"), eval_set, config.eval_k)
    after = knn_metrics(embed(trained, eval_set.images, "cpu"), eval_set, config.eval_k)
    assert after["knn_sigma_mad"] < before["knn_sigma_mad"], (before, after)
    assert after["knn_eta"] < before["knn_eta"], (before, after)
    # the learning curve draws exactly what metrics.csv holds, the step-0 kNN baseline first
    from ssl_hpc.train.export import plot_learning_curve

    drawn = plot_learning_curve(out / "metrics.csv", out / "learning_curve.png")
    rows = [r for r in read_metrics(out / "metrics.csv") if r.get("note") is None]
    assert drawn["loss"] == [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    assert drawn["knn_sigma_mad"][0][0] == 0 and len(drawn["knn_sigma_mad"]) >= 2


def test_relaunching_a_finished_run_resumes_it_and_trains_no_more(run, survey):
    from ssl_hpc.train.ray_run import fit

    config, out, _ = run
    before = (out / "metrics.csv").read_text()
    assert not ray.is_initialized()
    try:
        # no address: fit starts the job's own local cluster, as a batch job does
        result = fit(config, survey, out)  # same RunConfig(storage_path, name): Ray restores
        dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]
        # workers this cluster cannot host are refused, not waited for forever
        with pytest.raises(ConfigError, match="num_workers=16 x cpus_per_worker=1: the Ray"):
            fit(replace(config, num_workers=16), survey, out.parent / "too-big")
        assert not (out.parent / "too-big").exists()
    finally:
        ray.shutdown()
    # another run name into the same directory started afresh and rewrote metrics.csv
    with pytest.raises(ConfigError, match="holds the run pretrain, not other: rerun with"):
        fit(config, survey, out, name="other")
    # kept, costly as it is: Ray Train reads its controller's state through it (ray_loop)
    assert dashboard.startswith("127.0.0.1:")
    assert result.error is None and result.metrics["step"] == STEPS
    assert (out / "metrics.csv").read_text() == before


def test_a_diverged_run_is_not_trained_again_by_ray_retries(run, survey, tmp_path):
    """NaN pixels make the loss NaN; the run stops at its first log step. Ray would restart
    the worker group `max_failures` times, each retraining from the last checkpoint into the
    same NaN: the retry raises the recorded error before it trains a step, and the run
    directory says why it stopped."""
    from ssl_hpc.train.ray_run import fit

    config, _, _ = run
    poisoned = nan_centred_copy(survey, tmp_path / "nan")
    out, steps = tmp_path / "run", tmp_path / "steps"
    config = replace(config, num_workers=1, cpus_per_worker=2, max_failures=1)
    message = f"pretraining on {poisoned} diverged: the loss was not finite at step 1 "
    try:
        with pytest.raises(DivergedError, match=message):
            fit(config, poisoned, out, hook=count_steps(steps))
    finally:
        ray.shutdown()
    # one attempt trained to its first log step; the retry (max_failures=1) trained none
    assert steps.read_text().split("\n")[:-1] == [f"0 {s}" for s in range(1, config.log_every)]
    recorded = json.loads((out / FAILED_FILE).read_text())
    assert recorded["error"] == "ssl_hpc.errors:DivergedError"
    assert recorded["message"].startswith(message)
