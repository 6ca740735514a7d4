"""The job side of the wire protocol: a CURVE REQ socket with timeouts, backoff and retries.

Retrying is safe because the database manager treats a repeated request from the same task as
the same request. Only zmq and stdlib are imported (no asyncio, so no structlog): retries are
logged with stdlib logging, which without configuration prints warnings to stderr, i.e. to the
task's log file (logs/<task>.log).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Final, Self

import zmq

from adaptive_runner.common.auth import Keys, load_keys
from adaptive_runner.common.protocol import (
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
    decode_reply,
    encode_request,
)
from adaptive_runner.common.vocabulary import ReplyCode
from adaptive_runner.errors import (
    AdaptiveRunnerError,
    ManagerUnreachableError,
    ManagerUnresolvableError,
    ProtocolError,
    UnknownTaskError,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from adaptive_runner.common.run_dir import RunDir

log = logging.getLogger(__name__)

MAX_TEXT_BYTES: Final = 16 * 1024  # tracebacks and reasons are cut to their last 16 KiB
_FIRST_DELAY_S: Final = 0.5
_MAX_DELAY_S: Final = 30.0
_TICK_S: Final = 1.0  # how often a waiting request asks whether to give up
_MAX_UNKNOWN_DELAY_S: Final = 5.0  # an unknown task asks again at least this often


class _GaveUp(Exception):  # noqa: N818 - not an error: the caller asked to stop waiting
    """A request stopped waiting because its ``give_up`` said so."""


def _wait_for(ready: Callable[[float], bool], seconds: float, give_up: Callable[[], bool]) -> bool:
    """Call ``ready(t)`` (which waits at most t seconds) until it is True or ``seconds`` pass.

    Raises _GaveUp as soon as ``give_up()`` is True, at most a tick later.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if give_up():
            raise _GaveUp
        if ready(min(left, _TICK_S)):
            return True
    return False


def _poll(socket: zmq.Socket[bytes], seconds: float) -> bool:
    """Whether a reply is ready on ``socket`` within ``seconds``."""
    return bool(socket.poll(int(seconds * 1000), zmq.POLLIN))


def _sleep(seconds: float) -> bool:
    """Wait; nothing can be ready (a back-off between tries)."""
    time.sleep(seconds)
    return False


