"""What the status panel shows, read from state.sqlite and rendered as HTML.

No ipywidgets here: the snapshot and its HTML are plain data, tested and benchmarked without a
kernel. A snapshot holds the counts per state, for a staged goal the learners that reached
each stage, the totals (totals.py), one page of learners and, for a panel, the queue view
(queue.py); paging or sorting takes a new snapshot (sqlite sorts; 100,000 learners never
become 100,000 Python objects).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers import bound_schedulers
from adaptive_runner.state.database import SORT_KEYS, Database, LearnerRow, LearnerState
from adaptive_runner.status.totals import (
    Totals,
    data_size,
    duration,
    idle_core_hours,
    queue_waits,
    read_totals,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from adaptive_runner.status.queue import Looks, QueueView

PAGE_SIZE: Final = 50
STATE_COLORS: Final = {
    LearnerState.WAITING: "#7f7f7f",
    LearnerState.RUNNING: "#1f77b4",
    LearnerState.DONE: "#2ca02c",
    LearnerState.FAILED: "#d62728",
    LearnerState.CANCELLED: "#ff7f0e",
}
_ERROR_CHARS: Final = 80  # the error column shows this much of the last line; hover for more
_FINAL: Final = (LearnerState.DONE, LearnerState.FAILED, LearnerState.CANCELLED)
_COLUMNS: Final = (
    "learner",
    "fname",
    "state",
    "job",
    "host",
    "points",
    "loss",
    "attempts",
    "failures",
    "heartbeat",
    "error",
)


@dataclass(frozen=True, slots=True)
class View:
    """Which page of the learner table to show, in which order, of which state (None: all)."""

    sort_by: str = "index"
    descending: bool = False
    state: LearnerState | None = None
    page: int = 0
    page_size: int = PAGE_SIZE

    def __post_init__(self) -> None:
        """Refuse unknown sort keys and empty pages."""
        if self.sort_by not in SORT_KEYS:
            raise ConfigError(
                f"sort_by must be one of {', '.join(SORT_KEYS)}, got {self.sort_by!r}"
            )
        if self.page < 0 or self.page_size <= 0:
            raise ConfigError(
                f"page must be >= 0 and page_size > 0, got {self.page}, {self.page_size}"
            )


@dataclass(frozen=True, slots=True)
class StageProgress:
    """One stage of a staged goal: its goal in words and how many learners reached it."""

    goal: str  # "npoints >= 25", as run.json names the stages
    reached: int  # learners that reached this stage (done ones reached every stage)


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """The run as the panel shows it at ``taken_at``: counts, one page of learners, managers."""

    run_name: str
    taken_at: float
    counts: dict[str, int]
    rows: tuple[LearnerRow, ...]
    view: View
    n_matching: int  # learners that pass the view's state filter
    managers_running: bool | None  # None: not known here (a Run handle, no managers of its own)
    totals: Totals
    manager_error: str | None = None
    problems: tuple[str, ...] = ()  # why jobs do not start or submissions fail (Run.problems)
    dead_managers: tuple[str, ...] = ()  # "job manager stopped: <error>": ended on an error
    queue: QueueView | None = None  # the run's active tasks, when asked for (a panel's looks)
    stages: tuple[StageProgress, ...] = ()  # a staged goal's stages, in order; () for a plain goal

    @classmethod
    def take(
        cls,
        run_dir: RunDir | str | os.PathLike[str],
        view: View | None = None,
        *,
        managers_running: bool | None,
        manager_error: str | None = None,
        dead_managers: Sequence[str] = (),
        looks: Looks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> StatusSnapshot:
        """Read the counts and one page of learners from the run's state.sqlite.

        Parameters
        ----------
        run_dir
            The run; its database works whether the managers run or not.
        view
            The page, order and state filter; a page past the end shows the last page.
        managers_running
            Whether the job manager of this run is alive (the panel says so); None where
            that is not known (:class:`~adaptive_runner.Run` serves no managers).
        manager_error
            The job manager's last round error, if its last round failed.
        dead_managers
            Each manager whose thread ended on an error, in words
            (``RunManager.dead_managers()``): the run does not go on until it is resumed.
        looks
            A panel's throttled looks at the schedulers' queues and the data files: with
            them the snapshot has a queue view, and the data size (which says its age) and
            queue waits of a run not finished yet may be a few seconds old; without, no
            queue view and every data file is stat'ed now.
        clock
            Wall clock for heartbeat ages, injectable for tests.

        """
        view = view or View()
        run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        config = run_dir.read_config()
        schedulers = (
            bound_schedulers(config.groups, run_dir.jobs_dir) if looks is None else looks.schedulers
        )
        now = clock()
        with Database.open(run_dir.database, read_only=True) as db:
            counts = db.counts()
            n_matching = counts[view.state] if view.state else sum(counts.values())
            last_page = max(0, (n_matching - 1) // view.page_size)
            if view.page > last_page:
                view = View(view.sort_by, view.descending, view.state, last_page, view.page_size)
            rows = db.learner_page(
                sort_by=view.sort_by,
                descending=view.descending,
                state=view.state,
                offset=view.page * view.page_size,
                limit=view.page_size,
            )
            problems = tuple(m for state in db.group_states() for m in state.messages())
            stages = stage_progress(config.stages, db.stage_counts()) if config.stages else ()
            finished = sum(counts[state] for state in _FINAL) == sum(counts.values())
            # A finished run's totals are its last word (the auto-refresh stops): never cached.
            cached = None if finished else looks

            def waits() -> list[float]:
                return queue_waits(db.first_claims(), db.array_submissions(), schedulers)

            totals = read_totals(
                db,
                now=now,
                finished=finished,
                waits=waits() if cached is None else cached.queue_waits(waits),
                data=data_size(db.fnames()) if cached is None else cached.data_size(db.fnames),
                idle_core_hours=idle_core_hours(
                    db.allocation_spans(now), db.array_groups(), schedulers
                ),
            )
            if looks is not None:
                arrays = {g: db.active_arrays(g) for g in range(len(schedulers))}
                holders = db.running_tasks()
        return cls(
            run_name=run_dir.path.name,
            taken_at=now,
            counts=counts,
            rows=tuple(rows),
            view=view,
            managers_running=managers_running,
            manager_error=manager_error,
            n_matching=n_matching,
            totals=totals,
            problems=problems,
            dead_managers=tuple(dead_managers),
            queue=None if looks is None else looks.queue(arrays, holders),
            stages=stages,
        )

    @property
    def total(self) -> int:
        """The number of learners in the run."""
        return sum(self.counts.values())

    @property
    def n_final(self) -> int:
        """Learners that are done, failed or cancelled."""
        return sum(self.counts[state] for state in _FINAL)

    @property
    def finished(self) -> bool:
        """Whether no learner is waiting or running."""
        return self.n_final == self.total

    @property
    def n_pages(self) -> int:
        """Pages of the (filtered) learner table; at least one."""
        return max(1, -(-self.n_matching // self.view.page_size))

    def heartbeat_age(self, row: LearnerRow) -> float | None:
        """Seconds since a running learner's job last reported; None when not running."""
        if row.state != LearnerState.RUNNING or row.last_heartbeat is None:
            return None
        return max(0.0, self.taken_at - row.last_heartbeat)


