"""The status panel: snapshots of real Local runs, and the ipywidgets panel driven by clicks."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import adaptive
import helpers_run
import pytest
from helpers_run import always_fails, make_learners, stop_and_cancel, wait_for

from adaptive_runner.database import Database, LearnerRow, LearnerState
from adaptive_runner.errors import ConfigError
from adaptive_runner.run_dir import RunDir
from adaptive_runner.widgets import StatusSnapshot, View
from adaptive_runner.widgets.snapshot import (
    counts_html,
    parse_selection,
    status_html,
    table_html,
    tail,
)

if TYPE_CHECKING:
    from pathlib import Path

    import adaptive_runner as ar
    from adaptive_runner.widgets.panel import StatusPanel


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> ar.RunManager:
    """Three learners done and one failed (max_fails=1), managers stopped."""
    tmp_path = tmp_path_factory.mktemp("finished")
    learners = [*make_learners(3), adaptive.Learner1D(always_fails, bounds=(0, 1))]
    rm = make_rm(tmp_path, learners, max_fails=1).start()
    assert not rm.wait(timeout=120)  # not all done: one failed
    return rm


def make_rm(tmp_path: Path, learners: list[adaptive.Learner1D], **kwargs: Any) -> ar.RunManager:
    # A '<b>' in the file names checks that the table escapes what users name their files.
    return helpers_run.make_rm(tmp_path, learners, fname_prefix="<b>", **kwargs)


def test_snapshot_of_a_finished_run(finished_run: ar.RunManager) -> None:
    snap = StatusSnapshot.take(finished_run.run_dir, managers_running=False)
    assert snap.counts == {"waiting": 0, "running": 0, "done": 3, "failed": 1, "cancelled": 0}
    assert snap.total == 4
    assert snap.n_final == 4
    assert snap.finished
    assert snap.n_pages == 1
    assert snap.run_name == "run"
    assert [row.index for row in snap.rows] == [0, 1, 2, 3]
    for row in snap.rows[:3]:
        assert row.state == LearnerState.DONE
        assert row.npoints is not None
        assert row.npoints >= 20
        assert row.task is not None
        assert row.host
        assert row.attempts == 1
        assert row.failures == 0
        assert snap.heartbeat_age(row) is None  # only running learners have one
    failed = snap.rows[3]
    assert failed.state == LearnerState.FAILED
    assert failed.failures == 1
    assert "ZeroDivisionError" in (failed.error or "")
    assert "managers" not in counts_html(snap)
    assert "failed 1" in counts_html(snap)
    table = table_html(snap)
    assert "&lt;b&gt;0.pickle" in table
    assert "<b>0.pickle" not in table
    assert "ZeroDivisionError: cannot evaluate at" in table


def test_snapshot_views(finished_run: ar.RunManager) -> None:
    rd = finished_run.run_dir
    by_points = StatusSnapshot.take(
        rd, View(sort_by="npoints", descending=True), managers_running=False
    )
    points = [row.npoints for row in by_points.rows]
    # The failed learner has npoints None (it never sent a heartbeat): empty values sort last.
    assert points[-1] is None
    assert points[:3] == sorted(points[:3], reverse=True)  # type: ignore[type-var]
    done = StatusSnapshot.take(rd, View(state=LearnerState.DONE), managers_running=False)
    assert [row.index for row in done.rows] == [0, 1, 2]
    assert done.n_matching == 3
    paged = StatusSnapshot.take(rd, View(page=1, page_size=3), managers_running=False)
    assert [row.index for row in paged.rows] == [3]
    assert paged.n_pages == 2
    past_end = StatusSnapshot.take(rd, View(page=9, page_size=3), managers_running=False)
    assert past_end.view.page == 1  # moved to the last page
    nothing = StatusSnapshot.take(rd, View(state=LearnerState.RUNNING), managers_running=False)
    assert nothing.rows == ()
    assert "no learners in this view" in table_html(nothing)
    with pytest.raises(ConfigError, match="sort_by must be one of"):
        View(sort_by="age")


def test_last_task_of_learners(finished_run: ar.RunManager) -> None:
    with Database.open(finished_run.run_dir.database) as db:
        rows = db.learners()
        assert db.last_task(0) == rows[0].task
        assert db.last_task(3) is not None  # failed: no task on the row, but one held it
        with pytest.raises(ConfigError, match="last_task"):
            db.last_task(4)


def test_parse_selection() -> None:
    assert parse_selection("3, 7-9", 10) == [3, 7, 8, 9]
    assert parse_selection(" 2 2,1 ", 10) == [2, 1]
    assert len(parse_selection("0-99999", 100_000)) == 100_000
    for bad, message in [
        ("", "no learners selected"),
        ("x", "'x' is not a learner index"),
        ("-1", "is not a learner index"),
        ("3-", "is not a learner index"),
        ("10", "numbered 0..9"),
        ("5-3", "numbered 0..9"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_selection(bad, 10)


def test_tail(tmp_path: Path) -> None:
    assert "does not exist" in tail(tmp_path / "missing.log")
    (tmp_path / "empty.log").write_text("")
    assert "is empty" in tail(tmp_path / "empty.log")
    lines = [f"line {i}" for i in range(2000)]
    (tmp_path / "big.log").write_text("\n".join(lines) + "\n")
    text = tail(tmp_path / "big.log", max_bytes=100)
    assert text.startswith("…line ")  # starts at a whole line
    assert text.endswith("line 1999\n")
    (tmp_path / "binary.log").write_bytes(b"\xff\xfe ok\n")
    assert "ok" in tail(tmp_path / "binary.log")


def check_table_controls(panel: StatusPanel) -> None:
    """Sorting and filtering take new snapshots; one page, so no paging."""
    panel.sort_by.value = "heartbeat_age"
    assert panel.snapshot.view.sort_by == "heartbeat_age"
    assert panel.snapshot.rows[0].state == LearnerState.RUNNING
    panel.state_filter.value = "waiting"
    assert all(row.state == LearnerState.WAITING for row in panel.snapshot.rows)
    panel.state_filter.value = ""
    assert panel.prev_button.disabled
    assert panel.next_button.disabled


def check_show_log(panel: StatusPanel) -> LearnerRow:
    """Show the log of a running learner (left selected); return that learner."""
    panel.selection.value = "nonsense"
    panel.log_button.click()
    assert "is not a learner index" in panel.message.value
    running = next(row for row in panel.snapshot.rows if row.state == LearnerState.RUNNING)
    panel.selection.value = str(running.index)
    panel.log_button.click()
    assert f"job {running.task}" in panel.log.value
    assert "&quot;started&quot;" in panel.log.value  # the worker's JSON log, escaped
    assert panel.log.value.count("<pre") == 1  # one file per task: events and output
    assert panel.hide_log_button.layout.display is None
    panel.hide_log_button.click()
    assert panel.log.value == ""
    return running


def test_panel_clicks_on_a_live_run(tmp_path: Path) -> None:
    rm = make_rm(
        tmp_path, make_learners(3, delay=0.05), goal=10_000, max_simultaneous_jobs=2
    ).start()
    try:
        panel = rm.info(refresh_interval=0.2)
        assert panel.auto_button.value
        assert "managers running" in panel.status.value
        assert panel.widget._repr_mimebundle_() == panel._repr_mimebundle_()

        def heartbeating() -> bool:
            snap = panel.snapshot
            return any(snap.heartbeat_age(row) is not None for row in snap.rows)

        wait_for(heartbeating, what="a heartbeat shown by the auto-refresh")
        with panel._lock:  # the snapshot and the widgets of one refresh
            assert panel.snapshot.counts["running"] >= 1
            assert f"running {panel.snapshot.counts['running']}" in panel.counts.value
        assert panel.progress.max == 3

        check_table_controls(panel)

        running = check_show_log(panel)
        panel.cancel_selected_button.click()
        assert f"Cancelled learners {running.index}" in panel.message.value
        assert panel.snapshot.counts["cancelled"] == 1

        panel.cancel_run_button.click()
        assert panel.confirm_box.layout.display is None
        panel.keep_button.click()
        # cast: mypy would keep the `is None` narrowing of the line above past the click
        assert cast("str | None", panel.confirm_box.layout.display) == "none"
        assert panel.snapshot.counts["cancelled"] == 1

        panel.cancel_run_button.click()
        panel.confirm_button.click()
        assert panel.snapshot.counts["cancelled"] == 3
        assert "Cancelled the run: 2 learners cancelled" in panel.message.value
        assert panel.cancel_run_button.disabled
        assert panel.progress.bar_style == "warning"

        panel.load_button.click()
        assert panel.learners is not None
        assert len(panel.learners) == 3
        assert "Loaded 3 learners" in panel.message.value

        # The job manager ends once nothing is waiting or running; then auto-refresh stops.
        wait_for(lambda: not panel.auto_button.value, what="auto-refresh to stop")
        assert "run finished" in panel.status.value
        panel.close()
        assert panel.table.comm is None  # closed with the rest of the panel
    finally:
        stop_and_cancel(rm)


def test_panel_of_a_run_whose_managers_are_stopped(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2, delay=0.05), goal=10_000).start()
    try:
        wait_for(lambda: rm.status()["running"] == 2, what="both learners running")
        rm.stop()
        panel = rm.info()
        assert "managers stopped" in panel.status.value
        assert "RunManager.resume(run_dir)" in panel.status.value
        assert panel.snapshot.counts["running"] == 2  # the last known state
        assert panel.auto_button.value  # sqlite may still change (e.g. a CLI serve elsewhere)
        panel.auto_button.value = False
    finally:
        stop_and_cancel(rm)
    # A panel made from scratch for the same directory reads the same state.
    snap = StatusSnapshot.take(RunDir(tmp_path / "run"), managers_running=False)
    assert snap.counts["cancelled"] == 2


def test_status_line_names_a_dead_manager(finished_run: ar.RunManager) -> None:
    snap = StatusSnapshot.take(
        finished_run.run_dir,
        managers_running=False,
        dead_managers=["job manager stopped: OSError: [Errno 28] No space left on device"],
    )
    assert "job manager stopped: OSError: [Errno 28] No space left on device" in status_html(snap)
    assert "stopped:" not in status_html(dataclasses.replace(snap, dead_managers=()))
