"""structlog set-up for the manager side: readable console lines, and manager.log.

Nothing is configured at import time; the CLI calls :func:`configure_manager_logging` once.
The run manager calls :func:`log_managers_to`, which adds ``RUN_DIR/manager.log`` (JSON lines,
level info and up) to whatever console set-up is in force, the user's own structlog
configuration included, and configures one if there is none: console lines in a script, and
in a Jupyter kernel (:func:`in_jupyter_kernel`) :func:`configure_notebook_logging`, which shows
a cell only warnings and errors, each once, as one line. Logging never ends a manager:
manager.log that cannot be written (a full disk) loses lines, noted on stderr and, once it can
be written again, in the file itself; error handlers log through :func:`log_exception`.

The job side does not use structlog: a task's log is written by ``job/task_log.py``.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import structlog

from adaptive_runner.common.line_file import LineFile
from adaptive_runner.common.validation import check_level
from adaptive_runner.common.vocabulary import LEVELS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from io import FileIO
    from pathlib import Path

    from structlog.typing import EventDict, Processor, WrappedLogger


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
    _configure(
        level,
        out,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
        structlog.dev.ConsoleRenderer(colors=out.isatty() if colors is None else colors),
    )


def configure_notebook_logging(*, stream: TextIO | None = None) -> None:
    """Show a notebook cell only the warnings and errors, each once, as one plain line.

    In Jupyter, every line on stderr is a red block under the cell that runs (or last ran),
    and the managers log a few info lines per round: those go only to manager.log (attached
    by :func:`log_managers_to`, which receives every event). A warning or error appears once
    per event and run (its repeats, in later rounds, only in manager.log) as
    ``adaptive_runner warning: <event> key=value ...``.

    Parameters
    ----------
    stream
        Where lines go; default ``sys.stderr`` as it is when this is called (the kernel's).

    """
    tee = _current_tee() or JsonFileTee()
    _configure("warning", sys.stderr if stream is None else stream, OncePerRun(tee), tee=tee)


def _configure(
    level: str, out: TextIO, *console: Processor, tee: JsonFileTee | None = None
) -> None:
    """structlog: every event to manager.log's tee, then ``console`` for those from ``level``."""
    structlog.configure(
        processors=[tee or _current_tee() or JsonFileTee(), _drop_below(level), *console],
        wrapper_class=structlog.make_filtering_bound_logger(min(level, "info", key=LEVELS.index)),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ``ZMQInteractiveShell``).

    Imports nothing: without ipykernel loaded this is no kernel. A terminal IPython is a
    ``TerminalInteractiveShell``, and keeps the console lines of scripts.
    """
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def log_managers_to(path: Path) -> None:
    """Also write every manager event as a JSON line to ``path`` (the run's manager.log).

    Configures the console if structlog is not configured yet (for a notebook in a Jupyter
    kernel, else :func:`configure_manager_logging`'s lines); otherwise adds the file in front
    of the processors in force.
    """
    if not structlog.is_configured():
        if in_jupyter_kernel():
            configure_notebook_logging()
        else:
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
    that cannot be written (a full disk) is lost, not raised (``common.line_file``): the first
    of a streak is noted on stderr, and the next line written is preceded by one that counts
    the lost ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file: LineFile | None = None
        self._stream: FileIO | None = None
        self.path: Path | None = None

    def open(self, path: Path) -> None:
        """Write to ``path`` (appending) from now on, instead of the previous file."""
        with self._lock:
            if self.path == path and self._stream is not None:
                return
            stream = path.open("ab", buffering=0)
            if self._stream is not None:
                self._stream.close()
            self._stream, self.path = stream, path
            self._file = LineFile(stream, _lost_line)

    def close(self) -> None:
        """Stop writing; events only pass through until the next :meth:`open`."""
        with self._lock:
            if self._stream is not None:
                self._stream.close()
            self._stream, self._file, self.path = None, None, None

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Write ``event_dict`` as JSON (exceptions as text) and return it unchanged."""
        if self._file is None:
            return event_dict
        level = _LEVEL_OF.get(method_name, method_name)
        record: dict[str, Any] = {"timestamp": _now(), "level": level, **event_dict}
        formatted = structlog.processors.format_exc_info(logger, method_name, record)
        line = json.dumps(dict(formatted), default=str)
        with self._lock:
            lines = self._file
            if lines is not None and not lines.write(line) and lines.lost == 1:
                note(
                    f"cannot write {self.path} ({lines.error}); its lines are lost until it "
                    f"can: {event_dict.get('event')}"
                )
        return event_dict


def _lost_line(lost: int, error: str) -> str:
    """manager.log's line that counts the lines it lost before it."""
    return json.dumps(
        {
            "timestamp": _now(),
            "level": "warning",
            "event": "manager.log lost lines it could not write",
            "lost": lost,
            "error": error,
        }
    )


class OncePerRun:
    """structlog's renderer for notebooks: one line per event, the first time in each run.

    An event is known by its level and text, whatever its fields (a warning repeated each
    round differs in counts and times); the run is the manager.log ``tee`` writes to.
    """

    def __init__(self, tee: JsonFileTee) -> None:
        self._tee = tee
        self._lock = threading.Lock()
        self._shown: set[tuple[Path | None, str, str]] = set()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        """``adaptive_runner <level>: <event> key=value ...``, or DropEvent for a repeat."""
        level = _LEVEL_OF.get(method_name, method_name)
        event = str(event_dict.pop("event", ""))
        with self._lock:
            key = (self._tee.path, level, event)
            if key in self._shown:
                raise structlog.DropEvent
            self._shown.add(key)
        fields = structlog.processors.format_exc_info(logger, method_name, event_dict)
        if "exception" in fields:  # the traceback's last line says what it was
            fields["exception"] = str(fields["exception"]).strip().rsplit("\n", 1)[-1]
        return " ".join(
            [f"adaptive_runner {level}: {event}"] + [f"{k}={v!r}" for k, v in fields.items()]
        )


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


T = TypeVar("T")


def with_progress(logger: Any, items: Sequence[T], event: str, *, every: int) -> Iterator[T]:
    """``items`` one by one; ``event`` logged (``checked``, ``of``) every ``every`` and at the end.

    For the passes over every learner that a start may make (10,000 loads take a while).
    """
    for k, item in enumerate(items, 1):
        yield item
        if k % every == 0 or k == len(items):
            logger.info(event, checked=k, of=len(items))
