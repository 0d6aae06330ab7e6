#!/usr/bin/env bash
# One device call: pretrain the published setting (ResNet-50, survey stem, bf16) on a
# synthetic survey and on the Galaxy Zoo 1 dev JPEGs, each measured against its own random
# initialisation (bench/gpu_pretrain.py). Back in $OUT: <set>/summary.json, metrics.csv and
# learning_curve.png for each set, and log.txt (7 files: the device returns at most 8).
#
# Prepare here, once (the device has no Ray, astropy or network):
#   echo /.whl/ >> .git/info/exclude   # (already in .gitignore)
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl astropy==8.0.2 \
#     astropy_healpix==2.0.1 astropy-iers-data pyerfa
#   cp -r ../shared/data/gz1_sdss_dev runs/gz1-jpeg
# then run it with carry [".whl", "runs/gz1-jpeg"] and a timeout that leaves room for a
# rerun. Estimated, never yet measured on a GPU: about 9 minutes at the default budgets
# (4 + 1.5 minutes of training; the rest start-up, survey generation, ingest and the
# measurements, whose linear heads train on the CPU). SYNTH_MIN and GZ1_MIN shrink it.
#
# A 2-core CPU check of the whole path (13 minutes on the 2-core VM, most of it the
# measurements: kNN, invariance and probes of two networks per set):
#   N_OBJECTS=2000 SYNTH_MIN=0.3 GZ1_MIN=0.3 DEVICE=cpu REPEATS=1 \
#     SYNTH_EXTRA="arch=resnet18 batch_size=32 eval_objects=256 loader_workers=0" \
#     GZ1_EXTRA="arch=resnet18 batch_size=32 eval_objects=256 loader_workers=0" bash bench/gpu_pretrain.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu-pretrain}
WORK=${WORK:-/tmp/gpu-pretrain}
N_OBJECTS=${N_OBJECTS:-40000}
SYNTH_MIN=${SYNTH_MIN:-4}
GZ1_MIN=${GZ1_MIN:-1.5}
REPEATS=${REPEATS:-3}
DEVICE=${DEVICE:-cuda}
CPUS=$(nproc)
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
PY=${PYTHON:-python3}

step() {  # name, command...: run it, keep its output in the log, say how it ended
  local name=$1; shift
  echo "== $name ($(date +%T))" | tee -a "$LOG"
  "$@" 2>&1 | grep -v -i "warn" | tee -a "$LOG" | tail -n 8
  echo "$name rc=${PIPESTATUS[0]}" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || lscpu | head -20; } >>"$LOG"

# 107 px cutouts as the published ones: a rotated 64 px view jittered by 7 px stays inside
step synth $PY -m jobs.cli synth --out "$WORK/synth" n_objects="$N_OBJECTS" image_size=107 \
  rows_per_shard=2000 workers="$CPUS" seed=0
step pretrain_synth $PY bench/gpu_pretrain.py --data "$WORK/synth" \
  --config jobs/configs/pretrain-gpu.yaml --minutes "$SYNTH_MIN" --out "$OUT/synth" \
  --work "$WORK/synth-run" --device "$DEVICE" --repeats "$REPEATS" \
  --tasks photoz,smooth_or_featured ${SYNTH_EXTRA:-}

# the dev JPEGs at the README's scale for real cutouts (212 px of 423 resized to 107 px)
step ingest_gz1 $PY -m jobs.cli ingest --catalog runs/gz1-jpeg/labels.csv \
  --images runs/gz1-jpeg/images --out "$WORK/gz1" --id-column objid --label-columns class \
  --bands i,r,g --crop 212 --resize 107 --pixel-scale 0.396 --on-error skip \
  --ra-column '' --dec-column '' --workers "$CPUS"
# pretrain-gz1.yaml's recipe at GPU scale: ResNet-50, batch 256, 64 px views embedded
# through the central 80 px; the queue stays shorter than an epoch of the 2,000 galaxies
step pretrain_gz1 $PY bench/gpu_pretrain.py --data "$WORK/gz1" \
  --config jobs/configs/pretrain-gz1.yaml --minutes "$GZ1_MIN" --out "$OUT/gz1" \
  --work "$WORK/gz1-run" --device "$DEVICE" --repeats "$REPEATS" \
  --test-ids jobs/splits/gz1_sdss_dev_test.csv \
  arch=resnet50 batch_size=256 precision=bf16 loader_workers=6 steps=800 warmup_steps=50 \
  base_lr=0.3 queue_size=1024 augment.out_size=64 augment.max_shift=7 embed_size=80 \
  log_every=50 eval_every=200 eval_objects=2048 ${GZ1_EXTRA:-}
grep "rc=" "$LOG"
