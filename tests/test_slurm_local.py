"""The Slurm the batch jobs run on (cluster/slurm_local.sh in CI) accepts and runs a job."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

try:  # tests/ as a plain directory (pytest's default rootdir-relative import) ...
    from slurm_util import assert_job_ok, output_tail, require_slurm, sbatch, wait_for_job
except ImportError:  # ... or as a package, should tests/__init__.py appear.
    from .slurm_util import assert_job_ok, output_tail, require_slurm, sbatch, wait_for_job

SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=ssl-hpc-smoke
#SBATCH --ntasks=1
#SBATCH --time=2
set -euo pipefail
echo "smoke token=${SSL_HPC_SMOKE_TOKEN} job=${SLURM_JOB_ID}"
# A job step, as the Ray and MPI job scripts use: srun must work inside the allocation.
srun bash -c 'echo "step task=${SLURM_PROCID} of ${SLURM_NTASKS}"'
"""


@pytest.mark.services
@pytest.mark.timeout(180)
def test_sbatch_job_runs_and_writes_output(tmp_path):
    env = require_slurm()
    # A fresh token, passed through the submission environment (sbatch's default
    # --export=ALL, which slurm/*.sh rely on), proves this job wrote this file.
    token = uuid.uuid4().hex
    env["SSL_HPC_SMOKE_TOKEN"] = token
    script = tmp_path / "smoke.sh"
    script.write_text(SCRIPT)
    out = tmp_path / "smoke-%j.out"

    job_id = sbatch([f"--output={out}", f"--chdir={tmp_path}", str(script)], env=env)
    output = tmp_path / f"smoke-{job_id}.out"
    job = wait_for_job(job_id, env, timeout=60, output=output)

    assert_job_ok(job, output)
    text = output.read_text()
    assert f"smoke token={token} job={job_id}" in text, text
    assert "step task=0 of 1" in text, text


FAILING_HEAD = """\
#!/bin/bash
set -euo pipefail
source "$SSL_HPC_ROOT/cluster/env.sh"
export PATH="$STUB_BIN:$PATH"  # after env.sh's venv: this `ray start` fails as a timed-out head
source "$SSL_HPC_ROOT/cluster/ray_slurm.sh"
ray_slurm_start failing-head
echo "went on without a Ray head"
"""


@pytest.mark.services
@pytest.mark.timeout(180)
def test_a_ray_head_that_fails_to_start_fails_the_job_at_once(tmp_path):
    """Ray's head exits 1 when its raylet misses Ray's fixed 30 s registration window (seen
    in CI on a loaded VM); the job must then end with one line naming the head's node,
    well before the 300 s wait for the cluster runs out."""
    from conftest import REPO

    env = require_slurm()
    stub = tmp_path / "bin" / "ray"
    stub.parent.mkdir()
    stub.write_text(
        "#!/bin/bash\nsleep 2\necho 'Exception: The current node timed out' >&2\nexit 1\n"
    )
    stub.chmod(0o755)
    (tmp_path / "job.sh").write_text(FAILING_HEAD)
    env.update(SSL_HPC_ROOT=str(REPO), STUB_BIN=str(stub.parent))
    output = tmp_path / "job.out"
    job_id = sbatch([f"--output={output}", f"--chdir={tmp_path}", str(tmp_path / "job.sh")], env)
    job = wait_for_job(job_id, env, timeout=150, output=output)
    text = output.read_text()
    assert job.state == "FAILED" and job.exit_code == "1:0", (job.info, text)
    assert "failing-head: error: the Ray head on " in text, text
    assert "exited before the cluster came up" in text and "went on" not in text, text


@pytest.mark.services
@pytest.mark.timeout(300)
def test_sbatch_synth_job_builds_a_verified_survey(tmp_path):
    """slurm/synth.sh, submitted as users do, writes a survey that verifies and reads back."""
    from conftest import REPO

    from ssl_hpc.data.manifest import verify_survey
    from ssl_hpc.data.survey import Survey

    env = require_slurm()
    survey = tmp_path / "survey"
    env.update(
        OUT=str(survey),
        N="64",
        EXTRA="rows_per_shard=32 image_size=32 seed=5",
        SSL_HPC_ROOT=str(REPO),
    )
    output = tmp_path / "synth.out"
    job_id = sbatch(
        [
            f"--output={output}",
            f"--chdir={tmp_path}",
            "--cpus-per-task=1",
            str(REPO / "slurm" / "synth.sh"),
        ],
        env=env,
    )
    job = wait_for_job(job_id, env, timeout=240, output=output)
    assert_job_ok(job, output)
    text = output.read_text()
    assert "verified     every shard matches the manifest (sha256)" in text, text
    assert verify_survey(survey) == []
    s = Survey(survey)
    assert len(s) == 64 and s.manifest.generator["config"]["seed"] == 5


