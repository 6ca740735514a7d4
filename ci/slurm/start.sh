#!/usr/bin/env bash
# Start a one-node SLURM (munge, slurmctld, slurmd) on a Debian machine without systemd.
#
# Idempotent: installs slurm-wlm and munge if missing, creates the munge key if there is none,
# (re)writes /etc/slurm/slurm.conf from slurm.conf.in, starts only the daemons that are not
# running (restarts the SLURM daemons when the config changed) and waits, bounded, until
# `sinfo` shows the node up. Exits non-zero with the daemons' logs on failure. Needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf=/etc/slurm/slurm.conf
wait_s="${SLURM_START_WAIT_S:-60}"

die() {
    echo "ci/slurm/start.sh: $*" >&2
    for log in /var/log/munge/munged.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
        if [[ -f "$log" ]]; then
            echo "----- last lines of $log -----" >&2
            tail -n 40 "$log" >&2
        fi
    done
    exit 1
}

source "$here/daemons.sh"

running() {  # running NAME PIDFILE: the daemon NAME is alive with the pid in PIDFILE
    daemon_pid "$1" "$2" >/dev/null
}

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends slurm-wlm munge
fi

# --- munge -----------------------------------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey -c -k /etc/munge/munge.key
fi
chmod 0700 /etc/munge
chmod 0600 /etc/munge/munge.key
if ! running munged /run/munge/munged.pid; then
    # munged warns that root owns its log file; harmless on a throwaway CI node.
    munged --force
fi
for _ in $(seq 1 20); do
    if munge -n | unmunge >/dev/null 2>&1; then break; fi
    sleep 0.5
done
munge -n | unmunge >/dev/null || die "munged does not answer (munge -n | unmunge failed)"

# --- slurm.conf ----------------------------------------------------------------------------
node="$(hostname -s)"
cpus="$(nproc)"
mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
memory_mb=$((mem_kb / 1024 * 95 / 100))  # below what slurmd measures, or the node drains
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
new_conf="$(sed -e "s/@NODE@/$node/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEMORY_MB@/$memory_mb/g" \
    "$here/slurm.conf.in")"
if [[ ! -f "$conf" ]] || [[ "$(cat "$conf")" != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$conf"
    if running slurmctld /run/slurmctld.pid || running slurmd /run/slurmd.pid; then
        echo "slurm.conf changed: restarting the SLURM daemons"
        "$here/stop.sh" --slurm-only
    fi
fi

# --- daemons ---------------------------------------------------------------------------
start_daemons() {  # start whichever SLURM daemon is not running
    if ! running slurmctld /run/slurmctld.pid; then
        rm -f /run/slurmctld.pid
        slurmctld || die "slurmctld did not start"
    fi
    if ! running slurmd /run/slurmd.pid; then
        rm -f /run/slurmd.pid
        slurmd -N "$node" || die "slurmd did not start"
    fi
}
start_daemons

# --- wait until the node takes jobs ----------------------------------------------------------
deadline=$((SECONDS + wait_s))
state=""
while ((SECONDS < deadline)); do
    start_daemons  # one that died since (bad state files, a port still taken) gets another go
    state="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null || true)"
    case "$state" in
        idle | mixed | allocated) break ;;
        down* | drain*)  # left over from an earlier run: ask slurmctld to take it back
            scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle | mixed | allocated) ;;
    *) die "node $node not up after ${wait_s} s (sinfo state: '${state:-no answer}')" ;;
esac
echo "SLURM is up: node $node is $state"
sinfo
