"""A simulated large run against the real DatabaseManager: heartbeats, a claim burst, churn.

N array tasks hold learners (10,000 and 100,000) and send heartbeats at N / log_interval
(60 s: 167/s and 1,667/s). Phases, each measured on the server process (CPU over the phase
from /proc through psutil, per thread too; RSS at its end) and per request on the clients
(latency p50/p99 by operation):

- idle: the server with nothing to do (its 100 ms poll, the 1 s file check and checkpoint);
- heartbeat: the N tasks' heartbeats only;
- burst: a new array of 10,000 tasks all claim at once, each on a fresh socket of its own (a
  TCP connection, a CURVE handshake and a ZAP check each, as a new job's first request),
  while the heartbeats go on; its time runs from the go to the last reply;
- churn: tasks finish their learner (``done``) and claim the next one at N / ``--churn-period``
  per second (default 600 s: each task a learner every 10 minutes), heartbeats going on;
- flood: heartbeats as fast as the server answers them (``--window`` in flight per client
  process): the most this server takes on this machine, the ceiling of N / log_interval.

How it is simulated (2 cores, 20,000 file descriptors per process, ~28,000 ephemeral ports per
address): the server is the real DatabaseManager (CURVE, ZAP, sqlite) in its own process, as
in bench_database. The N running tasks are recorded as holding learners directly in the
database before the server starts (their claims cost what the burst's cost), under an array
recorded as the job manager records one (``Database.record_array``); unrecorded arrays would
get ``unknown_task``. Their requests are multiplexed over ``--sockets`` DEALER sockets per
client process: the server knows a task by the ``task`` field of each message, not by its
connection, and an extra envelope frame matches replies to requests (64 connections: the
server counts 50 or more in a second as many jobs, see ``is_busy``). Real jobs hold one
connection each; 100,000 CURVE connections do not fit in one process here (file descriptors,
ports), so their memory is measured per connection on the burst's 10,000 and extrapolated.
The client processes share the 2 cores with the server, so latencies include client
scheduling delay; the server's CPU time per operation (over the phase, minus the idle rate,
per request) is what larger runs are extrapolated from. ``--profile FILE`` writes a cProfile
(in thread CPU time) of the serving thread.

    python benchmarks/bench_scale.py            # 10,000 and 100,000 tasks; ~3.5 min
    python benchmarks/bench_scale.py --quick    # 10,000 tasks, short phases; < 1 min
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import structlog
import zmq
from bench_database import fnames_of

from adaptive_runner.common.auth import create_keys, load_keys
from adaptive_runner.common.protocol import Claim, Done, Heartbeat, encode_request
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.manager.database_manager import DatabaseManager
from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database

TARGETS = {"cpu_percent": 25.0, "p99_ms": 50.0, "burst_s": 10.0}
LOG_INTERVAL_S = 60.0
BURST = 10_000
HOLD_ARRAY, BURST_ARRAY = "1000", "2000"
RID = struct.Struct("<I")  # the extra envelope frame that matches a reply to its request
PHASES = ("idle", "heartbeat", "burst", "churn", "flood")


def task_id(array: str, i: int) -> str:
    return f"{array}_{i}"


# --- the server process ---


def serve(run_path: str, profile: str) -> None:
    """bench_database's server, plus the ids of its threads; ``profile``: a file, or "-"."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if profile != "-":
        serve_requests = DatabaseManager._serve  # noqa: SLF001 - profiling its serving thread

        def profiled(self: DatabaseManager, *args: Any) -> None:
            profiler = cProfile.Profile(time.thread_time)  # CPU time, not waiting
            try:
                profiler.runcall(serve_requests, self, *args)
            finally:
                profiler.dump_stats(profile)

        DatabaseManager._serve = profiled  # type: ignore[method-assign]  # noqa: SLF001
    manager = DatabaseManager(RunDir(run_path), schedulers=[Local()])
    print(manager.start(), flush=True)
    print(json.dumps({t.native_id: t.name for t in threading.enumerate()}), flush=True)
    sys.stdin.read()
    manager.stop()


