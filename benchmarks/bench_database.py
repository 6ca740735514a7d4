"""Learner lifecycles (claim -> heartbeat -> done) per second through the real ZMQ server.

The server runs in its own process; clients run in up to four other processes, each driving
several DEALER sockets with a poller (so 32 clients fit on 2 cores). Every request is real
JSON over tcp loopback with CURVE, answered after its sqlite commit. Each scenario runs
``--repeat`` times on a fresh database; the table shows the run with the median rate.

Rows (the reference runs once per scenario, with fewer lifecycles at larger sizes):
- bare loop: three JSON round trips per lifecycle, one sqlite commit each, no logic: the
  practical ceiling of this transport on this machine.
- adaptive_runner: the real DatabaseManager (claim, heartbeat, done).
- adaptive-scheduler (if installed): its own DatabaseManager driven through its equivalent
  lifecycle, a "start" request (which hands out a learner) and a "stop" request; two round
  trips of cloudpickled tuples over plain TCP (it has no heartbeat and no CURVE).

    python benchmarks/bench_database.py           # 1k, 10k, 100k learners; 1 and 32 clients
    python benchmarks/bench_database.py --quick   # 1k and 10k learners, fewer lifecycles
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import socket as socket_module
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import zmq

from adaptive_runner.common.auth import create_keys, load_keys
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.manager.database_manager import DatabaseManager
from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable

TARGETS = {"one_client_per_s": 1000, "many_clients_per_s": 2000, "size_ratio": 1.5, "p99_ms": 50}
CLIENT_PROCESSES = 4
ARRAY = "1"  # the array the clients' tasks are of, recorded as the job manager does
TASKS_PER_PROCESS = 1_000_000  # each client process's tasks: ARRAY_<first>, <first + 1>, ...
HAVE_ADAPTIVE_SCHEDULER = importlib.util.find_spec("adaptive_scheduler") is not None


def fnames_of(run_path: str, n: int) -> list[str]:
    return [str(Path(run_path) / "data" / f"{i}.pickle") for i in range(n)]


# --- server processes (each prints its url, then serves until stdin closes) ---


def serve(run_path: str) -> None:
    """The real DatabaseManager."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    manager = DatabaseManager(RunDir(run_path), schedulers=[Local()])
    print(manager.start(), flush=True)
    sys.stdin.read()
    manager.stop()


def serve_bare(run_path: str) -> None:
    """JSON in, one sqlite commit, JSON out; no validation, no logic, no batching."""
    run_dir = RunDir(run_path)
    keys = load_keys(run_dir.keys_dir)
    conn = sqlite3.connect(run_dir.path / "bare.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO t VALUES (0, 0)")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.curve_server = True
    router.curve_secretkey = keys.server_secret
    router.curve_publickey = keys.server_public
    print(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}", flush=True)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    while router in dict(poller.poll()):  # otherwise stdin became readable: it was closed
        *envelope, body = router.recv_multipart()
        request = json.loads(body)
        conn.execute("UPDATE t SET v = v + 1 WHERE k = 0")  # autocommit: one commit
        router.send_multipart([*envelope, json.dumps({"ok": True, "op": request["op"]}).encode()])
    context.destroy(linger=0)


class _NoScheduler:
    """What adaptive-scheduler's DatabaseManager asks of a scheduler while serving requests."""

    _JOB_ID_VARIABLE = "${JOB_ID}"

    def sanatize_job_id(self, job_id: str) -> str:
        return job_id

    def output_fnames(self, job_name: str) -> list[Path]:
        return [Path(f"{job_name}-{self._JOB_ID_VARIABLE}.out")]


def serve_adaptive_scheduler(run_path: str, n_learners: int) -> None:
    """adaptive-scheduler's DatabaseManager, with every learner submitted (pending) already."""
    reference = importlib.import_module("adaptive_scheduler._server_support.database_manager")

    with socket_module.socket() as probe:  # a free port: it binds a fixed url itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    manager = reference.DatabaseManager(
        url,
        _NoScheduler(),
        Path(run_path) / "db.json",
        learners=[],
        fnames=fnames_of(run_path, n_learners),
    )
    manager.create_empty_db()  # what start() does, minus pickling the learners
    # As its job manager does before jobs start: every learner submitted under one job name.
    database = manager._db  # noqa: SLF001 - driving the reference's internals on purpose
    assert database is not None
    database.update({"job_name": "bench", "is_pending": True})
    print(url, flush=True)

    async def until_stdin_closes() -> None:
        task = asyncio.create_task(manager._manage())  # noqa: SLF001 - its serving loop
        await asyncio.to_thread(sys.stdin.read)
        task.cancel()

    asyncio.run(until_stdin_closes())


