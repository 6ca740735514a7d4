#!/usr/bin/env bash
# Make `ssh node1` and `ssh node2` reach two OpenSSH servers on this machine, for the tests of
# the SSH scheduler (tests/schedulers/test_ssh.py): sshd on 127.0.0.2:2222 (node1) and 127.0.0.3:2222
# (node2), each its own daemon, so one host can be taken down (ci/ssh/stop.sh node2) while
# the other stays. Root logs in with a key of its own; no password anywhere.
#
# Also, for the refusals the scheduler's check() must name:
#   node1-not-shared  node1's sshd on port 2223, whose sessions see a directory of their own
#                  at $not_shared (a private mount namespace): a host on which paths under
#                  it are not shared (wherever this checkout and its Python live)
#   node1-nokey    node1's sshd on port 2224, with a key that is not authorized (Permission
#                  denied; its own port, or ssh would reuse node1's open connection)
#   nowhere        a port where no sshd listens (Connection refused)
#
# Idempotent: installs openssh-server if sshd is missing, makes the host keys and root's key
# pairs if missing, (re)writes the sshd configs, the known_hosts file and a marked block at
# the top of ~/.ssh/config, starts only the daemons that are not running (restarts one whose
# config changed) and checks, bounded, that every alias answers as it should. Exits non-zero,
# with the daemons' logs, when anything fails. Needs root.
set -euo pipefail

not_shared=/var/tmp/adaptive-runner-not-shared  # tests/schedulers/test_ssh.py: NOT_SHARED

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf_dir=/etc/ssh/adaptive_runner_ci
key=~/.ssh/adaptive_runner_ci
stranger_key=~/.ssh/adaptive_runner_ci_stranger
known_hosts=~/.ssh/adaptive_runner_ci_known_hosts
user_config=~/.ssh/config
begin_mark="# BEGIN adaptive_runner ci/ssh/start.sh (rewritten by it; keep this block first)"
end_mark="# END adaptive_runner ci/ssh/start.sh"
wait_s="${SSH_START_WAIT_S:-30}"

die() {
    echo "ci/ssh/start.sh: $*" >&2
    for log in /var/log/adaptive-runner-sshd-node1.log /var/log/adaptive-runner-sshd-node2.log; do
        if [[ -f "$log" ]]; then
            echo "----- last lines of $log -----" >&2
            tail -n 20 "$log" >&2
        fi
    done
    exit 1
}

source "$here/../slurm/daemons.sh"  # daemon_pid NAME PIDFILE

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts daemons)"

if [[ ! -x /usr/sbin/sshd ]] || ! command -v ssh >/dev/null || ! command -v setsid >/dev/null \
    || ! command -v flock >/dev/null || ! command -v unshare >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends openssh-server openssh-client util-linux
fi

# --- keys ------------------------------------------------------------------------------------
ssh-keygen -A >/dev/null  # the host keys that are missing
mkdir -p /run/sshd "$conf_dir" ~/.ssh
chmod 0755 /run/sshd
chmod 0700 ~/.ssh
for k in "$key" "$stranger_key"; do
    [[ -s "$k" ]] || ssh-keygen -q -t ed25519 -N "" -C "adaptive_runner ci" -f "$k"
done
touch ~/.ssh/authorized_keys
chmod 0600 ~/.ssh/authorized_keys
grep -qxF "$(cat "$key.pub")" ~/.ssh/authorized_keys || cat "$key.pub" >>~/.ssh/authorized_keys
# Both daemons use the same host key, known under one alias.
echo "adaptive-runner-ci $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >"$known_hosts"

# --- ~/.ssh/config: our block first (ssh takes the first value it finds for an option) -------
mkdir -p "$not_shared"
chmod 1777 "$not_shared"
own_dir="exec unshare --mount --propagation private sh -c 'mount -t tmpfs -o mode=1777 tmpfs \
$not_shared && exec sh -c \"\$SSH_ORIGINAL_COMMAND\"'"
block="$begin_mark
Host node1
    HostName 127.0.0.2
    Port 2222
    IdentityFile $key
