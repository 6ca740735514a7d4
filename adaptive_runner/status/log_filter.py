"""Which lines of the task logs to show: those of some learners, or of the holds that failed.

A task runs its learners one after another and writes all their lines into its one log; each
``started`` event names the learner of the lines after it (``started_learner``, as
kill_on_error reads it). :class:`LogFilter` is a :class:`LineReader` that hands out only the
lines of the chosen holds (one task running one learner), so ``adaptive-runner logs
--learner 3 --failed`` formats and merges them as it does every line. How a hold ended comes
from state.sqlite (``Run.tasks()``): only the managers know that a job was lost, its lease
expired or it was killed on an error line.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from adaptive_runner.common.vocabulary import NOT_CLEAN
from adaptive_runner.status.log_parser import LOG_SUFFIX, LineReader, NewLines, started_learner

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator

    from adaptive_runner.state.database import TaskRow

MAX_KEPT_LINES: Final = 10_000  # of one hold not ended yet, while following (the latest kept)


@dataclass(slots=True)
class _Kept:
    """The lines of a hold not ended yet, kept until it is known whether it failed."""

    learner: int
    lines: deque[bytes] = field(default_factory=lambda: deque(maxlen=MAX_KEPT_LINES))
    dropped: int = 0

    def add(self, line: bytes) -> None:
        if len(self.lines) == self.lines.maxlen:
            self.dropped += 1  # the earliest goes
        self.lines.append(line)

    def release(self) -> Iterator[bytes]:
        if self.dropped:
            yield (
                f"(adaptive-runner logs: {self.dropped} earlier lines of learner {self.learner} "
                "were not kept while its job ran)"
            ).encode()
        yield from self.lines


@dataclass(slots=True)
class _File:
    """Where the reading of one task's log stands: whose lines come now, which are kept."""

    task: str
    learner: int | None = None  # of the lines read last; None before the first started
    kept: list[_Kept] = field(default_factory=list)


class LogFilter(LineReader):
    """A :class:`LineReader` that hands out only the lines of the chosen holds.

    Call :meth:`select` with the run's holds before the first read, and again before each
    later one when following: which tasks ran which learners, and how each hold ended, is
    in state.sqlite, not in the logs. Without a choice (no ``learners``, no ``failed``) it
    reads like a plain LineReader.

    Parameters
    ----------
    learners
        Only the lines a task wrote while it ran one of these learners; None: any learner.
    failed
        Only the holds that did not end cleanly (``NOT_CLEAN``: failed, lost, expired,
        killed).
    follow
        With ``failed``: the lines of a hold that has not ended yet are kept (its latest
        ``MAX_KEPT_LINES``) and handed out once :meth:`select` says it failed; without
        ``follow`` they are skipped.

    """

    def __init__(
        self, learners: Collection[int] | None = None, *, failed: bool = False, follow: bool = False
    ) -> None:
        super().__init__()
        self.learners = None if learners is None else frozenset(learners)
        self.failed = failed
        self.follow = follow
        self._outcomes: dict[tuple[str, int], str | None] = {}  # (task, learner) -> outcome
        self._tasks: set[str] = set()
        self._files: dict[str, _File] = {}

    @property
    def choosing(self) -> bool:
        """Whether some lines are left out (``learners`` or ``failed`` given)."""
        return self.learners is not None or self.failed

    @property
    def tasks(self) -> set[str]:
        """The tasks (packed workers by their own ids) whose logs hold chosen lines."""
        return set(self._tasks)

    def select(self, holds: Iterable[TaskRow]) -> None:
        """Take the run's holds (``Run.tasks()``) as they stand now."""
        self._outcomes = {(hold.task, hold.learner): hold.outcome for hold in holds}
        self._tasks = {
            task for task, learner in self._outcomes if self._shown(task, learner) is not False
        }
        for file in self._files.values():  # holds that ended cleanly: their lines go
            file.kept = [k for k in file.kept if self._shown(file.task, k.learner) is not False]

    def read(
        self, path: str | os.PathLike[str], stat: os.stat_result | None = None
    ) -> NewLines | None:
        """The chosen lines of ``path`` added since the last call (see :class:`LineReader`).

        The log of a task that ran none of the chosen holds (as of the last :meth:`select`)
        is not opened: a task that claims a chosen learner later is read from its start.
        """
        if not self.choosing:
            return super().read(path, stat)
        key = os.fspath(path)
        task = os.path.basename(key).removesuffix(LOG_SUFFIX)  # noqa: PTH119 - str path, as LineReader's
        if task not in self._tasks:
            return None
        new = super().read(key, stat)
        if new is None:
            return None
        file = self._files.get(key)
        if file is None or new.from_start:
            file = self._files[key] = _File(task)
        return NewLines(new.from_start, self._chosen(file, new.lines))

    def _chosen(self, file: _File, lines: Iterator[bytes]) -> Iterator[bytes]:
        for kept in list(file.kept):  # holds whose end is known since the last read
            shown = self._shown(file.task, kept.learner)
            if shown is not None:
                file.kept.remove(kept)
                if shown:
                    yield from kept.release()
        for line in lines:
            started = started_learner(line)
            if started is not None:
                file.learner = started
            shown = self._shown(file.task, file.learner)
            if shown:
                yield line
            elif shown is None and file.learner is not None:
                if started is not None or not file.kept or file.kept[-1].learner != file.learner:
                    file.kept.append(_Kept(file.learner))
                file.kept[-1].add(line)

    def _shown(self, task: str, learner: int | None) -> bool | None:
        """Whether the lines ``task`` wrote while it ran ``learner`` are chosen.

        None: not known until the hold ends (with ``failed`` and ``follow``).
        """
        if learner is None or (self.learners is not None and learner not in self.learners):
            return False
        if not self.failed:
            return True
        # A hold missing from the last select is a claim made since: not ended either.
        outcome = self._outcomes.get((task, learner))
        if outcome in NOT_CLEAN:
            return True
        if outcome is None:
            return None if self.follow else False
        return False
