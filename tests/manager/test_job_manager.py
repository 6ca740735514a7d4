"""JobManager.round() driven with an in-memory scheduler and a fake clock (no processes).

The scheduler is ``adaptive_runner.testing.MemoryScheduler``, a plain Python object that keeps
its arrays in dicts and can be told to fail a submission before or after queueing it; the
database is the real sqlite file.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers_run import make_run
from structlog.testing import capture_logs

from adaptive_runner.manager.job_manager import FINISH_GRACE_S, JobManager, split_foreign
from adaptive_runner.schedulers.base import JobState, QueuedTask, Scheduler
from adaptive_runner.schedulers.slurm import SLURM
from adaptive_runner.state.database import Database
from adaptive_runner.testing import MemoryScheduler

if TYPE_CHECKING:
    from collections.abc import Iterator

    from adaptive_runner.common.run_dir import RunDir

URL = "tcp://login1:5555"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "run", 3)


@pytest.fixture
def db(run: RunDir) -> Iterator[Database]:
    with Database.open(run.database) as database:
        yield database


def manager(run: RunDir, scheduler: Scheduler, clock: Clock, **options: float) -> JobManager:
    settings: dict[str, float] = {
        "max_simultaneous_jobs": 10,
        "lease_timeout_s": 600.0,
        "poll_interval_s": 10.0,
        "max_fails": 3,
        "claim_timeout_s": 300.0,
    } | options
    return JobManager(
        run,
        [scheduler],
        max_simultaneous_jobs=int(settings["max_simultaneous_jobs"]),
        lease_timeout_s=settings["lease_timeout_s"],
        poll_interval_s=settings["poll_interval_s"],
        max_fails=int(settings["max_fails"]),
        claim_timeout_s=settings["claim_timeout_s"],
        url=URL,
        clock=clock,
    )


def test_jobs_that_cannot_start_end_the_run_with_their_error(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    assert jm.round(db) is False
    assert scheduler.submitted() == [3]
    for round_number in range(3):
        (array_id,) = db.active_arrays()
        first = f"{array_id}_0"
        run.task_log(first).write_text(
            "bash: line 12: /nonexistent/python: No such file or directory\n"
        )
        scheduler.set_all(array_id, JobState.FAILED)
        clock.now += 10
        finished = jm.round(db)
        assert db.start_failures(0) == round_number + 1
        assert finished is (round_number == 2)
    # The first array had all three tasks, the probes after it one each: 5 tasks, not 9.
    assert scheduler.submitted() == [3, 1, 1]
    counts = db.counts()
    assert counts["failed"] == 3
    reason = db.learners()[0].error
    assert reason is not None
    assert "3 array(s) in a row ended without any task reaching the database manager" in reason
    assert "/nonexistent/python: No such file or directory" in reason
    assert "(failed)" in reason  # how the task ended, as the scheduler said


def test_a_claim_ends_the_start_failures(run: RunDir, db: Database, clock: Clock) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    jm.round(db)
    (first,) = db.active_arrays()
    scheduler.set_all(first, JobState.FAILED)
    clock.now += 10
    jm.round(db)  # start failure 1; a probe of one task goes out
    (probe,) = db.active_arrays()
    assert scheduler.submitted() == [3, 1]
    task = f"{probe}_0"
    scheduler.arrays[probe][task] = JobState.RUNNING
    assert db.claim(task, host="n", pid=1, now=clock.now, array=probe) is not None
    assert db.start_failures(0) == 0
    assert db.group_states() == []
    clock.now += 10
    jm.round(db)
    assert scheduler.submitted() == [3, 1, 2]  # the probe runs: the rest go out together


def test_a_task_that_never_claims_is_cancelled_and_explained(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, claim_timeout_s=300.0, max_fails=1)
    jm.round(db)
    (array_id,) = db.active_arrays()
    scheduler.set_all(array_id, JobState.RUNNING)
    clock.now += 10
    jm.round(db)  # first seen running
    clock.now += 299
    jm.round(db)
    assert not [c for c in scheduler.calls if c[0] == "cancel"]
    clock.now += 1
    jm.round(db)  # 300 s since seen running: cancelled
    cancels = [ids for call, ids in scheduler.calls if call == "cancel"]
    assert cancels == [[f"{array_id}_0", f"{array_id}_1", f"{array_id}_2"]]
    clock.now += 10
    assert jm.round(db) is True  # the array ended without a claim; max_fails=1: run over
    reason = db.learners()[0].error
    assert reason is not None
    assert f"without reaching the database manager at {URL}" in reason
    assert "host=" in reason
    assert "interface=" in reason


def test_a_submission_that_queued_then_failed_is_adopted_not_repeated(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler(failures=["after"])
    jm = manager(run, scheduler, clock, poll_interval_s=10.0)
    jm.round(db)
    assert scheduler.submitted() == [3]
    assert db.active_arrays() == []
    (state,) = db.group_states()
    assert state.submit_error is not None
    assert "Socket timed out" in state.submit_error
    (message,) = state.messages()
    assert message.startswith("the last submission for group 0 failed")
    (queued,) = scheduler.arrays
    # A task of the array the run does not know yet claims: it is not taken for lost.
    task = f"{queued}_0"
    scheduler.arrays[queued][task] = JobState.RUNNING
    db.claim(task, host="n", pid=1, now=clock.now, array=queued)
    clock.now += 5
    jm.round(db)  # its tag is asked for at once: the array is adopted, nothing resubmitted
    assert [c for c in scheduler.calls if c[0] == "find_tagged"] == [
        ("find_tagged", [next(iter(scheduler.tags))])
    ]
    assert scheduler.submitted() == [3]  # one real array for one submission
    assert db.active_arrays() == [queued]
    assert db.group_states() == []  # the submit error is cleared
    assert db.counts()["running"] == 1
    assert db.learners()[0].failures == 0
    clock.now += 20
    jm.round(db)
    assert scheduler.submitted() == [3]  # its tasks count as the learners' jobs


def test_a_submission_not_found_is_tried_again_after_its_back_off(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler(failures=["before"])
    jm = manager(run, scheduler, clock, poll_interval_s=10.0)
    jm.round(db)
    clock.now += 5
    jm.round(db)  # asked for its tag (not there); not submitted again before the back-off
    assert [c[0] for c in scheduler.calls if c[0] != "queue"] == ["submit", "find_tagged"]
    clock.now += 5
    jm.round(db)
    assert scheduler.submitted() == [3, 3]
    assert len(db.active_arrays()) == 1


def test_failing_submissions_back_off(run: RunDir, db: Database, clock: Clock) -> None:
    scheduler = MemoryScheduler(failures=["before"] * 4)
    jm = manager(run, scheduler, clock, poll_interval_s=10.0)
    submits_at: list[float] = []
    for _ in range(160):
        before = len(scheduler.submitted())
        jm.round(db)
        if len(scheduler.submitted()) > before:
            submits_at.append(clock.now - 1_000_000.0)
        clock.now += 1
    # Tried at 0, then 10, 20, 40 and 80 s after each failure; the fifth try works.
    assert submits_at == [0, 10, 30, 70, 150]
    assert len(db.active_arrays()) == 1


def test_arrays_split_at_the_schedulers_limit(tmp_path: Path, clock: Clock) -> None:
    run = make_run(tmp_path / "run", 5)
    scheduler = MemoryScheduler(array_limit=2)
    with Database.open(run.database) as db:
        manager(run, scheduler, clock).round(db)
        assert scheduler.submitted() == [2, 2, 1]
        assert len(db.active_arrays()) == 3


def test_lost_tasks_are_counted_and_cancelled_until_gone(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, lease_timeout_s=60.0)
    jm.round(db)
    (array_id,) = db.active_arrays()
    vanishing, silent = f"{array_id}_0", f"{array_id}_1"
    for task in (vanishing, silent):
        scheduler.arrays[array_id][task] = JobState.RUNNING
        db.claim(task, host="n", pid=1, now=clock.now, array=array_id)
    del scheduler.arrays[array_id][vanishing]  # gone from the queue without a word
    clock.now += 10
    jm.round(db)
    rows = {row.index: row for row in db.learners()}
    assert rows[0].state == "waiting"
    assert rows[0].failures == 1
    assert rows[0].error is not None
    assert "vanished" in rows[0].error
    clock.now += 61  # the other one's lease expires: it is cancelled
    jm.round(db)
    assert ("cancel", [silent]) in scheduler.calls
    scheduler.arrays[array_id][silent] = JobState.RUNNING  # the cancel did not take
    clock.now += 10
    jm.round(db)
    assert scheduler.calls.count(("cancel", [silent])) == 2  # asked again
    assert db.learners()[1].failures == 1


def test_a_recorded_id_that_names_another_job_is_not_ours(
    run: RunDir, db: Database, clock: Clock
) -> None:
    """slurmctld lost its state and gave our array's id to someone else's job."""
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, max_simultaneous_jobs=3)
    jm.round(db)
    (ours,) = db.active_arrays()
    scheduler.arrays[ours][f"{ours}_0"] = JobState.RUNNING
    db.claim(f"{ours}_0", host="n", pid=1, now=clock.now, array=ours)
    # Our tasks are gone; under the id runs a plain job of another user, for hours.
    scheduler.arrays[ours] = {ours: JobState.RUNNING}
    scheduler.names[ours] = "someone-elses-job"
    clock.now += 10
    with capture_logs() as logs:
        jm.round(db)
    assert not [c for c in scheduler.calls if c[0] == "cancel"]
    assert ours not in db.active_arrays()  # finished: its own tasks are gone
    assert db.group_states() == []  # and no start failure is counted for it
    (warning,) = [e for e in logs if e["event"].startswith("a recorded array id names another")]
    assert (warning["array"], warning["job_name"]) == (ours, "someone-elses-job")
    assert warning["tag"] == next(iter(scheduler.tags))
    held = db.learners()[0]
    assert held.state == "waiting"  # its task vanished; the other job's records say nothing
    assert held.error is not None
    assert "'someone-elses-job'" in held.error
    # The foreign job takes none of the three slots: all three learners get a new array.
    assert scheduler.submitted() == [3, 3]


def test_the_run_ends_without_cancelling_a_job_under_a_recorded_id(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    jm.round(db)
    (ours,) = db.active_arrays()
    for task in list(scheduler.arrays[ours]):
        assignment = db.claim(task, host="n", pid=1, now=clock.now, array=ours)
        assert assignment is not None
        db.done(task, assignment.learner, npoints=10, loss=None, now=clock.now)
    # Every learner is done; a pending job of someone else holds the id now (ours would be
    # cancelled: tasks of a finished run would only find no work).
    scheduler.arrays[ours] = {ours: JobState.PENDING}
    scheduler.names[ours] = "someone-elses-job"
    clock.now += 10
    assert jm.round(db) is True
    assert not [c for c in scheduler.calls if c[0] == "cancel"]


def test_an_id_given_out_again_is_a_new_array_and_takes_no_learner_for_lost(
    run: RunDir, db: Database, clock: Clock
) -> None:
    """The scheduler lost its state (slurmctld's): the run's next array gets a recorded id."""
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    jm.round(db)
    (first,) = db.active_arrays()
    for i, task in enumerate(scheduler.arrays[first]):
        scheduler.arrays[first][task] = JobState.RUNNING
        got = db.claim(task, host="n", pid=1, now=clock.now, array=first)
        assert got is not None
        if i < 2:
            db.done(task, got.learner, npoints=10, loss=None, now=clock.now)
        else:  # stopped: its learner waits for a new array
            db.release(task, got.learner, reason="SIGTERM", now=clock.now)
    scheduler.set_all(first, JobState.COMPLETED)
    scheduler.forget()
    clock.now += 10
    with capture_logs() as logs:
        assert jm.round(db) is False
    (again,) = db.active_arrays()
    assert again == first  # the id of the run's first array, for a one-task array
    assert scheduler.submitted() == [3, 1]
    (warning,) = [e for e in logs if e["event"].startswith("the scheduler gave out a recorded")]
    assert (warning["array"], warning["lost_learners"]) == (again, [])
    task = f"{again}_0"
    scheduler.arrays[again][task] = JobState.RUNNING
    got = db.claim(task, host="n", pid=2, now=clock.now, array=again)
    assert got is not None
    clock.now += 10
    jm.round(db)  # its task is in the queue: nothing vanished, nothing more to submit
    held = db.learners()[got.learner]
    assert (held.state, held.failures, held.task) == ("running", 0, task)
    db.done(task, got.learner, npoints=10, loss=None, now=clock.now)
    scheduler.set_all(again, JobState.COMPLETED)
    clock.now += 10
    assert jm.round(db) is True
    assert scheduler.submitted() == [3, 1]
    assert not [c for c in scheduler.calls if c[0] == "cancel"]
    assert db.active_arrays() == []
    assert [r.failures for r in db.learners()] == [0, 0, 0]


def test_foreign_tasks_are_split_off_unless_the_tag_or_name_is_unknown() -> None:
    listed = {
        "7_0": QueuedTask(JobState.RUNNING, "run-1"),
        "8_0": QueuedTask(JobState.PENDING, "other"),
        "9_0": QueuedTask(JobState.PENDING, "anything"),  # array recorded before tags
        "10_0": QueuedTask(JobState.RUNNING, None),  # the scheduler did not say
    }
    tags = {"7": "run-1", "8": "run-2", "9": None, "10": "run-3"}
    ours, foreign = split_foreign(listed, tags, MemoryScheduler().array_of)
    assert ours == {"7_0": JobState.RUNNING, "9_0": JobState.PENDING, "10_0": JobState.RUNNING}
    assert foreign == {"8": "other"}


def test_an_array_cancelled_before_it_ran_is_no_start_failure(
    run: RunDir, db: Database, clock: Clock
) -> None:
    # Cancelled while pending (e.g. pending for good, to change the run's options): its
    # tasks never tried to start, so the next array is a full one, not a probe.
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    jm.round(db)
    (array_id,) = db.active_arrays()
    scheduler.set_all(array_id, JobState.CANCELLED)
    clock.now += 10
    jm.round(db)
    assert db.group_states() == []
    assert scheduler.submitted() == [3, 3]


def test_no_more_jobs_while_a_live_array_shows_tasks_that_never_claimed(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    jm.round(db)
    (array_id,) = db.active_arrays()
    scheduler.arrays[array_id][f"{array_id}_0"] = JobState.FAILED  # died before claiming
    clock.now += 10
    jm.round(db)
    assert scheduler.submitted() == [3]  # not one more for the learner it would have run
    scheduler.arrays[array_id][f"{array_id}_1"] = JobState.RUNNING
    db.claim(f"{array_id}_1", host="n", pid=1, now=clock.now, array=array_id)
    clock.now += 10
    jm.round(db)  # a task of it reached the manager: the array can start, top up again
    assert scheduler.submitted() == [3, 1]


def test_a_round_between_polls_asks_the_scheduler_nothing(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, max_simultaneous_jobs=10)
    jm.round(db)
    (array_id,) = db.active_arrays()
    for i in range(3):
        task = f"{array_id}_{i}"
        scheduler.arrays[array_id][task] = JobState.RUNNING
        db.claim(task, host="n", pid=1, now=clock.now, array=array_id)
    clock.now += 10
    jm.round(db)
    queries = [c for c in scheduler.calls if c[0] == "queue"]
    db.release(f"{array_id}_0", 0, reason="SIGUSR1", now=clock.now, npoints=5)
    assert jm.quick_round(db) is False
    assert scheduler.submitted() == [3, 1]  # the released learner's job, at once
    assert jm.quick_round(db) is False  # the new array is not in the last poll's queue:
    assert scheduler.submitted() == [3, 1]  # no second one before the next poll
    assert [c for c in scheduler.calls if c[0] == "queue"] == queries
    for i in (1, 2):  # the last learners done: the round between polls ends the run
        db.done(f"{array_id}_{i}", i, npoints=5, loss=None, now=clock.now)
    (new_array,) = [a for a in db.active_arrays() if a != array_id]
    scheduler.arrays[new_array][f"{new_array}_0"] = JobState.RUNNING
    db.claim(f"{new_array}_0", host="n", pid=1, now=clock.now, array=new_array)
    db.done(f"{new_array}_0", 0, npoints=9, loss=None, now=clock.now)
    assert jm.quick_round(db) is False  # its tasks run: they end by themselves
    for array in (array_id, new_array):
        scheduler.set_all(array, JobState.COMPLETED)
    assert jm.quick_round(db) is True
    assert not [c for c in scheduler.calls if c[0] == "cancel"]


def test_a_round_between_polls_counts_the_array_submitted_after_the_polls_look(
    run: RunDir, db: Database, clock: Clock
) -> None:
    # The poll looks at the queue, then submits: its array is not in the queue it saw.
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, max_simultaneous_jobs=2)
    jm.round(db)
    assert scheduler.submitted() == [2]  # 3 learners, at most 2 tasks at once
    (array_id,) = db.active_arrays()
    task = f"{array_id}_0"
    scheduler.arrays[array_id][task] = JobState.RUNNING
    claimed = db.claim(task, host="n", pid=1, now=clock.now, array=array_id)
    assert claimed is not None
    db.done(task, claimed.learner, npoints=5, loss=None, now=clock.now)
    assert jm.quick_round(db) is False  # woken before the next poll
    assert scheduler.submitted() == [2]  # its 2 tasks are the most at once, not 2 more
    clock.now += 10
    jm.round(db)  # the poll sees them: one goes on to the next learner, one is pending
    assert scheduler.submitted() == [2]


def _all_done_by_the_first_task(db: Database, scheduler: MemoryScheduler) -> list[str]:
    """The run's two tasks run; the first does all three learners, the second none."""
    (ours,) = db.active_arrays()
    tasks = sorted(scheduler.arrays[ours])
    for task in tasks:
        scheduler.arrays[ours][task] = JobState.RUNNING
    for _ in range(3):
        assignment = db.claim(tasks[0], host="n", pid=1, now=1.0, array=ours)
        assert assignment is not None
        db.done(tasks[0], assignment.learner, npoints=10, loss=None, now=1.0)
    return tasks


def test_the_run_ends_when_its_tasks_have_ended_by_themselves(
    run: RunDir, db: Database, clock: Clock
) -> None:
    # Each worker's next claim is answered "no more work" and it exits 0: its task ends
    # COMPLETED. Cancelled, it would end CANCELLED with error lines in its log.
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, max_simultaneous_jobs=2)
    jm.round(db)
    tasks = _all_done_by_the_first_task(db, scheduler)
    stray = scheduler.submit(run.path, n_tasks=1, max_running=1)  # pending: it would start late
    db.record_array(stray, n_tasks=1, script="", now=clock.now)
    clock.now += 10
    assert jm.round(db) is False
    assert scheduler.calls[-1] == ("cancel", [f"{stray}_0"])  # the pending one at once
    clock.now += 1
    scheduler.arrays[db.active_arrays()[0]][tasks[0]] = JobState.COMPLETED
    assert jm.round(db) is False  # the other still ends
    scheduler.arrays[db.active_arrays()[0]][tasks[1]] = JobState.COMPLETED
    assert jm.round(db) is True
    assert [c for c in scheduler.calls if c[0] == "cancel"] == [("cancel", [f"{stray}_0"])]
    assert db.active_arrays() == []
    assert db.group_states() == []  # the array cancelled before it ran is no start failure


