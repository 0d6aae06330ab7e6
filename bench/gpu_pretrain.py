"""Pretrain on one device for a fixed time, then measure what the encoder learned.

For a lent GPU machine, which has no Ray: this drives `Pretrainer` directly (one rank, the
same model, augmentations, schedule and checkpoint format as a Ray run) so the published
setting (ResNet-50, survey stem, bf16, batch 256) gets trained at a scale the 2-core CPU
cannot reach. After training it measures, on the same galaxies, the trained encoder
against the same network at its random initialisation:

- kNN photo-z and morphology, random-pair cosine and invariance (`against_random_init`);
- linear probes on the frozen vectors of every labelled object, per task, at each label
  fraction and repeat (`probe_study`; `--test-ids` scores every repeat on a published
  test set), mean +- std.

OUT gets summary.json (the figures, the machine, steps and pairs/s), metrics.csv and
learning_curve.png; the encoder stays in --work (too large to bring back from a device).
The run stops at `--minutes` of training even if the schedule (`steps`) is unfinished,
and the summary says so.

example (a 2-core CPU check of the whole path, 2 to 3 minutes on the 2-core VM):
  python bench/gpu_pretrain.py --data runs/demo/survey --config jobs/configs/pretrain-demo.yaml \\
      --minutes 0.5 --out /tmp/gpu-check steps=20 eval_objects=256 --repeats 1 --tasks photoz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from harness import machine_info, write_results

from ssl_hpc.config import load_config, to_dict
from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.representation import against_random_init, untrained_encoder
from ssl_hpc.downstream.study import probe_study
from ssl_hpc.downstream.tasks import check_fractions, read_test_ids
from ssl_hpc.models.checkpoint import EncoderCheckpoint
from ssl_hpc.models.inference import centre_crops, embed
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.export import plot_learning_curve, write_encoder
from ssl_hpc.train.metrics_log import MetricsLog
from ssl_hpc.train.pretrainer import Pretrainer, Throughput


class OutOfTime(Exception):
    """Raised after a step once the training budget is spent."""


def train_for(trainer: Pretrainer, seconds: float, log: MetricsLog) -> dict:
    """Train until the schedule ends or `seconds` pass, logging loss and pairs/s every
    `log_every` steps and the kNN check every `eval_every`; returns what happened."""
    cfg = trainer.config
    clock = Throughput(trainer.device)
    rates: list[float] = []
    start = time.perf_counter()

    def on_step(t: Pretrainer, stats: dict) -> None:
        row: dict = {"step": t.step, "epoch": t.epoch}
        if t.step % cfg.log_every == 0 or t.step == cfg.steps:
            rate = clock.lap(t.step, cfg.batch_size)
            rates.append(rate)
            row.update(loss=float(stats["loss"]), lr=t.current_lr(), pairs_per_s_total=rate)
            if "top1" in stats:
                row["top1"] = float(stats["top1"])
            print(f"step {t.step}: loss {row['loss']:.3f}, {rate:.0f} pairs/s", flush=True)
        out_of_time = time.perf_counter() - start > seconds
        if t.step % cfg.eval_every == 0 or t.step == cfg.steps or out_of_time:
            row.update(t.evaluate())
            clock.restart(t.step)  # throughput counts training only
        if len(row) > 2:
            log.write(row)
        if out_of_time:
            raise OutOfTime

    try:
        trainer.train(cfg.steps, on_step)
        finished = True
    except OutOfTime:
        finished = False
    return {
        "steps_done": trainer.step,
        "steps_scheduled": cfg.steps,
        "schedule_finished": finished,
        "train_s": time.perf_counter() - start,
        # the first interval holds start-up (cuDNN autotuning, loader workers)
        "pairs_per_s_median": float(np.median(rates[1:] or rates)) if rates else None,
    }


def survey_vectors(
    encoder: torch.nn.Module, survey: Survey, window: int, device, precision: str
) -> np.ndarray:
    """(N, D) vectors of every object of `survey` (survey order), `window` px centre crops,
    the encoder moved to `device`, a chunk of objects at a time."""
    encoder = encoder.to(device)
    chunk = 8192
    parts = []
    for first in range(0, len(survey), chunk):
        rows = np.arange(first, min(first + chunk, len(survey)))
        crops = centre_crops(survey, rows, window)
        parts.append(embed(encoder, crops, device, precision=precision).numpy())
    return np.concatenate(parts)


def mean_curves(summary: dict) -> dict:
    """{task: {score, curve: [{fraction, n_train, mean, std, ...}, ...]}} of a probe_study
    summary (its curve rows follow its fractions)."""
    return {
        name: {
            "score": result["score"],
            "answers": result["answers"],
            "curve": [
                {"fraction": f, **row}
                for f, row in zip(summary["fractions"], result["curve"], strict=True)
            ],
        }
        for name, result in summary["tasks"].items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="survey directory (synth or ingest)")
    p.add_argument("--config", required=True, help="pretraining config YAML")
    p.add_argument("--minutes", type=float, required=True, help="training budget")
    p.add_argument("--out", required=True, help="summary.json, metrics.csv, learning_curve.png")
    p.add_argument("--work", help="where encoder.pt goes (default OUT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fractions", default="0.05,0.1,0.2,1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tasks", help="comma-separated probe tasks (default: every labelled one)")
    p.add_argument("--test-ids", help="a published test set (object ids) for every repeat")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args()

    out = Path(args.out)
    work = Path(args.work or args.out)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    config = load_config(PretrainConfig, args.config, ["num_workers=1", *args.overrides])
    survey = Survey(args.data)
    trainer = Pretrainer(config, survey, device=args.device)
    print(
        f"{args.device}: {config.arch}, {trainer.precision}, batch {config.batch_size}", flush=True
    )

    log = MetricsLog(out / "metrics.csv")
    log.write({"step": 0, "epoch": 0, **trainer.evaluate()})  # random initialisation
    training = train_for(trainer, args.minutes * 60, log)
    encoder_path = write_encoder(work / "encoder.pt", trainer.state_dict(), config, survey.bands)
    plot_learning_curve(out / "metrics.csv", out / "learning_curve.png")

    checkpoint = EncoderCheckpoint(encoder_path)
    started = time.perf_counter()
    representation = against_random_init(
        checkpoint, survey, precision=trainer.precision, device=args.device
    )
    fractions = check_fractions([float(f) for f in args.fractions.split(",")])
    tasks = args.tasks.split(",") if args.tasks else None
    test_ids = read_test_ids(args.test_ids) if args.test_ids else None
    probes = {}
    encoders = {
        "trained": checkpoint.encoder(),
        "random_init": untrained_encoder(checkpoint, survey),
    }
    for name, encoder in encoders.items():
        vectors = survey_vectors(encoder, survey, checkpoint.crop, args.device, trainer.precision)
        summary = probe_study(
            vectors,
            survey,
            work / f"probe-{name}",
            tasks,
            fractions,
            args.repeats,
            test_ids=test_ids,
        )
        probes[name] = mean_curves(summary)
    results = {
        "benchmark": "gpu_pretrain",
        "machine": machine_info(args.device),
        "data": str(Path(args.data).resolve()),
        "objects": len(survey),
        "config": to_dict(config),
        "precision": trainer.precision,
        "training": training,
        "measure_s": time.perf_counter() - started,
        "representation": representation,
        "probes": probes,
    }
    write_results(results, out / "summary.json")
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
