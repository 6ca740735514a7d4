"""The queue view of the status panel: the run's pending and running tasks, and why they wait.

The schedulers are asked through :class:`Looks`, which asks each group's scheduler at most
once per ``interval_s`` (one call per group: the same ``queue_named`` the job manager polls,
which also carries the pending reason where the scheduler gives one, SLURM's ``%r``). A
panel refreshed every second thus costs squeue one call per group every few seconds.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from adaptive_runner.common.task_identity import task_of
from adaptive_runner.errors import SchedulerCommandError
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.status.totals import DataSize, data_size, duration

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

    from adaptive_runner.schedulers.base import QueuedTask, Scheduler

T = TypeVar("T")

QUEUE_INTERVAL_S: Final = 5.0  # a group's scheduler is asked at most this often
DISK_INTERVAL_S: Final = 30.0  # the data files are stat'ed at most this often
QUEUE_ROWS: Final = 20  # the queue view lists this many tasks; the counts cover all


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One pending or running task of the run, as its scheduler reported it."""

    task: str
    group: int
    state: JobState
    reason: str | None  # the scheduler's, for a pending task; None where it gives none


@dataclass(frozen=True, slots=True)
class GroupQueue:
    """One group's queue answer, digested once per look: its active tasks and their counts."""

    rows: tuple[QueueRow, ...]  # running first, then pending, by task id (7_9 before 7_10)
    n_running: int
    n_pending: int
    reasons: Counter[str]  # pending tasks per reason (those without one left out)

    @classmethod
    def of(cls, group: int, listed: Mapping[str, QueuedTask]) -> GroupQueue:
        """The active tasks among ``listed`` (what ``queue_named`` answered for ``group``)."""
        rows = sorted(
            (
                QueueRow(task, group, queued.state, queued.reason)
                for task, queued in listed.items()
                if queued.state.active
            ),
            key=lambda row: (row.state != JobState.RUNNING, _natural(row.task)),
        )
        pending = [row for row in rows if row.state == JobState.PENDING]
        return cls(
            tuple(rows),
            len(rows) - len(pending),
            len(pending),
            Counter(row.reason for row in pending if row.reason),
        )


@dataclass(frozen=True, slots=True)
class QueueView:
    """The run's active tasks, by group; ``age_s``: how old the oldest answer is."""

    groups: tuple[GroupQueue, ...]
    held: Mapping[str, tuple[int, ...]]  # task -> the learners its workers hold now
    age_s: float
    errors: tuple[str, ...] = ()  # a group whose queue could not be read, in words

    @property
    def n_running(self) -> int:
        """Tasks running now."""
        return sum(group.n_running for group in self.groups)

    @property
    def n_pending(self) -> int:
        """Tasks waiting in the queue."""
        return sum(group.n_pending for group in self.groups)

    def reasons(self) -> Counter[str]:
        """How many pending tasks wait for each reason (those without one are left out)."""
        return sum((group.reasons for group in self.groups), Counter())

    def rows(self, limit: int | None = None) -> list[QueueRow]:
        """The first ``limit`` tasks (None: all), each group's running ones first."""
        found: list[QueueRow] = []
        for group in self.groups:
            found += group.rows[: None if limit is None else limit - len(found)]
        return found


def _natural(task: str) -> list[str | int]:
    """A sort key that puts ``7_9`` before ``7_10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", task)]


def held_by_task(holders: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Task id -> the learners it holds, from worker id -> learner (packed: ``task@rank``)."""
    held: dict[str, list[int]] = {}
    for worker, learner in holders.items():
        held.setdefault(task_of(worker), []).append(learner)
    return {task: tuple(sorted(learners)) for task, learners in held.items()}


class Throttle(Generic[T]):
    """The latest answer of a costly look, per key, looked at again only after ``interval_s``.

    Parameters
    ----------
    interval_s
        The least time between two looks for the same key.
    clock
        Monotonic seconds, injectable for tests.

    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[Hashable, tuple[float, T]] = {}

    def get(self, key: Hashable, look: Callable[[], T]) -> tuple[T, float]:
        """The answer for ``key`` (``look()`` if the last is too old) and its age in seconds."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.interval_s:
            seen = (now, look())
            self._seen[key] = seen
        return seen[1], now - seen[0]


