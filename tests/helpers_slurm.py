"""For the whole-run tests on the real SLURM: runs that clean up, an sbatch that logs its calls."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

import adaptive_runner as ar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

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
        f'#!/bin/sh\nREAL={shlex.quote(real)}\necho "$*" >> {shlex.quote(str(calls))}\n{then}\n'
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
