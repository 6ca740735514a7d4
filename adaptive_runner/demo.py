"""`adaptive-runner demo`: eight Learner1Ds run to 200 points each on the Local scheduler."""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

N_LEARNERS = 8
N_POINTS = 200


def peak(x: float, a: float) -> float:
    """A sharp peak whose width depends on ``a``: cheap, but worth sampling adaptively."""
    time.sleep(0.002)  # pretend to be a real computation
    width = 0.01 * (1 + a)
    return float(x + width**2 / (width**2 + x**2))


def run_demo(directory: Path) -> int:
    """Run the demo in ``directory`` with a progress line; return the exit code."""
    import adaptive  # noqa: PLC0415 - only the demo needs it; keeps `adaptive-runner --help` fast

    from adaptive_runner.manager.logs import configure_manager_logging  # noqa: PLC0415 - same reason
    from adaptive_runner.manager.run_manager import RunManager  # noqa: PLC0415 - same reason
    from adaptive_runner.schedulers.local import Local  # noqa: PLC0415 - same reason

    learners = [adaptive.Learner1D(partial(peak, a=a), bounds=(-1, 1)) for a in range(N_LEARNERS)]
    fnames = [directory / "data" / f"peak_{a}.pickle" for a in range(N_LEARNERS)]
    rm = RunManager(
        Local(cores=1),
        learners,
        fnames,
        goal=N_POINTS,
        run_dir=directory / "run",
        max_simultaneous_jobs=4,
        save_interval=2,
        log_interval=1,
        max_fails=3,
        overwrite=True,
    )
    configure_manager_logging(level="warning")  # the progress line says the rest
    start = time.monotonic()
    rm.start()
    print(f"Running {N_LEARNERS} learners to {N_POINTS} points each on the Local scheduler")
    while not rm.wait(timeout=0.5):
        _progress(rm.status(), time.monotonic() - start)
    counts = rm.status()
    _progress(counts, time.monotonic() - start)
    print()
    print(f"Run directory: {rm.run_dir.path}")
    print(f"Learner data:  {(directory / 'data').absolute()}")
    return 0 if counts["done"] == N_LEARNERS else 1


def _progress(counts: dict[str, int], elapsed_s: float) -> None:
    line = " | ".join(f"{state} {n}" for state, n in counts.items())
    sys.stdout.write(f"\r[{elapsed_s:5.1f} s] {line}")
    sys.stdout.flush()
