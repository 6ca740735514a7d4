"""Whole runs on the real SLURM (ci/slurm/start.sh): arrays, scancel, USR1, mpi4py.

The scenarios every backend shares (goal, kill -9, cancel) are tests/e2e/test_scenarios.py.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptive
import cloudpickle
import pytest
from helpers_run import always_fails, make_learners, no_overlaps, task_rows, wait_for
from helpers_slurm import (
    PATIENCE_S,
    all_released_and_resumed,
    ended_clean,
    log_events,
    resumed_with_data,
    run,
    run_arrays,
    running_with_save,
    sbatch_calls,
)

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError, RunStuckError
from adaptive_runner.manager.job_manager import CHANGE_OPTIONS
from adaptive_runner.manager.run_setup import create_run
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


# Learner functions travel by value: the workers cannot import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

__all__ = ["run", "sbatch_calls"]  # fixtures, used by name

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def square_in(x: float, pid_dir: str) -> float:
    """x**2, noting which process evaluated it."""
    Path(pid_dir, str(os.getpid())).touch()
    time.sleep(0.01)
    return x**2


def queue(run_dir: Path) -> dict[str, JobState]:
    """The run's tasks as squeue shows them (finished ones too, for MinJobAge)."""
    return ar.SLURM().queue_states(run_arrays(run_dir))


def test_learners_reach_goal_through_one_array(
    run: Callable[..., ar.RunManager], sbatch_calls: Path
) -> None:
    rm = run(make_learners(10))
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 10
    assert all(learner.npoints >= 25 for learner in rm.load_learners())
    # One sbatch call for the whole round, not one per learner.
    calls = sbatch_calls.read_text().splitlines()
    assert len(calls) == 1, calls
    assert "--array=0-9%10" in calls[0].split()
    (array_id,) = run_arrays(rm.run_dir.path)
    rows = task_rows(rm.run_dir.path)
    # Usually one learner per task; a task that finished early may have taken another's.
    assert {r["task"] for r in rows} <= {f"{array_id}_{i}" for i in range(10)}
    assert sorted(r["learner"] for r in rows) == list(range(10))
    assert {r["outcome"] for r in rows} == {"done"}
    no_overlaps(rm.run_dir.path)


def test_throttled_tasks_go_on_with_the_next_learner(
    run: Callable[..., ar.RunManager], sbatch_calls: Path
) -> None:
    rm = run(make_learners(6), max_simultaneous_jobs=2)
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 6
    # Two tasks ran all six learners: one sbatch, where one learner per task would need three.
    calls = sbatch_calls.read_text().splitlines()
    assert len(calls) == 1, calls
    assert "--array=0-1%2" in calls[0].split()
    rows = task_rows(rm.run_dir.path)
    assert sorted(r["learner"] for r in rows) == list(range(6))
    assert {r["outcome"] for r in rows} == {"done"}
    assert len({r["task"] for r in rows}) <= 2
    no_overlaps(rm.run_dir.path)


def test_scancel_of_running_tasks_resubmits_and_resumes(run: Callable[..., ar.RunManager]) -> None:
    rm = run(make_learners(4, delay=0.05), goal=100)
    run_dir = rm.run_dir.path
    victims = wait_for(
        partial(running_with_save, run_dir, rm.fnames, 2),
        timeout_s=PATIENCE_S,
        what="two tasks running with a save on disk",
    )
    subprocess.run(["scancel", *(row["task"] for row in victims)], check=True)
    all_released_and_resumed(rm, victims)


