"""A full filesystem (scratch fills up on shared clusters): synth, ingest, embed and
pretraining's checkpoints end with one line naming what they could not write and exit 2 (not a
segfault: HDF5 2.0 crashes closing a file whose write hit a full disk, see
utils/h5write.py), leave nothing a rerun would take as complete, and once space is freed
a rerun finishes with the clean run's outputs. The filesystem is a real size-limited
tmpfs (CI runs as root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import skip_or_fail

from jobs.cli import main


def _mounted_tmpfs(mnt, size: str):
    """Mount a tmpfs of `size` (mount's notation) at `mnt`; yield it, then unmount."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a size-limited tmpfs needs root (CI runs as root)")
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        skip_or_fail(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_fs(tmp_path):
    """A 6 MiB tmpfs mounted for the test."""
    yield from _mounted_tmpfs(tmp_path / "fs", "6m")


@pytest.fixture
def run_fs(tmp_path):
    """A 1 GiB tmpfs (memory-backed): room for a few 144 MB pretraining checkpoints."""
    yield from _mounted_tmpfs(tmp_path / "fs", "1g")


def _fill(mnt, leave_bytes: int):
    """A ballast file that leaves about `leave_bytes` free on `mnt`."""
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    ballast = mnt / "ballast"
    ballast.write_bytes(bytes(max(0, free - leave_bytes)))
    return ballast


def _no_partial_files(root):
    leftovers = [p.name for p in root.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def _one_error_line(stderr: str, start: str) -> str:
    """The one line of `stderr` that is not a progress bar; it starts with `start`."""
    lines = [x for x in stderr.replace("\r", "\n").splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and lines[0].startswith(start), lines
    return lines[0]


def _images(survey):
    out = {}
    for shard in sorted(survey.glob("shard-*.h5")):
        with h5py.File(shard) as f:
            out[shard.name] = f["image_array"][:]
    return out


def test_synth_on_a_full_disk_stops_cleanly_and_resumes(small_fs, tmp_path, capsys):
    args = ["n_objects=320", "rows_per_shard=64", "image_size=32", "seed=5", "workers=1"]
    assert main(["synth", "--out", str(tmp_path / "clean"), *args]) == 0
    ballast = _fill(small_fs, 1_300_000)  # room for about two of the five shards
    out = small_fs / "survey"
    # in its own process: a crash at close or at exit shows as its exit status
    cmd = [sys.executable, "-m", "jobs.cli", "synth", "--out", str(out), *args]
    failed = subprocess.run(cmd, capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr[-2000:]
    _one_error_line(
        failed.stderr, "ssl-hpc synth: error: no space left writing " + str(out / "shard-")
    )
    assert not (out / "manifest.json").exists()
    _no_partial_files(out)
    written = sorted(p.name for p in out.glob("shard-*.h5"))
    assert 0 < len(written) < 5
    ballast.unlink()  # space freed: the rerun keeps what was finished and does the rest
    kept = {name: (out / name).stat().st_mtime_ns for name in written}
    assert main(["synth", "--out", str(out), *args]) == 0
    assert all((out / name).stat().st_mtime_ns == t for name, t in kept.items())
    clean, resumed = _images(tmp_path / "clean"), _images(out)
    assert clean.keys() == resumed.keys() and len(clean) == 5
    assert all(np.array_equal(clean[k], resumed[k]) for k in clean)


def _shards(survey):
    """Every dataset of every shard as (dtype, shape, bytes): bitwise, NaN equal to NaN."""
    out = {}
    for shard in sorted(survey.glob("shard-*.h5")):
        with h5py.File(shard) as f:
            out[shard.name] = {k: (d.dtype, d.shape, d[()].tobytes()) for k, d in f.items()}
    return out


def test_ingest_on_a_full_disk_stops_cleanly_and_resumes(small_fs, tmp_path):
    """The shipped Galaxy Zoo 1 JPEGs, 4 objects a shard, ingested onto a nearly full
    disk: one line naming the shard it could not write, exit 2, no manifest, nothing
    half-written; once space is freed the rerun keeps the finished shards and ends with
    the clean run's shards, bitwise."""
    from conftest import REPO

    gz1 = REPO / "tests" / "data" / "gz1_sdss"
    args = ["--catalog", str(gz1 / "labels.csv"), "--images", str(gz1 / "images"),
            "--id-column", "objid", "--label-columns", "class", "--bands", "i,r,g",
            "--crop", "128", "--resize", "64", "--pixel-scale", "0.396",
            "rows_per_shard=4"]  # fmt: skip
    assert main(["ingest", "--out", str(tmp_path / "clean"), *args]) == 0
    ballast = _fill(small_fs, 450_000)  # room for about three of the ten 108 kB shards
    out = small_fs / "survey"
    cmd = [sys.executable, "-m", "jobs.cli", "ingest", "--out", str(out), *args]
    failed = subprocess.run(cmd, capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr[-2000:]
    _one_error_line(
        failed.stderr, "ssl-hpc ingest: error: no space left writing " + str(out / "shard-")
    )
    assert not (out / "manifest.json").exists()
    _no_partial_files(out)
    written = sorted(p.name for p in out.glob("shard-*.h5"))
    assert 0 < len(written) < 10, written
    ballast.unlink()
    kept = {name: (out / name).stat().st_mtime_ns for name in written}
    assert main(["ingest", "--out", str(out), *args]) == 0
    assert all((out / name).stat().st_mtime_ns == t for name, t in kept.items())
    clean, resumed = _shards(tmp_path / "clean"), _shards(out)
    assert clean == resumed and len(clean) == 10


def test_embed_on_a_full_disk_stops_cleanly_and_resumes(small_fs, small_survey, tmp_path, capsys):
    from test_embed import make_checkpoint

    from ssl_hpc.embed import EmbeddingError, load

    ckpt = make_checkpoint(tmp_path / "encoder.pt", seed=0)
    base = ["embed", "--checkpoint", str(ckpt), "--data", str(small_survey)]
    assert main([*base, "--out", str(tmp_path / "clean")]) == 0
    ballast = _fill(small_fs, 300_000)
    out = small_fs / "emb"
    assert main([*base, "--out", str(out)]) == 2
    last = _one_error_line(
        capsys.readouterr().err, "ssl-hpc embed: error: embedding failed: rank 0, shard shard-"
    )
    assert "no space left writing " + str(out) in last
    _no_partial_files(out)
    with pytest.raises(EmbeddingError, match=re.escape(f"{out}: no manifest.json")):
        load(out)  # not taken as a finished embedding set
    ballast.unlink()
    assert main([*base, "--out", str(out)]) == 0
    ids_clean, vectors_clean = load(tmp_path / "clean").load()
    ids, vectors = load(out).load()
    assert np.array_equal(ids, ids_clean) and np.array_equal(vectors, vectors_clean)


def test_pretrain_checkpoint_on_a_full_disk_stops_cleanly_and_resumes(run_fs, small_survey):
    """Ray Train copies each checkpoint into the run directory; when the copy runs out of
    space, pretrain ends with one line naming the run (exit 2), nothing looks finished,
    and once space is freed the rerun passes over the half-copied checkpoint, resumes
    from the last whole one and logs every step once."""
    from conftest import REPO

    from ssl_hpc.train.metrics_log import read_metrics

    run = run_fs / "run"
    ballast = _fill(run_fs, 220 << 20)  # one 144 MB checkpoint fits, the second does not
    cmd = [sys.executable, "-m", "jobs.cli", "pretrain", "--data", str(small_survey)]
    cmd += ["--out", str(run), "--config", str(REPO / "jobs/configs/pretrain-demo.yaml")]
    cmd += ["steps=30", "checkpoint_every=10", "log_every=10", "eval_every=30"]
    cmd += ["batch_size=32", "queue_size=128", "augment.out_size=24", "augment.max_shift=4"]
    cmd += ["loader_workers=0", "eval_objects=128", "cpus_per_worker=2", "max_failures=0"]
    env = {**os.environ, "SSL_HPC_PROGRESS": "0"}
    failed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert f"ssl-hpc pretrain: error: no space left writing the run under {run} (" in (
        failed.stderr
    )
    assert not (run / "encoder.pt").exists()  # the run does not look finished
    assert max(r["step"] for r in read_metrics(run / "metrics.csv")) < 30

    ballast.unlink()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(run / "metrics.csv")
    notes = [r["note"] for r in rows if r.get("note")]
    assert len(notes) == 1 and notes[0].startswith("restored from step 10 (passed over "), notes
    assert "does not match its sha256" in notes[0] or "missing" in notes[0], notes
    assert [r["step"] for r in rows if not r.get("note")] == [0, 10, 20, 30]
    assert (run / "encoder.pt").exists()
