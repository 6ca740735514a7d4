"""The overview of a sweep as plain data and CSS: one cell per learner, placed and coloured.

With parameters that vary between learners (parameters.py), each learner is a cell of a
heatmap over two of them, x and y (y may be none: one row), coloured by its loss or its
number of points. Learners that share both values (a third parameter varies) sit side by
side in their place, so each learner keeps a cell of its own. Without such parameters each
learner is a bar, the bars sorted by the value, largest first.

No ipywidgets here (widgets/overview.py shows it): the picture is a CSS grid whose cells are
the buttons of one ipywidgets ``ToggleButtons`` (one widget however many learners, its
options in learner order); :func:`cells_css` places and colours them, so a refresh sends one
string. The colours are viridis (dark: small, yellow: large), a loss on a log scale when every
loss is positive; grey: no value yet; failed and cancelled learners are outlined in their
state's colour.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from adaptive_runner.state.database import LearnerState
from adaptive_runner.status.snapshot import STATE_COLORS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adaptive_runner.status.parameters import Parameters, Value

WIDTH_PX: Final = 600  # the grid's width budget; cells shrink to fit, down to MIN_CELL_PX
HEIGHT_PX: Final = 300  # the heatmap's height budget
BAR_HEIGHT_PX: Final = 120
MAX_CELL_PX: Final = 24
MIN_CELL_PX: Final = 2
GAP_PX: Final = 1
MAX_TICKS: Final = 12  # tick labels on an axis at most; the others are left out
LETTER_PX: Final = 6  # about the width of a letter of a 10 px tick label
NO_VALUE: Final = "#d0d0d0"
_VIRIDIS: Final = (
    (0x44, 0x01, 0x54),
    (0x47, 0x2D, 0x7B),
    (0x3B, 0x52, 0x8B),
    (0x2C, 0x72, 0x8E),
    (0x21, 0x91, 0x8C),
    (0x28, 0xAE, 0x80),
    (0x5E, 0xC9, 0x62),
    (0xAD, 0xDC, 0x30),
    (0xFD, 0xE7, 0x25),
)
_OUTLINED: Final = (LearnerState.FAILED, LearnerState.CANCELLED)


class Measure(StrEnum):
    """What colours a cell."""

    LOSS = "loss"
    NPOINTS = "npoints"


@dataclass(frozen=True, slots=True)
class Cell:
    """One learner's place in the grid (1-based, rows from the top) and its value."""

    learner: int
    column: int
    row: int
    value: float | None  # its loss or points; None: not reported yet
    fraction: float | None  # the value on the colour scale, 0 to 1
    state: LearnerState


@dataclass(frozen=True, slots=True)
class Scale:
    """The colour scale: the smallest and largest value, and whether it is logarithmic."""

    low: float | None  # None: no learner has a value yet
    high: float | None
    log: bool

    def fraction(self, value: float | None) -> float | None:
        """Where ``value`` is on the scale, 0 to 1 (all values equal: 1); None for no value."""
        if value is None or self.low is None or self.high is None:
            return None
        f = math.log10 if self.log else float
        if self.high == self.low:
            return 1.0
        return (f(value) - f(self.low)) / (f(self.high) - f(self.low))


@dataclass(frozen=True, slots=True)
class Overview:
    """The picture: cells by learner index, the grid's size, the axes and the scale."""

    cells: tuple[Cell, ...]
    n_columns: int
    n_rows: int
    x: str | None  # the parameter along the columns; None: bars, one per learner
    y: str | None  # the parameter along the rows; None: one row
    x_ticks: tuple[tuple[float, str], ...]  # (centre, in cells from the left; label)
    y_ticks: tuple[tuple[float, str], ...]  # (centre, in cells from the top; label)
    measure: Measure
    scale: Scale

    @property
    def bars(self) -> bool:
        """Whether this is a bar per learner (no parameters to place them by)."""
        return self.x is None

    @property
    def cell_px(self) -> tuple[int, int]:
        """A cell's width and height in pixels: the grid fits the budget."""
        width = _fit(WIDTH_PX, self.n_columns)
        return width, BAR_HEIGHT_PX if self.bars else _fit(HEIGHT_PX, self.n_rows)


