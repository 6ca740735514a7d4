#!/usr/bin/env bash
# Record real SLURM output for tests/schedulers/test_slurm_parsers.py (run on the ci/slurm one-node SLURM).
#
# Usage: tests/data/slurm/record.sh [queue] [sacct] [stuck]  (as the user the tests run as; writes
# next to itself; queue and sacct when none is named). `sacct` needs the accounting of
# ci/slurm/start.sh, `stuck` SLURM's admin rights (it creates a partition and deletes it).
# The squeue and sacct formats and environment are the ones adaptive_runner.schedulers.slurm uses.
set -euo pipefail
out="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
export SLURM_BITSTR_LEN=0  # full array-task expressions, never truncated
squeue_cmd=(squeue --me -h -t all -o '%F|%K|%T|%r|%j')  # the name last: it may hold '|'
sacct_cmd=(sacct -X -n --parsable2 -o JobID,State,ExitCode)

script() {  # script NAME BODY: a batch script whose output goes to $work
    printf '#!/usr/bin/env bash\n#SBATCH --output=%s/%%A_%%a.out\n%s\n' "$work" "$2" >"$work/$1"
    echo "$work/$1"
}
sleeper="$(script sleep.sh 'sleep "${SLEEP_S:-1}"')"
stubborn="$(script stubborn.sh "trap 'echo ignoring TERM' TERM; for i in \$(seq 1 60); do sleep 1; done")"
failing="$(script fail.sh 'exit 3')"
timeout="$(script timeout.sh 'sleep 300')"
# Task 0 succeeds, 1 exits 3, 2 dies of SIGSEGV, 3 is cancelled while it runs.
ends="$(script ends.sh 'case "$SLURM_ARRAY_TASK_ID" in 1) exit 3 ;; 2) kill -SEGV $$ ;; 3) sleep 300 ;; esac')"

# Whatever the user had queued stays out of the recordings.
mine() { "${squeue_cmd[@]}" | grep -E "^($(IFS='|'; echo "$*"))\|" || true; }

running() { "${squeue_cmd[@]}" | grep -q "^$1|[^|]*|RUNNING|"; }  # running ARRAY: a task runs

record_queue() {
    sbatch --parsable --array=0-2 "$sleeper" >"$out/sbatch_parsable.txt"
    sbatch --parsable --partition=no_such_partition "$sleeper" 2>"$out/sbatch_bad_partition.stderr" \
        && { echo "sbatch accepted a bad partition" >&2; exit 1; }
    scontrol show config >"$out/scontrol_show_config.txt"
    sinfo -h -o '%R' >"$out/sinfo_partitions.txt"

    # Job names, as find_tagged and the queue poll read them: a held tagged array of three and
    # a plain job (no array) whose name holds a '|'.
    tagged="$(sbatch --parsable --hold --job-name=run-ab12cd34 --array=0-2%1 "$sleeper")"
    other="$(sbatch --parsable --hold --job-name='other|job' "$sleeper")"
    squeue --me -h -t all -o '%F|%j' | grep -E "^($tagged|$other)\|" >"$out/squeue_names.txt"
    mine "$tagged" "$other" >"$out/squeue_named.txt"
    scancel "$tagged" "$other"

    # Held sparse and stepped arrays; a throttled array running 8 at once with the rest pending.
    held1="$(sbatch --parsable --hold --array=1,3,5-7 "$sleeper")"
    held2="$(sbatch --parsable --hold --array=0-3000:2 "$sleeper")"
    held3="$(sbatch --parsable --hold --array=0-20000:3%5 "$sleeper")"
    busy="$(SLEEP_S=20 sbatch --parsable --array=0-11%8 "$sleeper")"
    sleep 3
    mine "$held1" "$held2" "$held3" "$busy" >"$out/squeue_pending_running.txt"

    # A long irregular pending set (tasks released one by one ran and finished).
    holey="$(sbatch --parsable --hold --array=0-300 "$sleeper")"
    for i in $(seq 3 7 150); do scontrol release "${holey}_$i"; done
    sleep 4
    mine "$holey" >"$out/squeue_long_pending.txt"
    scancel "$held1" "$held2" "$held3" "$holey"

    # Completing (a task ignoring SIGTERM until KillWait), suspended, requeued, failed, cancelled.
    stub="$(sbatch --parsable --array=0-1 "$stubborn")"
    fail="$(sbatch --parsable --array=0-1 "$failing")"
    sleep 3
    scancel "${stub}_0"
    scontrol suspend "${busy}_0"
    scontrol requeue "${busy}_1"
    sleep 1
    mine "$stub" "$fail" "$busy" >"$out/squeue_states.txt"
    scontrol resume "${busy}_0"
    scancel "$stub" "$busy"

    # A task hitting its one-minute time limit.
    late="$(sbatch --parsable --time=1 --array=0 "$timeout")"
    for _ in $(seq 1 40); do  # SLURM enforces limits every 30 s or so, then waits KillWait
        sleep 5
        mine "$late" | grep -q RUNNING || break
    done
    mine "$late" >"$out/squeue_timeout.txt"
}

