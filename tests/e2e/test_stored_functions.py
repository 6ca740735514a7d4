"""Learner functions that close over big data: stored once per run, read once per process.

Whole runs on the Local scheduler: the run directory holds one copy of a function that many
learners share, the learners run and resume from it, and each pool process unpickles a
learner's function once, not once per point (counted by an object the function captures).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import adaptive
import pytest
from helpers_run import (
    CountedUnpickles,
    big_closure,
    make_rm,
    no_overlaps,
    stop_and_cancel,
    task_rows,
    wait_for,
)

import adaptive_runner as ar

if TYPE_CHECKING:
    from pathlib import Path

MB = 1 << 20


def run_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def functions(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "functions").glob("*.pickle"))


def six_learners(f: Any) -> list[Any]:
    """Every kind of learner that holds ``f``, or wraps learners that do."""
    return [
        adaptive.Learner1D(f, bounds=(-1, 1)),
        adaptive.Learner1D(f, bounds=(0, 2)),
        adaptive.SequenceLearner(f, [0.05 * i for i in range(40)]),
        adaptive.DataSaver(adaptive.Learner1D(f, bounds=(-1, 1)), arg_picker=float),
        adaptive.BalancingLearner([adaptive.Learner1D(f, bounds=(k, k + 1)) for k in range(2)]),
        adaptive.LearnerND(f, bounds=[(-1, 1), (-1, 1)]),
    ]


@pytest.mark.slow
def test_six_learners_sharing_a_big_closure_store_it_once_run_and_resume(tmp_path: Path) -> None:
    f = big_closure(3.0, 8 * MB, CountedUnpickles(str(tmp_path / "unpickles")), delay=0.02)
    rm = make_rm(tmp_path, six_learners(f), goal=20, max_simultaneous_jobs=2).start()
    run_dir = tmp_path / "run"
    assert len(functions(run_dir)) == 1
    assert run_size(run_dir) < 12 * MB  # one copy of the 8 MB; six would be 48 MB
    wait_for(lambda: rm.status()["done"] >= 1, what="a learner done")
    rm.stop()  # its tasks go on, and reconnect to the resumed managers
    resumed = ar.RunManager.resume(run_dir)
    assert resumed.wait(timeout=180)
    no_overlaps(run_dir)
    learners = resumed.load_learners()
    for learner in learners:
        assert learner.npoints >= 20
    x, y = next(iter(learners[0].data.items()))
    assert y == x + 3.0
    # Loaded together, they share one function object again, as they did when made. (Not
    # LearnerND: adaptive saves its whole __dict__ as its data, its function with it.)
    shared = learners[0].function
    assert learners[1].function is shared
    assert learners[3].learner.function is shared
    assert all(inner.function is shared for inner in learners[4].learners)
    # Started again as stored (unpickled, then pickled anew): still one copy, once its tasks
    # have exited (a rerun keeps the files a running task may read).
    wait_for(lambda: not resumed.active_tasks(), what="the tasks to exit")
    again = ar.RunManager.open(run_dir).start()
    assert again.wait(timeout=180)
    assert len(functions(run_dir)) == 1
    assert run_size(run_dir) < 12 * MB


@pytest.mark.parametrize("executor", ["loky", "process-pool", "mpi4py"])
def test_each_pool_process_unpickles_the_function_once(tmp_path: Path, executor: str) -> None:
    # Two learners, two functions, one task: the task moves on to the second learner (a new
    # pool, or mpi4py's same ranks) and each point is computed by its own learner's function.
    counts = [tmp_path / "first", tmp_path / "second"]
    learners = [
        adaptive.Learner1D(big_closure(offset, 2 * MB, CountedUnpickles(str(count))), (-1, 1))
        for offset, count in zip((10.0, 20.0), counts, strict=True)
    ]
    scheduler = ar.Local(cores=2, executor=executor)
    rm = make_rm(tmp_path, learners, goal=25, max_simultaneous_jobs=1, scheduler=scheduler)
    assert rm.start().wait(timeout=180)
    assert len({row["task"] for row in task_rows(tmp_path / "run")}) == 1
    for offset, count, learner in zip((10.0, 20.0), counts, rm.load_learners(), strict=True):
        assert learner.npoints >= 25
        assert all(y == x + offset for x, y in learner.data.items())
        pids = Counter(count.read_text().split())
        # The worker loaded it, then each pool process once (load_learners here added one).
        assert max(pids.values()) == 1, pids
        assert len(pids) <= 1 + 2 + 1, pids


def test_a_rerun_removes_a_function_no_learner_names_unless_a_task_runs(tmp_path: Path) -> None:
    def learners(offset: float, delay: float) -> list[Any]:
        f = big_closure(offset, 2 * MB, CountedUnpickles(str(tmp_path / "unpickles")), delay)
        return [adaptive.Learner1D(f, bounds=(-1, 1)) for _ in range(2)]

    run_dir = tmp_path / "run"
    # kill_grace_s: a cancelled task that cannot report to stopped managers is killed soon.
    quick: dict[str, Any] = {"goal": 10_000, "kill_grace_s": 3.0}
    first = make_rm(tmp_path, learners(1.0, 0.2), **quick).start()
    [old] = functions(run_dir)
    wait_for(lambda: any(r["finished"] is None for r in task_rows(run_dir)), "a task to hold one")
    first.stop()  # its tasks go on, reading the old function's file
    # New data, a new function: the old file stays while a task of the run may read it ...
    second = make_rm(tmp_path, learners(2.0, 0.0), **quick).start()
    try:
        assert old in functions(run_dir)
        assert len(functions(run_dir)) == 2
    finally:
        stop_and_cancel(second)
    # ... and goes at the next rerun that finds none active.
    third = make_rm(tmp_path, learners(2.0, 0.0), **quick).start()
    try:
        [new] = functions(run_dir)
        assert new != old
    finally:
        stop_and_cancel(third)
