"""Run: a run directory opened without unpickling any learner; the CLI without user modules."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import adaptive
import cloudpickle
import pytest
from helpers_run import make_learners, make_rm, make_run, wait_for

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.run import RetryWarning

REPO = Path(__file__).resolve().parents[2]
# Learners carry this module's functions by value: workers cannot import it.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

USER_MODULE = """
import time

def slow(x):
    time.sleep(0.05)
    return x**2
"""


def test_cli_cancels_a_run_whose_learners_module_it_cannot_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "user_functions.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(modules))
    # The jobs import it too (the learners pickle its function by reference).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(modules), str(REPO)]))
    slow = importlib.import_module("user_functions").slow  # importable here, at creation

    learners = [adaptive.Learner1D(slow, bounds=(-1, 1)) for _ in range(3)]
    rm = make_rm(tmp_path, learners, goal=10_000, max_simultaneous_jobs=2).start()
    run_dir = tmp_path / "run"
    try:
        wait_for(lambda: rm.status()["running"] == 2, what="two learners running")
        script = (
            "import importlib.util, sys\n"
            "from adaptive_runner.cli import main\n"
            "assert importlib.util.find_spec('user_functions') is None\n"
            f"codes = [main(['status', {str(run_dir)!r}]), main(['cancel', {str(run_dir)!r}])]\n"
            "sys.exit(max(codes))\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "cancelled the run; 0 waiting, 0 running, 0 done, 0 failed, 3 cancelled" in (
            done.stdout
        )
        wait_for(lambda: not ar.Run(run_dir).active_tasks(), what="the cancelled jobs gone")
    finally:
        rm.cancel()
        assert not rm.wait(timeout=120)
    # Unpickling needs the module: only load_learners does it.
    run = ar.Run(run_dir)
    assert [r.state for r in run.learners()] == ["cancelled"] * 3
    assert len(run.load_learners()) == 3  # importable again in this process


def test_run_reads_a_finished_run(tmp_path: Path) -> None:
    assert make_rm(tmp_path, make_learners(2), goal=10).start().wait(timeout=120)
    run = ar.Run(tmp_path / "run")
    assert repr(run) == f"Run({str(tmp_path / 'run')!r})"
    assert run.status() == {"waiting": 0, "running": 0, "done": 2, "failed": 0, "cancelled": 0}
    assert run.finished()
    assert [r.index for r in run.learners()] == [0, 1]
    assert {t.outcome for t in run.tasks()} == {"done"}
    assert {record.task for record in run.parse_logs()} == {t.task for t in run.tasks()}
    assert all(learner.npoints >= 10 for learner in run.load_learners())
    wait_for(lambda: not run.active_tasks(), what="the tasks exited")  # after their learners
    assert run.retry() == []
    assert run.config().n_learners == 2


def abort(x: float) -> float:
    del x
    os.abort()


def test_a_crash_by_signal_is_explained(tmp_path: Path) -> None:
    """os.abort() in the function: the learner's reason names the signal, the logs the stack."""
    learner = adaptive.Learner1D(abort, bounds=(0, 1))
    assert not make_rm(tmp_path, [learner], max_fails=1).start().wait(timeout=120)
    run = ar.Run(tmp_path / "run")
    (row,) = run.learners()
    assert row.state == "failed"
    assert row.error is not None
    assert "killed by signal 6 (SIGABRT)" in row.error
    (record,) = run.parse_logs()
    assert "Fatal Python error: Aborted" in record.output_errors


def test_retry_names_the_cancelled_learners_it_left_alone(tmp_path: Path) -> None:
    run = ar.Run(make_run(tmp_path / "run", 4).path)
    run.cancel([0, 1, 2])
    hint = "retry: learners 0, 1 are cancelled: pass cancelled=True to retry them"
    with pytest.warns(RetryWarning, match=f"^{hint}$"):
        put_back = run.retry([0, 1, 3])
    assert put_back == []
    assert put_back.left_alone == {"cancelled": [0, 1], "waiting": [3]}
    assert run.retry([0], cancelled=True) == [0]  # no warning: pytest makes one an error
    assert run.retry() == []  # every failed one: none, and no learner named
    assert run.retry().left_alone == {"cancelled": [1, 2]}
    assert [r.index for r in run.learners("cancelled")] == [1, 2]
    assert [r.index for r in run.learners("waiting", limit=1)] == [0]
    with pytest.raises(ConfigError, match="'stopped' is not a learner state: use one of waiting"):
        run.learners("stopped")


def test_run_of_no_run_directory(tmp_path: Path) -> None:
    run = ar.Run(tmp_path / "nothing")  # no I/O yet
    with pytest.raises(ConfigError, match="not a run directory"):
        run.status()
    with pytest.raises(ConfigError, match="not a run directory"):
        run.config()


def test_remove_data_is_refused_while_learners_run(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(1, delay=0.05), goal=10_000).start()
    try:
        fname = tmp_path / "data" / "l0.pickle"
        wait_for(fname.exists, what="the learner running and saved")
        with pytest.raises(ConfigError, match="1 learners are running"):
            ar.Run(tmp_path / "run").remove_data()
    finally:
        rm.cancel()
        wait_for(lambda: not ar.Run(tmp_path / "run").active_tasks(), what="the job gone")
        assert not rm.wait(timeout=120)
    removed = ar.Run(tmp_path / "run").remove_data()
    assert removed == [fname]
    assert not fname.exists()
