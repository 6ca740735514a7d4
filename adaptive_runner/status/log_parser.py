"""Read a run's logs incrementally: one record per array task (``parse_logs``).

A :class:`LogParser` remembers, per file, the inode and the offset up to which it has read,
so a second :meth:`LogParser.parse` only stats every file and reads the bytes appended since
the first: polling 10,000 logs every few seconds stays cheap. A last line without its newline
is left for the next call; a file that was replaced or truncated is read again from its start.
A binary file (a NUL byte at its start), an unreadable or a deleted log is skipped with a
:class:`LogParseWarning`, never an exception.

Each task has one file, ``RUN_DIR/logs/<task>.log``, with two writers appending to it: the
worker's JSON lines (see logs.py) and the task's own stdout and stderr (the job script sends
them there). A JSON object with an ``event`` key is a worker event; any other line is the
task's output, scanned for error lines. Only stdlib is imported here; pandas only inside
:meth:`LogRecords.to_dataframe`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.common.vocabulary import OUTCOME_EVENTS, Event
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd

LOG_SUFFIX = ".log"
# Lines of a task's own output worth showing: Python tracebacks, scheduler and kernel
# messages (srun/slurmstepd errors, OOM kills, time limits, signals), and the shell's own
# complaints when the job cannot even start (a wrong python, a missing module or directory).
ERROR_LINE = re.compile(
    rb"error|traceback|exception|killed|oom|out of memory|segmentation fault|"
    rb"cancelled|time limit|exceeded|core dumped|no such file or directory|"
    rb"command not found|permission denied",
    re.IGNORECASE,
)
MAX_ERROR_LINES = 20  # per task: the most recent error lines are kept
MAX_LINE_CHARS = 1000  # an error line longer than this is cut
CHUNK_BYTES = 1 << 22  # files are read in pieces of this size, never whole
MAX_PENDING_BYTES = 1 << 20  # a "line" this long without a newline is taken as it is
BINARY_PROBE_BYTES = 8000  # a NUL byte among a file's first bytes makes it binary (as git does)
MAX_SPLIT_TRIES = 8  # '{"' positions tried per line when looking for an event after output
_STARTED = f'"{Event.STARTED}"'.encode()  # in every line that may be a started event


class LogParseWarning(UserWarning):
    """A log file was skipped (binary, unreadable or deleted)."""


def _warn(message: str) -> None:
    warnings.warn(message, LogParseWarning, stacklevel=4)


@dataclass(slots=True)
class _Cursor:
    inode: int
    offset: int = 0
    skipped: bool = False  # binary: not read again until the file is replaced


@dataclass(frozen=True, slots=True)
class NewLines:
    """What :meth:`LineReader.read` found: complete lines appended since the last read."""

    from_start: bool  # the file is new, replaced or truncated: the lines start it over
    lines: Iterator[bytes]


class LineReader:
    """Hands out the complete lines added to files since the previous read of each."""

    def __init__(self) -> None:
        self._cursors: dict[str, _Cursor] = {}  # str keys: Path objects cost 10 µs each

    def paths(self) -> set[str]:
        """The files this reader has read from."""
        return set(self._cursors)

    def forget(self, path: str | os.PathLike[str]) -> None:
        """Drop the position in ``path``; a later read starts from its beginning."""
        self._cursors.pop(os.fspath(path), None)

    def read(
        self, path: str | os.PathLike[str], stat: os.stat_result | None = None
    ) -> NewLines | None:
        """The lines of ``path`` added since the last call; None if missing or skipped.

        Parameters
        ----------
        path
            The file; a missing one that was read before is reported as deleted.
        stat
            Its ``os.stat`` if the caller has it already (from ``os.scandir``).

        """
        path = os.fspath(path)
        cursor = self._cursors.get(path)
        if stat is None:
            try:
                stat = os.stat(path)  # noqa: PTH116 - str path, see _cursors
            except FileNotFoundError:
                if cursor is not None:
                    self.forget(path)
                    _warn(f"{path} was deleted; skipped (its record keeps what was read)")
                return None
        from_start = cursor is None or cursor.inode != stat.st_ino or stat.st_size < cursor.offset
        if from_start:
            cursor = self._cursors[path] = _Cursor(stat.st_ino)
        assert cursor is not None  # noqa: S101 - for mypy: set just above
        if cursor.skipped:
            return None
        if stat.st_size == cursor.offset:
            return NewLines(from_start, iter(()))
        try:
            stream = open(path, "rb")  # noqa: PTH123, SIM115 - str path; closed by _lines
        except FileNotFoundError:
            self.forget(path)
            _warn(f"{path} was deleted while being read; skipped")
            return None
        except OSError as e:
            self.forget(path)
            _warn(f"{path} cannot be read ({e}); skipped")
            return None
        return NewLines(from_start, self._lines(path, stream, cursor, stat.st_size))

    def _lines(self, path: str, stream: Any, cursor: _Cursor, size: int) -> Iterator[bytes]:
        """Yield complete lines up to ``size``, moving the cursor past each chunk consumed."""
        with stream:
            stream.seek(cursor.offset)
            pending = b""
            while cursor.offset + len(pending) < size:
                chunk = stream.read(min(CHUNK_BYTES, size - cursor.offset - len(pending)))
                if not chunk:
                    return  # truncated meanwhile: the next read sees the smaller size
                if cursor.offset == 0 and not pending and b"\0" in chunk[:BINARY_PROBE_BYTES]:
                    # Only a file's start decides: a NUL a task prints later is part of a line.
                    cursor.skipped = True
                    _warn(f"{path} is not a text file (it starts with NUL bytes); skipped")
                    return
                data = pending + chunk
                end = data.rfind(b"\n")
                if end < 0 and len(data) >= MAX_PENDING_BYTES:
                    end = len(data) - 1  # no newline in sight (a progress bar?): take it
                    data += b"\n"
                if end < 0:
                    pending = data
                    continue
                pending = data[end + 1 :]
                cursor.offset += end + 1
                yield from data[:end].split(b"\n")


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """What the logs say about one array task: who it is, its latest learner and its outcome.

    A task that reached its learner's goal goes on with the next waiting one; the fields from
    ``learner`` to ``error`` describe the latest learner, ``learners`` counts them all.
    """

    task: str
    learner: int | None = None
    host: str | None = None
    node: str | None = None  # the scheduler's name of the node (SLURMD_NODENAME), else host
    pid: int | None = None
    array: str | None = None
    index: int | None = None  # the task's index in its array
    fname: str | None = None
    started: str | None = None  # ISO 8601 UTC, from the ``started`` line
    last_event: str | None = None
    last_time: str | None = None  # timestamp of the latest line
    npoints: int | None = None
    loss: float | None = None
    npoints_per_s: float | None = None
    elapsed_s: float | None = None
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    resumed_npoints: int | None = None  # points loaded from a previous job's save
    saves: int = 0
    last_save_s: float | None = None
    last_save_bytes: int | None = None
    outcome: str | None = None  # done, released, failed, no_work, manager_unreachable
    reason: str | None = None  # why the learner was released
    error: str | None = None  # traceback of the failure, or the latest logged exception
    output_errors: tuple[str, ...] = ()  # latest error lines of the task's own output
    learners: int = 0  # learners this task started


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_EMPTY: dict[str, Any] = {}


@dataclass(slots=True)
class _TaskState:
    """One task's latest lines of each kind; the record is built from them when asked.

    Folding a line only files it away (a 10,000-task first parse folds millions), and the
    checked, typed record is made once per changed task in :meth:`snapshot`.
    """

    task: str
    started: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)  # the latest status line
    resumed: dict[str, Any] = field(default_factory=dict)
    saved: dict[str, Any] = field(default_factory=dict)  # the latest saved line
    with_npoints: dict[str, Any] = field(default_factory=dict)  # latest line with npoints
    with_loss: dict[str, Any] = field(default_factory=dict)  # latest line with a loss
    last: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)  # done, released, failed, ...
    error: Any = None
    saves: int = 0
    learners: int = 0
    output_errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ERROR_LINES))
    record: TaskRecord | None = None  # cached snapshot; None when something changed

    def add_output_error(self, line: bytes) -> None:
        """Keep one error line of the task's own output."""
        text = line.decode("utf-8", errors="replace").strip()
        self.output_errors.append(text[:MAX_LINE_CHARS])
        self.record = None

    def fold(self, event: dict[str, Any]) -> None:
        """File away one worker event."""
        name = event.get("event")
        self.last = event
        if name == Event.STATUS:
            self.status = event
        elif name == Event.SAVED:
            self.saved = event
            self.saves += 1
        elif name == Event.STARTED:  # a new learner: forget the previous one's lines
            self.started, self.learners = event, self.learners + 1
            self.status, self.resumed, self.saved, self.outcome = {}, {}, {}, {}
            self.with_npoints, self.with_loss, self.error, self.saves = {}, {}, None, 0
        elif name == Event.RESUMED:
            self.resumed = event
        elif name in OUTCOME_EVENTS:
            self.outcome = event
        if "npoints" in event:
            self.with_npoints = event
        if "loss" in event:
            self.with_loss = event
        if "traceback" in event or "exception" in event:
            self.error = event.get("traceback", event.get("exception"))
        self.record = None

    def snapshot(self) -> TaskRecord:
        if self.record is not None:
            return self.record
        started, status, saved, outcome = self.started, self.status, self.saved, self.outcome
        released = outcome if outcome.get("event") == Event.RELEASED else _EMPTY
        self.record = TaskRecord(
            task=self.task,
            learner=_int(started.get("learner")),
            host=_str(started.get("host")),
            node=_str(started.get("node", started.get("host"))),
            pid=_int(started.get("pid")),
            array=_str(started.get("array")),
            index=_int(started.get("index")),
            fname=_str(started.get("fname")),
            started=_str(started.get("timestamp")),
            last_event=_str(self.last.get("event")),
            last_time=_str(self.last.get("timestamp")),
            npoints=_int(self.with_npoints.get("npoints")),
            loss=_float(self.with_loss.get("loss")),
            npoints_per_s=_float(status.get("npoints_per_s")),
            elapsed_s=_float(status.get("elapsed_s")),
            cpu_percent=_float(status.get("cpu_percent")),
            memory_bytes=_int(status.get("memory_bytes")),
            resumed_npoints=_int(self.resumed.get("npoints")),
            saves=self.saves,
            last_save_s=_float(saved.get("seconds")),
            last_save_bytes=_int(saved.get("bytes")),
            outcome=_str(outcome.get("event")),
            reason=_str(released.get("reason")),
            error=_str(self.error),
            output_errors=tuple(self.output_errors),
            learners=self.learners,
        )
        return self.record