# --- client processes ---


class Lifecycles:
    """DEALER clients, each looping through lifecycles until a shared budget is spent."""

    def __init__(self, sockets: list[zmq.Socket[bytes]], tag: str, budget: int) -> None:
        self.sockets = sockets
        self.tag = tag
        self.remaining = budget
        self.count = 0
        self.task: dict[zmq.Socket[bytes], str] = {}
        self.state: dict[zmq.Socket[bytes], Any] = {}
        self.started: dict[zmq.Socket[bytes], float] = {}
        self.latencies: list[float] = []

    def first(self, socket: zmq.Socket[bytes]) -> bytes:
        """The first request of a lifecycle."""
        raise NotImplementedError

    def next(self, socket: zmq.Socket[bytes], reply: bytes) -> bytes | None:
        """The next request, or None when the lifecycle is complete."""
        raise NotImplementedError

    def begin(self, socket: zmq.Socket[bytes]) -> bool:
        if self.remaining == 0:
            return False
        self.remaining -= 1
        self.count += 1
        self.task[socket] = f"{ARRAY}_{int(self.tag) + self.count}"  # tag: its first index
        self.started[socket] = time.perf_counter()
        socket.send_multipart([b"", self.first(socket)])
        return True

    def run(self) -> tuple[float, float]:
        poller = zmq.Poller()
        for socket in self.sockets:
            poller.register(socket, zmq.POLLIN)
        start = time.perf_counter()
        active = sum(self.begin(socket) for socket in self.sockets)
        while active:
            for socket, _ in poller.poll():
                request = self.next(socket, socket.recv_multipart()[-1])
                if request is not None:
                    socket.send_multipart([b"", request])
                    continue
                self.latencies.append(time.perf_counter() - self.started[socket])
                active -= not self.begin(socket)
        return start, time.perf_counter()


class RunnerLifecycles(Lifecycles):
    """claim -> heartbeat -> done against adaptive_runner's DatabaseManager."""

    def request(self, socket: zmq.Socket[bytes], op: str, **fields: object) -> bytes:
        self.state[socket] = (op, fields.get("learner"))
        return json.dumps({"v": 1, "op": op, "task": self.task[socket]} | fields).encode()

    def first(self, socket: zmq.Socket[bytes]) -> bytes:
        return self.request(socket, "claim", host="bench", pid=1, group=0, array=ARRAY)

    def next(self, socket: zmq.Socket[bytes], reply: bytes) -> bytes | None:
        answer = json.loads(reply)
        op, learner = self.state[socket]
        if answer.get("ok") is not True or (op != "claim" and answer != {"ok": True}):
            raise RuntimeError(f"{op} failed: {answer}")
        if op == "claim":
            learner = answer["learner"]
            return self.request(
                socket, "heartbeat", learner=learner, npoints=10, loss=0.5, cpu=99.0, memory=1
            )
        if op == "heartbeat":
            return self.request(socket, "done", learner=learner, npoints=10, loss=0.1)
        return None


class BareLifecycles(Lifecycles):
    """Three JSON round trips against serve_bare."""

    def first(self, socket: zmq.Socket[bytes]) -> bytes:
        self.state[socket] = 1
        return json.dumps({"v": 1, "op": "claim", "task": self.task[socket]}).encode()

    def next(self, socket: zmq.Socket[bytes], reply: bytes) -> bytes | None:
        json.loads(reply)
        step = int(self.state[socket])
        if step == 3:
            return None
        self.state[socket] = step + 1
        op = ("heartbeat", "done")[step - 1]
        return json.dumps({"v": 1, "op": op, "task": self.task[socket]}).encode()


