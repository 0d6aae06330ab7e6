#!/bin/bash
#SBATCH --job-name=ssl-hpc-tune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#SBATCH --output=%x-%j.out
#
# A Ray Tune sweep (hyperparameters, augmentation ablation) across the job's nodes: a Ray
# cluster over the allocation (cluster/ray_slurm.sh, shared with pretrain.sh), then
# `ssl-hpc tune --address` as the driver. Each trial is a Ray Train run of
# WORKERS_PER_TRIAL workers; as many trials run at once as the cluster holds (GPUs /
# GPUs per trial, or CPUs / CPUs per trial). Submit from the repo root, e.g. 2 nodes x 4
# GPUs, 8 one-GPU trials at a time:
#
#   sbatch --nodes=2 --gpus-per-node=4 --cpus-per-task=32 \
#       --export=ALL,DATA=/scratch/sdss,OUT=/scratch/sweep1,CONFIG=my-sweep.yaml slurm/tune.sh
#
# Environment (--export=ALL,NAME=value,...):
#   DATA, OUT          survey directory and sweep directory (required; OUT is resumed)
#   CONFIG             sweep file (default jobs/configs/tune-ablation.yaml)
#   EXTRA              more base-config key=value settings, space separated, applied last
#   WORKERS_PER_TRIAL  Ray Train workers per trial (default 1)
#   CPUS_PER_WORKER    CPUs per worker (default: CPUs per node / GPUs per node on GPU
#                      nodes, else the sweep's base config)
#   SSL_HPC_ROOT       repo root when submitting from elsewhere (default: the submit dir)
#
# Requeue: at 5 minutes before the time limit (USR1) or on preemption the job requeues
# itself; the next start restores the sweep: finished trials are kept, unfinished ones
# continue from their latest checkpoints.
set -euo pipefail

root="${SSL_HPC_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}"
if [[ ! -f "$root/cluster/env.sh" ]]; then
    echo "tune.sh: error: no cluster/env.sh under '$root'; submit from the repo root" \
        "or pass --export=ALL,SSL_HPC_ROOT=/path/to/repo" >&2
    exit 2
fi
# shellcheck source=cluster/env.sh
source "$root/cluster/env.sh"
: "${DATA:?set DATA, the survey directory}"
: "${OUT:?set OUT, the sweep directory}"
CONFIG="${CONFIG:-$SSL_HPC_ROOT/jobs/configs/tune-ablation.yaml}"

# shellcheck source=cluster/ray_slurm.sh
source "$SSL_HPC_ROOT/cluster/ray_slurm.sh"
# shellcheck source=cluster/requeue.sh
source "$SSL_HPC_ROOT/cluster/requeue.sh"
requeue_on_usr1 tune.sh
ray_slurm_start tune.sh

read -r -a extra <<<"${EXTRA:-}"
settings=("num_workers=${WORKERS_PER_TRIAL:-1}")
if ((RAY_SLURM_GPUS > 0)); then
    settings+=("use_gpu=true"
        "cpus_per_worker=${CPUS_PER_WORKER:-$((RAY_SLURM_CPUS / RAY_SLURM_GPUS))}")
elif [[ -n "${CPUS_PER_WORKER:-}" ]]; then
    settings+=("cpus_per_worker=$CPUS_PER_WORKER")
fi
run_requeueable python -u -m jobs.cli tune \
    --data "$DATA" --out "$OUT" --config "$CONFIG" \
    --address "$RAY_SLURM_ADDRESS" "${settings[@]}" "${extra[@]}"
echo "tune.sh: done $(date -Is)"
