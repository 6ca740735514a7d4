from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import CancelledError, Executor
from pathlib import Path

import psutil
import pytest

from adaptive_runner.errors import ConfigError
from adaptive_runner.job.executors import make_executor, shutdown_executor


def pool(name: str, cores: int) -> tuple[Executor, int]:
    made = make_executor(name, cores)
    assert made is not None
    return made


def test_sequential_needs_no_executor() -> None:
    # Its points run in the learner's own thread (learner_runs.ThreadRun).
    assert make_executor("sequential", 4) is None


@pytest.mark.parametrize(("name", "cores", "ntasks"), [("process-pool", 2, 2), ("loky", 2, 2)])
def test_executor_evaluates_points(name: str, cores: int, ntasks: int) -> None:
    executor, n = pool(name, cores)
    try:
        assert n == ntasks
        # math.factorial is importable in any child, as the process pool requires.
        futures = [executor.submit(math.factorial, k) for k in range(8)]
        assert [f.result(timeout=120) for f in futures] == [math.factorial(k) for k in range(8)]
    finally:
        shutdown_executor(executor, now=False)


def test_loky_takes_functions_defined_anywhere() -> None:
    offset = 3
    executor, _ = pool("loky", 1)
    try:
        assert executor.submit(lambda x: x + offset, 4).result(timeout=120) == 7
    finally:
        shutdown_executor(executor, now=False)


def test_unknown_executor_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        make_executor("dask", 2)
    message = str(info.value)
    assert "'dask'" in message
    for name in ("sequential", "process-pool", "loky", "mpi4py"):
        assert name in message


@pytest.mark.parametrize("cores", [0, -1, 1.5, True])
def test_bad_cores(cores: object) -> None:
    with pytest.raises(ConfigError, match="cores="):
        make_executor("sequential", cores)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["process-pool", "loky"])
def test_shutdown_now_ends_running_points(name: str) -> None:
    executor, _ = pool(name, 1)
    pool_process = psutil.Process(executor.submit(os.getpid).result(timeout=120))
    future = executor.submit(time.sleep, 600)  # runs in that same, only pool process
    shutdown_executor(executor, now=True)
    pool_process.wait(timeout=60)
    assert not pool_process.is_running()
    # Cancelled if it had not reached the pool process yet (the pool's manager thread cancels
    # asynchronously, so ask the future, not cancelled() at once), else ended with an error.
    try:
        error = future.exception(timeout=60)
    except CancelledError:
        return
    assert error is not None


# The pool's ranks import the main module too (under another name), hence the guard.
MPI_SCRIPT = """
from adaptive_runner.job.executors import make_executor, shutdown_executor

if __name__ == "__main__":
    executor, ntasks = make_executor("mpi4py", 3)
    values = sorted(executor.map(abs, [-1, -2, -3, -4]))
    shutdown_executor(executor, now=False)
    print(ntasks, values)
"""


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (pip install mpich)")
def test_mpi4py_uses_the_ranks_mpiexec_started(tmp_path: Path) -> None:
    script = tmp_path / "mpi_job.py"
    script.write_text(MPI_SCRIPT)
    proc = subprocess.run(
        ["mpiexec", "-n", "3", sys.executable, "-m", "mpi4py.futures", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2 [1, 2, 3, 4]"
