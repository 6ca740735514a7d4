"""The status panel: snapshots of real Local runs, and the ipywidgets panel driven by clicks."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import adaptive
import helpers_run
import pytest
from helpers_run import always_fails, make_learners, stop_and_cancel, wait_for

import adaptive_runner as ar
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.schedulers.local import Local
from adaptive_runner.schedulers.slurm import SLURM, parse_squeue
from adaptive_runner.state.database import Database, LearnerRow, LearnerState
from adaptive_runner.status.queue import (
    GroupQueue,
    Looks,
    QueueRow,
    QueueView,
    TaskGroup,
    held_by_task,
    queue_html,
)
from adaptive_runner.status.snapshot import (
    counts_html,
    finished_text,
    parse_selection,
    progress_html,
    status_html,
    table_html,
)
from adaptive_runner.status.totals import (
    DataSize,
    Totals,
    queue_waits,
    totals_html,
    totals_items,
)
from adaptive_runner.widgets import StatusSnapshot, View
from adaptive_runner.widgets.log_view import LogSource, log_html, log_sources
from adaptive_runner.widgets.plot import LearnerPlot, learner_png

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from adaptive_runner.schedulers.base import QueuedTask
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
    # The worker's JSON lines as the CLI prints them: time, task, level, event, fields.
    assert re.search(rf"Z {re.escape(str(running.task))} info +started host=", panel.log.value)
    assert "{&quot;" not in panel.log.value
    assert panel.log.value.count("<pre") == 1  # one file per task: events and output
    assert panel.hide_log_button.layout.display is None
    panel.hide_log_button.click()
    assert panel.log.value == ""
    return running


def check_data_size_agrees_with_plot(panel: StatusPanel) -> None:
    """The data size counts the file a plot reads, though the panel was made (and first
    looked at the disk) before any learner had saved: no "0 B" beside a plot of points.
    """
    panel.selection.value = "0"
    panel.plot_button.click()
    wait_for(lambda: panel.plot_image.value, what="the plot of learner 0")
    assert "points" in panel.plot_note.value
    panel.hide_plot_button.click()
    data = panel.refresh().totals.data
    assert data.n_files >= 1
    assert data.age_s < 1
    assert f"in {data.n_files} files</span>" in panel.totals.value  # fresh: no age shown


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

        def queue_running() -> bool:
            queue = panel.snapshot.queue
            return queue is not None and any(row.task in queue.held for row in queue.rows())

        wait_for(queue_running, what="a task holding a learner in the queue view")
        assert "<b>queue</b>: running " in panel.queue.value
        with panel._lock:  # the snapshot and the widgets of one refresh
            assert panel.snapshot.counts["running"] >= 1
            assert f"running {panel.snapshot.counts['running']}" in panel.counts.value
        assert "0 of 3 finished: 0 done · 0 failed · 0 cancelled" in panel.progress.value

        check_data_size_agrees_with_plot(panel)
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
        assert "3 finished: 0 done · 0 failed · 3 cancelled" in panel.progress.value
        assert 'class="ar-progress-cancelled" title="3 cancelled" style="width:100%' in (
            panel.progress.value
        )

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


def display_html(obj: object) -> str:
    """What Jupyter shows of ``obj`` as a cell's last expression: IPython's own formatter."""
    from IPython.core.formatters import DisplayFormatter  # noqa: PLC0415 - tests only

    data, _ = DisplayFormatter().format(obj)  # type: ignore[no-untyped-call]
    return str(data["text/html"])


def check_display_while_running(rm: ar.RunManager) -> None:
    """``rm.start()`` as a cell's last line: one line that points to the live panel.

    No counts or totals, which would stand stale above the live panel of ``rm.info()``.
    """
    page = display_html(rm)
    assert "managers running; <code>info()</code> shows the live panel" in page
    for figure in ("ar-counts-row", "ar-totals-row", "running 2", "CPU-hours"):
        assert figure not in page


def test_panel_of_a_run_whose_managers_are_stopped(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2, delay=0.05), goal=10_000).start()
    try:
        wait_for(lambda: rm.status()["running"] == 2, what="both learners running")
        check_display_while_running(rm)
        rm.stop()
        stopped = display_html(rm)
        assert "managers stopped" in stopped  # a summary again: the managers stopped it
        assert re.search(r"as of \d\d:\d\d:\d\d", stopped)
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


def test_progress_names_done_failed_and_cancelled(finished_run: ar.RunManager) -> None:
    snap = StatusSnapshot.take(finished_run.run_dir, managers_running=False)
    assert finished_text(snap) == "4 finished: 3 done · 1 failed · 0 cancelled"
    bar = progress_html(snap)
    assert 'class="ar-progress-done" title="3 done" style="width:75%;' in bar
    assert 'class="ar-progress-failed" title="1 failed" style="width:25%;' in bar
    assert "ar-progress-cancelled" not in bar  # none: no sliver either
    counts = {"waiting": 0, "running": 0, "done": 1084, "failed": 0, "cancelled": 916}
    cancelled = dataclasses.replace(snap, counts=counts)
    assert finished_text(cancelled) == "2000 finished: 1084 done · 0 failed · 916 cancelled"
    assert 'title="916 cancelled" style="width:45.8%;' in progress_html(cancelled)
    counts = {"waiting": 5, "running": 5, "done": 0, "failed": 10, "cancelled": 0}
    half = dataclasses.replace(snap, counts=counts)
    assert finished_text(half) == "10 of 20 finished: 0 done · 10 failed · 0 cancelled"
    assert 'title="10 failed" style="width:50%;' in progress_html(half)  # not a full red bar


def test_status_line_names_a_dead_manager(finished_run: ar.RunManager) -> None:
    snap = StatusSnapshot.take(
        finished_run.run_dir,
        managers_running=False,
        dead_managers=["job manager stopped: OSError: [Errno 28] No space left on device"],
    )
    assert "job manager stopped: OSError: [Errno 28] No space left on device" in status_html(snap)
    assert "stopped:" not in status_html(dataclasses.replace(snap, dead_managers=()))


# -- totals, queue view, text info, log viewer, plot ------------------------------------------

T0 = 1_700_000_000.0


def test_totals_of_a_recorded_state(tmp_path: Path) -> None:
    """Known holds, heartbeats and submissions give known totals (real sqlite, fixed clock)."""
    run_dir = helpers_run.make_run(tmp_path / "run", 3)  # data files run/data/<i>.pickle
    (tmp_path / "run" / "data").mkdir()
    (tmp_path / "run" / "data" / "0.pickle").write_bytes(b"x" * 1000)
    (tmp_path / "run" / "data" / "1.pickle").write_bytes(b"x" * 500)
    with Database.open(run_dir.database) as db:
        db.record_array("L1", n_tasks=2, script="s", now=T0)
        db.record_array("L2", n_tasks=1, script="s", now=T0 + 100)
        # L1_0 waits 10 s, holds learner 0 for an hour at 50 % of a core, then learner 2.
        assert db.claim("L1_0", host="h", pid=1, now=T0 + 10, array="L1") is not None
        db.heartbeat("L1_0", 0, npoints=5, loss=0.1, cpu=50.0, memory=100, now=T0 + 20)
        db.flush_heartbeats()  # as the database manager does every second
        assert db.done("L1_0", 0, npoints=9, loss=0.01, now=T0 + 10 + 3600)
        # L1_1 waits 30 s and holds learner 1 (at 200 %, 2 GB) until "now".
        assert db.claim("L1_1", host="h", pid=2, now=T0 + 30, array="L1") is not None
        db.heartbeat("L1_1", 1, npoints=3, loss=0.5, cpu=200.0, memory=2 * 10**9, now=T0 + 40)
        assert db.claim("L1_0", host="h", pid=1, now=T0 + 3630, array="L1") is not None
        db.flush_heartbeats()  # L2 never claimed: its task waits on, and counts no wait
    now = T0 + 2 * 3600 + 30  # L1_1 held learner 1 for 2 h, L1_0 learner 2 for 1 h
    snap = StatusSnapshot.take(run_dir, managers_running=False, clock=lambda: now)
    totals = snap.totals
    assert totals.elapsed_s == 2 * 3600 + 30  # first submission to now: the run goes on
    assert totals.held_hours == pytest.approx(1 + 2 + 1)
    # Each hold at its learner's latest sample: 1 h x 0.5 + 2 h x 2.0 + 1 h x 0 (no sample).
    assert totals.cpu_hours == pytest.approx(0.5 + 4.0)
    assert totals.mean_cpu_percent == 200.0  # learner 2 has no sample yet
    assert totals.n_sampled == 1
    assert totals.memory_bytes == 2 * 10**9  # the running learners' sum
    assert totals.data == DataSize(1500, 2)
    assert totals.median_wait_s == 20.0  # L1_0 10 s, L1_1 30 s
    assert totals.n_waits == 2
    items = dict(totals_items(totals))
    assert items["CPU-hours"] == "4.5 (estimate; 4 h held)"
    assert items["memory"] == "2.0 GB (sum over running workers)"
    assert items["data on disk"] == "1.5 kB in 2 files"
    assert items["median queue wait"] == "20 s (2 tasks)"
    assert 'class="ar-totals-row"' in totals_html(totals)


def test_totals_of_a_finished_run_end_with_its_last_learner(finished_run: ar.RunManager) -> None:
    snap = StatusSnapshot.take(finished_run.run_dir, managers_running=False)
    later = StatusSnapshot.take(
        finished_run.run_dir, managers_running=False, clock=lambda: snap.taken_at + 3600
    )
    assert later.totals.elapsed_s == snap.totals.elapsed_s  # the clock stopped at the end
    assert snap.totals.elapsed_s is not None
    assert snap.totals.elapsed_s > 0
    assert snap.totals.held_hours > 0
    assert snap.totals.n_waits == len({t.task for t in finished_run.tasks()})
    assert snap.totals.mean_cpu_percent is None  # nothing runs
    sizes = [Path(f).stat().st_size for f in finished_run.fnames if Path(f).exists()]
    assert snap.totals.data == DataSize(sum(sizes), len(sizes))
    assert snap.queue is None  # only a panel's looks ask the schedulers


def test_queue_waits_count_a_packed_allocation_once() -> None:
    firsts = {"7_0@0": T0 + 5, "7_0@1": T0 + 9, "7_1": T0 + 20, "99_0": T0}
    assert sorted(queue_waits(firsts, {"7": T0}, [SLURM()])) == [5.0, 20.0]


class CountingLocal(Local):
    """The Local scheduler, counting its queue calls (the panel's looks are throttled)."""

    calls = 0

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        CountingLocal.calls += 1
        return super().queue_named(array_ids)


def test_looks_ask_each_group_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [0.0]
    schedulers = [CountingLocal().bind(tmp_path / "jobs"), CountingLocal().bind(tmp_path / "jobs")]
    looks = Looks(schedulers, queue_interval_s=5.0, clock=lambda: now[0])
    (tmp_path / "jobs").mkdir()
    CountingLocal.calls = 0
    for t in (0.0, 1.0, 4.9):
        now[0] = t
        view = looks.queue({0: ["L1"], 1: ["L2"]}, {})
    assert CountingLocal.calls == 2  # one per group, not one per refresh
    assert view.age_s == pytest.approx(4.9)
    now[0] = 5.0
    looks.queue({0: ["L1"]}, {})  # group 1 has no unfinished array: not asked
    assert CountingLocal.calls == 3


def test_looks_stat_the_data_files_again_as_soon_as_that_is_cheap(tmp_path: Path) -> None:
    """A look at the disk is due once it took 5 % of the time since, at the latest after 30 s."""
    now = [0.0]
    looks = Looks([], disk_interval_s=30.0, clock=lambda: now[0])
    data = tmp_path / "0.pickle"

    def taking(cost: float) -> Callable[[], list[str]]:
        def fnames() -> list[str]:
            now[0] += cost  # the stats that follow take no time on this clock
            return [str(data)]

        return fnames

    assert looks.data_size(taking(0.001)) == DataSize(0, 0)  # took 1 ms: due after 20 ms
    data.write_bytes(b"x" * 10)
    now[0] += 0.01
    cached = looks.data_size(taking(0.001))
    assert cached.n_files == 0
    assert cached.age_s == pytest.approx(0.011)
    now[0] += 0.01
    assert looks.data_size(taking(0.001)) == DataSize(10, 1)
    now[0] += 1.0
    assert looks.data_size(taking(2.0)) == DataSize(10, 1)  # took 2 s: due after 30 s, not 40
    data.write_bytes(b"x" * 20)
    now[0] += 20.0
    stale = looks.data_size(taking(2.0))
    assert stale.n_bytes == 10
    assert stale.age_s == pytest.approx(22.0)
    totals = Totals(None, 0.0, 0.0, None, 0, 0, stale, None, 0)
    assert dict(totals_items(totals))["data on disk"] == "10 B in 1 files (22 s ago)"
    now[0] += 10.0
    assert looks.data_size(taking(2.0)) == DataSize(20, 1)


def test_queue_view_shows_slurm_pending_reasons() -> None:
    text = (Path(__file__).parents[1] / "data" / "slurm" / "squeue_pending_running.txt").read_text()
    group = GroupQueue.of(0, parse_squeue(text, ["2989"]))
    view = QueueView((group,), held_by_task({"2989_0": 7, "2989_1@0": 8, "2989_1@1": 5}), 2.0)
    assert view.n_running == 8
    assert view.n_pending == 4
    assert [row.task for row in view.rows()] == [f"2989_{i}" for i in (0, 1, *range(2, 12))]
    assert view.held == {"2989_0": (7,), "2989_1": (5, 8)}  # packed workers count for their task
    assert view.by_reason() == [
        TaskGroup(JobState.RUNNING, None, tuple(f"2989_{i}" for i in range(8))),
        TaskGroup(JobState.PENDING, "JobArrayTaskLimit", tuple(f"2989_{i}" for i in range(8, 12))),
    ]
    page = queue_html(view, max_tasks=3)
    assert "running 8 · pending 4 · asked 2 s ago" in page
    assert page.count("<details") == 2
    assert "<summary><b>running</b> · 8 tasks</summary>" in page
    assert "<code>2989_1</code> (learners 5, 8)" in page
    assert "<code>2989_0</code> (learner 7)" in page
    assert "… and 5 more" in page  # 8 running, 3 listed
    assert "<summary><b>pending</b>: JobArrayTaskLimit · 4 tasks</summary>" in page


def test_queue_view_names_a_long_reason_once_with_its_tasks_under_it() -> None:
    """2,000 pending tasks for two reasons: two lines, not 2,000 rows repeating a reason."""
    long = "ReqNodeNotAvail, UnavailableNodes:n[001-120,200-240]"
    rows = [
        QueueRow(f"12_{i}", 0, JobState.PENDING, long if i % 4 else "Priority") for i in range(2000)
    ]
    pending = GroupQueue(tuple(rows), 0, 2000)
    running = GroupQueue((QueueRow("13_0", 1, JobState.RUNNING, None),), 1, 0)
    view = QueueView((pending, running), {"13_0": (4,)}, 0.0)
    groups = view.by_reason()
    assert [(g.state, g.reason, len(g.tasks)) for g in groups] == [
        (JobState.RUNNING, None, 1),  # running first, then the largest group
        (JobState.PENDING, long, 1500),
        (JobState.PENDING, "Priority", 500),
    ]
    assert groups[2].tasks[:2] == ("12_0", "12_4")
    page = queue_html(view)
    assert page.count("ReqNodeNotAvail") == 1
    assert f"<b>pending</b>: {long} · 1500 tasks" in page
    assert "<b>pending</b>: Priority · 500 tasks" in page
    assert "… and 1300 more" in page  # 200 listed of 1500
    assert "<code>13_0</code> (learner 4)" in page
    one = QueueView((GroupQueue((QueueRow("7_0", 0, JobState.PENDING, None),), 0, 1),), {}, 0.0)
    assert "<summary><b>pending</b> · 1 task</summary>" in queue_html(one)  # no reason given


def test_queue_view_says_when_the_scheduler_cannot_be_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue here
    view = Looks([SLURM()]).queue({0: ["5"]}, {})
    assert view.rows() == []
    assert "squeue not found on PATH" in view.errors[0]
    assert "cannot read the queue of group 0: squeue not found" in queue_html(view)


def test_text_info_and_html_summary(finished_run: ar.RunManager) -> None:
    text = finished_run.info(format="text")
    assert isinstance(text, str)
    assert repr(text) == str(text)  # shows as itself at a prompt
    lines = text.splitlines()
    assert lines[0] == "run: run finished"
    assert lines[1] == "learners: waiting 0, running 0, done 3, failed 1, cancelled 0; total 4"
    labels = [line.split("  ")[0].strip() for line in lines[2:8]]
    assert labels == [label for label, _ in totals_items(finished_run.snapshot().totals)]
    run = ar.Run(finished_run.run_dir.path)
    assert run.info().splitlines()[1:] == lines[1:]
    with pytest.raises(ConfigError, match="format must be 'widget' or 'text'"):
        finished_run.info(format=cast("Any", "html"))
    with pytest.raises(ConfigError, match=r"RunManager\.open"):
        run.info(format=cast("Any", "widget"))
    for page in (finished_run._repr_html_(), run._repr_html_()):
        assert "failed 1" in page
        assert 'class="ar-totals-row"' in page
        assert "CPU-hours" in page


def test_html_summary_of_a_run_not_started(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(1))
    assert "not started" in rm._repr_html_()


def test_log_sources_and_search(finished_run: ar.RunManager) -> None:
    with Database.open(finished_run.run_dir.database, read_only=True) as db:
        failed = log_sources(db, [], failed_only=True)
        assert [(s.learner, s.outcome) for s in failed] == [(3, "failed")]
        assert log_sources(db, [0, 1], failed_only=True) == []
        latest = log_sources(db, [0, 3], failed_only=False)
        assert [s.learner for s in latest] == [0, 3]
        with pytest.raises(ConfigError, match="no learners selected"):
            log_sources(db, [], failed_only=False)
    page = log_html(finished_run.run_dir, failed, "SOLVER error")
    assert "(failed)" in page
    assert "<mark>solver error</mark>: giving up at" in page  # as written, any case matched
    assert "lines with <mark>SOLVER error</mark>: 1" in page
    assert "ZeroDivisionError" not in page.split("</p>", 1)[1]  # only the matching lines
    # A match in a traceback shows its event with the whole traceback, on lines of its own.
    page = log_html(finished_run.run_dir, failed, "cannot evaluate")
    assert "error   failed learner=3" in page
    assert "\n    Traceback (most recent call last):\n" in page
    assert "    <mark>ZeroDivisionError</mark>" not in page
    assert "ZeroDivisionError: <mark>cannot evaluate</mark> at" in page
    assert "no failed jobs" in log_html(finished_run.run_dir, [])
    missing = log_html(finished_run.run_dir, [LogSource(9, "L9_0", "lost")])
    assert "L9_0 (lost)" in missing
    assert "does not exist yet" in missing


def test_failed_only_lists_the_learners_own_failures_first(tmp_path: Path) -> None:
    """A failure of the learner's code comes before newer tasks that were lost or killed."""
    run_dir = helpers_run.make_run(tmp_path / "run", 4)
    with Database.open(run_dir.database) as db:
        db.record_array("L1", n_tasks=4, script="s", now=T0)
        for i in range(4):
            assert db.claim(f"L1_{i}", host="h", pid=i, now=T0 + i, array="L1") is not None
        assert db.fail("L1_0", 0, error="ZeroDivisionError", now=T0 + 10)
        db.mark_lost(["L1_1"], reason="gone from the queue", now=T0 + 20)
        assert db.kill("L1_2", reason="oom-kill", now=T0 + 30) is not None
        assert db.fail("L1_3", 3, error="ValueError", now=T0 + 5)
        sources = log_sources(db, [], failed_only=True, limit=3)
        assert [(s.task, s.outcome) for s in sources] == [
            ("L1_3", "failed"),  # the failures first, the latest hold (by its claim) first
            ("L1_0", "failed"),
            ("L1_2", "killed"),  # then the latest of the others
        ]
        assert [s.task for s in log_sources(db, [1, 2], failed_only=True)] == ["L1_2", "L1_1"]


def test_plot_of_a_learner_with_and_without_data(finished_run: ar.RunManager) -> None:
    plot = LearnerPlot(ar.Run(finished_run.run_dir.path))
    picture = plot.draw(0)
    assert picture.png is not None
    assert picture.png.startswith(b"\x89PNG")
    assert picture.note.startswith(f"{finished_run.load_learners()[0].npoints} points")
    assert not plot.stale(0)
    assert plot.draw(0) is picture  # the data file did not change: nothing loaded
    data_file = Path(finished_run.fnames[0])
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert plot.stale(0)
    assert plot.stale(1)
    empty = plot.draw(3)  # failed at its first point: nothing saved
    assert (empty.png, empty.note) == (None, "no data yet")


def test_matplotlib_draws_2d_learners_and_says_what_it_cannot() -> None:
    learner = adaptive.Learner2D(lambda xy: xy[0] * xy[1], bounds=[(-1, 1), (-1, 1)])
    adaptive.runner.simple(learner, npoints_goal=20)
    if importlib.util.find_spec("holoviews") is None:
        png, how = learner_png(learner)
        assert png is not None
        assert "matplotlib" in how
        png, how = learner_png(adaptive.SequenceLearner(abs, [1, 2]))
        assert png is None
        assert "install holoviews to plot a SequenceLearner" in how
    else:
        png, how = learner_png(learner)
        assert png is not None
        assert "holoviews" in how


def test_panel_log_filter_and_plot(finished_run: ar.RunManager) -> None:
    panel = finished_run.info()
    try:
        assert "CPU-hours" in panel.totals.value
        assert "queue" in panel.queue.value  # no array left: running 0, pending 0
        panel.failed_only.value = True
        panel.log_button.click()
        assert "learner 3" in panel.log.value
        panel.log_search.value = "giving up"
        assert "<mark>giving up</mark>" in panel.log.value
        panel.hide_log_button.click()
        panel.selection.value = "0"
        panel.plot_button.click()
        wait_for(lambda: panel.plot_image.value, what="the plot of learner 0")
        assert "learner 0:" in panel.plot_note.value
        assert panel.plot_box.layout.display is None
        panel.selection.value = "3"
        panel.plot_button.click()
        wait_for(lambda: "no data yet" in panel.plot_note.value, what="learner 3's note")
        assert cast("str | None", panel.plot_image.layout.display) == "none"
        panel.hide_plot_button.click()
        assert cast("str | None", panel.plot_box.layout.display) == "none"
    finally:
        panel.close()


def test_overview_of_the_sweep_plots_the_learner_clicked(finished_run: ar.RunManager) -> None:
    # start() recorded each learner's partial keywords; learner 3 (always_fails) has none.
    parameters = ar.Run(finished_run.run_dir.path).parameters()
    assert parameters == [{"a": a, "delay": 0.0} for a in range(3)] + [{}]
    panel = finished_run.info()
    try:
        overview = panel.overview
        assert overview.widget.layout.display == "none"  # shown on request only
        panel.overview_button.value = True
        assert overview.shown
        assert overview.cells._options_labels == ("0", "1", "2", "3")
        assert overview.cells.tooltips[1] == "learner 1: a=1, delay=0"
        # "delay" is missing from learner 3: it varies, so it is offered as the y axis.
        assert (overview.x.value, overview.y.value) == ("a", "delay")
        assert overview.style.value.count(">div>button:nth-child(") == 4
        assert "outline:2px solid #d62728" in overview.style.value  # the failed learner
        assert "loss" in overview.legend.value
        by_loss = overview.style.value
        overview.measure.value = "npoints"
        assert overview.style.value != by_loss
        assert "points" in overview.legend.value
        overview.y.value = ""
        assert "grid-template-rows:repeat(1," in overview.style.value
        overview.cells.value = 1  # as a click on learner 1's cell
        assert panel.selection.value == "1"
        wait_for(lambda: "learner 1:" in panel.plot_note.value, what="the plot of learner 1")
        panel.hide_plot_button.click()
        assert overview.cells.value is None  # a click on it plots it again
        panel.refresh()  # a refresh draws the shown overview again
        panel.overview_button.value = False
        assert not overview.shown
    finally:
        panel.close()


def test_a_learner_picked_while_another_loads_is_drawn(
    finished_run: ar.RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A click on learner 2 while learner 0's plot still loads (a first matplotlib import
    in a fresh kernel): learner 2 is drawn once learner 0 is, without a refresh."""
    panel = finished_run.info()
    panel.auto_button.value = False  # nothing but the click may draw it
    plotter = panel._plotter
    draw = plotter.draw
    slow = threading.Event()

    def slow_draw(index: int) -> Any:
        if index == 0:
            slow.wait(5)
        return draw(index)

    monkeypatch.setattr(plotter, "draw", slow_draw)
    try:
        panel.selection.value = "0"
        panel.plot_button.click()
        assert panel.plot_note.value == "loading learner 0 …"
        panel.selection.value = "2"
        panel.plot_button.click()
        slow.set()
        wait_for(lambda: "learner 2:" in panel.plot_note.value, what="the plot of learner 2")
    finally:
        panel.close()
