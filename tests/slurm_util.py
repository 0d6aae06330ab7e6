"""Helpers for tests that submit real Slurm jobs (see cluster/slurm_local.sh).

A test calls :func:`require_slurm` first: it returns the environment to run Slurm clients
with, or skips the test (fails it when ``SSL_HPC_REQUIRE_SERVICES=1``, as in CI). Then
:func:`sbatch` submits and :func:`wait_for_job` polls until the job has left the queue.

Slurm is used only when ``SLURM_CONF`` is set or the development cluster's config exists
under ``${SSL_HPC_SLURM_DIR:-/tmp/ssl-hpc-slurm}``: the tests never submit to a site's
default cluster by accident.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Node states in which a node can run a job (sinfo's %T, without its *~#% suffixes).
USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing", "planned"}

#: Job states after which a job will not run again.
TERMINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}


def services_required() -> bool:
    """True when missing services must fail tests instead of skipping them (CI)."""
    return os.environ.get("SSL_HPC_REQUIRE_SERVICES", "") == "1"


def slurm_env() -> tuple[dict[str, str] | None, str]:
    """The environment for Slurm client commands, or ``(None, reason)`` when unusable."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return None, "sbatch/sinfo not on PATH (run: make services)"
    env = dict(os.environ)
    conf = env.get("SLURM_CONF")
    if not conf:
        local = Path(os.environ.get("SSL_HPC_SLURM_DIR", "/tmp/ssl-hpc-slurm")) / "slurm.conf"
        if not local.is_file():
            return None, (
                "SLURM_CONF is not set and no local cluster config at "
                f"{local} (run: cluster/slurm_local.sh start; source its env.sh)"
            )
        conf = env["SLURM_CONF"] = str(local)
    if not Path(conf).is_file():
        return None, f"SLURM_CONF={conf} does not exist"
    try:
        p = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return None, f"sinfo timed out (SLURM_CONF={conf})"
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        return None, f"sinfo failed (SLURM_CONF={conf}): {msg[-1] if msg else p.returncode}"
    states = {s.strip().rstrip("*~#%$@^-!") for s in p.stdout.split()}
    if not states & USABLE_NODE_STATES:
        return None, f"no Slurm node is up (SLURM_CONF={conf}, node states: {sorted(states)})"
    return env, ""


def require_slurm() -> dict[str, str]:
    """Environment for Slurm clients; skips the test (or fails it, in CI) without Slurm."""
    env, reason = slurm_env()
    if env is None:
        if services_required():
            pytest.fail(f"Slurm unavailable but SSL_HPC_REQUIRE_SERVICES=1: {reason}")
        pytest.skip(f"Slurm unavailable: {reason}")
    return env


def sbatch(args: list[str], env: dict[str, str], cwd: str | os.PathLike | None = None) -> str:
    """Run ``sbatch --parsable ARGS`` and return the job id."""
    p = subprocess.run(
        ["sbatch", "--parsable", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"sbatch {' '.join(args)} failed: {p.stderr.strip()}"
    # --parsable prints "jobid" or "jobid;cluster".
    job_id = p.stdout.strip().split(";")[0]
    assert job_id.isdigit(), f"unexpected sbatch output: {p.stdout!r}"
    return job_id


@dataclass
class SlurmJob:
    """Final state of a job; ``state`` is "UNKNOWN" if Slurm already forgot the job."""

    job_id: str
    state: str
    exit_code: str  # "status:signal", as scontrol prints it
    info: str  # the raw `scontrol show job` record, for assertion messages

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == "0:0"


def job_info(job_id: str, env: dict[str, str]) -> SlurmJob:
    """The job's current state from ``scontrol show job`` (kept MinJobAge after it ends)."""
    p = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if p.returncode != 0:
        return SlurmJob(job_id, "UNKNOWN", "?", p.stderr.strip())
    state = re.search(r"\bJobState=(\S+)", p.stdout)
    code = re.search(r"\bExitCode=(\S+)", p.stdout)
    return SlurmJob(
        job_id,
        state.group(1) if state else "UNKNOWN",
        code.group(1) if code else "?",
        p.stdout.strip(),
    )


def in_queue(job_id: str, env: dict[str, str]) -> bool:
    """True while ``squeue`` still lists the job (pending, running or completing)."""
    p = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    # A finished job drops out of the default listing; once purged, squeue says
    # "Invalid job id specified" and exits 1. Accounting (sacct) is not configured.
    return p.returncode == 0 and bool(p.stdout.strip())


def wait_for_job(
    job_id: str,
    env: dict[str, str],
    timeout: float = 60.0,
    poll: float = 0.5,
    output: str | os.PathLike | None = None,
) -> SlurmJob:
    """Poll until the job leaves the queue; cancel it and fail the test after ``timeout``.

    ``output`` (the job's --output file) is quoted in the failure message when given.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not in_queue(job_id, env):
            # Double-check with scontrol: a transient squeue error must not end the wait.
            info = job_info(job_id, env)
            if info.state in TERMINAL_STATES or info.state == "UNKNOWN":
                return info
        if time.monotonic() > deadline:
            info = job_info(job_id, env)
            subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=30)
            pytest.fail(
                f"Slurm job {job_id} still {info.state} after {timeout:.0f} s; cancelled.\n"
                f"{info.info}\n{output_tail(output)}"
            )
        time.sleep(poll)


def output_tail(path: str | os.PathLike | None, lines: int = 30) -> str:
    if path is None:
        return ""
    p = Path(path)
    if not p.is_file():
        return f"(no output file {p})"
    text = p.read_text(errors="replace").splitlines()
    return f"--- last {lines} lines of {p} ---\n" + "\n".join(text[-lines:])


def assert_job_ok(job: SlurmJob, output: str | os.PathLike | None = None) -> None:
    """Assert the job completed with exit code 0, quoting its output file otherwise."""
    assert job.ok, (
        f"Slurm job {job.job_id}: state {job.state}, exit code {job.exit_code}\n"
        f"{job.info}\n{output_tail(output)}"
    )
