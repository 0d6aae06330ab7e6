#!/bin/bash
#SBATCH --job-name=ssl-hpc-embed
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
#
# Embed a whole survey with a trained encoder: one MPI rank per task (per GPU), whole
# shards per rank, resumable (a requeued or resubmitted job embeds only what is missing).
# Submit from the repo root, e.g. 4 nodes x 4 GPUs:
#
#   sbatch --nodes=4 --ntasks-per-node=4 --gpus-per-task=1 --cpus-per-task=8 \
#       --export=ALL,CKPT=/scratch/run1,DATA=/scratch/sdss,OUT=/scratch/emb1 slurm/embed.sh
#
# Environment (--export=ALL,NAME=value,...):
#   CKPT, DATA, OUT  pretraining run (or its encoder.pt), survey, embedding directory
#   EXTRA            more embed options, e.g. EXTRA="--pca 64 --batch-size 1024"
#   LAUNCHER         how to start the ranks (default: mpiexec -n $SLURM_NTASKS, which
#                    launches through Slurm; with a site MPI built for it: "srun --mpi=pmix")
#   SSL_HPC_ROOT     repo root when submitting from elsewhere (default: the submit dir)
set -euo pipefail

root="${SSL_HPC_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}"
if [[ ! -f "$root/cluster/env.sh" ]]; then
    echo "embed.sh: error: no cluster/env.sh under '$root'; submit from the repo root" \
        "or pass --export=ALL,SSL_HPC_ROOT=/path/to/repo" >&2
    exit 2
fi
# shellcheck source=cluster/env.sh
source "$root/cluster/env.sh"
: "${CKPT:?set CKPT, the pretraining run directory or its encoder.pt}"
: "${DATA:?set DATA, the survey directory}"
: "${OUT:?set OUT, the embedding directory}"
ntasks="${SLURM_NTASKS:-1}"
read -r -a launcher <<<"${LAUNCHER:-mpiexec -n $ntasks}"
read -r -a extra <<<"${EXTRA:-}"

echo "embed.sh: job ${SLURM_JOB_ID:-none}: $ntasks rank(s) on ${SLURM_JOB_NUM_NODES:-1}" \
    "node(s), ${SLURM_CPUS_PER_TASK:-1} CPUs each; $(date -Is)"
"${launcher[@]}" python -u -m jobs.cli embed --checkpoint "$CKPT" --data "$DATA" \
    --out "$OUT" "${extra[@]}"
echo "embed.sh: done $(date -Is)"
