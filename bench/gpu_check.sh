#!/usr/bin/env bash
# One device session: the CUDA tests, then the throughput benchmarks, JSON under $OUT.
#
# Runs on a GPU machine's own Python (torch, triton; no Ray): tests and benchmarks call the
# library directly from the checkout. Missing pure-Python packages (kornia) travel as
# wheels in .whl/. Each step's log goes to $OUT, so a step that fails leaves the others.
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/device.txt"

step() {  # name, command...: run, log, remember the status
  local name=$1; shift
  echo "== $name" >&2
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$OUT/$name.log"
  echo "$name rc=$rc" | tee -a "$OUT/status.txt"
}

step tests python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_augment_kernels.py
step augment_b256 python3 bench/augment.py --device cuda --out "$OUT/augment-cuda.json"
step augment_b1024 python3 bench/augment.py --device cuda --batch 1024 --rounds 5 \
  --out "$OUT/augment-cuda-b1024.json"
cat "$OUT/status.txt"
