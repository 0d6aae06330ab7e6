"""The Pretrainer without Ray: exact resume, config checks, metrics log, exported encoder."""

from __future__ import annotations

import errno
import io
import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import nan_centred_copy

from ssl_hpc.config import build
from ssl_hpc.data.survey import Survey
from ssl_hpc.embed import EmbeddingError
from ssl_hpc.errors import (
    ConfigError,
    DiskFullError,
    DivergedError,
    SurveyError,
    TransientReadError,
    read_error,
)
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.metrics_log import MetricsLog, read_metrics
from ssl_hpc.train.pretrainer import Pretrainer
from ssl_hpc.train.ray_loop import FAILED_FILE, fail_once, repeats_on_retry, run_fit
from ssl_hpc.train.run_dir import SURVEY_FILE, claim_run

TINY = {
    "arch": "resnet18",
    "batch_size": 32,
    "queue_size": 256,
    "steps": 16,
    "warmup_steps": 3,
    "loader_workers": 1,
    "augment.out_size": 24,
    "augment.max_shift": 4,
    "eval_objects": 128,
    "cpus_per_worker": 1,
}


def tiny(**kw) -> PretrainConfig:
    return build(PretrainConfig, {**TINY, **kw})


def snapshot(trainer: Pretrainer) -> bytes:
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    return buf.getvalue()


def restore(config, survey, blob: bytes) -> Pretrainer:
    t = Pretrainer(config, survey)
    t.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
    return t


def test_interrupted_runs_end_bitwise_equal_to_an_uninterrupted_one(small_survey):
    torch.set_num_threads(1)
    cfg = tiny()
    straight = Pretrainer(cfg, small_survey)
    assert straight.reader.batches_per_epoch(0) == 12  # 384 objects / 32: steps 13-16 in epoch 1
    losses = []
    straight.train(16, lambda t, s: losses.append(float(s["loss"])))
    # stop at step 10 (mid epoch 0) and at 13 (in epoch 1), each time in a new Pretrainer
    first = Pretrainer(cfg, small_survey)
    first.train(10)
    second = restore(cfg, small_survey, snapshot(first))
    second.train(13)
    assert (second.epoch, second.batch_in_epoch) == (1, 1)
    third = restore(cfg, small_survey, snapshot(second))
    resumed = []
    third.train(16, lambda t, s: resumed.append(float(s["loss"])))
    assert resumed == losses[13:]
    a, b = straight.bare.state_dict(), third.bare.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights, BN statistics, queue, pointer
    opt_a, opt_b = straight.optimizer.state_dict(), third.optimizer.state_dict()
    assert all(
        torch.equal(opt_a["state"][i]["momentum_buffer"], opt_b["state"][i]["momentum_buffer"])
        for i in opt_a["state"]
    )
    # the state loads with weights_only=True (checked by restore) and holds no pickled code
    assert len(losses) == 16


def test_nan_pixels_stop_the_run_before_it_logs_or_saves(small_survey, tmp_path):
    """A survey written elsewhere with NaN pixels (the format forbids them; opening a survey
    does not read every pixel): the loss turns NaN at the first step, and the check the Ray
    loop makes before it logs, evaluates or checkpoints names the survey and the step,
    where the run used to train on to a NaN encoder."""
    clean = Pretrainer(tiny(), small_survey)
    clean.train(2)
    clean.check_finite()  # a finite run passes
    poisoned = nan_centred_copy(small_survey, tmp_path / "nan")
    t = Pretrainer(tiny(), poisoned)
    t.train(3)
    assert t.step == 3  # no sync each step: the loop ran on
    with pytest.raises(
        DivergedError, match=f"{poisoned} diverged: the loss was not finite at step 1 "
    ):
        t.check_finite()


def test_an_error_no_retry_mends_is_raised_again_without_rerunning_the_loop(tmp_path):
    """Ray Train's retries of a worker function that raised an SslHpcError raise the
    recorded error, its class (wherever it is defined) and message, without running it; a
    new `fit` clears the record."""
    calls = []

    def loop(config: dict) -> None:
        calls.append(config)
        raise EmbeddingError(f"shard {len(calls)} of survey S is corrupt")

    once = fail_once(loop)
    for _ in range(3):
        with pytest.raises(EmbeddingError, match="^shard 1 of survey S is corrupt$"):
            once({"out": str(tmp_path)})
    assert len(calls) == 1
    assert (tmp_path / FAILED_FILE).exists()

    class Trainer:  # what run_fit needs of a TorchTrainer
        def fit(self):
            return (tmp_path / FAILED_FILE).exists()

    assert run_fit(Trainer(), tmp_path) is False


