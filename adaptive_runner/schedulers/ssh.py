"""The SSH scheduler: job arrays on a few machines without a batch system, over OpenSSH.

``SSH(hosts={"node1": 8, "node2": 4})`` runs at most 8 tasks at once on node1 and 4 on node2
(their *slots*, like disBatch's ``-s host:count``). The run directory, the fnames and the
working directory must be on a file system that every host mounts at the same path:
:meth:`SSH.check_shared` proves it before anything is written.

An array is spread over the hosts when it is submitted: each task goes where the largest share
of slots is free (as this object last saw the hosts), so tasks beyond the free slots wait on
their host, in proportion to its slots, until a slot frees (see ssh_programs.py). A task is
not pinned there: each round the job manager calls :meth:`SSH.place_pending`, which gives a
task that waits on busy or silent hosts one more wrapper on a host with a free slot. The
first of its wrappers to hold a slot claims the task (a symlink in the shared array
directory, made atomically) and runs it; the others end. So placement follows the slots free
at start time, a task never runs twice, and a host that answers again gets the waiting tasks
at the next round. Task ids are ``S<n>_<i>``, as for Local's ``L<n>_<i>``.
``JOBS_DIR/S<n>/array.json`` records the script, the tag and the hosts the array may use; the
tasks' own records are written next to it by their hosts.

ssh calls, all with ``BatchMode=yes`` over one shared connection per host (ControlMaster, in
a private directory), in parallel across hosts: at the start one per host for
:meth:`SSH.check` and one for :meth:`SSH.check_shared`; per submitted array one per host that
gets tasks; per poll one per host of the asked arrays, with tasks there or not (so a host
that answers again is seen); per round that gives waiting tasks a host, one per host that
gets some; per cancel one per host.

A host that does not answer a poll is not taken for dead: its wrappers are reported as their
records on the shared file system last said (running, pending, cancelled or ended), so the
learners of its running tasks go back only when their heartbeat lease expires, and no new
task is placed there until it answers again; its waiting tasks get a wrapper elsewhere.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from adaptive_runner.common.files import atomic_write, write_check_file
from adaptive_runner.common.validation import plain_text, positive_int, positive_seconds
from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import (
    FileScheduler,
    JobState,
    QueuedTask,
    TaskEnd,
    check_array_id,
    is_array_id,
    new_array_dir,
)
from adaptive_runner.schedulers.ssh_hosts import (
    HostBook,
    check_host,
    check_hosts,
    on_hosts,
    slot_key,
)
from adaptive_runner.schedulers.ssh_parsers import (
    check_failure,
    exit_record,
    merged_state,
    parse_look,
    parse_tokens,
    ssh_failure,
)
from adaptive_runner.schedulers.ssh_programs import (
    CANCEL,
    HOSTS_DIR,
    LOOK,
    START,
    TASK,
    TASK_SCRIPT,
    TOKENS,
    check_program,
    remote_command,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

log = structlog.get_logger("adaptive_runner.schedulers.ssh")

ARRAY_FILE = "array.json"
ARRAY_CANCEL = "cancel"
ARRAY_PREFIX = "S"  # arrays are S1, S2, ...
CHECK_TIMEOUT_S = 120.0  # the extra script (module load) and Python's imports, on a busy host
LOOK_TIMEOUT_S = 30.0
CANCEL_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class SSH(FileScheduler):
    """Run job arrays on a few machines over ssh: no batch system, a shared file system.

    Parameters
    ----------
    hosts
        Host -> worker slots: how many tasks run there at once, e.g. ``{"node1": 8}``. A host
        is what ``ssh`` takes (a name, an address, ``user@host``, a ``~/.ssh/config`` alias);
        ssh options (port, key, jump host) belong in ``~/.ssh/config``. The slots of a host
        are shared by a run's groups; each group uses at most its own count.
    kill_grace_s
        Seconds a cancelled task has, after SIGTERM, to save and release its learner before
        its process group gets SIGKILL (its wrapper on the host escalates).

    """

    name: ClassVar[str] = "ssh"
    template_name: ClassVar[str] = "ssh.sh.j2"
    poll_interval_s: ClassVar[float] = 5.0  # one ssh per host per poll

    hosts: Mapping[str, int]
    kill_grace_s: float = 30.0
    _book: HostBook = field(default_factory=HostBook, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the options (no ssh yet: that is :meth:`check`)."""
        super().__post_init__()
        object.__setattr__(self, "hosts", check_hosts(self.hosts))
        object.__setattr__(
            self, "kill_grace_s", positive_seconds(self.kill_grace_s, "kill_grace_s")
        )
        if self.walltime is not None:
            raise ConfigError(
                f"walltime={self.walltime!r}: the SSH scheduler has no time limit to enforce; "
                "leave it out, or bound each job's run time with a timedelta goal"
            )

    # -- before a run starts -----------------------------------------------------------------

    def check(self) -> None:
        """One ssh per host: it answers, has setsid and flock, and its python imports the worker.

        The python runs after the job's own environment (``env``, ``extra_script``), as in a
        task. Raises a ConfigError naming each host that fails, and why.
        """
        exports = [(name, str(value)) for name, value in self.env.items()]
        program = check_program(self.python, exports, self.extra_script)
        command = remote_command(program, "adaptive-runner-check", [])
        answers = on_hosts(dict.fromkeys(self.hosts, command), timeout_s=CHECK_TIMEOUT_S)
        self._refuse(
            {
                host: check_failure(host, self.python, answer)
                for host, answer in answers.items()
                if isinstance(answer, SchedulerCommandError)
            }
        )

    def check_shared(self, paths: Mapping[str, Path]) -> None:
        """Prove that every host sees ``paths`` and the working directory as this one does.

        Per file system holding one of them, a token is written here (beside the path, or in
        its nearest existing parent) and read there, with one ssh per host; the tokens are
        removed after. Raises a ConfigError naming each host, path and what it saw.
        """
        places = token_places({**paths, "the working directory": Path.cwd()})
        tokens = {place: secrets.token_hex(16) for place in places}
        written: list[Path] = []
        args: list[str] = []  # PATH TOKEN PATH TOKEN ...
        try:
            for (directory, what), token in tokens.items():
                written.append(_write_token(directory, what, token))
                args += [str(written[-1]), token]
            command = remote_command(TOKENS, "adaptive-runner-tokens", args)
            answers = on_hosts(dict.fromkeys(self.hosts, command), timeout_s=LOOK_TIMEOUT_S)
        finally:
            for path in written:
                path.unlink(missing_ok=True)
        problems: dict[str, str] = {}
        for host, answer in answers.items():
            if isinstance(answer, SchedulerCommandError):
                problems[host] = ssh_failure(host, answer)
                continue
            verdicts = parse_tokens(answer, len(written))
            for (_, what), path, verdict in zip(places, written, verdicts, strict=True):
                if verdict != "ok":
                    problems[host] = (
                        f"path not shared: {what} is not on a file system this host shares "
                        f"(the token written at {path} is {verdict} there); the run "
                        "directory, the fnames and the working directory must be at the same "
                        "paths on every host"
                    )
                    break
        self._refuse(problems)

    def _refuse(self, problems: Mapping[str, str]) -> None:
        if problems:
            lines = "".join(f"\n  {host}: {why}" for host, why in problems.items())
            raise ConfigError(
                f"SSH: {len(problems)} of {len(self.hosts)} hosts failed the check, so "
                f"nothing was written:{lines}"
            )

    # -- arrays ------------------------------------------------------------------------------

    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        """Place ``n_tasks`` tasks on the hosts and start them: one ssh per host that gets some.

        The array's files go to ``script.parent / <array_id>`` (the run's jobs directory).
        ``max_running`` is not needed: the hosts' slots bound how many tasks run at once and
        the job manager how many exist. Tasks on a host whose ssh fails are reported failed
        (never started); only when every host fails is the submission an error.
        """
        del max_running
        positive_int(n_tasks, "n_tasks")
        script = Path(script).absolute()
        if not script.is_file():
            raise ConfigError(f"script {str(script)!r} is not a file")
        jobs_dir = script.parent
        plain_text(str(jobs_dir), "the jobs directory")
        placement = self._book.placement(n_tasks, self.hosts)
        array_dir = new_array_dir(jobs_dir, ARRAY_PREFIX)
        _write_task_script(jobs_dir)
        spec = {
            "script": str(script),
            "n_tasks": n_tasks,
            "tag": tag,
            "hosts": list(self.hosts),
            "workdir": plain_text(str(Path.cwd()), "the working directory"),
            "submitted": time.time(),
        }
        atomic_write(array_dir / ARRAY_FILE, json.dumps(spec).encode())
        by_host: dict[str, dict[str, list[int]]] = {}
        for index, host in enumerate(placement):
            by_host.setdefault(host, {}).setdefault(array_dir.name, []).append(index)
        failed = self._start(jobs_dir, {array_dir.name: spec}, by_host)
        if len(failed) == len(by_host):
            (array_dir / ARRAY_FILE).unlink()  # nothing of it runs: not to be adopted
            reasons = "; ".join(f"{host}: {why}" for host, why in failed.items())
            raise SchedulerCommandError(f"no host started array {array_dir.name}: {reasons}")
        for host, why in failed.items():
            log.warning("tasks not started on a host", host=host, array=array_dir.name, why=why)
        return array_dir.name

    def place_pending(self, tasks: Collection[str]) -> None:
        """Give tasks that wait for a slot a wrapper on a host with one free (see HostBook.moves).

        One ssh per host that gets some. The task's other wrappers stay: the first to hold a
        slot claims the task and runs it, the others end (ssh_programs.py), so it never runs
        twice. Only arrays that may use every host of this scheduler are placed again (not
        those submitted under other ``hosts``). A host whose ssh fails is logged and taken
        for down; nothing is raised.
        """
        jobs_dir = self._jobs()
        specs = {
            array_id: spec
            for array_id in {self.array_of(task) for task in tasks}
            if (spec := _read_spec(jobs_dir, array_id)) is not None
            and set(self.hosts) <= set(spec["hosts"])
        }
        waiting = sorted((t for t in tasks if self.array_of(t) in specs), key=_task_order)
        by_host: dict[str, dict[str, list[int]]] = {}
        for host, moved in self._book.moves(waiting, self.hosts).items():
            for task in moved:
                array_id, _, index = task.rpartition("_")
                by_host.setdefault(host, {}).setdefault(array_id, []).append(int(index))
        failed = self._start(jobs_dir, specs, by_host)
        for host, arrays in by_host.items():
            moved = [f"{a}_{i}" for a, indices in arrays.items() for i in indices]
            if host in failed:
                log.warning("waiting tasks not started on a host", host=host, why=failed[host])
            else:
                log.info("waiting tasks started on a host with a free slot", host=host, tasks=moved)

    def _start(
        self,
        jobs_dir: Path,
        specs: Mapping[str, Mapping[str, Any]],
        by_host: Mapping[str, Mapping[str, Sequence[int]]],
    ) -> dict[str, str]:
        """START wrappers of tasks (host -> array -> indices): one ssh per host, all at once.

        ``specs`` are the arrays' array.json. Returns host -> why its ssh failed.
        """
        grace = str(math.ceil(self.kill_grace_s))
        commands: dict[str, str] = {}
        for host, arrays in by_host.items():
            args = [str(jobs_dir), host, slot_key(jobs_dir, host), str(self.hosts[host]), grace]
            for array_id, indices in arrays.items():
                spec = specs[array_id]
                args += [array_id, spec["script"], spec["workdir"], ",".join(map(str, indices))]
            commands[host] = remote_command(START, "adaptive-runner-start", args)
        failed: dict[str, str] = {}
        for host, answer in on_hosts(commands, timeout_s=self.submit_timeout_s).items():
            if isinstance(answer, SchedulerCommandError):
                failed[host] = ssh_failure(host, answer)
                self._book.unanswered(host, failed[host])
            else:
                tasks = [f"{a}_{i}" for a, indices in by_host[host].items() for i in indices]
                self._book.started(host, tasks)
        return failed

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        """Ask each host of these arrays about their tasks: one ssh per host, all at once.

        A task's state merges its hosts' answers (:func:`merged_state`: running where its
        wrapper claimed it, pending while one waits for a slot); a host that does not answer
        counts as its records say (:func:`recorded_state`). The name is the array's tag;
        unknown arrays are absent.
        """
        jobs_dir = self._jobs()
        specs = {a: spec for a in array_ids if (spec := _read_spec(jobs_dir, a)) is not None}
        by_host = _by_host(specs)
        commands = {
            host: remote_command(
                LOOK, "adaptive-runner-look", [str(jobs_dir), host, *_items(arrays)]
            )
            for host, arrays in by_host.items()
        }
        answers: dict[str, list[JobState | None]] = {}
        for host, answer in on_hosts(commands, timeout_s=LOOK_TIMEOUT_S).items():
            asked = [f"{a}_{i}" for a, indices in by_host[host].items() for i in indices]
            if isinstance(answer, SchedulerCommandError):
                self._book.unanswered(host, ssh_failure(host, answer))
                found = {task: recorded_state(jobs_dir, task, host) for task in asked}
            else:
                found = parse_look(answer)
                if missing := set(asked) - set(found):
                    raise SchedulerCommandError(
                        f"{host} answered without the tasks {sorted(missing)}: {answer!r}"
                    )
                self._book.answered(host, by_host[host], found)
            for task, state in found.items():
                answers.setdefault(task, []).append(state)
        return {
            task: QueuedTask(merged_state(states), specs[self.array_of(task)].get("tag"))
            for task, states in answers.items()
        }

    def find_tagged(self, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id, from the ``array.json`` files of the run's arrays (no ssh)."""
        jobs_dir = self._jobs()
        wanted = set(tags)
        found: dict[str, str] = {}
        for array_file in jobs_dir.glob(f"S*/{ARRAY_FILE}"):
            if is_array_id(array_file.parent.name, ARRAY_PREFIX):
                tag = _read_json(array_file).get("tag")
                if tag in wanted:
                    found[tag] = array_file.parent.name
        return found

    def exit_states(self, array_ids: Collection[str]) -> dict[str, TaskEnd]:
        """How these arrays' ended tasks ended, from their ``<i>.exit`` records (no ssh)."""
        jobs_dir = self._jobs()
        ends: dict[str, TaskEnd] = {}
        for array_id in array_ids:
            for path in (jobs_dir / _check_array_id(array_id)).glob("*.exit"):
                if path.stem.isdigit():
                    ends[f"{array_id}_{path.stem}"] = exit_record(path.read_text())
        return ends

    def cancel(self, ids: Collection[str]) -> None:
        """Cancel tasks (``S3_4``) or whole arrays (``S3``): one ssh per host; no waiting.

        Each task's cancel file is written first: a host that ssh cannot reach ends the task
        when its wrapper sees the file; this is logged, not raised.
        """
        jobs_dir = self._jobs()
        specs: dict[str, Mapping[str, Any]] = {}
        targets: dict[str, list[int]] = {}
        for task_or_array in ids:
            array_id, sep, index_text = task_or_array.partition("_")
            array_dir = jobs_dir / _check_array_id(array_id)
            spec = _read_spec(jobs_dir, array_id)
            if spec is None:
                raise ConfigError(f"no SSH array {array_id}: {array_dir / ARRAY_FILE} is missing")
            specs[array_id] = spec
            n_tasks = spec["n_tasks"]
            if not sep:
                (array_dir / ARRAY_CANCEL).touch()
                targets.setdefault(array_id, []).extend(range(n_tasks))
                continue
            if not index_text.isdigit() or int(index_text) >= n_tasks:
                raise ConfigError(
                    f"no task {task_or_array!r}: array {array_id} has tasks 0..{n_tasks - 1}"
                )
            (array_dir / f"{int(index_text)}.cancel").touch()
            targets.setdefault(array_id, []).append(int(index_text))
        grace = str(math.ceil(self.kill_grace_s))
        commands = {
            host: remote_command(
                CANCEL, "adaptive-runner-cancel", [str(jobs_dir), host, grace, *_items(arrays)]
            )
            for host, arrays in _by_host(specs, only=targets).items()
        }
        for host, answer in on_hosts(commands, timeout_s=CANCEL_TIMEOUT_S).items():
            if isinstance(answer, SchedulerCommandError):
                why = ssh_failure(host, answer)
                self._book.unanswered(host, why)
                log.warning(
                    "cannot reach a host to cancel: its tasks end on their cancel file",
                    host=host,
                    why=why,
                )

    # -- ssh -----------------------------------------------------------------------------------


def token_places(paths: Mapping[str, Path]) -> list[tuple[Path, str]]:
    """Where to write one check token per file system: (an existing directory, what it is for).

    A path that does not exist yet (a new run directory) is vouched for by its nearest
    existing parent.
    """
    places: dict[int, tuple[Path, str]] = {}
    for what, path in paths.items():
        plain_text(str(path), what)
        directory = Path(path).absolute()
        while not directory.is_dir() and directory != directory.parent:
            directory = directory.parent
        places.setdefault(directory.stat().st_dev, (directory, f"{what} {str(path)!r}"))
    return list(places.values())


def claimed_by(jobs_dir: Path, task: str) -> str | None:
    """The host whose wrapper claimed ``task`` (it runs or ran it there); None before a claim."""
    array_id, _, index = task.rpartition("_")
    try:
        target = str((jobs_dir / _check_array_id(array_id) / f"{index}.claim").readlink())
    except FileNotFoundError:
        return None
    return target.split(" ", 1)[0]


def recorded_state(jobs_dir: Path, task: str, host: str) -> JobState | None:
    """A task's state on ``host`` as the records on the shared file system say (it did not answer).

    Ended if it has an exit record; None if another host's wrapper claimed it (that host
    tells); cancelled if a cancel was asked (its wrapper ends it when it sees the file);
    running if the wrapper there started its job; pending if a wrapper was started there;
    None if none was.
    """
    array_id, _, index = task.rpartition("_")
    array_dir = jobs_dir / _check_array_id(array_id)
    if (exit_file := array_dir / f"{index}.exit").is_file():
        return exit_record(exit_file.read_text()).state
    claimant = claimed_by(jobs_dir, task)
    if claimant not in (None, host):
        return None
    if (array_dir / ARRAY_CANCEL).exists() or (array_dir / f"{index}.cancel").exists():
        return JobState.CANCELLED
    if claimant == host and (array_dir / f"{index}.job").exists():
        return JobState.RUNNING
    if (array_dir / HOSTS_DIR / host / f"{index}.wrapper").exists():
        return JobState.PENDING
    return None


def _by_host(
    specs: Mapping[str, Mapping[str, Any]], *, only: Mapping[str, Iterable[int]] | None = None
) -> dict[str, dict[str, list[int]]]:
    """Host -> array -> task indices: each host an array may use, all its tasks or ``only``'s."""
    by_host: dict[str, dict[str, list[int]]] = {}
    for array_id, spec in specs.items():
        indices = list(range(spec["n_tasks"]) if only is None else only[array_id])
        for host in spec["hosts"]:
            by_host.setdefault(host, {})[array_id] = indices
    return by_host


def _task_order(task: str) -> tuple[int, int]:
    """Oldest array first, then by index (``S3_4`` -> (3, 4))."""
    array_id, _, index = task.rpartition("_")
    return int(array_id.removeprefix(ARRAY_PREFIX)), int(index)


def _items(arrays: Mapping[str, Sequence[int]]) -> list[str]:
    """The remote programs' task arguments: ``S3:0,1,2`` per array."""
    return [f"{array_id}:{','.join(map(str, indices))}" for array_id, indices in arrays.items()]


def _write_token(directory: Path, what: str, token: str) -> Path:
    try:
        return write_check_file(directory, token + "\n")
    except OSError as e:
        raise ConfigError(
            f"cannot write a check token into {directory} (for {what}): {e}; the run "
            "directory and the fnames' directories must be writable"
        ) from e


def _write_task_script(jobs_dir: Path) -> None:
    """The tasks' wrapper (ssh_programs.TASK), written where every host reads it."""
    path = jobs_dir / TASK_SCRIPT
    try:
        if path.read_text() == TASK:
            return
    except FileNotFoundError:
        pass
    atomic_write(path, TASK.encode(), mode=0o755)


def _check_array_id(array_id: str) -> str:
    return check_array_id(array_id, ARRAY_PREFIX, "SSH")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no SSH array file: {path} does not exist") from None
    return result


def _read_spec(jobs_dir: Path, array_id: str) -> dict[str, Any] | None:
    """An array's ``array.json``, or None for an array this jobs directory does not have.

    Its hosts are checked again: each becomes an argument of ssh.
    """
    path = jobs_dir / _check_array_id(array_id) / ARRAY_FILE
    if not path.is_file():
        return None
    spec = _read_json(path)
    for host in spec["hosts"]:
        check_host(host, f"{path} names the host")
    return spec
