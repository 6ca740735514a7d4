#!/usr/bin/env bash
# Take a test host of ci/ssh/start.sh down: `stop.sh node2` stops node2's sshd and ends the
# connections it serves (ControlMaster keeps one open; without this, ssh would go on working
# through it). Processes started through it that left the session (the SSH scheduler's
# tasks, in sessions of their own) keep running, as on a host whose network went away.
# `ci/ssh/start.sh` starts it again. A daemon that is not running is skipped.
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../slurm/daemons.sh"

name="${1:?usage: ci/ssh/stop.sh node1|node2}"
[[ "$name" =~ ^node[12]$ ]] || { echo "ci/ssh/stop.sh: no test host $name" >&2; exit 2; }
pidfile="/run/adaptive-runner-sshd-$name.pid"
if ! pid="$(daemon_pid sshd "$pidfile")"; then
    rm -f "$pidfile"
    exit 0
fi
connections="$(ps -o pid= --ppid "$pid" || true)"  # one sshd per connection, before the kill
kill -TERM "$pid"
for connection in $connections; do
    kill -TERM "$connection" 2>/dev/null || true
done
for _ in $(seq 1 60); do
    if ! daemon_pid sshd "$pidfile" >/dev/null; then
        rm -f "$pidfile"
        echo "stopped the sshd of $name (pid $pid)"
        exit 0
    fi
    sleep 0.5
done
echo "ci/ssh/stop.sh: the sshd of $name (pid $pid) still runs 30 s after SIGTERM" >&2
exit 1