def test_a_retry_raises_the_recorded_class_even_before_its_module_is_imported(tmp_path):
    """A retry is a fresh worker process: the recorded error's class is imported there, and a
    record that does not read whole lets the attempt run instead of hiding the real error."""
    failed = tmp_path / FAILED_FILE
    failed.write_text(json.dumps({"error": "ssl_hpc.search.query:QueryError", "message": "m"}))
    probe = (
        "import sys; from pathlib import Path; "
        "from ssl_hpc.train.ray_loop import recorded_error; "
        "assert 'ssl_hpc.search.query' not in sys.modules; "
        f"e = recorded_error(Path({str(failed)!r})); print(type(e).__module__, type(e).__name__)"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert shown.stdout.split() == ["ssl_hpc.search.query", "QueryError"], shown.stderr

    calls = []
    once = fail_once(lambda config: calls.append(config))
    for torn in ['{"error": "ssl_hpc.errors:SurveyError", "mess', "{}", "[]"]:
        failed.write_text(torn)
        once({"out": str(tmp_path)})
    assert len(calls) == 3


class FailingReads(torch.utils.data.Dataset):
    """A dataset whose every read fails as a shard read on a flaky filesystem does."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        raise read_error("shard-00000.h5: cannot read 'image'", OSError(errno.EIO, "I/O"))


def test_reads_the_filesystem_failed_are_told_from_bad_files():
    """EIO, ESTALE or too many open files may pass on a retry; a file that is not HDF5, a
    bad checksum or a missing shard will not. HDF5 puts the errno only in its text, and
    the mark must survive torch's DataLoader, which re-raises a worker's error anew."""
    transient = [
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.ESTALE, "Stale file handle"),
        OSError(errno.EMFILE, "Too many open files"),
        OSError("Can't read data (file read failed: ..., errno = 5, error message = 'x')"),
    ]
    lasting = [
        OSError("Unable to open file (file signature not found)"),
        OSError("Can't read data (filter returned failure during read)"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        KeyError("image"),
    ]
    for cause in transient:
        assert isinstance(read_error("m", cause), TransientReadError), cause
    for cause in lasting:
        error = read_error("m", cause)
        assert type(error) is SurveyError and repeats_on_retry(error), cause
    loader = torch.utils.data.DataLoader(FailingReads(), batch_size=2, num_workers=1)
    with pytest.raises(TransientReadError, match="shard-00000.h5: cannot read") as raised:
        next(iter(loader))
    assert raised.value.__cause__ is None and not repeats_on_retry(raised.value)


@pytest.mark.parametrize(
    "error",
    [
        DiskFullError("no space left writing RUN"),
        TransientReadError("shard-00000.h5: cannot read 'image' (errno = 5)"),
    ],
)
def test_an_error_a_retry_may_not_meet_again_is_left_to_ray_retries(tmp_path, error):
    """A full disk or a filesystem's hiccup under a read (EIO, ESTALE on a parallel
    filesystem) is not recorded: Ray's retries run the loop again."""
    calls = []

    def loop(config: dict) -> None:
        calls.append(config)
        raise error

    once = fail_once(loop)
    for _ in range(2):
        with pytest.raises(type(error)):
            once({"out": str(tmp_path)})
    assert len(calls) == 2 and not (tmp_path / FAILED_FILE).exists()


def test_a_run_resumes_only_on_the_survey_it_started_on(small_survey, tmp_path):
    """A relaunch on another survey would train on other galaxies from the middle of a
    schedule: refused, naming both. The same survey copied elsewhere (staged to a node's
    disk) resumes; a run with no checkpoint yet takes a corrected survey."""
    config = tiny()
    other = nan_centred_copy(small_survey, tmp_path / "other")  # other pixels and hashes
    out = claim_run(tmp_path / "run", config, "pretraining config", small_survey)
    claim_run(out, config, "pretraining config", other)  # nothing trained yet: replaced
    assert json.loads((out / SURVEY_FILE).read_text())["path"] == str(other)
    (out / "ray" / "pretrain" / "checkpoint_000001").mkdir(parents=True)
    with pytest.raises(ConfigError, match=rf"{out} holds a run on survey .* at {other}\), not "):
        claim_run(out, config, "pretraining config", small_survey)
    staged = shutil.copytree(other, tmp_path / "staged")
    manifest = json.loads((staged / "manifest.json").read_text())
    manifest["generator"]["seconds"] = 12345.6  # a shard regenerated to the same bytes
    (staged / "manifest.json").write_text(json.dumps(manifest))
    claim_run(out, config, "pretraining config", staged)
    manifest["pixel_scale_arcsec"] *= 2  # the PSF blur's scale: another survey to train on
    (staged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=rf"{out} holds a run on survey "):
        claim_run(out, config, "pretraining config", staged)


