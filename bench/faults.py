"""Crash consistency: SIGKILL a command's whole process group at points spread over its
run, rerun it to completion, and compare every output file with a clean run's, bitwise.

For each job: one clean run (timed), then for each of `kills` points (half spread over
the clean run's wall time, half just after the k-th shard's done-record appears, the last
of those replaced by the job's named point, see NAMED): start the command in its own
session, SIGKILL the group there, check that nothing left behind looks complete when it is
not (every done-record names a shard that exists with its recorded sha256; a manifest
lists only recorded shards; a catalogue under its final name is the whole clean one; a
training job's finished products, PRODUCTS, are the clean ones), rerun to completion (a
Ray job's rerun also removes the checkpoint staging directories its killed workers left
in the temp dir, one of its own per job: `staging_left` lists any still there), and
compare the whole output tree with the clean one (paths and sha256s; JSON files without
their run-history keys, a catalogue without its creation time, the only things a rerun may
change). The test suite runs a few kill points per job (tests/test_crash_consistency.py);

    python bench/faults.py --jobs synth,ingest --kills 12 --out bench/results/faults.json

runs more. Jobs: synth, ingest (the shipped Galaxy Zoo 1 JPEGs), ingest_mmu (a Multimodal
Universe tree, HEALPix-partitioned), embed (2 MPI ranks), search_all (`search --all`),
export and export_fits (a catalogue, one file), and the Ray jobs, each killed with the
local Ray cluster its driver started: pretrain (Ray Train: its encoder.pt and losses must
come out identical, its Ray checkpoint folder and throughput columns are run history),
tune (a 4-trial Ray Tune sweep, 2 trials at a time: each trial's encoder, config and
losses, the ranked table and the plots; Tune's own bookkeeping is run history, see
sweep_tree) and finetune (the label-efficiency study: 2 Ray Train runs, their models,
predictions and test scores, the study's curves and plots).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ssl_hpc.train.ray_loop import STAGING_PREFIX
from ssl_hpc.utils.faults import ENV as KILL_AT
from ssl_hpc.utils.hashing import sha256_file

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("ssl-hpc"))
GZ1 = REPO / "tests" / "data" / "gz1_sdss"


def synth(root: Path) -> tuple[list[str], Path]:
    out = root / "out"
    return [CLI, "synth", "--out", str(out), "n_objects=1200", "rows_per_shard=100",
            "image_size=32", "seed=7", "workers=1"], out  # fmt: skip


def ingest(root: Path) -> tuple[list[str], Path]:
    out = root / "out"
    return [CLI, "ingest", "--catalog", str(GZ1 / "labels.csv"), "--images",
            str(GZ1 / "images"), "--out", str(out), "--id-column", "objid",
            "--label-columns", "class", "--bands", "i,r,g", "--crop", "128", "--resize", "64",
            "--pixel-scale", "0.396", "rows_per_shard=4"], out  # fmt: skip


def _survey(root: Path) -> Path:
    """Input made once per job: the 1,200-object survey `synth` makes, under root/inputs."""
    cmd, survey = synth(root / "inputs")
    if not (survey / "manifest.json").exists():
        subprocess.run(cmd, check=True, capture_output=True)
    return survey


def ingest_mmu(root: Path) -> tuple[list[str], Path]:
    """The survey rewritten as a Multimodal Universe tree (made once), ingested into
    HEALPix order-2 shards of at most 64 rows (48 shards)."""
    mmu = root / "inputs" / "mmu"
    if not mmu.exists():
        cmd = [sys.executable, "-m", "ssl_hpc.data.synth.mmu_tree", "--survey",
               str(_survey(root)), "--out", str(mmu)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    out = root / "out"
    return [CLI, "ingest", "--images", str(mmu), "--out", str(out), "--healpix-order", "2",
            "rows_per_shard=64"], out  # fmt: skip


def _encoder(root: Path) -> Path:
    """Input made once per job: an untrained ResNet-18 for 24 px views."""
    from ssl_hpc.augment.stats import sdss_like_stats
    from ssl_hpc.config import build
    from ssl_hpc.train.config import PretrainConfig
    from ssl_hpc.train.export import write_untrained_encoder

    encoder = root / "inputs" / "encoder.pt"
    if not encoder.exists():
        config = build(PretrainConfig, {"arch": "resnet18", "augment.out_size": 24})
        write_untrained_encoder(encoder, config, sdss_like_stats())
    return encoder


def embed(root: Path) -> tuple[list[str], Path]:
    """Two MPI ranks, as `slurm/embed.sh` runs them."""
    survey, encoder = _survey(root), _encoder(root)
    out = root / "out"
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return [mpiexec, "-n", "2", CLI, "embed", "--checkpoint", str(encoder), "--data",
            str(survey), "--out", str(out), "--batch-size", "64"], out  # fmt: skip


def _embeddings(root: Path) -> Path:
    """Input made once per job: the survey embedded by the untrained encoder."""
    survey, encoder = _survey(root), _encoder(root)
    emb = root / "inputs" / "embeddings"
    if not (emb / "manifest.json").exists():
        cmd = [CLI, "embed", "--checkpoint", str(encoder), "--data", str(survey), "--out", str(emb)]
        subprocess.run(cmd, check=True, capture_output=True)
    return emb


def search_all(root: Path) -> tuple[list[str], Path]:
    """Every object's top 10, into EMB/neighbours/."""
    emb = _embeddings(root)
    return [CLI, "search", "--embeddings", str(emb), "--all", "--k", "10"], emb / "neighbours"