def stage_progress(goals: Sequence[str], counts: Mapping[int, int]) -> tuple[StageProgress, ...]:
    """Each stage of ``goals`` with the learners that reached it, from ``Queries.stage_counts``.

    A learner that reached k stages reached each of the first k.
    """
    return tuple(
        StageProgress(goal, sum(n for reached, n in counts.items() if reached >= k))
        for k, goal in enumerate(goals, start=1)
    )


def stages_text(snapshot: StatusSnapshot) -> str:
    """``stage 1 (npoints >= 25): 48/48 · stage 2 (npoints >= 200): 12/48``; "" for one stage.

    Out of every learner of the run: failed and cancelled ones count too (they reached
    what they reached), so a stage reads complete only when every learner reached it.
    """
    return " · ".join(
        f"stage {k} ({stage.goal}): {stage.reached}/{snapshot.total}"
        for k, stage in enumerate(snapshot.stages, start=1)
    )


def parse_selection(text: str, n_learners: int) -> list[int]:
    """Learner indices from ``"3, 7-9"`` (commas or spaces, inclusive ranges), in order given.

    Raises ConfigError naming the bad part, so the panel can show it.
    """
    picked: dict[int, None] = {}  # an ordered set: "0-99999" stays linear
    for part in text.replace(",", " ").split():
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ConfigError(f"{part!r} is not a learner index or range like 7-9")
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo or hi >= n_learners:
            raise ConfigError(f"{part!r}: learners are numbered 0..{n_learners - 1}")
        picked.update(dict.fromkeys(range(lo, hi + 1)))
    if not picked:
        raise ConfigError("no learners selected: type indices like 3, 7-9")
    return list(picked)


