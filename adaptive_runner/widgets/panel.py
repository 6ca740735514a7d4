"""The ipywidgets status panel of a run (``RunManager.info()``), refreshed from a thread.

The refresh thread reads state.sqlite, the schedulers' queues and the data files' sizes
(those two throttled, see queue.py) and sets widget values, so the kernel stays free (and the
panel keeps moving while a cell blocks in ``rm.wait()``). A plot is drawn in a thread of its
own, only when the learner's data file changed; the overview of the sweep (overview.py) is
drawn again with each refresh while it is shown, and a click on one of its cells plots that
learner. Buttons act through the run manager: ``cancel``, ``load_learners``; logs are read
from the run directory.
"""

from __future__ import annotations

import dataclasses
import html
import threading
from typing import TYPE_CHECKING, Any, Final

import ipywidgets as w

from adaptive_runner.errors import ConfigError
from adaptive_runner.state.database import SORT_KEYS, Database, LearnerState
from adaptive_runner.status.queue import Looks, queue_html
from adaptive_runner.status.snapshot import (
    StatusSnapshot,
    View,
    counts_html,
    parse_selection,
    progress_html,
    stages_html,
    status_html,
    table_html,
)
from adaptive_runner.status.totals import totals_html
from adaptive_runner.widgets.log_view import LogSource, log_html, log_sources
from adaptive_runner.widgets.overview import SweepOverview
from adaptive_runner.widgets.plot import LearnerPicture, LearnerPlot

if TYPE_CHECKING:
    from collections.abc import Callable

    from adaptive_runner.manager.run_manager import RunManager

_SORT_LABELS: Final = {
    "index": "learner",
    "state": "state",
    "fname": "fname",
    "task": "job",
    "host": "host",
    "npoints": "points",
    "loss": "loss",
    "attempts": "attempts",
    "failures": "failures",
    "heartbeat_age": "heartbeat age",
}
_HIDDEN: Final = "none"


