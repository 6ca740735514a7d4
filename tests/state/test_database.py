"""The sqlite state machine: claims, leases, failures, dependencies, cancel, batches."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from helpers_run import downgrade_to_schema_1

from adaptive_runner.errors import ConfigError
from adaptive_runner.state.database import ClaimRow, Database, LearnerRow, LearnerState
from adaptive_runner.state.schema import CLAIM_ORDER, CLAIMABLE, ArrayRow

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = 1_000_000.0


def make(tmp_path: Path, n: int = 4, **kwargs: object) -> Database:
    kwargs.setdefault("dependencies", {})
    kwargs.setdefault("max_fails", 3)
    return Database.create(tmp_path / "state.sqlite", [f"f{i}" for i in range(n)], **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with make(tmp_path) as database:
        yield database


def row(db: Database, index: int) -> LearnerRow:
    return db.learners()[index]


def events(db: Database, learner: int) -> list[tuple[str, str]]:
    return db._conn.execute(
        "SELECT kind, detail FROM events WHERE learner = ? ORDER BY id", (learner,)
    ).fetchall()


# --- creation and validation ---


def test_create_and_open(tmp_path: Path) -> None:
    make(tmp_path, 3, max_fails=2).close()
    with Database.open(tmp_path / "state.sqlite") as db:
        assert db.counts() == {
            "waiting": 3,
            "running": 0,
            "done": 0,
            "failed": 0,
            "cancelled": 0,
        }
        assert [r.fname for r in db.learners()] == ["f0", "f1", "f2"]
        assert db._max_fails == 2
        assert db._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_create_refuses_existing_file(tmp_path: Path) -> None:
    make(tmp_path).close()
    with pytest.raises(ConfigError, match="already exists"):
        make(tmp_path)


def test_open_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Database.open(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


@pytest.mark.parametrize(
    ("fnames", "dependencies", "max_fails", "match"),
    [
        ([], {}, 3, "fnames is empty"),
        (["a", "a"], {}, 3, r"fnames\[1\] = 'a' is also fnames\[0\]"),
        (["a", ""], {}, 3, "non-empty str"),
        (["a", "b"], {}, 0, "max_fails=0"),
        (["a", "b"], {}, True, "max_fails=True"),
        (["a", "b"], {2: [0]}, 3, r"dependencies key: 2 is not a learner index \(0..1\)"),
        (["a", "b"], {1: [5]}, 3, r"dependencies\[1\]: 5 is not a learner index"),
        (["a", "b"], {1: [True]}, 3, r"dependencies\[1\]: True is not a learner index"),
        (["a", "b"], {1: 0}, 3, "give a list of indices"),
        (["a", "b"], {1: [1]}, 3, "cannot depend on itself"),
        (["a", "b", "c"], {0: [1], 1: [2], 2: [0]}, 3, r"cycle \(0 -> 1 -> 2 -> 0"),
        (["a", "b", "c", "d"], {3: [0], 1: [2], 2: [1]}, 3, r"cycle \(1 -> 2 -> 1"),
    ],
)
def test_create_validates(
    tmp_path: Path, fnames: list[str], dependencies: dict[int, Any], max_fails: int, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Database.create(
            tmp_path / "s.sqlite", fnames, dependencies=dependencies, max_fails=max_fails
        )
    assert not (tmp_path / "s.sqlite").exists()


def test_dependencies_accept_numpy_integers(tmp_path: Path) -> None:
    with make(tmp_path, 3, dependencies={np.int64(2): np.array([0, 1])}) as db:
        assert db.dependencies() == {2: [0, 1]}


# --- growing a run ---


def test_learners_added_from_another_connection_run_after_their_dependencies(
    tmp_path: Path,
) -> None:
    """Old learners done, failed, cancelled, running, waiting; the new ones wait on them.

    The serving connection was opened before any dependency existed: a done learner
    still counts for the new learners that wait on it.
    """
    serving = make(tmp_path, 5, max_fails=1)
    serving.claim("a", host="h", pid=1, now=T0)
    serving.done("a", 0, npoints=5, loss=None, now=T0)
    serving.claim("b", host="h", pid=2, now=T0)
    serving.fail("b", 1, error="boom", now=T0)
    serving.cancel([2], now=T0)
    serving.claim("c", host="h", pid=3, now=T0)  # learner 3 runs, 4 waits
    with Database.open(tmp_path / "state.sqlite") as adder:
        added = adder.add_learners(
            ["n5", "n6", "n7", "n8", "n9"],
            first=5,
            groups=[0, 0, 1, 0, 0],
            dependencies={5: [0], 6: [3], 7: [1], 8: [2], 9: [8]},
            now=T0 + 1,
        )
    assert added == [5, 6, 7, 8, 9]
    rows = serving.learners()
    assert [(r.index, r.fname, r.state, r.stage) for r in rows[5:]] == [
        (5, "n5", "waiting", 0),
        (6, "n6", "waiting", 0),
        (7, "n7", "failed", 0),
        (8, "n8", "cancelled", 0),
        (9, "n9", "cancelled", 0),
    ]
    assert (rows[7].error, rows[9].error) == ("dependency 1 failed", "dependency 2 cancelled")
    assert serving.learner_groups()[5:] == [0, 0, 1, 0, 0]
    assert serving.counts() == {"waiting": 3, "running": 1, "done": 1, "failed": 2, "cancelled": 3}
    assert events(serving, 5) == [("added", "added to the run")]
    # 5 waits on a done learner: claimable at once; 6 only once learner 3 is done.
    assert serving.claim("d", host="h", pid=4, now=T0 + 2) == ClaimRow(4, "f4")
    assert serving.claim("e", host="h", pid=5, now=T0 + 2) == ClaimRow(5, "n5")
    assert serving.claim("f", host="h", pid=6, now=T0 + 2) is None
    assert serving.done("c", 3, npoints=5, loss=None, now=T0 + 3)
    assert serving.claim("f", host="h", pid=6, now=T0 + 3) == ClaimRow(6, "n6")
    serving.close()


@pytest.mark.parametrize(
    ("fnames", "first", "dependencies", "match"),
    [
        (["f1"], 2, {}, r"fnames\[0\] = 'f1' is the data file of learner 1 already"),
        (["x", "x"], 2, {}, r"fnames\[1\] = 'x' is also fnames\[0\]"),
        (["x"], 1, {}, "the run has 2 learners now, not 1: another RunManager added"),
        (["x"], 2, {1: [0]}, r"dependencies\[1\]: learner 1 is in the run already.*added are 2..2"),
        (["x", "y"], 2, {2: [3], 3: [2]}, r"a cycle \(2 -> 3 -> 2"),
        (["x"], 2, {2: [5]}, r"dependencies\[2\]: 5 is not a learner index \(0..2\)"),
    ],
)
def test_adding_learners_refused_changes_nothing(
    tmp_path: Path, fnames: list[str], first: int, dependencies: dict[int, list[int]], match: str
) -> None:
    with make(tmp_path, 2) as db:
        with pytest.raises(ConfigError, match=match):
            db.add_learners(
                fnames, first=first, groups=[0] * len(fnames), dependencies=dependencies, now=T0
            )
        assert db.fnames() == ["f0", "f1"]
        assert db.counts()["waiting"] == 2
        assert db.dependencies() == {}


def test_query_plans_use_the_partial_indexes(db: Database) -> None:
    def plan(sql: str, *params: object) -> str:
        rows = db._conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return " ".join(r[-1] for r in rows)

    claim = plan(f"SELECT idx {CLAIMABLE} ORDER BY {CLAIM_ORDER} LIMIT 1", 0)
    assert "learners_claimable" in claim
    assert "TEMP B-TREE" not in claim  # no sort: the index is already in order
    by_task = plan("SELECT idx FROM learners WHERE task = ? AND state = 'running'", "t")
    assert "learners_by_task" in by_task
    lease = plan("SELECT task, idx FROM learners WHERE state = 'running' AND last_heartbeat < ?", 1)
    assert "learners_by_task" in lease  # only the running learners are read


# --- the worker transitions ---


def test_claim_in_order_then_no_work(db: Database) -> None:
    got = [db.claim(f"t{i}", host="h", pid=i, now=T0) for i in range(4)]
    assert got == [ClaimRow(i, f"f{i}") for i in range(4)]
    assert db.claim("t9", host="h", pid=9, now=T0) is None
    r = row(db, 2)
    assert (r.state, r.task, r.host, r.pid, r.attempts, r.started) == (
        LearnerState.RUNNING,
        "t2",
        "h",
        2,
        1,
        T0,
    )
    assert db.running_tasks() == {"t0": 0, "t1": 1, "t2": 2, "t3": 3}


def test_repeated_claim_returns_same_learner(db: Database) -> None:
    first = db.claim("t", host="h", pid=1, now=T0)
    assert db.claim("t", host="h", pid=1, now=T0 + 1) == first
    assert row(db, 0).attempts == 1
    assert db.counts()["running"] == 1


def test_heartbeat(db: Database) -> None:
    db.claim("t", host="h", pid=1, now=T0)
    assert db.heartbeat("t", 0, npoints=10, loss=0.5, cpu=97.0, memory=1000, now=T0 + 5)
    assert row(db, 0).last_heartbeat == T0  # buffered: a heartbeat costs no commit
    db.flush_heartbeats()
    r = row(db, 0)
    assert (r.npoints, r.loss, r.cpu, r.memory, r.last_heartbeat) == (10, 0.5, 97.0, 1000, T0 + 5)
    assert not db.heartbeat("other", 0, npoints=1, loss=None, cpu=0.0, memory=0, now=T0)
    assert not db.heartbeat("t", 1, npoints=1, loss=None, cpu=0.0, memory=0, now=T0)


def test_buffered_heartbeat_goes_with_the_next_transaction_and_never_revives(
    db: Database,
) -> None:
    db.claim("a", host="h", pid=1, now=T0)
    db.claim("b", host="h", pid=2, now=T0)
    assert db.heartbeat("a", 0, npoints=7, loss=None, cpu=1.0, memory=1, now=T0 + 5)
    assert db.heartbeat("b", 1, npoints=3, loss=None, cpu=1.0, memory=1, now=T0 + 5)
    assert db.release("b", 1, reason="SIGTERM", now=T0 + 6)  # this transaction writes both
    assert (row(db, 0).npoints, row(db, 0).last_heartbeat) == (7, T0 + 5)
    assert db.heartbeat("a", 0, npoints=9, loss=None, cpu=1.0, memory=1, now=T0 + 7)
    assert db.done("a", 0, npoints=10, loss=None, now=T0 + 8)
    db.flush_heartbeats()
    assert (row(db, 0).state, row(db, 0).npoints) == (LearnerState.DONE, 10)
    assert (row(db, 1).state, row(db, 1).task) == (LearnerState.WAITING, None)


def test_done_is_final_and_idempotent(db: Database) -> None:
    db.claim("t", host="h", pid=1, now=T0)
    assert not db.done("other", 0, npoints=1, loss=None, now=T0)
    assert db.done("t", 0, npoints=100, loss=None, now=T0 + 9)
    assert db.done("t", 0, npoints=100, loss=None, now=T0 + 10)  # a retry: ok again
    r = row(db, 0)
    assert (r.state, r.npoints, r.finished, r.task) == (LearnerState.DONE, 100, T0 + 9, "t")
    assert not db.heartbeat("t", 0, npoints=1, loss=None, cpu=0.0, memory=0, now=T0)
    assert not db.release("t", 0, reason="late", now=T0)  # it ended with done, not release
    assert db.counts()["done"] == 1
    outcome = db._conn.execute("SELECT outcome, finished FROM tasks WHERE task = 't'").fetchall()
    assert outcome == [("done", T0 + 9)]


def test_task_id_reused_after_its_learner_finished(db: Database) -> None:
    db.claim("t", host="h", pid=1, now=T0)
    db.done("t", 0, npoints=1, loss=None, now=T0)
    assert db.claim("t", host="h", pid=1, now=T0) == ClaimRow(1, "f1")


def test_release_is_not_a_failure(db: Database) -> None:
    for attempt in range(5):  # more than max_fails: time limits are expected
        assert db.claim(f"t{attempt}", host="h", pid=1, now=T0) == ClaimRow(0, "f0")
        assert db.release(f"t{attempt}", 0, reason="SIGTERM", now=T0)
        assert db.release(f"t{attempt}", 0, reason="SIGTERM", now=T0)  # repeated
    r = row(db, 0)
    assert (r.state, r.attempts, r.failures, r.task, r.error) == (
        LearnerState.WAITING,
        5,
        0,
        None,
        None,
    )
    assert events(db, 0)[-1] == ("released", "SIGTERM")


def test_fail_until_max_fails(db: Database) -> None:
    for attempt in range(3):
        db.claim(f"t{attempt}", host="h", pid=1, now=T0)
        assert db.fail(f"t{attempt}", 0, error=f"Traceback {attempt}", now=T0 + attempt)
        assert db.fail(f"t{attempt}", 0, error=f"Traceback {attempt}", now=T0 + attempt)
    r = row(db, 0)
    assert (r.state, r.attempts, r.failures, r.error, r.finished) == (
        LearnerState.FAILED,
        3,
        3,
        "Traceback 2",
        T0 + 2,
    )
    assert events(db, 0)[-2:] == [("failed", "Traceback 2"), ("failed", "gave up after 3 failures")]
    assert db.claim("t9", host="h", pid=1, now=T0) == ClaimRow(1, "f1")


# --- job manager operations ---


def test_mark_lost(db: Database) -> None:
    db.claim("a", host="h", pid=1, now=T0)
    db.claim("b", host="h", pid=2, now=T0)
    assert db.mark_lost(["a", "never-claimed"], reason="vanished from squeue", now=T0 + 1) == [0]
    r = row(db, 0)
    assert (r.state, r.failures, r.task) == (LearnerState.WAITING, 1, None)
    assert r.error == "job a was lost: vanished from squeue"
    assert not db.heartbeat("a", 0, npoints=1, loss=None, cpu=0.0, memory=0, now=T0)
    assert not db.done("a", 0, npoints=1, loss=None, now=T0)  # not_owner, not a repeat
    assert db.running_tasks() == {"b": 1}


def test_mark_lost_until_failed_records_reason(tmp_path: Path) -> None:
    with make(tmp_path, 1, max_fails=2) as db:
        for attempt in range(2):
            db.claim(f"t{attempt}", host="h", pid=1, now=T0)
            db.mark_lost([f"t{attempt}"], reason="node crashed", now=T0)
        r = row(db, 0)
        assert (r.state, r.failures, r.error) == (
            LearnerState.FAILED,
            2,
            "job t1 was lost: node crashed",
        )
        assert db.counts() == {"waiting": 0, "running": 0, "done": 0, "failed": 1, "cancelled": 0}


def test_expire_leases(db: Database) -> None:
    db.claim("old", host="h", pid=1, now=T0)
    db.claim("fresh", host="h", pid=2, now=T0)
    db.heartbeat("fresh", 1, npoints=1, loss=None, cpu=0.0, memory=0, now=T0 + 100)
    assert db.expire_leases(lease_timeout_s=60, now=T0 + 120) == [("old", 0)]
    assert row(db, 0).state == LearnerState.WAITING
    assert "lease expired" in (row(db, 0).error or "")
    assert not db.heartbeat("old", 0, npoints=1, loss=None, cpu=0.0, memory=0, now=T0 + 121)
    assert db.claim("new", host="h", pid=3, now=T0 + 121) == ClaimRow(0, "f0")
    assert db.expire_leases(lease_timeout_s=60, now=T0 + 121) == []


def test_cancel(db: Database) -> None:
    db.claim("a", host="h", pid=1, now=T0)
    db.claim("b", host="h", pid=1, now=T0)
    db.done("b", 1, npoints=1, loss=None, now=T0)
    assert db.cancel([0, 1, 2], now=T0) == ["a"]  # done learner 1 stays done
    assert [r.state for r in db.learners()] == ["cancelled", "done", "cancelled", "waiting"]
    assert (row(db, 0).task, row(db, 0).host, row(db, 0).pid) == (None, None, None)
    assert db.last_task(0) == "a"  # where its log is
    assert not db.heartbeat("a", 0, npoints=1, loss=None, cpu=0.0, memory=0, now=T0)
    assert db.cancel(None, now=T0) == []
    assert db.counts() == {"waiting": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 3}
    with pytest.raises(ConfigError, match="cancel: 7 is not a learner index"):
        db.cancel([7], now=T0)


def test_a_whole_run_cancel_is_a_pause(tmp_path: Path) -> None:
    with make(tmp_path, 4, dependencies={3: [2]}) as db:
        db.record_array("11", n_tasks=2, script="a.sh", now=T0)
        db.claim("11_0", host="h", pid=1, now=T0, array="11")
        db.cancel([1], now=T0)  # cancelled on its own: stays cancelled
        assert db.cancel(None, now=T0) == ["11_0"]
        assert db.resume_paused(now=T0) == [0, 2, 3]
        assert [r.state for r in db.learners()] == ["waiting", "cancelled", "waiting", "waiting"]
        assert db.n_claimable() == 2  # 3 waits on 2 again
        assert db.resume_paused(now=T0) == []
        db.retry([1], cancelled=True, now=T0)
        db.cancel(None, now=T0)
        db.cancel([0], now=T0)  # no change: cancelled already, and paused
        assert db.resume_paused(now=T0) == [0, 1, 2, 3]


def test_reopen_puts_done_learners_back_and_their_dependents_wait(tmp_path: Path) -> None:
    with make(tmp_path, 3, dependencies={1: [0]}) as db:
        db.claim("a", host="h", pid=1, now=T0)
        db.done("a", 0, npoints=5, loss=None, now=T0)
        assert db.n_claimable() == 2
        assert db.reopen([0, 2], detail="goal raised", now=T0) == [0]  # 2 was not done
        assert [r.state for r in db.learners()] == ["waiting"] * 3
        assert db.n_claimable() == 2  # 0 and 2; 1 waits on 0 again
        assert db.claim("b", host="h", pid=1, now=T0) == ClaimRow(0, "f0")


def test_arrays(db: Database) -> None:
    db.record_array("11", n_tasks=4, script="a.sh", now=T0)
    db.record_array("12", n_tasks=2, script="b.sh", now=T0 + 1)
    assert db.active_arrays() == ["11", "12"]
    db.finish_array("11")
    db.finish_array("11")
    assert db.active_arrays() == ["12"]
    with pytest.raises(ValueError, match="no array '99'"):
        db.finish_array("99")


def test_an_array_id_given_out_again_is_a_new_array(db: Database) -> None:
    """A scheduler that lost its state gives a finished array's id to the run's next array."""
    db.record_array("5", n_tasks=2, script="a.sh", now=T0, tag="run-a")
    assert db.claim("5_0", host="h", pid=1, now=T0, array="5") == ClaimRow(0, "f0")
    db.done("5_0", 0, npoints=5, loss=None, now=T0 + 1)
    assert db.claim("5_1", host="h", pid=1, now=T0, array="5") == ClaimRow(1, "f1")
    db.release("5_1", 1, reason="SIGTERM", now=T0 + 1)
    assert db.finish_array("5", now=T0 + 2) == 2

    assert db.record_array("5", n_tasks=4, script="b.sh", now=T0 + 3, tag="run-b") == []
    assert db.live_array("5") == ArrayRow(2, "5", 0, 4)
    assert db.active_arrays() == ["5"]
    assert db.array_tags() == {"5": "run-b"}
    # 5_0 and 5_1 of the first array ended; the new ones have done nothing yet.
    assert db.claimed(["5_0", "5_1"]) == set()
    assert db.exiting(["5_1"]) == set()  # it claims, it is not the one that released
    assert not db.release("5_1", 1, reason="SIGTERM", now=T0 + 4)  # not its hold: not_owner
    assert db.reopen([0], detail="goal raised", now=T0 + 4) == [0]  # attempts start again
    assert db.claim("5_0", host="h", pid=2, now=T0 + 5, array="5") == ClaimRow(0, "f0")
    assert db.claimed(["5_0", "5_1"]) == {"5_0"}
    assert db.array_claims(["5"]) == {"5": 1}
    assert db.finish_array("5", now=T0 + 6) == 1
    assert db.finish_array("5", now=T0 + 7) is None
    # Task 5_0 held learner 0 at attempt 1 twice: once in each array.
    assert [(t.task, t.learner, t.attempt, t.outcome) for t in db.tasks()] == [
        ("5_0", 0, 1, "done"),
        ("5_1", 1, 1, "released"),
        ("5_0", 0, 1, None),
    ]
    assert [r.failures for r in db.learners()] == [0, 0, 0, 0]


def test_a_live_array_whose_id_is_given_out_again_loses_its_holds(db: Database) -> None:
    """Its tasks are gone with the scheduler's state; the new array's tasks take their ids."""
    db.record_array("5", n_tasks=2, script="a.sh", now=T0, tag="run-a")
    assert db.claim("5_0", host="h", pid=1, now=T0, array="5") == ClaimRow(0, "f0")
    assert db.record_array("5", n_tasks=2, script="b.sh", now=T0 + 1, tag="run-b") == [0]
    lost = row(db, 0)
    assert (lost.state, lost.failures, lost.task) == ("waiting", 1, None)
    assert lost.error == (
        "job 5_0 was lost: the scheduler gave its array's id, 5, to a new array (it lost its "
        "state, and the job with it)"
    )
    assert db.live_array("5") == ArrayRow(2, "5", 0, 2)
    # The new 5_0 is a task of its own: no hold of the old one comes back to it.
    assert db.claim("5_0", host="h", pid=2, now=T0 + 2, array="5") == ClaimRow(0, "f0")
    assert [(t.task, t.learner, t.outcome) for t in db.tasks()] == [
        ("5_0", 0, "lost"),
        ("5_0", 0, None),
    ]


# --- dependencies ---


def test_dependencies_gate_claims(tmp_path: Path) -> None:
    with make(tmp_path, 4, dependencies={2: [0, 1], 3: [2]}) as db:
        assert db.n_claimable() == 2
        assert db.claim("a", host="h", pid=1, now=T0) == ClaimRow(0, "f0")
        assert db.claim("b", host="h", pid=1, now=T0) == ClaimRow(1, "f1")
        assert db.claim("c", host="h", pid=1, now=T0) is None
        db.done("a", 0, npoints=1, loss=None, now=T0)
        db.done("a", 0, npoints=1, loss=None, now=T0)  # a repeat must not count twice
        assert db.n_claimable() == 0
        db.done("b", 1, npoints=1, loss=None, now=T0)
        assert db.n_claimable() == 1
        assert db.claim("c", host="h", pid=1, now=T0) == ClaimRow(2, "f2")
        db.done("c", 2, npoints=1, loss=None, now=T0)
        assert db.claim("d", host="h", pid=1, now=T0) == ClaimRow(3, "f3")


def test_failed_dependency_fails_dependents(tmp_path: Path) -> None:
    with make(tmp_path, 4, dependencies={1: [0], 2: [1], 3: []}, max_fails=1) as db:
        db.claim("a", host="h", pid=1, now=T0)
        db.fail("a", 0, error="boom", now=T0)
        states = [(r.state, r.error) for r in db.learners()]
        assert states == [
            ("failed", "boom"),
            ("failed", "dependency 0 failed"),
            ("failed", "dependency 0 failed"),  # the root cause
            ("waiting", None),
        ]


def test_cancel_cancels_dependents(tmp_path: Path) -> None:
    with make(tmp_path, 3, dependencies={1: [0], 2: [1]}) as db:
        assert db.cancel([0], now=T0) == []
        assert [r.state for r in db.learners()] == ["cancelled"] * 3


# --- transactions ---


def test_batch_savepoint_isolates_a_failing_call(db: Database) -> None:
    with db.batch():
        assert db.claim("a", host="h", pid=1, now=T0) == ClaimRow(0, "f0")
        with pytest.raises(ConfigError):
            db.cancel([1, 99], now=T0)  # cancels 1, then raises: only its own work undone
        assert db.claim("b", host="h", pid=1, now=T0) == ClaimRow(1, "f1")
    with Database.open(db._conn.execute("PRAGMA database_list").fetchone()[2]) as other:
        assert other.running_tasks() == {"a": 0, "b": 1}


def test_batch_rolls_back_on_error(db: Database) -> None:
    def claim_then_raise() -> None:
        with db.batch():
            db.claim("a", host="h", pid=1, now=T0)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        claim_then_raise()
    assert db.running_tasks() == {}

    def nest() -> None:
        with db.batch(), db.batch():
            pass

    with pytest.raises(RuntimeError, match="does not nest"):
        nest()
    assert not db._conn.in_transaction


def test_transitions_are_committed_on_return(tmp_path: Path, db: Database) -> None:
    db.claim("a", host="h", pid=1, now=T0)
    other = sqlite3.connect(tmp_path / "state.sqlite")
    assert other.execute("SELECT task FROM learners WHERE state = 'running'").fetchall() == [("a",)]
    other.close()


def test_counts_match_states_after_random_operations(tmp_path: Path) -> None:
    rng = random.Random(7)
    deps = {i: [i - 1] for i in range(10, 40)}
    with make(tmp_path, 40, dependencies=deps, max_fails=2) as db:
        for step in range(600):
            task = f"t{rng.randrange(30)}"
            held = db.running_tasks().get(task)
            op = rng.choice(["claim", "done", "release", "fail", "lost", "cancel"])
            if op == "claim":
                db.claim(task, host="h", pid=1, now=T0 + step)
            elif op == "lost":
                db.mark_lost([task], reason="x", now=T0 + step)
            elif op == "cancel" and rng.random() < 0.05:
                db.cancel([rng.randrange(40)], now=T0 + step)
            elif held is not None and op == "done":
                db.done(task, held, npoints=1, loss=None, now=T0 + step)
            elif held is not None and op == "release":
                db.release(task, held, reason="x", now=T0 + step)
            elif held is not None and op == "fail":
                db.fail(task, held, error="x", now=T0 + step)
            rows = db.learners()
            assert db.counts() == {s.value: 0 for s in LearnerState} | Counter(
                r.state for r in rows
            )
            running = {r.task: r.index for r in rows if r.state == LearnerState.RUNNING}
            assert db.running_tasks() == running  # one task holds at most one learner
            for r in rows:
                waiting_on = sum(rows[d].state != LearnerState.DONE for d in deps.get(r.index, []))
                if r.state == LearnerState.WAITING:
                    assert db._conn.execute(
                        "SELECT unfinished_deps FROM learners WHERE idx = ?", (r.index,)
                    ).fetchone() == (waiting_on,)


def test_a_schema_1_file_is_migrated_to_the_latest_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    Database.create(path, ["a", "b"], dependencies={}, max_fails=3).close()
    downgrade_to_schema_1(path)
    conn = sqlite3.connect(path)  # an array of schema 1, with a hold of its task
    conn.execute("INSERT INTO arrays VALUES ('6', 0, 2, 's', 0.5, NULL)")
    conn.execute("INSERT INTO tasks VALUES ('6_1', 1, 1, 'h', 1, 0.6, 0.7, 'released')")
    conn.execute("UPDATE learners SET state = 'done' WHERE idx = 1")
    conn.commit()
    conn.close()
    with Database.open(path) as db:
        assert [r.stage for r in db.learners()] == [0, 1]  # schema 6: a done learner's stage
        db.reopen([1], detail="stricter", now=0.8, stages=1)
        db._conn.execute("UPDATE learners SET loss = 0.5 WHERE idx = 1")
        assert db.claim("6_0", host="h", pid=1, now=0.9) == ClaimRow(0, "a", 0)  # unknown first
        db.release("6_0", 0, reason="x", now=0.95)
        assert db.live_array("6") == ArrayRow(1, "6", 0, 2)  # schema 5 numbers it
        assert db.claimed(["6_1"]) == {"6_1"}  # its holds, without a submission, still count
        db.record_array("7", n_tasks=1, script="s", now=1.0, tag="run-1")
        assert db.claim("7_0", host="h", pid=1, now=2.0, array="7") is not None
        assert db.finish_array("7", now=3.0) == 1
        assert db.record_start_failure(0, reason="why") == 1
        db.record_queue_error(0, "stuck")  # schema 3's column
        assert [s.queue_error for s in db.group_states()] == ["stuck"]
        db.cancel(None, now=4.0)  # schema 4's column: a whole-run cancel pauses
        assert db.resume_paused(now=5.0) == [0, 1]
        db.record_array("7", n_tasks=3, script="s", now=6.0, tag="run-2")  # schema 5's rows
        assert db.live_array("7") == ArrayRow(3, "7", 0, 3)
        assert db.claimed(["7_0"]) == set()  # 7_0 of the first array 7 is another task
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (6,)
    conn.close()


def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    Database.create(path, ["a"], dependencies={}, max_fails=3).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="has schema 99"):
        Database.open(path)


# --- retry and completion without a job ---


def fail_for_good(db: Database, learner: int, error: str = "boom") -> None:
    """Fail ``learner`` until max_fails (3)."""
    for attempt in range(3):
        assert db.claim(f"t{learner}-{attempt}", host="h", pid=1, now=T0) is not None
        db.fail(f"t{learner}-{attempt}", learner, error=f"Traceback\n{error}", now=T0)


def test_retry_puts_failed_back_with_counts_reset_and_history_kept(db: Database) -> None:
    fail_for_good(db, 0)
    db.cancel([1], now=T0)
    assert db.retry(now=T0 + 1) == [0]
    first = row(db, 0)
    assert (first.state, first.attempts, first.failures, first.error) == ("waiting", 0, 0, None)
    assert events(db, 0)[-1] == ("retried", "was failed: boom")
    assert [kind for kind, _ in events(db, 0)].count("failed") == 4  # 3 fails + gave up
    assert len([t for t in db.tasks() if t.learner == 0]) == 3
    assert row(db, 1).state == "cancelled"  # cancelled stays cancelled
    assert db.claim("new", host="h", pid=1, now=T0 + 2) == ClaimRow(0, "f0")
    assert row(db, 0).attempts == 1
    assert db.retry([1], cancelled=True, now=T0 + 3) == [1]
    assert row(db, 1).state == "waiting"
    assert db.retry(now=T0 + 4) == []  # nothing failed any more


def test_retry_brings_back_dependents_and_keeps_them_gated(tmp_path: Path) -> None:
    with make(tmp_path, 4, dependencies={1: [0], 2: [1], 3: [2]}) as db:
        fail_for_good(db, 0)
        assert [r.state for r in db.learners()] == ["failed"] * 4
        assert db.retry([0], now=T0) == [0, 1, 2, 3]
        assert [r.state for r in db.learners()] == ["waiting"] * 4
        assert db.n_claimable() == 1  # the dependents still wait on their dependencies
        assert db.claim("a", host="h", pid=1, now=T0) == ClaimRow(0, "f0")
        assert db.claim("b", host="h", pid=1, now=T0) is None
        db.done("a", 0, npoints=1, loss=None, now=T0)
        assert db.claim("b", host="h", pid=1, now=T0) == ClaimRow(1, "f1")


def test_retry_leaves_a_learner_whose_dependency_stays_cancelled(tmp_path: Path) -> None:
    with make(tmp_path, 3, dependencies={2: [0, 1]}) as db:
        fail_for_good(db, 0)  # 2 fails with it
        db.cancel([1], now=T0)
        assert db.retry(now=T0) == [0]  # 2 would wait forever on the cancelled 1
        assert row(db, 2).state == "failed"
        with pytest.raises(ConfigError, match="learner 2 waits on learner 1"):
            db.retry([2], now=T0)
        with pytest.raises(ConfigError, match="learner 2 waits on learner 1"):
            db.retry([2], cancelled=True, now=T0)  # 1 is not asked for
        assert db.retry([1, 2], cancelled=True, now=T0) == [1, 2]
        assert db.n_claimable() == 2  # 0 and 1; 2 waits on them


def test_retry_of_an_unknown_learner_changes_nothing(db: Database) -> None:
    fail_for_good(db, 0)
    with pytest.raises(ConfigError, match="retry: 9 is not a learner index"):
        db.retry([0, 9], now=T0)
    assert row(db, 0).state == "failed"


def test_complete_marks_waiting_learners_done_and_frees_dependents(tmp_path: Path) -> None:
    with make(tmp_path, 3, dependencies={1: [0]}) as db:
        db.claim("a", host="h", pid=1, now=T0)  # 0 is running: left alone
        assert db.complete({0: (5, 0.1), 2: (7, None)}, detail="met", now=T0) == [2]
        assert (row(db, 2).state, row(db, 2).npoints) == ("done", 7)
        assert events(db, 2) == [("done", "met")]
        db.release("a", 0, reason="stop", now=T0)
        assert db.learners_in(LearnerState.WAITING) == [(0, "f0"), (1, "f1")]
        assert db.complete({0: (5, 0.1)}, detail="met", now=T0) == [0]
        assert db.n_claimable() == 1  # 1 no longer waits on 0


def test_a_release_without_a_new_point_counts_as_a_failure(db: Database) -> None:
    assert db.claim("a", host="h", pid=1, now=T0) == ClaimRow(0, "f0")
    assert db.release("a", 0, reason="SIGUSR1", now=T0, npoints=7)  # 0 -> 7: progress
    assert (row(db, 0).failures, row(db, 0).npoints) == (0, 7)
    for attempt, task in enumerate(("b", "c", "d"), start=1):
        assert db.claim(task, host="h", pid=1, now=T0) == ClaimRow(0, "f0")
        assert db.release(task, 0, reason="SIGUSR1; points in evaluation: 0.5", now=T0, npoints=7)
        assert row(db, 0).failures == attempt
    final = row(db, 0)
    assert final.state == "failed"  # max_fails=3 jobs in a row without a point
    assert final.error is not None
    assert final.error.startswith("no progress: the job ended with 7 points, no more than")
    assert "points in evaluation: 0.5" in final.error
    # A release that reports no count (an older worker) is never taken for no progress.
    assert db.claim("e", host="h", pid=1, now=T0) == ClaimRow(1, "f1")
    assert db.release("e", 1, reason="SIGTERM", now=T0)
    assert row(db, 1).failures == 0
    # Nor is one without a point in evaluation: stopped before its first (while starting).
    assert db.claim("f", host="h", pid=1, now=T0) == ClaimRow(1, "f1")
    assert db.release("f", 1, reason="SIGTERM", now=T0, npoints=0)
    assert row(db, 1).failures == 0


# --- staged goals: the least advanced first, then the largest loss; go on or hand back ---


def _reach(db: Database, task: str, stage: int, loss: float | None) -> bool | None:
    """``task`` claims and its learner reaches ``stage`` with ``loss``: whether it goes on."""
    claim = db.claim(task, host="h", pid=1, now=T0)
    assert claim is not None
    assert claim.stage == stage
    return db.advance(task, claim.learner, stage=stage, npoints=10, loss=loss)


def test_a_worker_hands_back_while_learners_wait_at_an_earlier_stage(db: Database) -> None:
    assert _reach(db, "t0", 0, 0.1) is False  # 1, 2, 3 wait at stage 0
    assert db.hand_back("t0", 0, npoints=10, now=T0 + 1)
    assert db.hand_back("t0", 0, npoints=10, now=T0 + 1)  # a repeat: ok, nothing changes
    assert row(db, 0).state == LearnerState.WAITING
    assert (row(db, 0).stage, row(db, 0).failures, row(db, 0).npoints) == (1, 0, 10)
    assert db.exiting(["t0"]) == set()  # it claims again: its slot is not free
    assert _reach(db, "t1", 0, 0.9) is False
    db.hand_back("t1", 1, npoints=10, now=T0 + 2)
    assert _reach(db, "t2", 0, None) is False
    db.hand_back("t2", 2, npoints=10, now=T0 + 3)
    claim = db.claim("t3", host="h", pid=1, now=T0)
    assert claim == ClaimRow(3, "f3", 0)
    running = db.claim("t4", host="h", pid=1, now=T0)  # stage 1 now: unknown loss first
    assert running == ClaimRow(2, "f2", 1)
    assert db.advance("t3", 3, stage=0, npoints=10, loss=0.5) is True  # none behind: go on
    assert db.advance("t3", 3, stage=0, npoints=10, loss=0.5) is True  # a repeat: the same
    assert row(db, 3).stage == 1
    # At stage 1, by loss last reported, largest first: learner 1 (0.9), then 0 (0.1).
    assert [db.claim(t, host="h", pid=1, now=T0) for t in ("t5", "t6", "t7")] == [
        ClaimRow(1, "f1", 1),
        ClaimRow(0, "f0", 1),
        None,
    ]
    assert db.advance("t9", 0, stage=1, npoints=10, loss=0.1) is None  # not its holder
    assert db.done("t6", 0, npoints=20, loss=0.01, now=T0 + 4)
    assert row(db, 0).stage == 2  # done: every stage reached


def test_a_learner_added_at_stage_0_sends_the_next_worker_back(db: Database) -> None:
    for task in ("t0", "t1", "t2"):
        _reach(db, task, 0, 0.5)
        db.hand_back(task, int(task[1]), npoints=10, now=T0)
    assert _reach(db, "t3", 0, 0.5) is True  # the last at stage 0: it goes on
    claim = db.claim("t4", host="h", pid=1, now=T0)
    assert claim is not None
    assert claim.stage == 1
    db._conn.execute("UPDATE learners SET stage = 0 WHERE idx = 0")  # as one added later
    assert db.advance("t4", claim.learner, stage=1, npoints=20, loss=0.2) is False


def test_complete_and_reopen_keep_stages(db: Database) -> None:
    assert db.complete({0: (30, 0.1)}, detail="meets", now=T0, stages=3) == [0]
    assert row(db, 0).stage == 3
    assert db.reopen([0], detail="stricter", now=T0, stages=2) == [0]
    assert (row(db, 0).state, row(db, 0).stage) == (LearnerState.WAITING, 1)  # the last stage
