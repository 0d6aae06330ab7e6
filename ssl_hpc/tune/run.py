"""Run (or resume) a sweep on Ray Tune: one Ray Train pretraining run per trial.

Each trial is a small Tune driver (0.1 CPU) that fits a `TorchTrainer` into its own trial
directory with the pretraining loop of `ssl_hpc.train.ray_run`; Tune's
`TuneReportCallback` forwards every report of rank 0 (loss and the latest kNN evaluation)
to Tune, so ASHA can stop a poor trial at a rung. Faults are handled at both levels: a
dead worker restarts from the trial's latest checkpoint (Train's FailureConfig,
`max_failures` of the pretraining config), a failed trial driver is retried (Tune's
FailureConfig, the sweep's `max_failures`). Running the same command again after an
interruption restores the experiment: finished trials keep their results and are not
rerun, unfinished ones continue from their own latest checkpoint; errored ones stay errored
(fix the cause and sweep into a new directory to retry them).

On a multi-node cluster `out` must be on a file system every node sees (trial drivers and
workers run anywhere). Layout of `out`: sweep.yaml (the resolved sweep; a rerun must match
it), sweep-survey.json (the survey, by content: a rerun must be on the same one), <name>/
(Tune's experiment: one trial_<id>/ per trial holding config.yaml, survey.json,
metrics.csv, attempts.jsonl, Ray Train checkpoints and encoder.pt, or failed.json), and
the report (`report.write_report`).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import yaml

from ..config import claim_file
from ..errors import ConfigError
from ..train.config import PretrainConfig
from ..train.ray_loop import FAILED_FILE, connect, recorded_error
from ..train.ray_run import fit
from ..train.run_dir import claim_survey
from .space import SweepConfig

DRIVER_CPUS = 0.1  # a trial driver only waits on its TorchTrainer
ATTEMPTS_FILE = "attempts.jsonl"
SURVEY_CLAIM = "sweep-survey.json"


def trial_dir(experiment: Path, trial_id: str) -> Path:
    """A trial's directory in the experiment (Tune's `trial_dirname_creator` names it too)."""
    return experiment / f"trial_{trial_id}"


def run_trial(params: dict, survey: str, sweep_config: SweepConfig, experiment: str) -> None:
    """The Tune function trainable: pretrain with `params`, reporting to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    config = sweep_config.trial_config(params)
    # Not tune.get_context().get_trial_dir(): that is a staging directory in Ray's session
    # temp, gone after a restart, and the run must resume from its checkpoints there.
    out = trial_dir(Path(experiment), tune.get_context().get_trial_id())
    out.mkdir(parents=True, exist_ok=True)
    recorded = recorded_error(out / FAILED_FILE)
    if recorded is not None:  # Tune retrying a trial that stopped on bad input
        raise recorded  # (a relaunch never restarts errored ones)
    record_attempt(out, "start")
    result = fit(config, survey, out, name="train", callbacks=[TuneReportCallback()])
    record_attempt(out, "end", error=None if result.error is None else str(result.error))
    if result.error is not None:  # Tune records the trial as errored (and may retry it)
        raise result.error


def record_attempt(directory: Path, event: str, **fields) -> None:
    """Append one event of this trial driver (start, end) to attempts.jsonl: how often a
    trial was started and how long each attempt took. A trial the scheduler stops early,
    or one killed with its sweep, has a start without an end."""
    line = json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **fields})
    with open(directory / ATTEMPTS_FILE, "a") as f:
        f.write(line + "\n")


def read_attempts(directory: Path) -> list[dict]:
    """The events of attempts.jsonl, oldest first ([] if the trial never started)."""
    path = Path(directory) / ATTEMPTS_FILE
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return events


def max_concurrent(config: PretrainConfig, resources: dict[str, float]) -> int:
    """Trials that fit the cluster at once: GPUs / GPUs per trial on GPU clusters, else
    CPUs / CPUs per trial (workers x cpus_per_worker plus the driver's share)."""
    per_trial_cpus = config.num_workers * config.cpus_per_worker + DRIVER_CPUS
    fit = math.floor(resources.get("CPU", 0) / per_trial_cpus + 1e-9)
    if config.use_gpu:
        fit = min(fit, math.floor(resources.get("GPU", 0) / config.num_workers))
    if fit < 1:
        need = f"{per_trial_cpus:g} CPUs" + (
            f" and {config.num_workers} GPUs" if config.use_gpu else ""
        )
        raise ConfigError(
            f"one trial needs {need} (num_workers={config.num_workers}, cpus_per_worker="
            f"{config.cpus_per_worker}); the Ray cluster has {resources.get('CPU', 0):g} "
            f"CPUs and {resources.get('GPU', 0):g} GPUs"
        )
    return fit


def sweep(
    sweep_config: SweepConfig,
    survey: str | os.PathLike,
    out: str | os.PathLike,
    address: str | None = None,
    name: str = "sweep",
):
    """Run or resume the sweep into `out`; returns Tune's ResultGrid (report not written)."""
    import ray
    from ray import tune

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    claim_file(out / "sweep.yaml", yaml.safe_dump(sweep_config.to_dict(), sort_keys=False), "sweep")
    claim_survey(out / SURVEY_CLAIM, survey)  # a rerun on another survey would report this one
    connect(address)
    base = sweep_config.base_config
    concurrent = sweep_config.max_concurrent_trials or max_concurrent(base, ray.cluster_resources())
    experiment = out / name
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            survey=str(Path(survey).resolve()),
            sweep_config=sweep_config,
            experiment=str(experiment),
        ),
        {"cpu": DRIVER_CPUS},
    )
    if tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(
            str(experiment),
            trainable=trainable,
            param_space=sweep_config.param_space(),
            resume_unfinished=True,
            # Errored trials stay errored (Tune retried each `max_failures` times already):
            # restarted, they would all start at once, past max_concurrent_trials, which
            # limits only the trials the search generates.
            resume_errored=False,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=sweep_config.param_space(),
            tune_config=tune.TuneConfig(
                metric=sweep_config.metric,
                mode=sweep_config.mode,
                scheduler=_scheduler(sweep_config, base.steps),
                num_samples=sweep_config.num_samples,
                max_concurrent_trials=concurrent,
                trial_dirname_creator=lambda trial: trial_dir(Path(), trial.trial_id).name,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(out),
                failure_config=tune.FailureConfig(max_failures=sweep_config.max_failures),
                verbose=1,
            ),
        )
    return tuner.fit()


def _scheduler(sweep_config: SweepConfig, max_steps: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = sweep_config.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="step",
        max_t=max_steps,
        grace_period=min(s.grace_period, max_steps),
        reduction_factor=s.reduction_factor,
        stop_last_trials=False,  # else a trial reaching max_t is killed before its export
    )