def export(root: Path, fmt: str = "parquet") -> tuple[list[str], Path]:
    """The embedding set's catalogue, one file in root/out. With --overwrite: a run killed
    after its rename has published the whole catalogue, and a rerun without it is refused
    (the catalogue exists), as it should be."""
    out = root / "out"
    return [CLI, "export", "--embeddings", str(_embeddings(root)), "--out",
            str(out / f"catalogue.{fmt}"), "--format", fmt, "--overwrite"], out  # fmt: skip


def pretrain(root: Path) -> tuple[list[str], Path]:
    """One Ray Train worker on a local Ray cluster the driver starts (killed with it)."""
    survey = _survey(root)
    out = root / "out"
    return [CLI, "pretrain", "--data", str(survey), "--out", str(out), "--config",
            str(REPO / "jobs" / "configs" / "pretrain-demo.yaml"), "steps=20",
            "checkpoint_every=5", "log_every=5", "eval_every=20", "batch_size=32",
            "queue_size=128", "augment.out_size=16", "augment.max_shift=2",
            "loader_workers=0", "eval_objects=128", "num_workers=1", "cpus_per_worker=2",
            "max_failures=0"], out  # fmt: skip


def tune(root: Path) -> tuple[list[str], Path]:
    """A 4-trial sweep (temperature x augmentation subset, FIFO, 2 trials at a time), each
    trial an 8-step Ray Train pretraining run on one worker, on a local Ray cluster the
    driver starts (killed with it)."""
    sweep = root / "inputs" / "sweep.yaml"
    if not sweep.exists():
        tiny = {"arch": "resnet18", "num_workers": 1, "cpus_per_worker": 0.9,
                "batch_size": 16, "queue_size": 64, "base_lr": 0.3, "warmup_steps": 2,
                "steps": 8, "loader_workers": 0, "augment": {"out_size": 16, "max_shift": 2},
                "checkpoint_every": 2, "log_every": 2, "eval_every": 4,
                "eval_objects": 128}  # fmt: skip
        raw = {"overrides": tiny, "search": {"temperature": {"grid": [0.1, 0.5]}},
               "ablation": {"codes": ["RR", "GN"], "subsets": ["all"], "sets": [["RR"]]},
               "scheduler": {"type": "fifo"}, "max_concurrent_trials": 2}  # fmt: skip
        sweep.parent.mkdir(parents=True, exist_ok=True)
        sweep.write_text(json.dumps(raw))  # JSON is YAML
    out = root / "out"
    return [CLI, "tune", "--data", str(_survey(root)), "--out", str(out), "--config",
            str(sweep)], out  # fmt: skip