class StatusPanel:
    """Counts, totals, progress, the queue, a learner table, logs, a plot, the sweep's overview.

    Display it as a cell's last expression; ``widget`` is the ipywidgets box (to embed it
    elsewhere) and ``learners`` holds what "Load learners" loaded.

    Parameters
    ----------
    run_manager
        The run to show and steer.
    refresh_interval_s
        Seconds between two automatic refreshes.
    auto_refresh
        Start refreshing automatically; it stops by itself once the run is finished.

    """

    def __init__(  # noqa: PLR0915 - one statement per widget, in the order of the page
        self, run_manager: RunManager, *, refresh_interval_s: float = 2.0, auto_refresh: bool = True
    ) -> None:
        self.rm = run_manager
        self.refresh_interval_s = refresh_interval_s
        self.learners: list[Any] | None = None
        self._view = View()
        self._lock = threading.RLock()  # refreshes from the thread and from clicks take turns
        self._stop: threading.Event | None = None
        self._looks = Looks(run_manager.bound_schedulers())
        self._plotter = LearnerPlot(run_manager)
        self._plot_learner: int | None = None
        self._plot_thread: threading.Thread | None = None
        self._log_sources: list[LogSource] = []

        self.status = w.HTML()
        self.counts = w.HTML()
        self.counts.add_class("ar-counts")
        self.totals = w.HTML()
        self.totals.add_class("ar-totals")
        self.queue = w.HTML()
        self.queue.add_class("ar-queue")
        self.progress = w.HTML()  # done, failed and cancelled in their colours, and in words
        self.progress.add_class("ar-progress-box")
        self.stages = w.HTML()  # a staged goal: the learners that reached each stage
        self.stages.add_class("ar-stages")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.auto_button = w.ToggleButton(description="Auto-refresh", icon="clock-o")
        self.cancel_run_button = w.Button(description="Cancel run", button_style="danger")
        self.confirm_button = w.Button(description="Yes, cancel the run", button_style="danger")
        self.keep_button = w.Button(description="No, keep it running")
        self.confirm_box = w.HBox(
            [
                w.HTML("Cancel every unfinished learner and kill its job?&nbsp;"),
                self.confirm_button,
                self.keep_button,
            ],
            layout=w.Layout(display=_HIDDEN),
        )
        self.selection = w.Text(placeholder="e.g. 3, 7-9", description="learners")
        self.cancel_selected_button = w.Button(description="Cancel selected")
        self.cancel_selected_button.button_style = "warning"
        self.log_button = w.Button(description="Show log")
        self.failed_only = w.Checkbox(description="failed jobs only", indent=False)
        self.log_search = w.Text(placeholder="search the logs", description="search")
        self.hide_log_button = w.Button(description="Hide log", layout=w.Layout(display=_HIDDEN))
        self.plot_button = w.Button(description="Plot", icon="line-chart")
        self.hide_plot_button = w.Button(description="Hide plot")
        self.plot_note = w.HTML()
        self.plot_image = w.Image(format="png", layout=w.Layout(display=_HIDDEN, width="400px"))
        self.plot_box = w.VBox(
            [w.HBox([self.plot_note, self.hide_plot_button]), self.plot_image],
            layout=w.Layout(display=_HIDDEN),
        )
        self.plot_box.add_class("ar-plot")
        self.overview_button = w.ToggleButton(description="Overview", icon="th")
        self.overview = SweepOverview(run_manager.run_dir, self._pick)
        self.load_button = w.Button(description="Load learners")
        self.sort_by = w.Dropdown(
            options=[(_SORT_LABELS[key], key) for key in SORT_KEYS], description="sort by"
        )
        self.descending = w.Checkbox(description="descending")
        self.state_filter = w.Dropdown(
            options=[("all", ""), *((s.value, s.value) for s in LearnerState)], description="show"
        )
        self.prev_button = w.Button(description="◀ prev")
        self.next_button = w.Button(description="next ▶")
        self.page_label = w.Label()
        self.table = w.HTML()
        self.message = w.HTML()
        self.log = w.HTML()
        self.widget = w.VBox(
            [
                self.status,
                self.counts,
                self.totals,
                self.progress,
                self.stages,
                self.queue,
                w.HBox([self.refresh_button, self.auto_button, self.cancel_run_button]),
                self.confirm_box,
                w.HBox(
                    [
                        self.selection,
                        self.cancel_selected_button,
                        self.plot_button,
                        self.overview_button,
                    ]
                ),
                w.HBox([self.log_button, self.failed_only, self.log_search, self.hide_log_button]),
                self.load_button,
                self.message,
                w.HBox([self.overview.widget, self.plot_box]),
                self.log,
                w.HBox([self.sort_by, self.descending, self.state_filter]),
                w.HBox([self.prev_button, self.page_label, self.next_button]),
                self.table,
            ]
        )
        self.widget.add_class("ar-panel")
        self._wire()
        self.snapshot = self.refresh()
        self.auto_button.value = auto_refresh

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _wire(self) -> None:
        clicks: list[tuple[w.Button, Callable[[], object]]] = [
            (self.refresh_button, self.refresh),
            (self.cancel_run_button, self._ask_cancel_run),
            (self.confirm_button, self._cancel_run),
            (self.keep_button, self._keep_running),
            (self.cancel_selected_button, self._cancel_selected),
            (self.log_button, self._show_log),
            (self.hide_log_button, self._hide_log),
            (self.plot_button, self._show_plot),
            (self.hide_plot_button, self._hide_plot),
            (self.load_button, self._load_learners),
            (self.prev_button, lambda: self._change_view(page=self._view.page - 1)),
            (self.next_button, lambda: self._change_view(page=self._view.page + 1)),
        ]
        for button, action in clicks:
            button.on_click(self._reporting(action))
        self.auto_button.observe(lambda change: self._set_auto(change["new"]), names="value")
        self.overview_button.observe(lambda change: self._show_overview(change["new"]), "value")
        self.sort_by.observe(lambda change: self._change_view(sort_by=change["new"]), "value")
        self.descending.observe(lambda change: self._change_view(descending=change["new"]), "value")
        self.state_filter.observe(lambda change: self._filter(change["new"]), "value")
        self.log_search.observe(lambda _: self._render_log(), "value")

    def _reporting(self, action: Callable[[], object]) -> Callable[[w.Button], None]:
        """Wrap ``action`` as a click handler that shows its errors in the panel.

        Bad input (ConfigError) is only shown; anything else is raised again as well, so it
        also reaches the kernel's log.
        """

        def handler(_: w.Button) -> None:
            try:
                action()
            except ConfigError as e:
                self._say(str(e), error=True)
            except Exception as e:
                self._say(f"{type(e).__name__}: {e}", error=True)
                raise

        return handler

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self) -> StatusSnapshot:
        """Read state.sqlite once and update every part of the panel; return the snapshot.

        The queues and the data files' size come from the panel's throttled looks; a plot
        whose data file changed is drawn again in its own thread.
        """
        with self._lock:
            snap = self.rm.snapshot(self._view, looks=self._looks)
            self.snapshot = snap
            self._view = snap.view  # a page past the end was moved to the last one
            self.status.value = status_html(snap)
            self.counts.value = counts_html(snap)
            self.totals.value = totals_html(snap.totals)
            self.queue.value = "" if snap.queue is None else queue_html(snap.queue)
            self.progress.value = progress_html(snap)
            self.stages.value = stages_html(snap)
            self.cancel_run_button.disabled = snap.finished
            self.prev_button.disabled = snap.view.page == 0
            self.next_button.disabled = snap.view.page + 1 >= snap.n_pages
            self.page_label.value = f"page {snap.view.page + 1} of {snap.n_pages}"
            self.table.value = table_html(snap)
        if self.overview.shown:
            self.overview.update()
        self._update_plot()
        return snap

    def _change_view(self, **changes: Any) -> None:
        if "page" not in changes:
            changes["page"] = 0  # a new order or filter starts at its first page
        self._view = dataclasses.replace(self._view, **changes)
        self.refresh()

    def _filter(self, state: str) -> None:
        self._change_view(state=LearnerState(state) if state else None)

    def _set_auto(self, on: bool) -> None:  # noqa: FBT001 - a toggle's new value
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if on:
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._loop, args=(self._stop,), name="status-panel", daemon=True
            )
            thread.start()

    def _loop(self, stop: threading.Event) -> None:
        while True:
            jm = self.rm.job_manager
            if jm is not None and jm.running:
                jm.wait(self.refresh_interval_s)  # wakes at once when the run finishes
            else:
                stop.wait(self.refresh_interval_s)
            if stop.is_set():
                return
            try:
                snap = self.refresh()
            except Exception as e:
                self._say(f"auto-refresh stopped: {type(e).__name__}: {e}", error=True)
                self.auto_button.value = False
                raise
            if snap.finished and not snap.managers_running:
                self.auto_button.value = False  # nothing will change any more

    def close(self) -> None:
        """Stop refreshing and remove the panel from the page."""
        self.auto_button.value = False
        _close_all(self.widget)

    # -- actions ---------------------------------------------------------------------------

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#d62728" if error else "inherit"
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _ask_cancel_run(self) -> None:
        self.confirm_box.layout.display = None

    def _keep_running(self) -> None:
        self.confirm_box.layout.display = _HIDDEN
        self._say("The run goes on.")

    def _cancel_run(self) -> None:
        self.confirm_box.layout.display = _HIDDEN
        before = self.refresh().counts[LearnerState.CANCELLED]
        self.rm.cancel()
        n = self.refresh().counts[LearnerState.CANCELLED] - before
        self._say(f"Cancelled the run: {n} learners cancelled, their jobs killed.")

    def _selected(self) -> list[int]:
        with self._lock:
            total = self.snapshot.total
        return parse_selection(self.selection.value, total)

    def _cancel_selected(self) -> None:
        picked = self._selected()
        self.rm.cancel(learners=picked)
        self.refresh()
        self._say(
            f"Cancelled learners {', '.join(map(str, picked))} (finished ones stay as they were)."
        )

    def _show_log(self) -> None:
        """The logs of the selected learners' latest jobs, or of the latest failed jobs.

        With "failed jobs only" ticked: the jobs that did not end cleanly, of the selected
        learners or, with none selected, of the whole run, those whose learner raised first.
        """
        text = self.selection.value.strip()
        picked = self._selected() if text or not self.failed_only.value else []
        with Database.open(self.rm.run_dir.database, read_only=True) as db:
            self._log_sources = log_sources(db, picked, failed_only=self.failed_only.value)
        self.hide_log_button.layout.display = None
        self._render_log()

    def _render_log(self) -> None:
        if not self._log_sources and self.hide_log_button.layout.display == _HIDDEN:
            return  # no log shown: a search waits for "Show log"
        self.log.value = log_html(self.rm.run_dir, self._log_sources, self.log_search.value)

    def _hide_log(self) -> None:
        self._log_sources = []
        self.log.value = ""
        self.hide_log_button.layout.display = _HIDDEN

    def _show_plot(self) -> None:
        self._plot_learner = self._selected()[0]
        self._plotter.last = None  # a click always loads afresh
        self.plot_note.value = f"loading learner {self._plot_learner} …"
        self.plot_box.layout.display = None
        self._update_plot()

    def _hide_plot(self) -> None:
        self._plot_learner = None
        self.plot_box.layout.display = _HIDDEN
        self.overview.unpick()

    def _show_overview(self, on: bool) -> None:  # noqa: FBT001 - a toggle's new value
        try:
            self.overview.show(on)
        except ConfigError as e:  # a damaged parameters.json: said, as bad input is
            self._say(str(e), error=True)

    def _pick(self, index: int) -> None:
        """A cell of the overview was clicked: select its learner and plot it."""
        self.selection.value = str(index)
        self._show_plot()

    def _update_plot(self) -> None:
        """Draw the plotted learner again, in a thread, if its data file changed."""
        index = self._plot_learner
        busy = self._plot_thread is not None and self._plot_thread.is_alive()
        if index is None or busy or not self._plotter.stale(index):
            return
        self._plot_thread = threading.Thread(
            target=self._draw_plot, args=(index,), name="status-panel-plot", daemon=True
        )
        self._plot_thread.start()

    def _draw_plot(self, index: int) -> None:
        """Draw learner ``index``, then the one asked for meanwhile if another.

        A click on another learner while this one loads starts no thread of its own (this
        one is busy): without this loop it would say "loading" until the next refresh.
        """
        while True:
            try:
                picture = self._plotter.draw(index)
            except Exception as e:  # noqa: BLE001 - the learner's own code: shown in the panel
                if self._plot_learner == index:
                    self.plot_note.value = html.escape(
                        f"cannot plot learner {index}: {type(e).__name__}: {e}"
                    )
            else:
                if self._plot_learner == index:  # not hidden or replaced meanwhile
                    self._show_picture(picture)
            wanted = self._plot_learner
            if wanted is None or wanted == index or not self._plotter.stale(wanted):
                return
            index = wanted

    def _show_picture(self, picture: LearnerPicture) -> None:
        self.plot_note.value = html.escape(f"learner {picture.learner}: {picture.note}")
        if picture.png is None:
            self.plot_image.layout.display = _HIDDEN
        else:
            self.plot_image.value = picture.png
            self.plot_image.layout.display = None

    def _load_learners(self) -> None:
        self.learners = self.rm.load_learners()
        points = sum(getattr(learner, "npoints", 0) for learner in self.learners)
        self._say(
            f"Loaded {len(self.learners)} learners ({points} points in all) into "
            "panel.learners, as rm.load_learners() returns them."
        )


def _close_all(widget: w.Widget) -> None:
    """Close a widget and everything inside it (their comms with the page go too)."""
    for child in getattr(widget, "children", ()):
        _close_all(child)
    widget.close()
