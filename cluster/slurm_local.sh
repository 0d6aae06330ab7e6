#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + munged) for development and CI.
#
# Usage: cluster/slurm_local.sh start|stop|status
#
# All Slurm state (slurm.conf, spool, state, logs, pid files) lives under
#   ${SSL_HPC_SLURM_DIR:-/tmp/ssl-hpc-slurm}
# `start` writes ${SSL_HPC_SLURM_DIR}/env.sh (export SLURM_CONF=...); source it before
# calling sbatch/squeue/sinfo:   source /tmp/ssl-hpc-slurm/env.sh && sinfo
#
# Needs root (daemons run as root, no cgroups/systemd needed) and the Debian packages
# slurm-wlm + munge (cluster/install_services.sh). Only one instance per host: slurmctld
# and slurmd listen on the default ports 6817/6818.
# Env knobs: SSL_HPC_SLURM_DIR (state dir), SSL_HPC_SLURM_TIMEOUT (start wait, s; default 60).
set -euo pipefail

DIR="${SSL_HPC_SLURM_DIR:-/tmp/ssl-hpc-slurm}"
CONF="$DIR/slurm.conf"
ENV_SH="$DIR/env.sh"
RUN="$DIR/run"   # pid files
LOG="$DIR/log"
TIMEOUT="${SSL_HPC_SLURM_TIMEOUT:-60}"
MUNGE_SOCKET_DIR=/run/munge

# The daemons live in sbin, which a non-login root shell may lack on PATH.
export PATH="${PATH}:/usr/sbin:/sbin"

log() { echo "slurm_local: $*"; }
err() { echo "slurm_local: error: $*" >&2; }

