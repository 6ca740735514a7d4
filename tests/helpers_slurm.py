"""For the whole-run tests on the real SLURM: runs that clean up, an sbatch that logs its calls."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers_run import no_overlaps, task_rows, wait_for

import adaptive_runner as ar
from adaptive_runner.state.database import Database
from adaptive_runner.status.log_parser import split_event

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import adaptive

    from adaptive_runner.schedulers.base import Scheduler

PATIENCE_S = 150.0  # a bound on every wait (a failure guard, not a timing assertion)


def wrap_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str) -> Path:
    """Put an ``sbatch`` on PATH that logs each call (to the returned file), then runs ``then``.

    ``then`` is shell text in which ``"$REAL"`` is the real sbatch.
    """
    real = shutil.which("sbatch")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    calls.touch()
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(
        f"#!/bin/sh\nREAL={shlex.quote(real)}\n"
        # The dry run at start (sbatch --test-only) queues nothing: not a submission.
        f'case "$*" in *--test-only*) exec "$REAL" "$@";; esac\n'
        f'echo "$*" >> {shlex.quote(str(calls))}\n{then}\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def run_arrays(run_dir: Path) -> list[str]:
    """Every array the run submitted, finished or not."""
    conn = sqlite3.connect(run_dir / "state.sqlite")
    try:
        return [row[0] for row in conn.execute("SELECT array_id FROM arrays")]
    finally:
        conn.close()


@pytest.fixture
def sbatch_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put an ``sbatch`` on PATH that logs each call, then runs the real one."""
    return wrap_sbatch(tmp_path, monkeypatch, 'exec "$REAL" "$@"')


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., ar.RunManager]]:
    """Start RunManagers on SLURM; stop them and scancel every array they made afterwards."""
    started: list[ar.RunManager] = []

    def start(learners: list[adaptive.Learner1D], **kwargs: Any) -> ar.RunManager:
        options: dict[str, Any] = {
            "goal": 25,
            "run_dir": tmp_path / "run",
            "max_simultaneous_jobs": len(learners),
            "save_interval": 0.3,
            "log_interval": 0.5,
            "poll_interval": 0.5,
        }
        scheduler: Scheduler = kwargs.pop("scheduler", ar.SLURM(cores=1))
        fnames = [tmp_path / "data" / f"l{i}.pickle" for i in range(len(learners))]
        rm = ar.RunManager(scheduler, learners, fnames, **(options | kwargs))
        started.append(rm.start())
        return rm

    yield start
    for rm in started:
        rm.stop()
        arrays = run_arrays(rm.run_dir.path)
        if arrays:
            subprocess.run(["scancel", *arrays], check=True)


def running_with_save(run_dir: Path, fnames: list[str], n: int) -> list[sqlite3.Row] | None:
    """``n`` tasks that hold a learner and have saved some of its data, or None."""
    rows = [
        row
        for row in task_rows(run_dir)
        if row["finished"] is None and Path(fnames[row["learner"]]).exists()
    ]
    return rows[:n] if len(rows) >= n else None


def log_events(run_dir: Path, task: str) -> list[dict[str, object]]:
    """The worker's events in a task's log; its other lines are the task's own output."""
    path = run_dir / "logs" / f"{task}.log"
    events = (split_event(line)[1] for line in path.read_bytes().splitlines())
    return [event for event in events if event is not None]


def resumed_with_data(run_dir: Path, learner: int, after: str) -> None:
    """A later task than ``after`` held ``learner`` and resumed it from a non-empty save."""
    later = [r for r in task_rows(run_dir) if r["learner"] == learner and r["task"] != after]
    assert later, f"learner {learner} was not resubmitted"
    resumed = [e for e in log_events(run_dir, later[0]["task"]) if e["event"] == "resumed"]
    assert resumed, f"task {later[0]['task']} did not resume learner {learner}"
    assert isinstance(resumed[0]["npoints"], int)
    assert resumed[0]["npoints"] > 0


def all_released_and_resumed(rm: ar.RunManager, victims: list[sqlite3.Row]) -> None:
    """After a scancel of the victims' jobs: the run ends with every learner done, and each
    victim had saved and released (scancel sends SIGTERM first: no failure counted), its
    learner resumed from that save in a later job."""
    run_dir = rm.run_dir.path
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == len(rm.fnames)
    with Database.open(run_dir / "state.sqlite") as db:
        learners = db.learners()
    for row in victims:
        (first,) = [r for r in task_rows(run_dir) if r["task"] == row["task"]]
        assert first["outcome"] == "released"
        assert learners[row["learner"]].failures == 0
        assert learners[row["learner"]].attempts >= 2
        resumed_with_data(run_dir, row["learner"], after=row["task"])
    no_overlaps(run_dir)


# How sacct shows a task that ended; RESIZING is the record SLURM keeps of a job before it
# was shrunk (a node handed back), beside the job's own.
_ENDED = {"COMPLETED", "RESIZING", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def ended_clean(run_dir: Path, array_id: str) -> None:
    """Every task of ``array_id`` ended COMPLETED in sacct, without an error line in its log.

    sacct is asked until each record has ended (accounting lags a moment behind the queue).
    """

    def states() -> list[str] | None:
        out = subprocess.run(
            ["sacct", "-j", array_id, "-n", "-X", "-P", "-o", "JobID,State"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = [line.split("|")[1].split()[0] for line in out.splitlines() if line]
        return found if found and set(found) <= _ENDED else None

    found = wait_for(states, timeout_s=PATIENCE_S, what=f"sacct's end records of {array_id}")
    assert set(found) - {"RESIZING"} == {"COMPLETED"}, found
    for log in (run_dir / "logs").glob(f"{array_id}_*.log"):
        output = [split_event(line)[0] for line in log.read_bytes().splitlines()]
        errors = [line for line in output if b"error" in line.lower()]
        assert not errors, (log.name, errors)
