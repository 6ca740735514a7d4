"""Why tasks never started or how they ended.

Jobs that cannot start, on the real Local scheduler: bounded submissions, a reason to act on;
a packed worker's end, read from its packer's line.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import adaptive
import cloudpickle
import pytest
from helpers_run import make_learners, make_rm

import adaptive_runner as ar
from adaptive_runner.cli import main
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.common.vocabulary import worker_ended_line
from adaptive_runner.manager.reasons import worker_ending
from adaptive_runner.state.database import Database
from adaptive_runner.status.snapshot import StatusSnapshot, status_html

if TYPE_CHECKING:
    from pathlib import Path

# The learner function travels by value: the workers cannot import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def start_run(tmp_path: Path, scheduler: ar.Local, **options: Any) -> ar.RunManager:
    """Three learners on ``scheduler``, started; ``options`` override make_rm's."""
    return make_rm(
        tmp_path, make_learners(3), scheduler=scheduler, **({"max_fails": 3} | options)
    ).start()


def arrays_and_reason(tmp_path: Path) -> tuple[int, str]:
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        errors = {row.error for row in db.learners()}
        assert len(errors) == 1, errors
        (error,) = errors
        assert error is not None
        return len(db.recorded_arrays()), error


def manager_log(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "run" / "manager.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("scheduler", "said"),
    [
        (ar.Local(python="/nonexistent/python"), "/nonexistent/python: No such file or directory"),
        (ar.Local(extra_script="module load gcc/12"), "module: command not found"),
    ],
    ids=["wrong-python", "failing-extra-script"],
)
def test_jobs_that_cannot_start_fail_the_run_with_their_own_words(
    tmp_path: Path, scheduler: ar.Local, said: str
) -> None:
    rm = start_run(tmp_path, scheduler)
    try:
        assert rm.wait(timeout=120) is False  # ended, not timed out: the learners failed
    finally:
        rm.stop()
    assert rm.status()["failed"] == 3
    n_arrays, reason = arrays_and_reason(tmp_path)
    assert n_arrays == 3  # max_fails arrays, then no more submissions
    assert "cannot start: 3 array(s) in a row" in reason
    assert said in reason
    assert "(FAILED, exit code 127)" in reason  # from the task's exit file
    events = [line for line in manager_log(tmp_path) if line.get("event", "").startswith("giving")]
    assert len(events) == 1
    assert said in events[0]["reason"]
    assert rm.problems() == [reason]  # what the CLI and the panel show too