def test_usr1_saves_and_releases_at_once(run: Callable[..., ar.RunManager]) -> None:
    rm = run(make_learners(2, delay=0.05), goal=100)
    run_dir = rm.run_dir.path
    (victim,) = wait_for(
        partial(running_with_save, run_dir, rm.fnames, 1),
        timeout_s=PATIENCE_S,
        what="a task running with a save on disk",
    )
    task, learner = victim["task"], victim["learner"]
    # The time-limit warning: --batch, because SLURM signals only job steps without it.
    subprocess.run(["scancel", "--batch", "--signal=USR1", task], check=True)

    def ended() -> bool:
        (row,) = [r for r in task_rows(run_dir) if r["task"] == task]
        return row["outcome"] is not None

    wait_for(ended, timeout_s=PATIENCE_S, what=f"{task} to end its hold")
    (row,) = [r for r in task_rows(run_dir) if r["task"] == task]
    assert row["outcome"] == "released"
    with Database.open(run_dir / "state.sqlite") as db:
        assert db.learners()[learner].failures == 0
    events = log_events(run_dir, task)
    assert events[-1]["event"] == "released"
    assert str(events[-1]["reason"]).startswith("SIGUSR1")  # and the points in evaluation
    # The worker exited by itself (exit code 0), not killed by SLURM.
    wait_for(
        lambda: not queue(run_dir).get(task, JobState.COMPLETED).active,
        timeout_s=PATIENCE_S,
        what=f"{task} to leave the queue",
    )
    assert queue(run_dir).get(task, JobState.COMPLETED) == JobState.COMPLETED
    assert rm.wait(timeout=PATIENCE_S)
    resumed_with_data(run_dir, learner, after=task)
    no_overlaps(run_dir)