def finetune(root: Path, methods: str = "finetuned_ssl,supervised") -> tuple[list[str], Path]:
    """The photo-z label-efficiency study with all the labels, 1 repeat: linear probes,
    then a Ray Train run of 12 steps on one worker for each of `methods` in turn (by
    default 2: fine-tuned and from scratch), on a local Ray cluster the driver starts
    (killed with it)."""
    survey, encoder = _survey(root), _encoder(root)
    out = root / "out"
    return [CLI, "finetune", "--checkpoint", str(encoder), "--data", str(survey), "--out",
            str(out), "--fractions", "1", "--repeats", "1", "--methods", methods, "steps=12",
            "batch_size=16", "eval_every=12", "checkpoint_every=4", "warmup_steps=1",
            "num_workers=1", "cpus_per_worker=2", "augment.out_size=16",
            "augment.max_shift=2"], out  # fmt: skip


JOBS = {
    "synth": synth,
    "ingest": ingest,
    "embed": embed,
    "search_all": search_all,
    "pretrain": pretrain,
    "ingest_mmu": ingest_mmu,
    "export": export,
    "export_fits": functools.partial(export, fmt="fits"),
    "tune": tune,
    "finetune": finetune,
}

#: each job's named kill point: a library hook (SSL_HPC_KILL_AT, see ssl_hpc.utils.faults)
#: at its n-th pass, or for export (one file, no hook of its own) as soon as the
#: catalogue's temporary appears, mid-write
NAMED = {
    **dict.fromkeys(JOBS, {"kill_at": "shard-before-record:2"}),
    "pretrain": {"kill_at": "checkpoint-mid-write:2"},
    "tune": {"kill_at": "checkpoint-mid-write:2"},
    "finetune": {"kill_at": "checkpoint-mid-write:2"},
    "export": {"after_temporary": True},
    "export_fits": {"after_temporary": True},
}

#: What a training run writes that records how it went rather than what it learnt: Ray's
#: own storage (checkpoints named by the time they were taken), the machine it ran on, the
#: learning-curve picture and metrics.csv's throughput columns and resume notes. Its
#: encoder.pt and the rest of metrics.csv (losses, evaluations) must come out identical.
RUN_HISTORY_PATHS = ("ray/", "environment.json", "learning_curve.png")
RUN_HISTORY_COLUMNS = {"pairs_per_s_worker", "pairs_per_s_total", "note"}


def progress(out: Path) -> int:
    """Units of work a run has finished: shard done-records, training checkpoints, or a
    catalogue under its final name."""
    records = len(list(out.glob("*.done")))
    checkpoints = [p for p in out.glob("**/ray/*/checkpoint_*") if p.is_dir()]  # not Ray's json
    return records or len(checkpoints) or len(list(out.glob("catalogue.*")))


#: JSON keys that record how a run went, not what it made (its wall time, the shards or
#: rows a rerun found finished or did itself): the only things a resumed run may write
#: differently
RUN_HISTORY = {"seconds", "shards_reused", "embedded"}
#: a catalogue's run history: when it was written (Parquet provenance key, FITS card)
CREATED, FITS_CREATED = "created_utc", b"DATE    ="


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256): bitwise, except that JSON files
    are hashed without their RUN_HISTORY keys, metrics.csv without its RUN_HISTORY_COLUMNS,
    a fine-tuning run's history.jsonl without its resume notes, and RUN_HISTORY_PATHS are
    left out. A sweep's is `sweep_tree`."""
    if (root / SWEEP_DIR).is_dir():
        return sweep_tree(root)
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    named = {str(p.relative_to(root)): p for p in files}
    return {
        name: _digest(p)
        for name, p in named.items()
        if not any(name == h or name.startswith(h) or f"/{h}" in name for h in RUN_HISTORY_PATHS)
    }


