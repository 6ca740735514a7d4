"""The database manager and the client over real ZeroMQ with CURVE on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import pickle
import resource
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
import zmq
from helpers_run import make_run, set_url, wait_for
from structlog.testing import capture_logs
from zmq.utils import z85

from adaptive_runner.common.auth import load_keys
from adaptive_runner.common.protocol import (
    Ack,
    Assignment,
    Counts,
    ErrorReply,
    Reply,
    decode_reply,
)
from adaptive_runner.common.vocabulary import ReplyCode
from adaptive_runner.errors import (
    ConfigError,
    ManagerUnreachableError,
    ProtocolError,
    UnknownTaskError,
)
from adaptive_runner.job.client import Client
from adaptive_runner.manager.database_manager import (
    UNRECORDED_REPORT,
    DatabaseManager,
    Dispatcher,
    is_busy,
    zap_reply,
)
from adaptive_runner.manager.logs import log_managers_to, stop_logging_managers_to
from adaptive_runner.schedulers.local import Local
from adaptive_runner.schedulers.pbs import PBS
from adaptive_runner.schedulers.slurm import SLURM
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.schedulers.base import Scheduler

REPLY_MS = 30_000  # generous: replies that must come
ARRAY = "7"  # the array the run's tasks are of (recorded by the run_dir fixture)
SILENCE_MS = 1_000  # how long we listen for replies that must not come


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    return run_with_array(tmp_path / "run", 40)


def run_with_array(path: Path, n_learners: int) -> RunDir:
    """A run of ``n_learners`` that has submitted array ARRAY."""
    run_dir = make_run(path, n_learners)
    with Database.open(run_dir.database) as db:
        db.record_array(ARRAY, n_tasks=50, script="array.sh", now=1.0)
    return run_dir


@pytest.fixture
def manager(run_dir: RunDir) -> Iterator[DatabaseManager]:
    manager = DatabaseManager(run_dir)
    set_url(run_dir, manager.start())
    yield manager
    manager.stop()


class Sockets:
    """Raw sockets to the manager, closed when the test ends."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.open: list[zmq.Socket[bytes]] = []

    def connect(
        self,
        kind: int = zmq.REQ,
        *,
        client_keys: tuple[bytes, bytes] | None = None,
        curve: bool = True,
    ) -> zmq.Socket[bytes]:
        socket = self.context.socket(kind)
        self.open.append(socket)
        socket.linger = 0
        if curve:
            keys = load_keys(self.run_dir.keys_dir)
            socket.curve_publickey, socket.curve_secretkey = client_keys or (
                keys.client_public,
                keys.client_secret,
            )
            socket.curve_serverkey = keys.server_public
        socket.connect(self.run_dir.read_config().url)
        return socket

    def close(self) -> None:
        for socket in self.open:
            socket.close(linger=0)
        self.context.term()


@pytest.fixture
def sockets(run_dir: RunDir) -> Iterator[Sockets]:
    sockets = Sockets(run_dir)
    yield sockets
    sockets.close()


def reply(socket: zmq.Socket[bytes], timeout_ms: int = REPLY_MS) -> Reply | None:
    if not socket.poll(timeout_ms):
        return None
    return decode_reply(socket.recv_multipart()[-1])


def claim_message(task: str, array: str = ARRAY, group: int = 0) -> bytes:
    claim = {"v": 1, "op": "claim", "task": task, "host": "h", "pid": 1, "group": group}
    return json.dumps(claim | {"array": array}).encode()


def answer(db: Database, messages: list[list[bytes]], *, now: float) -> list[list[bytes]]:
    """What the serving thread answers ``messages`` with, in a run of one Local group."""
    return Dispatcher(db, [Local()]).answer(messages, now=now)


def assert_still_serving(run_dir: RunDir, task: str = "7_49") -> None:
    with Client(run_dir, task, timeout_s=REPLY_MS / 1000, patience_s=60) as client:
        assert client.claim(host="h", pid=1, array=ARRAY) is not None


