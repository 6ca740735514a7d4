"""The bash programs the SSH scheduler runs on its hosts, and the argv that carries them there.

Every remote command is ``bash -c PROGRAM NAME ARGS...``, built as an argv list and joined
with :func:`shlex.join` into the one string ssh hands to the login shell there (which must
be a POSIX shell: sh, bash, zsh). They need bash, coreutils, ``setsid`` and ``flock``
(util-linux) and Linux's ``/proc``: no Python, so a host answers a poll even where Python
only exists after the ``extra_script`` (``module load ...``).

What they keep lives in the array's directory on the shared file system:

    hosts/<host>/<i>.wrapper  a wrapper of the task on that host: pid, start time (clock
                  ticks after boot), boot id; written there by START. A task may have a
                  wrapper on several hosts (``SSH.place_pending`` adds one on a host with a
                  free slot when the task waits): the first that holds a slot and the claim
                  runs it, the others end without a word
    <i>.claim     which wrapper runs the task: a symlink whose target is ``HOST PID``, made
                  by that wrapper once it holds a slot. symlink(2) fails when the name
                  exists and sets the target with the name, atomically on a shared file
                  system too (NFS, Lustre, GPFS), so one wrapper wins; each reads the target
                  back, so a retried call that answers "exists" after creating it still wins
    <i>.job       the job it started (the job script, then the worker; a session of its own)
    <i>.exit      how it ended: the return code (-n: signal n; -: never started), cancelled
    <i>.out       the wrappers' output, and the job's until its script redirects it
    <i>.cancel    cancel() asked the task to end (written by the manager), ``cancel`` the array

Only the claiming wrapper writes ``<i>.job`` and ``<i>.exit``, on its own host (so that host
reads them back at once). A pid is trusted only with its start time and boot id, so a reused
pid is never taken for the task. A host's slots are ``flock`` locks on files in a directory
of that host (under ``$TMPDIR`` or /tmp), one per slot: a wrapper waits (pending) until it
holds one, and the job inherits it, so no more tasks run there than the host has slots,
whichever array they are of.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from adaptive_runner.common.task_identity import (
    SSH_ARRAY_ID_VAR,
    SSH_TASK_ID_VAR,
    SSH_TASK_INDEX_VAR,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

TASK_SCRIPT = "ssh-task.sh"  # the wrapper, written once into the run's jobs directory
HOSTS_DIR = "hosts"  # S<n>/hosts/<host>/<i>.wrapper: a wrapper of task i on that host

_COMMON = r"""
set -u
BOOT=$(cat /proc/sys/kernel/random/boot_id)
proc_stat() {  # proc_stat PID: STATE and START (clock ticks after boot) of a process
    local stat
    { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
    set -- ${stat##*) }
    STATE=$1 START=${20}
}
alive() {  # alive FILE: the process recorded in FILE runs (same pid, start time and boot)
    local pid start boot
    { read -r pid start boot < "$1"; } 2>/dev/null || return 1
    [ "$boot" = "$BOOT" ] && proc_stat "$pid" && [ "$START" = "$start" ] && [ "$STATE" != Z ]
}
record() {  # record FILE PID: write the process's pid, start time and boot id, atomically
    proc_stat "$2" || return 1
    printf '%s %s %s\n' "$2" "$START" "$BOOT" > "$1.tmp$$" && mv -f "$1.tmp$$" "$1"
}
claimed_by() {  # claimed_by DIR I: CLAIM_HOST, the host whose wrapper claimed task I, or ""
    local target=
    [ -L "$1/$2.claim" ] && target=$(readlink "$1/$2.claim" 2>/dev/null)
    CLAIM_HOST=${target%% *}
}
"""

# The wrapper of one task on one host, run detached (setsid) by START: waits for a slot,
# claims the task (or ends quietly: another host's wrapper has it), starts the job script in
# a session of its own, forwards a cancel (SIGTERM, or a cancel file: the way a cancel
# reaches a host that ssh does not) to the job's process group, escalates to SIGKILL after
# the grace period, and records how the job ended.
# Arguments: ARRAY_DIR INDEX SCRIPT SLOT_KEY SLOTS GRACE_S WORKDIR HOST.
TASK = (
    _COMMON
    + r"""
dir=$1 i=$2 script=$3 slot_key=$4 slots=$5 grace=$6 workdir=$7 host=$8
array=${dir##*/}
me="$host $$"
cancelled=0
trap 'cancelled=1' TERM
marked() {  # marked: a cancel came (SIGTERM, or a cancel file); then cancelled=1
    [ "$cancelled" = 1 ] || [ -e "$dir/cancel" ] || [ -e "$dir/$i.cancel" ] || return 1
    cancelled=1
}
claim() {  # claim: the task is this wrapper's to run (or to record as cancelled); once
    ln -s "$me" "$dir/$i.claim" 2>/dev/null
    [ "$(readlink "$dir/$i.claim" 2>/dev/null)" = "$me" ]
}
finish() {  # finish CODE: record the return code (-: never started) and whether cancelled
    printf '%s %s\n' "$1" "$cancelled" > "$dir/$i.exit.tmp" \
        && mv -f "$dir/$i.exit.tmp" "$dir/$i.exit"
    exit 0
}
base=${TMPDIR:-/tmp}/adaptive-runner-$(id -u)
slot_dir=$base/$slot_key
if ! mkdir -p -m 700 "$base" "$slot_dir" || [ ! -O "$base" ] || [ ! -O "$slot_dir" ]; then
    echo "adaptive_runner: cannot keep the slots of $host in $slot_dir (not ours?)" >&2
    if claim; then finish 1; fi
    exit 0
fi
while :; do
    if [ -L "$dir/$i.claim" ]; then exit 0; fi  # another host's wrapper runs it
    for ((k = 0; k < slots; k++)); do
        exec {fd}>>"$slot_dir/$k"
        if flock -n "$fd"; then break 2; fi
        exec {fd}>&-
    done
    if marked; then
        if claim; then finish -; fi
        exit 0
    fi
    sleep 1
done
if ! claim; then exit 0; fi  # another host's wrapper was first; the slot frees as this ends
if marked; then finish -; fi
cd -- "$workdir" || finish 1
export @ARRAY_ID_VAR@="$array" @TASK_INDEX_VAR@="$i" @TASK_ID_VAR@="${array}_$i"
setsid bash "$script" < /dev/null &
job=$!
record "$dir/$i.job" "$job"  # fails only for a job that has ended already
ticks=0 term_at=
while kill -0 "$job" 2>/dev/null; do
    if [ -z "$term_at" ] && { [ "$cancelled" = 1 ] || { [ $((ticks % 5)) = 0 ] && marked; }; }; then
        term_at=$SECONDS
        kill -TERM -- "-$job" 2>/dev/null
    elif [ -n "$term_at" ] && [ $((SECONDS - term_at)) -ge "$grace" ]; then
        kill -KILL -- "-$job" 2>/dev/null
    fi
    ticks=$((ticks + 1))
    sleep 1
done
wait "$job"
code=$?
kill -KILL -- "-$job" 2>/dev/null  # what the job left in its group ends with it
if [ "$code" -gt 128 ]; then code=$((128 - code)); fi  # the shell's 128+n: signal n
finish "$code"
""".replace("@ARRAY_ID_VAR@", SSH_ARRAY_ID_VAR)
    .replace("@TASK_INDEX_VAR@", SSH_TASK_INDEX_VAR)
    .replace("@TASK_ID_VAR@", SSH_TASK_ID_VAR)
)

# Start wrappers of tasks on this host, each detached, and record each one before answering
# (so a task that a poll does not find here never started here). A task already claimed
# (its job started on another host) gets none.
# Arguments: JOBS_DIR HOST SLOT_KEY SLOTS GRACE_S, then per array ARRAY_ID SCRIPT WORKDIR
# INDICES (0,1,2).
START = (
    _COMMON
    + r"""
jobs=$1 host=$2 slot_key=$3 slots=$4 grace=$5
shift 5
while [ $# -ge 4 ]; do
    array=$1 script=$2 workdir=$3 indices=$4
    shift 4
    dir=$jobs/$array
    if [ ! -d "$dir" ] || [ ! -f "$jobs/@TASK_SCRIPT@" ]; then
        echo "$dir or $jobs/@TASK_SCRIPT@ does not exist on this host: is it shared?" >&2
        exit 3
    fi
    records=$dir/@HOSTS_DIR@/$host
    mkdir -p "$records" || exit 1
    for i in ${indices//,/ }; do
        if [ -L "$dir/$i.claim" ]; then continue; fi
        setsid bash "$jobs/@TASK_SCRIPT@" "$dir" "$i" "$script" "$slot_key" "$slots" "$grace" \
            "$workdir" "$host" < /dev/null >> "$dir/$i.out" 2>&1 &
        if ! record "$records/$i.wrapper" "$!" && [ ! -L "$dir/$i.claim" ]; then
            echo "task ${array}_$i: cannot record its wrapper (pid $!) in $records" >&2
            exit 1
        fi
    done
done
""".replace("@TASK_SCRIPT@", TASK_SCRIPT).replace("@HOSTS_DIR@", HOSTS_DIR)
)

# One line per task, about this host: "S3_4 running", "pending" (its wrapper here waits for
# a slot), "exit CODE CANCELLED" (from the shared record, whichever host wrote it),
# "elsewhere" (another host's wrapper claimed it), "lost" (its processes here are gone
# without an exit record) or "none" (no wrapper of it was started here). Liveness first,
# records second: a wrapper seen dead has written its last record.
# Arguments: JOBS_DIR HOST ARRAY:INDICES... (S3:0,1,2).
LOOK = (
    _COMMON
    + r"""
jobs=$1 host=$2
shift 2
for item in "$@"; do
    array=${item%%:*} list=${item#*:}
    dir=$jobs/$array
    for i in ${list//,/ }; do
        task=${array}_$i wrapper=$dir/@HOSTS_DIR@/$host/$i.wrapper
        live=0
        if alive "$wrapper"; then live=1; fi
        if [ -e "$dir/$i.exit" ]; then
            read -r code cancelled < "$dir/$i.exit"
            echo "$task exit $code $cancelled"
            continue
        elif [ "$live" = 0 ] && [ ! -e "$wrapper" ]; then
            echo "$task none"
            continue
        fi
        claimed_by "$dir" "$i"
        if [ -n "$CLAIM_HOST" ] && [ "$CLAIM_HOST" != "$host" ]; then
            echo "$task elsewhere"
        elif [ "$live" = 1 ]; then
            if [ -n "$CLAIM_HOST" ] && [ -e "$dir/$i.job" ]; then
                echo "$task running"
            else
                echo "$task pending"
            fi
        elif [ -n "$CLAIM_HOST" ] && alive "$dir/$i.job"; then
            echo "$task running"  # its wrapper was killed; the job was not
        else
            echo "$task lost"
        fi
    done
done
""".replace("@HOSTS_DIR@", HOSTS_DIR)
)

# SIGTERM to each task's wrapper on this host, which ends its job (see TASK). A job whose
# wrapper was killed gets SIGTERM itself, and SIGKILL after the grace period from a detached
# sleeper. Arguments: JOBS_DIR HOST GRACE_S ARRAY:INDICES...
CANCEL = (
    _COMMON
    + r"""
jobs=$1 host=$2 grace=$3
shift 3
for item in "$@"; do
    dir=$jobs/${item%%:*} list=${item#*:}
    for i in ${list//,/ }; do
        wrapper=$dir/@HOSTS_DIR@/$host/$i.wrapper
        if alive "$wrapper"; then
            read -r pid _ < "$wrapper"
            kill -TERM "$pid"
            continue
        fi
        [ -e "$wrapper" ] || continue  # no wrapper of it here: its job does not run here
        claimed_by "$dir" "$i"
        if [ "$CLAIM_HOST" = "$host" ] && [ ! -e "$dir/$i.exit" ] && alive "$dir/$i.job"; then
            read -r pid _ < "$dir/$i.job"
            kill -TERM -- "-$pid"
            setsid sh -c 'sleep "$1"; kill -KILL -- "-$2" 2>/dev/null' sh "$grace" "$pid" \
                < /dev/null > /dev/null 2>&1 &
        fi
    done
done
""".replace("@HOSTS_DIR@", HOSTS_DIR)
)

# Check tokens written by the manager: one line per PATH TOKEN pair, "N ok", "N differs" or
# "N missing" (N counts the pairs from 0). Arguments: PATH TOKEN PATH TOKEN...
TOKENS = r"""
n=0
while [ $# -ge 2 ]; do
    if { read -r found < "$1"; } 2>/dev/null; then
        if [ "$found" = "$2" ]; then echo "$n ok"; else echo "$n differs"; fi
    else
        echo "$n missing"
    fi
    n=$((n + 1))
    shift 2
done
"""

CHECK_ENVIRONMENT_OK = "adaptive-runner-check: environment ok"
CHECK_PYTHON_OK = "adaptive-runner-check: python"
CHECK_MISSING_TOOL = "adaptive-runner-check: missing"
# What the check's Python does: import the worker as a task would, and say which Python.
_CHECK_PYTHON = (
    "import sys, adaptive_runner.worker; "
    f"print({CHECK_PYTHON_OK!r}, sys.version.split()[0], adaptive_runner.worker.__file__)"
)


def check_program(python: str, exports: Sequence[tuple[str, str]], extra_script: str) -> str:
    """The check a host runs: the tools, then the job's environment, then its Python.

    The environment is the job script's (``env``, ``extra_script``, the same ``set`` flags);
    each stage says on stdout that it passed, so a failure is told from where it stopped.
    """
    lines = [
        "set -euo pipefail",
        "for tool in setsid flock; do",
        f'    command -v "$tool" > /dev/null || {{ echo "{CHECK_MISSING_TOOL} $tool"; exit 3; }}',
        "done",
        *(f"export {name}={shlex.quote(value)}" for name, value in exports),
        "{ :",  # the extra script's output would mix with the answer: stderr, like its errors
        extra_script,
        "} >&2",
        f"echo {shlex.quote(CHECK_ENVIRONMENT_OK)}",
        f"exec {shlex.quote(python)} -c {shlex.quote(_CHECK_PYTHON)}",
    ]
    return "\n".join(lines)


def remote_command(program: str, name: str, args: Sequence[str]) -> str:
    """``bash -c PROGRAM NAME ARGS...`` as one string for the remote login shell.

    ``name`` becomes ``$0`` (what ``ps`` and bash's error messages show).
    """
    return shlex.join(["bash", "-c", program, name, *args])
