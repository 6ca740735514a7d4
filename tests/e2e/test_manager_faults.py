"""Runs that survive: a full disk under the run directory, a manager thread killed by an error.

The full disk is real: a small tmpfs holding the run directory, filled with a file until
writes fail with ENOSPC (``helpers_disks``; mounting needs root, the test is skipped otherwise).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptive
import pytest
from helpers_disks import fill, small_disk
from helpers_run import make_learners, make_rm, stop_and_cancel, wait_for

from adaptive_runner.common.saving import load_data
from adaptive_runner.errors import ManagerDiedError
from adaptive_runner.manager.logs import JsonFileTee
from adaptive_runner.manager.run_manager import RunManager
from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database, LearnerState

if TYPE_CHECKING:
    from adaptive_runner.state.schema import TaskRow

__all__ = ["small_disk"]  # a fixture, used by name


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a manager.log; a line cut short by the full disk is left out."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def test_a_full_disk_neither_ends_the_job_manager_nor_the_run(small_disk: Path) -> None:
    tmp_path = small_disk.parent
    rm = make_rm(
        tmp_path,
        make_learners(1, delay=0.05),
        goal=150,
        run_dir=small_disk / "run",
        max_simultaneous_jobs=1,
        max_fails=10,
    ).start()
    jm = rm.job_manager
    assert jm is not None
    try:

        def running_with_a_save() -> TaskRow | None:
            with Database.open(rm.run_dir.database) as db:
                rows = [row for row in db.tasks() if row.finished is None]
            saved = (tmp_path / "data" / "l0.pickle").exists()  # the data is not on the disk
            return rows[0] if rows and saved else None

        row = wait_for(running_with_a_save, what="learner 0 running with a save")
        filler = fill(small_disk / "filler")
        # Its job is lost, so a new array must be written (its script) and submitted.
        assert row.pid is not None
        os.kill(row.pid, signal.SIGKILL)
        errors: list[BaseException] = []  # each failed round's own, kept: ids are not reused

        def three_failed_rounds() -> bool:
            if jm.error is not None and all(jm.error is not e for e in errors):
                errors.append(jm.error)
            return len(errors) >= 3  # their tracebacks overflow manager.log's last page

        wait_for(three_failed_rounds, what="rounds failing on the full disk, one after another")
        assert jm.running
        assert rm.dead_managers() == []
        assert rm.status()["waiting"] == 1
        filler.unlink()
        assert rm.wait(timeout=180)  # the bound only guards against a hang
    finally:
        stop_and_cancel(rm)
    assert rm.dead_managers() == []
    events = [r["event"] for r in log_records(small_disk / "run" / "manager.log")]
    lost = events.index("manager.log lost lines it could not write")
    assert "submitted array" in events[lost:]
    assert events[-1] == "run finished"


def test_a_full_disk_under_the_run_directory_costs_running_learners_nothing(
    small_disk: Path,
) -> None:
    # The task logs are on the full disk (the data files are not): before, each worker died
    # of its log's ENOSPC (the heartbeat's status line), its learner was charged a failure
    # and computed again by a new job; three such episodes failed a run.
    tmp_path = small_disk.parent
    rm = make_rm(
        tmp_path,
        make_learners(2, delay=0.02),
        goal=500,
        run_dir=small_disk / "run",
        max_simultaneous_jobs=2,
    ).start()
    try:
        wait_for(lambda: min(saved(rm, i) for i in range(2)) >= 100, "both learners saving")
        filler = fill(small_disk / "filler")
        at_fill = [saved(rm, i) for i in range(2)]
        wait_for(
            lambda: all(saved(rm, i) >= at_fill[i] + 100 for i in range(2)),
            "both learners saving while the disk is full",
        )
        filler.unlink()
        assert rm.wait(timeout=180)  # the bound only guards against a hang
    finally:
        stop_and_cancel(rm)
    with Database.open(rm.run_dir.database) as db:
        rows = db.learners()
        holds = db.tasks()
    assert [(r.state, r.failures) for r in rows] == [(LearnerState.DONE, 0)] * 2
    assert sorted((t.learner, t.outcome) for t in holds) == [(0, "done"), (1, "done")]
    for hold in holds:
        events = log_records(rm.run_dir.task_log(hold.task))
        assert "lines_lost" in [e["event"] for e in events]


def saved(rm: RunManager, learner: int) -> int:
    """The points in a learner's data file (0 before its first save)."""
    data = adaptive.Learner1D(abs, bounds=(-1, 1))
    try:
        load_data(data, Path(rm.fnames[learner]))
    except FileNotFoundError:
        return 0
    return int(data.npoints)


def test_manager_log_on_a_full_disk_loses_lines_not_its_caller(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = small_disk / "manager.log"
    tee = JsonFileTee()
    tee.open(log)
    try:
        tee(None, "info", {"event": "before"})
        filler = fill(small_disk / "filler")
        for _ in range(3):  # the first one may still fill up the file's last page
            assert tee(None, "error", {"event": "x" * 10_000}) == {"event": "x" * 10_000}
        assert capsys.readouterr().err.count(f"cannot write {log}") == 1  # once per streak
        filler.unlink()
        tee(None, "warning", {"event": "after"})
    finally:
        tee.close()
    records = log_records(log)
    assert records[0]["event"] == "before"
    assert records[-2]["event"] == "manager.log lost lines it could not write"
    assert records[-2]["lost"] >= 2
    assert "No space left on device" in records[-2]["error"]
    assert records[-1]["event"] == "after"


class Boom(BaseException):
    """What no round handles: it ends the thread it is raised in."""


class ExplodingLocal(Local):
    """The Local scheduler, but submitting raises Boom."""

    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        del script, n_tasks, max_running, tag
        raise Boom("the scheduler exploded")


def test_a_job_manager_that_dies_makes_wait_raise(tmp_path: Path) -> None:
    fnames = [tmp_path / "data" / "l0.pickle"]
    rm = RunManager(
        ExplodingLocal(cores=1), make_learners(1), fnames, goal=30, run_dir=tmp_path / "run"
    ).start()
    try:
        with pytest.raises(ManagerDiedError, match="job manager stopped on an error: Boom") as e:
            rm.wait(timeout=120)  # the bound only guards against a hang
        assert isinstance(e.value.error, Boom)
        assert rm.problems()[0] == "job manager stopped: Boom: the scheduler exploded"
        panel = rm.info()
        panel.close()
        assert "job manager stopped: Boom: the scheduler exploded" in panel.status.value
        assert "managers stopped" in panel.status.value
    finally:
        stop_and_cancel(rm)
    records = log_records(tmp_path / "run" / "manager.log")
    died = [r for r in records if r["event"].startswith("the job manager stopped on an error")]
    assert len(died) == 1
    assert "Boom: the scheduler exploded" in died[0]["exception"]
