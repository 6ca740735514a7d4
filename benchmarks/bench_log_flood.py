"""What a holder of the run's client key can do to manager.log and to the learners.

A client with the run's client key (``keys/`` of the run directory) talks to the real
``DatabaseManager`` over CURVE, on a DEALER socket that keeps 64 requests in flight:

- **flood**: ``--n`` ``fail`` messages of ``--kb`` KB each, one line of text (no newline to cut
  the traceback at), for a learner the sender does not hold. Shown: how much manager.log grew,
  and the replies.
- **made-up tasks**: claims as tasks of the run's real array under indices it does not have
  (``<array>_999``, ...), each followed by a ``fail`` of what it got, ``max_fails`` rounds:
  how many learners such claims fail.

    python benchmarks/bench_log_flood.py             # 10,000 fails of 60 KB
    python benchmarks/bench_log_flood.py --quick     # 1,000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import zmq

from adaptive_runner.common.auth import create_keys, load_keys
from adaptive_runner.common.run_dir import GroupConfig, RunConfig, RunDir
from adaptive_runner.manager.database_manager import DatabaseManager
from adaptive_runner.manager.logs import (
    configure_manager_logging,
    log_managers_to,
    stop_logging_managers_to,
)
from adaptive_runner.state.database import Database

ARRAY = "L1"  # the run's one array: 4 tasks, L1_0 .. L1_3
N_TASKS = 4
N_LEARNERS = 40
MAX_FAILS = 3
IN_FLIGHT = 64


def make_run(path: Path) -> RunDir:
    """A Local run of N_LEARNERS learners that has submitted ARRAY (no job manager)."""
    run_dir = RunDir(path)
    for directory in (run_dir.learners_dir, run_dir.logs_dir, run_dir.jobs_dir):
        directory.mkdir(parents=True)
    create_keys(run_dir.keys_dir)
    fnames = [str(path / "data" / f"{i}.pickle") for i in range(N_LEARNERS)]
    with Database.create(run_dir.database, fnames, dependencies={}, max_fails=MAX_FAILS) as db:
        db.record_array(ARRAY, n_tasks=N_TASKS, script="", now=time.time(), tag="bench")
    run_dir.write_config(
        RunConfig(
            name="bench",
            created=datetime.now(UTC).isoformat(),
            url="",
            config_hash="bench",
            groups=[GroupConfig("local", {"executor": "sequential", "cores": 1})],
            n_learners=N_LEARNERS,
            save_interval_s=60.0,
            log_interval_s=60.0,
            lease_timeout_s=600.0,
            max_fails=MAX_FAILS,
        )
    )
    return run_dir


def connect(context: zmq.Context[zmq.Socket[bytes]], run_dir: RunDir) -> zmq.Socket[bytes]:
    """A DEALER socket with the run's client key: what any holder of keys/ can open."""
    keys = load_keys(run_dir.keys_dir)
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.curve_publickey = keys.client_public
    socket.curve_secretkey = keys.client_secret
    socket.curve_serverkey = keys.server_public
    socket.connect(run_dir.read_config().url)
    return socket


def exchange(
    socket: zmq.Socket[bytes], requests: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Send ``requests`` with IN_FLIGHT outstanding; the replies, in order."""
    replies: list[dict[str, object]] = []
    sent = 0
    while len(replies) < len(requests):
        while sent < len(requests) and sent - len(replies) < IN_FLIGHT:
            socket.send_multipart([b"", json.dumps(requests[sent]).encode()])
            sent += 1
        if not socket.poll(60_000):
            raise TimeoutError("no reply from the database manager within 60 s")
        replies.append(json.loads(socket.recv_multipart()[-1]))
    return replies


def flood(run_dir: RunDir, socket: zmq.Socket[bytes], n: int, kb: int) -> None:
    """``n`` fails of ``kb`` KB for learner 0, which task L1_0 does not hold."""
    error = "E" * (kb * 1000)
    fail = {"v": 1, "op": "fail", "task": f"{ARRAY}_0", "learner": 0, "error": error}
    log = run_dir.path / "manager.log"
    before = log.stat().st_size
    started = time.monotonic()
    replies = exchange(socket, [fail] * n)
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # the serving thread logs after it replies
    grown = log.stat().st_size - before
    codes = Counter(str(r.get("code", "ok")) for r in replies)
    print(f"flood: {n:,} fails of {kb} KB for a learner not held, in {elapsed:.1f} s")
    print(f"  replies: {dict(codes)}")
    print(f"  manager.log grew by {grown:,} bytes ({grown / n:,.1f} bytes per fail)")


def made_up_tasks(run_dir: RunDir, socket: zmq.Socket[bytes]) -> None:
    """Claims of ARRAY's made-up tasks (indices N_TASKS and up), each failing what it got."""
    tasks = [f"{ARRAY}_{index}" for index in range(N_TASKS, N_TASKS + N_LEARNERS)]
    granted = 0
    for _ in range(MAX_FAILS):
        claims = [
            {"v": 1, "op": "claim", "task": t, "host": "h", "pid": 1, "group": 0, "array": ARRAY}
            for t in tasks
        ]
        got = [
            (t, r["learner"])
            for t, r in zip(tasks, exchange(socket, claims), strict=True)
            if r["ok"]
        ]
        granted += len(got)
        fails = [
            {"v": 1, "op": "fail", "task": t, "learner": learner, "error": "made up"}
            for t, learner in got
        ]
        exchange(socket, fails)
    with Database.open(run_dir.database, read_only=True) as db:
        failed = db.counts()["failed"]
    print(
        f"made-up tasks: {MAX_FAILS} x {len(tasks)} claims as {tasks[0]}..{tasks[-1]} "
        f"(array {ARRAY} has {N_TASKS} tasks): {granted} granted, "
        f"{failed} of {N_LEARNERS} learners failed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="fail messages in the flood")
    parser.add_argument("--kb", type=int, default=60, help="size of each, in KB")
    parser.add_argument("--quick", action="store_true", help="1,000 fails")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Path(os.devnull).open("w") as devnull:
        run_dir = make_run(Path(tmp) / "run")
        configure_manager_logging(stream=devnull)  # the console would take as much again
        log_managers_to(run_dir.path / "manager.log")
        manager = DatabaseManager(run_dir)
        run_dir.write_config(dataclasses.replace(run_dir.read_config(), url=manager.start()))
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        socket = connect(context, run_dir)
        try:
            flood(run_dir, socket, 1_000 if args.quick else args.n, args.kb)
            made_up_tasks(run_dir, socket)
        finally:
            socket.close(linger=0)
            context.term()
            manager.stop()
            stop_logging_managers_to(run_dir.path / "manager.log")


if __name__ == "__main__":
    main()