def test_lifecycle_through_the_client(run_dir: RunDir, manager: DatabaseManager) -> None:
    del manager
    with Client(run_dir, "7_0") as client:
        assignment = client.claim(host="node", pid=7, array=ARRAY)
        assert assignment == Assignment(0, str(run_dir.path / "data" / "0.pickle"))
        assert client.claim(host="node", pid=7, array=ARRAY) == assignment  # repeated: same learner
        assert client.heartbeat(0, npoints=5, loss=float("inf"), cpu=1.0, memory=10)
        assert not client.heartbeat(1, npoints=5, loss=None, cpu=1.0, memory=10)
        assert client.status()["running"] == 1
        client.done(0, npoints=10, loss=0.1)
        client.done(0, npoints=10, loss=0.1)  # repeated: ok
        assert client.status() == {
            "waiting": 39,
            "running": 0,
            "done": 1,
            "failed": 0,
            "cancelled": 0,
        }
    with Client(run_dir, "7_1") as client:
        assignment = client.claim(host="node", pid=8, array=ARRAY)
        assert assignment is not None
        client.fail(assignment.learner, error="x" * 100_000)  # cut to 16 KiB, fits the cap
        assert client.claim(host="node", pid=8, array=ARRAY) is not None  # the task may claim again
    with Database.open(run_dir.database) as db:
        error = db.learners()[1].error
        assert error is not None
        assert error.startswith("[...]")
        assert len(error) == 16 * 1024 + 5


def test_no_work_and_not_owner(tmp_path: Path) -> None:
    run_dir = run_with_array(tmp_path / "run", 1)
    manager = DatabaseManager(run_dir)
    set_url(run_dir, manager.start())
    try:
        with Client(run_dir, "7_10") as a, Client(run_dir, "7_11") as b:
            assert a.claim(host="h", pid=1, array=ARRAY) == Assignment(
                0, str(run_dir.path / "data/0.pickle")
            )
            assert b.claim(host="h", pid=2, array=ARRAY) is None
            with Database.open(run_dir.database) as db:
                db.mark_lost(["7_10"], reason="test", now=0.0)
            assert not a.heartbeat(0, npoints=1, loss=None, cpu=0.0, memory=0)
            a.done(0, npoints=1, loss=None)  # not_owner: logged, not raised
            assert b.claim(host="h", pid=2, array=ARRAY) == Assignment(
                0, str(run_dir.path / "data/0.pickle")
            )
    finally:
        manager.stop()


def test_a_claim_of_an_unknown_array_is_refused_and_changes_nothing(
    run_dir: RunDir, manager: DatabaseManager, sockets: Sockets
) -> None:
    del manager
    with Database.open(run_dir.database) as db:
        before = list(db._conn.iterdump())
    socket = sockets.connect()
    for task, array in [("999_0", "999"), ("7_0", ""), ("7_0", "7_0")]:
        socket.send(claim_message(task, array=array))
        answered = reply(socket)
        assert isinstance(answered, ErrorReply)
        assert answered.code == ReplyCode.UNKNOWN_TASK
        assert repr(array) in answered.error
    with Database.open(run_dir.database) as db:
        assert list(db._conn.iterdump()) == before  # no claim counted, no learner bound


def test_made_up_task_ids_cannot_make_a_learner_lost(
    run_dir: RunDir, manager: DatabaseManager
) -> None:
    del manager
    made_up = [f"{array}_{index}" for array in ("8", "99", "L1") for index in range(3)]
    for task in made_up:
        with Client(run_dir, task) as client, pytest.raises(UnknownTaskError, match="not recorded"):
            client.claim(host="h", pid=1, array=task.partition("_")[0])
    with Database.open(run_dir.database) as db:
        assert db.running_tasks() == {}
        # So the job manager, finding none of them in the queue, has nothing to take back.
        assert db.mark_lost(made_up, reason="vanished", now=2.0) == []
        assert {(row.state, row.failures) for row in db.learners()} == {("waiting", 0)}


@pytest.mark.parametrize(
    ("task", "group"),
    [
        ("7_50", 0),  # the array has tasks 0..49
        ("7_999", 0),
        ("7_07", 0),  # not how the scheduler writes index 7
        ("7_0@1", 0),  # a packed worker's id, in an array of single workers
        ("8_0", 0),  # a task of another array
        ("7_0", 1),  # the array is of group 0
    ],
)
def test_a_claim_from_no_task_of_the_array_is_refused(
    run_dir: RunDir, manager: DatabaseManager, sockets: Sockets, task: str, group: int
) -> None:
    del manager
    with Database.open(run_dir.database) as db:
        before = list(db._conn.iterdump())
    socket = sockets.connect()
    socket.send(claim_message(task, group=group))
    answered = reply(socket)
    assert isinstance(answered, ErrorReply)
    assert answered.code == ReplyCode.UNKNOWN_TASK  # the worker's handling: ask again, exit 1
    assert answered.error.endswith("nothing claimed")
    with Database.open(run_dir.database) as db:
        assert list(db._conn.iterdump()) == before


