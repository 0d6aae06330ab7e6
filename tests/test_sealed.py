"""Checkpoint seals: a damaged checkpoint is told apart from an intact one, whatever the
damage, and older checkpoints (no seal) are checked by loading them."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest
import torch
from conftest import dead_pid

from ssl_hpc.errors import TransientError
from ssl_hpc.train.ray_loop import repeats_on_retry
from ssl_hpc.train.sealed import damage, newest_first, seal
from ssl_hpc.utils.procfs import stat_fields


def _checkpoint(directory, rank=0, size=50_000):
    directory.mkdir(parents=True)
    torch.save({"w": torch.arange(size, dtype=torch.float32), "step": 3}, directory / "a.pt")
    seal(directory, rank)
    return directory / "a.pt"


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.5, 0.9])  # inside the tensor's bytes, near the end
def test_flipped_bytes_are_caught_where_torch_load_would_not_notice(tmp_path, where):
    path = _checkpoint(tmp_path / "c")
    assert damage(tmp_path / "c") is None
    _flip(path, int(path.stat().st_size * where))
    assert "a.pt does not match its sha256" in damage(tmp_path / "c")


def test_truncated_missing_and_unsealed_checkpoints(tmp_path):
    path = _checkpoint(tmp_path / "c")
    path.write_bytes(path.read_bytes()[:1000])
    assert "does not match" in damage(tmp_path / "c")
    path.unlink()
    assert damage(tmp_path / "c") == "a.pt missing"
    (tmp_path / "c" / "sha256-rank-0.json").write_text("{not json")
    assert "sha256-rank-0.json unreadable" in damage(tmp_path / "c")
    # a checkpoint from before seals: loaded to be checked
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({"step": 1}, legacy / "trainer.pt")
    assert damage(legacy) is None
    (legacy / "trainer.pt").write_bytes((legacy / "trainer.pt").read_bytes()[:-40])
    assert "trainer.pt unreadable" in damage(legacy)
    (tmp_path / "empty").mkdir()
    assert damage(tmp_path / "empty") == "no checkpoint files"


@pytest.mark.parametrize(
    "failing_suffix, legacy", [(".json", False), (".pt", False), (".pt", True)]
)
def test_a_filesystem_failing_a_read_is_raised_not_taken_for_damage(
    tmp_path, monkeypatch, failing_suffix, legacy
):
    """An EIO or a stale handle under a seal, sealed file or unsealed checkpoint says nothing of
    the checkpoint: passed over, a run would resume from an older one, or record "no
    intact checkpoint" and stop every retry. A file that reads, but wrongly, is damage."""
    path = _checkpoint(tmp_path / "c")
    if legacy:
        (tmp_path / "c" / "sha256-rank-0.json").unlink()
    real_open = open

    def failing(file, *args, **kwargs):
        if os.fspath(file).endswith(failing_suffix) and failing.errno:
            raise OSError(failing.errno, os.strerror(failing.errno), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing)
    monkeypatch.setattr("io.open", failing)
    for number in (errno.EIO, errno.ESTALE):
        failing.errno = number
        with pytest.raises(TransientError, match=r"c/\S+: the filesystem failed the read") as e:
            damage(tmp_path / "c")
        assert e.value.__cause__.errno == number and not repeats_on_retry(e.value)
    failing.errno = errno.EACCES  # lasting: this checkpoint cannot be used
    assert "unreadable" in damage(tmp_path / "c")
    failing.errno = 0
    assert damage(tmp_path / "c") is None and path.is_file()


def test_every_rank_seal_is_checked(tmp_path):
    path = _checkpoint(tmp_path / "c", rank=0)
    torch.save({"bn": torch.ones(10)}, tmp_path / "c" / "rank-1.pt")
    (tmp_path / "c" / "sha256-rank-1.json").write_text('{"rank-1.pt": "0" }')
    assert "rank-1.pt does not match" in damage(tmp_path / "c")
    assert path.exists()


def test_checkpoints_are_listed_newest_first(tmp_path):
    names = [
        "checkpoint_2026-11-30_10-00-00.1",
        "checkpoint_2026-11-30_10-05-00.1",
        "checkpoint_2026-11-30_09-00-00.1",
        "checkpoint_manager_snapshot.json",
    ]
    for name in names[:3]:
        (tmp_path / name).mkdir()
    (tmp_path / names[3]).write_text("{}")
    assert [p.name for p in newest_first(tmp_path)] == [names[1], names[0], names[2]]
    assert newest_first(tmp_path / "absent") == []


def test_a_checkpoint_missing_a_ranks_part_is_incomplete(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    torch.save({"w": torch.ones(2)}, d / "trainer.pt")
    seal(d, 0)
    assert damage(d, world=1) is None
    assert damage(d, world=2) == "sha256-rank-1.json missing (rank 1's part never arrived)"
    seal(d, 1)  # rank 1 wrote nothing of its own but its seal: now whole
    assert damage(d, world=2) is None


def test_staging_directories_of_dead_workers_are_removed_and_live_ones_kept(tmp_path):
    """A worker SIGKILLed while writing or reporting a checkpoint leaves its staging
    directory (a whole checkpoint) in the node's temp dir; the next worker started there
    removes it, but not one whose worker still runs, nor anything that is not staging. A
    killed worker not yet reaped (a zombie: it still answers signal 0) counts as dead."""
    from ssl_hpc.train.ray_loop import STAGING_PREFIX, remove_dead_staging

    unreaped = subprocess.Popen(["sleep", "60"])
    unreaped.kill()  # not waited for: a zombie until the wait below
    for _ in range(200):
        if (state := stat_fields(unreaped.pid)[0]) == "Z":
            break
        time.sleep(0.01)
    assert state == "Z", f"the killed child is in state {state}, not a zombie"
    left = tmp_path / f"{STAGING_PREFIX}{dead_pid()}-abc"
    zombie = tmp_path / f"{STAGING_PREFIX}{unreaped.pid}-ghi"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def"
    other = tmp_path / "ssl-hpc-checkpoint-notes"
    for d in (left, zombie, live, other):
        d.mkdir()
        (d / "trainer.pt").write_bytes(b"x" * 100)
    removed = remove_dead_staging(tmp_path)
    unreaped.wait()
    assert sorted(removed) == sorted([left, zombie])
    assert live.exists() and other.exists()
