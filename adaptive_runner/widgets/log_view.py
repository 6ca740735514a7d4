"""The panel's log viewer: which logs to show, and a text search over them, as HTML.

The selected learners' latest jobs, or the jobs that failed (failed first); plain functions
over the database and the log files, tested without a kernel. A log is shown as
``adaptive-runner logs`` prints it (``status/log_lines.py``): one line per event, its
traceback below it on lines of its own.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from adaptive_runner.common.vocabulary import NOT_CLEAN, Outcome
from adaptive_runner.errors import ConfigError
from adaptive_runner.status.log_lines import lines_html, matches, tail_lines, task_lines

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.state.queries import Queries

LOG_SOURCES: Final = 3  # logs shown at once
TAIL_BYTES: Final = 32768  # shown of a log without a search (a traceback's line is ~3 kB)
SEARCH_BYTES: Final = 2**20  # searched of a log (its end)


@dataclass(frozen=True, slots=True)
class LogSource:
    """A task's log to show, for which learner; ``outcome`` how that hold ended (None: open)."""

    learner: int
    task: str | None  # None: no task has claimed the learner yet
    outcome: str | None = None


def log_sources(
    db: Queries, learners: Sequence[int], *, failed_only: bool, limit: int = LOG_SOURCES
) -> list[LogSource]:
    """The logs to show: the selected learners' latest tasks, or the latest failed jobs.

    With ``failed_only`` these are the holds that did not end cleanly (``NOT_CLEAN``: failed,
    lost, expired, killed) of the selected learners or, with none selected, of the whole
    run: those whose learner raised (failed) first, then the others, each newest first.
    """
    if failed_only:
        holds = db.holds_of(learners or None, NOT_CLEAN, limit, first=Outcome.FAILED)
        return [LogSource(hold.learner, hold.task, hold.outcome) for hold in holds]
    if not learners:
        raise ConfigError("no learners selected: type indices like 3, 7-9, or tick failed jobs")
    return [LogSource(i, db.last_task(i)) for i in learners[:limit]]


def log_html(run_dir: RunDir, sources: Sequence[LogSource], query: str = "") -> str:
    """The sources' logs: their ends, or with ``query`` only the lines that contain it."""
    query = query.strip()
    if not sources:
        return "<p>no failed jobs</p>"
    return "".join(_source_html(run_dir, source, query) for source in sources)


def _source_html(run_dir: RunDir, source: LogSource, query: str) -> str:
    if source.task is None:
        return f"<p><b>learner {source.learner}</b>: no job has claimed it yet</p>"
    path = run_dir.task_log(source.task)  # worker events and the job's own output
    ended = f" ({html.escape(source.outcome)})" if source.outcome else ""
    head = (
        f'<p class="ar-log-head"><b>learner {source.learner}</b>, job '
        f"{html.escape(source.task)}{ended}: <code>{html.escape(str(path))}</code>"
    )
    try:
        raw, cut = tail_lines(path, SEARCH_BYTES if query else TAIL_BYTES)
    except FileNotFoundError:
        return f"{head} · does not exist yet</p>"
    lines = task_lines(source.task, raw)
    if query:
        lines = [line for line in lines if matches(line, query)]
        head += f" · lines with <mark>{html.escape(query)}</mark>: {len(lines)}"
    elif not lines:
        return f"{head} · empty</p>"
    elif cut:
        head += " · its last lines"
    return f"{head}</p>{lines_html(lines, query)}"
