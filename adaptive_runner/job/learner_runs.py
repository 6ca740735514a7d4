"""How the worker runs a claimed learner: adaptive's own runners, with the learner kept safe.

- ``sequential``: adaptive's ``BlockingRunner`` in a daemon thread, each point evaluated in
  that same thread (:class:`PointGate`). Per point this costs what adaptive alone costs: no
  hand-off to another thread and no event-loop round trip. The thread is a daemon so that a
  worker told to stop during a point that takes hours can save, release and exit.
- ``process-pool``, ``loky``, ``mpi4py``: adaptive's ``Runner`` on the worker's event loop,
  the executor the task made for its first learner.

The worker's event loop (heartbeats, saves, stop signals) reads the learner only through
:meth:`LearnerRun.read`: a learner is not thread-safe, and a save that pickles it while a
``tell`` changes it fails or writes a torn state.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import adaptive
import adaptive.runner

from adaptive_runner.common.vocabulary import POINTS_IN_EVALUATION

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
T = TypeVar("T")

# adaptive's runners import ipyparallel and distributed, when installed, only to check
# whether the executor is one of their clients. Ours is always a concurrent.futures Executor,
# and those imports (IPython, pandas, ...) can take longer than adaptive itself.
adaptive.runner.with_ipyparallel = adaptive.runner.with_distributed = False


MAX_POINTS_SHOWN = 5


def with_points(reason: str, pending: list[Any]) -> str:
    """``reason`` and the points being evaluated when it came (a hung one is among them)."""
    if not pending:
        return reason
    points = ", ".join(_point_text(x) for x in pending[:MAX_POINTS_SHOWN])
    more = f" and {len(pending) - MAX_POINTS_SHOWN} more" if len(pending) > MAX_POINTS_SHOWN else ""
    return f"{reason}{POINTS_IN_EVALUATION}{points}{more}"


def _point_text(point: Any) -> str:
    """A point as people write it: ``-0.5``, ``(1, 2.5)``; not ``np.float64(-0.5)``."""
    if isinstance(point, tuple):
        return "(" + ", ".join(_point_text(x) for x in point) + ")"
    if getattr(point, "ndim", None) == 0:  # a numpy scalar: its Python value
        point = point.item()
    return repr(point)


class _Stopped(Exception):  # noqa: N818 - an end, not an error
    """Ends BlockingRunner at its next point once the run was told to stop."""


class LearnerRun(Protocol):
    """A learner being run to its goal, as the worker's event loop sees it."""

    # Done when the run ends by itself: None at the goal, or the error that ended it. After
    # stop() nobody looks at it any more.
    finished: asyncio.Future[None]

    def read(self, fn: Callable[[Any], T]) -> Future[T]:
        """Call ``fn(learner)`` while nothing changes the learner; its result, or error."""
        ...

    async def stop(self) -> None:
        """End the run where it is: no new point starts; points in flight are dropped."""
        ...

    def pending_points(self) -> list[Any]:
        """The points being evaluated now (call from the event loop)."""
        ...


def start_run(
    learner: Any,
    runner_kwargs: dict[str, Any],
    executor: tuple[Executor, int] | None,
) -> LearnerRun:
    """Start running ``learner`` on the running event loop's terms.

    ``runner_kwargs`` are the goal's Runner arguments and the run's ``runner_kwargs``;
    ``executor`` is the task's pool and its number of points at once, or None for the
    sequential executor (points in the learner's own thread).
    """
    loop = asyncio.get_running_loop()
    if executor is None:
        return ThreadRun(learner, runner_kwargs, loop)
    return LoopRun(learner, runner_kwargs, loop, *executor)


