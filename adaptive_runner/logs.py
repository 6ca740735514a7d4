"""structlog set-up: JSON lines for job logs, readable lines for the managers' console.

Nothing is configured at import time; the worker, the CLI and the run manager each call one
of the ``configure_*`` functions once. The run manager also calls :func:`log_managers_to`,
which adds ``RUN_DIR/manager.log`` (JSON lines, level info and up) to whatever console set-up
is in force, the user's own structlog configuration included.

A job log (``logs/<task_id>.log``) holds one JSON object per line, each with ``event``,
``level`` and an ISO 8601 UTC ``timestamp``. The worker writes the events ``started``,
``resumed``, ``status``, ``saved``, ``save_failed``, ``done``, ``released``, ``failed`` and
``no_work``; a task that goes on to another learner after ``done`` logs ``started`` again,
and ``no_more_work`` (or ``stopped``, told to stop between learners) when it exits.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from structlog.typing import EventDict, WrappedLogger

LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_job_logging(path: Path, *, level: str = "info") -> TextIO:
    """Send structlog events as JSON lines to ``path`` (appended, one flushed line per event).

    Returns the open file; the caller closes it when the job ends. Lines are flushed one by
    one, so a job killed with SIGKILL still leaves every line it logged.

    Parameters
    ----------
    path
        The job's log file; its directory is created if missing.
    level
        The lowest level written (one of ``LEVELS``).

    """
    _check_level(level)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", buffering=1, encoding="utf-8")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return stream


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
    _check_level(level)
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

    It adds its own UTC timestamp and level, so it works first in any processor chain.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: TextIO | None = None
        self.path: Path | None = None

    def open(self, path: Path) -> None:
        """Write to ``path`` (appending) from now on, instead of the previous file."""
        with self._lock:
            if self.path == path and self._stream is not None:
                return
            stream = path.open("a", buffering=1, encoding="utf-8")
            if self._stream is not None:
                self._stream.close()
            self._stream, self.path = stream, path

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
        record: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat(),
            "level": _LEVEL_OF.get(method_name, method_name),
            **event_dict,
        }
        formatted = structlog.processors.format_exc_info(logger, method_name, record)
        line = json.dumps(dict(formatted), default=str)
        with self._lock:
            if self._stream is not None:
                self._stream.write(line + "\n")
        return event_dict


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


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ConfigError(f"level={level!r} is not a log level; choose one of {', '.join(LEVELS)}")
