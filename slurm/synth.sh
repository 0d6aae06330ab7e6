#!/bin/bash
#SBATCH --job-name=ssl-hpc-synth
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --time=01:00:00
#SBATCH --output=%x-%j.out
#
# Generate a synthetic survey (HDF5 shards) with `ssl-hpc synth`, then check it with
# `ssl-hpc info`. Submit from the repo root:
#
#   sbatch --export=ALL,OUT=/path/to/survey,N=512 slurm/synth.sh
#
# Environment (pass with --export=ALL,NAME=value,...):
#   OUT           output directory (required)
#   N             number of objects (default 512)
#   CONFIG        optional config file for --config
#   EXTRA         more key=value settings, space separated, applied last, e.g.
#                 EXTRA="rows_per_shard=128 image_size=48 seed=0"
#   SSL_HPC_ROOT  repo root, when submitting from elsewhere (default: the submit dir)
# workers defaults to the allocated CPUs (--cpus-per-task).
set -euo pipefail

# sbatch runs a spool copy of this script, so its own location says nothing about the
# repo: use SSL_HPC_ROOT, else the submit directory, else (run with bash) the script's dir.
root="${SSL_HPC_ROOT:-}"
if [[ -z "$root" ]]; then
    for cand in "${SLURM_SUBMIT_DIR:-}" "$(cd "$(dirname "$0")/.." && pwd)"; do
        if [[ -n "$cand" && -f "$cand/cluster/env.sh" ]]; then root="$cand"; break; fi
    done
fi
if [[ -z "$root" || ! -f "$root/cluster/env.sh" ]]; then
    echo "synth.sh: error: cannot find the repo (no cluster/env.sh under '${root:-$PWD}');" \
        "submit from the repo root or pass --export=ALL,SSL_HPC_ROOT=/path/to/repo" >&2
    exit 2
fi
# shellcheck source=cluster/env.sh
source "$root/cluster/env.sh"

: "${OUT:?set OUT, e.g. sbatch --export=ALL,OUT=/path/to/survey,N=512 slurm/synth.sh}"
N="${N:-512}"
args=(--out "$OUT")
if [[ -n "${CONFIG:-}" ]]; then args+=(--config "$CONFIG"); fi
args+=("n_objects=$N" "workers=${SLURM_CPUS_PER_TASK:-1}")
# EXTRA is a list of key=value words: splitting it is the point.
read -r -a extra <<<"${EXTRA:-}"
args+=("${extra[@]}")

echo "synth.sh: job ${SLURM_JOB_ID:-none} on $(hostname), repo $root, $(date -Is)"
echo "synth.sh: ssl-hpc synth ${args[*]}"
start=$SECONDS
ssl-hpc synth "${args[@]}"
echo "synth.sh: synth took $((SECONDS - start)) s"
ssl-hpc info "$OUT"
echo "synth.sh: done $(date -Is)"
