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
import pandas as pd
import pytest
from helpers_run import (
    always_fails,
    broken,
    fixed,
    make_learners,
    make_rm,
    slow_square,
    stop_and_cancel,
    wait_for,
)
from structlog.testing import capture_logs

import adaptive_runner as ar
from adaptive_runner.common.dataframes import dataframe_path
from adaptive_runner.common.vocabulary import DataFrameFormat, Event
from adaptive_runner.state.database import Database

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
    with pytest.warns(ar.DataFrameWarning, match=r"1 of 2 learners left out") as warned:
        df = rm.load_dataframes()
    assert "1 without a DataFrame file" in str(warned[0].message)
    assert df.attrs["skipped"] == df.attrs["missing"] == [0]
    assert set(df["learner"]) == {1}
    # Written on demand, it fails the same way: said in the warning, the why in the log.
    with (
        capture_logs() as logs,
        pytest.warns(ar.DataFrameWarning, match=r"DataFrames of 1 learner could not be written"),
    ):
        assert rm.load_dataframes(compute_missing=True).attrs["skipped"] == [0]
    (failure,) = [e for e in logs if e["event"] == "cannot write a DataFrame"]
    assert failure["learner"] == 0
    assert "no DataFrame for this one" in failure["error"]


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


# -- switched on after the fact: tables written from the data files ----------------------------


def run_to_the_end(rm: ar.RunManager) -> ar.RunManager:
    rm.start()
    try:
        rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    return rm


def frames_match_learners(df: Any, learners: list[Any]) -> None:
    """Each learner's rows in ``df`` are its points, all of them."""
    assert len(df) == sum(learner.npoints for learner in learners)
    for index, learner in enumerate(learners):
        rows = df[df["learner"] == index]
        assert dict(zip(rows["x"], rows["y"], strict=True)) == learner.data


def left_out(df: Any) -> tuple[list[int], list[int], list[int]]:
    """What load_dataframes' result lists: skipped, missing, stale (adaptive adds its own)."""
    return df.attrs["skipped"], df.attrs["missing"], df.attrs["stale"]


def manager_events(rm: ar.RunManager, event: str) -> list[dict[str, Any]]:
    lines = (rm.run_dir.path / "manager.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_switched_on_for_a_finished_run_the_rerun_writes_every_table_and_runs_nothing(
    tmp_path: Path,
) -> None:
    first = run_to_the_end(make_rm(tmp_path, make_learners(3), goal=20))
    assert first.status()["done"] == 3
    saved = {fname: Path(fname).read_bytes() for fname in first.fnames}
    npoints = [learner.npoints for learner in first.load_learners()]
    holds = len(first.tasks())

    again = run_to_the_end(make_rm(tmp_path, make_learners(3), goal=20, save_dataframe=True))
    assert again.status()["done"] == 3
    assert len(again.tasks()) == holds  # no job held a learner again
    assert {fname: Path(fname).read_bytes() for fname in again.fnames} == saved
    learners = again.load_learners()
    assert [learner.npoints for learner in learners] == npoints
    df = again.load_dataframes()  # no warning: pytest turns warnings into errors
    assert left_out(df) == ([], [], [])
    frames_match_learners(df, learners)
    # Stamped with their data file's time: not older, so not stale.
    for fname in again.fnames:
        table = dataframe_path(fname, DataFrameFormat.PARQUET)
        assert table.stat().st_mtime_ns == Path(fname).stat().st_mtime_ns
    (written,) = manager_events(again, "DataFrames written from data files")
    assert (written["learners"], written["tried"]) == (3, 3)
    assert manager_events(again, "writing DataFrames from data files")[-1]["checked"] == 3


def test_tables_older_than_their_data_are_rewritten_on_rerun(tmp_path: Path) -> None:
    # The fix-and-rerun loop: the learner fails with its table of the points so far, then
    # the fixed code finishes it in a session without the option; the table stays behind.
    def learners(f: Any) -> list[adaptive.Learner1D]:
        return [adaptive.Learner1D(f, bounds=(-1, 1))]

    table = dataframe_path(tmp_path / "data" / "l0.pickle", DataFrameFormat.PARQUET)
    run_to_the_end(make_rm(tmp_path, learners(broken), max_fails=1, save_dataframe=True))
    rows_at_failure = len(pd.read_parquet(table))
    finished = run_to_the_end(make_rm(tmp_path, learners(fixed), goal=40))
    assert finished.status()["done"] == 1
    (learner,) = finished.load_learners()
    assert learner.npoints > rows_at_failure
    assert table.stat().st_mtime_ns < Path(finished.fnames[0]).stat().st_mtime_ns  # stale
    holds = len(finished.tasks())

    again = run_to_the_end(make_rm(tmp_path, learners(fixed), goal=40, save_dataframe=True))
    assert len(again.tasks()) == holds  # no job ran
    (written,) = manager_events(again, "DataFrames written from data files")
    assert written["learners"] == 1
    df = again.load_dataframes()
    assert left_out(df) == ([], [], [])
    frames_match_learners(df, [learner])