class ReferenceLifecycles(Lifecycles):
    """start -> stop against adaptive-scheduler's DatabaseManager (cloudpickled tuples).

    Its replies are pickles; they are matched against the pickles of the known file names,
    never unpickled.
    """

    def __init__(self, sockets: list[zmq.Socket[bytes]], tag: str, budget: int, run_path: str):
        super().__init__(sockets, tag, budget)
        import cloudpickle  # noqa: PLC0415 - only where the reference is measured

        self.dumps: Callable[[object], bytes] = cloudpickle.dumps
        n = int(Path(run_path, "n_learners").read_text())
        self.fname_of = {self.dumps(f): f for f in fnames_of(run_path, n)}
        self.none = self.dumps(None)

    def first(self, socket: zmq.Socket[bytes]) -> bytes:
        self.state[socket] = "start"
        return self.dumps(("start", self.task[socket], "bench.log", "bench"))

    def next(self, socket: zmq.Socket[bytes], reply: bytes) -> bytes | None:
        if self.state[socket] == "start":
            if reply not in self.fname_of:
                raise RuntimeError(f"start got no file name: {reply[:200]!r}")
            self.state[socket] = "stop"
            return self.dumps(("stop", self.fname_of[reply]))
        if reply != self.none:
            raise RuntimeError(f"stop failed: {reply[:200]!r}")
        return None


