"""What an array task sets up once for all its learners: initializers, Runner arguments, pool.

A RunManager takes ``runner_kwargs`` (more arguments of adaptive's Runner, e.g.
``retries=3``) and ``initializers`` (callables that prepare a process: an environment
variable, a cache, a library's global state). Both are checked when the RunManager is made
(:func:`check_runner_kwargs`, :func:`check_initializers`) and cloudpickled into the run
directory at start (:func:`store`). Pickles, not run.json fields: any picklable value fits,
and run.json stays readable by earlier releases, which refuse fields they do not know.

A task reads them with its first learner (:class:`TaskSetup`): it runs the initializers in
its own process before it loads that learner, and hands them to its pool
(:class:`TaskExecutor`), which runs them first in each pool process. A run made by an
earlier release has neither file: no initializers, no more arguments.

Imports stay light for the worker's start: adaptive and cloudpickle only in the manager's
checks, the executors only when the pool is made.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from adaptive_runner.errors import ConfigError, InitializerError
from adaptive_runner.files import atomic_write

if TYPE_CHECKING:
    from concurrent.futures import Executor
    from pathlib import Path

    from adaptive_runner.run_dir import GroupConfig, RunDir

Initializer = Callable[[], object]

_GOAL = "give RunManager(goal=...) instead"
# The Runner arguments the worker sets itself, and why a user's own would not do.
OWNED_RUNNER_KWARGS = {
    "learner": "the learner is the one the task claimed",
    "goal": _GOAL,
    "npoints_goal": _GOAL,
    "loss_goal": _GOAL,
    "end_time_goal": _GOAL,
    "duration_goal": _GOAL,
    "executor": "give the scheduler's executor= instead (e.g. Local(executor='loky'))",
    "ntasks": "the scheduler's cores= sets how many points are evaluated at once",
    "log": "a log of every ask and tell would grow without bound in a long job",
    "shutdown_executor": "the task makes its pool once, shares it between learners, and ends it",
}


def check_runner_kwargs(runner_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the user's extra Runner arguments against adaptive's ``BlockingRunner``.

    Raises
    ------
    ConfigError
        Naming the key that the worker sets itself, that adaptive's runners do not take, or
        whose value cannot be pickled.

    """
    if runner_kwargs is None:
        return {}
    if not isinstance(runner_kwargs, Mapping):
        raise ConfigError(
            f"runner_kwargs={runner_kwargs!r} must be a dict of adaptive Runner arguments, "
            "e.g. {'retries': 3}"
        )
    import inspect  # noqa: PLC0415 - the manager's check only

    import adaptive  # noqa: PLC0415 - the manager's check only

    # The sequential executor runs BlockingRunner, the pools Runner: both take these.
    accepted = set(inspect.signature(adaptive.BlockingRunner).parameters) - set(OWNED_RUNNER_KWARGS)
    for key, value in runner_kwargs.items():
        if key in OWNED_RUNNER_KWARGS:
            raise ConfigError(
                f"runner_kwargs[{key!r}] is set by adaptive_runner itself: "
                f"{OWNED_RUNNER_KWARGS[key]}"
            )
        if key not in accepted:
            raise ConfigError(
                f"runner_kwargs[{key!r}]: adaptive's runners take no such argument; "
                f"give one of {', '.join(sorted(accepted))}"
            )
        _check_pickles(value, f"runner_kwargs[{key!r}]")
    return dict(runner_kwargs)


def check_initializers(initializers: Sequence[Initializer] | None) -> list[Initializer]:
    """Check that each initializer is a callable that can be pickled.

    Raises
    ------
    ConfigError
        Naming the first initializer (index and name) that is not callable or cannot be
        pickled.

    """
    if initializers is None:
        return []
    given: object = initializers  # a user may give anything
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise ConfigError(
            f"initializers={initializers!r} must be a list of callables that take no "
            "arguments, e.g. initializers=[set_up]"
        )
    for index, initializer in enumerate(initializers):
        what = f"initializers[{index}] ({_name(initializer)})"
        if not callable(initializer):
            raise ConfigError(f"{what} is not callable: give functions that take no arguments")
        _check_pickles(initializer, what)
    return list(initializers)