def _tail(text: str) -> str:
    """The end of ``text`` (where a traceback says what happened), at most 16 KiB of UTF-8."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= MAX_TEXT_BYTES:
        return text
    return "[...]" + data[-MAX_TEXT_BYTES:].decode("utf-8", errors="ignore")


class Client:
    """Talks to the run's database manager on behalf of one array task.

    Parameters
    ----------
    run_dir
        The run: its keys authenticate us, its run.json says where the manager listens.
    task_id
        This array task's id, as ``task_identity.py`` reads it from the environment.
    timeout_s
        How long to wait for one reply before trying again on a fresh socket.
    patience_s
        How long to keep trying (re-reading run.json each time, since a restarted manager
        listens on a new port) before raising ManagerUnreachableError.

    Requests take turns: a worker sends heartbeats from one thread and a staged goal's
    ``stage_reached`` from another, and a REQ socket sends once per reply.
    """

    def __init__(
        self, run_dir: RunDir, task_id: str, *, timeout_s: float = 10.0, patience_s: float = 3600.0
    ) -> None:
        self.run_dir = run_dir
        self.task_id = task_id
        self.timeout_s = timeout_s
        self.patience_s = patience_s
        self._keys: Keys | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._url = ""
        self._answered = False  # a reply came: the url's host resolves (checked until then)
        self._turn = threading.Lock()  # one request at a time on the socket

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def claim(
        self,
        *,
        host: str,
        pid: int,
        group: int = 0,
        array: str = "",
        unknown_patience_s: float = 0.0,
        give_up: Callable[[], bool] = lambda: False,
    ) -> Assignment | None:
        """Get a learner of ``group`` to work on, or None when there is no work left for it.

        ``array`` is the task's array id: the job manager counts its tasks' claims, and the
        database manager refuses tasks of arrays the run does not know (``unknown_task``).
        An array whose submission failed after queueing is recorded only when the job manager
        finds it, so such a refusal is asked again with back-off for ``unknown_patience_s``,
        then raises UnknownTaskError. While waiting, ``give_up()`` is asked about once a
        second; when it says True (the job was cancelled: it holds nothing yet) this returns
        None at once.
        """
        claim = Claim(self.task_id, host, pid, group, array)
        deadline = time.monotonic() + unknown_patience_s
        delay = _FIRST_DELAY_S
        try:
            reply = self._request(claim, give_up=give_up)
            while isinstance(reply, ErrorReply) and reply.code == ReplyCode.UNKNOWN_TASK:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UnknownTaskError(f"{reply.error}; asked for {unknown_patience_s:g} s")
                log.warning("%s; asking again in %.1f s", reply.error, min(delay, left))
                _wait_for(_sleep, min(delay, left), give_up)
                delay = min(2 * delay, _MAX_UNKNOWN_DELAY_S)
                reply = self._request(claim, give_up=give_up)
        except _GaveUp:
            return None
        if isinstance(reply, Assignment):
            return reply
        if isinstance(reply, ErrorReply) and reply.code == ReplyCode.NO_WORK:
            return None
        raise _unexpected(claim, reply)

    def heartbeat(
        self,
        learner: int,
        *,
        npoints: int,
        loss: float | None,
        cpu: float,
        memory: int,
        give_up: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Report progress; False means this task no longer holds the learner: stop, do not save.

        Raises ManagerUnreachableError when the manager does not answer within the patience,
        or as soon as ``give_up()`` says True while waiting (asked about once a second).
        """
        request = Heartbeat(self.task_id, learner, npoints, loss, cpu, memory)
        try:
            return self._held(request, self._request(request, give_up=give_up))
        except _GaveUp:
            raise ManagerUnreachableError(
                f"gave up waiting for the database manager at {self._url} to acknowledge a "
                "heartbeat"
            ) from None

    def stage_reached(
        self, learner: int, *, stage: int, npoints: int, loss: float | None
    ) -> bool | None:
        """Report that the learner reached goal stage ``stage`` (not its last), unsaved.

        True: go on with it; False: save it, :meth:`hand_back` it and claim again (learners
        of the group wait at an earlier stage); None: this task no longer holds it (do not
        save).
        """
        request = StageReached(self.task_id, learner, stage, npoints, loss)
        reply = self._request(request)
        if isinstance(reply, Onward):
            return reply.go_on
        if isinstance(reply, ErrorReply) and reply.code == ReplyCode.NOT_OWNER:
            return None
        raise _unexpected(request, reply)

    def hand_back(self, learner: int, *, npoints: int) -> None:
        """Give back a learner that reached a stage (after its save), to claim the next."""
        self._end(learner, HandBack(self.task_id, learner, npoints))

    def done(self, learner: int, *, npoints: int, loss: float | None) -> None:
        """Report that the learner reached its goal (after its final save)."""
        self._end(learner, Done(self.task_id, learner, npoints, loss))

    def release(self, learner: int, *, reason: str, npoints: int) -> None:
        """Give the learner back after an orderly stop (SIGTERM, time limit).

        Not a failure, unless the job added no point to the ``npoints`` it started with.
        """
        self._end(learner, Release(self.task_id, learner, _tail(reason), npoints))

    def fail(self, learner: int, *, error: str) -> None:
        """Report that the learner raised; ``error`` (the traceback) is cut to its last 16 KiB."""
        self._end(learner, Fail(self.task_id, learner, _tail(error)))

    def status(self) -> dict[str, int]:
        """The number of learners in each state."""
        request = Status()
        reply = self._request(request)
        if isinstance(reply, Counts):
            return reply.counts
        raise _unexpected(request, reply)

    def close(self) -> None:
        """Close the socket and its context; the client may be used again afterwards."""
        self._discard_socket()
        if self._context is not None:
            self._context.term()
            self._context = None

    def _end(self, learner: int, request: Request) -> None:
        if not self._held(request, self._request(request)):
            # The manager already gave the learner to someone else (or cancelled it); what
            # this task did is not recorded. Nothing for the worker to do but to exit.
            log.warning(
                "%s of learner %d not recorded: this task no longer holds it", request.op, learner
            )

    def _held(self, request: Request, reply: Reply) -> bool:
        """Whether the task still holds the learner ``request`` (not a claim) was about."""
        if isinstance(reply, Ack):
            return True
        if isinstance(reply, ErrorReply) and reply.code == ReplyCode.NOT_OWNER:
            return False
        raise _unexpected(request, reply)

    def _request(self, request: Request, *, give_up: Callable[[], bool] = lambda: False) -> Reply:
        """Send until a reply comes; a fresh socket per try, since REQ sockets are lockstep.

        Raises _GaveUp when ``give_up()`` turns True while waiting (asked about once a second).
        """
        with self._turn:
            return self._exchange(request, give_up)

    def _exchange(self, request: Request, give_up: Callable[[], bool]) -> Reply:
        """:meth:`_request`'s sends and waits, while no other request of this client runs."""
        payload = encode_request(request)
        deadline = time.monotonic() + self.patience_s
        delay = _FIRST_DELAY_S
        while True:
            socket = self._connect()
            if socket is not None:
                socket.send(payload)
                try:
                    answered = _wait_for(partial(_poll, socket), self.timeout_s, give_up)
                except _GaveUp:
                    self._discard_socket()  # it awaits a reply: the next request needs another
                    raise
                if answered:
                    self._answered = True
                    return decode_reply(socket.recv())
                self._discard_socket()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ManagerUnreachableError(
                    f"the database manager at {self._url or '(no url in run.json yet)'} did not "
                    f"answer {request.op!r} for {self.patience_s:g} s; is the run manager "
                    f"running? Its url is read from {self.run_dir.config_file}"
                )
            wait = min(delay, left)
            log.warning(
                "no reply to %r from the database manager at %s within %g s; retrying in %.1f s",
                request.op,
                self._url or "(no url in run.json yet)",
                self.timeout_s,
                wait,
            )
            _wait_for(_sleep, wait, give_up)
            delay = min(2 * delay, _MAX_DELAY_S)

    def _connect(self) -> zmq.Socket[bytes] | None:
        """The current socket, or a new one to the url run.json names now (None: no url yet)."""
        if self._socket is not None:
            return self._socket
        self._url = self.run_dir.read_config().url
        if not self._url:
            return None
        if not self._answered:
            check_resolves(self._url)
        if self._keys is None:
            self._keys = load_keys(self.run_dir.keys_dir)
        if self._context is None:
            self._context = zmq.Context()
        socket = self._context.socket(zmq.REQ)
        socket.linger = 0
        socket.curve_secretkey = self._keys.client_secret
        socket.curve_publickey = self._keys.client_public
        socket.curve_serverkey = self._keys.server_public
        socket.connect(self._url)
        self._socket = socket
        return socket

    def _discard_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