def test_mpi4py_job_with_two_cores(run: Callable[..., ar.RunManager], tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    learner = adaptive.Learner1D(partial(square_in, pid_dir=str(pid_dir)), bounds=(-1, 1))
    rm = run([learner], goal=20, scheduler=ar.SLURM(cores=2, executor="mpi4py"))
    assert rm.wait(timeout=PATIENCE_S)
    (row,) = task_rows(rm.run_dir.path)
    assert row["outcome"] == "done"
    (started,) = [e for e in log_events(rm.run_dir.path, row["task"]) if e["event"] == "started"]
    assert (started["executor"], started["cores"]) == ("mpi4py", 2)
    # Rank 0 is the worker; the points ran on the other rank.
    evaluators = {int(p.name) for p in pid_dir.iterdir()}
    assert len(evaluators) == 1
    assert row["pid"] not in evaluators


def test_mpi4py_task_releases_on_usr1(run: Callable[..., ar.RunManager]) -> None:
    # The signal goes to the batch shell, mpiexec, which passes it on to rank 0, the worker.
    rm = run(make_learners(1, delay=0.05), goal=150, scheduler=ar.SLURM(cores=2, executor="mpi4py"))
    run_dir = rm.run_dir.path
    (victim,) = wait_for(
        partial(running_with_save, run_dir, rm.fnames, 1),
        timeout_s=PATIENCE_S,
        what="the MPI task running with a save on disk",
    )
    subprocess.run(["scancel", "--batch", "--signal=USR1", victim["task"]], check=True)
    assert rm.wait(timeout=PATIENCE_S)
    first, *later = task_rows(run_dir)
    assert (first["task"], first["outcome"]) == (victim["task"], "released")
    assert later
    resumed_with_data(run_dir, 0, after=victim["task"])


def test_unknown_partition_writes_and_submits_nothing(tmp_path: Path, sbatch_calls: Path) -> None:
    rm = ar.RunManager(
        ar.SLURM(partition="no-such-partition"),
        make_learners(2),
        [tmp_path / "a", tmp_path / "b"],
        goal=5,
        run_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError, match="no-such-partition"):
        rm.start()
    assert not (tmp_path / "run").exists()
    assert sbatch_calls.read_text() == ""


def test_run_json_with_the_released_option_names_resumes(tmp_path: Path) -> None:
    """A run.json whose options carry the names of the release before the common vocabulary
    (partition, time, mem, extra_sbatch) resumes: its arrays get those options."""
    scheduler = ar.SLURM(
        queue="debug", walltime="10", memory="100M", extra_directives=["--comment=vocab"]
    )
    fnames = [tmp_path / "data" / f"l{i}.pickle" for i in range(2)]
    options: dict[str, Any] = {"save_interval": 0.3, "log_interval": 0.5, "poll_interval": 0.5}
    rm = ar.RunManager(
        scheduler, make_learners(2), fnames, goal=25, run_dir=tmp_path / "run", **options
    )
    create_run(rm.run_dir, rm.spec, replace=False)
    config = json.loads(rm.run_dir.config_file.read_text())
    group = config["groups"][0]["options"]
    for alias, name in ar.SLURM.aliases.items():
        group[alias] = group.pop(name)
    rm.run_dir.config_file.write_text(json.dumps(config))

    resumed = ar.RunManager.resume(tmp_path / "run")
    try:
        assert resumed.schedulers == [scheduler]
        assert resumed.wait(timeout=PATIENCE_S)
    finally:
        resumed.stop()
        arrays = run_arrays(rm.run_dir.path)
        if arrays:
            subprocess.run(["scancel", *arrays], check=True)
    assert resumed.status()["done"] == 2
    (script,) = rm.run_dir.jobs_dir.glob("*.sh")
    text = script.read_text()
    for line in ("--partition=debug", "--time=0-00:10:00", "--mem=100M", "--comment=vocab"):
        assert f"#SBATCH {line}\n" in text


# -- packed allocations: four workers in one array task ----------------------------------------

PACKED = ar.SLURM(workers_per_node=4, cores=1)


def test_a_packed_allocation_runs_four_workers_through_twelve_learners(
    run: Callable[..., ar.RunManager], sbatch_calls: Path
) -> None:
    rm = run(make_learners(12), scheduler=PACKED, max_simultaneous_jobs=1)
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 12
    calls = sbatch_calls.read_text().splitlines()
    assert len(calls) == 1, calls
    assert "--array=0-0%1" in calls[0].split()  # one allocation: max_simultaneous_jobs counts them
    (array_id,) = run_arrays(rm.run_dir.path)
    rows = task_rows(rm.run_dir.path)
    assert sorted(r["learner"] for r in rows) == list(range(12))
    assert {r["outcome"] for r in rows} == {"done"}
    # Four workers of the one job, each a process of its own, each with its own id.
    assert {r["task"] for r in rows} <= {f"{array_id}_0@{rank}" for rank in range(4)}
    assert len({r["pid"] for r in rows}) == len({r["task"] for r in rows}) > 1
    no_overlaps(rm.run_dir.path)
    # Its workers found no learner left and exited 0: the allocation was not cancelled.
    ended_clean(rm.run_dir.path, array_id)


def test_scancel_of_a_packed_allocation_releases_and_resumes_all_its_learners(
    run: Callable[..., ar.RunManager],
) -> None:
    rm = run(make_learners(4, delay=0.05), goal=100, scheduler=PACKED, max_simultaneous_jobs=1)
    run_dir = rm.run_dir.path
    victims = wait_for(
        partial(running_with_save, run_dir, rm.fnames, 4),
        timeout_s=PATIENCE_S,
        what="four workers holding learners with a save on disk",
    )
    (allocation,) = {row["task"].partition("@")[0] for row in victims}
    subprocess.run(["scancel", allocation], check=True)
    all_released_and_resumed(rm, victims)  # every worker got the SIGTERM


def test_a_killed_packed_worker_loses_only_its_learner(
    run: Callable[..., ar.RunManager],
) -> None:
    rm = run(
        make_learners(4, delay=0.05),
        goal=100,
        scheduler=PACKED,
        max_simultaneous_jobs=1,
        lease_timeout=15,  # short, but a loaded machine may take seconds to import adaptive
    )
    run_dir = rm.run_dir.path
    victim, *others = wait_for(
        partial(running_with_save, run_dir, rm.fnames, 4),
        timeout_s=PATIENCE_S,
        what="four workers holding learners with a save on disk",
    )
    os.kill(victim["pid"], 9)
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 4
    rows = task_rows(run_dir)
    # The other three went on undisturbed: one hold each, done.
    for row in others:
        assert [r["outcome"] for r in rows if r["learner"] == row["learner"]] == ["done"]
    # The killed one's learner came back (after its lease, or when the other three found no
    # more work and the allocation ended, whichever came first), counted as one failure,
    # and resumed from its save.
    (killed,) = [r for r in rows if r["task"] == victim["task"]]  # dead: it claims no more
    assert killed["outcome"] in {"expired", "lost"}
    if killed["outcome"] == "lost":  # the reason says how the worker died, as its packer saw it
        rank = victim["task"].partition("@")[2]
        conn = sqlite3.connect(run_dir / "state.sqlite")
        (detail,) = conn.execute(
            "SELECT detail FROM events WHERE task = ? AND kind = 'lost'", (victim["task"],)
        ).fetchone()
        conn.close()
        assert f"; worker {rank} ended with signal 9 (SIGKILL)" in detail
    with Database.open(run_dir / "state.sqlite") as db:
        assert db.learners()[victim["learner"]].failures == 1
    resumed_with_data(run_dir, victim["learner"], after=victim["task"])
    no_overlaps(run_dir)


@pytest.fixture
def partition_limits() -> Iterator[None]:
    """Give the partition back its limits after a test that lowered them."""
    yield
    subprocess.run(["scontrol", "update", "PartitionName=debug", "MaxNodes=UNLIMITED"], check=True)


def test_a_job_the_partition_cannot_hold_is_a_problem_not_a_silent_wait(
    run: Callable[..., ar.RunManager], partition_limits: None
) -> None:
    # The dry run at start refuses what the partition cannot hold; a limit lowered afterwards
    # (here MaxNodes=1 under two-node allocations) leaves the next allocation pending for
    # PartitionNodeLimit, a reason no other job's end lifts.
    del partition_limits
    scheduler = ar.SLURM(workers_per_node=1, nodes=2)
    rm = run(make_learners(2, delay=0.05), goal=100, scheduler=scheduler, max_simultaneous_jobs=1)
    victims = wait_for(
        partial(running_with_save, rm.run_dir.path, rm.fnames, 2),
        timeout_s=PATIENCE_S,
        what="two workers holding learners with a save on disk",
    )
    subprocess.run(["scontrol", "update", "PartitionName=debug", "MaxNodes=1"], check=True)
    (allocation,) = {row["task"].partition("@")[0] for row in victims}
    subprocess.run(["scancel", allocation], check=True)
    (problem,) = wait_for(rm.problems, timeout_s=PATIENCE_S, what="a problem in the run")
    assert "1 task(s) of group 0" in problem
    assert re.search(r"wait in the queue with reason Partition(Config|NodeLimit): it asks", problem)
    assert f"They may never start; to change the scheduler's options: {CHANGE_OPTIONS}" in problem
    assert rm.status()["waiting"] == 2  # nothing cancelled: the user decides
    # The advice, followed: cancel, change the scheduler's options, run the cell again.
    rm.cancel()
    again = run(make_learners(2, delay=0.05), goal=100, scheduler=ar.SLURM(workers_per_node=1))
    assert again.wait(timeout=PATIENCE_S)
    assert again.problems() == []
    for row in victims:
        resumed_with_data(rm.run_dir.path, row["learner"], after=row["task"])


@pytest.fixture
def down_partition() -> Iterator[str]:
    """A partition of node n1 set DOWN: its jobs pend for PartitionDown. Deleted afterwards
    (once its jobs are gone: SLURM keeps a partition that has jobs)."""
    name = f"ar-down-{os.getpid()}"
    create = ["scontrol", "create", f"PartitionName={name}", "Nodes=n1", "State=DOWN"]
    subprocess.run(create, check=True)
    yield name
    subprocess.run(["scancel", f"--partition={name}"], check=True)

    def deleted() -> bool:
        gone = subprocess.run(["scontrol", "delete", f"PartitionName={name}"], check=False)
        return gone.returncode == 0

    wait_for(deleted, timeout_s=PATIENCE_S, what=f"partition {name} deleted")


def test_wait_gives_up_on_jobs_that_wait_for_good_and_its_advice_works(
    run: Callable[..., ar.RunManager], down_partition: str
) -> None:
    # The dry run at start takes a DOWN partition (SLURM would queue the job); its tasks then
    # pend for PartitionDown, which no other job's end lifts.
    rm = run(make_learners(2), scheduler=ar.SLURM(cores=1, queue=down_partition))
    started = time.monotonic()
    with pytest.raises(RunStuckError) as raised:
        rm.wait(timeout=PATIENCE_S, stuck_after=timedelta(seconds=3))
    print(f"wait() raised after {time.monotonic() - started:.1f} s")  # for the closing note
    message = str(raised.value)
    assert re.match(r"every task of the run has waited in the queue for [3-9] s ", message)
    (problem,) = rm.problems()
    assert f"- {problem}\n" in message
    assert "wait in the queue with reason PartitionDown: its partition is down" in problem
    assert "rm.wait(stuck_after=None) waits on regardless" in message
    assert rm.status()["waiting"] == 2
    assert len(queue(rm.run_dir.path)) == 2  # still queued: the user decides
    # The advice, word for word: rm.cancel(), then the cell again with the new options.
    assert CHANGE_OPTIONS in problem
    rm.cancel()
    again = run(make_learners(2), scheduler=ar.SLURM(cores=1))  # the same run_dir and fnames
    assert again.wait(timeout=PATIENCE_S)
    assert again.status()["done"] == 2
    assert again.problems() == []
    # The cancelled array never tried to start: no start failure, no probe before a full array.
    assert "array ended without a claim" not in (rm.run_dir.path / "manager.log").read_text()


def test_a_packed_worker_whose_learner_is_cancelled_goes_on_with_the_next(
    run: Callable[..., ar.RunManager],
) -> None:
    rm = run(make_learners(8, delay=0.05), goal=100, scheduler=PACKED, max_simultaneous_jobs=1)
    run_dir = rm.run_dir.path
    victim, *_ = wait_for(
        partial(running_with_save, run_dir, rm.fnames, 4),
        timeout_s=PATIENCE_S,
        what="four workers holding learners with a save on disk",
    )
    rm.cancel(learners=[victim["learner"]])
    rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 7
    assert rm.status()["cancelled"] == 1
    # Its allocation was not cancelled for it, and its cores did not idle: the worker took
    # another learner (the other three were busy with theirs) and finished it.
    later = [r for r in task_rows(run_dir) if r["task"] == victim["task"]][1:]
    assert later
    assert later[0]["outcome"] == "done"
    assert len(run_arrays(run_dir)) == 1
    no_overlaps(run_dir)


def test_a_packed_worker_whose_learner_fails_goes_on_with_the_next(
    run: Callable[..., ar.RunManager],
) -> None:
    learners = [adaptive.Learner1D(always_fails, bounds=(-1, 1)), *make_learners(7, delay=0.05)]
    rm = run(learners, goal=100, scheduler=PACKED, max_simultaneous_jobs=1, max_fails=1)
    run_dir = rm.run_dir.path
    rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 7
    assert rm.status()["failed"] == 1
    # Learner 0 fails at its first point; its worker takes another learner (the other three
    # are busy with theirs) and finishes it, as one whose learner was cancelled does: its
    # allocation goes on for the others, so its core would idle until the allocation ends.
    rows = task_rows(run_dir)
    (failed,) = [r for r in rows if r["learner"] == 0]
    assert failed["outcome"] == "failed"
    later = [r for r in rows if r["task"] == failed["task"]][1:]
    assert later
    assert {r["outcome"] for r in later} == {"done"}
    assert len(run_arrays(run_dir)) == 1
    no_overlaps(run_dir)