def test_load_dataframes_says_what_it_left_out_and_compute_missing_writes_it(
    tmp_path: Path,
) -> None:
    # Learner 0 fails before its first save: no data file. 1 loses its table; 2 gains points
    # outside the run (adaptive's own save), so its table is older than its data.
    failing = adaptive.Learner1D(always_fails, bounds=(0, 1))
    rm = make_rm(tmp_path, [failing, *make_learners(3)], goal=20, save_dataframe=True, max_fails=1)
    run_to_the_end(rm)
    assert [row.state for row in rm.learners()] == ["failed", "done", "done", "done"]
    assert not Path(rm.fnames[0]).exists()
    dataframe_path(rm.fnames[1], DataFrameFormat.PARQUET).unlink()
    extended = rm.load_learner(2)
    table_rows = extended.npoints
    adaptive.runner.simple(extended, npoints_goal=table_rows + 10)
    extended.save(rm.fnames[2])

    with pytest.warns(ar.DataFrameWarning) as warned:
        df = ar.Run(rm.run_dir.path).load_dataframes()  # no learner code needed
    (message,) = [str(w.message) for w in warned]
    assert "2 of 4 learners left out (attrs['skipped'])" in message
    assert "1 without a DataFrame file (saved before save_dataframe was on" in message
    assert "1 without a data file yet" in message
    assert "1 learner read from DataFrame files older than their data files" in message
    assert "load_dataframes(compute_missing=True) writes the DataFrame files of 2 learners" in (
        message
    )
    assert left_out(df) == ([0, 1], [1], [2])
    assert set(df["learner"]) == {2, 3}
    assert (df["learner"] == 2).sum() == table_rows  # the stale table, as it is

    with pytest.warns(ar.DataFrameWarning) as warned:
        df = rm.load_dataframes()  # a RunManager has the code: compute_missing by default
    (message,) = [str(w.message) for w in warned]
    assert message == "1 of 4 learners left out (attrs['skipped']): 1 without a data file yet."
    assert left_out(df) == ([0], [], [])
    frames_match_learners(df, rm.load_learners())
    assert (df["learner"] == 2).sum() == table_rows + 10
    with Database.open(rm.run_dir.database) as db:  # nothing ran for it
        assert [row.state for row in db.learners()] == ["failed", "done", "done", "done"]


def test_a_run_that_saved_nothing_never_gives_an_empty_frame_silently(tmp_path: Path) -> None:
    failing = adaptive.Learner1D(always_fails, bounds=(0, 1))  # fails before its first save
    rm = run_to_the_end(make_rm(tmp_path, [failing], save_dataframe=True, max_fails=1))
    with pytest.warns(ar.DataFrameWarning, match=r"^1 of 1 learner left out .* without a data"):
        df = ar.Run(rm.run_dir.path).load_dataframes()
    assert df.empty
    assert df.attrs["skipped"] == [0]


def test_a_learner_a_job_holds_is_left_to_it(tmp_path: Path) -> None:
    # A job of a session without the option holds the learner (its managers stopped, the
    # job goes on); the option comes on meanwhile.
    first = make_rm(tmp_path, make_learners(1, delay=0.05), goal=10_000, kill_grace_s=1)
    first.start()
    try:
        wait_for(lambda: Path(first.fnames[0]).exists(), what="a first save")
        first.stop()
        again = make_rm(
            tmp_path, make_learners(1, delay=0.05), goal=10_000, save_dataframe=True, kill_grace_s=1
        )
        again.start()
        try:
            assert [row.state for row in again.learners()] == ["running"]
            with pytest.warns(ar.DataFrameWarning) as warned:
                df = again.load_dataframes(compute_missing=True)
            assert not dataframe_path(again.fnames[0], DataFrameFormat.PARQUET).exists()
        finally:
            stop_and_cancel(again)
    finally:
        stop_and_cancel(first)
    (message,) = [str(w.message) for w in warned]
    assert "1 of 1 learner left out (attrs['skipped']): 1 without a DataFrame file" in message
    assert "1 learner of these held by running jobs, left alone" in message
    assert "DataFrames of" not in message  # none could not be written: none was tried
    assert df.attrs["missing"] == [0]
