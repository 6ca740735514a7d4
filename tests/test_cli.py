"""The adaptive-runner command on real small runs (Local scheduler): main([...]) and exit codes."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import adaptive
import helpers_run
import pytest
from helpers_run import always_fails, make_learners

from adaptive_runner import cli
from adaptive_runner.cli import main
from adaptive_runner.errors import RunStateError, StateFileError
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from pathlib import Path

    import adaptive_runner as ar


def make_rm(tmp_path: Path, learners: list[adaptive.Learner1D], **kwargs: Any) -> ar.RunManager:
    return helpers_run.make_rm(tmp_path, learners, **({"max_simultaneous_jobs": 3} | kwargs))


def slow(n: int, delay: float = 0.05) -> list[adaptive.Learner1D]:
    return make_learners(n, delay=delay)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two learners done and one failed (max_fails=1)."""
    tmp_path = tmp_path_factory.mktemp("finished")
    learners = [*slow(2, delay=0.0), adaptive.Learner1D(always_fails, bounds=(0, 1))]
    rm = make_rm(tmp_path, learners, max_fails=1).start()
    assert not rm.wait(timeout=120)
    return tmp_path / "run"


def test_status_table(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(finished_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "LEARNER",
        "STATE",
        "TASK",
        "HOST",
        "NPOINTS",
        "LOSS",
        "ATTEMPTS",
        "HEARTBEAT",
    ]
    rows = [line.split() for line in lines[1:4]]
    assert [(r[0], r[1]) for r in rows] == [("0", "done"), ("1", "done"), ("2", "failed")]
    assert int(rows[0][4]) >= 30  # npoints
    assert rows[0][7] == "-"  # no heartbeat age once done
    assert lines[4] == "3 learners: 0 waiting, 0 running, 2 done, 1 failed, 0 cancelled"


def test_status_info(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(finished_run), "--format", "info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "run: run finished",
        "learners: waiting 0, running 0, done 2, failed 1, cancelled 0; total 3",
    ]
    assert [line.split("  ")[0] for line in lines[2:8]] == [
        "elapsed",
        "CPU-hours",
        "mean CPU",
        "memory",
        "data on disk",
        "median queue wait",
    ]


def test_status_tsv(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(finished_run), "--format", "tsv"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split("\t") == [
        "#flags",
        "learner",
        "task",
        "host",
        "pid",
        "exit_code",
        "elapsed_s",
        "start",
        "finish",
        "attempts",
    ]
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 10 for row in rows)
    by_learner = {int(row[1]): row for row in rows}
    assert sorted(by_learner) == [0, 1, 2]
    flags, _, task, host, pid, code, elapsed, start, finish, attempts = by_learner[0]
    assert (flags, code, attempts) == ("", "0", "1")
    assert task.startswith("L")
    assert host
    assert int(pid) > 0
    assert float(finish) - float(start) == pytest.approx(float(elapsed), abs=0.01)
    assert by_learner[2][0] == "RE"  # not clean, and its output (in its log) has error lines
    assert by_learner[2][5] == "1"


def test_logs_merged_in_time_order(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", str(finished_run)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    times = [datetime.fromisoformat(line.split()[0]) for line in lines]
    assert times == sorted(times)
    tasks = {line.split()[1] for line in lines}
    with Database.open(finished_run / "state.sqlite") as db:
        assert {t.task for t in db.tasks()} <= tasks
    started = [line for line in lines if line.split()[3] == "started"]
    assert len(started) == 3
    assert any(line.split()[3] == "failed" for line in lines)


def test_logs_show_the_traceback_indented(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Database.open(finished_run / "state.sqlite") as db:
        (task,) = [t.task for t in db.tasks() if t.outcome == "failed"]
    assert main(["logs", str(finished_run), "--task", task]) == 0
    out = capsys.readouterr().out
    assert {line.split()[1] for line in out.splitlines() if not line.startswith(" ")} == {task}
    assert "    ZeroDivisionError: cannot evaluate at" in out
    # The function's stderr, in the same log, stays between the worker's events around it.
    lines = out.splitlines()
    printed = next(i for i, line in enumerate(lines) if "solver error: giving up" in line)
    assert lines[printed].split()[:2] == [task, "solver"]
    assert any(line.split()[3:4] == ["started"] for line in lines[:printed])
    assert any(line.split()[3:4] == ["failed"] for line in lines[printed:])


def test_logs_of_an_unknown_task(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", str(finished_run), "--task", "L99_0"]) == 1
    assert "no log for task L99_0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", "--format", "tsv"], ["logs"], ["cancel"], ["serve"], ["retry"]],
)
def test_not_a_run_directory(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([argv[0], str(tmp_path), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not a run directory" in err


@pytest.mark.parametrize(
    "error",
    [
        RunStateError("state.sqlite is damaged: restore it"),
        StateFileError("state.sqlite was deleted while the run used it"),
    ],
)
def test_a_damaged_run_state_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: RunStateError,
) -> None:
    def damaged(_: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_status", damaged)
    assert main(["status", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"adaptive-runner: {error}\n")


def test_logs_follow_until_the_run_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rm = make_rm(tmp_path, slow(2)).start()
    try:
        assert main(["logs", str(tmp_path / "run"), "--follow"]) == 0
    finally:
        rm.wait(timeout=120)
    lines = capsys.readouterr().out.splitlines()
    done = [line for line in lines if not line.startswith(" ") and line.split()[3] == "done"]
    assert len(done) == 2, "\n".join(lines)


def test_cancel_some_learners_then_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rm = make_rm(tmp_path, slow(3, delay=0.2), goal=10_000, max_simultaneous_jobs=2).start()
    run_dir = str(tmp_path / "run")
    try:
        assert main(["cancel", run_dir, "--learner", "2"]) == 0
        assert "cancelled learners 2;" in capsys.readouterr().out
        assert rm.status()["cancelled"] == 1
        assert main(["cancel", run_dir, "--learner", "7"]) == 2
        assert "cancel: 7 is not a learner index (0..2)" in capsys.readouterr().err
        assert main(["cancel", run_dir]) == 0
        assert "cancelled the run; 0 waiting, 0 running, 0 done, 0 failed, 3 cancelled" in (
            capsys.readouterr().out
        )
    finally:
        assert not rm.wait(timeout=120)  # ends: nothing left to run
    assert rm.status()["cancelled"] == 3


@pytest.mark.slow  # the jobs reconnect after their client's backoff (~20 s)
def test_serve_continues_a_stopped_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rm = make_rm(tmp_path, slow(3, delay=0.02), goal=60).start()
    run_dir = tmp_path / "run"
    with Database.open(run_dir / "state.sqlite") as db:
        deadline = time.monotonic() + 60
        while not db.tasks() and time.monotonic() < deadline:
            time.sleep(0.1)
    rm.stop()  # the managers go; the jobs keep running and wait for a manager
    assert main(["serve", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"serving {run_dir}" in out
    assert "0 waiting, 0 running, 3 done, 0 failed, 0 cancelled" in out


def test_retry_puts_failed_learners_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learners = [*slow(1, delay=0.0), adaptive.Learner1D(always_fails, bounds=(0, 1))]
    assert not make_rm(tmp_path, learners, max_fails=1).start().wait(timeout=120)
    run_dir = str(tmp_path / "run")
    assert main(["retry", run_dir, "--learner", "7"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "adaptive-runner: retry: 7 is not a learner index (0..1)"
    assert main(["retry", run_dir, "--learner", "0"]) == 0  # done: left alone
    assert capsys.readouterr().out.startswith("back to waiting: none; ")
    assert main(["retry", run_dir]) == 0
    out = capsys.readouterr().out
    assert out.startswith("back to waiting: 1; 1 waiting, 0 running, 1 done, 0 failed")
    assert "adaptive-runner serve RUN_DIR" in out
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        assert (db.learners()[1].state, db.learners()[1].attempts) == ("waiting", 0)
