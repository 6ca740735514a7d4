"""Test doubles for code built on adaptive_runner: a scheduler that needs no cluster.

``MemoryScheduler`` keeps its arrays in dicts, records every call and can be told to fail a
submission before or after queueing it, or to forget its arrays (and give their ids out
again), so ``JobManager.round()`` (and anything that drives
a scheduler) runs in-process, with the real sqlite state and an injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from adaptive_runner.errors import SchedulerCommandError
from adaptive_runner.schedulers.base import JobState, QueuedTask, Scheduler

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class MemoryScheduler(Scheduler):
    """Arrays in dicts: ``arrays[id][task] = state``; every call is recorded in ``calls``.

    ``names[id]`` is the job name the queue shows for an array's tasks: its tag when it is
    submitted; a test sets another to give the id to a job that is not ours.
    """

    name: ClassVar[str] = "memory"
    template_name: ClassVar[str] = "local.sh.j2"

    arrays: dict[str, dict[str, JobState]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> array id
    names: dict[str, str | None] = field(default_factory=dict)  # array id -> job name
    calls: list[tuple[str, object]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # next submits: "before"/"after" queueing
    array_limit: int | None = None
    workers: int | None = None  # workers per task when packed
    reasons: dict[str, str] = field(default_factory=dict)  # task -> why it is pending

    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        """Queue an array of ``n_tasks`` pending tasks (or fail as ``failures`` says)."""
        del script, max_running
        self.calls.append(("submit", n_tasks))
        failure = self.failures.pop(0) if self.failures else None
        if failure == "before":
            raise SchedulerCommandError("sbatch: error: Batch job submission failed")
        array_id = str(100 + len(self.arrays))
        self.arrays[array_id] = {f"{array_id}_{i}": JobState.PENDING for i in range(n_tasks)}
        self.names[array_id] = tag
        if tag is not None:
            self.tags[tag] = array_id
        if failure == "after":
            raise SchedulerCommandError("sbatch: error: Socket timed out on send/recv operation")
        return array_id

    def find_tagged(self, tags: Collection[str]) -> dict[str, str]:
        """The arrays submitted under ``tags``."""
        self.calls.append(("find_tagged", sorted(tags)))
        return {tag: self.tags[tag] for tag in tags if tag in self.tags}

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        """Each task of ``array_ids`` with its state, job name and pending reason."""
        self.calls.append(("queue", sorted(array_ids)))
        return {
            t: QueuedTask(s, self.names.get(a), self.reasons.get(t))
            for a in array_ids
            for t, s in self.arrays.get(a, {}).items()
        }

    def cancel(self, ids: Collection[str]) -> None:
        """Mark ``ids`` cancelled."""
        self.calls.append(("cancel", sorted(ids)))
        for task in ids:
            self.arrays[self.array_of(task)][task] = JobState.CANCELLED

    def max_array_size(self) -> int | None:
        """``array_limit``."""
        return self.array_limit

    @property
    def packed(self) -> int | None:
        """``workers``: workers per task when packed."""
        return self.workers

    def stuck(self, reason: str) -> str | None:
        """A pending reason no job's end lifts: ``PartitionNodeLimit`` only."""
        return "it asks for too many nodes" if reason == "PartitionNodeLimit" else None

    # -- helpers for the tests --

    def set_all(self, array_id: str, state: JobState) -> None:
        """Give every task of ``array_id`` the state ``state``."""
        for task in self.arrays[array_id]:
            self.arrays[array_id][task] = state

    def forget(self) -> None:
        """Lose every record, as a scheduler that lost its state: ids are given out again."""
        self.arrays.clear()
        self.tags.clear()
        self.names.clear()

    def submitted(self) -> list[object]:
        """The ``n_tasks`` of each submit call, in order."""
        return [n for call, n in self.calls if call == "submit"]
