# shellcheck shell=bash
# Environment for the project's Slurm job scripts. Source it at the top of each one:
#   source "$SSL_HPC_ROOT/cluster/env.sh"
# It is sourced, not run: it must not `exit` or change the caller's shell options.
#
# Sets: SSL_HPC_ROOT (repo root), the venv on PATH, HDF5/OpenMP/Python variables, and the
# function ssl_hpc_port_base. Override the venv with SSL_HPC_VENV=/path/to/venv.

# Repo root from this file's location (job scripts run from a spool copy, so $0 is useless).
SSL_HPC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SSL_HPC_ROOT

_ssl_hpc_venv="${SSL_HPC_VENV:-$SSL_HPC_ROOT/.venv}"
if [[ ! -f "$_ssl_hpc_venv/bin/activate" ]]; then
    echo "cluster/env.sh: error: no virtual environment at $_ssl_hpc_venv" \
        "(create it with 'make venv' in $SSL_HPC_ROOT, or set SSL_HPC_VENV)" >&2
    unset _ssl_hpc_venv
    return 1
fi
# The prompt change is pointless in batch jobs.
# shellcheck disable=SC1091  # the venv is created later, by make venv
VIRTUAL_ENV_DISABLE_PROMPT=1 source "$_ssl_hpc_venv/bin/activate"
unset _ssl_hpc_venv

# HDF5 file locks fail or hang on many parallel file systems (Lustre, GPFS, NFS); the
# pipeline never has two writers on one file, so locking buys nothing.
export HDF5_USE_FILE_LOCKING=FALSE
# One BLAS/OpenMP thread per allocated CPU: the default (all cores of the node)
# oversubscribes nodes shared with other jobs or ranks.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
# Job logs appear as they are written, not when a buffer fills.
export PYTHONUNBUFFERED=1

# Print a port base for this job: ports BASE..BASE+99 are this job's (Ray GCS, node and
# object managers, ... and its worker processes). Concurrent jobs on one node get distinct
# ranges: 20000 + (JOBID % 120) * 100 stays in 20000-31999, below the kernel's ephemeral
# ports (32768+) and above Ray's default worker ports (10002-19999). Outside Slurm the
# shell's pid stands in for the job id.
ssl_hpc_port_base() {
    # a requeued job keeps its id; its next attempt moves on, clear of any port the
    # killed attempt's processes may still hold
    local id=$((${SLURM_JOB_ID:-$$} + ${SLURM_RESTART_COUNT:-0}))
    echo $((20000 + (id % 120) * 100))
}