class PointGate(Executor):
    """adaptive's SequentialExecutor, plus a gate through which others read the learner.

    BlockingRunner asks, submits, and tells, all in its own thread. Everything between two
    points changes the learner; a point itself does not. So a read is served at once while
    a point is being evaluated (the runner thread then waits at the point's end, should the
    read take longer), and otherwise by the runner thread itself at the start of its next
    point, or when it ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._point: tuple[Any, ...] | None = None  # the arguments of the point in evaluation
        self._closed = False  # the runner thread ended: reads are served at once
        self._stopping = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Evaluate ``fn(*args, **kwargs)`` now; serve waiting reads first."""
        with self._lock:
            self._serve()
            if self._stopping:
                raise _Stopped
            self._point = args
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - the future carries it to the runner
            future.set_exception(e)
        finally:
            with self._lock:
                self._point = None
        return future

    def read(self, fn: Callable[[], T]) -> Future[T]:
        """Call ``fn`` when the runner thread cannot change the learner (see the class)."""
        future: Future[T] = Future()
        with self._lock:
            if self._point is not None or self._closed:
                _call_into(future, fn)
            else:
                self._reads.append((fn, future))
        return future

    def pending(self) -> list[Any]:
        """The point in evaluation, if any."""
        with self._lock:
            return [] if self._point is None else [self._point[0]]

    def stop(self) -> None:
        """Start no new point (the runner thread raises _Stopped at its next submit)."""
        with self._lock:
            self._stopping = True

    def close(self) -> None:
        """The runner thread ended: serve the reads it left, and later ones at once."""
        with self._lock:
            self._closed = True
            self._serve()

    def _serve(self) -> None:
        reads, self._reads = self._reads, []
        for fn, future in reads:
            _call_into(future, fn)


def _call_into(future: Future[T], fn: Callable[[], T]) -> None:
    try:
        future.set_result(fn())
    except Exception as e:  # noqa: BLE001 - the reader gets it
        future.set_exception(e)


class ThreadRun:
    """adaptive's BlockingRunner in a daemon thread, its points evaluated in that thread."""

    def __init__(
        self, learner: Any, runner_kwargs: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._learner = learner
        self._gate = PointGate()
        self.finished: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(
            target=self._run, args=(runner_kwargs, loop), name="learner", daemon=True
        )
        thread.start()

    def _run(self, runner_kwargs: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        error: BaseException | None = None
        try:
            adaptive.BlockingRunner(
                self._learner,
                executor=self._gate,
                ntasks=1,
                shutdown_executor=False,
                **runner_kwargs,
            )
        except _Stopped:
            return  # nobody waits for `finished` after a stop
        except BaseException as e:  # noqa: BLE001 - the learner's error, reported by the worker
            error = e
        finally:
            self._gate.close()
        # A worker that stopped during a long point may have closed its loop already.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, self.finished, error)

    def read(self, fn: Callable[[Any], T]) -> Future[T]:  # noqa: D102 - LearnerRun's
        return self._gate.read(lambda: fn(self._learner))

    async def stop(self) -> None:  # noqa: D102 - LearnerRun's
        self._gate.stop()  # a point in evaluation is not waited for: the worker exits after
        _forget_end(self.finished)

    def pending_points(self) -> list[Any]:  # noqa: D102 - LearnerRun's
        return self._gate.pending()


def _forget_end(finished: asyncio.Future[None]) -> None:
    """After a stop nobody awaits the end: an error it may still bring is not reported."""
    finished.add_done_callback(lambda f: f.cancelled() or f.exception())


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class LoopRun:
    """adaptive's Runner on the worker's event loop, with a pool of processes for points."""

    def __init__(
        self,
        learner: Any,
        runner_kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        executor: Executor,
        ntasks: int,
    ) -> None:
        self._learner = learner
        self._runner = adaptive.Runner(
            learner,
            executor=executor,
            ntasks=ntasks,
            shutdown_executor=False,
            ioloop=loop,
            **runner_kwargs,
        )
        self.finished: asyncio.Future[None] = self._runner.task

    def read(self, fn: Callable[[Any], T]) -> Future[T]:  # noqa: D102 - LearnerRun's
        future: Future[T] = Future()
        _call_into(future, lambda: fn(self._learner))  # the loop's thread is the only one
        return future

    async def stop(self) -> None:  # noqa: D102 - LearnerRun's
        self.finished.cancel()  # the runner drops its unfinished points
        await asyncio.wait({self.finished})
        _forget_end(self.finished)

    def pending_points(self) -> list[Any]:  # noqa: D102 - LearnerRun's
        return [x for _, x in self._runner.pending_points]
