#!/bin/bash
#SBATCH --job-name=ssl-hpc-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#SBATCH --output=%x-%j.out
#
# Contrastive pretraining on Ray Train across the job's nodes: a Ray cluster over the
# allocation (cluster/ray_slurm.sh: head on the first node, a worker on each other, ports
# from the job id), then `ssl-hpc pretrain --address` as the driver. Submit from the repo root, e.g. 2 nodes x 4 GPUs:
#
#   sbatch --nodes=2 --gpus-per-node=4 --cpus-per-task=32 \
#       --export=ALL,DATA=/scratch/sdss,OUT=/scratch/run1 slurm/pretrain.sh
#
# Environment (--export=ALL,NAME=value,...):
#   DATA, OUT       survey directory and run directory (required; OUT is resumed)
#   CONFIG          config file (default jobs/configs/pretrain.yaml)
#   EXTRA           more key=value settings, space separated, applied last
#   WORKERS_PER_NODE  Ray Train workers per node (default: GPUs per node, else 1)
#   SSL_HPC_ROOT    repo root when submitting from elsewhere (default: the submit dir)
#
# Requeue: at 5 minutes before the time limit (USR1) or on preemption the job requeues
# itself; the next start resumes OUT from its latest checkpoint.
set -euo pipefail

root="${SSL_HPC_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}"
if [[ ! -f "$root/cluster/env.sh" ]]; then
    echo "pretrain.sh: error: no cluster/env.sh under '$root'; submit from the repo root" \
        "or pass --export=ALL,SSL_HPC_ROOT=/path/to/repo" >&2
    exit 2
fi
# shellcheck source=cluster/env.sh
source "$root/cluster/env.sh"
: "${DATA:?set DATA, the survey directory}"
: "${OUT:?set OUT, the run directory}"
CONFIG="${CONFIG:-$SSL_HPC_ROOT/jobs/configs/pretrain.yaml}"

# shellcheck source=cluster/ray_slurm.sh
source "$SSL_HPC_ROOT/cluster/ray_slurm.sh"
# shellcheck source=cluster/requeue.sh
source "$SSL_HPC_ROOT/cluster/requeue.sh"
requeue_on_usr1 pretrain.sh
ray_slurm_start pretrain.sh
per_node="${WORKERS_PER_NODE:-$((RAY_SLURM_GPUS > 0 ? RAY_SLURM_GPUS : 1))}"

read -r -a extra <<<"${EXTRA:-}"
use_gpu=$([[ $RAY_SLURM_GPUS -gt 0 ]] && echo true || echo false)
cpw=$((RAY_SLURM_CPUS / per_node > 0 ? RAY_SLURM_CPUS / per_node : 1))
echo "pretrain.sh: $((RAY_SLURM_NODES * per_node)) Ray Train worker(s), $cpw CPUs each"
run_requeueable python -u -m jobs.cli pretrain \
    --data "$DATA" --out "$OUT" --config "$CONFIG" \
    --address "$RAY_SLURM_ADDRESS" "num_workers=$((RAY_SLURM_NODES * per_node))" \
    "use_gpu=$use_gpu" \
    "cpus_per_worker=$cpw" "${extra[@]}"
echo "pretrain.sh: done $(date -Is)"
