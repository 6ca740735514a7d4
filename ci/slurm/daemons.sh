# Sourced by start.sh and stop.sh: find a daemon by its pid file, trusting the file only as far
# as /proc confirms it. A pid file can outlive its daemon (kill -9, a machine whose processes
# were stopped without cleanup), and then name a zombie or an unrelated process that reused
# the pid; `kill -0` alone would take either for the daemon and skip starting it.

daemon_pid() {  # daemon_pid NAME PIDFILE: print the pid if NAME runs with the pid in PIDFILE
    local name="$1" pidfile="$2" pid state
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' 2>/dev/null <"$pidfile")" || return 1  # a daemon exiting removes it
    [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    # the third field of /proc/PID/stat is the state; the name before it may hold spaces
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
    [[ "$state" != Z && "$state" != X ]] || return 1
    echo "$pid"
}
