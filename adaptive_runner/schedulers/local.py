"""The embedded Local scheduler: job arrays as detached local processes, no cluster needed.

``submit`` starts one detached **supervisor** process per array. It runs the array's tasks
(``bash SCRIPT``, each in its own session and process group) with at most ``max_running`` at
once, and keeps doing so after the manager that submitted them has exited. Everything the
scheduler knows lives in files, written atomically, in ``JOBS_DIR/<array_id>/``:

    array.json        the script, n_tasks, max_running, kill_grace_s and walltime_s of the array
    supervisor.json   the supervisor's pid and process start time
    supervisor.log    the supervisor's output (and a task's, before its script redirects it)
    <i>.pid           task i started: its pid and process start time (guards pid reuse)
    <i>.exit          task i ended: its return code (-n: signal n), whether it had been
                      cancelled, whether it ran past the walltime
    <i>.cancel        cancel() asked for task i to end (or never start)
    cancel            cancel() asked for the whole array to end

``JOBS_DIR`` is the run's ``jobs/`` directory, which :meth:`Local.bind` gives the scheduler.
So :meth:`Local.queue_named` makes no scheduler call: it reads these files. A restarted manager
still sees the tasks of earlier sessions. If the supervisor died (``kill -9``), everything it
left unfinished is reported ``failed``: started tasks once their process is gone, tasks
not yet started at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psutil

from adaptive_runner.common.files import atomic_write
from adaptive_runner.common.task_identity import LOCAL_ARRAY_ID_VAR, LOCAL_TASK_INDEX_VAR
from adaptive_runner.common.validation import positive_int, positive_seconds
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

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

SUPERVISOR_MODULE = "adaptive_runner.schedulers.local"
TASK_ID_VAR = "LOCAL_TASK_ID"
TASK_COUNT_VAR = "LOCAL_ARRAY_TASK_COUNT"

ARRAY_FILE = "array.json"
SUPERVISOR_FILE = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"
ARRAY_CANCEL = "cancel"
ARRAY_PREFIX = "L"  # arrays are L1, L2, ...

POLL_INTERVAL_S = 0.1  # how often the supervisor looks for ended tasks and cancel requests
# Process start times are compared with this tolerance: psutil derives them from the boot
# time, which moves when the wall clock is stepped; a reused pid starts much later.
START_TIME_TOLERANCE_S = 1.0
SUPERVISOR_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class Local(FileScheduler):
    """Run job arrays as local processes: the default when there is no cluster.

    Takes the common options of :class:`Scheduler`; a task past its ``walltime``
    (``"HH:MM:SS"`` or a timedelta) gets SIGTERM, as on a cluster, and SIGKILL
    ``kill_grace_s`` later. Cluster options (queue, account, memory, ...) mean nothing here.

    Parameters
    ----------
    kill_grace_s
        Seconds a cancelled task, or one past its walltime, has after SIGTERM to save and
        release its learner before its process group gets SIGKILL (the supervisor
        escalates; ``cancel`` does not wait).

    """

    name: ClassVar[str] = "local"
    template_name: ClassVar[str] = "local.sh.j2"
    bind_host: ClassVar[str] = "127.0.0.1"
    poll_interval_s: ClassVar[float] = 1.0  # queue_named() only reads files: cheap to ask often

    kill_grace_s: float = 30.0  # a timedelta is taken too, and stored as seconds

    def __post_init__(self) -> None:
        """Validate the options."""
        super().__post_init__()
        object.__setattr__(
            self, "kill_grace_s", positive_seconds(self.kill_grace_s, "kill_grace_s")
        )

    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        """Start a detached supervisor that runs ``bash script`` as tasks 0..n_tasks-1.

        The array's files go to ``<jobs_dir>/<array_id>`` (see :meth:`bind`).
        """
        positive_int(n_tasks, "n_tasks")
        positive_int(max_running, "max_running")
        script = Path(script).absolute()
        if not script.is_file():
            raise ConfigError(f"script {str(script)!r} is not a file")
        array_dir = new_array_dir(self._jobs(), ARRAY_PREFIX)
        spec = {
            "script": str(script),
            "n_tasks": n_tasks,
            "max_running": max_running,
            "kill_grace_s": float(self.kill_grace_s),
            "walltime_s": self.walltime_s,
            "submitted": time.time(),
            "tag": tag,
        }
        atomic_write(array_dir / ARRAY_FILE, json.dumps(spec).encode())
        log_file = array_dir / SUPERVISOR_LOG
        with log_file.open("ab") as log:
            launcher = subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR_MODULE, str(array_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The launcher forks the supervisor, records it and exits, so the supervisor is
        # nobody's child here (no zombie in the manager) and outlives the manager.
        try:
            code = launcher.wait(timeout=SUPERVISOR_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            code = None
        if code != 0 or not (array_dir / SUPERVISOR_FILE).is_file():
            raise SchedulerCommandError(
                f"the local supervisor of {array_dir.name} did not start (exit code {code}); "
                f"see {log_file}"
            )
        return array_dir.name

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        """Read every task of these arrays from their files (no process call).

        A task whose supervisor died is ``running`` while its process lives and ``failed``
        after; the tasks it had not started are ``failed``. The name is the array's tag.
        Unknown arrays are absent.
        """
        states: dict[str, QueuedTask] = {}
        for array_id in array_ids:
            array_dir = self._jobs() / _check_array_id(array_id)
            if (array_dir / ARRAY_FILE).is_file():
                states.update(_array_states(array_dir))
        return states

    def find_tagged(self, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id, from the ``array.json`` files of the run's arrays."""
        wanted = set(tags)
        found: dict[str, str] = {}
        for array_file in self._jobs().glob(f"L*/{ARRAY_FILE}"):
            if is_array_id(array_file.parent.name, ARRAY_PREFIX):
                tag = _read_json(array_file, what="array file").get("tag")
                if tag in wanted:
                    found[tag] = array_file.parent.name
        return found

    def exit_states(self, array_ids: Collection[str]) -> dict[str, TaskEnd]:
        """How these arrays' ended tasks ended, from their ``<i>.exit`` files (no process call)."""
        ends: dict[str, TaskEnd] = {}
        for array_id in array_ids:
            array_dir = self._jobs() / _check_array_id(array_id)
            if not array_dir.is_dir():
                continue
            for path in array_dir.glob("*.exit"):
                end = task_end(_read_json(path, what="exit file"))
                ends[f"{array_id}_{path.stem}"] = end
        return ends

    def cancel(self, ids: Collection[str]) -> None:
        """Cancel tasks (``L3_4``) or whole arrays (``L3``); returns without waiting.

        Unstarted tasks are never started; running ones get SIGTERM on their process group
        now, and SIGKILL from the supervisor if they still run ``kill_grace_s`` later.
        """
        targets: list[tuple[Path, range | list[int]]] = []
        # Mark every target before reading any pid file: the supervisor re-checks the marks
        # after recording a pid, so a task that starts meanwhile is signalled by one of us.
        for task_or_array in ids:
            array_id, sep, index_text = task_or_array.partition("_")
            array_dir = self._jobs() / _check_array_id(array_id)
            n_tasks = _read_json(array_dir / ARRAY_FILE, what=f"local array {array_id}")["n_tasks"]
            if not sep:
                (array_dir / ARRAY_CANCEL).touch()
                targets.append((array_dir, range(n_tasks)))
                continue
            if not index_text.isdigit() or int(index_text) >= n_tasks:
                raise ConfigError(
                    f"no task {task_or_array!r}: array {array_id} has tasks 0..{n_tasks - 1}"
                )
            (array_dir / f"{int(index_text)}.cancel").touch()
            targets.append((array_dir, [int(index_text)]))
        for array_dir, indices in targets:
            names = {path.name for path in array_dir.iterdir()}
            for i in indices:
                if f"{i}.pid" in names and f"{i}.exit" not in names:
                    record = _read_json(array_dir / f"{i}.pid", what="pid file")
                    if _alive(record):
                        _signal_group(record["pid"], signal.SIGTERM)


