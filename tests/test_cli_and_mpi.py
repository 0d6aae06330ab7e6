"""The command line on a real survey, and the reader under a real MPI runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, rewrite_shard, skip_or_fail

from jobs.cli import COMMANDS, build_parser, main
from ssl_hpc.augment.gallery import ShowConfig
from ssl_hpc.config import load_config
from ssl_hpc.data.survey import Survey
from ssl_hpc.errors import SslHpcError


def test_every_command_documents_every_option(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "usage: ssl-hpc " + name in text
    parser = build_parser()
    summaries = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}  # noqa: SLF001
    assert set(summaries) == set(COMMANDS)
    for name, summary in summaries.items():
        assert summary.endswith("."), f"{name}: the top-level help cuts its summary: {summary!r}"
    for action in parser._subparsers._group_actions[0].choices.values():  # noqa: SLF001
        for opt in action._actions:  # noqa: SLF001
            assert opt.help, f"{action.prog} {opt.option_strings or opt.dest}: no help text"


def test_a_path_the_filesystem_refuses_is_one_line(tmp_path, capsys):
    """--out through a link loop, or a link to nowhere: the path and the filesystem's word."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for out, word in (("loop/x", "Too many levels of symbolic links"), ("dangling", "exists")):
        assert main(["synth", "--out", str(tmp_path / out), "n_objects=8"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ssl-hpc synth: error: {tmp_path / out}: ") and word in err
        assert len(err.splitlines()) == 1


def test_info_summarises_and_verifies(small_survey, capsys):
    assert main(["info", str(small_survey)]) == 0
    out = capsys.readouterr().out
    assert "384 in 8 shards" in out and "z_spec" in out and "matches the manifest (sha256)" in out
    assert main(["info", str(small_survey), "--json", "--quick"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_objects"] == 384 and summary["problems"] == []
    assert summary["labels"]["z_spec"]["n"] == int(
        np.isfinite(Survey(small_survey).column("z_spec")).sum()
    )


def test_info_names_the_bad_shard_and_exits_nonzero(small_survey, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_survey, copy)
    shard = copy / "shard-00003.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["info", str(copy)]) == 1
    assert "shard-00003.h5: sha256" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "no such survey directory" in capsys.readouterr().err


def test_info_pixels_names_the_objects_with_nan_pixels(small_survey, tmp_path, capsys):
    """The pixels no cheap check reads: `--pixels` names the shard and the objects whose
    images hold NaN or inf, and exits 1; the survey as written passes."""
    assert main(["info", str(small_survey), "--quick", "--pixels"]) == 0
    assert "matches the manifest (quick + pixels)" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(small_survey, copy)

    def two_bad(f):
        f["image_array"][3, 1, 10, 10] = float("nan")
        f["image_array"][7, 4, 0, 0] = float("inf")

    rewrite_shard(copy, "shard-00002.h5", two_bad)
    with h5py.File(copy / "shard-00002.h5") as f:
        ids = f["object_id"][[3, 7]]
    assert main(["info", str(copy), "--pixels"]) == 1
    out = capsys.readouterr().out
    assert f"shard-00002.h5: 2 object(s) with NaN or inf pixels (ids {ids[0]}, {ids[1]})" in out
    assert "shard-00001.h5" not in out


def test_a_command_imports_its_own_job_only():
    """`ssl-hpc info` (as every MPI rank and Slurm step) loads the info job, not torch and
    the other jobs; the top-level help still lists every command."""
    probe = "import sys\nfrom jobs.cli import main\ntry:\n    main(sys.argv[1:])\n"
    probe += "except SystemExit:\n    pass\n"
    probe += "print(sorted(m for m in sys.modules if m.startswith('jobs.') or m == 'torch'))"
    for argv, loaded in [
        (["info", "--help"], ["jobs.cli", "jobs.info"]),
        (["--help"], ["jobs.cli", *COMMANDS.values(), "torch"]),
    ]:
        run = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().splitlines()[-1] == repr(sorted(loaded)), argv


def test_synth_and_show_through_the_cli(tmp_path, capsys):
    out = tmp_path / "s"
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "n_objects=40",
                "rows_per_shard=20",
                "image_size=32",
                "anomaly_fraction=0.1",
                "workers=1",
            ]
        )
        == 0
    )
    assert (out / "config.yaml").read_text().startswith("survey: synthetic-sdss")
    png = tmp_path / "grid.png"
    assert main(["show", str(out), "--out", str(png), "--n", "6", "--select", "anomalies"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = load_config(ShowConfig, tmp_path / "grid.yaml", [])
    assert (shown.n, shown.select) == (6, "anomalies")
    # a folder, another image format or an empty grid: refused before anything is written
    for bad, words in (
        (["--out", str(tmp_path)], "give a .png file"),
        (["--out", str(tmp_path / "grid.jpg")], "give a .png file"),
        (["--out", str(tmp_path / "g0.png"), "--ncols", "0"], "ncols 0"),
        (["--out", str(tmp_path / "g1.png"), "--ids", "999999"], "999999"),
    ):
        assert main(["show", str(out), *bad]) == 2
        assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["grid.png", "grid.yaml"]
    # another command's directory is named as that command's, not by a diff of keys
    from ssl_hpc.data.sharded_job import JobError, claim_dir

    with pytest.raises(JobError, match="holds the outputs of ssl-hpc synth, not ssl-hpc ingest"):
        claim_dir(out, "ssl-hpc ingest", {"bands": ["g"]})
    assert main(["synth", "--out", str(out), "n_objects=oops"]) == 2
    assert "n_objects: expected int" in capsys.readouterr().err


def test_console_script_runs_as_a_process(small_survey):
    exe = Path(sys.executable).with_name("ssl-hpc")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jobs.cli"]
    r = subprocess.run([*cmd, "info", str(small_survey), "--quick"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "synthetic-sdss" in r.stdout


@pytest.mark.services
def test_reader_shards_across_two_mpi_ranks(small_survey, tmp_path):
    mpiexec = shutil.which(
        "mpiexec",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if mpiexec is None:
        skip_or_fail("no mpiexec on PATH (pip install mpich)")
    out = tmp_path / "ranks.json"
    script = REPO / "tests" / "scripts" / "mpi_read_survey.py"
    r = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, str(script), str(small_survey), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    ranks = json.loads(out.read_text())
    assert sorted(x["rank"] for x in ranks) == [0, 1]
    a, b = (set(x["ids"]) for x in ranks)
    assert a and b and not (a & b)
    assert sorted(a | b) == sorted(Survey(small_survey).column("object_id").tolist())


# every command's config: where its keys come from, and the arguments it cannot go without
CONFIGS = {
    "synth": ("ssl_hpc.data.synth:SynthConfig", ["--out", "o"]),
    "ingest": ("ssl_hpc.data.ingest:IngestConfig", ["--images", "i", "--out", "o"]),
    "info": ("ssl_hpc.data.info:InfoConfig", ["s"]),
    "show": ("ssl_hpc.augment.gallery:ShowConfig", ["s", "--out", "o"]),
    "pretrain": ("ssl_hpc.train.config:PretrainConfig", ["--data", "d", "--out", "o"]),
    "embed": ("ssl_hpc.embed:EmbedOptions", ["--checkpoint", "c", "--data", "d", "--out", "o"]),
    "search": ("ssl_hpc.search.searcher:SearchConfig", ["--embeddings", "e", "--all"]),
    "export": ("ssl_hpc.export:ExportOptions", ["--embeddings", "e", "--out", "o"]),
    "probe": (
        "ssl_hpc.downstream.study:ProbeConfig",
        ["--embeddings", "e", "--data", "d", "--out", "o"],
    ),
    "finetune": (
        "ssl_hpc.downstream.study:StudyConfig",
        ["--checkpoint", "c", "--data", "d", "--out", "o", "checkpoint=c"],
    ),
    "report": ("ssl_hpc.report.build:ReportOptions", ["--embeddings", "e", "--out", "o"]),
    "serve": ("ssl_hpc.serve.config:ServeConfig", ["--embeddings", "e"]),
}


#: keys the command fills in itself (finetune: the encoder.pt its --checkpoint names)
SET_BY_THE_COMMAND = {("finetune", "checkpoint")}


def test_every_config_key_is_documented_and_reachable_from_the_command_line(capsys):
    import importlib

    from ssl_hpc.config import config_from_args, describe_fields

    assert set(CONFIGS) | {"tune"} == set(COMMANDS)  # tune's keys: PretrainConfig's
    parser = build_parser()
    for name, (where, required) in CONFIGS.items():
        module, cls_name = where.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out

        def parse(*argv, name=name, required=required):
            args, extra = parser.parse_known_args([name, *required, *argv])
            args.overrides = [*args.overrides, *extra]  # as jobs.cli.main does
            return args

        baseline = config_from_args(cls, parse())
        changed = []
        for key, default, doc in describe_fields(cls):
            assert doc, f"{cls_name}.{key}: no documentation"
            shown = list(default) if isinstance(default, tuple) else default
            assert f"  {key} = {shown!r}" in text, f"ssl-hpc {name} --help lacks {key}"
            if default == "required" or (name, key) in SET_BY_THE_COMMAND:
                continue
            # every key can be set from the command line, as key=value: its default
            # round-trips, and another value that the config accepts reaches the field
            value = ",".join(map(str, default)) if isinstance(default, tuple) else default
            value = "none" if value is None else value
            assert _field(config_from_args(cls, parse(f"{key}={value}")), key) == _field(
                baseline, key
            ), (name, key)
            for other in _other_values(default):
                try:
                    got = _field(config_from_args(cls, parse(f"{key}={other}")), key)
                except SslHpcError:
                    continue  # out of this key's range: try the next
                assert got == other and got != _field(baseline, key), (name, key, got)
                changed.append(key)
                break
        numeric = [k for k, d, _ in describe_fields(cls) if type(d) in (bool, int, float)]
        assert sorted(changed) == sorted(numeric), (name, sorted(set(numeric) - set(changed)))


def _field(config, key: str):
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _other_values(default) -> list:
    """Values other than a numeric or boolean `default`, nearest first."""
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default - 1, default * 2]
    if isinstance(default, float):
        return [default * 2, default / 2, default + 1.0] if default else [0.5, 1.0]
    return []


def test_a_resume_with_another_config_names_the_keys_that_differ(tmp_path):
    from ssl_hpc.config import build, claim_file, to_yaml
    from ssl_hpc.errors import ConfigError
    from ssl_hpc.train.config import PretrainConfig

    path = tmp_path / "config.yaml"
    claim_file(path, to_yaml(PretrainConfig()), "pretraining config")
    claim_file(path, to_yaml(PretrainConfig()), "pretraining config")  # the same: resumes
    other = build(PretrainConfig, {"base_lr": 0.01, "augment": {"out_size": 24}})
    with pytest.raises(ConfigError) as refused:
        claim_file(path, to_yaml(other), "pretraining config")
    message = str(refused.value)
    assert f"{path}: this directory holds a different pretraining config (" in message
    assert f"base_lr: {PretrainConfig().base_lr!r} -> 0.01" in message
    assert "augment.out_size: " in message and "-> 24" in message and "seed" not in message
