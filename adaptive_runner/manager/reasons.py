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
from typing import TYPE_CHECKING

from adaptive_runner.common.vocabulary import LEVELS, read_worker_ended
from adaptive_runner.status.log_parser import ERROR_LINE, MAX_LINE_CHARS, split_event

if TYPE_CHECKING:
    from pathlib import Path

MAX_QUOTED_LINES = 3  # of a task's output, in a reason
MAX_READ_BYTES = 1 << 16  # a start failure prints little; never read a huge log whole
_ERROR_LEVELS = LEVELS[LEVELS.index("error") :]  # error and critical


def output_errors(log_file: Path, *, limit: int = MAX_QUOTED_LINES) -> list[str]:
    """The first error lines in a task's log: its own output, then the worker's error events.

    Output lines that look like errors (see ``log_parser.ERROR_LINE``) come first; when there
    are none, any output lines; then the message of each worker event logged at error level
    (e.g. ``manager_unreachable``). [] when the file does not exist or says nothing.
    """
    try:
        with log_file.open("rb") as f:
            data = f.read(MAX_READ_BYTES)
    except (FileNotFoundError, IsADirectoryError):
        return []
    output: list[str] = []
    events: list[str] = []
    for raw in data.splitlines():
        text, event = split_event(raw)
        line = text.decode("utf-8", errors="replace").strip()
        if line:
            output.append(line[:MAX_LINE_CHARS])
        if event is not None and event.get("level") in _ERROR_LEVELS:
            events.append(_event_text(event))
    errors = [line for line in output if ERROR_LINE.search(line.encode())]
    return ((errors or output) + events)[:limit]


def _event_text(event: dict[str, object]) -> str:
    """A worker error event in one line: its name and the last line of its exception."""
    exception = str(event.get("exception") or "").strip().splitlines()
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
