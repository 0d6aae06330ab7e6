#!/usr/bin/env bash
# One device session: the CUDA tests, then the throughput benchmarks; JSON + one log in $OUT.
#
# Runs on a GPU machine's own Python (torch, triton; no Ray): tests and benchmarks call the
# library directly from the checkout. Missing pure-Python packages (kornia) travel as
# wheels in .whl/. Every step has its own time limit, and a failed step leaves the others.
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
# which steps to run (a rerun can repeat only some): tests augment train_eager train_compile embed
STEPS=" ${STEPS:-tests augment train_eager train_compile embed} "
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-16}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$LOG"

step() {  # name, seconds, command...: run with a limit, log, print the tail and the status
  local name=$1 limit=$2; shift 2
  [[ "$STEPS" == *" ${name%%_b*} "* || "$STEPS" == *" $name "* ]] || return 0
  echo "== $name ($(date +%T))" | tee -a "$LOG"
  timeout "$limit" "$@" >"/tmp/step-$name.log" 2>&1
  local rc=$?
  cat "/tmp/step-$name.log" >>"$LOG"
  grep -v -i "warn" "/tmp/step-$name.log" | tail -n 12
  echo "$name rc=$rc" | tee -a "$OUT/status.txt"
}

step tests 100 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_augment_kernels.py
step augment_b256 80 python3 bench/augment.py --device cuda --out "$OUT/augment-cuda.json"
step augment_b1024 80 python3 bench/augment.py --device cuda --batch 1024 --rounds 5 \
  --out "$OUT/augment-cuda-b1024.json"
step train_eager 130 python3 bench/train_step.py --device cuda --archs resnet18,resnet50 \
  --variants fp32,bf16,bf16-cl --out "$OUT/train_step-eager.json"
step train_compile 200 python3 bench/train_step.py --device cuda --archs resnet50 \
  --variants bf16-cl-compile --loader-variant bf16-cl-compile --out "$OUT/train_step-compile.json"
step embed 120 python3 bench/embed.py --device cuda --out "$OUT/embed-cuda.json"
cat "$OUT/status.txt"
