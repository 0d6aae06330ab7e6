# shellcheck shell=bash
# Run a job's main command so that Slurm's warning signal requeues the job promptly.
# Source it, then:
#
#   requeue_on_usr1 pretrain.sh
#   ...                                    # e.g. start Ray
#   run_requeueable python -u -m jobs.cli pretrain ...
#
# With `#SBATCH --signal=B:USR1@300` Slurm sends USR1 to the batch shell 5 minutes before
# the time limit (and a site may send it before preempting). Bash runs a trap only once
# its foreground command has finished, which for a training run is too late; so the
# command runs in the background and the shell waits on it, a wait that a trapped signal
# interrupts. On USR1 the job requeues itself (`scontrol requeue`): Slurm then stops every
# process of this attempt and starts the script again, which resumes from the latest
# checkpoint. Returns the command's exit status.

requeue_on_usr1() {  # name: install the trap (before anything slow, e.g. Ray start-up)
    # shellcheck disable=SC2064  # $1 is fixed now, on purpose
    trap "echo \"$1: USR1 (time limit near, or preemption): requeue job \$SLURM_JOB_ID\";
        scontrol requeue \"\$SLURM_JOB_ID\"" USR1
}

run_requeueable() {  # command...: run it in the background, wait through trapped signals
    "$@" &
    local pid=$! rc=0
    while true; do
        rc=0
        wait "$pid" || rc=$?
        # a status above 128 with the command still running: the wait was cut by a trap
        if ((rc > 128)) && kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        return "$rc"
    done
}