def _fit(budget: int, n: int) -> int:
    return max(MIN_CELL_PX, min(MAX_CELL_PX, budget // max(1, n) - GAP_PX))


def overview(
    parameters: Sequence[Parameters],
    values: Sequence[tuple[int, LearnerState, int | None, float | None]],
    *,
    x: str | None,
    y: str | None,
    measure: Measure,
) -> Overview:
    """The overview of ``values`` (``Queries.sweep_values``) over parameters ``x`` and ``y``.

    ``parameters``: each learner's, by index (a learner past its end has none). ``x`` None:
    a bar per learner, sorted by the value, largest first; ``y`` None: a heatmap of one row.
    """
    measure = Measure(measure)
    found = [npoints if measure is Measure.NPOINTS else loss for _, _, npoints, loss in values]
    value_of = [None if v is None or not math.isfinite(v) else float(v) for v in found]
    known = [v for v in value_of if v is not None]
    log = measure is Measure.LOSS and bool(known) and min(known) > 0
    scale = Scale(min(known, default=None), max(known, default=None), log)

    def cell(k: int, column: int, row: int) -> Cell:
        index, state, _, _ = values[k]
        return Cell(index, column, row, value_of[k], scale.fraction(value_of[k]), state)

    if x is None:
        ranked = sorted(
            range(len(values)), key=lambda k: (value_of[k] is None, -(value_of[k] or 0.0), k)
        )
        column_of = {k: rank + 1 for rank, k in enumerate(ranked)}
        cells = tuple(cell(k, column_of[k], 1) for k in range(len(values)))
        return Overview(cells, len(values), 1, None, None, (), (), measure, scale)

    def axis(name: str | None) -> list[Value | None]:
        if name is None:
            return [None] * len(values)
        return [
            parameters[index].get(name) if index < len(parameters) else None for index, *_ in values
        ]

    x_values, y_values = axis(x), axis(y)
    x_order, y_order = _order(x_values), _order(y_values)
    taken: dict[tuple[int, int], int] = {}
    places = []
    for xv, yv in zip(x_values, y_values, strict=True):
        place = (x_order[_key(xv)][0], y_order[_key(yv)][0])
        places.append((*place, taken.get(place, 0)))
        taken[place] = taken.get(place, 0) + 1
    width = max(taken.values(), default=1)  # learners that share a place sit side by side
    n_y = len(y_order)
    cells = tuple(
        cell(k, xi * width + side + 1, n_y - yi) for k, (xi, yi, side) in enumerate(places)
    )
    x_ticks = _thin(tuple((i * width + width / 2, label) for i, label in x_order.values()))
    y_ticks = () if y is None else _thin(tuple((n_y - i - 0.5, t) for i, t in y_order.values()))
    return Overview(cells, len(x_order) * width, n_y, x, y, x_ticks, y_ticks, measure, scale)


_Key = tuple[int, float | str]


def _key(value: Value | None) -> _Key:
    """A value's place in an axis's order: numbers by size, then strs, then missing ones."""
    if value is None:
        return (2, "")
    if isinstance(value, str) or math.isnan(value):
        return (1, str(value))
    return (0, float(value))


def _order(values: Sequence[Value | None]) -> dict[_Key, tuple[int, str]]:
    """Each distinct value's key -> its position along the axis and its label."""
    labels = {_key(v): "—" if v is None else _text(v) for v in values}
    return {key: (i, labels[key]) for i, key in enumerate(sorted(labels))}


def _text(value: Value) -> str:
    """A parameter value as a tick label: ``0.01``, ``1e-05``, ``3``, ``True``, ``fermi``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _thin(ticks: tuple[tuple[float, str], ...]) -> tuple[tuple[float, str], ...]:
    """At most :data:`MAX_TICKS` of ``ticks``, evenly spaced, the first among them."""
    step = -(-len(ticks) // MAX_TICKS)
    return ticks[::step]


def titles(parameters: Sequence[Parameters], keys: Sequence[str], n: int) -> list[str]:
    """Each learner's tooltip: ``learner 3: a=1, b=0.5`` (the varying ``keys`` only)."""
    found = []
    for index in range(n):
        params = parameters[index] if index < len(parameters) else {}
        shown = ", ".join(f"{key}={_text(params[key])}" for key in keys if key in params)
        found.append(f"learner {index}: {shown}" if shown else f"learner {index}")
    return found


# --- CSS and HTML ---------------------------------------------------------------------------


def color(fraction: float | None) -> str:
    """The viridis colour at ``fraction`` (0 to 1); grey for no value."""
    if fraction is None:
        return NO_VALUE
    position = min(1.0, max(0.0, fraction)) * (len(_VIRIDIS) - 1)
    i = min(int(position), len(_VIRIDIS) - 2)
    t = position - i
    rgb = (round(a + (b - a) * t) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1], strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def cells_css(picture: Overview, scope: str) -> str:
    """A ``<style>`` that lays the buttons of the ``ToggleButtons`` of class ``scope`` out.

    The button group becomes a grid of the picture's size; the k-th button (learner k) goes
    to its cell in its colour (a bar: from the bottom, as high as its value).
    """
    width, height = picture.cell_px
    widget = f".{scope}.widget-toggle-buttons"  # specific enough to win over ipywidgets' own
    button = f"{widget} > div > button.widget-toggle-button"
    rules = [
        f"{widget}{{width:auto;height:auto;line-height:0}}",
        (
            f"{widget} > div{{display:grid;gap:{GAP_PX}px;"
            f"grid-template-columns:repeat({picture.n_columns},{width}px);"
            f"grid-template-rows:repeat({picture.n_rows},{height}px)}}"
        ),
        (
            f"{button}{{width:auto;min-width:0;height:auto;margin:0;padding:0;font-size:0;"
            f"line-height:0;border:0;border-radius:0;box-shadow:none;background:{NO_VALUE}}}"
        ),
        f"{button}:hover{{outline:2px solid #444;z-index:1}}",
        f"{button}.mod-active{{outline:3px solid #000;z-index:2;box-shadow:none}}",
    ]
    cell_rule = f".{scope}>div>button:nth-child"  # short: one rule per learner
    for k, cell in enumerate(picture.cells, start=1):
        extra = ""
        if picture.bars:
            bar = BAR_HEIGHT_PX * (cell.fraction or 0.0)
            extra = f";align-self:end;height:{max(MIN_CELL_PX, round(bar))}px!important"
        if cell.state in _OUTLINED:
            extra += f";outline:2px solid {STATE_COLORS[cell.state]};outline-offset:-2px"
        rules.append(
            f"{cell_rule}({k}){{grid-area:{cell.row}/{cell.column};"
            f"background:{color(cell.fraction)}!important{extra}}}"
        )
    return f"<style>{''.join(rules)}</style>"


def x_ticks_html(picture: Overview) -> str:
    """The x axis under the grid: tick labels at their columns, and the parameter's name."""
    width, _ = picture.cell_px
    step = width + GAP_PX
    ticks = "".join(
        f'<span style="position:absolute;left:{centre * step:.1f}px;top:0;'
        f'transform:translateX(-50%);white-space:nowrap">{html.escape(label)}</span>'
        for centre, label in _apart(picture.x_ticks, step)
    )
    name = "learners, sorted by " + picture.measure if picture.bars else picture.x or ""
    return (
        f'<div class="ar-overview-x" style="position:relative;height:14px;font-size:10px;'
        f'width:{picture.n_columns * step}px">{ticks}</div>'
        f'<div style="font-size:11px;text-align:center;width:{picture.n_columns * step}px">'
        f"{html.escape(name)}</div>"
    )


def _apart(ticks: Sequence[tuple[float, str]], step: float) -> list[tuple[float, str]]:
    """The x ticks whose labels do not overlap the one kept before (at 10 px, ~6 px a letter)."""
    kept: list[tuple[float, str]] = []
    for centre, label in ticks:
        if kept:
            before, text = kept[-1]
            if (centre - before) * step < LETTER_PX * (len(text) + len(label)) / 2 + LETTER_PX:
                continue
        kept.append((centre, label))
    return kept


def y_ticks_html(picture: Overview) -> str:
    """The y axis left of the grid: tick labels at their rows, and the parameter's name."""
    _, height = picture.cell_px
    step = height + GAP_PX
    ticks = "".join(
        f'<span style="position:absolute;right:4px;top:{centre * step:.1f}px;'
        f'transform:translateY(-50%);white-space:nowrap">{html.escape(label)}</span>'
        for centre, label in picture.y_ticks
    )
    name = picture.y or ""
    return (
        '<div style="display:flex;align-items:center">'
        f'<div style="writing-mode:vertical-rl;transform:rotate(180deg);font-size:11px">'
        f"{html.escape(name)}</div>"
        f'<div class="ar-overview-y" style="position:relative;width:48px;font-size:10px;'
        f'height:{picture.n_rows * step}px">{ticks}</div></div>'
    )


def legend_html(picture: Overview) -> str:
    """The colour scale: its ends, whether it is logarithmic, grey and the outlines."""
    scale = picture.scale
    what = "loss" if picture.measure is Measure.LOSS else "points"
    if scale.low is None or scale.high is None:
        return f'<div class="ar-overview-legend">no learner reported its {what} yet</div>'
    stops = ",".join(color(i / 8) for i in range(9))
    outlines = " ".join(
        f'<span style="outline:2px solid {STATE_COLORS[state]};padding:0 3px">{state}</span>'
        for state in _OUTLINED
    )
    return (
        '<div class="ar-overview-legend" style="display:flex;align-items:center;gap:6px;'
        f'font-size:11px">{what} {scale.low:.3g}<span style="display:inline-block;width:120px;'
        f'height:10px;background:linear-gradient(to right,{stops})"></span>{scale.high:.3g}'
        f"{' (log scale)' if scale.log else ''}"
        f'<span style="display:inline-block;width:10px;height:10px;background:{NO_VALUE}">'
        f"</span>none yet {outlines}</div>"
    )
