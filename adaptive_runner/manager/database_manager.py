"""The database manager: serves the wire protocol on a CURVE-secured ROUTER socket over sqlite.

Its threads outlive errors: a request that fails gets an ``internal`` error reply, a batch
that cannot commit answers each of its requests so, heartbeats that cannot be written stay
buffered, serving or a checkpoint that raises is tried again, and no error handler can raise
(:func:`~adaptive_runner.manager.logs.log_exception`). What still ends a thread is kept in ``died``.

A claim is answered only for a task of an unfinished array of the run: one of its
``n_tasks`` indices, with a worker rank below the group's ``packed`` workers in a packed
allocation (``123_4@2``). Each ``fail`` and ``release`` of a held learner is logged with
its reason, cut to ``REASON_CHARS``; a ``fail``, ``release`` or ``done`` about a learner its
sender does not hold is answered ``not_owner`` and logged at most once a minute per sender
(:class:`Refusals`), so no client can grow manager.log faster than a bound.
"""

from __future__ import annotations

import math
import resource
import socket
import sqlite3
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Final

import structlog
import zmq
from zmq.utils import z85

from adaptive_runner.common.auth import load_keys
from adaptive_runner.common.protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    Assignment,
    Claim,
    Counts,
    Done,
    ErrorReply,
    Fail,
    HandBack,
    Heartbeat,
    Onward,
    Release,
    Reply,
    Request,
    StageReached,
    Status,
    decode,
    encode_reply,
)
from adaptive_runner.common.task_identity import RANK_SEPARATOR, number_text
from adaptive_runner.common.vocabulary import ReplyCode
from adaptive_runner.errors import ConfigError, ProtocolError, StateFileError
from adaptive_runner.manager.logs import log_exception
from adaptive_runner.schedulers import from_config
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.state.schema import ArrayRow

log = structlog.get_logger("adaptive_runner.database_manager")

_MAX_BATCH: Final = 256  # requests answered per transaction
# The requests that change the state.
_TRANSITIONS: Final = (Claim, StageReached, HandBack, Done, Release, Fail)
_POLL_MS: Final = 100  # how often the serving thread looks at the stop flag
_HEARTBEAT_FLUSH_S: Final = 1.0  # buffered heartbeats reach state.sqlite at least this often
_CHECKPOINT_S: Final = 1.0
_ERROR_PAUSE_S: Final = 1.0  # serving that failed is tried again after this long
# A new array's tasks connect at once. libzmq listens with a backlog of 100 and accepts in the
# thread that also does the CURVE handshakes: the kernel's accept queue fills, it drops SYNs,
# and those are sent again only after 1, 3, 7, 15 s (benchmarks/bench_scale.py, burst). A
# deeper queue (the kernel caps it at net.core.somaxconn) and a second I/O thread, so that
# accepting does not wait for handshakes, keep the connections coming in.
_BACKLOG: Final = 4096
_IO_THREADS: Final = 2
# Under load (thousands of jobs, each request arriving alone) waking the serving thread costs
# about as much as answering the request. A busy server (in the last second, this many
# requests from this many connections: many jobs, not one fast client or a test's few) waits
# a little after a small batch, so that the next poll finds several requests.
_LINGER_S: Final = 0.002
_BUSY_REQUESTS: Final = 500
_BUSY_PEERS: Final = 50
_SMALL_BATCH: Final = 8
# File descriptors this process needs besides one per connected job (sqlite, zmq, logs).
_OTHER_FILES: Final = 256
_MAX_OPEN_FILES: Final = 1 << 20  # asked for when the hard limit is "unlimited"
# Larger messages make libzmq drop the connection; those in between get a bad_request reply.
_MAX_FRAME_BYTES: Final = 2 * MAX_MESSAGE_BYTES
# What manager.log takes of a reason (a traceback's last line; the whole one is in
# state.sqlite), and how often refused fail/release/done messages are logged: once per
# sender per window, and at most REFUSALS_PER_WINDOW lines a window from all senders.
REASON_CHARS: Final = 300
REFUSAL_WINDOW_S: Final = 60.0
REFUSALS_PER_WINDOW: Final = 100
UNRECORDED_REPORT: Final = (
    "a job's report changed nothing: it repeats one recorded, or the job does not hold the "
    "learner (answered not_owner)"
)


