"""A task's log (``logs/<task_id>.log``): one JSON object per line, written with the stdlib.

Each line holds the bound keys (``task``, then ``learner``), the call's keys, then ``event``,
``level``, an ISO 8601 UTC ``timestamp`` and, after :meth:`JobLog.exception`, the traceback
under ``exception``: what structlog's ``JSONRenderer`` wrote before, as ``log_parser`` and the
CLI read it. The worker writes the events ``started``, ``initializer_started`` and
``initializers_done`` (its first learner only), ``resumed``, ``status``, ``saved``,
``save_failed``, ``done``, ``released``, ``failed``, ``no_work`` and, as its only line,
``manager_unresolvable``; a task that goes on to another learner after ``done`` logs
``started`` again, and ``no_more_work`` (or ``stopped``, told to stop between learners) when
it exits.

The log never ends the worker (``common.line_file``): a line that cannot be written (a full
disk, a quota) is dropped, and the next line that can be written follows a ``lines_lost``
line with how many were dropped and why. The learner is saved and reported as if nothing
happened; only its log has a gap.

The job side does not import structlog: ``import structlog`` loads its console renderer's
extras when they are installed (rich, pygments, colorama, better_exceptions), about 80 ms of
CPU in each array task before it can claim, paid by every task of an array that starts at once.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from adaptive_runner.common.line_file import LineFile
from adaptive_runner.common.validation import check_level
from adaptive_runner.common.vocabulary import LEVELS, Event

if TYPE_CHECKING:
    from io import FileIO
    from pathlib import Path

    from adaptive_runner.common.line_file import RawWriter


def open_job_stream(path: Path) -> FileIO:
    """``path`` opened for appending, unbuffered (its directory created if missing).

    Each line is one write, so a job killed with SIGKILL still leaves every line it logged,
    and a line that could not be written is never written later. The caller closes it when
    the job ends.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab", buffering=0)


class JobLog:
    """Writes events as JSON lines to a stream; :meth:`bind` adds keys to every line.

    Parameters
    ----------
    stream
        Where the lines go: an unbuffered binary file (see :func:`open_job_stream`).
    level
        The lowest level written (one of ``LEVELS``).
    context
        Keys written first on every line.

    """

    def __init__(
        self, stream: RawWriter, *, level: str = "info", context: dict[str, Any] | None = None
    ) -> None:
        check_level(level)
        self.stream = stream
        self.level = level
        self.context = dict(context or {})
        self._lowest = LEVELS.index(level)
        self._file = LineFile(stream, self._lost_line)

    def bind(self, **context: Any) -> Self:
        """A log of the same stream whose lines also carry ``context``."""
        bound = type(self)(self.stream, level=self.level, context={**self.context, **context})
        bound._file = self._file  # noqa: SLF001 - one per stream: lines never interleave
        return bound

    def debug(self, event: str, **fields: Any) -> None:
        """Write ``event`` at level debug."""
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Write ``event`` at level info."""
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Write ``event`` at level warning."""
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Write ``event`` at level error."""
        self._log("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Write ``event`` at level critical."""
        self._log("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Write ``event`` at level error, with the exception being handled (if any)."""
        self._log("error", event, fields, sys.exception())

    def _log(
        self, level: str, event: str, fields: dict[str, Any], error: BaseException | None = None
    ) -> None:
        if LEVELS.index(level) < self._lowest:
            return
        record = {**self.context, **fields, "event": event, "level": level, "timestamp": _now()}
        if error is not None:
            record["exception"] = "".join(traceback.format_exception(error)).removesuffix("\n")
        self._file.write(json.dumps(record, default=repr))

    def _lost_line(self, lost: int, error: str) -> str:
        """The line before the first one written after ``lost`` lines could not be."""
        fields = {"lost": lost, "error": error, "event": Event.LINES_LOST, "level": "warning"}
        return json.dumps({**self.context, **fields, "timestamp": _now()})


def _now() -> str:
    """The time, ISO 8601 in UTC with a ``Z``, as structlog's TimeStamper wrote it."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
