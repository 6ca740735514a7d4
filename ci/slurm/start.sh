#!/usr/bin/env bash
# Start a three-node SLURM with accounting (munge, MariaDB, slurmdbd, slurmctld and one slurmd
# per node: n1, n2, n3) on one Debian machine without systemd.
#
# Idempotent: installs slurm-wlm, munge, slurmdbd and mariadb-server if missing, creates the
# munge key if there is none, creates the accounting database, its user and the cluster if
# missing, (re)writes /etc/slurm/slurmdbd.conf and slurm.conf from their .in files, starts only
# the daemons that are not running (restarts a daemon whose config changed; a one-node
# configuration of an earlier version is replaced, its slurmd stopped) and waits, bounded,
# until `sacct` answers and every node is idle. Exits non-zero with the daemons' logs on
# failure. Needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf=/etc/slurm/slurm.conf
dbd_conf=/etc/slurm/slurmdbd.conf
cluster="$(sed -n -e 's/^ClusterName=//p' "$here/slurm.conf.in")"
nodes=(n1 n2 n3)
wait_s="${SLURM_START_WAIT_S:-60}"

die() {
    echo "ci/slurm/start.sh: $*" >&2
    for log in /var/log/munge/munged.log /var/log/mysql/error.log /var/log/slurm/slurmdbd.log \
        /var/log/slurm/slurmctld.log /var/log/slurm/slurmd-n{1,2,3}.log; do
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
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends slurm-wlm munge slurmdbd mariadb-server
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

# --- MariaDB: the accounting database and its user -------------------------------------------
mkdir -p /run/mysqld /var/log/mysql
chown mysql:mysql /run/mysqld /var/log/mysql
if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql >/dev/null || die "mariadb-install-db failed"
fi
if ! running mariadbd /run/mysqld/mysqld.pid; then
    rm -f /run/mysqld/mysqld.pid
    # No systemd to supervise it: its own session, so it outlives this script's.
    setsid -f mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
        --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1
fi
for _ in $(seq 1 60); do
    if mariadb-admin ping >/dev/null 2>&1; then break; fi
    sleep 0.5
done
mariadb-admin ping >/dev/null 2>&1 || die "MariaDB does not answer (mariadb-admin ping failed)"

# The password lives only in slurmdbd.conf (mode 600); made once, kept across restarts.
storage_pass="$(sed -n -e 's/^StoragePass=//p' "$dbd_conf" 2>/dev/null || true)"
if [[ -z "$storage_pass" ]]; then
    storage_pass="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
fi
mariadb <<SQL || die "could not create the accounting database and its user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$storage_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- slurmdbd ---------------------------------------------------------------------------------
new_dbd_conf="$(sed -e "s/@STORAGE_PASS@/$storage_pass/g" "$here/slurmdbd.conf.in")"
if [[ ! -f "$dbd_conf" ]] || [[ "$(cat "$dbd_conf")" != "$new_dbd_conf" ]]; then
    (umask 077 && printf '%s\n' "$new_dbd_conf" >"$dbd_conf")
    if running slurmdbd /run/slurmdbd.pid; then
        echo "slurmdbd.conf changed: restarting slurmdbd"
        kill -TERM "$(daemon_pid slurmdbd /run/slurmdbd.pid)"
        for _ in $(seq 1 60); do
            if ! running slurmdbd /run/slurmdbd.pid; then break; fi
            sleep 0.5
        done
    fi
fi
chmod 600 "$dbd_conf"  # slurmdbd refuses a config others can read; it holds the password
if ! running slurmdbd /run/slurmdbd.pid; then
    rm -f /run/slurmdbd.pid
    slurmdbd || die "slurmdbd did not start"
fi

# --- slurm.conf ----------------------------------------------------------------------------
host="$(hostname -s)"
cpus="$(nproc)"
cpus=$((cpus < 4 ? 4 : cpus))  # see SlurmdParameters in slurm.conf.in
mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
memory_mb=$((mem_kb / 1024 * 95 / 100))  # below what slurmd measures, or the node drains
mkdir -p /etc/slurm /var/spool/slurmctld /var/log/slurm
for node in "${nodes[@]}"; do mkdir -p "/var/spool/slurmd/$node"; done
new_conf="$(sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEMORY_MB@/$memory_mb/g" \
    "$here/slurm.conf.in")"
if [[ ! -f "$conf" ]] || [[ "$(cat "$conf")" != "$new_conf" ]]; then
    old_nodes="$(grep '^NodeName=' "$conf" 2>/dev/null || true)"
    echo "slurm.conf changed: restarting the SLURM daemons that run"
    "$here/stop.sh" --slurm-only  # harmless when none runs
    printf '%s\n' "$new_conf" >"$conf"
    if [[ "$old_nodes" != "$(grep '^NodeName=' "$conf")" ]]; then
        # The saved state names jobs on nodes that are gone (the one-node cluster of an
        # earlier version): slurmctld starts from no jobs.
        rm -rf /var/spool/slurmctld/*
    fi
fi

# --- the cluster record in accounting -------------------------------------------------------
for _ in $(seq 1 60); do
    if sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; then break; fi
    sleep 0.5
done
clusters="$(sacctmgr -n -P list cluster format=cluster 2>&1)" \
    || die "slurmdbd does not answer (sacctmgr list cluster: $clusters)"
# sacctmgr reads slurm.conf (written above) to find slurmdbd.
# slurmctld registers with slurmdbd when it starts, so the cluster must exist before it.
if ! grep -qx -- "$cluster" <<<"$clusters"; then
    sacctmgr -i add cluster "$cluster" || die "sacctmgr could not add cluster $cluster"
fi

# --- daemons ---------------------------------------------------------------------------
start_daemons() {  # start whichever SLURM daemon is not running
    if ! running slurmctld /run/slurmctld.pid; then
        rm -f /run/slurmctld.pid
        slurmctld || die "slurmctld did not start"
    fi
    for node in "${nodes[@]}"; do
        if ! running slurmd "/run/slurmd-$node.pid"; then
            rm -f "/run/slurmd-$node.pid"
            slurmd -N "$node" || die "slurmd of node $node did not start"
        fi
    done
}
start_daemons

# --- wait until every node takes jobs ------------------------------------------------------
up() {  # up STATE: whether a node in STATE takes jobs
    case "$1" in idle | mixed | allocated) return 0 ;; *) return 1 ;; esac
}
deadline=$((SECONDS + wait_s))
states=""
while ((SECONDS < deadline)); do
    start_daemons  # one that died since (bad state files, a port still taken) gets another go
    states=""
    all_up=1
    for node in "${nodes[@]}"; do
        state="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1 || true)"
        states+="$node=${state:-?} "
        up "$state" || all_up=0
        case "$state" in
            down* | drain* | fail*)  # left over from an earlier run (a test's lost node)
                scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
        esac
    done
    ((all_up)) && break
    sleep 1
done
((all_up)) || die "not every node is up after ${wait_s} s (sinfo: ${states:-no answer})"
sacct -n -X -j 1 >/dev/null || die "sacct does not answer: accounting is not working"
echo "SLURM is up with accounting: ${states% }"
sinfo