def test_simclr_trains_on_the_same_pretrainer(small_survey):
    cfg = tiny(method="simclr", steps=3, loader_workers=0)
    t = Pretrainer(cfg, small_survey)
    losses = []
    t.train(3, lambda _, s: losses.append(float(s["loss"])))
    # NT-Xent over 2 x 32 views: at most log(63) for an untrained net, and finite
    assert len(losses) == 3 and all(0 < v < 4.2 for v in losses)
    assert set(t.evaluate()) == {"knn_sigma_mad", "knn_eta", "knn_morph_acc", "knn_morph_bacc"}


def test_config_errors_name_the_problem(small_survey):
    with pytest.raises(
        ConfigError, match="queue_size=1000 is not a multiple of the global batch 64"
    ):
        tiny(queue_size=1000, num_workers=2)
    with pytest.raises(ConfigError, match="arch='vit'"):
        tiny(arch="vit")
    with pytest.raises(ConfigError, match="augment: unknown key"):
        tiny(**{"augment.sizes": 3})
    with pytest.raises(ConfigError, match="embed_size=48: a centred 48 px window does not fit"):
        Pretrainer(tiny(embed_size=48), small_survey)
    with pytest.raises(ConfigError, match="too few objects"):
        Pretrainer(tiny(batch_size=512, queue_size=512), small_survey)
    # found before Ray starts: in a worker it was a traceback after four restarts
    with pytest.raises(ConfigError, match="too few objects for batch_size 256 on 2 worker"):
        tiny(batch_size=256, queue_size=512, num_workers=2).check_fits(Survey(small_survey))
    # NaN passes every "x <= 0" check; each float must be refused by name before Ray starts
    for key in ("temperature", "base_lr", "input_softening", "cpus_per_worker"):
        with pytest.raises(ConfigError, match=f"{key}=nan: must be a finite number > 0"):
            tiny(**{key: "nan"})
    with pytest.raises(ConfigError, match=r"sgd_momentum=nan: must be in \[0, 1\)"):
        tiny(sgd_momentum="nan")
    with pytest.raises(ConfigError, match="batch_size=1: must be >= 2"):
        tiny(batch_size=1, queue_size=64)
    with pytest.raises(ConfigError, match="keep_checkpoints=0: must be >= 1"):
        tiny(keep_checkpoints=0)
    with pytest.raises(ConfigError, match="loader_workers=-1: must be >= 0"):
        tiny(loader_workers=-1)
    with pytest.raises(ConfigError, match="augment: expected a mapping of its keys"):
        tiny(augment="3")
    with pytest.raises(ConfigError, match="extinction: not a YAML mapping"):
        tiny(**{"augment.extinction": "{g: ["})
    with pytest.raises(ConfigError, match=r"augment.extinction=\{'g': nan\}: out of range"):
        tiny(**{"augment.extinction": "{g: nan}"})
    assert tiny(**{"augment.extinction": "{g: 3.3}"}).augment.extinction == {"g": 3.3}
    cfg = tiny(**{"augment.codes": "RR,GN"})
    assert cfg.augment.codes == ("RR", "GN") and cfg.peak_lr == pytest.approx(0.03 * 32 / 256)


def test_metrics_log_drops_rows_of_a_dead_attempt(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    for step in (5, 10, 15):
        log.write({"step": step, "epoch": 0, "loss": 1.0 / step})
    # the attempt died after step 15; the last checkpoint was step 10
    log = MetricsLog(path, resume_step=10)
    log.note("restored from step 10")
    log.write({"step": 15, "epoch": 0, "loss": 0.5})
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [5, 10, 10, 15]
    assert rows[2]["note"] == "restored from step 10" and rows[3]["loss"] == 0.5
    # an attempt killed before its first checkpoint: the rerun starts afresh, keeping none
    MetricsLog(path).write({"step": 0, "epoch": 0})
    assert [r["step"] for r in read_metrics(path)] == [0]


def test_pretrain_cli_refuses_bad_input_before_starting_ray(small_survey, tmp_path):
    cmd = [sys.executable, "-m", "jobs.cli", "pretrain", "--out", str(tmp_path / "run")]
    bad = subprocess.run([*cmd, "--data", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr
    bad = subprocess.run(
        [*cmd, "--data", str(small_survey), "queue_size=100"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "queue_size=100" in bad.stderr
    # the default 64 px views do not fit the 48 px test cutouts
    bad = subprocess.run([*cmd, "--data", str(small_survey)], capture_output=True, text=True)
    assert bad.returncode == 2 and "48x48 cutout" in bad.stderr
    assert not (tmp_path / "run").exists()
