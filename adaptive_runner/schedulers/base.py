"""The Scheduler interface every backend implements, and the one way to run its commands."""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from adaptive_runner.common.task_identity import number_text
from adaptive_runner.common.validation import EnvValue, environment, plain_text, positive_int
from adaptive_runner.common.vocabulary import EXECUTORS
from adaptive_runner.errors import ConfigError, SchedulerCommandError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

_HOURS_MINUTES_SECONDS = re.compile(r"(\d+):([0-5]\d):([0-5]\d)")  # hours may exceed 24


class JobState(StrEnum):
    """Where an array task stands, as far as the scheduler can tell."""

    PENDING = "pending"
    """Queued, not started: held, waiting for resources or for the array's throttle."""
    RUNNING = "running"
    """Started on a node (for the job manager: its worker may claim at any moment)."""
    COMPLETED = "completed"
    """Ended with exit code 0: its worker found no more work or was stopped in order."""
    FAILED = "failed"
    """Ended otherwise: a non-zero exit, a signal, out of memory, its node failed, time limit."""
    CANCELLED = "cancelled"
    """Ended by a cancel (ours or the user's ``scancel``/``qdel``) before or while it ran."""
    UNKNOWN = "unknown"
    """The scheduler printed a state we do not know; it is taken as not active."""

    @property
    def active(self) -> bool:
        """Whether the task still occupies (or will occupy) a slot in the queue."""
        return self in (JobState.PENDING, JobState.RUNNING)


# Scheduler words that say why a task ended better than its exit code or signal (SLURM reports
# OUT_OF_MEMORY as signal 125), with a few more words for people.
_EXPLAINED = {
    "OUT_OF_MEMORY": "over its memory limit",
    "TIMEOUT": "time limit reached",
    "DEADLINE": "deadline reached",
    "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to boot",
    "PREEMPTED": "preempted by another job",
}


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """How an array task ended, from the scheduler's records (SLURM's sacct, PBS's qstat).

    Parameters
    ----------
    state
        The ending in this package's terms.
    exit_code
        The task's exit code; None if a signal killed it or no code is known.
    signal
        The signal that killed it, if one did.
    scheduler_state
        The scheduler's own word for it (``"OUT_OF_MEMORY"``, ``"CANCELLED by 0"``), kept for
        people and for endings ``state`` does not tell apart.

    """

    state: JobState
    exit_code: int | None
    signal: int | None
    scheduler_state: str

    @classmethod
    def from_exit(cls, returncode: int | None, *, cancelled: bool, word: str | None = None) -> Self:
        """How a task of a file scheduler ended, from its recorded return code (-n: signal n).

        ``word`` is the scheduler's own word when it says more than the state (``TIMEOUT``).
        """
        signal_number = -returncode if returncode is not None and returncode < 0 else None
        if cancelled:
            state = JobState.CANCELLED
        else:
            state = JobState.COMPLETED if returncode == 0 else JobState.FAILED
        return cls(
            state=state,
            exit_code=None if signal_number else returncode,
            signal=signal_number,
            scheduler_state=word or state.name,
        )

    def describe(self) -> str:
        """A short reason for people, e.g. ``"FAILED, exit code 127"`` or ``"OUT_OF_MEMORY"``."""
        word = self.scheduler_state.split(" ", 1)[0]
        if word in _EXPLAINED:
            return f"{self.scheduler_state} ({_EXPLAINED[word]})"
        if word == "CANCELLED":  # "CANCELLED by 1000" says who; its signal is only how
            return self.scheduler_state
        if self.signal is not None:
            return f"killed by signal {self.signal} ({_signal_name(self.signal)})"
        if self.exit_code:
            return f"{self.state.name}, exit code {self.exit_code}"
        return self.state.name


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """An array task as the scheduler's queue shows it: its state, its job's name, and why.

    The name is checked against the tag its array was submitted under: a scheduler that lost
    its state may give a recorded id to another job, which is then not ours. ``reason`` is
    the scheduler's word for why the task waits (SLURM's ``%r``: ``Priority``,
    ``Resources``), read in the same call; None where the scheduler gives none.
    """

    state: JobState
    name: str | None  # None where the scheduler keeps no name (Local arrays without a tag)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ScriptContext:
    """Everything a job-script template needs besides the scheduler's own options."""

    job_name: str
    run_dir: Path
    log_dir: Path
    n_tasks: int
    max_running: int
    worker_args: Sequence[str]  # argv after the python executable: ["-m", "mod", RUN_DIR]


