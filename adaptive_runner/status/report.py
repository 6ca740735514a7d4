"""A run's summary without the panel: plain text for terminals, HTML for ``_repr_html_``.

Both say what the panel's head says (state, counts per state, totals, problems) from one
:class:`StatusSnapshot`; neither asks a scheduler.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from adaptive_runner.status.snapshot import counts_html, run_state
from adaptive_runner.status.totals import totals_html, totals_items

if TYPE_CHECKING:
    from adaptive_runner.status.snapshot import StatusSnapshot


class InfoText(str):
    """Text that a Python prompt shows as it is (its repr is the text itself)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def info_text(snapshot: StatusSnapshot) -> InfoText:
    """The run's state, counts per state, totals and problems, one per line."""
    counts = ", ".join(f"{state} {n}" for state, n in snapshot.counts.items())
    width = max(len(label) for label, _ in totals_items(snapshot.totals))
    lines = [
        f"{snapshot.run_name}: {run_state(snapshot)}",
        f"learners: {counts}; total {snapshot.total}",
        *(f"{label:<{width}}  {value}" for label, value in totals_items(snapshot.totals)),
        *(f"problem: {text}" for text in (*snapshot.dead_managers, *snapshot.problems)),
    ]
    return InfoText("\n".join(lines))


def summary_html(snapshot: StatusSnapshot) -> str:
    """The same as :func:`info_text`, as HTML: the panel's chips and totals row, and when.

    It stays in the page as it was taken: "as of" says when.
    """
    problems = "".join(
        f'<div style="color:#d62728">{html.escape(text)}</div>'
        for text in (*snapshot.dead_managers, *snapshot.problems)
    )
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    return (
        f'<div class="ar-summary"><b>{html.escape(snapshot.run_name)}</b> · '
        f"{run_state(snapshot)} · as of {clock}{counts_html(snapshot)}"
        f"{totals_html(snapshot.totals)}{problems}</div>"
    )
