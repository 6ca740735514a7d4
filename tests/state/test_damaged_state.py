"""A damaged, deleted or replaced state.sqlite: refused at open, noticed by the managers.

The damage is done for real, as a user in a shell would: truncate, rm, mv over, dd into it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import zmq
from helpers_run import (
    downgrade_to_schema_1,
    make_learners,
    make_rm,
    make_run,
    set_url,
    stop_and_cancel,
    wait_for,
)

from adaptive_runner.cli import main
from adaptive_runner.common.auth import load_keys
from adaptive_runner.common.protocol import Assignment, ErrorReply, Reply, decode_reply
from adaptive_runner.common.vocabulary import ReplyCode
from adaptive_runner.errors import ConfigError, ManagerDiedError, RunStateError, StateFileError
from adaptive_runner.manager.database_manager import DatabaseManager, Dispatcher
from adaptive_runner.manager.run import Run
from adaptive_runner.manager.run_manager import RunManager
from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from adaptive_runner.common.run_dir import RunDir

REPLY_MS = 30_000


def new_db(path: Path, n: int = 4) -> Path:
    Database.create(path, [f"f{i}" for i in range(n)], dependencies={}, max_fails=3).close()
    return path


def other_sqlite(path: Path) -> Path:
    """A sqlite file that is not a run's state (rollback journal, no meta table)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return path


def scribble(path: Path) -> None:
    """Overwrite the first 100 bytes (the header) in place, from another process."""
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={path}", "bs=100", "count=1", "conv=notrunc"],
        check=True,
        capture_output=True,
    )


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


# --- opening never creates or rewrites ---


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: os.truncate(p, 0), "is empty (0 bytes)"),
        (lambda p: p.write_bytes(b"not a database " * 1000), "is not a sqlite database"),
        (lambda p: (p.unlink(), other_sqlite(p)), "is no run's state"),
        (truncate_half, "is damaged"),
        (scribble, "is not a sqlite database"),
    ],
)
def test_open_refuses_a_file_that_is_no_runs_state_and_leaves_it_alone(
    tmp_path: Path, *, read_only: bool, damage: Callable[[Path], Any], message: str
) -> None:
    path = new_db(tmp_path / "state.sqlite", 300)
    damage(path)
    before = path.read_bytes()
    with pytest.raises(RunStateError, match=re.escape(message)) as raised:
        Database.open(path, read_only=read_only)
    assert isinstance(raised.value, ConfigError)  # what callers caught before RunStateError
    assert str(path) in str(raised.value)
    assert "overwrite=True" in str(raised.value)
    assert path.read_bytes() == before  # not set to WAL mode, not made an empty database


@pytest.mark.parametrize("read_only", [False, True])
def test_open_creates_nothing(tmp_path: Path, *, read_only: bool) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Database.open(tmp_path / "state.sqlite", read_only=read_only)
    assert list(tmp_path.iterdir()) == []


def test_a_reader_never_writes_the_file(tmp_path: Path) -> None:
    path = new_db(tmp_path / "state.sqlite")
    with Database.open(path) as db:
        db.claim("t", host="h", pid=1, now=1.0)
    assert not (tmp_path / "state.sqlite-wal").exists()  # the last writer checkpointed it
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with Database.open(path, read_only=True) as db:
        assert db.running_tasks() == {"t": 0}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.claim("u", host="h", pid=1, now=2.0)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_a_reader_refuses_an_older_schema_that_a_writer_upgrades(tmp_path: Path) -> None:
    path = new_db(tmp_path / "state.sqlite")
    downgrade_to_schema_1(path)
    with pytest.raises(ConfigError, match="has schema 1"):
        Database.open(path, read_only=True)
    Database.open(path).close()  # a manager opening it migrates it
    with Database.open(path, read_only=True) as db:
        assert db.group_states() == []