def test_made_up_indices_of_a_real_array_cannot_fail_learners(
    run_dir: RunDir, manager: DatabaseManager
) -> None:
    """Claims as ``<array>_999`` and the like, then ``fail``: what a holder of the client
    key did to fail every learner in seconds."""
    del manager
    for _ in range(3):  # max_fails
        for index in range(50, 90):
            with (
                Client(run_dir, f"{ARRAY}_{index}") as client,
                pytest.raises(UnknownTaskError, match="is no task of array '7', whose 50 tasks"),
            ):
                client.claim(host="h", pid=1, array=ARRAY)
    with Database.open(run_dir.database) as db:
        assert db.running_tasks() == {}
        assert {(row.state, row.failures) for row in db.learners()} == {("waiting", 0)}


@pytest.mark.parametrize(
    ("scheduler", "array", "n_tasks", "claims"),
    [
        # 2 nodes x 2 workers: ranks 0..3, and only with a rank.
        (
            SLURM(cores=1, nodes=2, workers_per_node=2),
            "7",
            2,
            {"7_1@0": True, "7_1@3": True, "7_1@4": False, "7_1": False, "7_1@03": False}
            | {"7_2@0": False},
        ),
        (
            PBS(cores=1),
            "100[].pbs",
            3,
            {"100[2].pbs": True, "100[3].pbs": False, "100[].pbs": False, "100[02].pbs": False}
            | {"100[1].other": False},
        ),
        (PBS(cores=1), "101.pbs", 1, {"101.pbs": True, "101[0].pbs": False}),  # a plain job
    ],
)
def test_claims_are_checked_in_the_groups_own_task_ids(
    run_dir: RunDir, scheduler: Scheduler, array: str, n_tasks: int, claims: dict[str, bool]
) -> None:
    with Database.open(run_dir.database) as db:
        db.record_array(array, n_tasks=n_tasks, script="array.sh", now=1.0)
        dispatcher = Dispatcher(db, [scheduler])
        for task, granted in claims.items():
            (got,) = dispatcher.answer([[b"x", b"", claim_message(task, array)]], now=2.0)
            assert isinstance(decode_reply(got[-1]), Assignment) is granted, task


def test_reports_that_change_nothing_are_logged_once_a_minute_per_sender(
    run_dir: RunDir,
) -> None:
    """fail, release and done for learners the sender does not hold: not_owner, and a line
    per sender and minute (at most 100 a minute in all), the reason cut to 300 characters."""
    clock = [0.0]
    big = "E" * 60_000  # one line: the whole of it would be the reason

    def fail(task: str) -> list[bytes]:
        message = {"v": 1, "op": "fail", "task": task, "learner": 0, "error": big}
        return [b"x", b"", json.dumps(message).encode()]

    def replies(messages: list[list[bytes]]) -> set[Reply]:
        return {decode_reply(r[-1]) for r in dispatcher.answer(messages, now=1.0)}

    done = {"v": 1, "op": "done", "task": "7_1", "learner": 1, "npoints": 1, "loss": None}
    release = {"v": 1, "op": "release", "task": "7_2", "learner": 2, "reason": big}
    release["npoints"] = 1
    with Database.open(run_dir.database) as db, capture_logs() as logs:
        dispatcher = Dispatcher(db, [Local()], clock=lambda: clock[0])
        (not_owner,) = replies([fail("7_0")] * 500)
        assert isinstance(not_owner, ErrorReply)
        assert not_owner.code == ReplyCode.NOT_OWNER
        assert len(replies([[b"y", b"", json.dumps(done).encode()]])) == 1
        assert len(replies([[b"z", b"", json.dumps(release).encode()]])) == 1
        replies([fail(f"made-up-{i}") for i in range(1000)])  # 97 more lines this minute
        clock[0] = 59.0
        replies([fail("7_0")])
        clock[0] = 60.0
        replies([fail("7_0")])
        assert {(r.state, r.failures) for r in db.learners()} == {("waiting", 0)}
    assert len(logs) == 101
    first, again = (log for log in logs if log["sender"] == "7_0")
    assert first["event"] == UNRECORDED_REPORT
    assert first["reason"] == "E" * 300 + " [... 59700 more characters]"
    assert (first["unlogged_from_sender"], first["unlogged_from_others"]) == (0, 0)
    assert (again["unlogged_from_sender"], again["unlogged_from_others"]) == (500, 903)
    assert [(log["op"], log["reply"]) for log in logs[1:3]] == [
        ("done", "not_owner"),
        ("release", "not_owner"),
    ]


