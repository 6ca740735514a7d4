"""The worker as a real process against a real DatabaseManager and run directory."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptive
import cloudpickle
import pytest
from helpers_disks import fill, mounted_tmpfs, read_only
from helpers_run import make_run, set_url, wait_for

from adaptive_runner.job.worker import ADOPTION_MARGIN_S
from adaptive_runner.manager.database_manager import DatabaseManager
from adaptive_runner.state.database import Database, LearnerRow, LearnerState, TaskRow
from adaptive_runner.testing import MemoryScheduler

if TYPE_CHECKING:
    from collections.abc import Iterator

    from adaptive_runner.common.run_dir import RunDir

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120.0  # generous: only a hung worker takes this long

# Learners are cloudpickled with their functions by value, as from a notebook: the worker
# process cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: float, *, calls: str, delay: float = 0.0) -> float:
    """x**2, appending x to the file ``calls`` so a test can count evaluations."""
    import time  # noqa: PLC0415 - the function runs in the worker, pickled by value

    with open(calls, "a") as f:  # noqa: PTH123
        f.write(f"{x!r}\n")
    time.sleep(delay)
    return x**2


def broken(x: float) -> float:
    if abs(x) < 0.5:
        raise ValueError(f"cannot evaluate at {x}")
    return x


async def async_identity(x: float) -> float:
    return x


def record_array(run_dir: RunDir) -> None:
    """Record array L1, whose tasks the workers here are, as the job manager does on submit."""
    with Database.open(run_dir.database) as db:
        db.record_array("L1", n_tasks=3, script="array.sh", now=time.time())


def aborts(x: float) -> float:
    """A crash by signal (a C library calling abort()): no exception, no traceback."""
    import os  # noqa: PLC0415 - the function runs in the worker, pickled by value

    del x
    os.abort()


class Run:
    """A run directory with a started DatabaseManager, and workers started on it."""

    def __init__(self, tmp_path: Path, *, recorded: bool = True, **config: Any) -> None:
        self.tmp_path = tmp_path
        self.calls = tmp_path / "calls.txt"
        self.dir: RunDir = make_run(tmp_path / "run", 1, **config)
        if recorded:
            record_array(self.dir)
        self.fname = Path(self.dir.path / "data" / "0.pickle")
        self.manager = DatabaseManager(self.dir)
        set_url(self.dir, self.manager.start())

    def learner(self, function: Any = None, **kwargs: Any) -> adaptive.Learner1D:
        function = function or functools.partial(square, calls=str(self.calls), **kwargs)
        return adaptive.Learner1D(function, bounds=(-1, 1))

    def write(self, learner: adaptive.Learner1D, goal: object) -> None:
        self.dir.write_learners([cloudpickle.dumps(learner)])
        self.write_goal(goal)

    def write_goal(self, goal: object) -> None:
        self.dir.goal_file.write_bytes(cloudpickle.dumps(goal))

    def start_worker(self, index: int = 0) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "LOCAL_ARRAY_ID": "L1",
            "LOCAL_ARRAY_TASK_ID": str(index),
        }
        out = (self.tmp_path / f"L1_{index}.out").open("wb")
        with out:
            return subprocess.Popen(
                [sys.executable, "-m", "adaptive_runner.worker", str(self.dir.path)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def run_worker(self, index: int = 0) -> int:
        proc = self.start_worker(index)
        return proc.wait(timeout=WAIT_S)

    def output(self, index: int = 0) -> str:
        return (self.tmp_path / f"L1_{index}.out").read_text()

    def events(self, index: int = 0) -> list[dict[str, Any]]:
        path = self.dir.task_log(f"L1_{index}")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def wait_for_event(self, event: str, index: int = 0, min_npoints: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for record in self.events(index):
                if record["event"] == event and record.get("npoints", 0) >= min_npoints:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} in the log: {self.events(index)}\n{self.output(index)}")

    def row(self) -> LearnerRow:
        with Database.open(self.dir.database) as db:
            (row,) = db.learners()
            return row

    def n_calls(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def saved(self) -> adaptive.Learner1D:
        learner = self.learner()
        learner.load(str(self.fname))  # adaptive's own reader
        return learner


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    runs: list[Run] = []

    def factory(*, recorded: bool = True, **config: Any) -> Run:
        runs.append(Run(tmp_path, recorded=recorded, **config))
        return runs[-1]

    yield factory
    for run in runs:
        run.manager.stop()


def _names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def test_runs_to_the_goal_and_reports_done(make: Any) -> None:
    run = make(log_interval_s=0.2, save_interval_s=0.2)
    run.write(run.learner(), goal=30)
    assert run.run_worker() == 0, run.output()

    row = run.row()
    assert row.state == LearnerState.DONE
    assert row.npoints == 30
    assert row.task == "L1_0"
    assert run.saved().npoints == 30
    assert run.n_calls() == 30

    events = run.events()
    names = _names(events)
    assert names[0] == "started"
    assert names[-2:] == ["done", "no_more_work"]
    assert "saved" in names
    assert "resumed" not in names
    started = events[0]
    assert started["task"] == "L1_0"
    assert started["array"] == "L1"
    assert started["index"] == 0
    assert started["learner"] == 0
    assert started["fname"] == str(run.fname)
    assert started["pid"] > 0
    assert started["host"]
    for event in events:
        assert event["level"] in ("info", "error")
        assert event["timestamp"].endswith("Z")
    done = events[-2]
    assert done["npoints"] == 30
    saved = [e for e in events if e["event"] == "saved"]
    assert saved[-1]["npoints"] == 30
    assert saved[-1]["bytes"] == run.fname.stat().st_size


def run_one_task(
    run_dir: RunDir, *, goal: object, rank: int | None = None
) -> tuple[list[LearnerRow], list[TaskRow]]:
    """Run one worker process (task L1_0) on ``run_dir`` to the end; the learners and holds.

    With a ``rank`` it is that worker of a packed allocation (``L1_0@<rank>``).
    """
    run_dir.goal_file.write_bytes(cloudpickle.dumps(goal))
    record_array(run_dir)
    # A rank is a worker of a packed allocation: the manager checks it against the packing.
    packing = None if rank is None else [MemoryScheduler(workers=rank + 1)]
    manager = DatabaseManager(run_dir, schedulers=packing)
    set_url(run_dir, manager.start())
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO), "LOCAL_ARRAY_ID": "L1"}
        env["LOCAL_ARRAY_TASK_ID"] = "0"
        if rank is not None:
            env["ADAPTIVE_RUNNER_RANK"] = str(rank)
        worker = subprocess.run(
            [sys.executable, "-m", "adaptive_runner.worker", str(run_dir.path)],
            env=env,
            capture_output=True,
            timeout=WAIT_S,
            check=False,
        )
        assert worker.returncode == 0, worker.stdout + worker.stderr
        with Database.open(run_dir.database) as db:
            return db.learners(), db.tasks()
    finally:
        manager.stop()


@pytest.mark.parametrize("executor", ["sequential", "loky"])  # loky: a pool, cloudpickle
def test_a_task_goes_on_with_the_next_learner(tmp_path: Path, executor: str) -> None:
    """After its learner's goal a task claims the next one, with adaptive already loaded."""
    run_dir = make_run(tmp_path / "run", 3, executor=executor, save_interval_s=3600.0)
    calls = tmp_path / "calls.txt"
    learners = [
        adaptive.Learner1D(functools.partial(square, calls=str(calls), delay=a / 1000), (-1, 1))
        for a in range(3)
    ]
    run_dir.write_learners([cloudpickle.dumps(learner) for learner in learners])
    rows, tasks = run_one_task(run_dir, goal=20)
    assert [(r.state, r.task, r.npoints) for r in rows] == [(LearnerState.DONE, "L1_0", 20)] * 3
    assert sorted((t.task, t.learner, t.outcome) for t in tasks) == [
        ("L1_0", i, "done") for i in range(3)
    ]
    events = [json.loads(x) for x in run_dir.task_log("L1_0").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert [e["learner"] for e in events if e["event"] == "started"] == [0, 1, 2]
    assert names.count("done") == 3
    assert names[-1] == "no_more_work"
    assert len(calls.read_text().splitlines()) == 60  # every point once, none lost between
    for i in range(3):
        saved = adaptive.Learner1D(lambda x: x, bounds=(-1, 1))
        saved.load(str(run_dir.path / "data" / f"{i}.pickle"))
        assert saved.npoints == 20


def test_a_packed_worker_goes_on_with_the_next_learner_after_a_failure(tmp_path: Path) -> None:
    # Its allocation goes on for its other workers: ending it would idle its cores until then.
    run_dir = make_run(tmp_path / "run", 3, max_fails=1, save_interval_s=3600.0)
    functions = [broken, abs, abs]
    run_dir.write_learners(
        [cloudpickle.dumps(adaptive.Learner1D(f, bounds=(-1, 1))) for f in functions]
    )
    rows, tasks = run_one_task(run_dir, goal=20, rank=0)  # exit code 0: asserted there
    assert [r.state for r in rows] == [LearnerState.FAILED, LearnerState.DONE, LearnerState.DONE]
    assert [(t.task, t.learner, t.outcome) for t in tasks] == [
        ("L1_0@0", 0, "failed"),
        ("L1_0@0", 1, "done"),
        ("L1_0@0", 2, "done"),
    ]
    events = [json.loads(x) for x in run_dir.task_log("L1_0@0").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert (names.count("failed"), names.count("done"), names[-1]) == (1, 2, "no_more_work")
    assert [e["learner"] for e in events if e["event"] == "started"] == [0, 1, 2]


def ten_points_then_sigterm(learner: adaptive.Learner1D) -> bool:
    """A goal that, once reached, tells its own worker to stop (as scancel would, just then)."""
    import os  # noqa: PLC0415 - the goal runs in the worker, pickled by value
    import signal  # noqa: PLC0415

    if learner.npoints < 10:
        return False
    os.kill(os.getpid(), signal.SIGTERM)
    return True


def test_a_stop_between_learners_claims_no_more(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", 2)
    run_dir.write_learners(
        [cloudpickle.dumps(adaptive.Learner1D(abs, bounds=(-1, 1))) for _ in range(2)]
    )
    rows, tasks = run_one_task(run_dir, goal=ten_points_then_sigterm)
    assert rows[0].state == LearnerState.DONE
    assert (rows[1].state, rows[1].attempts) == (LearnerState.WAITING, 0)  # never claimed
    assert [(t.learner, t.outcome) for t in tasks] == [(0, "done")]
    events = [json.loads(x) for x in run_dir.task_log("L1_0").read_text().splitlines()]
    assert [e["event"] for e in events][-2:] == ["done", "stopped"]
    assert events[-1]["reason"] == "SIGTERM"


def hang_at_right_bound(x: float, *, pid_file: str) -> float:
    """Fast everywhere but at x = 1, where it notes its process and sleeps for ten minutes."""
    import os  # noqa: PLC0415 - runs in a pool process, pickled by value
    import time  # noqa: PLC0415

    if x == 1:
        with open(pid_file, "w") as f:  # noqa: PTH123
            f.write(str(os.getpid()))
        time.sleep(600)
    return x


def note_stale_point(x: float, *, pid_file: str, notes: str) -> float:
    """Note whether the process evaluating the previous learner's long point still runs."""
    import psutil  # noqa: PLC0415

    pid = int(open(pid_file).read())  # noqa: PTH123, SIM115
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    with open(notes, "a") as f:  # noqa: PTH123
        f.write("alive\n" if alive else "gone\n")
    return x


def test_the_next_learner_gets_a_pool_without_the_last_ones_points(tmp_path: Path) -> None:
    """A point still running at the goal does not keep its core from the next learner."""
    run_dir = make_run(tmp_path / "run", 2, executor="loky", cores=2)
    pid_file, notes = tmp_path / "hanging.pid", tmp_path / "notes.txt"
    first = functools.partial(hang_at_right_bound, pid_file=str(pid_file))
    second = functools.partial(note_stale_point, pid_file=str(pid_file), notes=str(notes))
    run_dir.write_learners(
        [cloudpickle.dumps(adaptive.Learner1D(f, bounds=(-1, 1))) for f in (first, second)]
    )
    rows, _ = run_one_task(run_dir, goal=6)
    assert [r.state for r in rows] == [LearnerState.DONE] * 2
    assert all(r.npoints is not None and r.npoints >= 6 for r in rows)  # two points at a time
    assert pid_file.exists()  # the first learner reached its goal with x = 1 still running
    assert set(notes.read_text().split()) == {"gone"}


def test_status_and_heartbeat_report_progress(make: Any) -> None:
    run = make(log_interval_s=0.05, save_interval_s=3600.0)
    run.write(run.learner(delay=0.02), goal=40)
    assert run.run_worker() == 0, run.output()
    statuses = [e for e in run.events() if e["event"] == "status"]
    assert statuses, run.events()
    for status in statuses:
        for key in ("npoints", "loss", "npoints_per_s", "elapsed_s", "cpu_percent"):
            assert key in status
        assert status["memory_bytes"] > 0
    assert run.row().last_heartbeat is not None


def test_sigterm_saves_and_releases_then_a_new_job_resumes(make: Any) -> None:
    run = make(log_interval_s=0.05, save_interval_s=3600.0)
    run.write(run.learner(delay=0.02), goal=10**6)
    worker = run.start_worker(0)
    run.wait_for_event("status", min_npoints=5)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=WAIT_S) == 0, run.output()

    row = run.row()
    assert row.state == LearnerState.WAITING
    assert row.failures == 0
    # The heartbeat thread may write a status line between the save and the release.
    names = [name for name in _names(run.events(0)) if name != "status"]
    assert names[-2:] == ["saved", "released"]
    # With the point being evaluated, unless the signal came between two points.
    assert run.events(0)[-1]["reason"].startswith("SIGTERM")
    saved_points = run.saved().npoints
    assert saved_points >= 5
    calls_before = run.n_calls()

    run.write_goal(saved_points + 7)
    assert run.run_worker(1) == 0, run.output(1)
    resumed = run.wait_for_event("resumed", 1)
    assert resumed["npoints"] == saved_points
    assert run.row().state == LearnerState.DONE
    assert run.saved().npoints == saved_points + 7
    assert run.n_calls() - calls_before == 7  # only the new points were evaluated


def test_a_long_point_does_not_stop_heartbeats_or_signals(make: Any) -> None:
    # The sequential executor evaluates in its own thread: while a point takes far longer
    # than the log interval, heartbeats go on and SIGTERM is answered without waiting for it.
    run = make(log_interval_s=0.05, save_interval_s=3600.0)
    run.write(run.learner(delay=3 * WAIT_S), goal=10)
    worker = run.start_worker(0)
    run.wait_for_event("started")
    heartbeats = run.row().last_heartbeat
    wait_for(lambda: run.row().last_heartbeat != heartbeats, "a heartbeat during the point")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=WAIT_S) == 0, run.output()  # the point needs 3 * WAIT_S
    assert _names(run.events(0))[-1] == "released"
    assert run.row().state == LearnerState.WAITING
    assert run.n_calls() == 1


@pytest.mark.slow
def test_stopped_worker_does_not_wait_long_for_a_manager_that_is_gone(make: Any) -> None:
    run = make(log_interval_s=0.05, save_interval_s=3600.0)
    run.write(run.learner(delay=0.02), goal=10**6)
    worker = run.start_worker(0)
    run.wait_for_event("status", min_npoints=5)
    run.manager.stop()
    worker.send_signal(signal.SIGTERM)
    # It saves, tries to release for RELEASE_PATIENCE_S (30 s), then gives up: exit code 1.
    assert worker.wait(timeout=WAIT_S) == 1, run.output()
    assert run.saved().npoints >= 5
    assert "report_failed" in _names(run.events(0)), run.output()


def test_a_cancel_while_claiming_from_a_silent_manager_ends_the_worker(make: Any) -> None:
    run = make()
    run.write(run.learner(), goal=10)
    run.manager.stop()  # nobody answers the claim: the worker would retry for an hour
    worker = run.start_worker(0)
    time.sleep(2)  # it is waiting for a reply (a startup too slow for that only waits less)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=WAIT_S) == 0, run.output()  # it held nothing: an orderly end
    assert _names(run.events(0)) == ["stopped"]
    assert run.events(0)[0]["reason"] == "SIGTERM"


def test_sigusr1_also_releases(make: Any) -> None:
    run = make(log_interval_s=0.05, save_interval_s=3600.0)
    run.write(run.learner(delay=0.02), goal=10**6)
    worker = run.start_worker()
    run.wait_for_event("status")
    worker.send_signal(signal.SIGUSR1)
    assert worker.wait(timeout=WAIT_S) == 0, run.output()
    assert run.events()[-1]["event"] == "released"
    assert run.events()[-1]["reason"].startswith("SIGUSR1")
    assert run.row().state == LearnerState.WAITING


def test_a_raising_function_fails_with_its_traceback(make: Any) -> None:
    run = make(max_fails=1, log_interval_s=60.0, save_interval_s=3600.0)
    run.write(run.learner(function=broken), goal=50)
    assert run.run_worker() == 1, run.output()

    row = run.row()
    assert row.state == LearnerState.FAILED
    assert row.failures == 1
    assert row.error is not None
    assert "ValueError: cannot evaluate at 0.0" in row.error
    assert "Traceback" in row.error
    failed = run.events()[-1]
    assert failed["event"] == "failed"
    assert failed["level"] == "error"
    assert "ValueError" in failed["traceback"]
    # The points evaluated before the error are saved.
    learner = adaptive.Learner1D(broken, bounds=(-1, 1))
    learner.load(str(run.fname))
    assert learner.npoints == 2


def test_lost_ownership_stops_without_saving(make: Any) -> None:
    run = make(log_interval_s=0.05, save_interval_s=3600.0, lease_timeout_s=3600.0)
    run.write(run.learner(delay=0.02), goal=10**6)
    worker = run.start_worker()
    run.wait_for_event("status")
    with Database.open(run.dir.database) as db:
        # The lease expires (as if this job had gone silent) and another task takes over.
        assert db.expire_leases(lease_timeout_s=0.0, now=time.time() + 1.0) == [("L1_0", 0)]
        assert db.claim("L2_0", host="elsewhere", pid=1, now=time.time()) is not None
    assert worker.wait(timeout=WAIT_S) == 0, run.output()

    released = run.events()[-1]
    assert released["event"] == "released"
    assert released["reason"] == "not_owner"
    assert "saved" not in _names(run.events())
    assert not run.fname.exists()
    assert run.row().task == "L2_0"


def test_a_task_whose_array_is_recorded_late_gets_its_learner(make: Any) -> None:
    """After a failed submission that queued all the same, the array is recorded only when
    the job manager finds its tag: its first tasks may claim before that, and wait."""
    run = make(recorded=False)
    run.write(run.learner(), goal=10)
    worker = run.start_worker()
    try:
        wait_for(lambda: "not recorded" in run.output(), "the first claim to be refused")
        time.sleep(2.0)  # refused a few more times
        record_array(run.dir)
        assert worker.wait(timeout=WAIT_S) == 0, run.output()
    finally:
        worker.kill()
        worker.wait()
    assert run.output().count("not recorded") >= 2  # asked again, backing off
    assert _names(run.events())[0] == "started"
    assert run.row().state == LearnerState.DONE


@pytest.mark.slow
def test_a_task_of_an_array_never_recorded_exits_after_its_patience(make: Any) -> None:
    run = make(recorded=False, poll_interval_s=0.1)  # patience: 2 x 0.1 s + 60 s
    run.write(run.learner(), goal=10)
    started = time.monotonic()
    assert run.run_worker() == 1, run.output()
    assert time.monotonic() - started >= ADOPTION_MARGIN_S
    (event,) = run.events()
    assert event["event"] == "unknown_task"
    assert "which this run has not recorded" in event["exception"]
    assert (run.row().state, run.row().failures) == (LearnerState.WAITING, 0)


def test_no_work_exits_zero(make: Any) -> None:
    run = make()
    run.write(run.learner(), goal=10)
    with Database.open(run.dir.database) as db:
        db.claim("L0_0", host="elsewhere", pid=1, now=time.time())
    assert run.run_worker() == 0, run.output()
    assert _names(run.events()) == ["no_work"]
    assert run.n_calls() == 0


def test_loky_executor(make: Any) -> None:
    run = make(executor="loky", cores=2, log_interval_s=60.0, save_interval_s=3600.0)
    run.write(run.learner(), goal=20)
    assert run.run_worker() == 0, run.output()
    assert run.row().state == LearnerState.DONE
    assert run.saved().npoints >= 20  # two workers: both results may land before the check


def test_a_worker_frozen_past_its_lease_never_saves_again(make: Any) -> None:
    # A node that hangs (here SIGSTOP) while the manager gives its learner to another task:
    # when it wakes up, its overdue periodic save must not overwrite the other task's data.
    run = make(lease_timeout_s=3.0, log_interval_s=0.5, save_interval_s=0.2)
    run.write(run.learner(delay=0.02), goal=10**6)
    worker = run.start_worker()
    run.wait_for_event("saved", min_npoints=5)
    worker.send_signal(signal.SIGSTOP)
    time.sleep(0.5)  # a save in progress when it stopped has ended
    time.sleep(3.5)  # past the lease
    with Database.open(run.dir.database) as db:
        assert db.expire_leases(lease_timeout_s=3.0, now=time.time()) != []
    run.fname.write_bytes(b"the data of the task that holds the learner now")
    saved_before = len([e for e in run.events() if e["event"] == "saved"])
    worker.send_signal(signal.SIGCONT)
    assert worker.wait(timeout=WAIT_S) == 0, run.output()
    assert run.fname.read_bytes() == b"the data of the task that holds the learner now"
    events = run.events()
    assert len([e for e in events if e["event"] == "saved"]) == saved_before
    assert events[-1]["event"] == "released"  # stopped: it no longer holds the learner


def test_a_final_save_to_a_read_only_file_system_fails_at_once(make: Any) -> None:
    # Trying again cannot help (EROFS as root, a read-only bind mount; EACCES otherwise): the
    # learner fails with the OS error at once, instead of being released after the patience
    # (300 s) and computed again by one job after another, for ever.
    run = make(max_fails=2, log_interval_s=60.0, save_interval_s=0.05)
    with read_only(run.fname.parent):
        run.write(run.learner(delay=0.01), goal=30)
        assert run.run_worker() == 1, run.output()
    names = _names(run.events())
    assert "save_failed" in names  # the periodic saves, then the final one
    assert names[-1] == "failed"  # a task of its own ends on it
    assert not run.fname.exists()
    row = run.row()
    assert (row.state, row.failures) == (LearnerState.WAITING, 1)  # one towards max_fails
    assert row.error is not None
    assert re.fullmatch(
        rf"the final save to {run.fname} failed \(not tried again\): "
        r"(OSError: \[Errno 30\] Read-only file system|PermissionError: \[Errno 13\] "
        r"Permission denied): .*; its last good save stays",
        row.error,
    ), row.error
    assert "disk full" not in row.error


def test_a_final_save_that_keeps_failing_for_want_of_space_fails_the_learner(make: Any) -> None:
    run = make(max_fails=1, log_interval_s=60.0, save_interval_s=0.05, final_save_patience_s=3)
    with mounted_tmpfs(run.fname.parent):
        fill(run.fname.parent / "filler")
        run.write(run.learner(delay=0.01), goal=30)
        assert run.run_worker() == 1, run.output()
    events = run.events()
    failures = [e for e in events if e["event"] == "save_failed"]
    assert len(failures) > 2  # the periodic saves, then the final one, tried again
    assert failures[0]["level"] == "error"
    assert "No space left on device" in failures[0]["exception"]
    assert events[-1]["event"] == "failed"
    row = run.row()
    assert (row.state, row.failures) == (LearnerState.FAILED, 1)  # max_fails=1
    assert row.error is not None
    assert row.error.startswith(
        f"the final save to {run.fname} kept failing for 3 s: OSError: [Errno 28] No space "
        "left on device"
    ), row.error


def test_a_final_save_that_fails_until_the_disk_frees_is_done(make: Any) -> None:
    run = make(log_interval_s=60.0, save_interval_s=3600.0)
    with mounted_tmpfs(run.fname.parent):
        filler = fill(run.fname.parent / "filler")
        run.write(run.learner(), goal=30)
        worker = run.start_worker()
        run.wait_for_event("save_failed")  # the final save, at the goal
        filler.unlink()  # space again: the next try works
        assert worker.wait(timeout=WAIT_S) == 0, run.output()
        assert _names(run.events())[-3:] == ["saved", "done", "no_more_work"]
        assert run.row().state == LearnerState.DONE
        assert run.saved().npoints == 30


def test_a_task_log_that_cannot_be_written_costs_the_learner_nothing(make: Any) -> None:
    # /dev/full fails every write with ENOSPC: a task log on a full disk from the start.
    run = make(log_interval_s=0.05, save_interval_s=0.1)
    run.dir.task_log("L1_0").symlink_to("/dev/full")
    run.write(run.learner(delay=0.01), goal=30)
    assert run.run_worker() == 0, run.output()
    row = run.row()
    assert (row.state, row.failures, row.npoints) == (LearnerState.DONE, 0, 30)
    assert run.saved().npoints == 30


def test_a_task_log_whose_disk_fills_up_drops_lines_and_says_so(make: Any) -> None:
    # The run directory's logs on a small tmpfs, filled while the learner runs (its data file
    # is elsewhere), emptied again before the goal: status lines and saves go unlogged
    # meanwhile; the learner goes on, saves and ends done, with no failure counted.
    run = make(log_interval_s=0.05, save_interval_s=0.1)
    with mounted_tmpfs(run.dir.logs_dir):
        run.write(run.learner(delay=0.02), goal=300)
        worker = run.start_worker()
        run.wait_for_event("saved")
        filler = fill(run.dir.logs_dir / "filler")
        full_at = run.saved().npoints  # 100 points: more lines than fit in the log's last page
        wait_for(lambda: run.saved().npoints >= full_at + 100, "saves while the log is full")
        filler.unlink()
        assert worker.wait(timeout=WAIT_S) == 0, run.output()
        lines = run.dir.task_log("L1_0").read_text().splitlines()
    # A line the full disk cut short stays, on a line of its own: the others are whole.
    events = [json.loads(line) for line in lines if line.endswith("}")]
    assert len(events) >= len(lines) - 1
    names = _names(events)
    lost = events[names.index("lines_lost")]
    assert lost["lost"] >= 3  # status and saved lines, every 0.05 s and 0.1 s
    assert "No space left on device" in lost["error"]
    assert names[-2:] == ["done", "no_more_work"]
    assert "failed" not in names
    row = run.row()
    assert (row.state, row.failures, row.npoints) == (LearnerState.DONE, 0, 300)


def test_a_learner_the_runner_refuses_fails_loudly(make: Any) -> None:
    # adaptive's BlockingRunner (the sequential executor's) refuses async functions.
    run = make(max_fails=1)
    run.write(run.learner(function=async_identity), goal=5)
    assert run.run_worker() == 1, run.output()
    assert run.events()[-1]["event"] == "failed"
    row = run.row()
    assert row.state == LearnerState.FAILED
    assert row.error is not None
    assert "Coroutine functions can only be used with 'AsyncRunner'" in row.error


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (pip install mpich)")
def test_mpi4py_executor_under_mpiexec(make: Any) -> None:
    # As the job templates run it: rank 0 is the worker, ranks 1 and 2 evaluate points.
    run = make(executor="mpi4py", cores=3, log_interval_s=60.0, save_interval_s=3600.0)
    run.write(run.learner(), goal=20)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LOCAL_ARRAY_ID": "L1",
        "LOCAL_ARRAY_TASK_ID": "0",
    }
    command = ["mpiexec", "-n", "3", sys.executable, "-m", "mpi4py.futures"]
    proc = subprocess.run(
        [*command, "-m", "adaptive_runner.worker", str(run.dir.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert run.row().state == LearnerState.DONE
    assert run.saved().npoints >= 20  # two workers: both results may land before the check
    assert run.n_calls() >= 20  # points in flight at the goal are evaluated and dropped
    assert run.events()[0]["event"] == "started"


def test_a_fatal_signal_leaves_the_stack_in_the_task_log(make: Any) -> None:
    run = make()
    run.write(run.learner(aborts), goal=10)
    assert run.run_worker() == -signal.SIGABRT, run.output()
    text = run.dir.task_log("L1_0").read_text()
    assert '"event": "started"' in text
    assert "Fatal Python error: Aborted" in text
    assert re.search(r'File ".*test_worker\.py", line \d+ in aborts\n', text), text


def test_points_in_a_reason_read_as_numbers() -> None:
    import numpy as np  # noqa: PLC0415

    from adaptive_runner.job.learner_runs import with_points  # noqa: PLC0415

    reason = with_points("SIGTERM", [np.float64(-0.5), (np.float64(1.0), 2), 0.25])
    assert reason == "SIGTERM; points in evaluation: -0.5, (1.0, 2), 0.25"