@dataclass(frozen=True, kw_only=True)
class Scheduler(ABC):
    """A batch system that runs job arrays; subclasses differ mostly in class data.

    Constructors do no I/O: cluster checks run in :meth:`check` when a run starts, and a
    scheduler that keeps its records in the run directory learns where in :meth:`bind`.
    The options (the ``init`` fields) are what run.json stores to make it again on resume.

    Parameters
    ----------
    cores
        Cores per array task (a task runs one learner at a time).
    walltime
        Time limit per task: a ``timedelta`` or the scheduler's own string (``"HH:MM:SS"``;
        SLURM also takes its other forms). Stored as given, a timedelta as ``"H:MM:SS"``.
        A task past it gets SIGTERM, saves, releases its learner and is resubmitted.
        None: the queue's default (no limit on Local).
    executor
        How a task evaluates points: ``sequential``, ``process-pool``, ``loky`` or ``mpi4py``.
    python
        The Python interpreter on the compute nodes.
    num_threads
        Exported as OMP/MKL/OPENBLAS_NUM_THREADS in the job script.
    env
        Extra environment variables exported in the job script: names of letters, digits
        and ``_``; values str, int or float (exported as ``str(value)``). Checked here, so a
        bad name fails at construction, not on the compute node.
    extra_script
        Shell lines run before the worker starts (``module load ...``).
    template
        Path to a user Jinja2 template that replaces the shipped one.

    """

    name: ClassVar[str]
    template_name: ClassVar[str]
    bind_host: ClassVar[str] = "0.0.0.0"  # noqa: S104 - jobs connect from compute nodes; CURVE guards it
    poll_interval_s: ClassVar[float] = 10.0  # how often the job manager asks for the queue
    # A submit command that has not answered by then counts as failed (it may have queued
    # the array: the job manager asks for its tag before submitting again).
    submit_timeout_s: ClassVar[float] = 60.0

    cores: int = 1
    walltime: timedelta | str | None = None
    executor: str = "sequential"
    python: str = field(default=sys.executable)
    num_threads: int = 1
    env: Mapping[str, EnvValue] = field(default_factory=dict)
    extra_script: str = ""
    template: Path | None = None

    def __post_init__(self) -> None:
        """Validate the common options; subclasses extend this and call super()."""
        positive_int(self.cores, "cores")
        if self.walltime is not None:
            object.__setattr__(self, "walltime", self._walltime_text(self.walltime))
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        positive_int(self.num_threads, "num_threads")
        plain_text(self.python, "python")  # a path in the job script
        # A copy: a frozen scheduler must not change when the caller's dict does.
        object.__setattr__(self, "env", environment(self.env))

    def _walltime_text(self, value: object) -> str:
        """``walltime`` checked, as the string run.json stores."""
        if isinstance(value, timedelta):
            seconds = math.ceil(value.total_seconds())
            if seconds <= 0:
                raise ConfigError(f"walltime={value!r} is not positive; give at least a second")
            return format_hours(seconds)
        if not isinstance(value, str):
            raise ConfigError(
                f"walltime={value!r} is {type(value).__name__}; give a timedelta or a string "
                "like '2:00:00' (a bare number could mean minutes or seconds)"
            )
        self.parse_walltime(value)
        return value

    def parse_walltime(self, text: str) -> int:
        """Seconds in a ``walltime`` string: ``"HH:MM:SS"``, hours may exceed 24."""
        match = _HOURS_MINUTES_SECONDS.fullmatch(text.strip())
        seconds = 0
        if match is not None:
            hours, minutes, secs = (int(part) for part in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        if seconds <= 0:
            raise ConfigError(
                f"walltime={text!r} is not a positive time limit: give 'HH:MM:SS' (e.g. "
                "'48:00:00') or a timedelta"
            )
        return seconds

    def stuck(self, reason: str) -> str | None:
        """Why a task pending for ``reason`` (the queue's word) may never start; None: it may.

        Such a task waits for a limit that does not change while it waits: the job asks for
        more than its queue allows, or under an account it may not use.
        """
        del reason
        return None

    @property
    def packed(self) -> int | None:
        """Workers per array task in a packed allocation (each its own id); None: one task, one."""
        return None

    def release_node(self, task: str, node: str) -> bool:
        """Hand ``node`` of the running allocation ``task`` back before the allocation ends.

        Called when the packer of that node said its workers found no learner left. True if
        the scheduler took it; False where it cannot (this backend, the node that runs the
        job script, the last node). Raises SchedulerCommandError when asking failed.
        """
        del task, node
        return False

    def place_pending(self, tasks: Collection[str]) -> None:
        """Start tasks that wait for a slot where one is free; the job manager calls it each poll.

        ``tasks`` are the pending tasks of the poll just made. A batch system places its own
        tasks when they start (nothing to do here); the SSH scheduler places a task on a host
        when it is submitted, and moves it on when it waits there (SSH.place_pending).
        """
        del tasks

    @property
    def walltime_s(self) -> int | None:
        """``walltime`` in seconds, or None without a limit."""
        return None if self.walltime is None else self.parse_walltime(str(self.walltime))

    def bind(self, jobs_dir: Path) -> Self:
        """The scheduler as one run uses it, keeping its records under ``jobs_dir``.

        The job manager and :class:`adaptive_runner.Run` bind the schedulers run.json names
        to the run's ``jobs/`` directory before asking them anything. Cluster schedulers keep
        their records on the cluster and return themselves; Local returns a bound copy (an
        option object may serve several runs).
        """
        del jobs_dir
        return self

    def check(self) -> None:  # noqa: B027 - optional hook; most backends need no check
        """Check the cluster before anything is submitted (e.g. the partition exists)."""

    def check_shared(self, paths: Mapping[str, Path]) -> None:  # noqa: B027 - optional hook
        """Check, before anything is written, that the tasks will see ``paths`` as this machine.

        ``paths`` names each path for the error (``run_dir``, ``fnames[3]``). A batch system's
        nodes are taken to mount them (nothing to do); the SSH scheduler proves it per host.
        """

    def render(self, ctx: ScriptContext) -> str:
        """Render this scheduler's job script for one array."""
        from adaptive_runner.schedulers.scripts import render_job_script  # noqa: PLC0415 - keep jinja2 out of the worker

        return render_job_script(self, ctx)

    @abstractmethod
    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        """Submit ``script`` as one array of ``n_tasks`` tasks under ``tag``; return its id.

        Submitting is not idempotent, so it is tried once: a submit command may queue the
        array and still fail (a time-out on the way back). The caller then asks
        :meth:`find_tagged` before submitting again. ``tag`` is unique per submission and
        becomes the job name (letters, digits, ``_.+-``); None keeps the script's own.
        """

    @abstractmethod
    def find_tagged(self, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id for the arrays submitted under ``tags`` that the scheduler knows.

        One scheduler call; asked only after a submission failed, to adopt an array that was
        queued all the same instead of submitting it twice.
        """

    @abstractmethod
    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        """Return the state and job name of every known task of these arrays, in one call.

        Keys are task ids in the form ``task_identity.py`` reads inside the task (a job
        that now holds a recorded array id without being an array is keyed by its own id).
        Tasks the scheduler no longer knows are absent.
        """

    def queue_states(self, array_ids: Collection[str]) -> dict[str, JobState]:
        """The state of every known task of these arrays (:meth:`queue_named` without names)."""
        return {task_id: task.state for task_id, task in self.queue_named(array_ids).items()}

    def exit_states(self, array_ids: Collection[str]) -> dict[str, TaskEnd]:
        """How these arrays' tasks ended, from the scheduler's records (SLURM: sacct).

        For tasks gone from :meth:`queue_named`; keys as there. Tasks without a record are
        absent; {} where the scheduler keeps none.
        """
        del array_ids
        return {}

    def max_array_size(self) -> int | None:
        """The most tasks one array may have (asks the cluster); None if there is no limit."""
        return None

    @abstractmethod
    def cancel(self, ids: Collection[str]) -> None:
        """Cancel these tasks or whole arrays (ids as :meth:`submit`, :meth:`queue_named`)."""

    def array_of(self, task_id: str) -> str:
        """The id of the array a task id belongs to (``"123_4"`` -> ``"123"``)."""
        return task_id.rsplit("_", 1)[0]

    def task_index(self, task_id: str) -> int | None:
        """The index of a task in its array (``"123_4"`` -> 4); None if it names no task.

        Only ids as this scheduler forms them (``"123_04"`` is none), so a task has one id.
        """
        _, separator, index = task_id.rpartition("_")
        return number_text(index) if separator else None


def format_hours(seconds: int) -> str:
    """A duration as ``"H:MM:SS"`` (hours may exceed 24), the form every backend reads."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True, kw_only=True)
class FileScheduler(Scheduler):
    """A scheduler that keeps its records in files under the run's ``jobs/`` (Local, SSH)."""

    # Set by bind(), never an option (not in run.json).
    jobs_dir: Path | None = field(default=None, init=False, repr=False, compare=False)

    def bind(self, jobs_dir: Path) -> Self:
        """A copy of this scheduler that keeps its arrays in ``jobs_dir`` (the run's jobs/)."""
        bound = copy.copy(self)
        object.__setattr__(bound, "jobs_dir", Path(jobs_dir).absolute())
        return bound

    def _jobs(self) -> Path:
        """The bound jobs directory; a clear error for a scheduler used before bind()."""
        if self.jobs_dir is None:
            name = type(self).__name__
            raise ConfigError(
                f"this {name} scheduler is not bound to a run: use {name}(...).bind(jobs_dir), "
                "as RunManager does with the run's jobs/ directory"
            )
        return self.jobs_dir


def is_array_id(name: str, prefix: str) -> bool:
    """Whether ``name`` is an array id of a file scheduler: ``prefix`` and a number (``L3``)."""
    return re.fullmatch(rf"{prefix}[1-9][0-9]*", name) is not None


def check_array_id(array_id: str, prefix: str, scheduler: str) -> str:
    """``array_id`` if it is one of ``prefix``'s arrays; a clear error for a made-up one."""
    if not is_array_id(array_id, prefix):
        raise ConfigError(f"{array_id!r} is not a {scheduler} array id ({prefix}1, {prefix}2, ...)")
    return array_id


def new_array_dir(jobs_dir: Path, prefix: str) -> Path:
    """Create and return ``jobs_dir/<prefix><n>`` with the next free n; mkdir makes it race-free."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[len(prefix) :]) for p in jobs_dir.iterdir() if is_array_id(p.name, prefix)]
    number = max(taken, default=0) + 1
    while True:
        path = jobs_dir / f"{prefix}{number}"
        try:
            path.mkdir()
        except FileExistsError:
            number += 1
        else:
            return path


def run_command(
    cmd: Sequence[str],
    *,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 1.0,
    missing_hint: str = "",
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a scheduler command and return its stdout; retry with backoff, then raise.

    Every call to sbatch, squeue, qsub, ... goes through here, so failures are reported the
    same way: the command, its exit code and its stderr.

    Parameters
    ----------
    cmd
        The command and its arguments; never passed through a shell.
    timeout_s
        Seconds one attempt may take.
    retries
        Attempts in all (at least one).
    backoff_s
        Sleep before the second attempt; doubled after each failure, capped at 30 s.
    missing_hint
        Added to the error when the executable is not on PATH.
    env
        Variables set for the command on top of this process's environment.

    """
    command = tuple(cmd)
    if shutil.which(command[0]) is None:
        hint = f": {missing_hint}" if missing_hint else ""
        raise SchedulerCommandError(f"{command[0]} not found on PATH{hint}", command=command)
    attempts = max(1, retries)
    delay = backoff_s
    for attempt in range(attempts):
        if attempt:
            time.sleep(delay)
            delay = min(2 * delay, 30.0)
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env=None if env is None else {**os.environ, **env},
            )
        except subprocess.TimeoutExpired as e:
            returncode, stdout, stderr = None, _text(e.stdout), _text(e.stderr)
            what = f"timed out after {timeout_s:g} s"
        else:
            if proc.returncode == 0:
                return proc.stdout
            returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
            what = f"exit code {proc.returncode}"
    raise SchedulerCommandError(
        f"{' '.join(command)!r} failed after {attempts} attempt(s): {what}; "
        f"stderr: {stderr.strip() or '(empty)'}",
        command=command,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
    )


def _text(output: str | bytes | None) -> str:
    """What a timed-out command printed (bytes even with ``text=True``, or None)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