#: Tune's experiment in a sweep's output; its trials are trial_<experiment id>_<index>,
#: the experiment id drawn afresh by each clean run
SWEEP_DIR, TRIAL_NAME = "sweep", re.compile(r"trial_[0-9a-f]+_(\d+)")
#: what a sweep made: per trial its config, encoder and learning curve (as a pretraining
#: run's), and the ranked table, summary, best config (without its comment) and plots.
#: Tune's own bookkeeping (experiment state, result.json, progress.csv, events),
#: attempts.jsonl and trials.md (trials.csv as Markdown, with this run's wall time)
#: record how the sweep went.
SWEEP_TRIAL_FILES = ("config.yaml", "encoder.pt", "metrics.csv")
SWEEP_FILES = ("sweep.yaml", "ablation.png", "params.png")
#: a sweep table's run history: wall times, attempts, and where the encoder was written
SWEEP_HISTORY = {"this_run_wall_s", "trial_time_s_median", "time_s", "attempts", "encoder"}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


#: a sweep's tables, compared without their SWEEP_HISTORY
SWEEP_TABLES = {"trials.csv": _csv_rows, "summary.json": lambda p: json.loads(p.read_text())}


def trial_index(name: str) -> str:
    """`name` with Tune's trial_<experiment id>_<index> replaced by trial_<index>."""
    return TRIAL_NAME.sub(r"trial_\1", name)


def sweep_tree(root: Path) -> dict[str, str]:
    """A sweep's outputs (SWEEP_FILES, SWEEP_TRIAL_FILES, trials.csv and summary.json
    without SWEEP_HISTORY), trials named by their index."""
    out = {}
    for trial in sorted((root / SWEEP_DIR).glob("trial_*")):
        for name in SWEEP_TRIAL_FILES:
            if (trial / name).is_file():
                out[trial_index(f"{SWEEP_DIR}/{trial.name}/{name}")] = _digest(trial / name)
    for name in SWEEP_FILES:
        if (root / name).is_file():
            out[name] = _digest(root / name)
    best = root / "best_config.yaml"  # its comment names the best trial by its id
    if best.is_file():
        config = json.dumps(yaml.safe_load(best.read_text()), sort_keys=True)
        out[best.name] = hashlib.sha256(config.encode()).hexdigest()
    for name, read in SWEEP_TABLES.items():
        if (root / name).is_file():
            kept = json.dumps(_sweep_table(read(root / name)), sort_keys=True)
            out[name] = hashlib.sha256(kept.encode()).hexdigest()
    return out


def _sweep_table(obj):
    if isinstance(obj, dict):
        return {k: trial_index(f"trial_{v}") if k == "trial" else _sweep_table(v)
                for k, v in obj.items() if k not in SWEEP_HISTORY}  # fmt: skip
    if isinstance(obj, list):
        return [_sweep_table(v) for v in obj]
    return obj


