"""The queue view of the status panel: the run's pending and running tasks, and why they wait.

The schedulers are asked through :class:`Looks`, which asks each group's scheduler at most
once per ``interval_s`` (one call per group: the same ``queue_named`` the job manager polls,
which also carries the pending reason where the scheduler gives one, SLURM's ``%r``). A
panel refreshed every second thus costs squeue one call per group every few seconds. The
view shows one line per state and reason with its tasks under it, not one row per task.
"""

from __future__ import annotations

import dataclasses
import html
import re
import time
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
DISK_INTERVAL_S: Final = 30.0  # the data files are stat'ed at least this often
DISK_SHARE: Final = 0.05  # of the refresh thread's time, at most, spent stat'ing data files
QUEUE_TASKS: Final = 200  # listed under one state and reason; the counts cover all


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
        n_pending = sum(row.state == JobState.PENDING for row in rows)
        return cls(tuple(rows), len(rows) - n_pending, n_pending)


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """The active tasks in one state for one reason (None: the scheduler gives none)."""

    state: JobState
    reason: str | None
    tasks: tuple[str, ...]  # by group, then by task id


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

    def rows(self) -> list[QueueRow]:
        """Every active task, group by group, each group's running ones first."""
        return [row for group in self.groups for row in group.rows]

    def by_reason(self) -> list[TaskGroup]:
        """The tasks by state and reason: running first, then the largest groups.

        One entry per reason instead of one row per task, which would repeat a long pending
        reason (``ReqNodeNotAvail, UnavailableNodes:n[001-120]``) thousands of times.
        """
        grouped: dict[tuple[JobState, str | None], list[str]] = {}
        for row in self.rows():
            grouped.setdefault((row.state, row.reason), []).append(row.task)
        return sorted(
            (TaskGroup(state, reason, tuple(tasks)) for (state, reason), tasks in grouped.items()),
            key=lambda g: (g.state != JobState.RUNNING, -len(g.tasks), g.reason or ""),
        )


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
        The least time between two looks for the same key; with ``share``, the most.
    clock
        Monotonic seconds, injectable for tests.
    share
        If given, look again as soon as the last look took at most this share of the time
        since it (a look of 2 ms at share 0.05: after 40 ms), and no later than after
        ``interval_s``: a cheap look is always fresh, a costly one stays within its share.

    """

    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        share: float | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.share = share
        self._clock = clock
        self._seen: dict[Hashable, tuple[float, float, T]] = {}  # when, wait after it, answer

    def get(self, key: Hashable, look: Callable[[], T]) -> tuple[T, float]:
        """The answer for ``key`` (``look()`` if the last is too old) and its age in seconds."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= seen[1]:
            answer = look()
            wait = self.interval_s
            if self.share is not None:
                wait = min(wait, (self._clock() - now) / self.share)
            seen = (now, wait, answer)
            self._seen[key] = seen
        return seen[2], now - seen[0]


class Looks:
    """What a panel's refreshes ask beyond state.sqlite, each no more often than its interval.

    One per panel: each group's queue (one scheduler call per group) and the data files'
    size. A failed queue call is kept as its error for the interval too. The data files are
    stat'ed again as soon as the last look took at most ``disk_share`` of the time since
    (a few thousand files: at every refresh, so the size agrees with a plot drawn from one
    of them), at the latest after ``disk_interval_s``; the size says how old it is.

    Parameters
    ----------
    schedulers
        The run's schedulers by group, bound to its run directory (``Run.schedulers()``).
    queue_interval_s
        The least time between two calls of one group's scheduler.
    disk_interval_s
        The most time between two looks at the data files.
    disk_share
        The most share of the time the looks at the data files may take (None: look every
        ``disk_interval_s``, however cheap).
    clock
        Monotonic seconds, injectable for tests.

    """

    def __init__(
        self,
        schedulers: Sequence[Scheduler],
        *,
        queue_interval_s: float = QUEUE_INTERVAL_S,
        disk_interval_s: float = DISK_INTERVAL_S,
        disk_share: float | None = DISK_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schedulers = list(schedulers)
        self._queues: Throttle[GroupQueue | str] = Throttle(queue_interval_s, clock)
        self._waits: Throttle[list[float]] = Throttle(queue_interval_s, clock)
        self._disk: Throttle[DataSize] = Throttle(disk_interval_s, clock, share=disk_share)

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
        """The data files' size, stat'ed again when due (see above), with its age."""
        size, age = self._disk.get("data", lambda: data_size(fnames()))
        return dataclasses.replace(size, age_s=age)


def _ask(scheduler: Scheduler, group: int, array_ids: Sequence[str]) -> GroupQueue | str:
    """One call of the group's scheduler, digested; its error in words if the command failed."""
    try:
        return GroupQueue.of(group, scheduler.queue_named(array_ids))
    except SchedulerCommandError as e:
        return str(e)


def queue_summary(view: QueueView, *, reasons: bool = True) -> str:
    """``running 3 · pending 5 (Priority 4, Resources 1) · asked 2 s ago``, as text.

    Without ``reasons`` no pending reasons: the panel's lines below name each once.
    """
    named = ", ".join(
        f"{group.reason} {len(group.tasks)}"
        for group in view.by_reason()
        if reasons and group.state == JobState.PENDING and group.reason
    )
    return (
        f"running {view.n_running} · pending {view.n_pending}"
        + (f" ({named})" if named else "")
        + f" · asked {duration(view.age_s)} ago"
    )


def queue_html(view: QueueView, max_tasks: int = QUEUE_TASKS) -> str:
    """The summary line (:func:`queue_summary`), then one expandable line per state and reason.

    Each line (``<details>``) says the state, the reason and how many tasks; opened, it
    lists the first ``max_tasks`` of them, running ones with the learners they hold.
    """
    e = html.escape
    line = f"<b>queue</b>: {e(queue_summary(view, reasons=False))}"
    for error in view.errors:
        line += f'<br><span style="color:#d62728">cannot read the queue of {e(error)}</span>'
    groups = "".join(_group_html(group, view.held, max_tasks) for group in view.by_reason())
    return f'<div class="ar-queue-line">{line}</div>{groups}'


def _group_html(group: TaskGroup, held: Mapping[str, tuple[int, ...]], max_tasks: int) -> str:
    e = html.escape
    n = len(group.tasks)
    reason = f": {e(group.reason)}" if group.reason else ""
    summary = f"<b>{group.state.value}</b>{reason} · {n} task{'s' if n != 1 else ''}"
    items = []
    for task in group.tasks[:max_tasks]:
        learners = held.get(task, ())
        holds = f" (learner{'s' if len(learners) > 1 else ''} {', '.join(map(str, learners))})"
        items.append(f"<code>{e(task)}</code>{holds if learners else ''}")
    if n > max_tasks:
        items.append(f"… and {n - max_tasks} more")
    return (
        f'<details class="ar-queue-group" style="font-size:12px;margin-left:1em">'
        f"<summary>{summary}</summary>"
        f'<div class="ar-queue-tasks" style="margin-left:1.5em">{" · ".join(items)}</div>'
        "</details>"
    )
