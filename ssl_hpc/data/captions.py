"""Which objects to show, and what to write under each."""

from __future__ import annotations

import numpy as np

from ..errors import SslHpcError
from .labels import GZ1_CLASS_NAMES, spec_z
from .survey import Survey


def select_rows(survey: Survey, how: str, n: int, seed: int = 0) -> np.ndarray:
    """Global rows of up to `n` objects: random, labelled, unlabelled, anomalies or first."""
    if n < 1:
        raise SslHpcError(f"--n {n}: must be >= 1")
    total = len(survey)
    cols = survey.manifest.columns
    if how == "first":
        return np.arange(min(n, total))
    if how in ("labelled", "unlabelled"):
        if "z_spec" not in cols:
            raise SslHpcError(f"{survey.root}: no z_spec column to select {how} objects by")
        has = np.isfinite(spec_z(survey))  # a -9999 or 0 placeholder is no redshift
        pool = np.flatnonzero(has if how == "labelled" else ~has)
    elif how == "anomalies":
        if "is_anomaly" not in cols:
            raise SslHpcError(f"{survey.root}: no is_anomaly column (not a synthetic survey)")
        pool = np.flatnonzero(survey.column("is_anomaly") > 0)
    else:
        pool = np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, min(n, len(pool)), replace=False))


def captions(survey: Survey, rows: np.ndarray) -> list[str]:
    """One caption per row: id, then z_spec / true class / GZ answer / anomaly when known."""
    cols = survey.manifest.columns
    gen = survey.manifest.generator
    get = {
        name: survey.column(name)[rows]
        for name in ("morph_class", "anomaly_kind", "gz2_smooth", "gz2_features")
        if name in cols
    }
    if "z_spec" in cols:
        get["z_spec"] = spec_z(survey)[rows]
    label_cols = [c for c in cols if c.startswith("label_") or c == "class"]
    for c in label_cols:
        get[c] = survey.column(c)[rows]
    ids = survey.column("object_id")[rows]
    out = []
    for i, oid in enumerate(ids):
        parts = [str(oid)]
        if "z_spec" in get and np.isfinite(get["z_spec"][i]):
            parts.append(f"z={get['z_spec'][i]:.3f}")
        if "morph_class" in get and "morph_classes" in gen:
            parts.append(gen["morph_classes"][int(get["morph_class"][i])].replace("_", " "))
        if "gz2_smooth" in get and np.isfinite(get["gz2_smooth"][i]):
            parts.append(f"GZ smooth {get['gz2_smooth'][i]:.2f}")
        if "anomaly_kind" in get and get["anomaly_kind"][i] > 0 and "anomaly_kinds" in gen:
            parts.append("ANOMALY " + gen["anomaly_kinds"][int(get["anomaly_kind"][i])])
        for c in label_cols:
            value = get[c][i]
            if c == "class" and np.issubdtype(type(value), np.integer):  # Galaxy Zoo 1 leaf
                value = GZ1_CLASS_NAMES[value] if 0 <= value < len(GZ1_CLASS_NAMES) else value
            parts.append(f"{c}={value}")
        out.append("\n".join([parts[0], " ".join(parts[1:3]), " ".join(parts[3:])]).strip())
    return out