class KeyCheck:
    """The ZAP handler (RFC 27): admits a CURVE client only if it has the run's client key.

    libzmq asks it about every handshake on the server's socket and admits the client on a
    200. Its socket is bound when made, before the server's: libzmq admits any key while no
    handler is bound. pyzmq's ThreadAuthenticator ran an asyncio loop and a general policy
    for this, about 0.2 ms of Python per new connection under the GIL the serving thread
    needs: most of the manager's Python work when a new array's jobs connect at once.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], client_public: bytes) -> None:
        self._key = z85.decode(client_public)
        self._stop = threading.Event()
        self._socket = context.socket(zmq.REP)
        self._socket.linger = 0
        self._socket.bind("inproc://zeromq.zap.01")

    def run(self) -> None:
        """Answer until :meth:`stop`; the socket is closed at the end."""
        try:
            while not self._stop.is_set():
                if self._socket.poll(_POLL_MS):
                    self._socket.send_multipart(zap_reply(self._socket.recv_multipart(), self._key))
        finally:
            self._socket.close(linger=0)

    def stop(self) -> None:
        """End :meth:`run` within about 0.1 s."""
        self._stop.set()


def zap_reply(request: list[bytes], key: bytes) -> list[bytes]:
    """The reply to a ZAP request: 200 for a CURVE client with ``key``, 400 for anything else.

    A request is version, request id, domain, address, routing id, mechanism, credentials
    (for CURVE: the client's public key, 32 bytes).
    """
    admitted = request[0:1] == [b"1.0"] and request[5:] == [b"CURVE", key]  # all 7 frames
    request_id = request[1] if len(request) > 1 else b""
    status = (b"200", b"OK") if admitted else (b"400", b"not the run's client key")
    return [b"1.0", request_id, *status, b"", b""]


class DatabaseManager:
    """Hands learners to jobs and records their progress, in a background thread.

    Parameters
    ----------
    run_dir
        The run; its keys authenticate clients and its state.sqlite holds the state.
    bind_host
        The interface to listen on (``0.0.0.0`` to accept jobs from compute nodes).
    url_host
        The host name jobs connect to, when it differs from ``bind_host``.
    expected_jobs
        How many jobs may be connected at once (``max_simultaneous_jobs``): a warning is
        logged if the limit on open files does not leave room for them.
    schedulers
        Each resource group's scheduler, which says what its task ids look like and how
        many workers a packed task runs (the claims are checked against them); default: as
        run.json describes them, read at :meth:`start`.

    Set ``on_change`` to be called, from the serving thread, after a batch in which a learner
    was done or given back: the job manager's wake-up.

    """

    def __init__(
        self,
        run_dir: RunDir,
        *,
        bind_host: str = "127.0.0.1",
        url_host: str | None = None,
        expected_jobs: int = 0,
        schedulers: Sequence[Scheduler] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.bind_host = bind_host
        self.url_host = url_host
        self.expected_jobs = expected_jobs
        self.schedulers = None if schedulers is None else list(schedulers)
        self.url: str | None = None
        self.error: StateFileError | None = None  # why it stopped serving on its own
        self.died: BaseException | None = None  # what ended a thread, if not stop()
        self.on_change: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._key_check: tuple[KeyCheck, threading.Thread] | None = None

    def start(self) -> str:
        """Bind a random port, start serving in a background thread, return the url."""
        if self._threads or self._stop.is_set():
            raise RuntimeError("a DatabaseManager starts once; make a new one")
        keys = load_keys(self.run_dir.keys_dir)
        if keys.server_secret is None:
            raise ConfigError(f"{self.run_dir.keys_dir} has no server.key_secret to serve with")
        open_files = raise_open_files_limit()
        if open_files < self.expected_jobs + _OTHER_FILES:
            log.warning(
                "the limit on open files leaves room for fewer jobs than may run at once: the "
                "others cannot connect; raise it (ulimit -n) before starting Python",
                open_files=open_files,
                max_simultaneous_jobs=self.expected_jobs,
            )
        schedulers = self.schedulers
        if schedulers is None:
            schedulers = [from_config(group) for group in self.run_dir.read_config().groups]
        db = Database.open(self.run_dir.database, auto_checkpoint=False)
        checkpoints = Database.open(self.run_dir.database)
        self._context = context = zmq.Context(io_threads=_IO_THREADS)
        try:
            key_check = KeyCheck(context, keys.client_public)
            socket = context.socket(zmq.ROUTER)
            socket.linger = 0
            socket.maxmsgsize = _MAX_FRAME_BYTES
            socket.backlog = _BACKLOG
            socket.curve_server = True
            socket.curve_secretkey = keys.server_secret
            socket.curve_publickey = keys.server_public
            try:
                port = socket.bind_to_random_port(f"tcp://{self.bind_host}")
            except zmq.ZMQError as e:
                raise ConfigError(
                    f"cannot listen on bind_host={self.bind_host!r}: {e}; give an address of "
                    "this machine, e.g. 0.0.0.0 for all interfaces"
                ) from e
        except BaseException:
            db.close()
            checkpoints.close()
            context.destroy(linger=0)
            self._context = None
            raise
        self.url = f"tcp://{self.url_host or self.bind_host}:{port}"
        # Its own thread, stopped only after the socket it guards is closed (_close_context).
        zap = threading.Thread(target=self._guard, args=(key_check.run,), name="database-zap")
        zap.daemon = True
        zap.start()
        self._key_check = (key_check, zap)
        work = {
            "database-manager": partial(self._serve, socket, Dispatcher(db, schedulers)),
            "database-checkpoints": partial(self._checkpoint, checkpoints),
        }
        self._threads = [
            threading.Thread(target=self._guard, args=(job,), name=name)
            for name, job in work.items()
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        log.info("database manager started", url=self.url, open_files=open_files)
        return self.url

    def stop(self) -> None:
        """Stop serving (within about 0.1 s) and release the socket and the database.

        A stopped manager cannot be started again; make a new one (on a new port).
        """
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._close_context()

    def _close_context(self) -> None:
        if self._key_check is not None:
            key_check, thread = self._key_check
            key_check.stop()
            thread.join()
            self._key_check = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def _guard(self, work: Callable[[], None]) -> None:
        """Do a thread's ``work``; an error that ends it is kept in :attr:`died`, and logged."""
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - kept for RunManager.wait() and the panel
            if self.died is None:
                self.died = e
            log_exception(
                log,
                "the database manager stopped on an error; resume the run",
                thread=threading.current_thread().name,
            )

    def _checkpoint(self, db: Database) -> None:
        """Copy the WAL into the file every second, so that no request waits for it.

        Each checkpoint checks the file first: one that fails ends them (serving notices too).
        """
        try:
            while not self._stop.wait(_CHECKPOINT_S) and self.error is None:
                try:
                    db.checkpoint()
                except StateFileError:
                    return  # nothing more goes into that file; serving says why
                except Exception:  # noqa: BLE001 - the WAL grows meanwhile; tried again
                    log_exception(log, "WAL checkpoint failed")
        finally:
            db.close()

    def _serve(self, socket: zmq.Socket[bytes], dispatcher: Dispatcher) -> None:
        """Poll, drain what is waiting, answer it all from one transaction, repeat.

        Heartbeats that cannot be written stay buffered and are tried again a second later,
        while requests are still answered. A round of answering that raises (a socket error)
        is tried again after a pause; the requests it received go unanswered, so their
        clients retry.
        """
        db = dispatcher.db
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        flushed = time.monotonic()
        peers: list[bytes] = []  # the connection of each request answered since the flush
        busy, batch = False, 0
        try:
            while not self._stop.is_set():
                if time.monotonic() - flushed >= _HEARTBEAT_FLUSH_S:
                    flushed = time.monotonic()
                    busy = is_busy(peers)
                    peers.clear()
                    db.check_file()  # deleted, replaced or damaged: StateFileError ends serving
                    _attempt(db.flush_heartbeats, "heartbeats not written; kept for the next try")
                if busy and 0 < batch < _SMALL_BATCH:
                    self._stop.wait(_LINGER_S)
                ended, before = db.holds_ended, len(peers)
                if not _attempt(
                    partial(_answer_waiting, socket, poller, dispatcher, peers), "serving failed"
                ):
                    self._stop.wait(_ERROR_PAUSE_S)
                batch = len(peers) - before
                if db.holds_ended != ended and self.on_change is not None:
                    self.on_change()  # a learner is done or back: the job manager acts now
        except StateFileError as e:
            self.error = e  # the checkpoints stop too: nothing more goes into that file
            log.error("the database manager stopped serving", error=str(e))  # noqa: TRY400 - says it all
            if self.on_change is not None:
                self.on_change()  # the job manager checks the file now and stops its tasks
            self._refuse(socket, poller, str(e))
        finally:
            socket.close(linger=0)
            db.close()

    def _refuse(self, socket: zmq.Socket[bytes], poller: zmq.Poller, reason: str) -> None:
        """Answer every request with ``reason`` until stopped: the workers hear why."""
        reply = encode_reply(ErrorReply(ReplyCode.INTERNAL, reason))
        while not self._stop.is_set():
            if poller.poll(_POLL_MS):
                frames = socket.recv_multipart()
                if b"" in frames:
                    socket.send_multipart([*frames[: frames.index(b"") + 1], reply])


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit.

    Every connected job holds a file descriptor here. At the soft limit (1,024 on many login
    nodes) libzmq accepts no more connections, and the jobs beyond it wait for a reply until
    their patience ends (bench_scale, with ``prlimit --nofile=1024``: a burst of 1,500
    claims never completes; the hard limit is often far higher).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # not allowed here: keep what we have, and say so
            return soft
        return target
    return soft


def is_busy(peers: list[bytes]) -> bool:
    """Whether waiting a little after a small batch saves CPU: many requests, many jobs.

    ``peers``: the connection of each request answered in the last second.
    """
    return len(peers) >= _BUSY_REQUESTS and len(set(peers)) >= _BUSY_PEERS


def _attempt(step: Callable[[], object], event: str) -> bool:
    """Do ``step``; if it raises, log ``event`` and return False: the server goes on."""
    try:
        step()
    except Exception:  # noqa: BLE001 - a full disk, a broken database: the next round may work
        log_exception(log, event)
        return False
    return True


def _answer_waiting(
    socket: zmq.Socket[bytes], poller: zmq.Poller, dispatcher: Dispatcher, peers: list[bytes]
) -> None:
    """Answer the requests that arrive within one poll (up to a batch), if any.

    The connection each came from is appended to ``peers``.
    """
    if not poller.poll(_POLL_MS):
        return
    messages = [socket.recv_multipart()]
    while len(messages) < _MAX_BATCH and int(socket.get(zmq.EVENTS)) & zmq.POLLIN:
        messages.append(socket.recv_multipart())
    peers.extend(frames[0] for frames in messages)
    for frames in dispatcher.answer(messages, now=time.time()):
        socket.send_multipart(frames)


class Dispatcher:
    """Answers requests from the run's database: the serving thread's one object.

    Parameters
    ----------
    db
        The run's state; every transition is committed before its reply is sent.
    schedulers
        Each resource group's scheduler: what its task ids look like, how many workers a
        packed task runs (see :func:`claim_refusal`).
    clock
        Monotonic seconds, for :class:`Refusals` (injectable for tests).

    """

    def __init__(
        self,
        db: Database,
        schedulers: Sequence[Scheduler],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.schedulers = list(schedulers)
        self.refusals = Refusals(clock)

    def answer(self, messages: list[list[bytes]], *, now: float) -> list[list[bytes]]:
        """The reply to each well-enveloped message, all transitions in one committed transaction.

        A message is ``[routing frames..., b"", request]`` (what a REQ socket sends). Messages
        without the empty delimiter frame cannot be answered in kind and are dropped (counted
        in the log once a minute, as refusals are).
        """
        envelopes: list[list[bytes]] = []
        bodies: list[list[bytes]] = []
        for frames in messages:
            if b"" not in frames:
                self.refusals.note("dropped a message without an envelope", "", frames=len(frames))
                continue
            split = frames.index(b"") + 1
            envelopes.append(frames[:split])
            bodies.append(frames[split:])
        requests = [_decoded(body) for body in bodies]  # a request, or the reply to a bad one
        db = self.db
        try:
            if sum(isinstance(r, _TRANSITIONS) for r in requests) <= 1:
                # Heartbeats and status requests write nothing (heartbeats are written once a
                # second, in bulk), and a lone transition commits by itself: no shared
                # transaction.
                replies = [self._reply(request, now) for request in requests]
            else:
                with db.batch():
                    replies = [self._reply(request, now) for request in requests]
        except sqlite3.Error as e:  # the batch was rolled back: none of its replies may say ok
            log_exception(log, "database batch failed; nothing of it recorded")
            failed = ErrorReply(
                ReplyCode.INTERNAL, f"database error in {db.file.path}: {e}; nothing recorded"
            )
            replies = [failed] * len(bodies)
        return [
            [*envelope, encode_reply(reply)]
            for envelope, reply in zip(envelopes, replies, strict=True)
        ]

    def _reply(self, request: Request | ErrorReply, now: float) -> Reply:
        if isinstance(request, ErrorReply):
            return request
        try:
            return self._dispatch(request, now)
        except Exception as e:  # one request that breaks must not stop the others or the server
            if isinstance(e, sqlite3.Error) and not isinstance(e, sqlite3.IntegrityError):
                # Damaged, full, locked: sqlite may have rolled back the whole transaction, so
                # every reply of the batch says so (see answer). A constraint is this request's.
                raise
            log_exception(log, "request failed", request=repr(request)[:500])
            return ErrorReply(ReplyCode.INTERNAL, f"{type(e).__name__}: {e}")

    def _dispatch(self, request: Request, now: float) -> Reply:
        db = self.db
        ended = db.holds_ended  # a report that ends a hold moves it; a repeat or a refusal not
        match request:
            case Claim():
                return self._claim(request, now)
            case StageReached(task, learner, stage, npoints, loss):
                go_on = db.advance(task, learner, stage=stage, npoints=npoints, loss=loss)
                if go_on is not None:
                    return Onward(go_on=go_on)
                held = False
            case Heartbeat(task, learner, npoints, loss, cpu, memory):
                held = db.heartbeat(
                    task, learner, npoints=npoints, loss=loss, cpu=cpu, memory=memory, now=now
                )
            case HandBack() | Done() | Release() | Fail():
                task, learner = request.task, request.learner
                held = self._end_hold(request, now)
                self._log_report(request, held=held, recorded=db.holds_ended != ended)
            case Status():
                return Counts(db.counts())
        if held:
            return Ack()
        return ErrorReply(
            ReplyCode.NOT_OWNER,
            f"task {task} does not hold learner {learner} (its lease expired, the job was taken "
            "for lost, or the learner was cancelled): stop without saving",
        )

    def _end_hold(self, request: HandBack | Done | Release | Fail, now: float) -> bool:
        """Record how a task's hold ended; False if the task does not hold the learner."""
        db = self.db
        match request:
            case HandBack(task, learner, npoints):
                return db.hand_back(task, learner, npoints=npoints, now=now)
            case Done(task, learner, npoints, loss):
                return db.done(task, learner, npoints=npoints, loss=loss, now=now)
            case Release(task, learner, reason, npoints):
                return db.release(task, learner, reason=reason, now=now, npoints=npoints)
            case Fail(task, learner, error):
                return db.fail(task, learner, error=error, now=now)

    def _claim(self, claim: Claim, now: float) -> Reply:
        """A learner for ``claim``'s task, if it is one of the run's and a learner waits."""
        db = self.db
        refusal = claim_refusal(claim, db.live_array(claim.array), self.schedulers)
        if refusal is not None:
            return ErrorReply(ReplyCode.UNKNOWN_TASK, refusal)
        assignment = db.claim(
            claim.task,
            group=claim.group,
            host=claim.host,
            pid=claim.pid,
            now=now,
            array=claim.array,
        )
        if assignment is None:
            return ErrorReply(ReplyCode.NO_WORK, "no learner is waiting with its dependencies done")
        return Assignment(assignment.learner, assignment.fname, assignment.stage)

    def _log_report(
        self, request: HandBack | Done | Release | Fail, *, held: bool, recorded: bool
    ) -> None:
        """Log a ``release`` or ``fail`` that ended a hold; sparingly, a report that did not.

        Not recorded: it repeats one recorded (answered ok, ``held``), or its sender does not
        hold the learner (answered not_owner).
        """
        reason = None
        if isinstance(request, Release):
            reason = cut(request.reason)
        elif isinstance(request, Fail):  # the traceback's last line: what broke
            reason = cut(request.error.strip().rsplit("\n", 1)[-1])
        task, learner = request.task, request.learner
        if not recorded and not held and self.db.cancelled_hold(task, learner):
            # A job told to stop by a cancel saves and releases: expected, not worth a line.
            log.debug("report of a cancelled hold", task=task, learner=learner, op=request.op)
        elif not recorded:
            self.refusals.note(
                UNRECORDED_REPORT,
                task,
                op=request.op,
                learner=learner,
                reply="ok" if held else ReplyCode.NOT_OWNER.value,
                **({} if reason is None else {"reason": reason}),
            )
        elif isinstance(request, Release):
            log.info("job released its learner", task=task, learner=learner, reason=reason)
        elif isinstance(request, Fail):
            log.warning("job failed", task=task, learner=learner, reason=reason)


def claim_refusal(
    claim: Claim, array: ArrayRow | None, schedulers: Sequence[Scheduler]
) -> str | None:
    """Why ``claim`` comes from no task the run has now; None when it does.

    Such a task is one of the ``n_tasks`` tasks of ``array`` (the unfinished array of the
    claim's array id) with an id as its group's scheduler forms them, claiming for that
    group; in a packed allocation one of its workers, ``<task>@<rank>`` with a rank below
    the scheduler's ``packed``. A refusal is answered ``unknown_task``: the worker asks
    again for a while (an adopted array is recorded late), then exits holding nothing.
    """
    if array is None:
        return (
            f"task {claim.task} is of array {claim.array!r}, which this run has not recorded "
            "or has finished (it may be adopted soon after a failed submission): nothing claimed"
        )
    if claim.group != array.group or array.group >= len(schedulers):
        return (
            f"task {claim.task} claims for group {claim.group}, but array {claim.array!r} is "
            f"of group {array.group}: nothing claimed"
        )
    scheduler = schedulers[array.group]
    task, separator, rank = claim.task.partition(RANK_SEPARATOR)
    index = scheduler.task_index(task) if scheduler.array_of(task) == array.array_id else None
    workers = scheduler.packed
    if workers is None:
        rank_ok = not separator
    else:
        number = number_text(rank) if separator else None
        rank_ok = number is not None and number < workers
    if index is None or index >= array.n_tasks or not rank_ok:
        ranks = "" if workers is None else f", each of workers @0..@{workers - 1}"
        return (
            f"{claim.task!r} is no task of array {claim.array!r}, whose {array.n_tasks} tasks "
            f"have indices 0..{array.n_tasks - 1}{ranks}: nothing claimed"
        )
    return None


def cut(reason: str) -> str:
    """``reason`` as manager.log takes it: at most REASON_CHARS characters, and how many more."""
    if len(reason) <= REASON_CHARS:
        return reason
    return f"{reason[:REASON_CHARS]} [... {len(reason) - REASON_CHARS} more characters]"


class Refusals:
    """Logs what clients send that changes nothing, sparingly: manager.log stays bounded.

    A ``fail``, ``release`` or ``done`` about a learner its sender does not hold (a worker
    whose lease expired sends one), a repeated report, a message without an envelope: one
    such client sends a few, but anyone with the run's client key can send millions, each
    up to 64 KiB. So each sender (the task the message names) gets one line per
    ``REFUSAL_WINDOW_S``, counting what it sent since its last line, and all senders
    together at most ``REFUSALS_PER_WINDOW`` lines per window; what that leaves out is
    counted in the next line.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # sender -> (when its last line was logged, its refusals not logged since)
        self._senders: dict[str, tuple[float, int]] = {}
        self._window = -math.inf  # when the current window started
        self._lines = 0  # lines logged in it
        self._capped = 0  # refusals in no line yet, of senders left out by the cap or forgotten

    def note(self, event: str, sender: str, **fields: object) -> None:
        """Log ``event`` with ``fields`` for ``sender``, unless its line of this window is out."""
        now = self._clock()
        if now - self._window >= REFUSAL_WINDOW_S:
            self._window, self._lines = now, 0
            # Senders silent for two windows are forgotten (what they sent meanwhile counts
            # as others'): at most two windows' lines of them are kept.
            kept = {}
            for name, (last, unlogged) in self._senders.items():
                if now - last < 2 * REFUSAL_WINDOW_S:
                    kept[name] = (last, unlogged)
                else:
                    self._capped += unlogged
            self._senders = kept
        last, unlogged = self._senders.get(sender, (-math.inf, 0))
        if now - last < REFUSAL_WINDOW_S:
            self._senders[sender] = (last, unlogged + 1)
            return
        if self._lines >= REFUSALS_PER_WINDOW:
            self._capped += 1
            return
        self._lines += 1
        self._senders[sender] = (now, 0)
        log.warning(
            event,
            sender=sender,
            **fields,
            unlogged_from_sender=unlogged,
            unlogged_from_others=self._capped,
        )
        self._capped = 0


def _decoded(body: list[bytes]) -> Request | ErrorReply:
    """The request in a message's body, or the bad_request reply to it."""
    if len(body) != 1:
        return ErrorReply(ReplyCode.BAD_REQUEST, f"expected one message frame, got {len(body)}")
    try:
        return decode(body[0])
    except ProtocolError as e:
        return ErrorReply(ReplyCode.BAD_REQUEST, str(e))


def check_address(host: str | None, interface: str | None) -> tuple[str | None, str | None]:
    """``host`` and ``interface`` checked: at most one, each a plain name."""
    if host is not None and interface is not None:
        raise ConfigError(
            f"give host= or interface=, not both (got host={host!r}, interface={interface!r})"
        )
    for name, value in (("host", host), ("interface", interface)):
        if value is None:
            continue
        if not isinstance(value, str) or not value or any(c in value for c in " \t\n/:"):
            raise ConfigError(
                f"{name}={value!r}: give a host name or IPv4 address (host=) or an interface "
                "name such as 'ib0' (interface=), without a scheme or port"
            )
    return host, interface


def interface_address(interface: str) -> str:
    """The IPv4 address of this machine's network ``interface`` (e.g. ``"ib0"``)."""
    import psutil  # noqa: PLC0415 - only when an interface is asked for

    addresses = psutil.net_if_addrs()
    if interface not in addresses:
        raise ConfigError(
            f"interface={interface!r}: no such network interface on {socket.gethostname()}; "
            f"it has {', '.join(sorted(addresses))}"
        )
    for address in addresses[interface]:
        if address.family == socket.AF_INET:
            return str(address.address)
    raise ConfigError(
        f"interface={interface!r} has no IPv4 address; give host= (an address or host name "
        "the compute nodes reach) instead"
    )
