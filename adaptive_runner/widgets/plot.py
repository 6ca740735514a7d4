"""The panel's live plot of one learner: a fresh copy from its saved data, drawn as a PNG.

With holoviews installed the learner's own ``plot()`` is drawn (holoviews' matplotlib
renderer, so the picture needs no JavaScript in the page); without it, matplotlib draws
the data of the learners whose data is points (Learner1D: a line, Learner2D: coloured
points). The learner is loaded again only when its data file changed (its mtime and size),
so refreshing the panel costs one ``stat`` while nothing was saved.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from adaptive_runner.manager.run import Run

NO_DATA = "no data yet"


@dataclass(frozen=True, slots=True)
class LearnerPicture:
    """What the plot area shows for one learner: a PNG, or a sentence why there is none."""

    learner: int
    png: bytes | None
    note: str  # "12 points, drawn with matplotlib" or "no data yet"
    version: tuple[int, int] | None  # the data file's (mtime_ns, size) it was drawn from


class LearnerPlot:
    """Draws learner pictures for a run, again only when the learner's data file changed.

    Parameters
    ----------
    run
        The run whose learners are unpickled (their functions' modules must import).

    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last: LearnerPicture | None = None

    def stale(self, index: int) -> bool:
        """Whether :meth:`draw` would load learner ``index`` again (one ``stat``)."""
        last = self.last
        return (
            last is None
            or last.learner != index
            or last.version != _version(self.run.data_file(index))
        )

    def draw(self, index: int) -> LearnerPicture:
        """The picture of learner ``index`` from its saved data (kept while the file stays)."""
        if not self.stale(index) and self.last is not None:
            return self.last
        version = _version(self.run.data_file(index))
        learner = self.run.load_learner(index)
        npoints = int(getattr(learner, "npoints", 0))
        if version is None or npoints == 0:
            picture = LearnerPicture(index, None, NO_DATA, version)
        else:
            png, how = learner_png(learner)
            picture = LearnerPicture(index, png, f"{npoints} points, {how}", version)
        self.last = picture
        return picture


def _version(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def learner_png(learner: Any) -> tuple[bytes | None, str]:
    """A PNG of ``learner`` and how it was drawn; None and why when it cannot be drawn."""
    if importlib.util.find_spec("holoviews") is not None:
        return _holoviews_png(learner), "drawn by its plot() (holoviews)"
    points = _points(learner)
    if points is None:
        kind = type(learner).__name__
        return None, f"install holoviews to plot a {kind} (matplotlib draws Learner1D and 2D)"
    return _matplotlib_png(points), "drawn with matplotlib (holoviews is not installed)"


def _holoviews_png(learner: Any) -> bytes:
    """``learner.plot()`` drawn by holoviews' matplotlib renderer.

    adaptive styles its plots with bokeh options (``line_width``, ``tools``), valid only
    while the bokeh backend is loaded too; matplotlib then skips them (param's warnings
    about that are silenced). The user's current backend is put back afterwards.
    """
    import holoviews as hv  # noqa: PLC0415 - optional, and slow to import
    import param  # noqa: PLC0415 - holoviews' own dependency

    renderer = hv.renderer("matplotlib")
    hv.renderer("bokeh")  # loads bokeh's options, which adaptive's plots use
    before = hv.Store.current_backend
    hv.Store.set_current_backend("matplotlib")
    try:
        with param.parameterized.logging_level("ERROR"):
            data, _ = renderer(learner.plot(), fmt="png")
    finally:
        hv.Store.set_current_backend(before)
    return bytes(data)


def _points(learner: Any) -> tuple[list[Any], ...] | None:
    """The learner's data as columns: (x, y) for 1D, (x, y, z) for 2D; None for others."""
    data = getattr(learner, "data", None)
    if not isinstance(data, dict) or not data:
        return None
    keys = sorted(data)
    first = keys[0]
    if isinstance(first, int | float):
        return keys, [data[k] for k in keys]
    if isinstance(first, tuple) and len(first) == 2:  # noqa: PLR2004 - a point in the plane
        return [k[0] for k in keys], [k[1] for k in keys], [data[k] for k in keys]
    return None


def _matplotlib_png(points: tuple[list[Any], ...]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - on demand
    from matplotlib.figure import Figure  # noqa: PLC0415 - no pyplot: no global state, threads

    figure = Figure(figsize=(5, 3.2), dpi=80, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if len(points) == 2:  # noqa: PLR2004 - a 1D learner: y over x (y may be a vector)
        axes.plot(points[0], points[1], marker=".", markersize=3)
        axes.set_xlabel("x")
        axes.set_ylabel("y")
    else:
        scatter = axes.scatter(points[0], points[1], c=points[2], s=8)
        figure.colorbar(scatter, ax=axes)
        axes.set_xlabel("x")
        axes.set_ylabel("y")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
