"""save_dataframe: each learner's DataFrame beside its data file, read back as one table."""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import adaptive
import cloudpickle
import pytest
from helpers_run import make_learners, make_rm, slow_square, stop_and_cancel, wait_for

import adaptive_runner as ar
from adaptive_runner.common.dataframes import dataframe_path
from adaptive_runner.common.vocabulary import DataFrameFormat, Event

# Workers cannot import this file: the learner class below travels by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class NoFrameLearner(adaptive.Learner1D):  # type: ignore[misc] # adaptive is untyped
    """A learner whose to_dataframe fails, as a learner of one's own may."""

    def to_dataframe(self) -> Any:
        raise RuntimeError("no DataFrame for this one")


def task_events(rm: ar.RunManager) -> list[dict[str, Any]]:
    """The JSON events of every task log of ``rm``'s run."""
    return [
        json.loads(line)
        for log in rm.run_dir.logs_dir.glob("*.log")
        for line in log.read_text().splitlines()
        if line.startswith("{")
    ]


@pytest.mark.parametrize("fmt", ["parquet", "pickle"])
def test_every_learner_s_points_come_back_in_one_dataframe(tmp_path: Path, fmt: str) -> None:
    rm = make_rm(tmp_path, make_learners(3), save_dataframe=True, dataframe_format=fmt)
    rm.start()
    try:
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    for fname in rm.fnames:  # beside the data file, named after it
        assert Path(f"{fname}.dataframe.{fmt}").is_file()
    learners = rm.load_learners()
    df = rm.load_dataframes()
    assert list(df.columns[:2]) == ["learner", "fname"]
    assert {"x", "y", "function.a"} <= set(df.columns)
    assert len(df) == sum(learner.npoints for learner in learners)
    for index, learner in enumerate(learners):
        rows = df[df["learner"] == index]
        assert set(rows["fname"]) == {rm.fnames[index]}
        assert dict(zip(rows["x"], rows["y"], strict=True)) == learner.data
    assert df.attrs["skipped"] == []
    # The same from a handle that needs no learner code, and what run.json records.
    assert ar.Run(rm.run_dir.path).load_dataframes().equals(df)
    config = json.loads((rm.run_dir.path / "run.json").read_text())
    assert (config["save_dataframe"], config["dataframe_format"]) == (True, fmt)


def test_a_stopped_learner_resumes_and_its_dataframe_follows(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(1, delay=0.02), save_dataframe=True, goal=80)
    frame_file = dataframe_path(rm.fnames[0], DataFrameFormat.PARQUET)
    rm.start()
    try:

        def holder() -> int | None:
            running = [t.pid for t in ar.Run(rm.run_dir.path).tasks() if t.finished is None]
            return running[0] if running and frame_file.exists() else None

        # SIGTERM, as at a time limit: the worker saves, releases, and a new task resumes.
        os.kill(wait_for(holder, what="a saved DataFrame of the running learner"), signal.SIGTERM)
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    events = [e["event"] for e in task_events(rm)]
    assert Event.RELEASED in events
    assert Event.RESUMED in events
    (learner,) = rm.load_learners()
    assert learner.npoints >= 80
    df = rm.load_dataframes()
    assert dict(zip(df["x"], df["y"], strict=True)) == learner.data
    # The data file stays adaptive's own format.
    plain = adaptive.Learner1D(partial(slow_square, a=0, delay=0.0), bounds=(-1, 1))
    plain.load(rm.fnames[0])
    assert plain.data == learner.data


def test_a_failing_to_dataframe_is_a_warning_and_the_learner_finishes(tmp_path: Path) -> None:
    good, *_ = make_learners(1)
    bad = NoFrameLearner(partial(slow_square, a=2, delay=0.0), bounds=(-1, 1))
    rm = make_rm(tmp_path, [bad, good], save_dataframe=True, dataframe_format="pickle")
    rm.start()
    try:
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    failed = [e for e in task_events(rm) if e["event"] == Event.DATAFRAME_FAILED]
    assert failed
    assert {e["level"] for e in failed} == {"warning"}
    assert all("no DataFrame for this one" in e["error"] for e in failed)
    assert {e["learner"] for e in failed} == {0}
    df = rm.load_dataframes()
    assert df.attrs["skipped"] == [0]
    assert set(df["learner"]) == {1}


def test_bad_input_is_refused_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    learners = make_learners(2)
    with pytest.raises(ar.ConfigError, match=r"dataframe_format='csv' is unknown.*'parquet'"):
        make_rm(tmp_path, learners, save_dataframe=True, dataframe_format="csv")
    with pytest.raises(ar.ConfigError, match="dataframe_format='csv' is unknown"):
        make_rm(tmp_path, learners, dataframe_format="csv")  # even with the option off
    with pytest.raises(ar.ConfigError, match=r"learners\[1\] \(object\) has no to_dataframe"):
        make_rm(tmp_path, [learners[0], object()], save_dataframe=True)
    # A data file where another learner's DataFrame would go.
    fnames = [tmp_path / "a", tmp_path / "a.dataframe.parquet"]
    with pytest.raises(ar.ConfigError, match=r"fnames\[1\] .* is where the DataFrame of learner 0"):
        ar.RunManager(ar.Local(), learners, fnames, goal=10, save_dataframe=True)
    # Without pyarrow (None in sys.modules: Python's own "not importable"), parquet is refused
    # and the other choices work.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ar.ConfigError, match=r"needs pyarrow.*install it.*'pickle'"):
        make_rm(tmp_path, learners, save_dataframe=True)
    make_rm(tmp_path, learners, save_dataframe=True, dataframe_format="pickle")
    make_rm(tmp_path, learners)  # off: nothing needed


def test_a_run_without_dataframes_says_so(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(1), goal=5)
    rm.start()
    try:
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    assert not dataframe_path(rm.fnames[0], DataFrameFormat.PARQUET).exists()
    with pytest.raises(ar.ConfigError, match="saves no DataFrames: start it with save_dataframe"):
        rm.load_dataframes()
