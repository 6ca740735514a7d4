"""The words the job side and the manager side share: log events, replies, outcomes, formats.

Also the executor names, the stop signals, the log levels and the packer's line in a job's
output. Stdlib only, so the worker and the packer import it. The values are what job logs,
job output, wire replies, run.json and state.sqlite hold: they never change, or old logs and
runs would no longer read.
"""

from __future__ import annotations

import re
import signal
from enum import StrEnum


class Event(StrEnum):
    """The ``event`` of a line in a task's log (logs/<task>.log), as the worker writes it."""

    STARTED = "started"  # a learner was claimed: the lines after it are about that learner
    RESUMED = "resumed"  # its saved data was loaded
    STATUS = "status"  # progress, every log interval
    SAVED = "saved"
    SAVE_FAILED = "save_failed"
    SAVE_FENCED = "save_fenced"  # no heartbeat acknowledged within the lease: not saved
    DATAFRAME_FAILED = "dataframe_failed"  # save_dataframe: not written this save; data saved
    DONE = "done"  # the learner reached its goal
    GOAL_CHANGED = "goal_changed"  # a rerun wrote another goal: checked from the next point on
    STAGE_REACHED = "stage_reached"  # a stage of a staged goal, not the last: go on or hand back
    RELEASED = "released"  # stopped in an orderly way; the learner waits for another task
    HANDED_BACK = "handed_back"  # a stage reached, saved and handed back: the task claims again
    FAILED = "failed"  # the learner raised (or could not be saved, or the manager went away)
    STOPPED = "stopped"  # a stop signal between learners: the task exits
    NO_WORK = "no_work"  # nothing to claim at the start: the task ran no learner
    NO_MORE_WORK = "no_more_work"  # nothing more to claim after a learner
    REPORT_FAILED = "report_failed"  # the learner's end could not be told to the manager
    MANAGER_UNREACHABLE = "manager_unreachable"  # no reply to a claim within the patience
    MANAGER_UNRESOLVABLE = "manager_unresolvable"  # the url's host is no name this node knows
    INITIALIZER_STARTED = "initializer_started"  # one of the run's initializers runs now
    INITIALIZERS_DONE = "initializers_done"  # the task's initializers all ran
    UNKNOWN_TASK = "unknown_task"  # the run never knew the task's array: it ran no learner
    LINES_LOST = "lines_lost"  # this many lines before it could not be written (a full disk)


# The events that say how a task's (latest) learner ended.
OUTCOME_EVENTS = frozenset(
    {
        Event.DONE,
        Event.RELEASED,
        Event.HANDED_BACK,
        Event.FAILED,
        Event.NO_WORK,
        Event.MANAGER_UNREACHABLE,
        Event.MANAGER_UNRESOLVABLE,
        Event.UNKNOWN_TASK,
    }
)


class ReplyCode(StrEnum):
    """The ``code`` of a failed reply of the database manager."""

    NO_WORK = "no_work"  # claim: no learner of the group is waiting with its dependencies done
    NOT_OWNER = "not_owner"  # the task no longer holds the learner: stop without saving
    UNKNOWN_TASK = "unknown_task"  # claim: the task's array is none of the run's (not yet)
    BAD_REQUEST = "bad_request"  # the request broke the protocol
    INTERNAL = "internal"  # the manager failed on it; nothing was recorded


class Outcome(StrEnum):
    """How a task's hold on a learner ended (``tasks.outcome`` and ``events.kind``)."""

    DONE = "done"
    """The learner reached its goal and was saved; the worker claims the next one."""
    RELEASED = "released"
    """An orderly stop (time limit, cancel signal, preemption): saved and handed back, not
    a failure (unless no point was added while one was in evaluation: a stall)."""
    HANDED_BACK = "handed_back"
    """A stage of a staged goal reached while learners of its group waited at an earlier
    one: saved and handed back, not a failure; the worker claims the next one."""
    FAILED = "failed"
    """The worker reported the learner's exception (or an initializer's): one failure."""
    LOST = "lost"
    """The task vanished from the scheduler's queue while it held the learner: one failure."""
    EXPIRED = "expired"
    """No heartbeat within the lease: the learner is taken back (one failure) and the
    worker, should it wake, is fenced and never saves again."""
    KILLED = "killed"
    """``kill_on_error`` matched the task's output: its task is cancelled, one failure."""
    CANCELLED = "cancelled"
    """The user cancelled the learner (or the run) while the task held it."""