def _natural(task: str) -> list[Any]:
    """Sort key: "L2_10" after "L2_9"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", task)]


class LogRecords(list[TaskRecord]):
    """The records of :func:`parse_logs`, one per array task, in task order."""

    def to_dataframe(self) -> pd.DataFrame:
        """The records as a pandas DataFrame (needs pandas), one row per task."""
        try:
            import pandas as pd  # noqa: PLC0415 - optional dependency
        except ImportError as e:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from e
        names = [f.name for f in dataclasses.fields(TaskRecord)]
        rows = [[getattr(record, name) for name in names] for record in self]
        frame = pd.DataFrame(rows, columns=names)
        for column in ("started", "last_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame


class LogParser:
    """Parse a run's logs again and again, reading only what was appended in between.

    Parameters
    ----------
    run_dir
        The run directory (or its path).

    """

    def __init__(self, run_dir: RunDir | str | os.PathLike[str]) -> None:
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self._reader = LineReader()
        self._tasks: dict[str, _TaskState] = {}
        self._order: list[str] = []  # tasks in natural order; rebuilt when one is added
        self._listed: set[str] = set()
        self._lock = threading.Lock()  # a panel's refresh thread and the user may both call

    def parse(self) -> LogRecords:
        """One record per task, up to date with every complete line written so far."""
        with self._lock:
            logs_dir = self.run_dir.logs_dir
            try:
                entries = list(os.scandir(logs_dir))
            except FileNotFoundError:
                raise ConfigError(
                    f"{self.run_dir.path} is not a run directory (no {logs_dir.name}/)"
                ) from None
            listed: set[str] = set()
            added = False
            for entry in entries:
                added |= self._read_entry(entry, listed)
            for path in self._listed - listed:
                if path in self._reader.paths():
                    self._reader.forget(path)
                    _warn(f"{path} was deleted; skipped (its record keeps what was read)")
            self._listed = listed
            if added:
                self._order = sorted(self._tasks, key=_natural)
            return LogRecords(self._tasks[task].snapshot() for task in self._order)

    def _read_entry(self, entry: os.DirEntry[str], listed: set[str]) -> bool:
        """Fold what was added to one task log; True if its task is new."""
        if not entry.name.endswith(LOG_SUFFIX):
            return False
        task = entry.name[: -len(LOG_SUFFIX)]
        path = entry.path
        try:
            stat = entry.stat()
        except FileNotFoundError:
            return False  # gone since the listing: reported as deleted by parse()
        listed.add(path)
        new = self._reader.read(path, stat)
        if new is None:
            return False
        state = self._tasks.get(task)
        added = state is None
        if state is None or new.from_start:  # new, replaced or truncated: start over
            state = self._tasks[task] = _TaskState(task)
        for line in new.lines:
            output, event = split_event(line)
            if output and ERROR_LINE.search(output):
                state.add_output_error(output)
            if event is not None:
                state.fold(event)
        return added


def split_event(line: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """Split a line of a task log into the task's own output and the worker's event (if any).

    The worker writes each event as one JSON object with an ``event`` key and its newline in a
    single append, but the task's output shares the file: a print flushed without its newline
    leaves the next event glued to its end. What comes before the event is output; a line
    without an event is all output (a JSON line of the task's own included).

    Parameters
    ----------
    line
        One line, without its newline.

    """
    if not line.endswith(b"}"):
        return line, None  # most output lines: no parse attempted
    start = 0
    for _ in range(MAX_SPLIT_TRIES):
        start = line.find(b'{"', start)
        if start < 0:
            break
        try:
            obj = json.loads(line[start:].decode())  # str: json skips detecting the encoding
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            obj = None
        if isinstance(obj, dict) and "event" in obj:
            return line[:start], obj
        start += 2
    return line, None


def started_learner(line: bytes) -> int | None:
    """The learner a ``started`` event on ``line`` names; None for any other line.

    A task runs its learners one after another: each ``started`` names the learner of the
    lines after it, until the next. Other lines cost a substring search, no JSON parse.
    """
    if _STARTED not in line:
        return None
    _, event = split_event(line)
    if event is None or event.get("event") != Event.STARTED:
        return None
    return _int(event.get("learner"))


def parse_logs(run_dir: RunDir | str | os.PathLike[str]) -> LogRecords:
    """One record per array task of ``run_dir``: latest status, outcome, errors.

    Reads every log once; to poll a run, keep a :class:`LogParser` (``rm.parse_logs()`` does)
    so that each call reads only what was added since the previous one.
    """
    return LogParser(run_dir).parse()