def format_selection(indices: Iterable[int]) -> str:
    """``0-2, 6, 7`` for 0, 1, 2, 6, 7: what :func:`parse_selection` reads.

    Runs of three or more become a range, so 10,000 learners in a row stay one item.
    """
    ordered = sorted(set(indices))
    parts: list[str] = []
    start = 0
    for end, index in enumerate(ordered):
        if end + 1 < len(ordered) and ordered[end + 1] == index + 1:
            continue  # the run goes on
        first = ordered[start]
        if index - first >= 2:  # noqa: PLR2004 - three or more in a row
            parts.append(f"{first}-{index}")
        else:
            parts += map(str, ordered[start : end + 1])
        start = end + 1
    return ", ".join(parts)


def learners_text(indices: Collection[int]) -> str:
    """``learner 3`` or ``learners 0-2, 6, 7``."""
    return f"learner{'s' if len(indices) != 1 else ''} {format_selection(indices)}"


def last_line(error: str | None) -> str:
    """The line of a reason or traceback that says what went wrong (its last non-blank one)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no reason recorded)"


# --- HTML -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _chip(state: LearnerState, text: str) -> str:
    color = STATE_COLORS[state]
    return (
        f'<span class="ar-state ar-{state.value}" style="background:{color};color:white;'
        f'padding:1px 6px;border-radius:8px;margin-right:4px">{_e(text)}</span>'
    )


def counts_html(snapshot: StatusSnapshot) -> str:
    """One coloured chip per state: ``running 3``, ``done 7``, ..."""
    chips = "".join(
        _chip(state, f"{state.value} {snapshot.counts[state]}") for state in LearnerState
    )
    return f'<div class="ar-counts-row">{chips} <b>total {snapshot.total}</b></div>'


def finished_text(snapshot: StatusSnapshot) -> str:
    """``1200 of 2000 finished: 1084 done · 0 failed · 116 cancelled`` (all: ``2000 finished``).

    Finished is done, failed or cancelled: each is named, so that a run cancelled half-way
    never reads as complete.
    """
    of = "" if snapshot.finished else f" of {snapshot.total}"
    parts = " · ".join(f"{snapshot.counts[state]} {state.value}" for state in _FINAL)
    return f"{snapshot.n_final}{of} finished: {parts}"


def progress_html(snapshot: StatusSnapshot) -> str:
    """A bar with a part per final state in its colour, and :func:`finished_text` beside it.

    Done, failed and cancelled each fill their share: 10 failed of 20 fill half the bar
    red, not all of it. A state with any learner shows at least a sliver (2 px).
    """
    total = max(1, snapshot.total)
    parts = "".join(
        f'<div class="ar-progress-{state.value}" title="{snapshot.counts[state]} {state.value}" '
        f'style="width:{100 * snapshot.counts[state] / total:.4g}%;min-width:2px;'
        f'background:{STATE_COLORS[state]}"></div>'
        for state in _FINAL
        if snapshot.counts[state]
    )
    return (
        '<div class="ar-progress-row" style="display:flex;align-items:center;gap:8px">'
        '<div class="ar-progress" style="display:flex;width:300px;height:14px;'
        f'background:#e6e6e6;border-radius:3px;overflow:hidden">{parts}</div>'
        f'<span class="ar-progress-label">{_e(finished_text(snapshot))}</span></div>'
    )


def stages_html(snapshot: StatusSnapshot) -> str:
    """Each stage of a staged goal with a bar of the learners that reached it; "" for one."""
    total = max(1, snapshot.total)
    parts = "".join(
        f'<span class="ar-stage" style="display:inline-flex;align-items:center;gap:4px;'
        f'margin-right:12px">stage {k} ({_e(stage.goal)})<span style="display:inline-block;'
        f'width:80px;height:8px;background:#e6e6e6;border-radius:2px;overflow:hidden">'
        f'<span style="display:block;height:100%;width:{100 * stage.reached / total:.4g}%;'
        f'background:{STATE_COLORS[LearnerState.DONE]}"></span></span>'
        f"{stage.reached}/{snapshot.total}</span>"
        for k, stage in enumerate(snapshot.stages, start=1)
    )
    return f'<div class="ar-stages-row">{parts}</div>' if parts else ""


def run_state(snapshot: StatusSnapshot) -> str:
    """``managers running``, ``run finished``, ``managers stopped`` or ``unfinished``."""
    if snapshot.managers_running:
        return "managers running"
    if snapshot.finished:
        return "run finished"
    return "unfinished" if snapshot.managers_running is None else "managers stopped"


def status_html(snapshot: StatusSnapshot) -> str:
    """The run name and whether its managers run (or the state is only the last known one)."""
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    state = run_state(snapshot)
    if snapshot.managers_running:
        state = f'<span style="color:#2ca02c">{state}</span>'
    elif snapshot.managers_running is False and not snapshot.finished:
        state = (
            f'<span style="color:#d62728">{state}</span>: showing the last known state '
            "from state.sqlite; <code>RunManager.resume(run_dir)</code> continues the run"
        )
    text = f"<b>{_e(snapshot.run_name)}</b> · {state} · updated {clock}"
    for dead in snapshot.dead_managers:
        text += f'<br><span class="ar-dead" style="color:#d62728"><b>{_e(dead)}</b></span>'
    if snapshot.manager_error:
        text += (
            f'<br><span style="color:#d62728">last job manager round failed: '
            f"{_e(snapshot.manager_error)}</span>"
        )
    for problem in snapshot.problems:
        text += f'<br><span class="ar-problem" style="color:#d62728">{_e(problem)}</span>'
    return text


def _error_cell(error: str | None) -> str:
    if not error:
        return ""
    short = last_line(error)
    short = short if len(short) <= _ERROR_CHARS else short[: _ERROR_CHARS - 1] + "…"
    return f'<span title="{_e(error[-2000:])}">{_e(short)}</span>'


def _cells(snapshot: StatusSnapshot, row: LearnerRow) -> list[str]:
    age = snapshot.heartbeat_age(row)
    n = len(snapshot.stages)
    return [
        str(row.index),
        f'<span title="{_e(row.fname)}">{_e(Path(row.fname).name)}</span>',
        _chip(row.state, row.state.value),
        *([f"{min(row.stage, n)}/{n}"] if n else []),
        _e(row.task or ""),
        _e(row.host or ""),
        "" if row.npoints is None else str(row.npoints),
        "" if row.loss is None else f"{row.loss:.4g}",
        str(row.attempts),
        str(row.failures),
        "" if age is None else duration(age),
        _error_cell(row.error),
    ]


def table_html(snapshot: StatusSnapshot) -> str:
    """The snapshot's page of learners as an HTML table."""
    columns = _COLUMNS[:3] + (("stages",) if snapshot.stages else ()) + _COLUMNS[3:]
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{c}</th>' for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f'<td style="padding:2px 8px">{cell}</td>' for cell in _cells(snapshot, row))
        + "</tr>"
        for row in snapshot.rows
    )
    if not snapshot.rows:
        body = f'<tr><td colspan="{len(columns)}">no learners in this view</td></tr>'
    return (
        '<table class="ar-table" style="border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