# True while process $1 exists and is not a zombie (in containers whose pid 1 does not
# reap orphans, an exited daemon stays a zombie forever and kill -0 still succeeds).
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Print the pid in file $1 if that process is alive and its command is $2.
# Checking the command name guards against a stale pid file whose pid was reused.
live_pid() {
    local pidfile="$1" name="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    # /proc, not kill -0: works for non-root callers of `status` too.
    [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    alive "$pid" || return 1
    echo "$pid"
}

# Kill the process named by pid file $1 (command $2) and wait for it to exit.
stop_pid() {
    local pidfile="$1" name="$2" pid i
    if ! pid="$(live_pid "$pidfile" "$name")"; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do   # up to 15 s, then SIGKILL
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}

show_logs() {
    local f
    for f in "$LOG/slurmctld.log" "$LOG/slurmd.log" /var/log/munge/munged.log; do
        [[ -f "$f" ]] || continue
        echo "----- tail $f -----" >&2
        tail -n 25 "$f" >&2
    done
}

# Node states sinfo reports (e.g. "idle", "mixed", "down*"); empty if slurmctld is not up.
node_states() { { SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%T' 2>/dev/null || true; } | sort -u; }

# True when our daemons are alive and the node answers in a usable state.
cluster_up() {
    [[ -f "$CONF" ]] || return 1
    live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || return 1
    live_pid "$RUN/slurmd.pid" slurmd >/dev/null || return 1
    node_states | grep -E '^(idle|mixed|allocated|completing)$' >/dev/null
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        return 0   # a munged (ours or the system's) already answers
    fi
    # /run is a fresh tmpfs in containers: munged needs its socket dir owned by munge.
    mkdir -p "$MUNGE_SOCKET_DIR"
    chown munge:munge "$MUNGE_SOCKET_DIR"
    chmod 0755 "$MUNGE_SOCKET_DIR"
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    log "starting munged as user munge"
    # Run it as the munge user, like the packaged service: the key and dirs belong to munge.
    if ! runuser -u munge -- /usr/sbin/munged; then
        err "munged failed to start"; show_logs; return 1
    fi
    touch "$RUN/munged.ours"   # so `stop` only stops a munged this script started
    local i
    for ((i = 0; i < 50; i++)); do
        munge_ok && return 0
        sleep 0.1
    done
    err "munged did not answer within 5 s"
    show_logs
    return 1
}

write_conf() {
    local host node ctld
    host="$(hostname)"
    # Node line as slurmd sees this machine (CPUs, sockets, cores, RealMemory); drop UpTime.
    node="$(slurmd -C | sed -n '1s/[[:space:]]*$//p')"
    [[ "$node" == NodeName=* ]] || { err "unexpected 'slurmd -C' output: $node"; return 1; }
    ctld="$host"
    # If the hostname does not resolve (some containers), pin both daemons to loopback.
    if ! getent hosts "$host" >/dev/null; then
        ctld="$host(127.0.0.1)"
        node="$node NodeAddr=127.0.0.1"
    fi
    cat >"$CONF" <<EOF
# Generated by cluster/slurm_local.sh: single-node development Slurm. Do not edit;
# it is rewritten on every start.
ClusterName=ssl-hpc
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Job step credentials live 15 s (default 120), which is also how long a requeued job
# waits before it starts again: the preemption tests requeue jobs.
AuthInfo=cred_expire=15
CredType=cred/munge
# No cgroups/systemd in containers: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# pmi2 lets a plain "srun python ..." wire up ranks of the pip mpich/mpi4py (with "none"
# each rank is a singleton); the pmix plugin logs a harmless load error (no libpmix2).
MpiDefault=pmi2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Bring the node back to service automatically after a restart.
ReturnToService=2
KillWait=5
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$ENV_SH" <<EOF
# Generated by cluster/slurm_local.sh: point Slurm clients at the local development cluster.
export SLURM_CONF="$CONF"
EOF
}

cmd_start() {
    if [[ "$(id -u)" -ne 0 ]]; then
        err "must run as root (the local Slurm daemons run as root)"
        return 1
    fi
    local b
    for b in slurmctld slurmd sinfo munged munge; do
        command -v "$b" >/dev/null || {
            err "'$b' not found; install Slurm first: cluster/install_services.sh"
            return 1
        }
    done
    if cluster_up; then
        log "already running (SLURM_CONF=$CONF)"
        echo "$ENV_SH"
        return 0
    fi
    # Half-started or stale (daemon died, node down): start over from a clean slate.
    stop_slurm_daemons
    # Daemons of another config (another SSL_HPC_SLURM_DIR, a system Slurm) hold the
    # ports 6817/6818: ours would fail to bind while sinfo reached theirs.
    local others="" p
    for p in $(pgrep -x slurmctld || true) $(pgrep -x slurmd || true); do
        if alive "$p"; then others+="$p "; fi   # skip zombies not yet reaped by pid 1
    done
    if [[ -n "$others" ]]; then
        err "other Slurm daemons are running (pids: $others); stop them first" \
            "(e.g. SSL_HPC_SLURM_DIR=<their dir> $0 stop)"
        return 1
    fi
    mkdir -p "$DIR" "$DIR/state" "$DIR/spool" "$RUN" "$LOG"
    start_munge
    write_conf
    local t0=$SECONDS
    log "starting slurmctld and slurmd (state in $DIR)"
    # -c: cold start, ignore saved jobs/nodes from an earlier run of this dev cluster.
    if ! SLURM_CONF="$CONF" slurmctld -c; then
        err "slurmctld failed to start"; show_logs; return 1
    fi
    if ! SLURM_CONF="$CONF" slurmd; then
        err "slurmd failed to start"; show_logs; stop_slurm_daemons; return 1
    fi
    local states=""
    while ((SECONDS - t0 < TIMEOUT)); do
        states="$(node_states | tr '\n' ' ')"
        if [[ "$states" == "idle " ]]; then
            log "node idle after $((SECONDS - t0)) s; SLURM_CONF=$CONF"
            echo "$ENV_SH"
            return 0
        fi
        sleep 0.5
    done
    err "node not idle after ${TIMEOUT} s (sinfo states: '${states:-no answer}')"
    show_logs
    stop_slurm_daemons
    return 1
}

stop_slurm_daemons() {
    # Cancel leftover jobs first: slurmd exiting does not kill running job steps.
    if [[ -f "$CONF" ]] && live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        local jobs i
        jobs="$(SLURM_CONF="$CONF" timeout 10 squeue -h -o '%i' 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
            # shellcheck disable=SC2086  # word splitting of the job id list is intended
            SLURM_CONF="$CONF" scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 30; i++)); do   # KillWait=5, so 15 s is plenty
                [[ -z "$(SLURM_CONF="$CONF" timeout 10 squeue -h -o '%i' 2>/dev/null)" ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_pid "$RUN/slurmd.pid" slurmd
    stop_pid "$RUN/slurmctld.pid" slurmctld
}

cmd_stop() {
    stop_slurm_daemons
    if [[ -f "$RUN/munged.ours" ]]; then
        stop_pid "$MUNGE_SOCKET_DIR/munged.pid" munged
        rm -f "$RUN/munged.ours"
    fi
    log "stopped"
}

cmd_status() {
    if cluster_up; then
        echo "SLURM_CONF=$CONF"
        echo "slurmctld pid $(live_pid "$RUN/slurmctld.pid" slurmctld)," \
            "slurmd pid $(live_pid "$RUN/slurmd.pid" slurmd)"
        SLURM_CONF="$CONF" sinfo
        return 0
    fi
    echo "slurm_local: not running (state dir $DIR)"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
