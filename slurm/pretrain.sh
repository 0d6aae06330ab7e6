#!/bin/bash
#SBATCH --job-name=ssl-hpc-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --output=%x-%j.out
#
# Contrastive pretraining on Ray Train across the job's nodes: a Ray head on the first
# node, a Ray worker on each other node (srun), then `ssl-hpc pretrain --address` as the
# driver. Every Ray port comes from the job id (cluster/env.sh), so jobs sharing nodes do
# not collide. Submit from the repo root, e.g. 2 nodes x 4 GPUs:
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

nodes=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}")
head_node=$(head -n 1 <<<"$nodes")
n_nodes=$(wc -l <<<"$nodes")
gpus="${SLURM_GPUS_ON_NODE:-0}"
cpus="${SLURM_CPUS_PER_TASK:-1}"
per_node="${WORKERS_PER_NODE:-$((gpus > 0 ? gpus : 1))}"
base=$(ssl_hpc_port_base)
# Short: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
tmp="/tmp/ray-${SLURM_JOB_ID:-$$}"
head_ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head_node" hostname -I | awk '{print $1}')
address="$head_ip:$base"
export RAY_AUTH_MODE=token  # `ray start` turns on token auth; clients must use it too
ports=(--node-manager-port=$((base + 1)) --object-manager-port=$((base + 2))
    --dashboard-agent-grpc-port=$((base + 3)) --dashboard-agent-listen-port=$((base + 4))
    --metrics-export-port=$((base + 5)) --runtime-env-agent-port=$((base + 6))
    --min-worker-port=$((base + 20)) --max-worker-port=$((base + 99)))
resources=(--num-cpus="$cpus" --num-gpus="$gpus" --temp-dir="$tmp")

steps=()
cleanup() {
    srun --overlap --nodes="$n_nodes" --ntasks="$n_nodes" ray stop --force >/dev/null 2>&1 || true
    # the background `ray start --block` steps: without this the job lingers ~2 min
    for pid in "${steps[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait || true
}
trap cleanup EXIT
trap 'echo "pretrain.sh: time limit near: requeue"; scontrol requeue "$SLURM_JOB_ID"' USR1

echo "pretrain.sh: job ${SLURM_JOB_ID:-none}: $n_nodes node(s) x $per_node worker(s)," \
    "$gpus GPU(s) and $cpus CPUs per node; head $head_node ($address); $(date -Is)"
srun --overlap --nodes=1 --ntasks=1 -w "$head_node" \
    ray start --head --node-ip-address="$head_ip" --port="$base" --disable-usage-stats \
    --dashboard-host=127.0.0.1 --dashboard-port=$((base + 8)) \
    --ray-client-server-port=$((base + 7)) "${ports[@]}" "${resources[@]}" --block &
steps+=($!)
for node in $(tail -n +2 <<<"$nodes"); do
    srun --overlap --nodes=1 --ntasks=1 -w "$node" \
        ray start --address="$address" --disable-usage-stats "${ports[@]}" "${resources[@]}" \
        --block &
    steps+=($!)
done

# Wait until every node's raylet has joined (5 minutes at most).
python -u - "$address" "$n_nodes" <<'PY'
import sys, time
import ray
address, want = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 300
while True:
    try:
        ray.init(address=address, logging_level="ERROR")
        alive = sum(n["Alive"] for n in ray.nodes())
        ray.shutdown()
        if alive >= want:
            print(f"pretrain.sh: {alive} Ray node(s) up", flush=True)
            break
    except Exception as e:  # the head is still starting
        alive = f"none ({type(e).__name__})"
    if time.time() > deadline:
        sys.exit(f"pretrain.sh: error: only {alive} of {want} Ray nodes joined in 300 s")
    time.sleep(2)
PY

read -r -a extra <<<"${EXTRA:-}"
use_gpu=$([[ $gpus -gt 0 ]] && echo true || echo false)
cpw=$(python -c "print(max(1, $cpus // $per_node))")
python -u -m ssl_hpc.cli pretrain --data "$DATA" --out "$OUT" --config "$CONFIG" \
    --address "$address" "num_workers=$((n_nodes * per_node))" "use_gpu=$use_gpu" \
    "cpus_per_worker=$cpw" "${extra[@]}"
echo "pretrain.sh: done $(date -Is)"