def test_tasks_that_do_not_end_by_themselves_are_cancelled_after_the_grace(
    run: RunDir, db: Database, clock: Clock
) -> None:
    # A worker that never claims (stuck before Python starts) would hold its allocation; the
    # stopped managers would never answer one that does.
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock, max_simultaneous_jobs=2)
    jm.round(db)
    tasks = _all_done_by_the_first_task(db, scheduler)
    clock.now += 10
    assert jm.round(db) is False
    clock.now += FINISH_GRACE_S - 1
    assert jm.round(db) is False
    assert not [c for c in scheduler.calls if c[0] == "cancel"]
    clock.now += 1
    assert jm.round(db) is True
    assert ("cancel", tasks) in scheduler.calls


def test_packed_allocations_are_counted_in_workers_and_lost_whole(
    tmp_path: Path, clock: Clock
) -> None:
    run = make_run(tmp_path / "packed", 9)
    scheduler = MemoryScheduler(workers=4)
    jm = manager(run, scheduler, clock, lease_timeout_s=60.0)
    with Database.open(run.database) as db:
        jm.round(db)
        assert scheduler.submitted() == [3]  # 9 learners, 4 workers each: 3 allocations
        (array_id,) = db.active_arrays()
        first, second, third = sorted(scheduler.arrays[array_id])
        for task, n_claiming in ((first, 4), (second, 4), (third, 1)):
            scheduler.arrays[array_id][task] = JobState.RUNNING
            for rank in range(n_claiming):
                db.claim(f"{task}@{rank}", host="n", pid=rank, now=clock.now, array=array_id)
        held_by_first = {
            row.index for row in db.learners() if (row.task or "").startswith(first + "@")
        }
        assert len(held_by_first) == 4
        # The first allocation vanishes: each of its workers' learners comes back.
        del scheduler.arrays[array_id][first]
        clock.now += 10
        jm.round(db)
        rows = {row.index: row for row in db.learners()}
        for learner in held_by_first:
            assert rows[learner].state == "waiting"
            assert rows[learner].failures == 1
            assert f"job {first}@" in (rows[learner].error or "")
        # Four learners to run; the third allocation's three idle workers will claim three:
        # one allocation more, not four.
        assert scheduler.submitted() == [3, 1]
        # One packed worker goes silent past its lease: its learner comes back, but its
        # allocation, whose other workers are busy, is not cancelled for it.
        holders = {row.task: row.index for row in db.learners() if row.task}
        for rank in range(1, 4):
            worker = f"{second}@{rank}"
            db.heartbeat(
                worker, holders[worker], npoints=1, loss=None, cpu=0, memory=0, now=clock.now + 61
            )
        db.flush_heartbeats()
        clock.now += 61
        jm.round(db)
        silent = db.learners()[holders[f"{second}@0"]]
        assert silent.state == "waiting"
        assert "lease expired" in (silent.error or "")
        assert not [call for call in scheduler.calls if call[0] == "cancel"]