# --- check_file: what the managers call while they run ---


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (os.unlink, "was deleted"),
        (lambda p: other_sqlite(p.with_name("other")).replace(p), "was replaced"),
        (lambda p: os.truncate(p, 0), "was truncated from"),
        (truncate_half, "was truncated from"),
        (scribble, "is no sqlite database any more"),
    ],
)
def test_check_file_notices_damage(
    tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    path = new_db(tmp_path / "state.sqlite", 300)
    with Database.open(path) as db:
        db.check_file()
        damage(path)
        with pytest.raises(StateFileError, match=re.escape(message)) as raised:
            db.check_file()
        assert isinstance(raised.value, RunStateError)  # restored or overwritten the same way
        assert str(path) in str(raised.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_check_file_notices_an_unreadable_file(tmp_path: Path) -> None:
    path = new_db(tmp_path / "state.sqlite")
    with Database.open(path) as db:
        path.chmod(0)
        with pytest.raises(StateFileError, match="no longer readable"):
            db.check_file()


def test_check_file_takes_a_growing_file_for_intact(tmp_path: Path) -> None:
    """Commits and checkpoints grow the file while it is checked: no false alarm."""
    path = new_db(tmp_path / "state.sqlite", 3000)
    stop = threading.Event()

    def write() -> None:
        with Database.open(path) as writer:
            for i in range(3000):
                writer.claim(f"t{i}", host="h" * 200, pid=i, now=float(i))
                if i % 50 == 0:
                    writer.checkpoint()
        stop.set()

    thread = threading.Thread(target=write)
    with Database.open(path) as db:
        thread.start()
        size = path.stat().st_size
        while not stop.is_set():
            db.check_file()
        thread.join()
        db.check_file()
    assert path.stat().st_size > size  # it did grow meanwhile


def claims_in_the_wal(db: Database, n: int = 50) -> None:
    """Commit ``n`` claims, which sit in the WAL until a checkpoint copies them."""
    db.record_array("7", n_tasks=n, script="array.sh", now=0.0)
    for i in range(n):
        db.claim(f"t{i}", host="h" * 500, pid=i, now=float(i), array="7")


def test_a_checkpoint_checks_the_file_first(tmp_path: Path) -> None:
    path = new_db(tmp_path / "state.sqlite", 300)
    with Database.open(path, auto_checkpoint=False) as db:
        claims_in_the_wal(db)
        os.truncate(path, 0)
        with pytest.raises(StateFileError, match="was truncated from"):
            db.checkpoint()
        assert path.stat().st_size == 0  # the WAL's pages did not go into it
    assert path.stat().st_size == 0  # nor when the last connection closed


def test_a_file_that_failed_its_check_stays_failed_and_unwritten_when_restored(
    tmp_path: Path,
) -> None:
    """A backup copied over the file in place (the same inode) looks intact again, but the
    connection's WAL and cache belong to the state that was there: it must not be written."""
    path = new_db(tmp_path / "state.sqlite", 300)
    backup = shutil.copyfile(path, tmp_path / "backup.sqlite")
    with Database.open(path, auto_checkpoint=False) as db:
        claims_in_the_wal(db)
        os.truncate(path, 0)
        with pytest.raises(StateFileError, match="was truncated"):
            db.check_file()
        shutil.copyfile(backup, path)  # restored in place
        with pytest.raises(StateFileError, match="was truncated"):
            db.check_file()
    assert path.read_bytes() == backup.read_bytes()


# --- the database manager ---


def request(
    run_dir: RunDir, context: zmq.Context[zmq.Socket[bytes]], task: str, op: str = "claim"
) -> Reply | None:
    """One claim (or status) on a fresh REQ socket; the reply, or None if none comes."""
    keys = load_keys(run_dir.keys_dir)
    socket = context.socket(zmq.REQ)
    socket.linger = 0
    socket.curve_publickey, socket.curve_secretkey = keys.client_public, keys.client_secret
    socket.curve_serverkey = keys.server_public
    socket.connect(run_dir.read_config().url)
    claim = {"v": 1, "op": "claim", "task": task, "host": "h", "pid": 1, "group": 0, "array": "7"}
    socket.send(json.dumps(claim if op == "claim" else {"v": 1, "op": op}).encode())
    got = decode_reply(socket.recv()) if socket.poll(REPLY_MS) else None
    socket.close(linger=0)
    return got


@pytest.mark.parametrize(
    ("damage", "message", "op"),
    [
        (os.unlink, "was deleted", "claim"),
        (lambda p: p.with_name("copy").replace(p), "was replaced", "claim"),
        (lambda p: os.truncate(p, 0), "was truncated from", "claim"),
        # Only reads: a checkpoint of a claim's page 1 would mend the header it broke.
        (scribble, "is no sqlite database any more", "status"),
    ],
)
def test_the_database_manager_stops_answering_ok_for_a_damaged_file(
    tmp_path: Path, damage: Callable[[Path], Any], message: str, op: str
) -> None:
    run_dir = make_run(tmp_path / "run", 100)
    with Database.open(run_dir.database) as db:  # the claims come from its tasks
        db.record_array("7", n_tasks=100, script="array.sh", now=0.0)
    shutil.copyfile(run_dir.database, run_dir.database.with_name("copy"))
    manager = DatabaseManager(run_dir)
    set_url(run_dir, manager.start())
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        assert isinstance(request(run_dir, context, "7_0"), Assignment)
        damage(run_dir.database)
        # Claims answered ok at first (sqlite commits into its WAL and cache) stop within a
        # second or so; the first error says which file and what happened to it.
        n = 0

        def refused() -> ErrorReply | None:
            nonlocal n
            n += 1
            got = request(run_dir, context, f"7_{n}", op)
            return got if isinstance(got, ErrorReply) else None

        got = wait_for(refused, "an error reply", timeout_s=60)
        assert got.code == ReplyCode.INTERNAL
        assert str(run_dir.database) in got.error  # sqlite's error, or the check's
        wait_for(lambda: manager.error, "the database manager to notice")
        assert isinstance(manager.error, StateFileError)
        assert re.search(message, str(manager.error))
        late = request(run_dir, context, "7_99", op)  # nothing is recorded any more
        assert late == ErrorReply(ReplyCode.INTERNAL, str(manager.error))
    finally:
        context.term()
        manager.stop()


def test_the_database_manager_never_writes_a_file_that_failed_its_check(tmp_path: Path) -> None:
    """Truncated under a serving manager with claims still in the WAL: neither a checkpoint
    nor the last close copies them into the file afterwards; it stays as the damage left it."""
    run_dir = make_run(tmp_path / "run", 100)
    with Database.open(run_dir.database) as db:
        db.record_array("7", n_tasks=100, script="array.sh", now=0.0)
    manager = DatabaseManager(run_dir)
    set_url(run_dir, manager.start())
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        claims = [request(run_dir, context, f"7_{i}") for i in range(5)]
        assert all(isinstance(claim, Assignment) for claim in claims)
        os.truncate(run_dir.database, 0)  # checkpoints run every second: some are in the WAL
        wait_for(lambda: manager.error, "the database manager to notice")
        time.sleep(2.5)  # two checkpoint intervals
    finally:
        context.term()
        manager.stop()
    assert run_dir.database.stat().st_size == 0


def test_a_storage_error_fails_every_reply_of_its_batch(tmp_path: Path) -> None:
    """The events table's page is overwritten: the release that writes an event fails, and
    the claim batched with it, committed otherwise, must not be answered ok."""
    path = new_db(tmp_path / "state.sqlite")
    with Database.open(path) as db:
        db.record_array("7", n_tasks=2, script="array.sh", now=0.0)
        assert db.claim("7_0", host="h", pid=1, now=1.0, array="7") is not None
        (root,) = db._conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'events'"
        ).fetchone()
        (page_size,) = db._conn.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:  # no connection is open: nothing to lose by closing it
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)  # no valid b-tree page type
    claim = {"v": 1, "op": "claim", "task": "7_1", "host": "h", "pid": 1, "group": 0, "array": "7"}
    release = {"v": 1, "op": "release", "task": "7_0", "learner": 0, "reason": "stop", "npoints": 3}
    with Database.open(path) as db:
        replies = Dispatcher(db, [Local()]).answer(
            [
                [b"id-b", b"", json.dumps(claim).encode()],
                [b"id-a", b"", json.dumps(release).encode()],
            ],
            now=2.0,
        )
        got = [decode_reply(r[-1]) for r in replies]
        errors = [r for r in got if isinstance(r, ErrorReply)]
        assert [r.code for r in errors] == [ReplyCode.INTERNAL] * 2
        assert "malformed" in errors[0].error
        assert db.running_tasks() == {"7_0": 0}  # 7_1's claim was rolled back with the batch


