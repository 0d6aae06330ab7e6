"""Do two commits give the same outputs? Runs synth, ingest, embed and report from each commit
on the same inputs and seeds, and compares every array bit for bit and every report metric.

A refactor claims "behaviour stays the same"; this checks it. Each commit is checked out in a
temporary git worktree and run with this environment's Python (the dependencies are shared),
through its own console module (``jobs.cli``, or ``ssl_hpc.cli`` before it moved). Arrays are
compared by the sha256 of their bytes (HDF5 file bytes hold timestamps and attribute names, so
files are not compared whole); the report's metrics.json by value, with the paths and times
that name the run directory left out.

  python tools/same_outputs.py 5703a41 HEAD --checkpoint runs/demo/pretrain --out same.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: metric keys that hold paths, times or versions rather than results
VOLATILE = {"path", "paths", "root", "created", "seconds", "elapsed_s", "data", "checkpoint"}


def array_digests(root: Path) -> dict[str, str]:
    """sha256 of every dataset in every HDF5 file and every array in every .npz under root."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                f.visititems(lambda name, obj, rel=rel: _dataset(out, f"{rel}:{name}", obj))
        elif path.suffix == ".npz":
            with np.load(path) as z:
                for key in sorted(z.files):
                    out[f"{rel}:{key}"] = _sha(np.ascontiguousarray(z[key]))
    return out


def _dataset(out: dict, key: str, obj) -> None:
    if isinstance(obj, h5py.Dataset):
        out[key] = _sha(np.ascontiguousarray(obj[()]))


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(
        array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()
    ).hexdigest()


def results_only(value):
    """metrics.json without the keys that name paths or times."""
    if isinstance(value, dict):
        return {k: results_only(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [results_only(v) for v in value]
    return value


def run_commit(commit: str, work: Path, checkpoint: Path) -> dict:
    """Check out `commit`, run the pipeline into `work`, return digests and metrics."""
    tree = work / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit],
        check=True,
        capture_output=True,
    )
    try:
        cli = "jobs.cli" if (tree / "jobs" / "cli.py").exists() else "ssl_hpc.cli"
        env = {**os.environ, "PYTHONPATH": str(tree), "CUDA_VISIBLE_DEVICES": ""}

        def ssl_hpc(*argv: str) -> None:
            cmd = [sys.executable, "-m", cli, *argv]
            r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"{commit}: {' '.join(argv[:1])} failed:\n{r.stderr[-3000:]}")

        gz1 = REPO / "tests" / "data" / "gz1_sdss"
        ssl_hpc(
            "synth",
            "--out",
            "survey",
            "--config",
            str(tree / "jobs/configs/synth.yaml"),
            "n_objects=4096",
            "rows_per_shard=1024",
            "workers=2",
            "seed=0",
        )
        ssl_hpc(
            "ingest",
            "--catalog",
            str(gz1 / "labels.csv"),
            "--images",
            str(gz1 / "images"),
            "--out",
            "gz1",
            "--id-column",
            "objid",
            "--label-columns",
            "class",
            "--bands",
            "i,r,g",
            "--crop",
            "128",
            "--resize",
            "64",
            "--pixel-scale",
            "0.396",
            "--ra-column",
            "",
            "--dec-column",
            "",
        )
        ssl_hpc(
            "embed",
            "--checkpoint",
            str(checkpoint),
            "--data",
            "survey",
            "--out",
            "emb",
            "--batch-size",
            "128",
        )
        ssl_hpc(
            "report",
            "--embeddings",
            "emb",
            "--data",
            "survey",
            "--out",
            "report",
            "--map-points",
            "300",
        )
        metrics = json.loads((work / "report" / "metrics.json").read_text())
        return {
            "commit": subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip(),
            "arrays": {part: array_digests(work / part) for part in ("survey", "gz1", "emb")},
            "report_arrays": array_digests(work / "report"),
            "metrics": results_only(metrics),
        }
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
            capture_output=True,
        )


def compare(a: dict, b: dict) -> dict:
    """Per output: how many arrays, how many identical, which differ."""
    rows = {}
    for part in a["arrays"]:
        x, y = a["arrays"][part], b["arrays"][part]
        common = sorted(set(x) & set(y))
        rows[part] = {
            "arrays": len(common),
            "identical": sum(x[k] == y[k] for k in common),
            "differ": [k for k in common if x[k] != y[k]],
            "only_before": sorted(set(x) - set(y)),
            "only_after": sorted(set(y) - set(x)),
        }
    x, y = a["report_arrays"], b["report_arrays"]
    common = sorted(set(x) & set(y))
    rows["report arrays"] = {
        "arrays": len(common),
        "identical": sum(x[k] == y[k] for k in common),
        "differ": [k for k in common if x[k] != y[k]],
    }
    rows["report metrics"] = {
        "identical": a["metrics"] == b["metrics"],
        "differ": _differences(a["metrics"], b["metrics"]),
    }
    return rows


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{where}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (u, v) in enumerate(zip(a, b)) for d in _differences(u, v, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where}: {a!r} -> {b!r}"[:200]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument(
        "--checkpoint", required=True, help="a pretraining run (encoder.pt) to embed with"
    )
    p.add_argument("--out", default="same_outputs.json")
    args = p.parse_args()
    checkpoint = Path(args.checkpoint).resolve()
    runs = []
    for commit in (args.before, args.after):
        with tempfile.TemporaryDirectory(prefix="same-outputs-") as work:
            runs.append(run_commit(commit, Path(work), checkpoint))
            print(f"{commit}: ran", file=sys.stderr)
    result = {"before": runs[0]["commit"], "after": runs[1]["commit"], "parts": compare(*runs)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    for part, row in result["parts"].items():
        if "arrays" in row:
            print(
                f"{part:15s} {row['identical']}/{row['arrays']} arrays identical"
                + (f"; differ: {row['differ'][:5]}" if row["differ"] else "")
            )
        else:
            print(f"{part:15s} {'identical' if row['identical'] else 'DIFFER'} {row['differ'][:8]}")
    same = all(not row["differ"] for row in result["parts"].values())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