def _digest(path: Path) -> str:
    if path.suffix == ".parquet":
        return _parquet_digest(path)
    if path.suffix == ".fits":
        return _fits_digest(path)
    if path.name == "metrics.csv":
        rows = [r for r in _csv_rows(path) if not r.get("note")]
        kept = [{k: v for k, v in r.items() if k not in RUN_HISTORY_COLUMNS} for r in rows]
        return hashlib.sha256(json.dumps(kept).encode()).hexdigest()
    if path.name == "history.jsonl":  # a fine-tuning run's evaluations and resume notes
        lines = [line for line in path.read_text().splitlines() if '"note"' not in line]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    if path.suffix != ".json":
        return sha256_file(path)
    data = json.dumps(_without_history(json.loads(path.read_bytes())), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def _parquet_digest(path: Path) -> str:
    """The table (data, schema, field metadata), its row groups' sizes and its provenance
    without its creation time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_hpc.export.writers import PROVENANCE_KEY

    file = pq.ParquetFile(path)
    table = file.read()
    meta, key = dict(table.schema.metadata), PROVENANCE_KEY.encode()
    provenance = json.loads(meta[key])
    meta[key] = json.dumps({k: v for k, v in provenance.items() if k != CREATED})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.with_metadata(meta)) as writer:
        writer.write_table(table)
    groups = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
    return hashlib.sha256(sink.getvalue().to_pybytes() + json.dumps(groups).encode()).hexdigest()


def _fits_digest(path: Path) -> str:
    """The file's bytes with each header's DATE card blanked."""
    from astropy.io import fits

    data = bytearray(path.read_bytes())
    with fits.open(path) as hdus:
        spans = [(h.fileinfo()["hdrLoc"], h.fileinfo()["datLoc"]) for h in hdus]
    for start, end in spans:
        for card in range(start, end, 80):
            if data[card : card + 9] == FITS_CREATED:
                data[card : card + 80] = b" " * 80
    return hashlib.sha256(bytes(data)).hexdigest()


def _without_history(obj):
    if isinstance(obj, dict):
        return {k: _without_history(v) for k, v in obj.items() if k not in RUN_HISTORY}
    if isinstance(obj, list):
        return [_without_history(v) for v in obj]
    return obj


#: each training job's finished products (globs): what a rerun keeps, or a user reads,
#: once it exists, so present at a kill it must already be the clean run's
PRODUCTS = {
    "pretrain": ("encoder.pt",),
    "tune": ("sweep/trial_*/encoder.pt", "trials.csv", "summary.json"),
    "finetune": ("*/metrics.json", "*/model.pt", "*/predictions.npz", "metrics.json"),
}


def falsely_complete(out: Path, clean: dict[str, str], products: tuple[str, ...] = ()) -> list[str]:
    """Outputs a rerun or a reader would take as complete that are not (`clean`: the clean
    run's tree; `products`: globs of finished products, see PRODUCTS)."""
    problems = []
    for pattern in products:
        for path in out.glob(pattern):
            name = trial_index(str(path.relative_to(out)))
            if name in SWEEP_TABLES:  # the table's rows, not its file
                same = sweep_tree(out).get(name) == clean.get(name)
            else:
                same = _digest(path) == clean.get(name)
            if not same:
                problems.append(f"{name}: differs from the clean run's")
    for catalogue in out.glob("catalogue.*"):
        try:
            same = _digest(catalogue) == clean.get(catalogue.name)
        except Exception as e:  # a half-written file under the final name
            problems.append(f"{catalogue.name}: unreadable ({type(e).__name__}: {e})")
            continue
        if not same:
            problems.append(f"{catalogue.name}: differs from the clean run's")
    for record in out.glob("*.done"):
        done = json.loads(record.read_text())
        shard = out / done["file"]
        if not shard.is_file():
            problems.append(f"{record.name}: {done['file']} missing")
        elif sha256_file(shard) != done["sha256"]:
            problems.append(f"{record.name}: {done['file']} differs from its record")
    manifest = out / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()).get("shards", []):
            if not (out / f"{entry['file']}.done").exists():
                problems.append(f"manifest.json lists {entry['file']} without a done-record")
    return problems


def run(
    cmd: list[str],
    kill_after: float | None = None,
    kill_when=None,
    kill_at: str | None = None,
    temp: Path | None = None,
) -> tuple[int, float]:
    """Run `cmd` in its own session; SIGKILL the whole group after `kill_after` s, or as
    soon as `kill_when()` is true (polled every 5 ms); `kill_at`: it kills itself at that
    named point (SSL_HPC_KILL_AT); `temp`: its temp dir (TMPDIR; Ray's stays where it was)."""
    env = {**os.environ, "SSL_HPC_PROGRESS": "0"}
    env.pop(KILL_AT, None)
    if temp is not None:
        env["RAY_TMPDIR"] = os.environ.get("RAY_TMPDIR", tempfile.gettempdir())
        env["TMPDIR"] = str(temp)
    if kill_at is not None:
        env[KILL_AT] = kill_at
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)  # fmt: skip
    while proc.poll() is None:
        late = kill_after is not None and time.perf_counter() - t0 > kill_after
        if late or (kill_when is not None and kill_when()):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    return proc.returncode, time.perf_counter() - t0