record_sacct() {
    # How tasks ended, as sacct has them: exit code, signal, cancel, time limit, and pending tasks
    # of a held array (one `A_[range]` line). sacct_disabled.stderr is what a cluster without
    # accounting says; recorded only where that is so, never overwritten by a working sacct.
    if "${sacct_cmd[@]}" -j 1 >/dev/null 2>"$work/sacct.stderr"; then
        echo "note: sacct works here; sacct_disabled.stderr kept as it is" >&2
    else
        mv "$work/sacct.stderr" "$out/sacct_disabled.stderr"
        return
    fi
    local ends_id late held
    ends_id="$(sbatch --parsable --array=0-3 "$ends")"
    late="$(sbatch --parsable --time=1 --array=0 "$timeout")"
    held="$(sbatch --parsable --hold --array=0-5 "$sleeper")"
    for _ in $(seq 1 20); do
        sleep 1
        "${squeue_cmd[@]}" | grep -q "^$ends_id|3|RUNNING|" && break
    done
    scancel "${ends_id}_3"
    for _ in $(seq 1 40); do  # SLURM enforces limits every 30 s or so, then waits KillWait
        sleep 5
        running "$ends_id" || running "$late" || break
    done
    sleep 2  # slurmctld hands the end records to slurmdbd asynchronously
    "${sacct_cmd[@]}" -j "$ends_id,$late,$held" >"$out/sacct_exit_states.txt"
    scancel "$held"
}

record_stuck() {
    # Tasks pending for a reason no other job's end lifts (their partition is DOWN), beside a
    # task of another array that runs: what the job manager and wait() tell apart.
    local down=adaptive-runner-record-down stuck busy
    scontrol create PartitionName="$down" Nodes=n1 State=DOWN
    # Whatever happens, the partition goes (once its jobs have).
    trap 'scancel "${stuck:-0}" "${busy:-0}"; sleep 1; scontrol delete PartitionName="$down"
        trap - RETURN' RETURN
    stuck="$(sbatch --parsable --partition="$down" --array=0-2%2 "$sleeper")"
    busy="$(SLEEP_S=20 sbatch --parsable --array=0 "$sleeper")"
    for _ in $(seq 1 20); do
        sleep 1
        running "$busy" && break
    done
    sleep 2  # the scheduler has given the stuck array its reason
    mine "$stuck" "$busy" >"$out/squeue_stuck.txt"
}

parts=("$@")
((${#parts[@]})) || parts=(queue sacct)
for part in "${parts[@]}"; do
    [[ "$part" == queue || "$part" == sacct || "$part" == stuck ]] \
        || { echo "usage: $0 [queue] [sacct] [stuck]" >&2; exit 2; }
    "record_$part"
done
rm -r "$work"
