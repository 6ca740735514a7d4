"""The Scheduler interface every backend implements, and the one way to run its commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.validation import EnvValue, environment, positive_int

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from pathlib import Path

EXECUTORS = ("sequential", "process-pool", "loky", "mpi4py")


class JobState(StrEnum):
    """Where an array task stands, as far as the scheduler can tell."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def active(self) -> bool:
        """Whether the task still occupies (or will occupy) a slot in the queue."""
        return self in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True, slots=True)
class TaskIdentity:
    """Who a running array task is: its own id, its array's id and its index in the array."""

    task_id: str
    array_id: str
    task_index: int


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

    Constructors do no I/O: cluster checks run in :meth:`check` when a run starts.

    Parameters
    ----------
    cores
        Cores per array task (a task runs one learner at a time).
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

    cores: int = 1
    executor: str = "sequential"
    python: str = field(default=sys.executable)
    num_threads: int = 1
    env: Mapping[str, EnvValue] = field(default_factory=dict)
    extra_script: str = ""
    template: Path | None = None

    def __post_init__(self) -> None:
        """Validate the common options; subclasses extend this and call super()."""
        positive_int(self.cores, "cores")
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        positive_int(self.num_threads, "num_threads")
        # A copy: a frozen scheduler must not change when the caller's dict does.
        object.__setattr__(self, "env", environment(self.env))

    def check(self) -> None:  # noqa: B027 - optional hook; most backends need no check
        """Check the cluster before anything is submitted (e.g. the partition exists)."""

    def render(self, ctx: ScriptContext) -> str:
        """Render this scheduler's job script for one array."""
        from adaptive_runner.scripts import render_job_script  # noqa: PLC0415 - keep jinja2 out of the worker

        return render_job_script(self, ctx)

    @abstractmethod
    def submit(self, script: Path, *, n_tasks: int, max_running: int) -> str:
        """Submit ``script`` as one array of ``n_tasks`` tasks; return the array's id."""

    @abstractmethod
    def queue(self, array_ids: Collection[str], *, jobs_dir: Path) -> dict[str, JobState]:
        """Return the state of every known task of these arrays, with one scheduler call.

        Keys are task ids in the same form :meth:`task_identity` gives inside the task.
        Tasks the scheduler no longer knows are absent.
        """

    def exit_states(self, array_ids: Collection[str], *, jobs_dir: Path) -> dict[str, JobState]:
        """Final states of these arrays' tasks from the scheduler's records (SLURM: sacct).

        For tasks gone from :meth:`queue`; {} where the scheduler keeps no records.
        """
        del array_ids, jobs_dir
        return {}

    def max_array_size(self) -> int | None:
        """The most tasks one array may have (asks the cluster); None if there is no limit."""
        return None

    @abstractmethod
    def cancel(self, ids: Collection[str], *, jobs_dir: Path) -> None:
        """Cancel these tasks or whole arrays (ids as :meth:`submit`/:meth:`queue` give them)."""

    def array_of(self, task_id: str) -> str:
        """The id of the array a task id belongs to (``"123_4"`` -> ``"123"``)."""
        return task_id.rsplit("_", 1)[0]

    @classmethod
    @abstractmethod
    def task_identity(cls, environ: Mapping[str, str]) -> TaskIdentity:
        """Read the running task's identity from its environment."""


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
    if shutil.which(cmd[0]) is None:
        hint = f": {missing_hint}" if missing_hint else ""
        raise SchedulerCommandError(f"{cmd[0]} not found on PATH{hint}")
    delay = backoff_s
    failure = ""
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(delay)
            delay = min(2 * delay, 30.0)
        try:
            proc = subprocess.run(
                list(cmd),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env=None if env is None else {**os.environ, **env},
            )
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout_s:g} s"
            continue
        if proc.returncode == 0:
            return proc.stdout
        failure = f"exit code {proc.returncode}; stderr: {proc.stderr.strip() or '(empty)'}"
    raise SchedulerCommandError(
        f"{' '.join(cmd)!r} failed after {max(1, retries)} attempt(s): {failure}"
    )
