"""kill_on_error: watch the output of active jobs for fatal error messages.

Some failures never reach the worker's Python code: the kernel's OOM killer, ``srun``
failing to start an MPI step, a library aborting the process. The job's stdout and stderr,
which the job script appends to the task's log (``logs/<task>.log``, next to the worker's
JSON events), show them. Once per round the job manager hands the active tasks to
:meth:`ErrorWatch.scan`, which reads only the lines added since the previous round and returns
the tasks whose output contains one of the patterns; the worker's own events are not output
(its ``failed`` event quotes a traceback that may well contain "MemoryError"). The job manager
records the reason on the learner (a failure) and cancels those jobs.

A task runs its learners one after another, so a line counts against the learner of the
latest ``started`` event before it, and only while the task still holds that learner: an
error printed during a learner that went on to finish must not kill the next one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from adaptive_runner.errors import ConfigError
from adaptive_runner.status.log_parser import (
    LOG_SUFFIX,
    MAX_LINE_CHARS,
    LineReader,
    split_event,
    started_learner,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from pathlib import Path

# Messages after which a job is of no more use. Not "slurmstepd: error:" on its own: SLURM
# also writes it when a job reaches its time limit, which is an orderly release here.
DEFAULT_KILL_PATTERNS: tuple[str, ...] = (
    "srun: error:",  # srun could not start or lost a task of an MPI step
    "MemoryError",  # Python ran out of memory outside the learner's function
    "oom-kill",  # slurmstepd: error: Detected 1 oom-kill event(s)
    "Out of memory",  # the kernel's OOM killer (dmesg style), or a CUDA/MPI allocator
)
# srun's report that SLURM lost or downed a node under the step: not the job's fault. SLURM
# ends the allocation itself; its workers elsewhere get SIGTERM and release their learners, and
# the queue poll gives back those of the lost node. Matching it would charge every learner of
# the allocation a failure.
_NODE_FAILURE = b"srun: error: Node failure on "


def check_patterns(patterns: Sequence[str] | None) -> tuple[str, ...]:
    """Validate ``kill_on_error``; None (off) gives an empty tuple."""
    if patterns is None:
        return ()
    if isinstance(patterns, str | bytes):
        raise ConfigError(
            f"kill_on_error must be a list of strings or None, got the string {patterns!r}: "
            "write kill_on_error=[...] around it"
        )
    result = tuple(patterns)
    for i, pattern in enumerate(result):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(
                f"kill_on_error[{i}] = {pattern!r}: every pattern must be a non-empty string "
                "(matched as plain text in the job's output)"
            )
    return result


class ErrorWatch:
    """Find the active tasks whose own output matches one of ``patterns``.

    Parameters
    ----------
    logs_dir
        The run's logs/ directory, where the ``<task>.log`` files are written.
    patterns
        Plain substrings (case-sensitive), matched against every new line.

    """

    def __init__(self, logs_dir: Path, patterns: Sequence[str]) -> None:
        self.logs_dir = logs_dir
        self.patterns = check_patterns(patterns)
        self._logs_dir = os.fspath(logs_dir)
        self._encoded = [(p, p.encode()) for p in self.patterns]
        self._reader = LineReader()
        self._reported: set[str] = set()  # matched already; being cancelled
        self._learner: dict[str, int] = {}  # task -> learner of its latest started event

    def scan(self, tasks: Collection[str], held: Mapping[str, int]) -> dict[str, str]:
        """Read what ``tasks`` printed since the last scan; task -> reason for those that matched.

        ``held`` maps each task that holds a learner to it: a line printed while the task ran
        another learner (finished, or taken back) is skipped. A task is reported once; tasks
        missing from ``tasks`` are forgotten (they ended).
        """
        found: dict[str, str] = {}
        for task in tasks:
            if task in self._reported:
                continue
            new = self._reader.read(self._log_file(task))
            if new is None:
                continue  # not started yet (no file), or a binary file (warned once)
            for line in new.lines:
                learner = started_learner(line)  # the learner of the lines after it
                if learner is not None:
                    self._learner[task] = learner
                if task in found:
                    continue  # read on only for the learner of each line
                reason = self._match(line)
                running = self._learner.get(task)
                if reason is not None and (running is None or running == held.get(task)):
                    found[task] = reason
        active = set(tasks)
        keep = {self._log_file(task) for task in active}
        for path in self._reader.paths() - keep:
            self._reader.forget(path)
        self._learner = {task: i for task, i in self._learner.items() if task in active}
        self._reported = (self._reported & active) | found.keys()
        return found

    def _log_file(self, task: str) -> str:
        return f"{self._logs_dir}/{task}{LOG_SUFFIX}"  # str, not Path: 10,000 per round

    def _match(self, line: bytes) -> str | None:
        """The reason if the output part of ``line`` holds a pattern (events are not output)."""
        if not any(encoded in line for _, encoded in self._encoded) or _NODE_FAILURE in line:
            return None  # most lines: no JSON parsed
        output, _ = split_event(line)
        for pattern, encoded in self._encoded:
            if encoded in output:
                text = output.decode("utf-8", errors="replace").strip()[:MAX_LINE_CHARS]
                return f"kill_on_error: the job's output matched {pattern!r}: {text}"
        return None