def thread_label(name: str) -> str:
    """A server thread by its Python name or libzmq's comm: what kind of work it does."""
    if name.startswith("ZMQbg/IO"):
        return "zmq-io"  # TCP, CURVE encryption and handshakes
    kinds = {"database-manager": "serve", "database-checkpoints": "checkpoint"}
    return kinds.get(name, "zap" if "zap" in name.lower() else "other")


# --- client processes ---


def curve_socket(context: zmq.Context[zmq.Socket[bytes]], keys: Any, url: str) -> zmq.Socket[bytes]:
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.curve_secretkey = keys.client_secret
    socket.curve_publickey = keys.client_public
    socket.curve_serverkey = keys.server_public
    socket.connect(url)
    return socket


class Steady:
    """Tasks ``lo..hi`` (task i holds learner i at first) on a schedule, told what by stdin.

    ``go``: heartbeats at ``hb_rate``; ``churn R``: also done + the next claim at R/s;
    ``flood W``: only heartbeats, W in flight; ``stop``.
    """

    def __init__(self, sockets: list[zmq.Socket[bytes]], lo: int, hi: int, hb_rate: float) -> None:
        self.sockets = sockets
        self.tasks = list(range(lo, hi))
        self.held: dict[int, int | None] = {i: i for i in self.tasks}  # None: between learners
        self.hb_interval = 1.0 / hb_rate
        self.churn_interval = math.inf
        self.flooding = False
        self.hb_cursor, self.churn_cursor = 0, len(self.tasks) // 2  # apart from each other
        self.pending: dict[int, tuple[str, int, float]] = {}  # rid -> (op, task, sent)
        self.records: dict[str, list[tuple[float, float]]] = {}  # op -> [(sent, latency)]
        self.next_rid = 0
        self.lag = 0.0  # the furthest this process fell behind its schedule

    def send(self, op: str, i: int, body: bytes) -> None:
        rid = self.next_rid
        self.next_rid += 1
        self.pending[rid] = (op, i, time.monotonic())
        self.sockets[i % len(self.sockets)].send_multipart([RID.pack(rid), b"", body])

    def next_heartbeat(self) -> None:
        i = self.tasks[self.hb_cursor % len(self.tasks)]
        self.hb_cursor += 1
        learner = self.held[i]
        if learner is not None:  # None: done sent, the next claim not answered yet
            hb = Heartbeat(task_id(HOLD_ARRAY, i), learner, 100, 0.5, 99.0, 2**28)
            self.send("heartbeat", i, encode_request(hb))

    def next_done(self) -> None:
        i = self.tasks[self.churn_cursor % len(self.tasks)]
        self.churn_cursor += 1
        learner = self.held[i]
        if learner is not None:
            self.held[i] = None
            self.send("done", i, encode_request(Done(task_id(HOLD_ARRAY, i), learner, 200, 0.01)))

    def received(self, frames: list[bytes]) -> None:
        (rid,) = RID.unpack(frames[0])
        op, i, sent = self.pending.pop(rid)
        self.records.setdefault(op, []).append((sent, time.monotonic() - sent))
        reply = json.loads(frames[-1])
        if op == "claim":
            if not reply.get("ok"):
                raise RuntimeError(f"claim of task {i} failed: {reply}")
            self.held[i] = reply["learner"]
        elif reply != {"ok": True}:
            raise RuntimeError(f"{op} of task {i} failed: {reply}")
        elif op == "done":
            claim = Claim(task_id(HOLD_ARRAY, i), "node", 1, 0, HOLD_ARRAY)
            self.send("claim", i, encode_request(claim))
        elif self.flooding:
            self.next_heartbeat()

    def command(self, line: list[str]) -> bool:
        """Act on one command line; False on ``stop``."""
        if line[0] == "stop":
            return False
        if line[0] == "churn":
            self.churn_interval = 1.0 / float(line[1])
        elif line[0] == "flood":
            self.hb_interval = self.churn_interval = math.inf
            self.flooding = True
            for _ in range(int(line[1])):
                self.next_heartbeat()
        return True

    def run(self, commands: Any) -> None:
        poller = zmq.Poller()
        for socket in self.sockets:
            poller.register(socket, zmq.POLLIN)
        poller.register(commands, zmq.POLLIN)
        next_hb, next_churn = time.monotonic(), math.inf
        while True:
            now = time.monotonic()
            self.lag = max(self.lag, now - min(next_hb, next_churn))
            while next_hb <= now:
                self.next_heartbeat()
                next_hb += self.hb_interval
            while next_churn <= now:
                self.next_done()
                next_churn += self.churn_interval
            wait_s = min(next_hb, next_churn, time.monotonic() + 1) - time.monotonic()
            for socket, _ in poller.poll(max(0, math.ceil(1000 * wait_s))):
                if not isinstance(socket, zmq.Socket):  # stdin: a command
                    if not self.command(commands.readline().split()):
                        return
                    next_churn = time.monotonic() + self.churn_interval
                    if self.flooding:
                        next_hb = math.inf
                    continue
                while socket.get(zmq.EVENTS) & zmq.POLLIN:
                    self.received(socket.recv_multipart())