Host node2
    HostName 127.0.0.3
    Port 2222
    IdentityFile $key
Host node1-not-shared
    HostName 127.0.0.2
    Port 2223
    IdentityFile $key
Host node1-nokey
    HostName 127.0.0.2
    Port 2224
    IdentityFile $stranger_key
Host nowhere
    HostName 127.0.0.2
    Port 2299
    IdentityFile $key
Host node1 node2 node1-not-shared node1-nokey nowhere
    User root
    IdentitiesOnly yes
    HostKeyAlias adaptive-runner-ci
    UserKnownHostsFile $known_hosts
    StrictHostKeyChecking yes
$end_mark"
touch "$user_config"
rest="$(awk -v b="$begin_mark" -v e="$end_mark" \
    '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' "$user_config")"
printf '%s\n%s\n' "$block" "$rest" >"$user_config.new"
chmod 0600 "$user_config.new"
mv -f "$user_config.new" "$user_config"

# --- the daemons -----------------------------------------------------------------------------
sshd_config() {  # sshd_config NAME ADDRESS [extra lines]: the config of one daemon
    local name="$1" address="$2"
    shift 2
    cat <<EOF
# Written by adaptive_runner ci/ssh/start.sh: the test host $name.
ListenAddress $address:2222
PidFile /run/adaptive-runner-sshd-$name.pid
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# ControlMaster multiplexes many sessions over one connection.
MaxSessions 100
MaxStartups 100
EOF
    printf '%s\n' "$@"
}

start_sshd() {  # start_sshd NAME ADDRESS [extra lines]
    local name="$1" conf="$conf_dir/$1.conf" pidfile="/run/adaptive-runner-sshd-$1.pid" pid
    sshd_config "$@" >"$conf.new"
    /usr/sbin/sshd -t -f "$conf.new" || die "sshd refuses the config of $name ($conf.new)"
    if pid="$(daemon_pid sshd "$pidfile")"; then
        if cmp -s "$conf.new" "$conf"; then
            rm -f "$conf.new"
            return 0
        fi
        bash "$here/stop.sh" "$name"
    fi
    mv -f "$conf.new" "$conf"
    /usr/sbin/sshd -f "$conf" -E "/var/log/adaptive-runner-sshd-$name.log" \
        || die "sshd for $name did not start"
}

start_sshd node1 127.0.0.2 \
    "ListenAddress 127.0.0.2:2223" \
    "ListenAddress 127.0.0.2:2224" \
    "Match LocalPort 2223" \
    "    ForceCommand $own_dir"
start_sshd node2 127.0.0.3

# --- check every alias, bounded ------------------------------------------------------------
probe=$not_shared/adaptive-runner-ci-ssh-probe
touch "$probe"
answers() {  # answers HOST: one command reaches HOST
    ssh -o BatchMode=yes -o ConnectTimeout=5 "$1" true 2>/dev/null
}
for host in node1 node2 node1-not-shared; do
    for _ in $(seq 1 $((wait_s * 2))); do
        if answers "$host"; then break; fi
        sleep 0.5
    done
    ssh -o BatchMode=yes -o ConnectTimeout=5 "$host" true \
        || die "ssh $host does not answer (see the error above)"
done
ssh -o BatchMode=yes node1 test -e "$probe" || die "node1 does not see $probe"
ssh -o BatchMode=yes node1-not-shared test ! -e "$probe" \
    || die "node1-not-shared sees $probe: its sessions should have $not_shared of their own"
rm -f "$probe"
if answers node1-nokey; then die "node1-nokey logs in, but its key should be refused"; fi
if answers nowhere; then die "nowhere answers, but no sshd should listen there"; fi
echo "ssh node1, node2 and node1-not-shared answer; node1-nokey and nowhere are refused"