def test_a_flood_of_refused_reports_grows_manager_log_by_a_bound(
    run_dir: RunDir, sockets: Sockets
) -> None:
    """2,000 fails of 60 KB, each for a learner its sender does not hold, from a client with
    the run's key: a few lines in manager.log (each was logged whole before: 120 MB)."""
    path = run_dir.path / "manager.log"
    log_managers_to(path)
    manager = DatabaseManager(run_dir)
    try:
        set_url(run_dir, manager.start())
        before = path.stat().st_size
        socket = sockets.connect(zmq.DEALER)
        message = {"v": 1, "op": "fail", "task": "7_0", "learner": 0, "error": "E" * 60_000}
        for _ in range(2000):
            socket.send_multipart([b"", json.dumps(message).encode()])
        codes: Counter[ReplyCode | None] = Counter()
        for _ in range(2000):
            got = reply(socket)
            codes[got.code if isinstance(got, ErrorReply) else None] += 1
        assert codes == {ReplyCode.NOT_OWNER: 2000}
    finally:
        manager.stop()
        stop_logging_managers_to(path)
    assert 0 < path.stat().st_size - before < 2_000


def test_a_task_of_an_array_recorded_late_claims_once_it_is(
    run_dir: RunDir, manager: DatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    """An array adopted after a failed submission: its tasks may ask before it is recorded."""
    del manager

    def record_late() -> None:
        with Database.open(run_dir.database) as db:
            db.record_array("8", n_tasks=1, script="array.sh", now=2.0)

    timer = threading.Timer(1.0, record_late)
    timer.start()
    try:
        with Client(run_dir, "8_0") as client, caplog.at_level(logging.WARNING):
            assignment = client.claim(host="h", pid=1, array="8", unknown_patience_s=30.0)
    finally:
        timer.join()
    assert assignment is not None
    assert "not recorded" in caplog.text  # it was refused first, and asked again
    with Database.open(run_dir.database) as db:
        assert db.running_tasks() == {"8_0": assignment.learner}


def test_an_unknown_task_stops_asking_after_its_patience(
    run_dir: RunDir, manager: DatabaseManager
) -> None:
    del manager
    with Client(run_dir, "8_0") as client:
        started = time.monotonic()
        with pytest.raises(UnknownTaskError, match=r"asked for 1\.5 s"):
            client.claim(host="h", pid=1, array="8", unknown_patience_s=1.5)
        assert time.monotonic() - started >= 1.5


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"garbage \x00\xff"], "bad_request"),
        ([b"{not json"], "bad_request"),
        ([b"[]"], "bad_request"),
        ([pickle.dumps({"v": 1, "op": "claim"})], "bad_request"),
        ([b'{"v":1,"op":"claim","task":"t","host":"h","pid":true}'], "bad_request"),
        ([b'{"v":1,"op":"claim","task":1,"host":"h","pid":1}'], "bad_request"),
        ([b'{"v":1,"op":"start","task":"t","host":"h","pid":1}'], "bad_request"),
        ([b'{"v":2,"op":"claim","task":"t","host":"h","pid":1}'], "bad_request"),
        ([claim_message("7_20") + b" " * 70_000], "bad_request"),  # over 64 KiB
        ([claim_message("7_20"), claim_message("7_21")], "bad_request"),  # two frames
        ([b""], "bad_request"),
    ],
)
def test_malformed_requests_get_error_replies(
    run_dir: RunDir,
    manager: DatabaseManager,
    sockets: Sockets,
    frames: list[bytes],
    code: str,
) -> None:
    del manager
    socket = sockets.connect()
    socket.send_multipart(frames)
    got = reply(socket)
    assert isinstance(got, ErrorReply)
    assert got.code == code
    assert_still_serving(run_dir)


def test_dropped_messages_do_not_hurt(
    run_dir: RunDir, manager: DatabaseManager, sockets: Sockets
) -> None:
    del manager
    huge = sockets.connect()  # over libzmq's limit: the connection is dropped
    huge.send(claim_message("7_20") + b" " * 1_000_000)
    no_envelope = sockets.connect(zmq.DEALER)  # no empty delimiter frame
    no_envelope.send(claim_message("7_20"))
    for socket in (huge, no_envelope):
        assert reply(socket, SILENCE_MS) is None
    only_delimiter = sockets.connect(zmq.DEALER)  # an envelope, but no request frame
    only_delimiter.send_multipart([b""])
    assert reply(only_delimiter) == ErrorReply(
        ReplyCode.BAD_REQUEST, "expected one message frame, got 0"
    )
    assert_still_serving(run_dir)