def kill_points(wall: float, shards: int, kills: int, named: dict | None = None) -> list[dict]:
    """Where to kill: half spread over the clean run's wall time, half just after the k-th
    shard's done-record (or training checkpoint) appears (k spread over them: between
    "record written" and whatever comes next; each k once), the last of those replaced by
    `named`."""
    by_time = [{"after_s": round(wall * (k + 0.5) / (kills - kills // 2), 2)}
               for k in range(kills - kills // 2)]  # fmt: skip
    records = sorted({1 + k * max(shards - 1, 1) // max(kills // 2, 1) for k in range(kills // 2)})
    by_record = [{"after_records": n} for n in records]
    if named and kills // 2:
        by_record = by_record[: kills // 2 - 1] + [named]
    return by_time + by_record


def _temporary_in(out: Path) -> bool:
    return out.is_dir() and any(".tmp-" in p.name for p in out.iterdir())


def crash_and_resume(
    job: str, root: Path, kills: int, points: list[dict] | None = None, **job_args
) -> dict:
    """The clean run, then `kills` killed-and-rerun runs of `job`, all into the same output
    (a job's outputs record where they were written); its inputs are made once in root.
    `points`: these kill points instead (see kill_points); `job_args`: for JOBS[job]."""
    cmd, out = JOBS[job](root, **job_args)
    # The job's own temp dir: the staging its workers leave is told apart from that of any
    # other Ray job on the node (a test running beside this one left its own in CI)
    temp = Path(tempfile.mkdtemp(prefix="ssl-hpc-faults-"))
    try:
        return _crash_and_resume(job, cmd, out, kills, points, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _crash_and_resume(job, cmd, out, kills, points, temp: Path) -> dict:
    rc, wall = run(cmd, temp=temp)
    if rc != 0:
        raise RuntimeError(f"{job}: the clean run failed (exit {rc})")
    clean = tree(out)
    shards = progress(out)
    trials = []
    for point in points or kill_points(wall, shards, kills, NAMED.get(job)):
        shutil.rmtree(out)
        records = point.get("after_records")
        when = None if records is None else lambda n=records: progress(out) >= n
        if point.get("after_temporary"):
            when = functools.partial(_temporary_in, out)
        rc_killed, at = run(cmd, point.get("after_s"), when, point.get("kill_at"), temp)
        outran = 0
        while rc_killed == 0 and point.get("after_s", 0) > 0.5 and outran < 3:
            # the run finished before its kill by time (the clean run, timed on a busier
            # machine, was slower): kill the next one earlier
            outran += 1
            point = {**point, "after_s": round(point["after_s"] / 2, 2)}
            shutil.rmtree(out)
            rc_killed, at = run(cmd, point["after_s"], temp=temp)
        partial = falsely_complete(out, clean, PRODUCTS.get(job, ())) if out.exists() else []
        done_before = progress(out) if out.exists() else 0
        rc_rerun, _ = run(cmd, temp=temp)
        resumed = tree(out) if out.exists() else {}
        staging = [d.name for d in temp.glob(f"{STAGING_PREFIX}*")]
        differs = sorted(p for p in clean.keys() | resumed.keys() if clean.get(p) != resumed.get(p))
        trials.append({
            **point,
            "killed_at_s": round(at, 2),
            "killed": rc_killed == -signal.SIGKILL,
            "outran_kills": outran,
            "shards_done_at_kill": done_before,
            "falsely_complete": partial,
            "rerun_exit": rc_rerun,
            "files_differing": differs,
            "staging_left": staging,
        })  # fmt: skip
    return {"job": job, "clean_wall_s": round(wall, 2), "files": len(clean), "trials": trials}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default=",".join(JOBS))
    p.add_argument("--kills", type=int, default=12)
    p.add_argument("--work", default="runs/faults", help="scratch directory (emptied)")
    p.add_argument("--out", default="bench/results/faults.json")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import machine_info, write_results

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    results = [crash_and_resume(j, work / j, args.kills) for j in args.jobs.split(",")]
    for r in results:
        bad = [t for t in r["trials"] if t["falsely_complete"] or t["files_differing"]]
        killed = sum(t["killed"] for t in r["trials"])
        print(f"{r['job']:11s} {len(r['trials'])} kill points ({killed} landed before the end): "
              f"{len(bad)} with a difference")  # fmt: skip
    print(write_results({"machine": machine_info(), "jobs": results}, args.out))


if __name__ == "__main__":
    main()
