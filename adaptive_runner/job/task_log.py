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

The job side does not import structlog: ``import structlog`` loads its console renderer's
extras when they are installed (rich, pygments, colorama, better_exceptions), about 80 ms of
CPU in each array task before it can claim, paid by every task of an array that starts at once.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from adaptive_runner.common.validation import check_level
from adaptive_runner.common.vocabulary import LEVELS

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO


def open_job_stream(path: Path) -> TextIO:
    """``path`` opened for appending, one line per write (its directory created if missing).

    Lines are flushed one by one, so a job killed with SIGKILL still leaves every line it
    logged. The caller closes it when the job ends.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", buffering=1, encoding="utf-8")


class JobLog:
    """Writes events as JSON lines to a stream; :meth:`bind` adds keys to every line.

    Parameters
    ----------
    stream
        Where the lines go (see :func:`open_job_stream`).
    level
        The lowest level written (one of ``LEVELS``).
    context
        Keys written first on every line.

    """

    def __init__(
        self, stream: TextIO, *, level: str = "info", context: dict[str, Any] | None = None
    ) -> None:
        check_level(level)
        self.stream = stream
        self.level = level
        self.context = dict(context or {})
        self._lowest = LEVELS.index(level)
        self._lock = threading.Lock()

    def bind(self, **context: Any) -> Self:
        """A log of the same stream whose lines also carry ``context``."""
        bound = type(self)(self.stream, level=self.level, context={**self.context, **context})
        bound._lock = self._lock  # noqa: SLF001 - one lock per stream: lines never interleave
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
        record = {**self.context, **fields, "event": event, "level": level}
        record["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if error is not None:
            record["exception"] = "".join(traceback.format_exception(error)).removesuffix("\n")
        line = json.dumps(record, default=repr) + "\n"
        with self._lock:
            self.stream.write(line)