def test_clients_without_the_run_keys_get_nothing(
    run_dir: RunDir, manager: DatabaseManager, sockets: Sockets
) -> None:
    del manager
    stranger_keys = zmq.curve_keypair()
    stranger = sockets.connect(client_keys=stranger_keys)
    stranger.send(claim_message("7_23"))
    plain = sockets.connect(curve=False)
    plain.send(claim_message("7_24"))
    for socket in (stranger, plain):
        assert reply(socket, SILENCE_MS) is None
    with Database.open(run_dir.database) as db:
        assert db.running_tasks() == {}
    assert_still_serving(run_dir)


def test_the_key_check_admits_only_the_run_client_key(run_dir: RunDir) -> None:
    key = z85.decode(load_keys(run_dir.keys_dir).client_public)
    head = [b"1.0", b"17", b"", b"127.0.0.1", b""]  # version, request id, domain, address, id
    assert zap_reply([*head, b"CURVE", key], key) == [b"1.0", b"17", b"200", b"OK", b"", b""]
    for request in (
        [*head, b"CURVE", bytes(32)],
        [*head, b"CURVE", key, b"more"],
        [*head, b"CURVE"],
        [*head, b"NULL"],
        [*head, b"PLAIN", b"user", b"password"],
        [b"2.0", *head[1:], b"CURVE", key],
        [b"1.0"],
        [],
    ):
        reply = zap_reply(request, key)
        assert (reply[0], reply[2], len(reply)) == (b"1.0", b"400", 6)


def test_fifty_concurrent_clients_never_share_a_learner(
    run_dir: RunDir, manager: DatabaseManager
) -> None:
    del manager
    start = threading.Barrier(50)

    def claim_twice(task: str) -> tuple[Assignment | None, Assignment | None]:
        with Client(run_dir, task, timeout_s=REPLY_MS / 1000, patience_s=120) as client:
            start.wait()
            return client.claim(host="h", pid=1, array=ARRAY), client.claim(
                host="h", pid=1, array=ARRAY
            )

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(claim_twice, [f"7_{i}" for i in range(50)]))
    assert all(first == again for first, again in results)
    got = [first.learner for first, _ in results if first is not None]
    assert sorted(got) == list(range(40))  # 40 learners, 50 tasks: 10 find no work
    with Database.open(run_dir.database) as db:
        assert db.running_tasks() == {
            f"7_{i}": first.learner for i, (first, _) in enumerate(results) if first is not None
        }


def test_unreachable_manager_raises(run_dir: RunDir) -> None:
    with zmq.Context() as context, context.socket(zmq.ROUTER) as silent:
        port = silent.bind_to_random_port("tcp://127.0.0.1")  # listens, never answers
        set_url(run_dir, f"tcp://127.0.0.1:{port}")
        with (
            Client(run_dir, "7_20", timeout_s=0.2, patience_s=0.5) as client,
            pytest.raises(ManagerUnreachableError, match=f"127.0.0.1:{port}"),
        ):
            client.claim(host="h", pid=1, array=ARRAY)


def test_a_request_given_up_leaves_the_client_usable(run_dir: RunDir) -> None:
    # A worker abandons a heartbeat in flight, then releases its learner with the same client:
    # the abandoned request must not leave the socket waiting for its reply.
    with zmq.Context() as context, context.socket(zmq.ROUTER) as silent:
        port = silent.bind_to_random_port("tcp://127.0.0.1")  # listens, never answers
        set_url(run_dir, f"tcp://127.0.0.1:{port}")
        with Client(run_dir, "7_20", timeout_s=0.2, patience_s=0.5) as client:
            assert client.claim(host="h", pid=1, array=ARRAY, give_up=lambda: True) is None
            with pytest.raises(ManagerUnreachableError, match=f"127.0.0.1:{port}"):
                client.release(0, reason="SIGTERM", npoints=3)