def _check_array_id(array_id: str) -> str:
    return check_array_id(array_id, ARRAY_PREFIX, "local")


def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {what}: {path} does not exist") from None
    return result


def _process_record(pid: int) -> dict[str, Any]:
    """The pid and start time identifying a live process (a pid alone may be reused)."""
    return {"pid": pid, "create_time": psutil.Process(pid).create_time()}


def _alive(record: Mapping[str, Any]) -> bool:
    """Whether the process of a pid record still runs (same pid, same start time)."""
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) > START_TIME_TOLERANCE_S:
            return False  # the pid now belongs to another process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a task's process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def task_end(record: Mapping[str, Any]) -> TaskEnd:
    """A TaskEnd from an ``<i>.exit`` record: a negative return code -n means signal n.

    A task ended past its walltime is ``TIMEOUT``, as SLURM says it (records written before
    Local had a walltime have no ``timeout``).
    """
    timeout = bool(record.get("timeout", False))
    return TaskEnd.from_exit(
        record["returncode"],
        cancelled=record["cancelled"] or timeout,
        word="TIMEOUT" if timeout and not record["cancelled"] else None,
    )


def _array_states(array_dir: Path) -> dict[str, QueuedTask]:
    spec = _read_json(array_dir / ARRAY_FILE, what="array file")
    tag: str | None = spec.get("tag")
    supervisor = array_dir / SUPERVISOR_FILE
    # Liveness first, files second: a supervisor seen alive may still write files (we then
    # report running/pending, true a moment ago); one seen dead has written its last file.
    supervised = supervisor.is_file() and _alive(_read_json(supervisor, what="supervisor"))
    names = {path.name for path in array_dir.iterdir()}
    array_cancelled = ARRAY_CANCEL in names
    states: dict[str, QueuedTask] = {}
    for i in range(spec["n_tasks"]):
        if f"{i}.exit" in names:
            state = task_end(_read_json(array_dir / f"{i}.exit", what="exit file")).state
        elif f"{i}.pid" in names:
            alive = supervised or _alive(_read_json(array_dir / f"{i}.pid", what="pid file"))
            state = JobState.RUNNING if alive else JobState.FAILED
        elif array_cancelled or f"{i}.cancel" in names:
            state = JobState.CANCELLED
        else:
            state = JobState.PENDING if supervised else JobState.FAILED
        states[f"{array_dir.name}_{i}"] = QueuedTask(state, tag)
    return states