@pytest.mark.services
@pytest.mark.timeout(600)
def test_sbatch_pretrain_runs_ray_train_and_leaves_a_checkpoint(tmp_path, small_survey):
    """slurm/pretrain.sh starts Ray inside the allocation and trains a tiny run on it."""
    import torch
    from conftest import REPO

    from ssl_hpc.models.checkpoint import EncoderCheckpoint
    from ssl_hpc.train.metrics_log import read_metrics

    env = require_slurm()
    run = tmp_path / "run"
    env.update(
        DATA=str(small_survey),
        OUT=str(run),
        CONFIG=str(REPO / "jobs" / "configs" / "pretrain-demo.yaml"),
        EXTRA="steps=6 checkpoint_every=3 log_every=3 eval_every=3 batch_size=16 "
        "queue_size=64 augment.out_size=24 augment.max_shift=4 loader_workers=0 "
        "eval_objects=128",
        SSL_HPC_ROOT=str(REPO),
        SSL_HPC_PROGRESS="0",
    )
    output = tmp_path / "pretrain.out"
    job_id = sbatch(
        [
            f"--output={output}",
            f"--chdir={tmp_path}",
            "--cpus-per-task=2",
            "--time=10",
            str(REPO / "slurm" / "pretrain.sh"),
        ],
        env=env,
    )
    job = wait_for_job(job_id, env, timeout=540, output=output)
    assert_job_ok(job, output)
    text = output.read_text()
    assert "1 Ray node(s) up" in text and "pretrain.sh: done" in text, text[-3000:]
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows] == [0, 3, 6]
    assert rows[-1]["knn_sigma_mad"] is not None and rows[-1]["loss"] > 0
    checkpoints = sorted(p for p in (run / "ray" / "pretrain").glob("checkpoint_*") if p.is_dir())
    assert checkpoints and (checkpoints[-1] / "trainer.pt").exists()
    state = torch.load(checkpoints[-1] / "trainer.pt", weights_only=True)
    assert state["step"] == 6
    encoder = EncoderCheckpoint(run / "encoder.pt").encoder()
    assert encoder(torch.zeros(2, 5, 24, 24)).shape == (2, 512)


@pytest.mark.services
@pytest.mark.timeout(300)
def test_sbatch_embed_runs_two_mpi_ranks(tmp_path, small_survey):
    """slurm/embed.sh launches 2 MPI ranks inside the allocation; the set verifies."""
    from conftest import REPO
    from test_embed import make_checkpoint

    from ssl_hpc.embed import load

    env = require_slurm()
    ckpt = make_checkpoint(tmp_path / "encoder.pt", seed=0)
    out = tmp_path / "emb"
    env.update(
        CKPT=str(ckpt),
        DATA=str(small_survey),
        OUT=str(out),
        EXTRA="--pca 4",
        SSL_HPC_ROOT=str(REPO),
        SSL_HPC_PROGRESS="0",
    )
    output = tmp_path / "embed.out"
    job_id = sbatch(
        [
            f"--output={output}",
            f"--chdir={tmp_path}",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            "--time=5",
            str(REPO / "slurm" / "embed.sh"),
        ],
        env=env,
    )
    job = wait_for_job(job_id, env, timeout=240, output=output)
    assert_job_ok(job, output)
    emb = load(out, verify="full")
    assert len(emb) == 384 and len(emb.manifest["ranks"]) == 2 and emb.pca() is not None


@pytest.mark.services
@pytest.mark.timeout(420)
def test_sbatch_tune_runs_a_sweep_on_the_jobs_ray_cluster(tmp_path, small_survey):
    """slurm/tune.sh starts Ray through the helper pretrain.sh uses and sweeps 2 trials
    on it, 2 at a time (2 CPUs, 0.9 per trial worker)."""
    import csv

    import yaml
    from conftest import REPO
    from test_tune import TINY

    env = require_slurm()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "overrides": {**TINY, "steps": 4},
                "search": {"temperature": {"grid": [0.1, 0.3]}},
                "scheduler": {"type": "fifo"},
            }
        )
    )
    out = tmp_path / "sweep"
    env.update(
        DATA=str(small_survey),
        OUT=str(out),
        CONFIG=str(sweep),
        CPUS_PER_WORKER="0.9",
        SSL_HPC_ROOT=str(REPO),
        SSL_HPC_PROGRESS="0",
    )
    output = tmp_path / "tune.out"
    job_id = sbatch(
        [
            f"--output={output}",
            f"--chdir={tmp_path}",
            "--cpus-per-task=2",
            "--time=10",
            str(REPO / "slurm" / "tune.sh"),
        ],
        env=env,
    )
    job = wait_for_job(job_id, env, timeout=400, output=output)
    assert_job_ok(job, output)
    text = output.read_text()
    assert "tune.sh: 1 Ray node(s) up" in text and "tune.sh: done" in text, text[-3000:]
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["temperature"] for r in rows) == ["0.1", "0.3"]
    assert all(r["status"] == "completed" and r["step"] == "4" for r in rows), rows
    assert (out / "best_config.yaml").exists() and (out / "params.png").exists()


