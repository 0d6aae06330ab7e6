"""Anomaly detection by an encoder at its random initialisation, for comparison.

Embeds a synthetic survey's galaxy and field views (and the galaxy's texture) with the
network of a pretraining checkpoint at its starting weights (input scaled as the trained
one's), through the window `ssl-hpc embed` uses, scores them as `ssl-hpc report` does, and
prints each injected kind's best ROC AUC with its 90% interval.

  python tools/anomaly_random_init.py runs/demo/anomaly-check/survey runs/demo/pretrain/encoder.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.anomaly import detection_by_view, score_views
from ssl_hpc.downstream.representation import untrained_encoder
from ssl_hpc.models.checkpoint import EncoderCheckpoint
from ssl_hpc.models.inference import centre_crop, embed, field_view, textures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("survey")
    p.add_argument("checkpoint")
    p.add_argument("--texture-stage", type=int, default=1, help="as ssl-hpc embed's; 0: none")
    args = p.parse_args()
    stage = args.texture_stage
    survey = Survey(args.survey)
    checkpoint = EncoderCheckpoint(args.checkpoint)
    size = checkpoint.crop  # the window `ssl-hpc embed` put the trained encoder through
    encoder = untrained_encoder(checkpoint, survey)
    galaxy, field, texture = [], [], []
    for start in range(0, len(survey), 2048):
        images = survey.images(np.arange(start, min(start + 2048, len(survey))))
        images = images.astype(np.float32)
        crops = np.ascontiguousarray(centre_crop(images, size))
        crops = torch.from_numpy(crops)
        galaxy.append(embed(encoder, crops, "cpu", precision="bf16").numpy())
        if stage:
            texture.append(textures(encoder, crops, "cpu", stage, precision="bf16").numpy())
        whole = field_view(images, size)
        if whole is not None:  # None: cutouts under two windows wide
            field.append(embed(encoder, torch.from_numpy(whole), "cpu", precision="bf16").numpy())
    scores, rank_by = score_views(
        np.vstack(galaxy),
        np.vstack(field) if field else None,
        texture=np.vstack(texture) if texture else None,
    )
    kind = survey.column("anomaly_kind")
    names = survey.manifest.generator.get("anomaly_kinds", [])
    detection = detection_by_view(
        scores, kind > 0, {names[i]: kind == i for i in range(1, len(names))}
    )
    print(
        f"ranking score {'/'.join(rank_by)}: ROC AUC {detection['/'.join(rank_by)]['roc_auc']:.3f}"
    )
    for name, best in detection["best_by_kind"].items():
        low, high = best["roc_auc_90"]
        print(
            f"{name:16s} {best['roc_auc']:.3f} ({low:.2f}-{high:.2f}, "
            f"n = {best['n']}; {best['score']})"
        )


if __name__ == "__main__":
    main()
