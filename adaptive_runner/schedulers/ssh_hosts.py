"""The SSH scheduler's hosts: their names, one ssh to each at once, and where a task goes.

Every ssh runs with ``BatchMode=yes`` (a missing key fails instead of prompting) and shares
one connection per host (ControlMaster, its socket in a private directory, kept open a minute
after the last use), so a poll costs a session, not a login.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from adaptive_runner.common.validation import positive_int
from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import run_command

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from adaptive_runner.schedulers.base import JobState

log = structlog.get_logger("adaptive_runner.schedulers.ssh")

# [user@]host as ssh takes it; ssh options belong in ~/.ssh/config (a leading "-" would be one).
_HOST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_HOST_CHARS = 255
MAX_PARALLEL_SSH = 32
CONTROL_PERSIST_S = 60  # a host's connection stays open this long after its last use
SSH_OPTIONS = (
    "-n",  # no stdin: the remote programs take their arguments only
    "-T",
    "-o", "BatchMode=yes",  # never a password or host-key prompt: fail instead
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=10",
    "-o", "ServerAliveCountMax=3",
    "-o", "ControlMaster=auto",
    "-o", f"ControlPersist={CONTROL_PERSIST_S}",
)  # fmt: skip


def check_hosts(hosts: object) -> dict[str, int]:
    """``hosts`` as a dict once every name is one ssh takes and every slot count positive."""
    if not isinstance(hosts, Mapping) or not hosts:
        raise ConfigError(
            "hosts must be a non-empty mapping of host names to worker slots, e.g. "
            f"hosts={{'node1': 8, 'node2': 4}}; got {hosts!r}"
        )
    return {
        check_host(host, "hosts has the key"): positive_int(slots, f"hosts[{host!r}]")
        for host, slots in hosts.items()
    }


def check_host(host: object, what: str) -> str:
    """``host`` if ssh takes it as a destination, never as an option (``what``: for the error)."""
    if not isinstance(host, str) or len(host) > MAX_HOST_CHARS or not _HOST.fullmatch(host):
        raise ConfigError(
            f"{what} {host!r}, which is not a host for ssh: give a name, an address or "
            "user@host (letters, digits, '.', '_', '-'), e.g. 'node1'; put ssh options (port, "
            "key, jump host) in ~/.ssh/config"
        )
    return host


def control_dir() -> Path:
    """The private directory (0700) of ssh's connection sockets (ControlPath), made once.

    Short, because a socket's path is limited to about 100 characters.
    """
    path = Path(tempfile.gettempdir()) / f"ar-ssh-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{path} is not a directory of this user with mode 0700: ssh's connection "
            "sockets would not be private there; remove it"
        )
    if "%" in str(path):
        raise ConfigError(f"{path} holds a '%', which ssh's ControlPath would expand; set TMPDIR")
    return path


def ssh_command(host: str, command: str) -> list[str]:
    """The argv that runs ``command`` (one string for the remote login shell) on ``host``."""
    control_path = f"ControlPath={control_dir()}/%C"
    return ["ssh", *SSH_OPTIONS, "-o", control_path, "--", host, command]


def on_hosts(
    commands: Mapping[str, str], *, timeout_s: float
) -> dict[str, str | SchedulerCommandError]:
    """Run one remote command per host, all at once: each host's stdout, or its error.

    Each ssh is tried once (a poll that fails is answered from the records; a start may
    have started): the caller decides what a failure means.
    """
    if not commands:
        return {}

    def one(host: str) -> str | SchedulerCommandError:
        try:
            return run_command(
                ssh_command(host, commands[host]),
                timeout_s=timeout_s,
                retries=1,
                missing_hint="install the OpenSSH client",
            )
        except SchedulerCommandError as e:
            return e

    with ThreadPoolExecutor(max_workers=min(len(commands), MAX_PARALLEL_SSH)) as pool:
        return dict(zip(commands, pool.map(one, commands), strict=True))


def place(n_tasks: int, free: Mapping[str, int], slots: Mapping[str, int]) -> list[str]:
    """The host of each of ``n_tasks`` new tasks, given the free slots of the usable hosts.

    Each goes where the largest share of slots is free (ties: the first host), so tasks
    beyond the free slots queue in proportion to the hosts' slots.
    """
    left = dict(free)
    placement: list[str] = []
    for _ in range(n_tasks):
        host = max(left, key=lambda h: left[h] / slots[h])
        placement.append(host)
        left[host] -= 1
    return placement


def slot_key(jobs_dir: Path, host: str) -> str:
    """The name of a host's slot directory for one run (a host may serve several runs)."""
    return hashlib.sha256(f"{jobs_dir}\0{host}".encode()).hexdigest()[:16]


@dataclass
class HostBook:
    """What one SSH scheduler object last learned of its hosts, to place tasks.

    Not configuration (not in run.json): a new object knows nothing until its first poll.
    It sees only its own group's tasks; a host's slots shared with other groups are found
    busy by the wrappers' ``flock``, never by this book, so its counts only guide placement.
    """

    active: dict[str, set[str]] = field(default_factory=dict)  # host -> tasks waiting or run there
    down: dict[str, str] = field(default_factory=dict)  # host -> why it did not answer last

    def placement(self, n_tasks: int, slots: Mapping[str, int]) -> list[str]:
        """Hosts for ``n_tasks`` new tasks: the hosts that answered (all, if none did)."""
        up = [host for host in slots if host not in self.down] or list(slots)
        free = {host: slots[host] - len(self.active.get(host, ())) for host in up}
        return place(n_tasks, free, slots)

    def moves(self, pending: Sequence[str], slots: Mapping[str, int]) -> dict[str, list[str]]:
        """Host -> the pending tasks (of ``pending``, in order) that get a wrapper there.

        A pending task waits for a slot when each host with a wrapper of it is down or has
        more of the tasks than slots. It gets a wrapper on the answering host of ``slots``
        with the largest share of slots free, one per free slot, never a second on a host.
        """
        count = {host: len(tasks) for host, tasks in self.active.items()}
        free = {h: slots[h] - count.get(h, 0) for h in slots if h not in self.down}
        moves: dict[str, list[str]] = {}
        for task in pending:
            hosts = {host for host, tasks in self.active.items() if task in tasks}
            if any(h not in self.down and count[h] <= slots.get(h, 0) for h in hosts):
                continue  # a slot of a host with a wrapper of it is, or is about to be, its
            open_hosts = [h for h in free if free[h] > 0 and h not in hosts]
            if open_hosts:
                host = max(open_hosts, key=lambda h: free[h] / slots[h])
                moves.setdefault(host, []).append(task)
                free[host] -= 1
        return moves

    def started(self, host: str, tasks: Collection[str]) -> None:
        """``host`` started wrappers of these tasks."""
        self.active.setdefault(host, set()).update(tasks)

    def answered(
        self, host: str, arrays: Collection[str], states: Mapping[str, JobState | None]
    ) -> None:
        """``host`` told the states of its wrappers of the tasks of ``arrays``."""
        kept = {t for t in self.active.get(host, set()) if t.rsplit("_", 1)[0] not in arrays}
        self.active[host] = kept | {t for t, s in states.items() if s is not None and s.active}
        if self.down.pop(host, None) is not None:
            log.info("a host answers again", host=host)

    def unanswered(self, host: str, why: str) -> None:
        """An ssh to ``host`` failed; logged once, until it answers again."""
        if host not in self.down:
            log.warning("a host does not answer; its tasks keep their state", host=host, why=why)
        self.down[host] = why