def _poll(what: str, check, timeout: float, job_id: str, env, output) -> None:
    """Wait until `check()` is true; cancel the job and fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=30)
            pytest.fail(f"job {job_id}: no {what} after {timeout:.0f} s\n{output_tail(output, 40)}")
        time.sleep(0.3)


@pytest.mark.services
@pytest.mark.timeout(900)
def test_sbatch_pretrain_requeued_twice_resumes_and_logs_every_step_once(tmp_path, small_survey):
    """A running slurm/pretrain.sh job is preempted twice: first requeued from outside
    (`scontrol requeue`, as a preempting scheduler does), then by its own USR1 trap (the
    time-limit warning `--signal=B:USR1@300` sends to the batch shell, delivered here at
    once with `scancel --signal=USR1 --batch`). Each attempt resumes from the latest
    checkpoint on fresh Ray ports; the run finishes with every logged step exactly once."""
    from conftest import REPO

    from ssl_hpc.train.metrics_log import read_metrics

    env = require_slurm()
    run = tmp_path / "run"
    steps, every = 60, 10
    env.update(
        DATA=str(small_survey),
        OUT=str(run),
        CONFIG=str(REPO / "jobs" / "configs" / "pretrain-demo.yaml"),
        EXTRA=f"steps={steps} checkpoint_every={every} log_every={every} eval_every={steps} "
        "batch_size=32 queue_size=128 augment.out_size=24 augment.max_shift=4 "
        "loader_workers=0 eval_objects=128",
        SSL_HPC_ROOT=str(REPO),
        SSL_HPC_PROGRESS="0",
    )
    output = tmp_path / "pretrain.out"
    job_id = sbatch(
        [f"--output={output}", f"--chdir={tmp_path}", "--cpus-per-task=2", "--time=15"]
        + [str(REPO / "slurm" / "pretrain.sh")],
        env=env,
    )

    def logged_past(step: int):
        def check() -> bool:
            try:
                rows = read_metrics(run / "metrics.csv")
                return any(r["step"] >= step for r in rows if not r.get("note"))
            except (OSError, ValueError, KeyError):
                return False

        return check

    def notes() -> list[str]:
        try:
            return [r["note"] for r in read_metrics(run / "metrics.csv") if r.get("note")]
        except (OSError, ValueError, KeyError):
            return []

    def text() -> str:
        return output.read_text(errors="replace") if output.exists() else ""

    _poll("logged step 20", logged_past(20), 300, job_id, env, output)
    requeue = subprocess.run(["scontrol", "requeue", job_id], env=env, capture_output=True)
    assert requeue.returncode == 0, requeue.stderr
    _poll("resumed attempt", lambda: len(notes()) == 1, 300, job_id, env, output)
    _poll("logged step 40", logged_past(40), 300, job_id, env, output)
    usr1 = subprocess.run(
        ["scancel", "--signal=USR1", "--batch", job_id], env=env, capture_output=True
    )
    assert usr1.returncode == 0, usr1.stderr
    job = wait_for_job(job_id, env, timeout=400, output=output)
    assert_job_ok(job, output)

    log = text()
    assert "Restarts=2" in job.info, job.info
    assert f"pretrain.sh: USR1 (time limit near, or preemption): requeue job {job_id}" in log
    # a kill during a checkpoint's copy leaves it damaged: passed over, and the note says so
    resumed = [int(re.match(r"restored from step (\d+)", n).group(1)) for n in notes()]
    assert len(resumed) == 2 and every <= resumed[0] < resumed[1] < steps, notes()
    heads = re.findall(r"Ray head \S+ \((\S+)\)", log)
    assert len(heads) == 3 and len(set(heads)) == 3, heads  # each attempt on its own ports
    rows = read_metrics(run / "metrics.csv")
    logged = [r["step"] for r in rows if not r.get("note")]
    assert logged == list(range(0, steps + 1, every)), logged  # every step once, in order
    assert log.count("pretrain.sh: done") == 1
