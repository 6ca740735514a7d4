"""The adaptive-runner command on real small runs (Local scheduler): main([...]) and exit codes."""

from __future__ import annotations

import importlib
import os
import pty
import signal
import subprocess
import sys
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import adaptive
import helpers_run
import pytest
from helpers_run import always_fails, fails_slowly, make_learners, make_run

import adaptive_runner as ar
from adaptive_runner import cli
from adaptive_runner.cli import main
from adaptive_runner.errors import RunStateError, StateFileError
from adaptive_runner.manager.run_setup import create_run
from adaptive_runner.state.database import Database

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def one_task_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Learners 0 and 1 done, then 2 failed, one after another in one task (one at a time)."""
    tmp_path = tmp_path_factory.mktemp("one_task")
    learners = [*slow(2, delay=0.0), adaptive.Learner1D(always_fails, bounds=(0, 1))]
    rm = make_rm(tmp_path, learners, max_fails=1, max_simultaneous_jobs=1).start()
    assert not rm.wait(timeout=120)
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        assert [(t.task, t.learner) for t in db.tasks()] == [("L1_0", 0), ("L1_0", 1), ("L1_0", 2)]
    return tmp_path / "run"


def events(out: str) -> list[list[str]]:
    """The event lines of `logs`, split: time, task, level, event, key=value, ..."""
    return [line.split() for line in out.splitlines() if line and not line.startswith(" ")]


def learners_named(out: str) -> set[int]:
    """The learners the event lines of `logs` name (learner=N)."""
    return {
        int(word.removeprefix("learner="))
        for fields in events(out)
        for word in fields[4:]
        if word.startswith("learner=")
    }


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


def test_serve_says_in_one_line_that_the_learners_cannot_be_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The learners' module is importable where the run was made, not where it is served."""
    name = "ar_test_model_gone_later"
    (tmp_path / f"{name}.py").write_text("def f(x):\n    return x**2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = importlib.import_module(name)
    rm = make_rm(tmp_path, [adaptive.Learner1D(model.f, bounds=(0, 1))])
    create_run(rm.run_dir, rm.spec, replace=False)  # made, never started: no job
    monkeypatch.delitem(sys.modules, name)
    (tmp_path / f"{name}.py").unlink()
    capsys.readouterr()
    assert main(["serve", str(rm.run_dir.path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(
        "adaptive-runner: the learners of this run cannot be loaded here: "
        f"ModuleNotFoundError: No module named '{name}'; make the modules"
    )
    assert "adaptive-runner status/cancel/retry/logs" in line


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


def test_status_lists_the_failed_learners(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(finished_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("failed learners (1):")
    assert lines[start + 1].split() == ["LEARNER", "LAST", "TASK", "FNAME", "REASON"]
    index, task, fname, *reason = lines[start + 2].split()
    with Database.open(finished_run / "state.sqlite") as db:
        (failed,) = [t for t in db.tasks() if t.outcome == "failed"]
        assert (int(index), task, fname) == (2, failed.task, db.fname(2))
    assert " ".join(reason).startswith("ZeroDivisionError: cannot evaluate at ")
    assert len(lines) == start + 3


@pytest.mark.parametrize(
    ("state", "listed"), [("done", [0, 1]), ("failed", [2]), ("cancelled", [])]
)
def test_status_of_one_state(
    finished_run: Path, capsys: pytest.CaptureFixture[str], state: str, listed: list[int]
) -> None:
    assert main(["status", str(finished_run), "--state", state]) == 0
    lines = capsys.readouterr().out.splitlines()
    if listed:
        assert lines[0].split()[:2] == ["LEARNER", "STATE"]
        rows = [line.split() for line in lines[1 : 1 + len(listed)]]
        assert [(int(r[0]), r[1]) for r in rows] == [(i, state) for i in listed]
        summary = lines[1 + len(listed)]
    else:
        assert lines[0] == f"no learner is {state}"
        summary = lines[1]
    assert summary == "3 learners: 0 waiting, 0 running, 2 done, 1 failed, 0 cancelled"
    assert ("failed learners (1):" in lines) == (state == "failed")


def test_status_refuses_an_unknown_state(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(finished_run), "--state", "fialed"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "adaptive-runner status: error: argument --state: 'fialed' is not a learner state: "
        "use one of waiting, running, done, failed, cancelled"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--state", "done", "--format", "tsv"], "status --state goes with the table"),
        (["--watch", "--format", "info"], "status --watch goes with the table"),
        (["--watch", "1", "--state", "done"], "status --watch lists the running and failed"),
    ],
)
def test_status_options_that_do_not_go_together(
    finished_run: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["status", str(finished_run), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"adaptive-runner: {message}")


def test_logs_of_one_learner_of_a_task_that_ran_several(
    one_task_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", str(one_task_run)]) == 0
    assert learners_named(capsys.readouterr().out) == {0, 1, 2}  # one log, three learners
    assert main(["logs", str(one_task_run), "--learner", "1"]) == 0
    out = capsys.readouterr().out
    assert learners_named(out) == {1}
    assert [f[3] for f in events(out) if f[3] in ("started", "done", "failed")] == [
        "started",
        "done",
    ]
    assert "solver error" not in out  # learner 2's output, further down the same log
    assert main(["logs", str(one_task_run), "--learner", "0", "2"]) == 0
    assert learners_named(capsys.readouterr().out) == {0, 2}


def test_logs_of_the_failed_learners(
    one_task_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", str(one_task_run), "--failed"]) == 0
    out = capsys.readouterr().out
    assert learners_named(out) == {2}
    assert "solver error: giving up at" in out  # its function's stderr, in its part of the log
    assert "    ZeroDivisionError: cannot evaluate at" in out
    assert main(["logs", str(one_task_run), "--failed", "--task", "L1_0", "--learner", "2"]) == 0
    assert capsys.readouterr().out == out
    assert main(["logs", str(one_task_run), "--failed", "--learner", "0", "1"]) == 1
    assert capsys.readouterr().err == (
        "adaptive-runner: nothing to show: no failed, lost, expired or killed job of "
        "learners 0, 1 in any task\n"
    )
    assert main(["logs", str(one_task_run), "--learner", "3"]) == 2
    assert "logs --learner: 3 is not a learner index (0..2)" in capsys.readouterr().err


def test_logs_follow_the_failed_learners_until_the_run_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing job prints, then fails 3 s later: --follow shows its lines once it failed."""
    failing = adaptive.Learner1D(partial(fails_slowly, delay=3.0), bounds=(0, 1))
    rm = make_rm(tmp_path, [*slow(1), failing], max_fails=1, max_simultaneous_jobs=1).start()
    try:
        assert main(["logs", str(tmp_path / "run"), "--failed", "--follow"]) == 0
    finally:
        assert not rm.wait(timeout=120)
    out = capsys.readouterr().out
    assert learners_named(out) == {1}
    assert "solver error: giving up at 0.0 in 3.0 s" in out
    assert [f[3] for f in events(out) if f[3] in ("started", "failed")] == ["started", "failed"]


def test_retry_says_which_learners_it_left_alone_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = str(make_run(tmp_path / "run", 4).path)
    ar.Run(run_dir).cancel()
    assert main(["retry", run_dir, "--learner", "0", "2", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "back to waiting: none; 0 waiting, 0 running, 0 done, 0 failed, 4 cancelled",
        "left alone: learners 0, 2, 3 are cancelled: add --cancelled to retry them",
    ]
    assert main(["retry", run_dir]) == 0  # no failed one: the cancelled ones are named
    assert capsys.readouterr().out.splitlines()[1:] == [
        "left alone: learners 0-3 are cancelled: add --cancelled to retry them"
    ]
    assert main(["retry", run_dir, "--learner", "0", "--cancelled"]) == 0
    assert capsys.readouterr().out.startswith("back to waiting: 0; 1 waiting, ")
    assert main(["retry", run_dir, "--learner", "0", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "left alone: learner 0 is waiting",
        "left alone: learner 1 is cancelled: add --cancelled to retry it",
    ]


def frames(out: str) -> list[str]:
    """The frames `status --watch` printed one below the other (stdout no terminal)."""
    return ["run: " + frame for frame in ("\n" + out).split("\nrun: ")[1:]]


def test_watch_ends_by_itself_when_the_run_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rm = make_rm(tmp_path, slow(2, delay=0.1)).start()  # 30 points each: some seconds
    try:
        assert main(["status", str(tmp_path / "run"), "--watch", "0.2"]) == 0
    finally:
        assert rm.wait(timeout=120)  # all done
    *earlier, last = frames(capsys.readouterr().out)
    assert last.splitlines()[0].startswith("run: run finished · ")
    assert "learners: waiting 0, running 0, done 2, failed 0, cancelled 0; total 2" in last
    assert "running learners: none" in last
    assert "failed learners: none" in last
    assert last.rstrip().endswith("the run has finished")
    assert earlier, "one frame at least while the run was going"
    assert all("again every 0.2 s; Ctrl-C ends" in frame for frame in earlier)
    running = [frame for frame in earlier if "running learners (" in frame]
    assert running, "a frame lists the running learners"
    table = running[-1].split("running learners (")[1].splitlines()
    assert table[1].split()[:2] == ["LEARNER", "STATE"]
    assert table[2].split()[1] == "running"


def watch(run_dir: Path, *args: str, stdout: int) -> subprocess.Popen[bytes]:
    """`adaptive-runner status RUN_DIR --watch ARGS` in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "adaptive_runner.cli", "status", str(run_dir), "--watch", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "LINES": "30"},
    )


def read_terminal(master: int) -> bytes:
    """Everything written to a pseudo-terminal until its last writer closed it."""
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            return out
        if not chunk:
            return out
        out += chunk


def test_watch_on_a_terminal_draws_in_place(finished_run: Path) -> None:
    master, slave = pty.openpty()
    try:
        process = watch(finished_run, stdout=slave)
        os.close(slave)
        out = read_terminal(master).decode()
        _, err = process.communicate(timeout=60)
    finally:
        os.close(master)
    assert (process.returncode, err) == (0, b"")
    assert out.startswith("\x1b[2J\x1b[H")  # cleared once, then drawn from the top left
    assert out.rstrip().endswith("\x1b[J")  # and below the frame cleared
    lines = out.removeprefix("\x1b[2J\x1b[H").split("\x1b[K\r\n")
    assert lines[0].startswith("run: run finished · ")
    assert lines[1] == "learners: waiting 0, running 0, done 2, failed 1, cancelled 0; total 3"
    assert "failed learners (1):" in lines
    assert all(len(line) < 100 for line in lines)  # cut to the window: no line wraps


def test_watch_ends_on_ctrl_c(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", 3).path  # no manager serves it: it never finishes
    process = watch(run_dir, "0.2", stdout=subprocess.PIPE)
    assert process.stdout is not None
    seen: list[bytes] = []
    while not seen or b"Ctrl-C ends" not in seen[-1]:
        line = process.stdout.readline()
        assert line, b"".join(seen)
        seen.append(line)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert b"Traceback" not in err
    assert b"learners: waiting 3, running 0, done 0, failed 0, cancelled 0; total 3" in b"".join(
        seen
    )


@pytest.mark.parametrize("seconds", ["0", "-1", "soon", "inf"])
def test_watch_refuses_a_bad_interval(
    finished_run: Path, capsys: pytest.CaptureFixture[str], seconds: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(finished_run), "--watch", seconds])
    assert exit_.value.code == 2
    assert f"{seconds!r} is not a number of seconds above 0" in capsys.readouterr().err
