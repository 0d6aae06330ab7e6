# shellcheck shell=bash
# Start a Ray cluster across a Slurm allocation, for the Ray job scripts (pretrain.sh,
# tune.sh). Source it after cluster/env.sh, then call `ray_slurm_start NAME`:
#
#   source "$SSL_HPC_ROOT/cluster/ray_slurm.sh"
#   ray_slurm_start pretrain.sh
#   python -m jobs.cli pretrain ... --address "$RAY_SLURM_ADDRESS"
#
# It starts a Ray head on the first node and a Ray worker on each other node (srun
# --overlap ... --block in the background), waits until every node has joined, and
# installs an EXIT trap that stops them again. Every port comes from the job id
# (ssl_hpc_port_base), so jobs sharing nodes do not collide. It sets:
#   RAY_SLURM_ADDRESS     head address (ip:port) for --address
#   RAY_SLURM_NODES       number of nodes
#   RAY_SLURM_GPUS        GPUs per node (SLURM_GPUS_ON_NODE, else 0)
#   RAY_SLURM_CPUS        CPUs per node given to Ray (SLURM_CPUS_PER_TASK, else 1)
# and exports RAY_AUTH_MODE=token (`ray start` turns token auth on; clients need it too).

_ray_slurm_steps=()

_ray_slurm_stop() {
    # Only this attempt's Ray: `ray stop --force` would also kill every other Ray on the
    # node that belongs to the same user (another job's, a notebook's). Stopping a
    # `ray start --block` step stops what it started; what survives (workers) still has
    # this attempt's temp dir on its command line ([/] keeps pkill's own line from matching).
    local pid
    for pid in "${_ray_slurm_steps[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait || true
    [[ -n "${_ray_slurm_tmp:-}" ]] || return 0
    srun --overlap --nodes="$RAY_SLURM_NODES" --ntasks="$RAY_SLURM_NODES" \
        pkill -KILL -f "[/]${_ray_slurm_tmp#/}/" >/dev/null 2>&1 || true
}

ray_slurm_start() {
    local name="$1"
    local nodes head_node head_ip base tmp node
    nodes=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}")
    head_node=$(head -n 1 <<<"$nodes")
    RAY_SLURM_NODES=$(wc -l <<<"$nodes")
    RAY_SLURM_GPUS="${SLURM_GPUS_ON_NODE:-0}"
    RAY_SLURM_CPUS="${SLURM_CPUS_PER_TASK:-1}"
    base=$(ssl_hpc_port_base)
    # Short: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    # A requeued job keeps its id: the restart count keeps its attempts apart.
    tmp="/tmp/ray-${SLURM_JOB_ID:-$$}-${SLURM_RESTART_COUNT:-0}"
    _ray_slurm_tmp=$tmp
    head_ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head_node" hostname -I | awk '{print $1}')
    RAY_SLURM_ADDRESS="$head_ip:$base"
    export RAY_AUTH_MODE=token
    local ports=(--node-manager-port=$((base + 1)) --object-manager-port=$((base + 2))
        --dashboard-agent-grpc-port=$((base + 3)) --dashboard-agent-listen-port=$((base + 4))
        --metrics-export-port=$((base + 5)) --runtime-env-agent-port=$((base + 6))
        --min-worker-port=$((base + 20)) --max-worker-port=$((base + 99)))
    local resources=(--num-cpus="$RAY_SLURM_CPUS" --num-gpus="$RAY_SLURM_GPUS" --temp-dir="$tmp")
    trap _ray_slurm_stop EXIT

    echo "$name: job ${SLURM_JOB_ID:-none}: $RAY_SLURM_NODES node(s), $RAY_SLURM_GPUS GPU(s)" \
        "and $RAY_SLURM_CPUS CPUs per node; Ray head $head_node ($RAY_SLURM_ADDRESS); $(date -Is)"
    # RAY_ADDRESS for every process Ray starts: Ray Train's PlacementGroupCleaner finds the
    # cluster through it, and without it fails where another Ray runs on the node (the
    # stopped trials of a sweep then keep their CPUs; ssl_hpc.train.ray_loop.start_local)
    srun --overlap --nodes=1 --ntasks=1 -w "$head_node" env RAY_ADDRESS="$RAY_SLURM_ADDRESS" \
        ray start --head --node-ip-address="$head_ip" --port="$base" --disable-usage-stats \
        --dashboard-host=127.0.0.1 --dashboard-port=$((base + 8)) \
        --ray-client-server-port=$((base + 7)) "${ports[@]}" "${resources[@]}" --block &
    _ray_slurm_steps+=($!)
    for node in $(tail -n +2 <<<"$nodes"); do
        srun --overlap --nodes=1 --ntasks=1 -w "$node" env RAY_ADDRESS="$RAY_SLURM_ADDRESS" \
            ray start --address="$RAY_SLURM_ADDRESS" --disable-usage-stats "${ports[@]}" \
            "${resources[@]}" --block &
        _ray_slurm_steps+=($!)
    done

    # Wait until every node's raylet has joined (5 minutes at most), each probe bounded (a
    # client of a GCS that never came up retries on its own for minutes). A head whose step
    # has ended fails the job now, not at its time limit: on a loaded node its raylet can miss
    # Ray's fixed 30 s registration window ("The current node timed out during startup").
    local deadline=$((SECONDS + 300)) alive=""
    until alive=$(timeout 30 python - "$RAY_SLURM_ADDRESS" "$RAY_SLURM_NODES" 2>/dev/null <<'PY'
import sys
import ray
address, want = sys.argv[1], int(sys.argv[2])
ray.init(address=address, logging_level="ERROR")
alive = sum(n["Alive"] for n in ray.nodes())
ray.shutdown()
print(alive)
sys.exit(0 if alive >= want else 1)
PY
    ); do
        if ! kill -0 "${_ray_slurm_steps[0]}" 2>/dev/null; then
            echo "$name: error: the Ray head on $head_node exited before the cluster came up" \
                "(its output is above); resubmit the job" >&2
            return 1
        fi
        if ((SECONDS > deadline)); then
            echo "$name: error: only ${alive:-no} of $RAY_SLURM_NODES Ray nodes joined in 300 s" >&2
            return 1
        fi
        sleep 2
    done
    echo "$name: $alive Ray node(s) up"
}
