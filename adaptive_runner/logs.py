"""structlog set-up for the manager side: readable console lines, and manager.log.

Nothing is configured at import time; the CLI and the run manager each call
:func:`configure_manager_logging` once. The run manager also calls :func:`log_managers_to`,
which adds ``RUN_DIR/manager.log`` (JSON lines, level info and up) to whatever console set-up
is in force, the user's own structlog configuration included. Logging never ends a manager:
manager.log that cannot be written (a full disk) loses lines, noted on stderr and, once it can
be written again, in the file itself; error handlers log through :func:`log_exception`.

The job side does not use structlog: a task's log is written by ``job_log.py``.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from adaptive_runner.job_log import LEVELS, check_level

if TYPE_CHECKING:
    from collections.abc import Callable
    from io import FileIO
    from pathlib import Path

    from structlog.typing import EventDict, WrappedLogger


def configure_manager_logging(
    *, level: str = "info", stream: TextIO | None = None, colors: bool | None = None
) -> None:
    """Send structlog events to a console (a terminal or a notebook) as aligned text lines.

    A manager.log attached by :func:`log_managers_to` stays attached, and keeps receiving
    info events even when the console shows warnings only.

    Parameters
    ----------
    level
        The lowest level shown (one of ``LEVELS``).
    stream
        Where lines go; default ``sys.stderr`` as it is when this is called (Jupyter swaps it).
    colors
        ANSI colours; default: only when ``stream`` is a terminal.

    """
    check_level(level)
    out = sys.stderr if stream is None else stream
    tee = _current_tee() or JsonFileTee()
    structlog.configure(
        processors=[
            tee,
            _drop_below(level),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=out.isatty() if colors is None else colors),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min(level, "info", key=LEVELS.index)),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def log_managers_to(path: Path) -> None:
    """Also write every manager event as a JSON line to ``path`` (the run's manager.log).

    Configures the console with :func:`configure_manager_logging` if structlog is not
    configured yet; otherwise adds the file in front of the processors in force.
    """
    if not structlog.is_configured():
        configure_manager_logging()
    tee = _current_tee()
    if tee is None:
        tee = JsonFileTee()
        structlog.configure(processors=[tee, *structlog.get_config()["processors"]])
    tee.open(path)


def stop_logging_managers_to(path: Path) -> None:
    """Close ``path`` if :func:`log_managers_to` writes there (the run's managers stopped)."""
    tee = _current_tee()
    if tee is not None and tee.path == path:
        tee.close()


class JsonFileTee:
    """A structlog processor that writes each event as a JSON line to a file, then passes it on.

    It adds its own UTC timestamp and level, so it works first in any processor chain. A line
    that cannot be written (a full disk) is lost, not raised: the first of a streak is noted
    on stderr, and the next line written is preceded by one that counts the lost ones. The
    file is unbuffered, so a failed line is never written later out of order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: FileIO | None = None
        self.path: Path | None = None
        self._lost = 0  # lines lost since the last one written
        self._lost_error = ""
        self._partial = False  # a lost line left part of itself in the file

    def open(self, path: Path) -> None:
        """Write to ``path`` (appending) from now on, instead of the previous file."""
        with self._lock:
            if self.path == path and self._stream is not None:
                return
            stream = path.open("ab", buffering=0)
            if self._stream is not None:
                self._stream.close()
            self._stream, self.path = stream, path
            self._lost, self._partial = 0, False

    def close(self) -> None:
        """Stop writing; events only pass through until the next :meth:`open`."""
        with self._lock:
            if self._stream is not None:
                self._stream.close()
            self._stream, self.path = None, None

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Write ``event_dict`` as JSON (exceptions as text) and return it unchanged."""
        if self._stream is None:
            return event_dict
        level = _LEVEL_OF.get(method_name, method_name)
        record: dict[str, Any] = {"timestamp": _now(), "level": level, **event_dict}
        formatted = structlog.processors.format_exc_info(logger, method_name, record)
        line = json.dumps(dict(formatted), default=str)
        with self._lock:
            if self._stream is not None:
                self._write(self._stream, line, event=str(event_dict.get("event")))
        return event_dict

    def _write(self, stream: FileIO, line: str, *, event: str) -> None:
        """Append ``line`` (after the count of lines lost before it, if any); never raise."""
        text = line + "\n"
        if self._lost:
            lost = {
                "timestamp": _now(),
                "level": "warning",
                "event": "manager.log lost lines it could not write",
                "lost": self._lost,
                "error": self._lost_error,
            }
            text = ("\n" if self._partial else "") + json.dumps(lost) + "\n" + text
        data = text.encode()
        written = 0
        try:
            while written < len(data):  # a short write: the disk filled up during this line
                written += stream.write(data[written:])
        except OSError as e:
            self._partial = self._partial or written > 0
            self._lost += 1
            if self._lost == 1:
                note(f"cannot write {self.path} ({e}); its lines are lost until it can: {event}")
            self._lost_error = str(e)
        else:
            self._lost, self._partial = 0, False


def log_exception(logger: Any, event: str, **fields: Any) -> None:
    """Log ``event`` with the exception being handled, for error handlers: never raises.

    A handler whose log call raises (a failing handler or processor of the user's own
    logging set-up, a console that cannot be written) would end the thread it protects;
    such a failure is noted on stderr instead.

    Parameters
    ----------
    logger
        A structlog logger.
    event
        What failed, and what happens next.
    fields
        Context for the event.

    """
    try:
        logger.exception(event, **fields)  # noqa: LOG004 - called in except blocks only
    except Exception as e:  # noqa: BLE001 - whatever logging raises, the handler goes on
        note(f"{event} ({type(e).__name__} while logging it: {e})")


def note(text: str) -> None:
    """Print ``text`` on stderr if it can be (what logging itself could not say)."""
    try:
        sys.stderr.write(f"adaptive_runner: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # no stderr left (closed, or on the full disk): nowhere to say
        return


def _now() -> str:
    return datetime.now(UTC).isoformat()


_LEVEL_OF = {"exception": "error", "warn": "warning", "msg": "info"}


def _current_tee() -> JsonFileTee | None:
    if not structlog.is_configured():
        return None
    processors = structlog.get_config()["processors"]
    return next((p for p in processors if isinstance(p, JsonFileTee)), None)


def _drop_below(level: str) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    """A processor that drops events under ``level`` (after the file has seen them)."""
    lowest = LEVELS.index(level)

    def drop(_logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        name = _LEVEL_OF.get(method_name, method_name)
        if name in LEVELS and LEVELS.index(name) < lowest:
            raise structlog.DropEvent
        return event_dict

    return drop
