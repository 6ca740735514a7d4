"""The job manager acts when a learner is done or comes back, not at its next poll.

Both runs poll the queue once an hour: only the database manager's wake-up can end them
within the tests' patience (which bounds a hang; nothing here is timed).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import adaptive
import cloudpickle
from helpers_run import make_learners, make_rm, stop_and_cancel

from adaptive_runner.state.database import Database

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HOUR = 3600.0


def test_the_run_ends_when_its_last_learner_is_done(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(3), poll_interval=HOUR, kill_grace_s=1).start()
    try:
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    assert rm.status()["done"] == 3


def fails_the_first_time(x: float, flag: str) -> float:
    if not Path(flag).exists():
        Path(flag).touch()
        raise RuntimeError("a flaky first call")
    return x**2


def test_a_learner_that_fails_gets_its_next_job_without_waiting_for_the_poll(
    tmp_path: Path,
) -> None:
    learner = adaptive.Learner1D(
        partial(fails_the_first_time, flag=str(tmp_path / "failed-once")), bounds=(-1, 1)
    )
    rm = make_rm(
        tmp_path,
        [learner],
        poll_interval=HOUR,
        max_fails=2,
        max_simultaneous_jobs=1,
        kill_grace_s=1,
    ).start()
    try:
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    with Database.open(rm.run_dir.database) as db:
        (row,) = db.learners()
        assert (row.state, row.failures) == ("done", 1)
        assert len(db.recorded_arrays()) == 2  # the second array came from the wake-up