def check_resolves(url: str) -> None:
    """Raise ManagerUnresolvableError if this node cannot resolve the host of ``url``.

    libzmq would try the name again and again, in silence, and the task would wait for a
    reply for the client's patience (an hour) while the job manager waits ``claim_timeout``
    for its claim. A name that does not exist here stays so; a temporary failure of the
    name service (``EAI_AGAIN``) is only logged: the requests try on.
    """
    host = url.removeprefix("tcp://").rsplit(":", 1)[0]
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        if e.errno == socket.EAI_AGAIN:
            log.warning("cannot resolve host %r now (%s); trying on", host, e.strerror)
            return
        raise ManagerUnresolvableError(
            f"cannot resolve host {host!r} ({e.strerror}) on {socket.gethostname()}: the "
            f"database manager's url {url} names a host this node does not know; pass "
            "RunManager(..., host='<a name or address the compute nodes resolve>') or "
            "interface='<e.g. ib0>'"
        ) from None


def _unexpected(request: Request, reply: Reply) -> AdaptiveRunnerError:
    """The error for a ``reply`` that ``request`` cannot go on with: a refusal, or a mismatch."""
    if not isinstance(reply, ErrorReply):
        return ProtocolError(f"the database manager answered {request.op!r} with {reply!r}")
    if reply.code == ReplyCode.BAD_REQUEST:
        return ProtocolError(f"the database manager refused our request: {reply.error}")
    return AdaptiveRunnerError(f"database manager error ({reply.code}): {reply.error}")
