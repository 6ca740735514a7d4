"""The queue view of the status panel: the run's pending and running tasks, and why they wait.

The schedulers are asked through :class:`Looks`, which asks each group's scheduler at most
once per ``interval_s`` (one call per group: the same ``queue_named`` the job manager polls,
which also carries the pending reason where the scheduler gives one, SLURM's ``%r``). A
panel refreshed every second thus costs squeue one call per group every few seconds.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from adaptive_runner.errors import SchedulerCommandError
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.task_identity import task_of
from adaptive_runner.widgets.totals import DataSize, data_size, duration

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

    from adaptive_runner.schedulers.base import QueuedTask, Scheduler

T = TypeVar("T")

QUEUE_INTERVAL_S: Final = 5.0  # a group's scheduler is asked at most this often
DISK_INTERVAL_S: Final = 30.0  # the data files are stat'ed at most this often
QUEUE_ROWS: Final = 20  # the queue view lists this many tasks; the counts cover all


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One pending or running task of the run."""

    task: str
    group: int
    state: JobState
    reason: str | None  # the scheduler's, for a pending task; None where it gives none
    learners: tuple[int, ...]  # what its workers hold (a packed allocation: several)


@dataclass(frozen=True, slots=True)
class QueueView:
    """The run's active tasks, running ones first; ``age_s``: how old the oldest answer is."""

    rows: tuple[QueueRow, ...]
    age_s: float
    errors: tuple[str, ...] = ()  # a group whose queue could not be read, in words

    @property
    def n_running(self) -> int:
        """Tasks running now."""
        return sum(row.state == JobState.RUNNING for row in self.rows)

    @property
    def n_pending(self) -> int:
        """Tasks waiting in the queue."""
        return sum(row.state == JobState.PENDING for row in self.rows)

    def reasons(self) -> Counter[str]:
        """How many pending tasks wait for each reason (those without one are left out)."""
        return Counter(
            row.reason for row in self.rows if row.state == JobState.PENDING and row.reason
        )


def queue_rows(
    group: int, listed: Mapping[str, QueuedTask], holders: Mapping[str, int]
) -> list[QueueRow]:
    """The active tasks among ``listed`` (one group's queue), with the learners they hold.

    ``holders`` is worker id -> learner (``Database.running_tasks``).
    """
    held: dict[str, list[int]] = {}
    for worker, learner in holders.items():
        held.setdefault(task_of(worker), []).append(learner)
    return [
        QueueRow(task, group, queued.state, queued.reason, tuple(sorted(held.get(task, ()))))
        for task, queued in listed.items()
        if queued.state.active
    ]


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
        self._queues: Throttle[dict[str, QueuedTask] | str] = Throttle(queue_interval_s, clock)
        self._disk: Throttle[DataSize] = Throttle(disk_interval_s, clock)

    def queue(self, arrays: Mapping[int, Sequence[str]], holders: Mapping[str, int]) -> QueueView:
        """The view of the groups' unfinished ``arrays`` (group -> array ids)."""
        rows: list[QueueRow] = []
        errors: list[str] = []
        age = 0.0
        for group, scheduler in enumerate(self.schedulers):
            ids = list(arrays.get(group, ()))
            if not ids:
                continue
            listed, group_age = self._queues.get(group, partial(_ask, scheduler, ids))
            age = max(age, group_age)
            if isinstance(listed, str):
                errors.append(f"group {group}: {listed}")
            else:
                rows += queue_rows(group, listed, holders)
        rows.sort(key=lambda row: (row.state != JobState.RUNNING, row.group, row.task))
        return QueueView(tuple(rows), age, tuple(errors))

    def data_size(self, fnames: Callable[[], Iterable[str]]) -> DataSize:
        """The data files' size, stat'ed again only after ``disk_interval_s``."""
        return self._disk.get("data", lambda: data_size(fnames()))[0]


def _ask(scheduler: Scheduler, array_ids: Sequence[str]) -> dict[str, QueuedTask] | str:
    """One call of the scheduler's queue; its error in words if the command failed."""
    try:
        return scheduler.queue_named(array_ids)
    except SchedulerCommandError as e:
        return str(e)


def queue_html(view: QueueView, max_rows: int = QUEUE_ROWS) -> str:
    """A summary line (counts, pending reasons, age of the answer) and the first tasks."""
    e = html.escape
    reasons = ", ".join(f"{e(reason)} {n}" for reason, n in view.reasons().most_common())
    line = (
        f"<b>queue</b>: running {view.n_running} · pending {view.n_pending}"
        + (f" ({reasons})" if reasons else "")
        + f" · asked {duration(view.age_s)} ago"
    )
    for error in view.errors:
        line += f'<br><span style="color:#d62728">cannot read the queue of {e(error)}</span>'
    if not view.rows:
        return f'<div class="ar-queue-line">{line}</div>'
    cells = "".join(
        "<tr>"
        + "".join(
            f'<td style="padding:1px 8px">{cell}</td>'
            for cell in (
                e(row.task),
                row.state.value,
                e(row.reason or ""),
                ", ".join(map(str, row.learners)),
            )
        )
        + "</tr>"
        for row in view.rows[:max_rows]
    )
    head = "".join(
        f'<th style="text-align:left;padding:1px 8px">{c}</th>'
        for c in ("task", "state", "reason", "learner")
    )
    more = (
        f"<div>… and {len(view.rows) - max_rows} more tasks</div>"
        if len(view.rows) > max_rows
        else ""
    )
    return (
        f'<div class="ar-queue-line">{line}</div>'
        f'<table class="ar-queue-table" style="border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>{more}"
    )
