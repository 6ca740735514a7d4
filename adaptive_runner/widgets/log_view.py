"""The panel's log viewer: which logs to show, and a text search over them, as HTML.

The selected learners' latest jobs, or the jobs that failed; plain functions over the
database and the log files, tested without a kernel.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from adaptive_runner.common.vocabulary import NOT_CLEAN
from adaptive_runner.errors import ConfigError
from adaptive_runner.status.snapshot import tail

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.state.queries import Queries

LOG_SOURCES: Final = 3  # logs shown at once
TAIL_BYTES: Final = 8192  # shown of a log without a search
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
    lost, expired, killed), newest first, of the selected learners or, with none selected,
    of the whole run.
    """
    if failed_only:
        holds = db.holds_of(learners or None, NOT_CLEAN, limit)
        return [LogSource(hold.learner, hold.task, hold.outcome) for hold in holds]
    if not learners:
        raise ConfigError("no learners selected: type indices like 3, 7-9, or tick failed jobs")
    return [LogSource(i, db.last_task(i)) for i in learners[:limit]]


def matching_lines(text: str, query: str) -> list[str]:
    """The lines of ``text`` that contain ``query``, ignoring case."""
    needle = query.lower()
    return [line for line in text.splitlines() if needle in line.lower()]


def _marked(line: str, query: str) -> str:
    """``line`` as HTML with every occurrence of ``query`` (any case) in ``<mark>``."""
    low, needle, start, parts = line.lower(), query.lower(), 0, []
    while (found := low.find(needle, start)) >= 0:
        end = found + len(needle)
        parts += [html.escape(line[start:found]), f"<mark>{html.escape(line[found:end])}</mark>"]
        start = end
    parts.append(html.escape(line[start:]))
    return "".join(parts)


def log_html(run_dir: RunDir, sources: Sequence[LogSource], query: str = "") -> str:
    """The sources' logs: their ends, or with ``query`` only the lines that contain it."""
    query = query.strip()
    if not sources:
        return "<p>no failed jobs</p>"
    sections = []
    for source in sources:
        if source.task is None:
            sections.append(f"<p><b>learner {source.learner}</b>: no job has claimed it yet</p>")
            continue
        path = run_dir.task_log(source.task)  # worker events and the job's own output
        ended = f" ({html.escape(source.outcome)})" if source.outcome else ""
        head = (
            f"<p><b>learner {source.learner}</b>, job {html.escape(source.task)}{ended}: "
            f"<code>{html.escape(str(path))}</code>"
        )
        if query:
            lines = matching_lines(tail(path, SEARCH_BYTES), query)
            head += f" · {len(lines)} lines match <mark>{html.escape(query)}</mark>"
            body = "\n".join(_marked(line, query) for line in lines)
        else:
            body = html.escape(tail(path, TAIL_BYTES))
        sections.append(
            f'{head}</p><pre class="ar-log" style="max-height:20em;overflow:auto;'
            f'font-size:11px">{body}</pre>'
        )
    return "".join(sections)