def test_status_shows_why_jobs_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rm = start_run(tmp_path, ar.Local(python="/nonexistent/python"), max_fails=1)
    try:
        assert rm.wait(timeout=120) is False
    finally:
        rm.stop()
    capsys.readouterr()
    assert main(["status", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    problem = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert len(problem) == 1
    assert "/nonexistent/python: No such file or directory" in problem[0]
    assert "failed (3): jobs of group 0 cannot start" in out
    snapshot = StatusSnapshot.take(RunDir(tmp_path / "run"), managers_running=False)
    assert snapshot.problems == tuple(rm.problems())
    assert "No such file or directory" in status_html(snapshot)


@pytest.mark.parametrize(
    ("scheduler", "options", "url"),
    [
        # The job hangs before Python starts, as on a node that cannot mount the home.
        (ar.Local(extra_script="sleep 600", kill_grace_s=1), {}, "tcp://127.0.0.1:"),
        # The manager listens on 127.0.0.1 (Local); the jobs are told 127.0.0.2: nothing there.
        (ar.Local(kill_grace_s=1), {"host": "127.0.0.2"}, "tcp://127.0.0.2:"),
    ],
    ids=["hangs-before-python", "unreachable-address"],
)
def test_a_job_that_never_claims_is_cancelled_and_explained(
    tmp_path: Path, scheduler: ar.Local, options: dict[str, Any], url: str
) -> None:
    rm = start_run(tmp_path, scheduler, claim_timeout=3, max_fails=1, **options)
    try:
        assert rm.wait(timeout=120) is False
    finally:
        rm.stop()
    n_arrays, reason = arrays_and_reason(tmp_path)
    assert n_arrays == 1
    assert f"without reaching the database manager at {url}" in reason
    assert "host=" in reason


def test_the_fixed_rerun_starts_the_failed_group_afresh(tmp_path: Path) -> None:
    rm = start_run(tmp_path, ar.Local(python="/nonexistent/python"), max_fails=2)
    try:
        assert rm.wait(timeout=120) is False
    finally:
        rm.stop()
    assert rm.status()["failed"] == 3
    fixed = start_run(tmp_path, ar.Local(), max_fails=2)  # the same cell, python fixed
    try:
        assert fixed.wait(timeout=120) is True
    finally:
        fixed.stop()
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        assert db.group_states() == []
        assert {row.error for row in db.learners()} == {None}


def hangs_at_zero(x: float) -> float:
    if x == 0:
        time.sleep(3600)  # a point that never ends
    return x**2


def test_a_point_that_hangs_fails_its_learner_instead_of_burning_allocations(
    tmp_path: Path,
) -> None:
    # Each job gets its time-limit warning (SIGUSR1) after 6 s, as SLURM's --signal would
    # (long enough for a loaded machine to start Python and evaluate the two bounds).
    limit = ar.Local(extra_script="( sleep 6; kill -USR1 $$ ) &", kill_grace_s=1)
    learners = [adaptive.Learner1D(hangs_at_zero, bounds=(-1, 1))]
    fnames = [tmp_path / "data" / "0.pickle"]
    rm = ar.RunManager(
        limit,
        learners,
        fnames,
        goal=50,
        run_dir=tmp_path / "run",
        poll_interval=0.3,
        max_fails=2,
        log_interval=0.5,
    ).start()
    try:
        assert rm.wait(timeout=120) is False
    finally:
        rm.stop()
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        (row,) = db.learners()
        holds = [t for t in db.tasks() if t.learner == 0]
    assert row.state == "failed"
    # One job with progress (the bounds), two without: max_fails. A job that starts so late
    # (a loaded machine) that no point is in evaluation at its warning releases without a
    # failure, and one more job follows (seen in CI): a few, never an endless series.
    assert 3 <= len(holds) <= 5
    assert row.error is not None
    assert row.error.startswith("no progress: the job ended with 2 points")
    assert "points in evaluation: 0.0" in row.error


# A packed allocation's output: the workers' own lines, and the packer's as it writes them.
PACKED_OUTPUT = """\
a worker printed this
adaptive_runner.packing: worker 1 ended with exit code 3
adaptive_runner.packing: worker 10 ended with signal 9 (SIGKILL)
"""


def test_a_packed_workers_end_is_read_from_its_packers_line() -> None:
    assert worker_ending(PACKED_OUTPUT, 1) == "worker 1 ended with exit code 3"
    assert worker_ending(PACKED_OUTPUT, 10) == "worker 10 ended with signal 9 (SIGKILL)"
    assert worker_ending(PACKED_OUTPUT, 0) is None  # it ended with 0, or it runs
    again = PACKED_OUTPUT + "adaptive_runner.packing: worker 1 ended with exit code 4\n"
    assert worker_ending(again, 1) == "worker 1 ended with exit code 4"  # the latest


def test_the_packers_line_is_what_the_job_manager_reads() -> None:
    assert worker_ended_line(0, -signal.SIGKILL) == (
        "adaptive_runner.packing: worker 0 ended with signal 9 (SIGKILL)"
    )
    assert worker_ended_line(2, 1) == "adaptive_runner.packing: worker 2 ended with exit code 1"
    for rank, code in [(0, 1), (3, -signal.SIGTERM), (12, 137)]:
        line = worker_ended_line(rank, code)
        said = worker_ending(f"output\n{line}\nmore output\n", rank)
        assert said == line.removeprefix("adaptive_runner.packing: ")
