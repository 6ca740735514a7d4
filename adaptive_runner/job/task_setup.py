"""What an array task sets up once for all its learners: initializers, Runner arguments, pool.

A RunManager takes ``runner_kwargs`` (more arguments of adaptive's Runner, e.g.
``retries=3``) and ``initializers`` (callables that prepare a process: an environment
variable, a cache, a library's global state). Both are checked when the RunManager is made
and cloudpickled into the run directory at start (``spec.RunSpec``). Pickles, not run.json
fields: any picklable value fits, and run.json stays readable by earlier releases, which
refuse fields they do not know.

A task reads them with its first learner (:class:`TaskSetup`): it runs the initializers in
its own process before it loads that learner, and hands them to its pool
(:class:`TaskExecutor`), which runs them first in each pool process. A run made by an
earlier release has neither file: no initializers, no more arguments.

Imports stay light for the worker's start: the executors only when the pool is made.
"""

from __future__ import annotations

import os
import pickle
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.validation import callable_name
from adaptive_runner.common.vocabulary import Event
from adaptive_runner.errors import InitializerError

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    from adaptive_runner.common.function_store import StoredFunctions
    from adaptive_runner.common.run_dir import GroupConfig, RunDir
    from adaptive_runner.job.task_log import JobLog


def run_initializers(pickled: bytes, log: JobLog | None = None) -> int:
    """Call each initializer of ``pickled`` (initializers.pickle's bytes), in order.

    Returns how many there are. With ``log`` (the task's, not in pool processes), each is
    announced before it runs: one that hangs is then the last line of the task's log, which
    the job manager quotes when the task's lease expires.

    Raises
    ------
    InitializerError
        For the first that raises, naming it and this process; its error is the cause.

    """
    initializers = pickle.loads(pickled)  # noqa: S301 - the run's own pickle
    started = time.monotonic()
    for index, initializer in enumerate(initializers):
        if log is not None:
            log.info(
                Event.INITIALIZER_STARTED,
                initializer=f"initializers[{index}] ({callable_name(initializer)})",
            )
        try:
            initializer()
        except Exception as e:
            raise InitializerError(
                f"initializers[{index}] ({callable_name(initializer)}) failed in process "
                f"{os.getpid()}: {type(e).__name__}: {e}"
            ) from e
    if log is not None and initializers:
        log.info(
            Event.INITIALIZERS_DONE,
            initializers=len(initializers),
            seconds=round(time.monotonic() - started, 3),
        )
    return len(initializers)


class TaskSetup:
    """The run's initializers and Runner arguments as one task uses them."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._runner_kwargs: dict[str, Any] | None = None  # set once the initializers ran
        self.pool_initializer: Callable[[], object] | None = None  # what pool processes run

    def prepare(self, log: JobLog | None = None) -> dict[str, Any]:
        """Run the initializers in this process (first call only); the extra Runner arguments.

        Each is announced in ``log`` first (see :func:`run_initializers`). Raises
        :class:`InitializerError` when one fails: the task's learner fails with it.
        """
        if self._runner_kwargs is None:
            pickled = self.run_dir.read_initializers()
            if pickled is not None and run_initializers(pickled, log):
                self.pool_initializer = partial(run_initializers, pickled)
            self._runner_kwargs = self.run_dir.read_runner_kwargs()
        return dict(self._runner_kwargs)


class TaskExecutor:
    """The task's executor: made for its first learner, reused by the ones after it."""

    def __init__(self, group: GroupConfig, setup: TaskSetup) -> None:
        self.group = group
        self.setup = setup
        self._made: tuple[Executor, int] | None = None  # None too for sequential

    def get(self, stored: StoredFunctions) -> tuple[Executor, int] | None:
        """The pool and how many points it evaluates at once; None for ``sequential``.

        The pool gets the learner's stored functions by reference (``StoredFunctionPool``):
        ``stored`` loaded that learner. Call after ``setup.prepare()``: each pool process
        runs the initializers first.
        """
        from adaptive_runner.job.executors import (  # noqa: PLC0415
            StoredFunctionPool,
            make_executor,
        )

        if self._made is None:
            self._made = make_executor(
                self.group.executor, self.group.cores, initializer=self.setup.pool_initializer
            )
        if self._made is None:
            return None
        pool, ntasks = self._made
        return StoredFunctionPool(pool, stored), ntasks

    def shutdown(self) -> None:
        """Stop it and the points it still evaluates (their learner is saved or given up)."""
        if self._made is not None:
            from adaptive_runner.job.executors import shutdown_executor  # noqa: PLC0415

            shutdown_executor(self._made[0], now=True)
            self._made = None

    def after_learner(self) -> None:
        """Give back the cores that a finished learner's cancelled points still hold.

        adaptive cancels the points in flight at the goal, but a pool process that is
        evaluating one goes on until it ends, hours later for some functions; a new pool for
        the next learner frees those cores now.
        """
        from adaptive_runner.job.executors import REMADE_BETWEEN_LEARNERS  # noqa: PLC0415

        if self.group.executor in REMADE_BETWEEN_LEARNERS:
            self.shutdown()