def test_tasks_that_may_never_start_are_a_problem_until_they_may(
    run: RunDir, db: Database, clock: Clock
) -> None:
    scheduler = MemoryScheduler()
    jm = manager(run, scheduler, clock)
    jm.round(db)
    (array_id,) = db.active_arrays()
    tasks = sorted(scheduler.arrays[array_id])
    scheduler.reasons.update(dict.fromkeys(tasks, "Priority"))  # waiting its turn: fine
    jm.round(db)
    assert [s.queue_error for s in db.group_states()] == []
    scheduler.reasons.update(dict.fromkeys(tasks, "PartitionNodeLimit"))
    with capture_logs() as logs:
        jm.round(db)
        jm.round(db)
    (state,) = db.group_states()
    assert state.queue_error is not None
    assert f"3 task(s) of group 0 (e.g. {tasks[0]})" in state.queue_error
    assert "PartitionNodeLimit: it asks for too many nodes" in state.queue_error
    assert state.messages() == [state.queue_error]
    assert [e["event"] for e in logs].count("jobs may never start") == 1  # said once
    assert not [call for call in scheduler.calls if call[0] == "cancel"]  # the user decides
    assert jm.stuck_for() == 0  # every task, none running: since the first of the two rounds
    scheduler.reasons.clear()  # the nodes came back
    jm.round(db)
    assert db.group_states() == []
    assert jm.stuck_for() is None


