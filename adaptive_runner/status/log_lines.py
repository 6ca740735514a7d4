"""Task log lines as people read them: ``time task level event key=value ...``.

The worker writes JSON lines (task_log.py) into the same file as the task's own output.
This module turns them back into one line per event, with a traceback indented below it,
and dates the task's output lines by the events around them, so that the logs of several
tasks merge in time order. ``adaptive-runner logs`` prints these lines.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from adaptive_runner.status.log_parser import split_event

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from adaptive_runner.status.log_parser import LineReader

MULTILINE_KEYS: Final = ("traceback", "exception")  # shown below the line, one per line


def read_events(reader: LineReader, paths: Iterable[Path]) -> list[tuple[float, str]]:
    """(time, formatted line) of every complete line added to ``paths`` since the last read.

    A line of the task's own output takes the time of the event before it in its log (or of
    the first event after it), so that it stays in place when the logs are merged.
    """
    events: list[tuple[float, str]] = []
    for path in paths:
        new = reader.read(path)
        if new is None:
            continue
        task = path.name.removesuffix(".log")
        last: float | None = None
        undated: list[str] = []  # output before the first event of this read
        for line in new.lines:
            output, event = split_event(line)
            if event is None or output.strip():
                text = f"{'':27} {task} {output.decode('utf-8', 'replace')}\n"
                if last is None:
                    undated.append(text)
                else:
                    events.append((last, text))
            if event is not None:
                stamp = epoch(event.get("timestamp"))
                if last is None:
                    events += [(stamp, text) for text in undated]
                    undated = []
                last = stamp
                events.append((stamp, format_event(task, event)))
        events += [(0.0, text) for text in undated]  # no event to date them by: first
    events.sort(key=lambda e: e[0])  # stable: the lines of one task keep their order
    return events


def epoch(timestamp: Any) -> float:
    """An ISO 8601 timestamp as epoch seconds (0 if missing or malformed: sorts first)."""
    if not isinstance(timestamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def format_event(task: str, event: dict[str, Any]) -> str:
    """``time task level event key=value ...``, a traceback indented below."""
    head = (
        f"{event.pop('timestamp', ''):27} {task} {event.pop('level', ''):7} "
        f"{event.pop('event', '')}"
    )
    event.pop("task", None)
    blocks = [event.pop(key) for key in MULTILINE_KEYS if isinstance(event.get(key), str)]
    pairs = "".join(f" {key}={field_value(value)}" for key, value in event.items())
    tail = "".join("\n" + "\n".join("    " + x for x in block.splitlines()) for block in blocks)
    return head + pairs + tail + "\n"


def field_value(value: Any) -> str:
    """A field's value as it follows ``key=``: bare if one word, else as JSON."""
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return value
    return json.dumps(value)