def _check_pickles(value: object, what: str) -> None:
    import cloudpickle  # noqa: PLC0415 - the manager's check only

    try:
        cloudpickle.dumps(value)
    except Exception as e:  # any pickling failure becomes one clear error
        raise ConfigError(
            f"{what} cannot be pickled ({type(e).__name__}: {e}); every job gets a copy, "
            "so define it at module level or make what it captures picklable"
        ) from e


def _name(initializer: object) -> str:
    return str(getattr(initializer, "__qualname__", None) or repr(initializer))


def store(run_dir: RunDir, runner_kwargs: dict[str, Any], initializers: list[Initializer]) -> None:
    """Write both, cloudpickled, into ``run_dir`` (atomically; failures raise)."""
    import cloudpickle  # noqa: PLC0415 - the manager's side only

    atomic_write(run_dir.runner_kwargs_file, cloudpickle.dumps(runner_kwargs))
    atomic_write(run_dir.initializers_file, cloudpickle.dumps(initializers))


def stored(run_dir: RunDir) -> tuple[dict[str, Any], list[Initializer]]:
    """The runner kwargs and initializers :func:`store` wrote (none in an older run)."""
    initializers = _read(run_dir.initializers_file)
    return (
        _runner_kwargs(run_dir),
        [] if initializers is None else pickle.loads(initializers),  # noqa: S301 - the run's own
    )


def _runner_kwargs(run_dir: RunDir) -> dict[str, Any]:
    kwargs = _read(run_dir.runner_kwargs_file)
    return {} if kwargs is None else pickle.loads(kwargs)  # noqa: S301 - the run's own pickle


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # a run directory made before these files existed
        return None


def run_initializers(pickled: bytes) -> int:
    """Call each initializer of ``pickled`` (initializers.pickle's bytes), in order.

    Returns how many there are.

    Raises
    ------
    InitializerError
        For the first that raises, naming it and this process; its error is the cause.

    """
    initializers = pickle.loads(pickled)  # noqa: S301 - the run's own pickle
    for index, initializer in enumerate(initializers):
        try:
            initializer()
        except Exception as e:
            raise InitializerError(
                f"initializers[{index}] ({_name(initializer)}) failed in process "
                f"{os.getpid()}: {type(e).__name__}: {e}"
            ) from e
    return len(initializers)


class TaskSetup:
    """The run's initializers and Runner arguments as one task uses them."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._runner_kwargs: dict[str, Any] | None = None  # set once the initializers ran
        self.pool_initializer: Callable[[], object] | None = None  # what pool processes run

    def prepare(self) -> dict[str, Any]:
        """Run the initializers in this process (first call only); the extra Runner arguments.

        Raises :class:`InitializerError` when one fails: the task's learner fails with it.
        """
        if self._runner_kwargs is None:
            pickled = _read(self.run_dir.initializers_file)
            if pickled is not None and run_initializers(pickled):
                self.pool_initializer = partial(run_initializers, pickled)
            self._runner_kwargs = _runner_kwargs(self.run_dir)
        return dict(self._runner_kwargs)


class TaskExecutor:
    """The task's executor: made for its first learner, reused by the ones after it."""

    def __init__(self, group: GroupConfig, setup: TaskSetup) -> None:
        self.group = group
        self.setup = setup
        self._made: tuple[Executor, int] | None = None  # None too for sequential

    def get(self) -> tuple[Executor, int] | None:
        """The pool and how many points it evaluates at once; None for ``sequential``.

        Call after ``setup.prepare()``: each pool process runs the initializers first.
        """
        if self._made is None:
            from adaptive_runner.executors import make_executor  # noqa: PLC0415

            self._made = make_executor(
                self.group.executor, self.group.cores, initializer=self.setup.pool_initializer
            )
        return self._made

    def shutdown(self) -> None:
        """Stop it and the points it still evaluates (their learner is saved or given up)."""
        if self._made is not None:
            from adaptive_runner.executors import shutdown_executor  # noqa: PLC0415

            shutdown_executor(self._made[0], now=True)
            self._made = None

    def after_learner(self) -> None:
        """Give back the cores that a finished learner's cancelled points still hold.

        adaptive cancels the points in flight at the goal, but a pool process that is
        evaluating one goes on until it ends, hours later for some functions; a new pool for
        the next learner frees those cores now.
        """
        from adaptive_runner.executors import REMADE_BETWEEN_LEARNERS  # noqa: PLC0415

        if self.group.executor in REMADE_BETWEEN_LEARNERS:
            self.shutdown()