def run_steady(path: str, url: str, *, j: int, k: int, n_tasks: int, n_sockets: int) -> None:
    """Client process j of k: tasks j/k..(j+1)/k of ``n_tasks``, over ``n_sockets``."""
    gc.disable()  # a full collection over the records would stall the clock for 100s of ms
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    keys = load_keys(RunDir(path).keys_dir)
    sockets = [curve_socket(context, keys, url) for _ in range(n_sockets)]
    for socket in sockets:  # handshakes done before the clock starts
        socket.send_multipart([b"x", b"", b'{"v":1,"op":"status"}'])
        socket.recv_multipart()
    steady = Steady(sockets, n_tasks * j // k, n_tasks * (j + 1) // k, n_tasks / LOG_INTERVAL_S / k)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    steady.run(sys.stdin)
    deadline = time.monotonic() + 10  # the replies still on their way
    while steady.pending and time.monotonic() < deadline:
        for socket in sockets:
            while socket.poll(0) and steady.pending:
                steady.received(socket.recv_multipart())
        time.sleep(0.001)
    context.destroy(linger=0)
    print(json.dumps({"records": steady.records, "lag": steady.lag}), flush=True)


def run_burst(path: str, url: str, j: int, k: int) -> None:
    """On ``go``: a fresh socket for each task j/k..(j+1)/k of the burst array, each claims.

    The sockets stay connected (as running jobs' do) until stdin closes.
    """
    gc.disable()
    lo, hi = BURST * j // k, BURST * (j + 1) // k
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.max_sockets = hi - lo + 100
    keys = load_keys(RunDir(path).keys_dir)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    sockets, sent = [], []
    for i in range(lo, hi):
        socket = curve_socket(context, keys, url)
        sent.append(time.monotonic())
        claim = Claim(task_id(BURST_ARRAY, i), "node", 1, 0, BURST_ARRAY)
        socket.send_multipart([b"", encode_request(claim)])
        sockets.append(socket)
    # A poller over thousands of sockets costs O(sockets) per call: sweep the waiting ones.
    records: list[tuple[float, float]] = []
    waiting = list(range(len(sockets)))
    while waiting:
        still = []
        for i in waiting:
            if not sockets[i].get(zmq.EVENTS) & zmq.POLLIN:
                still.append(i)
                continue
            reply = json.loads(sockets[i].recv_multipart()[-1])
            if not reply.get("ok"):
                raise RuntimeError(f"burst claim failed: {reply}")
            records.append((sent[i], time.monotonic() - sent[i]))
        waiting = still
        time.sleep(0.001 if waiting else 0)
    print(json.dumps({"start": start, "records": records}), flush=True)
    sys.stdin.read()
    context.destroy(linger=0)


# --- orchestration ---


def _spawn(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _tell(procs: list[subprocess.Popen[str]], line: str) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()


def _readline(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline()


def setup(path: Path, n_tasks: int, n_learners: int) -> dict[str, float]:
    """Keys, a state.sqlite of ``n_learners``, both arrays recorded, tasks 0..n-1 holding."""
    run_dir = RunDir(path)
    create_keys(run_dir.keys_dir)
    start = time.perf_counter()
    db = Database.create(
        run_dir.database, fnames_of(str(path), n_learners), dependencies={}, max_fails=3
    )
    created = time.perf_counter() - start
    size_created = run_dir.database.stat().st_size
    now = time.time()
    db.record_array(HOLD_ARRAY, n_tasks=n_tasks, script="", now=now)
    db.record_array(BURST_ARRAY, n_tasks=BURST, script="", now=now)
    for lo in range(0, n_tasks, 10_000):
        with db.batch():
            for i in range(lo, min(lo + 10_000, n_tasks)):
                a = db.claim(task_id(HOLD_ARRAY, i), host="node", pid=1, now=now, array=HOLD_ARRAY)
                if a is None or a.learner != i:
                    raise RuntimeError(f"task {i} got {a}, not learner {i}")
    db.close()
    return {"create_s": created, "size_created": size_created}


class Server:
    """The real DatabaseManager in its own process, measured through psutil."""

    def __init__(self, path: Path, profile: str) -> None:
        self.proc = _spawn("--serve", path, profile)
        self.url = _readline(self.proc).strip()
        self.names = {int(k): v for k, v in json.loads(_readline(self.proc)).items()}
        self.ps = psutil.Process(self.proc.pid)
        self.labels: dict[int, str] = {}

    def label(self, tid: int) -> str:
        if tid not in self.labels:  # libzmq names its threads once they run: ask late
            comm = Path(f"/proc/{self.proc.pid}/task/{tid}/comm").read_text().strip()
            self.labels[tid] = thread_label(self.names.get(tid, comm))
        return self.labels[tid]

    def sample(self) -> tuple[float, float, dict[str, float]]:
        """Now, the process's CPU seconds, and those of each kind of thread."""
        times = self.ps.cpu_times()
        by_kind: dict[str, float] = {}
        for thread in self.ps.threads():
            kind = self.label(thread.id)
            by_kind[kind] = by_kind.get(kind, 0.0) + thread.user_time + thread.system_time
        return time.monotonic(), times.user + times.system, by_kind

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def stop(self) -> None:
        self.proc.communicate("")


def scenario(base: Path, n_tasks: int, args: Any) -> dict[str, Any]:
    """One simulated run of ``n_tasks``; returns its measurements."""
    path = Path(tempfile.mkdtemp(dir=base))
    churn_rate = n_tasks / args.churn_period
    n_learners = n_tasks + BURST + math.ceil(churn_rate * args.seconds * 1.5) + 1000
    print(f"{n_tasks:,} tasks holding learners, {n_learners:,} learners:", flush=True)
    result: dict[str, Any] = {"n_tasks": n_tasks, "n_learners": n_learners, "phases": {}}
    result |= setup(path, n_tasks, n_learners)
    server = Server(path, args.profile or "-")
    k = args.clients
    steady = [_spawn("--steady", path, server.url, j, k, n_tasks, args.sockets) for j in range(k)]
    burst = [_spawn("--burst", path, server.url, j, k) for j in range(k)]
    try:
        for proc in steady + burst:
            if _readline(proc).strip() != "ready":
                raise RuntimeError("a client process failed to start")

        def measure(name: str, seconds: float = 0.0, act: Any = None) -> None:
            t0, c0, threads0 = server.sample()
            act() if act is not None else time.sleep(seconds)
            t1, c1, threads1 = server.sample()
            phase = {
                "start": t0,
                "end": t1,
                "cpu_s": c1 - c0,
                "threads": {kind: s - threads0.get(kind, 0.0) for kind, s in threads1.items()},
                "rss_mb": server.rss_mb(),
            }
            result["phases"][name] = phase
            print(f"  {name}: {t1 - t0:.1f} s, server CPU {100 * (c1 - c0) / (t1 - t0):.1f}%")

        def claim_burst() -> None:
            _tell(burst, "go")
            result["burst"] = [json.loads(_readline(proc)) for proc in burst]

        measure("idle", 2.0)
        _tell(steady, "go")
        measure("heartbeat", args.seconds)
        measure("burst", act=claim_burst)
        _tell(steady, f"churn {churn_rate / k}")
        measure("churn", args.seconds)
        _tell(steady, f"flood {args.window}")
        measure("flood", min(args.seconds, 10.0))
        _tell(steady, "stop")
        result["steady"] = [json.loads(proc.communicate()[0]) for proc in steady]
    finally:
        for proc in steady + burst:
            if proc.poll() is None:
                proc.communicate("")
        server.stop()
    database = RunDir(path).database
    result["size_end"] = database.stat().st_size
    wal = database.with_name(database.name + "-wal")
    result["wal_end"] = wal.stat().st_size if wal.exists() else 0
    return result


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def analyse(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per phase: seconds, server CPU and RSS, and per operation its latencies and CPU cost.

    Cost per operation: the phase's server CPU seconds minus the idle rate, per request; in
    the burst and churn phases the heartbeats' share (at the heartbeat phase's cost) is taken
    off first, and a churn ``done`` is charged with the claim that follows it.
    """
    phases = result["phases"]
    idle_rate = phases["idle"]["cpu_s"] / (phases["idle"]["end"] - phases["idle"]["start"])
    by_op: dict[str, list[tuple[float, float]]] = {}
    for out in result["steady"]:
        for op, records in out["records"].items():
            by_op.setdefault(op, []).extend(records)
    burst_records = [r for out in result["burst"] for r in out["records"]]
    rows, hb_cost = [], 0.0
    for name in PHASES:
        phase = phases[name]
        seconds = phase["end"] - phase["start"]
        ops = {
            op: [lat for sent, lat in records if phase["start"] <= sent < phase["end"]]
            for op, records in by_op.items()
        }
        if name == "burst":
            ops["claim (new socket)"] = [lat for _, lat in burst_records]
        work = phase["cpu_s"] - idle_rate * seconds
        n_hb = len(ops.get("heartbeat", []))
        if name in ("heartbeat", "flood") and n_hb:
            hb_cost = work / n_hb
        costs = {"heartbeat": hb_cost, "claim (new socket)": None, "done": None}
        if name == "burst":
            costs["claim (new socket)"] = (work - hb_cost * n_hb) / BURST
        if name == "churn" and ops.get("done"):
            costs["done"] = (work - hb_cost * n_hb) / len(ops["done"])
        row: dict[str, Any] = {
            "phase": name,
            "seconds": seconds,
            "cpu_percent": 100 * phase["cpu_s"] / seconds,
            "threads": {k: 100 * v / seconds for k, v in sorted(phase["threads"].items())},
            "rss_mb": phase["rss_mb"],
            "ops": {
                op: {
                    "n": len(lats),
                    "per_s": len(lats) / seconds,
                    "p50_ms": 1000 * statistics.median(lats),
                    "p99_ms": _p(lats, 0.99),
                    "cpu_us": None if costs.get(op) is None else 1e6 * costs[op],  # type: ignore[operator]
                }
                for op, lats in sorted(ops.items())
                if lats
            },
        }
        if name == "burst":
            start = min(out["start"] for out in result["burst"])
            row["burst_s"] = max(sent + lat for sent, lat in burst_records) - start
        rows.append(row)
    return rows


def report(results: list[dict[str, Any]]) -> None:
    print(f"\nsimulated run against the DatabaseManager ({os.cpu_count()} cores, one run each)")
    print(
        f"{'tasks':>7} {'phase':<9} {'secs':>5} {'CPU %':>6} {'RSS MB':>6}  {'operation':<18}"
        f" {'count':>7} {'per s':>6} {'p50 ms':>7} {'p99 ms':>8} {'CPU us/op':>9}"
    )
    for result in results:
        rows = analyse(result)
        for row in rows:
            head = (
                f"{result['n_tasks']:>7,} {row['phase']:<9} {row['seconds']:>5.1f}"
                f" {row['cpu_percent']:>6.1f} {row['rss_mb']:>6.0f}"
            )
            if not row["ops"]:
                print(head)
            for op, r in row["ops"].items():
                cost = "" if r["cpu_us"] is None else f"{r['cpu_us']:.0f}"
                print(
                    f"{head}  {op:<18} {r['n']:>7,} {r['per_s']:>6.0f} {r['p50_ms']:>7.2f}"
                    f" {r['p99_ms']:>8.2f} {cost:>9}"
                )
                head = " " * len(head)
        result["rows"] = rows
    for result in results:
        n, rows = result["n_tasks"], {row["phase"]: row for row in result["rows"]}
        print(f"\n{n:,} tasks:")
        print("  server CPU by thread, % of one core:")
        for name, row in rows.items():
            split = ", ".join(f"{k} {v:.1f}" for k, v in row["threads"].items() if v >= 0.05)
            print(f"    {name:<9} {split}")
        burst = rows["burst"]
        added = burst["rss_mb"] - rows["heartbeat"]["rss_mb"]
        print(
            f"  burst of {BURST:,} claims on new connections served in {burst['burst_s']:.2f} s;"
            f" server RSS +{added:.0f} MB = {added * 2**20 / BURST / 1024:.0f} KiB per connection"
        )
        learners = result["n_learners"]
        print(
            f"  state.sqlite: {result['size_created'] / learners:.0f} B per learner when created"
            f" ({learners:,} in {result['create_s']:.1f} s), {result['size_end'] / learners:.0f}"
            f" B at the end ({result['size_end'] / 2**20:.1f} MB, WAL"
            f" {result['wal_end'] / 2**20:.1f} MB)"
        )
        flood = rows["flood"]["ops"]["heartbeat"]
        print(
            f"  flood: {flood['per_s']:,.0f} heartbeats/s at {rows['flood']['cpu_percent']:.0f}%"
            f" server CPU = N {LOG_INTERVAL_S * flood['per_s']:,.0f} at log_interval"
            f" {LOG_INTERVAL_S:g} s"
        )
        lag = max(out["lag"] for out in result["steady"])
        print(f"  the clients fell behind their schedule by at most {1000 * lag:.0f} ms")
    check(results[-1])


def check(result: dict[str, Any]) -> None:
    """The issue's targets, at the largest size run."""
    n, rows = result["n_tasks"], {row["phase"]: row for row in result["rows"]}
    steady = [rows["heartbeat"], rows["churn"]]
    cpu = max(row["cpu_percent"] for row in steady)
    p99 = max(r["p99_ms"] for row in steady for r in row["ops"].values())
    burst = rows["burst"]["burst_s"]
    print()
    for label, value, ok in [
        (f"{n:,} tasks, heartbeats and churn: server CPU < 25%", f"{cpu:.1f}%", cpu < 25),
        (f"{n:,} tasks, heartbeats and churn: p99 < 50 ms", f"{p99:.1f} ms", p99 < 50),
        (f"{BURST:,}-claim burst served < 10 s", f"{burst:.1f} s", burst < 10),
    ]:
        print(f"{'met ' if ok else 'MISS'}  {label}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 tasks, 4 s phases")
    parser.add_argument("--tasks", type=int, nargs="+", help="running tasks (default 10k 100k)")
    parser.add_argument("--seconds", type=float, help="heartbeat and churn phases (default 30)")
    parser.add_argument("--churn-period", type=float, default=600.0, help="s per learner")
    parser.add_argument("--clients", type=int, default=2, help="client processes per role")
    parser.add_argument("--sockets", type=int, default=32, help="sockets per steady client")
    parser.add_argument("--window", type=int, default=256, help="flood: in flight per client")
    parser.add_argument("--profile", help="write a cProfile of the serving thread here")
    parser.add_argument("--json", help="also write the raw measurements here")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--steady", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--burst", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
    elif args.steady:
        path, url, j, k, n, sockets = args.steady
        run_steady(path, url, j=int(j), k=int(k), n_tasks=int(n), n_sockets=int(sockets))
    elif args.burst:
        path, url, j, k = args.burst
        run_burst(path, url, int(j), int(k))
    else:
        args.seconds = args.seconds or (4.0 if args.quick else 30.0)
        sizes = args.tasks or ([10_000] if args.quick else [10_000, 100_000])
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            results = [scenario(Path(tmp), n, args) for n in sizes]
        report(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