def test_client_waits_for_a_late_manager(run_dir: RunDir, caplog: pytest.LogCaptureFixture) -> None:
    # run.json has no url yet: the client waits and re-reads it until the manager starts.
    with Client(run_dir, "7_22", timeout_s=0.2, patience_s=120) as client:
        results: list[Assignment | None] = []
        thread = threading.Thread(
            target=lambda: results.append(client.claim(host="h", pid=1, array=ARRAY))
        )
        caplog.set_level(logging.WARNING, logger="adaptive_runner.client")
        thread.start()
        while not any("no url in run.json yet" in r.getMessage() for r in caplog.records):
            threading.Event().wait(0.05)  # until the client has tried and logged its retry
        manager = DatabaseManager(run_dir)
        try:
            set_url(run_dir, manager.start())
            thread.join()
        finally:
            manager.stop()
    assert results == [Assignment(0, str(run_dir.path / "data" / "0.pickle"), 0)]


def test_client_follows_a_restarted_manager_to_its_new_port(run_dir: RunDir) -> None:
    first = DatabaseManager(run_dir)
    set_url(run_dir, first.start())
    with Client(run_dir, "7_20", timeout_s=0.3, patience_s=120) as client:
        assignment = client.claim(host="h", pid=1, array=ARRAY)
        assert assignment is not None
        first.stop()
        second = DatabaseManager(run_dir)
        try:
            url = second.start()
            assert url != first.url
            set_url(run_dir, url)
            assert client.heartbeat(assignment.learner, npoints=1, loss=None, cpu=0, memory=0)
            assert client.claim(host="h", pid=1, array=ARRAY) == assignment
        finally:
            second.stop()


