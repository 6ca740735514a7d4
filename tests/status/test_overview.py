"""The overview of a sweep as plain data: parameters recorded and read back, cells placed."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING

import adaptive
import numpy as np
import pytest
from helpers_run import make_run

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError
from adaptive_runner.state.database import LearnerState
from adaptive_runner.status.overview import (
    NO_VALUE,
    Measure,
    cells_css,
    color,
    legend_html,
    overview,
    titles,
    x_ticks_html,
    y_ticks_html,
)
from adaptive_runner.status.parameters import (
    ParameterFile,
    learner_parameters,
    varying,
    write_parameters,
)

if TYPE_CHECKING:
    from pathlib import Path

    from adaptive_runner.status.parameters import Parameters

DONE, FAILED = LearnerState.DONE, LearnerState.FAILED


def peak(x: float, width: float, offset: float = 0.0, table: object = None) -> float:
    return offset + width / (width**2 + x**2) + (0 if table is None else 1)


def test_parameters_come_from_the_function_and_the_fname() -> None:
    learner = adaptive.Learner1D(partial(peak, width=np.float64(0.5)), bounds=(-1, 1))
    # The function's keyword defaults as adaptive's to_dataframe reads them (table=None is
    # no scalar: left out), then the fname's that the function lacks.
    found = learner_parameters(learner, "data/n_3__width_9.0.pickle")
    assert found == {"width": 0.5, "offset": 0.0, "n": 3}
    assert list(found) == ["width", "offset", "n"]
    assert type(learner_parameters(learner, "x.pickle")["width"]) is float  # not numpy's
    bare = adaptive.Learner1D(abs, bounds=(-1, 1))  # a builtin: no signature to read
    assert learner_parameters(bare, "data/a_1.pickle") == {"a": 1}
    assert learner_parameters(bare, "data/0.pickle") == {}
    seq = adaptive.SequenceLearner(abs, [1, 2])
    assert learner_parameters(seq, ar.fname_from_params({"k": "x", "q": 2})) == {"k": "x", "q": 2}


def test_parameter_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", 2)
    file = ParameterFile(run_dir)
    assert file.read() == []  # a run from before parameters.json
    learners = [adaptive.Learner1D(partial(peak, width=w), bounds=(-1, 1)) for w in (1, 2)]
    write_parameters(run_dir, learners, ["a.pickle", "b.pickle"])
    first = file.read()
    assert first == [{"width": 1, "offset": 0.0}, {"width": 2, "offset": 0.0}]
    assert file.read() is first  # unchanged: not parsed again
    write_parameters(run_dir, learners[:1], ["c_7.pickle"])
    assert file.read() == [{"c": 7, "width": 1, "offset": 0.0}]
    assert ar.Run(run_dir.path).parameters() == file.read()
    run_dir.parameters_file.write_text('{"format": 99, "learners": []}')
    with pytest.raises(ConfigError, match=r"parameters\.json is not a parameters file"):
        file.read()
    run_dir.parameters_file.write_text("{")
    with pytest.raises(ConfigError, match="is not JSON"):
        file.read()


def test_varying_keys() -> None:
    sweep: list[Parameters] = [{"a": 1, "b": 2, "c": "x"}, {"a": 2, "b": 2, "c": "x"}]
    assert varying(sweep) == ["a"]
    assert varying([*sweep, {"a": 1, "b": 2}]) == ["a", "c"]  # missing in one: varies
    assert varying([{"a": float("nan")}, {"a": float("nan")}]) == []
    assert varying(sweep[:1]) == []
    assert varying([]) == []
    # The same values under another name (the fname's "peak", the function's "width"): once.
    again: list[Parameters] = [
        {"width": w, "peak": w, "n": n} for w, n in ((0.1, 1), (0.2, 1), (0.3, 2))
    ]
    assert varying(again) == ["width", "n"]


def grid(*shape: int) -> list[Parameters]:
    """Learners over a, b (and c), in itertools.product order."""
    if len(shape) == 2:
        return [{"a": a, "b": b / 10} for a in range(shape[0]) for b in range(shape[1])]
    return [
        {"a": a, "b": b / 10, "c": f"k{c}"}
        for a in range(shape[0])
        for b in range(shape[1])
        for c in range(shape[2])
    ]


def values(
    n: int, loss: list[float | None] | None = None
) -> list[tuple[int, LearnerState, int | None, float | None]]:
    losses = loss if loss is not None else [0.1 * (i + 1) for i in range(n)]
    return [(i, DONE, 10 * i, losses[i]) for i in range(n)]


def test_heatmap_has_one_cell_per_learner_at_its_parameters() -> None:
    picture = overview(grid(3, 2), values(6), x="a", y="b", measure=Measure.LOSS)
    assert (picture.n_columns, picture.n_rows) == (3, 2)
    places = [(c.learner, c.column, c.row) for c in picture.cells]
    # a along the columns, b up the rows (the largest at the top).
    assert places == [(0, 1, 2), (1, 1, 1), (2, 2, 2), (3, 2, 1), (4, 3, 2), (5, 3, 1)]
    assert picture.x_ticks == ((0.5, "0"), (1.5, "1"), (2.5, "2"))
    assert picture.y_ticks == ((1.5, "0"), (0.5, "0.1"))
    assert picture.scale.log  # every loss > 0
    assert picture.cells[0].fraction == 0.0
    assert picture.cells[5].fraction == 1.0
    swapped = overview(grid(3, 2), values(6), x="b", y="a", measure=Measure.NPOINTS)
    assert (swapped.n_columns, swapped.n_rows) == (2, 3)
    assert not swapped.scale.log
    assert [c.value for c in swapped.cells] == [10.0 * i for i in range(6)]


def test_learners_that_share_a_place_sit_side_by_side() -> None:
    # Three parameters, two on the axes: the four values of c share each (a, b).
    picture = overview(grid(2, 3, 4), values(24), x="a", y="b", measure=Measure.LOSS)
    assert (picture.n_columns, picture.n_rows) == (8, 3)
    places = {(c.column, c.row) for c in picture.cells}
    assert len(places) == 24  # one cell each
    assert picture.x_ticks == ((2.0, "0"), (6.0, "1"))
    one_row = overview(grid(2, 3, 4), values(24), x="c", y=None, measure=Measure.LOSS)
    assert (one_row.n_columns, one_row.n_rows) == (24, 1)
    assert one_row.y_ticks == ()
    assert len({c.column for c in one_row.cells}) == 24


def test_a_learner_without_the_parameter_goes_last() -> None:
    sweep: list[Parameters] = [{"a": 2}, {"a": "x"}, {}, {"a": 1}]
    picture = overview(sweep, values(4), x="a", y=None, measure=Measure.LOSS)
    assert [c.column for c in picture.cells] == [2, 3, 4, 1]
    assert [label for _, label in picture.x_ticks] == ["1", "2", "x", "—"]


def test_without_parameters_a_bar_per_learner_largest_first() -> None:
    picture = overview([], values(4, [0.5, None, 2.0, 0.0]), x=None, y=None, measure=Measure.LOSS)
    assert picture.bars
    assert [c.column for c in picture.cells] == [2, 4, 1, 3]  # no value yet: last
    assert not picture.scale.log  # a loss of 0 has no logarithm
    assert picture.cells[1].fraction is None
    assert "sorted by loss" in x_ticks_html(picture)
    css = cells_css(picture, "s1")
    assert "align-self:end;height:120px!important" in css  # the largest bar is full height


def test_ticks_are_thinned_to_twelve() -> None:
    sweep: list[Parameters] = [{"a": i} for i in range(100)]
    picture = overview(sweep, values(100), x="a", y=None, measure=Measure.LOSS)
    assert len(picture.x_ticks) == 12  # every ninth
    assert picture.x_ticks[1] == (9.5, "9")
    assert picture.cell_px == (5, 24)  # 600 px for 100 columns, a pixel between two
    assert "left:3.0px" in x_ticks_html(picture)


def test_cells_css_has_a_rule_per_learner_in_its_colour() -> None:
    vals = values(6)
    vals[3] = (3, FAILED, None, None)
    picture = overview(grid(3, 2), vals, x="a", y="b", measure=Measure.LOSS)
    css = cells_css(picture, "ar-overview-1")
    rules = re.findall(r"\.ar-overview-1>div>button:nth-child\((\d+)\)\{([^}]*)\}", css)
    assert [int(k) for k, _ in rules] == [1, 2, 3, 4, 5, 6]
    assert f"background:{color(0.0)}!important" in rules[0][1]
    assert "grid-area:2/1" in rules[0][1]
    assert f"background:{NO_VALUE}!important" in rules[3][1]
    assert "outline:2px solid #d62728" in rules[3][1]  # failed
    assert "grid-template-columns:repeat(3,24px)" in css
    assert color(0.0) == "#440154"
    assert color(1.0) == "#fde725"
    assert color(None) == NO_VALUE
    assert "(log scale)" in legend_html(picture)
    assert ">0.1<" in y_ticks_html(picture)
    assert titles(grid(3, 2), ["a", "b"], 7)[1] == "learner 1: a=0, b=0.1"
    assert titles(grid(3, 2), ["a", "b"], 7)[6] == "learner 6"
    empty = overview(grid(3, 2), values(6, [None] * 6), x="a", y="b", measure=Measure.LOSS)
    assert "no learner reported its loss yet" in legend_html(empty)


def test_x_tick_labels_that_would_overlap_are_left_out() -> None:
    """Columns of 24 px (the widest cell) under labels of ~30 px: side by side they read
    '0.0030.01' (a new user's 2-D sweep); every other one is drawn."""
    sweep: list[Parameters] = [{"width": w} for w in (0.003, 0.01, 0.03, 0.1)]
    picture = overview(sweep, values(4), x="width", y=None, measure=Measure.LOSS)
    shown = re.findall(r">([^<]+)</span>", x_ticks_html(picture))
    assert shown == ["0.003", "0.03"]  # every other label: 24 px a cell, 30 px a label
    assert len(picture.x_ticks) == 4  # the picture keeps them all; only drawing leaves out