def run_clients(
    kind: str, run_path: str, url: str, *, n_sockets: int, budget: int, tag: str
) -> None:
    """Connect, say ready, wait for go, run ``budget`` lifecycles, print the timings as JSON."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    keys = load_keys(RunDir(run_path).keys_dir)
    sockets = []
    for _ in range(n_sockets):
        socket = context.socket(zmq.DEALER)
        socket.linger = 0
        if kind != "reference":
            socket.curve_secretkey = keys.client_secret
            socket.curve_publickey = keys.client_public
            socket.curve_serverkey = keys.server_public
        socket.connect(url)
        sockets.append(socket)
    if kind == "runner":
        for socket in sockets:  # finish the CURVE handshakes before the clock starts
            socket.send_multipart([b"", b'{"v":1,"op":"status"}'])
            socket.recv_multipart()
    lifecycles: Lifecycles
    if kind == "runner":
        lifecycles = RunnerLifecycles(sockets, tag, budget)
    elif kind == "bare":
        lifecycles = BareLifecycles(sockets, tag, budget)
    else:
        lifecycles = ReferenceLifecycles(sockets, tag, budget, run_path)
    print("ready", flush=True)
    sys.stdin.readline()
    start, end = lifecycles.run()
    context.destroy(linger=0)
    print(json.dumps({"start": start, "end": end, "latencies": lifecycles.latencies}), flush=True)


# --- orchestration ---


def _spawn(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _combine(results: list[dict[str, object]]) -> dict[str, float]:
    latencies = sorted(x for r in results for x in r["latencies"])  # type: ignore[attr-defined]
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)  # type: ignore[type-var, operator]
    return {
        "n": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def bench_once(
    kind: str, base: Path, n_learners: int, n_clients: int, *, lifecycles: int
) -> dict[str, float]:
    """One measurement on a fresh run directory."""
    run_dir = RunDir(tempfile.mkdtemp(dir=base))
    create_keys(run_dir.keys_dir)
    (run_dir.path / "n_learners").write_text(str(n_learners))
    if kind == "runner":
        fnames = fnames_of(str(run_dir.path), n_learners)
        with Database.create(run_dir.database, fnames, dependencies={}, max_fails=3) as db:
            n_tasks = CLIENT_PROCESSES * TASKS_PER_PROCESS
            db.record_array(ARRAY, n_tasks=n_tasks, script="", now=time.time())
    server_args = {
        "runner": ["--serve", run_dir.path],
        "bare": ["--serve-bare", run_dir.path],
        "reference": ["--serve-reference", run_dir.path, n_learners],
    }[kind]
    server = _spawn(*server_args)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        n_procs = min(n_clients, CLIENT_PROCESSES)
        clients = [
            _spawn(
                "--clients",
                kind,
                run_dir.path,
                url,
                n_clients // n_procs + (i < n_clients % n_procs),
                lifecycles // n_procs + (i < lifecycles % n_procs),
                i * TASKS_PER_PROCESS,
            )
            for i in range(n_procs)
        ]
        for proc in clients:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process failed to start")
        for proc in clients:  # go, all together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in clients:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"a client process exited with {proc.returncode}")
            results.append(json.loads(out))
        return _combine(results)
    finally:
        server.communicate("")


def bench(
    kind: str, base: Path, n_learners: int, n_clients: int, *, lifecycles: int, repeat: int
) -> dict[str, float]:
    """The run with the median rate out of ``repeat``."""
    runs = [
        bench_once(kind, base, n_learners, n_clients, lifecycles=lifecycles) for _ in range(repeat)
    ]
    return sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]


Row = tuple[str, int | None, int, dict[str, float]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k learners, 300 lifecycles")
    parser.add_argument("--repeat", type=int, help="runs per scenario (default 3, quick 1)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", help=argparse.SUPPRESS)
    parser.add_argument("--serve-reference", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--clients", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    elif args.serve_bare:
        serve_bare(args.serve_bare)
    elif args.serve_reference:
        serve_adaptive_scheduler(args.serve_reference[0], int(args.serve_reference[1]))
    elif args.clients:
        kind, path, url, k, budget, tag = args.clients
        run_clients(kind, path, url, n_sockets=int(k), budget=int(budget), tag=tag)
    else:
        compare(quick=args.quick, repeat=args.repeat or (1 if args.quick else 3))


def compare(*, quick: bool, repeat: int) -> None:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    lifecycles = 300 if quick else 1_000
    # adaptive-scheduler slows down a lot with size (it scans its list and rewrites its JSON
    # file): fewer lifecycles and a single run keep the comparison to a few minutes.
    reference_lifecycles = {1_000: 300, 10_000: 100, 100_000: 32}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
        base = Path(tmp)
        rows.append(
            ("bare loop", None, 1, bench("bare", base, 1, 1, lifecycles=lifecycles, repeat=repeat))
        )
        for n_learners in sizes:
            for n_clients in (1, 32):
                result = bench(
                    "runner", base, n_learners, n_clients, lifecycles=lifecycles, repeat=repeat
                )
                rows.append(("adaptive_runner", n_learners, n_clients, result))
                if HAVE_ADAPTIVE_SCHEDULER:
                    result = bench(
                        "reference",
                        base,
                        n_learners,
                        n_clients,
                        lifecycles=reference_lifecycles[n_learners] // (3 if quick else 1),
                        repeat=1,
                    )
                    rows.append(("adaptive-scheduler", n_learners, n_clients, result))
    print_table(rows)
    if not HAVE_ADAPTIVE_SCHEDULER:
        print(
            "\nadaptive-scheduler is not installed: comparison skipped "
            "(pip install adaptive-scheduler to include it)"
        )
    check(rows, sizes)


def print_table(rows: list[Row]) -> None:
    print(f"\nlifecycles through the database manager ({os.cpu_count()} cores, median run)")
    print(
        f"{'server':<19} {'learners':>9} {'clients':>8} {'lifecycles':>10} {'per s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>8} {'ours/theirs':>11}"
    )
    ours = {(n, k): r for name, n, k, r in rows if name == "adaptive_runner"}
    for name, n_learners, n_clients, r in rows:
        size = "-" if n_learners is None else f"{n_learners:,}"
        ratio = ""
        if name == "adaptive-scheduler":
            ratio = f"{ours[n_learners, n_clients]['per_s'] / r['per_s']:.1f}x"
        print(
            f"{name:<19} {size:>9} {n_clients:>8} {r['n']:>10.0f} {r['per_s']:>8.0f} "
            f"{r['p50_ms']:>7.2f} {r['p99_ms']:>8.2f} {ratio:>11}"
        )


def check(rows: list[Row], sizes: list[int]) -> None:
    """Print each target with the measured value and whether it was met."""
    ours = {(n, k): r for name, n, k, r in rows if name == "adaptive_runner"}
    one = min(ours[n, 1]["per_s"] for n in sizes)
    many = min(ours[n, 32]["per_s"] for n in sizes)
    ratio = max(ours[sizes[0], k]["per_s"] / ours[sizes[-1], k]["per_s"] for k in (1, 32))
    p99 = max(ours[n, 32]["p99_ms"] for n in sizes)
    print()
    for label, value, ok in [
        (
            f"one client, slowest size >= {TARGETS['one_client_per_s']}/s",
            f"{one:.0f}/s",
            one >= TARGETS["one_client_per_s"],
        ),
        (
            f"32 clients, slowest size >= {TARGETS['many_clients_per_s']}/s",
            f"{many:.0f}/s",
            many >= TARGETS["many_clients_per_s"],
        ),
        (
            f"cost at {sizes[-1]:,} / cost at {sizes[0]:,} <= {TARGETS['size_ratio']}",
            f"{ratio:.2f}",
            ratio <= TARGETS["size_ratio"],
        ),
        (f"p99 with 32 clients < {TARGETS['p99_ms']} ms", f"{p99:.1f} ms", p99 < TARGETS["p99_ms"]),
    ]:
        print(f"{'met ' if ok else 'MISS'}  {label}: {value}")


if __name__ == "__main__":
    main()
