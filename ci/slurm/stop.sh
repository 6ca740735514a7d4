#!/usr/bin/env bash
# Stop the SLURM of ci/slurm/start.sh: the slurmd of each node, slurmctld and (unless
# --slurm-only) slurmdbd, MariaDB and munged.
#
# Each daemon is stopped by the pid in its pid file, checked against /proc (SIGTERM, then a
# bounded wait); a daemon that is not running is skipped, so running this twice is harmless.
# Jobs and state survive in /var/spool/slurmctld, accounting records in MariaDB.
set -euo pipefail

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/daemons.sh"

stop() {  # stop NAME PIDFILE
    local name="$1" pidfile="$2" pid
    if ! pid="$(daemon_pid "$name" "$pidfile")"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        if ! daemon_pid "$name" "$pidfile" >/dev/null; then
            rm -f "$pidfile"
            echo "stopped $name (pid $pid)"
            return 0
        fi
        sleep 0.5
    done
    echo "ci/slurm/stop.sh: $name (pid $pid) still running 30 s after SIGTERM" >&2
    exit 1
}

stop slurmd /run/slurmd.pid  # the one-node cluster of an earlier version
for node in n1 n2 n3; do
    stop slurmd "/run/slurmd-$node.pid"
done
stop slurmctld /run/slurmctld.pid
if [[ "${1:-}" != "--slurm-only" ]]; then
    stop slurmdbd /run/slurmdbd.pid
    stop mariadbd /run/mysqld/mysqld.pid
    stop munged /run/munge/munged.pid
fi