# --- the job manager, in a real run ---


def test_the_job_manager_stops_when_the_state_file_is_deleted(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2, delay=0.2), kill_grace_s=1.0).start()
    backup = tmp_path / "backup.sqlite"
    try:
        wait_for(lambda: rm.status()["running"], "a learner to run")
        source, target = sqlite3.connect(rm.run_dir.database), sqlite3.connect(backup)
        source.backup(target)  # what the error message asks for, to clean up afterwards
        source.close()
        target.close()
        rm.run_dir.database.unlink()
        job_manager = rm.job_manager
        assert job_manager is not None
        wait_for(lambda: not job_manager.running, "the job manager to stop")
        assert isinstance(job_manager.died, StateFileError)
        assert f"{rm.run_dir.database} was deleted" in str(job_manager.died)
        database_manager = rm.database_manager
        assert database_manager is not None
        wait_for(lambda: database_manager.error, "the database manager to stop")
        with pytest.raises(ManagerDiedError, match="was deleted"):
            rm.wait(timeout=60)  # at once, naming the file
    finally:
        if backup.exists():
            backup.replace(rm.run_dir.database)
        stop_and_cancel(rm)


def test_a_run_whose_state_is_deleted_ends_its_tasks_and_says_so(tmp_path: Path) -> None:
    """The tasks hang before Python starts (a node that cannot mount the home): left queued,
    they would start long after the managers stopped and ask them for a learner for an hour."""
    hangs = Local(extra_script="sleep 600", kill_grace_s=1)
    rm = make_rm(tmp_path, make_learners(2), scheduler=hangs, claim_timeout=600).start()
    backup = tmp_path / "backup.sqlite"
    try:
        tasks = wait_for(rm.active_tasks, "the run's tasks to be queued")
        arrays = sorted({hangs.array_of(task) for task in tasks})
        shutil.copyfile(rm.run_dir.database, backup)
        rm.run_dir.database.unlink()
        with pytest.raises(ManagerDiedError, match="was deleted"):
            rm.wait(timeout=60)
        local = hangs.bind(rm.run_dir.jobs_dir)
        wait_for(
            lambda: not any(state.active for state in local.queue_states(arrays).values()),
            "the run's tasks to be cancelled",
            timeout_s=60,
        )
        (problem,) = rm.problems()  # the dead manager, not a RunStateError raised
        assert problem.startswith("job manager stopped: StateFileError: ")
        assert f"{rm.run_dir.database} was deleted while the run used it" in problem
        with pytest.raises(ManagerDiedError, match="was deleted") as raised:
            rm.status()
        assert isinstance(raised.value.__cause__, RunStateError)
    finally:
        if backup.exists():
            backup.replace(rm.run_dir.database)
        stop_and_cancel(rm)


