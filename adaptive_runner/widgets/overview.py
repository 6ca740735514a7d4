"""The panel's overview of a sweep: every learner as a cell over two parameters, clickable.

What it draws is status/overview.py's; here are the widgets: dropdowns for the x and y
parameters and for what colours the cells (loss or points), the cells themselves (one
``ToggleButtons``, a button per learner, laid out by a ``<style>``), the axes and a legend.
Clicking a cell calls ``on_pick`` with its learner (the panel plots it). Each
:meth:`SweepOverview.update` reads parameters.json only when it changed (one ``stat``) and
state.sqlite with one query; a widget whose value stays the same sends nothing.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import ipywidgets as w

from adaptive_runner.state.database import Database
from adaptive_runner.status.overview import (
    Measure,
    cells_css,
    legend_html,
    overview,
    titles,
    x_ticks_html,
    y_ticks_html,
)
from adaptive_runner.status.parameters import ParameterFile, varying

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.status.parameters import Parameters

_HIDDEN: Final = "none"
_NO_Y: Final = ("none", "")


class SweepOverview:
    """A heatmap of a run's learners over two of their parameters (or a bar each).

    Parameters
    ----------
    run_dir
        The run to draw.
    on_pick
        Called with a learner's index when its cell is clicked.

    """

    def __init__(self, run_dir: RunDir, on_pick: Callable[[int], object]) -> None:
        self.run_dir = run_dir
        self._on_pick = on_pick
        self._parameters = ParameterFile(run_dir)
        self._lock = threading.RLock()  # the panel's refresh thread and clicks take turns
        self._setting = False  # options set here: their observers do nothing
        self._keys: list[str] | None = None
        self._titles: list[str] = []
        scope = f"ar-overview-{secrets.token_hex(4)}"  # this panel's cells, not another's
        self.x = w.Dropdown(description="x")
        self.y = w.Dropdown(description="y")
        self.measure = w.Dropdown(
            options=[("loss", Measure.LOSS.value), ("points", Measure.NPOINTS.value)],
            description="colour",
        )
        self.cells = w.ToggleButtons(options=[], value=None)
        self.cells.add_class("ar-overview-cells")
        self.cells.add_class(scope)
        self._scope = scope
        self.style = w.HTML()  # the <style> that places and colours the cells
        self.x_axis = w.HTML()
        self.y_axis = w.HTML()
        self.legend = w.HTML()
        self.widget = w.VBox(
            [
                w.HBox([self.x, self.y, self.measure]),
                w.HBox([self.y_axis, w.VBox([self.cells, self.x_axis])]),
                self.legend,
                self.style,
            ],
            layout=w.Layout(display=_HIDDEN),
        )
        self.widget.add_class("ar-overview")
        for choice in (self.x, self.y, self.measure):
            choice.observe(self._chosen, "value")
        self.cells.observe(self._clicked, "value")

    @property
    def shown(self) -> bool:
        """Whether the overview is on the page (it is updated only then)."""
        return bool(self.widget.layout.display != _HIDDEN)

    def show(self, on: bool) -> None:  # noqa: FBT001 - a toggle's new value
        """Show and update the overview, or hide it."""
        self.widget.layout.display = None if on else _HIDDEN
        if on:
            self.update()

    def update(self) -> None:
        """Draw the run as it is now: parameters.json (if changed) and one query."""
        with self._lock:
            parameters = self._parameters.read()
            with Database.open(self.run_dir.database, read_only=True) as db:
                values = db.sweep_values()
            self._offer(varying(parameters[: len(values)]), parameters, len(values))
            picture = overview(
                parameters,
                values,
                x=self.x.value or None,
                y=self.y.value or None,
                measure=Measure(self.measure.value),
            )
            self.style.value = cells_css(picture, self._scope)
            self.x_axis.value = x_ticks_html(picture)
            self.y_axis.value = y_ticks_html(picture)
            self.legend.value = legend_html(picture)

    def unpick(self) -> None:
        """Clear the picked cell, so that a click on it picks it again."""
        with self._lock, self._quietly():
            self.cells.value = None

    def _offer(self, keys: list[str], parameters: list[Parameters], n: int) -> None:
        """Offer ``keys`` as axes, and a cell per learner, where they changed."""
        if keys != self._keys:
            self._keys = keys
            with self._quietly():
                self.x.options = keys
                self.y.options = [_NO_Y, *((key, key) for key in keys)]
                self.x.value = keys[0] if keys else None
                self.y.value = keys[1] if len(keys) > 1 else ""
            for choice in (self.x, self.y):
                choice.layout.display = None if keys else _HIDDEN
        tips = titles(parameters, keys, n)
        if tips != self._titles:
            self._titles = tips
            with self._quietly(), self.cells.hold_sync():
                self.cells.tooltips = tips
                self.cells.options = [(str(i), i) for i in range(n)]

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """While inside, the observers ignore the values the overview sets itself."""
        self._setting = True
        try:
            yield
        finally:
            self._setting = False

    def _chosen(self, _: dict[str, Any]) -> None:
        if not self._setting:
            self.update()

    def _clicked(self, change: dict[str, Any]) -> None:
        if not self._setting and change["new"] is not None:
            self._on_pick(int(change["new"]))
