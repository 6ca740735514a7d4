"""A run's summary without the panel: plain text for terminals, HTML for ``_repr_html_``.

Both say what the panel's head says (state, counts per state, totals, problems) from one
:class:`StatusSnapshot`; neither asks a scheduler. The terminal also gets tables of learners
(``adaptive-runner status``) and the live view's frame (``status --watch``), in plain text.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from adaptive_runner.status.queue import queue_summary
from adaptive_runner.status.snapshot import (
    counts_html,
    last_line,
    run_state,
    stages_html,
    stages_text,
)
from adaptive_runner.status.totals import totals_html, totals_items

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from adaptive_runner.state.database import LearnerRow
    from adaptive_runner.status.snapshot import StatusSnapshot


class InfoText(str):
    """Text that a Python prompt shows as it is (its repr is the text itself)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def info_text(snapshot: StatusSnapshot) -> InfoText:
    """The run's state, counts per state (and stage), totals and problems, one per line."""
    width = max(len(label) for label, _ in totals_items(snapshot.totals))
    lines = [
        f"{snapshot.run_name}: {run_state(snapshot)}",
        *_counts_lines(snapshot),
        *(f"{label:<{width}}  {value}" for label, value in totals_items(snapshot.totals)),
        *_problem_lines(snapshot),
    ]
    return InfoText("\n".join(lines))


def _counts_lines(snapshot: StatusSnapshot) -> list[str]:
    """The learners per state, and a staged goal's stages below."""
    counts = ", ".join(f"{state} {n}" for state, n in snapshot.counts.items())
    stages = stages_text(snapshot)
    return [f"learners: {counts}; total {snapshot.total}", *([stages] if stages else [])]


def _problem_lines(snapshot: StatusSnapshot) -> list[str]:
    return [f"problem: {text}" for text in (*snapshot.dead_managers, *snapshot.problems)]


def learner_table(rows: Iterable[LearnerRow], *, now: float, stages: int = 1) -> str:
    """One line per learner under a header, like squeue: state, task, host, points, loss, ...

    Of a staged goal (``stages`` > 1) also the stages each reached: ``1/2``.
    """
    staged = stages > 1
    header = ("LEARNER", "STATE", *(("STAGES",) if staged else ()), "TASK", "HOST", "NPOINTS")
    header += ("LOSS", "ATTEMPTS", "HEARTBEAT")
    cells = [
        (
            str(row.index),
            str(row.state),
            *((f"{min(row.stage, stages)}/{stages}",) if staged else ()),
            row.task or "-",
            row.host or "-",
            "-" if row.npoints is None else str(row.npoints),
            "-" if row.loss is None else f"{row.loss:.4g}",
            str(row.attempts),
            _age(now - row.last_heartbeat)
            if row.state == "running" and row.last_heartbeat is not None
            else "-",
        )
        for row in rows
    ]
    numeric = {0, 4, 5, 6}
    return _columns(header, cells, numeric={k + staged if k > 1 else k for k in numeric})


def failed_table(rows: Iterable[LearnerRow], last_tasks: Mapping[int, str]) -> str:
    """One line per failed learner: its index, last task, data file and the reason's last line.

    ``last_tasks``: learner -> the task that held it last (``Run.last_tasks``); a failed
    learner no longer names it itself.
    """
    header = ("LEARNER", "LAST TASK", "FNAME", "REASON")
    cells = [
        (str(row.index), last_tasks.get(row.index, "-"), row.fname, last_line(row.error))
        for row in rows
    ]
    return _columns(header, cells, numeric={0})


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """``rows`` under ``header`` in aligned columns; the ``numeric`` ones right-aligned."""
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(r)
        ).rstrip()
        for r in table
    )


def _age(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: how long ago the last heartbeat came."""
    s = max(0, int(seconds))
    if s < 60:  # noqa: PLR2004 - a minute
        return f"{s}s"
    if s < 3600:  # noqa: PLR2004 - an hour
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def watch_text(
    snapshot: StatusSnapshot, failed: Sequence[LearnerRow], last_tasks: Mapping[int, str]
) -> str:
    """One frame of ``adaptive-runner status --watch``: counts, queue, learners, failures.

    ``snapshot`` holds one page of the learners to list (the running ones, as the watch takes
    it: ``View(state="running")``), with its queue view if it was taken with ``looks``;
    ``failed`` is the first failed learners, ``last_tasks`` their last tasks.
    """
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    lines = [
        f"{snapshot.run_name}: {run_state(snapshot)} · {clock}",
        *_counts_lines(snapshot),
    ]
    if snapshot.queue is not None:
        lines.append(f"queue: {queue_summary(snapshot.queue)}")
        lines += [f"cannot read the queue of {error}" for error in snapshot.queue.errors]
    lines += _problem_lines(snapshot)
    which = f"{snapshot.view.state} learners" if snapshot.view.state else "learners"
    lines += _section(
        which,
        learner_table(snapshot.rows, now=snapshot.taken_at, stages=len(snapshot.stages)),
        snapshot.n_matching,
        len(snapshot.rows),
    )
    n_failed = snapshot.counts["failed"]
    lines += _section("failed learners", failed_table(failed, last_tasks), n_failed, len(failed))
    return "\n".join(lines)


def _section(title: str, table: str, n: int, shown: int) -> list[str]:
    """A blank line, ``title (n):`` and the table (nothing but the title when there is none)."""
    if not n:
        return ["", f"{title}: none"]
    more = [f"… and {n - shown} more"] if n > shown else []
    return ["", f"{title} ({n}):", table, *more]


def summary_html(snapshot: StatusSnapshot) -> str:
    """The same as :func:`info_text`, as HTML: the panel's chips, stages and totals, and when.

    It stays in the page as it was taken: "as of" says when.
    """
    problems = "".join(
        f'<div style="color:#d62728">{html.escape(text)}</div>'
        for text in (*snapshot.dead_managers, *snapshot.problems)
    )
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    return (
        f'<div class="ar-summary"><b>{html.escape(snapshot.run_name)}</b> · '
        f"{run_state(snapshot)} · as of {clock}{counts_html(snapshot)}{stages_html(snapshot)}"
        f"{totals_html(snapshot.totals)}{problems}</div>"
    )