def _cancel_requested(array_dir: Path, index: int) -> bool:
    return (array_dir / ARRAY_CANCEL).exists() or (array_dir / f"{index}.cancel").exists()


@dataclass
class _Running:
    """A task the supervisor started and has not seen end."""

    proc: subprocess.Popen[bytes]
    started: float  # time.monotonic()
    stopping_since: float | None = None  # when it got SIGTERM (from cancel() or the walltime)
    timed_out: bool = False


def supervise(array_dir: Path) -> None:
    """Run the tasks of one array, at most max_running at once, until all have ended.

    Parameters
    ----------
    array_dir
        ``JOBS_DIR/<array_id>``, holding ``array.json`` as written by :meth:`Local.submit`.

    """
    spec = _read_json(array_dir / ARRAY_FILE, what="array file")
    n_tasks: int = spec["n_tasks"]
    walltime_s: int | None = spec.get("walltime_s")  # absent in arrays of older versions
    running: dict[int, _Running] = {}
    next_index = 0
    while next_index < n_tasks or running:
        for i, task in list(running.items()):
            code = task.proc.poll()
            if code is None:
                continue
            del running[i]
            _signal_group(task.proc.pid, signal.SIGKILL)  # what it left behind ends with it
            end = {
                "returncode": code,
                "cancelled": _cancel_requested(array_dir, i),
                "timeout": task.timed_out,
            }
            atomic_write(array_dir / f"{i}.exit", json.dumps(end).encode())
        for i, task in running.items():
            _stop_overdue(task, array_dir, i, walltime_s=walltime_s, grace_s=spec["kill_grace_s"])
        while len(running) < spec["max_running"] and next_index < n_tasks:
            i, next_index = next_index, next_index + 1
            if _cancel_requested(array_dir, i):
                continue  # cancelled before it started: it never will
            task = _Running(_start_task(array_dir, spec["script"], i, n_tasks), time.monotonic())
            running[i] = task
            if _cancel_requested(array_dir, i):  # cancel() may have looked before the pid file
                _signal_group(task.proc.pid, signal.SIGTERM)
                task.stopping_since = time.monotonic()
        time.sleep(POLL_INTERVAL_S)


def _stop_overdue(
    task: _Running, array_dir: Path, index: int, *, walltime_s: int | None, grace_s: float
) -> None:
    """SIGTERM a task past its walltime; SIGKILL one still there ``grace_s`` after a SIGTERM."""
    now = time.monotonic()
    if task.stopping_since is not None:
        if now - task.stopping_since >= grace_s:
            _signal_group(task.proc.pid, signal.SIGKILL)
    elif _cancel_requested(array_dir, index):
        task.stopping_since = now  # cancel() sent SIGTERM
    elif walltime_s is not None and now - task.started >= walltime_s:
        _signal_group(task.proc.pid, signal.SIGTERM)  # as a cluster does at the time limit
        task.stopping_since, task.timed_out = now, True


def _start_task(array_dir: Path, script: str, i: int, n_tasks: int) -> subprocess.Popen[bytes]:
    """Start task ``i`` (``bash script``) in its own session and record its pid file."""
    env = {
        **os.environ,
        LOCAL_ARRAY_ID_VAR: array_dir.name,
        LOCAL_TASK_INDEX_VAR: str(i),
        TASK_ID_VAR: f"{array_dir.name}_{i}",
        TASK_COUNT_VAR: str(n_tasks),
    }
    proc = subprocess.Popen(
        ["bash", script], stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    atomic_write(array_dir / f"{i}.pid", json.dumps(_process_record(proc.pid)).encode())
    return proc


def main(argv: Sequence[str]) -> int:
    """Launcher: fork the supervisor of ``argv[0]`` (an array dir), record it, and exit."""
    if len(argv) != 1:
        print(f"usage: python -m {SUPERVISOR_MODULE} ARRAY_DIR", file=sys.stderr)  # noqa: T201
        return 2
    array_dir = Path(argv[0])
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the supervisor: start only once the launcher has recorded it
        os.close(ready_write)
        go = os.read(ready_read, 1)
        os.close(ready_read)
        if go != b"1":
            return 1
        supervise(array_dir)
        return 0
    os.close(ready_read)
    atomic_write(array_dir / SUPERVISOR_FILE, json.dumps(_process_record(pid)).encode())
    os.write(ready_write, b"1")
    os.close(ready_write)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
