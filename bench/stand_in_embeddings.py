"""A stand-in embedding set for a survey: synthetic unit vectors in place of an encoder's.

For timing the search server at survey scale on a CPU machine, where embedding 10^6
cutouts with a real encoder would take hours. The set has the real on-disk format (one
shard per survey shard, done-records, run.json naming the survey, manifest), so
`ssl-hpc search`, `ssl-hpc serve` and `bench/serve_load.py` open it like any other; only
its vectors carry no meaning (checkpoint sha256 "stand-in"). Seeded; rerunning rewrites.

Vectors: with --like EMB, drawn from a Gaussian mixture fitted to a real set's leading
principal components (plus isotropic noise carrying the rest of its variance), so they
have a real encoder's spectrum and clustering: that is what ANN recall depends on. Without
it, bench/search.py's clumps (300 Gaussian clumps in all D dimensions).

usage: python bench/stand_in_embeddings.py --data runs/survey-1e6 --out runs/emb-1e6
                                           [--like runs/demo/embeddings] [--dim 512]
                                           [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from search import clumped
from sklearn.mixture import GaussianMixture

from ssl_hpc.data.sharded_job import ShardPlan, claim_dir, record
from ssl_hpc.data.survey import Survey
from ssl_hpc.embed import load, store
from ssl_hpc.utils.arrays import normalise
from ssl_hpc.utils.atomic import write_json_atomic


def like(real: np.ndarray, n: int, seed: int, pcs: int = 32, components: int = 32):
    """(n, D) unit vectors distributed like the unit vectors of `real` (N, D)."""
    x = normalise(real)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / (len(x) - 1)
    z = (x - mean) @ vt[:pcs].T
    gmm = GaussianMixture(components, covariance_type="full", random_state=seed).fit(z)
    gmm.random_state = seed
    sample, _ = gmm.sample(n)  # grouped by component: shuffle so shards mix them
    sample = sample[np.random.default_rng(seed).permutation(n)].astype(np.float32)
    rest = float(np.sqrt(var[pcs:].sum() / x.shape[1]))
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, x.shape[1]), np.float32)
    for a in range(0, n, 100_000):
        b = min(a + 100_000, n)
        noise = rest * rng.standard_normal((b - a, x.shape[1]), dtype=np.float32)
        out[a:b] = normalise(mean + sample[a:b] @ vt[:pcs] + noise)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="survey directory")
    p.add_argument("--out", required=True, help="embedding set directory to write")
    p.add_argument("--like", help="real embedding set whose distribution to imitate")
    p.add_argument("--dim", type=int, default=512, help="vector length (without --like)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    survey = Survey(args.data)
    out = Path(args.out)
    identity = {
        "schema": store.SCHEMA,
        "checkpoint_sha256": None,  # no encoder made these: any may embed a query
        "survey_content_sha256": survey.manifest.content_sha256,
        "with_head": False,
        "field": 0,
        "precision": "fp32",
    }
    info = {"checkpoint": "stand-in", "survey": str(survey.root.resolve())}
    digest = claim_dir(out, "stand-in embeddings", identity, info, name=store.RUN_FILE)
    ra, dec, ids = survey.column("ra"), survey.column("dec"), survey.column("object_id")
    if args.like:
        vectors = like(load(args.like).load()[1], len(survey), seed=args.seed)
    else:
        vectors = clumped(len(survey), args.dim, seed=args.seed)
    records = []
    for i, (a, n) in enumerate(zip(survey.shard_offsets, survey.shard_sizes)):
        rows = slice(int(a), int(a + n))
        plan = ShardPlan(i, str(store.shard_path(out, i)), int(n))
        entry = store.write_embedding_shard(
            Path(plan.path), identity, ids[rows], ra[rows], dec[rows], vectors[rows]
        )
        records.append(record(plan, digest, entry, {}).entry)
    manifest = {
        **identity,
        **info,
        "dim": vectors.shape[1],
        "projection_dim": None,
        "dtype": "float32",
        "n_objects": len(survey),
        "shards": [
            {"file": e.file, "n_rows": e.n_rows, "bytes": e.n_bytes, "sha256": e.sha256}
            for e in records
        ],
    }
    write_json_atomic(out / store.MANIFEST, manifest)
    took = time.perf_counter() - t0
    print(f"{out}: {len(survey)} x {vectors.shape[1]} stand-in vectors in {took:.0f} s")


if __name__ == "__main__":
    main()
