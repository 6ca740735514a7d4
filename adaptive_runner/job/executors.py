"""The executors a worker evaluates points with: sequential, process-pool, loky and mpi4py.

Each backend's package is imported only when it is chosen, so a sequential worker never pays
for loky's workers or MPI's initialisation.

- ``sequential``: no pool; points run one at a time in the thread that runs the learner
  (``learner_runs.ThreadRun``), so the worker's event loop stays free to heartbeat, save and
  react to SIGTERM while a point that takes hours runs.
- ``process-pool``: the standard library's ProcessPoolExecutor with ``cores`` processes,
  started by a fork server (the worker has threads, so plain fork is unsafe). Functions are
  pickled by reference: the learner's function must live in an importable module.
- ``loky``: loky's reusable executor with ``cores`` processes; functions are cloudpickled, so
  functions defined in a notebook work.
- ``mpi4py``: an MPIPoolExecutor that sends points with cloudpickle (functions defined in a
  notebook work). In a job the worker runs under
  ``mpiexec -n CORES python -m mpi4py.futures -m adaptive_runner.worker RUN_DIR``: rank 0 is
  the worker and the other CORES - 1 ranks evaluate points.

adaptive's Runner submits ``learner.function`` with every point, and a pool pickles it each
time. A learner whose function holds stored functions (``common.function_store``: a closure
over a big array) runs on a :class:`StoredFunctionPool` instead: it submits a small pickle
naming them, and each pool process reads them from the run directory once.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from adaptive_runner.common.vocabulary import EXECUTORS, ExecutorName
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from adaptive_runner.common.function_store import StoredFunctions

P = ParamSpec("P")
T = TypeVar("T")

# Pools a task shuts down and makes again between learners, to free the processes still
# evaluating points of the finished one. mpi4py's pool is the job's MPI world (mpiexec
# started it) and cannot be made twice; sequential has no point in flight at the goal.
REMADE_BETWEEN_LEARNERS = frozenset({ExecutorName.PROCESS_POOL, ExecutorName.LOKY})


def make_executor(
    name: str, cores: int, *, initializer: Callable[[], object] | None = None
) -> tuple[Executor, int] | None:
    """Create the executor ``name`` for a job with ``cores`` cores.

    Returns the executor and how many points it evaluates at once (the Runner's ``ntasks``,
    given explicitly so adaptive need not probe the executor type, which imports mpi4py), or
    None for ``sequential``, which needs no executor.

    Parameters
    ----------
    name
        One of ``sequential``, ``process-pool``, ``loky``, ``mpi4py`` (run.json's executor).
    cores
        Cores of this job: the number of pool processes (for mpi4py, the MPI world's size).
    initializer
        Called first in each pool process (the run's initializers); picklable by reference.

    """
    if name not in EXECUTORS:
        raise ConfigError(f"executor={name!r} is unknown; choose one of {', '.join(EXECUTORS)}")
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise ConfigError(f"cores={cores!r}: must be a positive integer")
    if name == ExecutorName.SEQUENTIAL:
        return None
    if name == ExecutorName.PROCESS_POOL:
        import multiprocessing  # noqa: PLC0415

        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(cores, mp_context=context, initializer=initializer), cores
    if name == ExecutorName.LOKY:
        import loky  # noqa: PLC0415

        return loky.get_reusable_executor(max_workers=cores, initializer=initializer), cores
    return _mpi_executor(cores, initializer)


def _mpi_executor(cores: int, initializer: Callable[[], object] | None) -> tuple[Executor, int]:
    """An MPIPoolExecutor over the ranks ``mpiexec`` started, or ``cores`` spawned ones."""
    try:
        from mpi4py import MPI  # noqa: PLC0415
        from mpi4py.futures import MPIPoolExecutor  # noqa: PLC0415
    except ImportError as e:
        raise ConfigError(
            "executor='mpi4py' needs mpi4py and an MPI library on the compute nodes "
            f"(pip install mpi4py mpich): {e}"
        ) from e
    import pickle  # noqa: PLC0415

    import cloudpickle  # noqa: PLC0415

    # Send functions by value, as loky does: a learner's function may live in a notebook or
    # another unimportable module (the worker got it by value from the learner's pickle).
    # The pool ranks read cloudpickle's output with plain pickle.
    MPI.pickle.__init__(cloudpickle.dumps, pickle.loads)  # type: ignore[misc]  # documented API
    world = MPI.COMM_WORLD.Get_size()
    if world > 1:
        # Started by `mpiexec -n N python -m mpi4py.futures`: ranks 1..N-1 are the pool.
        return MPIPoolExecutor(initializer=initializer), world - 1
    # A single process (no mpiexec): the pool spawns its workers with MPI_Comm_spawn.
    return MPIPoolExecutor(max_workers=cores, initializer=initializer), cores


def shutdown_executor(executor: Executor, *, now: bool) -> None:
    """Shut ``executor`` down; with ``now``, also kill the points still being evaluated.

    ``now`` is for a worker that was told to stop (SIGTERM, lost ownership): its data is
    saved already, and waiting for running points could outlast the scheduler's grace period
    (Python waits for a process pool's running points before it exits).
    """
    if not now:
        executor.shutdown(wait=True)
        return
    if type(executor).__module__.startswith("loky."):
        executor.shutdown(wait=False, kill_workers=True)  # type: ignore[call-arg]
        return
    if isinstance(executor, ProcessPoolExecutor):
        # No public way to stop running calls before Python 3.14's terminate_workers();
        # _processes (pid -> Process) has been there since 3.2.
        processes = list(executor._processes.values())  # noqa: SLF001
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        return
    executor.shutdown(wait=False)  # nothing left queued: the runner cancelled it


class StoredFunctionPool(Executor):
    """``pool``, sent the functions it is given as :meth:`StoredFunctions.call` makes them.

    The last function's stand-in is kept: adaptive submits the same ``learner.function``
    with every point, so it is pickled (small) once per learner here.
    """

    def __init__(self, pool: Executor, stored: StoredFunctions) -> None:
        self.pool = pool
        self._stored = stored
        self._last: tuple[Callable[..., Any], Callable[..., Any]] | None = None

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Submit ``fn(*args, **kwargs)`` to the pool, ``fn`` by reference where it can be."""
        if self._last is None or self._last[0] is not fn:
            self._last = (fn, self._stored.call(fn))
        future: Future[T] = self.pool.submit(self._last[1], *args, **kwargs)
        return future