# How a worker's release reason names the points it was evaluating when it stopped (their
# values follow): a release without new points is a stall only with a point in evaluation.
POINTS_IN_EVALUATION = "; points in evaluation: "

# Holds that did not end cleanly: the learner's code raised, or its task vanished, went
# silent or was killed on an error line (the status file's R flag, the panel's failed jobs).
NOT_CLEAN = frozenset({Outcome.FAILED, Outcome.LOST, Outcome.EXPIRED, Outcome.KILLED})


class DataFrameFormat(StrEnum):
    """How ``save_dataframe`` writes a learner's DataFrame (run.json's ``dataframe_format``)."""

    PARQUET = "parquet"  # pandas' to_parquet: needs pyarrow
    PICKLE = "pickle"  # pandas' to_pickle


class ExecutorName(StrEnum):
    """How a worker evaluates points: run.json's ``executor`` (see executors.py)."""

    SEQUENTIAL = "sequential"
    """No pool: one point at a time, in the thread that runs the learner."""
    PROCESS_POOL = "process-pool"
    """The stdlib's ProcessPoolExecutor: the function is pickled by reference."""
    LOKY = "loky"
    """loky's reusable executor: the function is cloudpickled (a notebook's works)."""
    MPI4PY = "mpi4py"
    """An MPIPoolExecutor over the job's MPI ranks (rank 0 is the worker)."""


# The executor names in order, for ``in`` with a plain str (an Enum class takes it only from
# Python 3.12) and for messages that list them.
EXECUTORS = tuple(ExecutorName)


# The signals on which a worker saves and releases its learner: a packer passes them on to its
# workers, and a SLURM job asks for one of them (``signal=``) before its time limit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


# The levels of a line in a task's log and in the managers' logs, lowest first: a log set to
# one level writes that level and those after it.
LEVELS = ("debug", "info", "warning", "error", "critical")


# What starts each line a packer (``python -m adaptive_runner.packing``) writes into its
# allocation's output, where the job manager reads it back while the allocation runs.
_PACKER_PREFIX = "adaptive_runner.packing: "


def worker_ended_line(rank: int, code: int) -> str:
    """The line a packer writes when its worker ``rank`` ended with ``code`` (not 0).

    ``code`` as ``Popen.wait`` gives it: negative for a death by that signal.
    """
    how = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit code {code}"
    return f"{_worker_ended(rank)}{how}"


def read_worker_ended(line: str, rank: int) -> str | None:
    """How worker ``rank`` ended if ``line`` is its :func:`worker_ended_line`, else None.

    The line without the packer's prefix, e.g. ``worker 3 ended with signal 9 (SIGKILL)``.
    """
    return line.removeprefix(_PACKER_PREFIX) if line.startswith(_worker_ended(rank)) else None


def _worker_ended(rank: int) -> str:
    return f"{_PACKER_PREFIX}worker {rank} ended with "


_NODE_IDLE = re.compile(
    re.escape(_PACKER_PREFIX) + r"node (\S+) idle: no learner left for its workers"
)


def node_idle_line(node: str) -> str:
    """The line a packer writes when all the workers of its ``node`` found no learner left."""
    return f"{_PACKER_PREFIX}node {node} idle: no learner left for its workers"


def read_node_idle(line: str) -> str | None:
    """The node named by a :func:`node_idle_line`, else None."""
    match = _NODE_IDLE.fullmatch(line.strip())
    return None if match is None else match[1]