@pytest.fixture
def recorded_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``squeue`` first on PATH that prints what the CI SLURM's printed (record.sh stuck):
    array 1208's three tasks pending for PartitionDown (their partition was set DOWN) and
    task 1209_0 of another array running."""
    recorded = Path(__file__).parents[1] / "data" / "slurm" / "squeue_stuck.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\ncat {shlex.quote(str(recorded))}\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.usefixtures("recorded_squeue")
@pytest.mark.parametrize(("arrays", "stuck"), [(["1208"], True), (["1208", "1209"], False)])
def test_a_run_whose_every_task_waits_for_good_is_stuck_from_the_poll_that_saw_it(
    run: RunDir, db: Database, clock: Clock, arrays: list[str], *, stuck: bool
) -> None:
    for array_id in arrays:  # queued by an earlier session of the run
        db.record_array(array_id, n_tasks=3, script="", now=clock.now)
    jm = manager(run, SLURM(), clock)
    assert jm.stuck_for() is None
    jm.round(db)
    clock.now += 45
    jm.round(db)  # still so: counted from the first poll that saw it
    clock.now += 15
    (problem,) = [message for state in db.group_states() for message in state.messages()]
    assert "3 task(s) of group 0 (e.g. 1208_0) wait in the queue with reason PartitionDown" in (
        problem
    )
    if stuck:
        assert jm.stuck_for() == 60
    else:  # a task of the run runs: when it ends, another may start
        assert jm.stuck_for() is None
    assert sorted(db.active_arrays()) == arrays  # nothing submitted: its tasks will claim