class Looks:
    """What a panel's refreshes ask beyond state.sqlite, each no more often than its interval.

    One per panel: each group's queue (one scheduler call per group) and the data files'
    size. A failed queue call is kept as its error for the interval too.

    Parameters
    ----------
    schedulers
        The run's schedulers by group, bound to its run directory (``Run.schedulers()``).
    queue_interval_s, disk_interval_s
        The least time between two calls of one group's scheduler, two looks at the disk.
    clock
        Monotonic seconds, injectable for tests.

    """

    def __init__(
        self,
        schedulers: Sequence[Scheduler],
        *,
        queue_interval_s: float = QUEUE_INTERVAL_S,
        disk_interval_s: float = DISK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schedulers = list(schedulers)
        self._queues: Throttle[GroupQueue | str] = Throttle(queue_interval_s, clock)
        self._waits: Throttle[list[float]] = Throttle(queue_interval_s, clock)
        self._disk: Throttle[DataSize] = Throttle(disk_interval_s, clock)

    def queue(self, arrays: Mapping[int, Sequence[str]], holders: Mapping[str, int]) -> QueueView:
        """The view of the groups' unfinished ``arrays`` (group -> array ids).

        ``holders`` is worker id -> learner (``Database.running_tasks``), read fresh.
        """
        groups: list[GroupQueue] = []
        errors: list[str] = []
        age = 0.0
        for group, scheduler in enumerate(self.schedulers):
            ids = list(arrays.get(group, ()))
            if not ids:
                continue
            answer, group_age = self._queues.get(group, partial(_ask, scheduler, group, ids))
            age = max(age, group_age)
            if isinstance(answer, str):
                errors.append(f"group {group}: {answer}")
            else:
                groups.append(answer)
        return QueueView(tuple(groups), held_by_task(holders), age, tuple(errors))

    def queue_waits(self, waits: Callable[[], list[float]]) -> list[float]:
        """The tasks' queue waits (see totals.py), worked out again with the queues' interval."""
        return self._waits.get("waits", waits)[0]

    def data_size(self, fnames: Callable[[], Iterable[str]]) -> DataSize:
        """The data files' size, stat'ed again only after ``disk_interval_s``."""
        return self._disk.get("data", lambda: data_size(fnames()))[0]


def _ask(scheduler: Scheduler, group: int, array_ids: Sequence[str]) -> GroupQueue | str:
    """One call of the group's scheduler, digested; its error in words if the command failed."""
    try:
        return GroupQueue.of(group, scheduler.queue_named(array_ids))
    except SchedulerCommandError as e:
        return str(e)


def queue_summary(view: QueueView) -> str:
    """``running 3 · pending 5 (Priority 4, Resources 1) · asked 2 s ago``, as text."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in view.reasons().most_common())
    return (
        f"running {view.n_running} · pending {view.n_pending}"
        + (f" ({reasons})" if reasons else "")
        + f" · asked {duration(view.age_s)} ago"
    )


def queue_html(view: QueueView, max_rows: int = QUEUE_ROWS) -> str:
    """A summary line (counts, pending reasons, age of the answer) and the first tasks."""
    e = html.escape
    line = f"<b>queue</b>: {e(queue_summary(view))}"
    for error in view.errors:
        line += f'<br><span style="color:#d62728">cannot read the queue of {e(error)}</span>'
    rows = view.rows(max_rows)
    if not rows:
        return f'<div class="ar-queue-line">{line}</div>'
    cells = "".join(
        "<tr>"
        + "".join(
            f'<td style="padding:1px 8px">{cell}</td>'
            for cell in (
                e(row.task),
                row.state.value,
                e(row.reason or ""),
                ", ".join(map(str, view.held.get(row.task, ()))),
            )
        )
        + "</tr>"
        for row in rows
    )
    head = "".join(
        f'<th style="text-align:left;padding:1px 8px">{c}</th>'
        for c in ("task", "state", "reason", "learner")
    )
    n_rows = view.n_running + view.n_pending
    more = f"<div>… and {n_rows - len(rows)} more tasks</div>" if n_rows > len(rows) else ""
    return (
        f'<div class="ar-queue-line">{line}</div>'
        f'<table class="ar-queue-table" style="border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>{more}"
    )