def test_overwrite_replaces_a_run_whose_state_is_gone(tmp_path: Path) -> None:
    """What the message for a deleted state advises works."""
    assert make_rm(tmp_path, make_learners(2), goal=5).start().wait(timeout=120)
    database = tmp_path / "run" / "state.sqlite"
    database.unlink()
    with pytest.raises(RunStateError, match=re.escape(f"{database} is missing")):
        make_rm(tmp_path, make_learners(2), goal=5).start()
    again = make_rm(tmp_path, make_learners(2), goal=5, overwrite=True).start()
    try:
        assert again.wait(timeout=120)
    finally:
        stop_and_cancel(again)


# --- Run and the CLI: a RunStateError, said in one line with exit 2 ---

RUN_DAMAGE = [
    (truncate_half, "is damaged"),
    (lambda p: os.truncate(p, 0), "is empty (0 bytes)"),
    (lambda p: p.write_bytes(b"garbage\n" * 100), "is not a sqlite database"),
    (os.unlink, "is missing"),
]


@pytest.mark.parametrize(("damage", "message"), RUN_DAMAGE)
def test_run_raises_a_run_state_error_for_a_damaged_state(
    tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    run_dir = make_run(tmp_path / "run", 300)
    damage(run_dir.database)
    with pytest.raises(RunStateError, match=re.escape(f"{run_dir.database} {message}")):
        Run(run_dir.path).status()


@pytest.mark.parametrize(("damage", "message"), RUN_DAMAGE)
def test_resume_says_what_run_and_the_cli_say_of_a_damaged_state(
    tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    run_dir = make_run(tmp_path / "run", 300)
    damage(run_dir.database)
    with pytest.raises(RunStateError, match=re.escape(f"{run_dir.database} {message}")):
        RunManager.resume(run_dir.path)


@pytest.mark.parametrize("command", [["status"], ["status", "--format", "tsv"], ["cancel"]])
@pytest.mark.parametrize(("damage", "message"), RUN_DAMAGE)
def test_the_cli_says_in_one_line_that_the_state_is_damaged(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    damage: Callable[[Path], Any],
    message: str,
) -> None:
    run_dir = make_run(tmp_path / "run", 300)
    damage(run_dir.database)
    assert main([command[0], str(run_dir.path), *command[1:]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"adaptive-runner: {run_dir.database} {message}")