def test_one_failing_request_does_not_undo_the_batch(run_dir: RunDir) -> None:
    with Database.open(run_dir.database) as db:
        # A real sqlite error in the middle of a transition, for one request only.
        db._conn.execute(
            "CREATE TRIGGER boom BEFORE UPDATE OF npoints ON learners WHEN NEW.npoints = 666"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        done = {"v": 1, "op": "done", "task": "7_10", "learner": 0, "npoints": 666, "loss": None}
        messages = [
            [b"id-a", b"", claim_message("7_10")],
            [b"id-x", b"", json.dumps(done).encode()],
            [b"id-y", b"", b"junk"],
            [b"id-z", b"no delimiter"],
            [b"id-b", b"", claim_message("7_11")],
        ]
        replies = answer(db, messages, now=1.0)
        assert [r[0] for r in replies] == [b"id-a", b"id-x", b"id-y", b"id-b"]
        got = [decode_reply(r[-1]) for r in replies]
        codes = [r.code if isinstance(r, ErrorReply) else type(r) for r in got]
        assert codes == [Assignment, ReplyCode.INTERNAL, ReplyCode.BAD_REQUEST, Assignment]
    with Database.open(run_dir.database) as db:
        assert db.running_tasks() == {"7_10": 0, "7_11": 1}
        assert db.learners()[0].npoints is None


def test_more_jobs_connect_than_the_soft_open_files_limit_allowed(
    run_dir: RunDir, sockets: Sockets
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit on open files is {hard}")
    n = 300  # each holds a descriptor in the manager and two here: far above 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    manager = DatabaseManager(run_dir)
    try:
        set_url(run_dir, manager.start())
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 256
        jobs = [sockets.connect() for _ in range(n)]
        for job in jobs:
            job.send(b'{"v":1,"op":"status"}')
        deadline = time.monotonic() + REPLY_MS / 1000
        answered = [reply(job, max(0, int(1000 * (deadline - time.monotonic())))) for job in jobs]
        assert sum(isinstance(a, Counts) for a in answered) == n
    finally:
        manager.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_too_low_a_limit_on_open_files_is_a_warning(run_dir: RunDir) -> None:
    manager = DatabaseManager(run_dir, expected_jobs=10**9)
    with capture_logs() as logs:
        manager.start()
    manager.stop()
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert [log["max_simultaneous_jobs"] for log in warnings] == [10**9]
    assert "ulimit -n" in warnings[0]["event"]


def test_requests_without_two_transitions_share_no_transaction(run_dir: RunDir) -> None:
    beat = {"v": 1, "op": "heartbeat", "task": "7_10", "learner": 0, "npoints": 5}
    beat |= {"loss": 0.5, "cpu": 1.0, "memory": 1}
    status = b'{"v":1,"op":"status"}'
    with Database.open(run_dir.database) as db:
        answer(db, [[b"a", b"", claim_message("7_10")]], now=1.0)
        replies = answer(
            db,
            [[b"a", b"", json.dumps(beat).encode()], [b"b", b"", status], [b"c", b"", b"{"]],
            now=2.0,
        )
        assert [type(decode_reply(r[-1])) for r in replies] == [Ack, Counts, ErrorReply]
        assert db.learners()[0].last_heartbeat == 1.0  # buffered: nothing committed it
        replies = answer(
            db,
            [[b"a", b"", json.dumps(beat).encode()], [b"b", b"", claim_message("7_11")]],
            now=3.0,
        )
        assert [type(decode_reply(r[-1])) for r in replies] == [Ack, Assignment]
        db.flush_heartbeats()
        assert db.learners()[0].last_heartbeat == 3.0


def test_busy_means_many_requests_from_many_connections() -> None:
    many = [str(i % 50).encode() for i in range(500)]
    assert is_busy(many)
    assert not is_busy(many[:-1])  # too few requests
    assert not is_busy([b"one fast client"] * 10_000)
    assert not is_busy([str(i % 49).encode() for i in range(10_000)])  # too few connections


def test_manager_needs_the_server_secret(run_dir: RunDir) -> None:
    (run_dir.keys_dir / "server.key_secret").unlink()
    with pytest.raises(Exception, match=r"server\.key_secret"):
        DatabaseManager(run_dir).start()


def test_bad_bind_host_is_a_config_error(run_dir: RunDir) -> None:
    before = set(threading.enumerate())
    with pytest.raises(ConfigError, match=r"bind_host='256\.1\.1\.1'"):
        DatabaseManager(run_dir, bind_host="256.1.1.1").start()
    assert set(threading.enumerate()) <= before  # the ZAP thread was stopped


def test_secret_keys_are_private(run_dir: RunDir) -> None:
    assert run_dir.keys_dir.stat().st_mode & 0o777 == 0o700
    for name in ("server.key_secret", "client.key_secret"):
        assert (run_dir.keys_dir / name).stat().st_mode & 0o777 == 0o600
    (run_dir.keys_dir / "client.key_secret").chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        load_keys(run_dir.keys_dir)


def test_bad_request_from_client_raises(run_dir: RunDir, manager: DatabaseManager) -> None:
    del manager
    with Client(run_dir, "7_20") as client, pytest.raises(ProtocolError, match="refused"):
        client.heartbeat(-1, npoints=1, loss=None, cpu=0.0, memory=0)


@pytest.mark.parametrize(
    ("call", "answer_"),
    [
        (lambda c: c.claim(host="h", pid=1, array=ARRAY), Ack()),
        (lambda c: c.claim(host="h", pid=1, array=ARRAY), Counts({"done": 1})),
        (lambda c: c.heartbeat(0, npoints=1, loss=None, cpu=0.0, memory=0), Assignment(0, "a", 0)),
        (lambda c: c.done(0, npoints=1, loss=None), Counts({})),
        (lambda c: c.status(), Ack()),
    ],
)
def test_a_reply_of_another_kind_of_request_is_a_protocol_error(
    run_dir: RunDir,
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[Client], object],
    answer_: Reply,
) -> None:
    monkeypatch.setattr(Client, "_request", lambda *_, **__: answer_)
    with Client(run_dir, "7_20") as client, pytest.raises(ProtocolError, match="answered"):
        call(client)


def test_stop_is_clean(run_dir: RunDir) -> None:
    before = set(threading.enumerate())
    manager = DatabaseManager(run_dir)
    manager.start()
    manager.stop()
    manager.stop()
    assert set(threading.enumerate()) <= before  # server, checkpoint and ZAP threads ended
    with pytest.raises(RuntimeError, match="starts once"):
        manager.start()
    with Database.open(run_dir.database) as db:  # the server's connection is closed
        assert db.counts()["waiting"] == 40


def test_a_failing_serving_round_does_not_end_the_server(
    run_dir: RunDir, manager: DatabaseManager
) -> None:
    with Database.open(run_dir.database) as db:  # heartbeats cannot be written: a real error
        db._conn.execute(
            "CREATE TRIGGER boom BEFORE UPDATE OF npoints ON learners WHEN NEW.npoints = 555"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
    with (
        Client(run_dir, "7_0", timeout_s=REPLY_MS / 1000, patience_s=60) as client,
        capture_logs() as logs,
    ):
        assignment = client.claim(host="h", pid=1, array=ARRAY)
        assert assignment is not None
        assert client.heartbeat(assignment.learner, npoints=555, loss=None, cpu=1.0, memory=10)
        # The server flushes the heartbeat within a second, fails, and goes on serving.
        wait_for(
            lambda: any(
                log["event"] == "heartbeats not written; kept for the next try" for log in logs
            ),
            what="the failed flush",
        )
        assert client.status()["running"] == 1
        with Database.open(run_dir.database) as db:
            db._conn.execute("DROP TRIGGER boom")

        def npoints() -> int | None:
            with Database.open(run_dir.database) as db:
                return db.learners()[assignment.learner].npoints

        wait_for(lambda: npoints() == 555, what="the heartbeat written once it can be")
    assert manager.died is None


def test_fail_and_release_are_logged_with_their_reason(run_dir: RunDir) -> None:
    traceback = 'Traceback (most recent call last):\n  File "f.py"\nZeroDivisionError: at 0.5\n'
    fail = {"v": 1, "op": "fail", "task": "7_10", "learner": 0, "error": traceback}
    release = {
        "v": 1,
        "op": "release",
        "task": "7_11",
        "learner": 1,
        "reason": "SIGTERM",
        "npoints": 3,
    }
    stale = {"v": 1, "op": "fail", "task": "7_12", "learner": 2, "error": "OSError: full"}
    with Database.open(run_dir.database) as db:
        answer(
            db, [[b"a", b"", claim_message("7_10")], [b"b", b"", claim_message("7_11")]], now=1.0
        )
        with capture_logs() as logs:
            answer(db, [[b"a", b"", json.dumps(fail).encode()]], now=2.0)
            answer(db, [[b"b", b"", json.dumps(release).encode()]], now=2.0)
            answer(db, [[b"c", b"", json.dumps(stale).encode()]], now=2.0)
    assert [{k: v for k, v in log.items() if k != "log_level"} for log in logs] == [
        {
            "event": "job failed",
            "task": "7_10",
            "learner": 0,
            "reason": "ZeroDivisionError: at 0.5",
        },
        {"event": "job released its learner", "task": "7_11", "learner": 1, "reason": "SIGTERM"},
        {
            "event": UNRECORDED_REPORT,
            "sender": "7_12",
            "op": "fail",
            "learner": 2,
            "reply": "not_owner",
        }
        | {"reason": "OSError: full", "unlogged_from_sender": 0, "unlogged_from_others": 0},
    ]


def test_a_client_shared_by_two_threads_sends_one_request_at_a_time(
    run_dir: RunDir, manager: DatabaseManager
) -> None:
    """A worker's heartbeats (a thread) and a staged goal's stage_reached (another) share
    one client: each request waits for the other's reply (a REQ socket is lockstep)."""
    del manager
    with Client(run_dir, "7_0") as client:
        assignment = client.claim(host="h", pid=1, array=ARRAY)
        assert assignment is not None
        learner = assignment.learner
        errors: list[BaseException] = []

        def beat() -> None:
            try:
                for _ in range(200):
                    assert client.heartbeat(learner, npoints=1, loss=None, cpu=0.0, memory=0)
            except BaseException as e:  # noqa: BLE001 - the test reports it
                errors.append(e)

        thread = threading.Thread(target=beat)
        thread.start()
        try:
            for _ in range(200):
                assert client.stage_reached(learner, stage=0, npoints=1, loss=0.5) is False
        finally:
            thread.join()
        assert errors == []


def test_the_release_of_a_job_cancelled_with_the_run_is_no_warning(run_dir: RunDir) -> None:
    """rm.cancel(): each running job saves and releases its learner, cancelled meanwhile;
    the not_owner reply is expected, so no warning says its report changed nothing."""
    release = {"v": 1, "op": "release", "task": "7_0", "learner": 0, "reason": "SIGTERM"}
    release["npoints"] = 3
    with Database.open(run_dir.database) as db, capture_logs() as logs:
        dispatcher = Dispatcher(db, [Local()])
        (got,) = dispatcher.answer([[b"x", b"", claim_message("7_0", ARRAY)]], now=1.0)
        assert isinstance(decode_reply(got[-1]), Assignment)
        db.cancel(None, now=2.0)
        (got,) = dispatcher.answer([[b"x", b"", json.dumps(release).encode()]], now=3.0)
        reply = decode_reply(got[-1])
        assert isinstance(reply, ErrorReply)
        assert reply.code == ReplyCode.NOT_OWNER
        release["task"] = "7_1"  # a task that never held it: still a warning
        dispatcher.answer([[b"y", b"", json.dumps(release).encode()]], now=4.0)
    assert [
        (log["log_level"], log.get("sender")) for log in logs if log["log_level"] != "debug"
    ] == [("warning", "7_1")]
