"""Task log lines as people read them: ``time task level event key=value ...``.

The worker writes JSON lines (task_log.py) into the same file as the task's own output.
This module turns them back into one line per event, with a traceback indented below it
(its real lines, not one escaped string), and dates the task's output lines by the events
around them, so that the logs of several tasks merge in time order. ``adaptive-runner logs``
prints these lines; the panel's log viewer shows the same lines as HTML (:func:`lines_html`).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from adaptive_runner.status.log_parser import split_event

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from adaptive_runner.status.log_parser import LineReader

MULTILINE_KEYS: Final = ("traceback", "exception")  # shown below the line, one per line
_TIME_WIDTH: Final = 27  # an ISO 8601 timestamp with microseconds and its zone
_INDENT: Final = "    "  # a traceback's lines, below their event
_ERROR_LEVELS: Final = frozenset({"error", "critical"})
_ERROR_COLOR: Final = "#d62728"


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a task log as people read it: a worker's event, or the task's own output.

    ``time`` is epoch seconds, to merge logs by: an event's own, an output line's that of
    the event before it in its log (or after it); 0 when none is known (sorts first).
    """

    time: float
    head: str  # the line: ``time task level event key=value ...``, or blank time, task, output
    level: str = ""  # the event's level; "" for a line of the task's own output
    blocks: tuple[str, ...] = ()  # tracebacks, as written: shown indented below the line

    @property
    def text(self) -> str:
        """The line and its indented tracebacks, newline-terminated: what the CLI prints."""
        return self.head + "".join("\n" + _indented(block) for block in self.blocks) + "\n"


def _indented(block: str) -> str:
    return "\n".join(_INDENT + line for line in block.splitlines())


def event_line(task: str, event: dict[str, Any], time: float) -> LogLine:
    """A worker's event as ``time task level event key=value ...``, its tracebacks apart."""
    fields = dict(event)
    time_text, level, name = (str(fields.pop(key, "")) for key in ("timestamp", "level", "event"))
    head = f"{time_text:{_TIME_WIDTH}} {task} {level:7} {name}"
    fields.pop("task", None)
    blocks = tuple(fields.pop(key) for key in MULTILINE_KEYS if isinstance(fields.get(key), str))
    pairs = "".join(f" {key}={field_value(value)}" for key, value in fields.items())
    return LogLine(time, head + pairs, level if isinstance(event.get("level"), str) else "", blocks)


def output_line(task: str, output: bytes, time: float) -> LogLine:
    """A line of the task's own output, under a blank time, after its task."""
    return LogLine(time, f"{'':{_TIME_WIDTH}} {task} {output.decode('utf-8', 'replace')}")


def task_lines(task: str, lines: Iterable[bytes]) -> list[LogLine]:
    """The lines of one task's log (without their newlines) as people read them, in order.

    A line of the task's own output takes the time of the event before it (or of the first
    event after it), so that it stays in place when the logs are merged.
    """
    found: list[LogLine] = []
    last: float | None = None
    undated: list[bytes] = []  # output before the first event
    for line in lines:
        output, event = split_event(line)
        if event is None or output.strip():
            if last is None:
                undated.append(output)
            else:
                found.append(output_line(task, output, last))
        if event is not None:
            stamp = epoch(event.get("timestamp"))
            if last is None:
                found += [output_line(task, text, stamp) for text in undated]
                undated = []
            last = stamp
            found.append(event_line(task, event, stamp))
    found += [output_line(task, text, 0.0) for text in undated]  # no event to date them by
    return found


def read_events(reader: LineReader, paths: Iterable[Path]) -> list[tuple[float, str]]:
    """(time, formatted line) of every complete line added to ``paths`` since the last read.

    The lines of all the files merged in time order; those of one file keep their order.
    """
    events: list[tuple[float, str]] = []
    for path in paths:
        new = reader.read(path)
        if new is None:
            continue
        task = path.name.removesuffix(".log")
        events += [(line.time, line.text) for line in task_lines(task, new.lines)]
    events.sort(key=lambda e: e[0])  # stable: the lines of one task keep their order
    return events


def tail_lines(path: Path, max_bytes: int) -> tuple[list[bytes], bool]:
    """The lines in the last ``max_bytes`` of ``path``, and whether earlier ones were left out.

    A line cut by the limit is left out whole; the last line may lack its newline (output
    being written). Raises FileNotFoundError for a missing file.
    """
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - max_bytes))
        data = f.read()
    cut = size > len(data)
    if cut:
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    return data.splitlines(), cut


def epoch(timestamp: Any) -> float:
    """An ISO 8601 timestamp as epoch seconds (0 if missing or malformed: sorts first)."""
    if not isinstance(timestamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def field_value(value: Any) -> str:
    """A field's value as it follows ``key=``: bare if one word, else as JSON."""
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return value
    return json.dumps(value)


# --- HTML ---------------------------------------------------------------------------------


def matches(line: LogLine, query: str) -> bool:
    """Whether ``query`` occurs in the line or its tracebacks, ignoring case."""
    return query.lower() in line.text.lower()


def lines_html(lines: Sequence[LogLine], query: str = "") -> str:
    """``lines`` as one ``<pre>``: the CLI's text, error events red, tracebacks apart.

    Each line is a ``span.ar-log-line`` (``ar-level-<level>``) and each traceback a
    ``span.ar-traceback`` of real lines below its event; every occurrence of ``query`` is in
    ``<mark>``. The ``<pre>`` never wraps (a long line scrolls sideways), so no word breaks;
    its box shows the last lines first (scroll up for earlier ones).
    """
    parts = []
    for line in lines:
        color = f' style="color:{_ERROR_COLOR}"' if line.level in _ERROR_LEVELS else ""
        level = f" ar-level-{html.escape(line.level)}" if line.level else " ar-output"
        parts.append(f'<span class="ar-log-line{level}"{color}>{_marked(line.head, query)}</span>')
        parts += [
            f'\n<span class="ar-traceback">{_marked(_indented(block), query)}</span>'
            for block in line.blocks
        ]
        parts.append("\n")
    # A column-reverse box scrolls from its end: the last lines, where a failure is, show.
    # The <pre> keeps its height (JupyterLab's own style would make it scroll by itself).
    return (
        '<div class="ar-log-box" style="display:flex;flex-direction:column-reverse;'
        'max-height:24em;overflow:auto"><pre class="ar-log" style="flex:none;overflow:visible;'
        "font-size:11px;line-height:1.35;white-space:pre;word-break:normal;overflow-wrap:normal;"
        f'margin:2px 0">{"".join(parts)}</pre></div>'
    )


def _marked(text: str, query: str) -> str:
    """``text`` as HTML with every occurrence of ``query`` (any case) in ``<mark>``."""
    if not query:
        return html.escape(text)
    low, needle, start, parts = text.lower(), query.lower(), 0, []
    while (found := low.find(needle, start)) >= 0:
        end = found + len(needle)
        parts += [html.escape(text[start:found]), f"<mark>{html.escape(text[found:end])}</mark>"]
        start = end
    parts.append(html.escape(text[start:]))
    return "".join(parts)
