"""Why a task never started or how it ended, read from its output and put into a reason.

A task that ends without ever claiming a learner never ran the worker's code far enough to
say anything: a wrong ``python``, a failing ``module load`` or ``conda activate``, a home
directory missing on the node, a manager address the node cannot reach. What it printed
before it died is in its log (the job script sends the task's stdout and stderr there), and
that is what the user needs to read. The job manager quotes it in the failed learners'
reason (see job_manager.py). A packed worker that died while its allocation runs said
nothing either: its packer wrote how it ended into the same output (:func:`worker_ending`),
which the job manager puts into its learner's lost reason.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.vocabulary import LEVELS, Event, read_worker_ended
from adaptive_runner.status.log_parser import ERROR_LINE, MAX_LINE_CHARS, split_event

if TYPE_CHECKING:
    from pathlib import Path

MAX_QUOTED_LINES = 3  # of a task's output, in a reason
MAX_READ_BYTES = 1 << 16  # of a log's start or end: never read a huge log whole
_ERROR_LEVELS = LEVELS[LEVELS.index("error") :]  # error and critical


def output_errors(log_file: Path, *, limit: int = MAX_QUOTED_LINES) -> list[str]:
    """The first error lines in a task's log: its own output, then the worker's error events.

    Output lines that look like errors (see ``log_parser.ERROR_LINE``) come first; when there
    are none, any output lines; then the message of each worker event logged at error level
    (e.g. ``manager_unreachable``). [] when the file does not exist or says nothing.
    """
    output: list[str] = []
    events: list[str] = []
    for text, event in _lines(_head(log_file)):
        line = text.decode("utf-8", errors="replace").strip()
        if line:
            output.append(line[:MAX_LINE_CHARS])
        if event is not None and event.get("level") in _ERROR_LEVELS:
            events.append(_event_text(event))
    errors = [line for line in output if ERROR_LINE.search(line.encode())]
    return ((errors or output) + events)[:limit]


def unresolvable(log_file: Path) -> str | None:
    """What a task said when it could not resolve the manager's host; None if it did not.

    The worker checks the name before its first claim and ends at once
    (``manager_unresolvable``): no later array of the group can do better, so the job manager
    fails the group's waiting learners with it at the first such start failure.
    """
    for _, event in _lines(_head(log_file)):
        if event is not None and event.get("event") == Event.MANAGER_UNRESOLVABLE:
            return _event_text(event)
    return None


def last_event(log_file: Path, *, now: float) -> str | None:
    """The last worker event in a task's log, in words, with its age at ``now``; None: none.

    Quoted in the reason of a lease that expired: the task went silent after it, e.g.
    ``initializer_started initializer='initializers[0] (load_tables)'`` for an initializer
    that hangs.
    """
    events = [event for _, event in _lines(log_tail(log_file)) if event is not None]
    if not events:
        return None
    event = events[-1]
    fields = " ".join(
        f"{key}={value!r}" for key, value in event.items() if key not in _CONTEXT_KEYS
    )
    try:
        age = f", {now - datetime.fromisoformat(str(event['timestamp'])).timestamp():.0f} s before"
    except (KeyError, ValueError):
        age = ""
    text = f"{event.get('event')} {fields}".strip()[:MAX_LINE_CHARS]
    return f"the task's last log line{age}: {text}"


_CONTEXT_KEYS = frozenset({"task", "learner", "event", "level", "timestamp"})


def log_tail(log_file: Path) -> bytes:
    """The end of a task's log, where its last lines are; b"" if it cannot be read."""
    try:
        with log_file.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - MAX_READ_BYTES))
            return f.read()
    except OSError:
        return b""


def _head(log_file: Path) -> bytes:
    """The start of a task's log (a start failure prints little); b"" if there is none."""
    try:
        with log_file.open("rb") as f:
            return f.read(MAX_READ_BYTES)
    except OSError:
        return b""


def _lines(data: bytes) -> list[tuple[bytes, dict[str, Any] | None]]:
    """Each line of ``data`` split into the task's own output and the worker's event."""
    return [split_event(raw) for raw in data.splitlines()]


def _event_text(event: dict[str, object]) -> str:
    """A worker error event in one line: its name and the last line of its exception."""
    exception = str(event.get("exception") or event.get("error") or "").strip().splitlines()
    detail = exception[-1] if exception else json.dumps(event, default=str)[:200]
    return f"{event.get('event')}: {detail}"[:MAX_LINE_CHARS]


def start_failure_reason(
    *, group: int, in_a_row: int, task: str | None, end: str | None, lines: list[str]
) -> str:
    """The reason given for one array of ``group`` whose tasks all ended without a claim.

    Parameters
    ----------
    group
        The resource group (its scheduler options made the job script).
    in_a_row
        How many arrays of the group in a row ended so, this one included.
    task
        The task whose output is quoted (None when the scheduler showed none).
    end
        How that task ended, as the scheduler tells it (e.g. "FAILED, exit code 127").
    lines
        Its first error lines (:func:`output_errors`), or a claim-timeout explanation.

    """
    head = (
        f"jobs of group {group} cannot start: {in_a_row} array(s) in a row ended without any "
        "task reaching the database manager"
    )
    if task is None:
        return f"{head}; the scheduler shows none of their tasks any more"
    said = " | ".join(lines) if lines else "(it printed nothing)"
    how = f" ({end})" if end else ""
    return f"{head}; task {task}{how} said: {said}"


def unreachable_reason(task: str, *, url: str, waited_s: float) -> str:
    """What to tell the user about a task that ran but never claimed within claim_timeout."""
    return (
        f"task {task} ran for {waited_s:.0f} s without reaching the database manager at {url}: "
        "the compute nodes cannot connect to that address (or the job hangs before Python "
        "starts); pass RunManager(..., host='<an address of this machine the nodes reach>') "
        "or interface='<e.g. ib0>', or raise claim_timeout if start-up is just slow"
    )


def worker_ending(output: str, rank: int) -> str | None:
    """How worker ``rank`` ended, as its packer wrote it into the allocation's output.

    None when it ended with 0 or the packer has not written it (it runs, or the packer was
    killed with it).
    """
    for line in reversed(output.splitlines()):
        ending = read_worker_ended(line, rank)
        if ending is not None:
            return ending
    return None
