"""A learner function that closes over 50 MB: run directory size, and loky against sequential.

Two measurements, each as earlier releases wrote the run directory ("before": every learner
cloudpickled whole, function and all) and as a RunManager writes it now ("after": the
function stored once in functions/, the learners naming it):

- **size**: the run directory of 6 Learner1D sharing one function that closes over a 50 MB
  array (written by the run manager's own code, ``run_setup.create_run``);
- **time**: the real worker (claiming from a real DatabaseManager) running one such learner
  to 100 points of a 10 ms function, on ``loky`` with 2 processes and on ``sequential``, from
  process start to exit, side by side in one run (interleaved, medians of ``--repeat``). A
  "before" run directory is what a worker of this release reads as earlier releases' runs:
  nothing is stored, so its pool gets the function with every point, as it did then.

    python benchmarks/bench_big_closures.py             # 3 repeats; ~3 min
    python benchmarks/bench_big_closures.py --quick     # once, 20 MB; ~1 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptive
import cloudpickle
import numpy as np
from bench_worker_startup import make_run, started, worker_env

import adaptive_runner as ar
from adaptive_runner.manager.logs import configure_manager_logging
from adaptive_runner.manager.run_setup import create_run, pickle_learners

if TYPE_CHECKING:
    from adaptive_runner.common.run_dir import RunDir

# The function goes to the worker by value, as one defined in a notebook does.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1 << 20
NPOINTS = 100
DELAY_S = 0.010
CORES = 2
LAYOUTS = ("before", "after")
EXECUTORS = ("sequential", "loky")
TARGET = 1.5  # after: loky within 1.5x of sequential


def closure(nbytes: int) -> Any:
    """A 10 ms function of x closing over ``nbytes`` of random (incompressible) data."""
    data = np.random.default_rng(0).random(nbytes // 8)

    def f(x: float) -> float:
        import time  # noqa: PLC0415 - runs in the worker and its pool, pickled by value

        time.sleep(DELAY_S)
        return x * x + float(data[0])

    return f


def write_learners(run_dir: RunDir, learners: list[Any], layout: str) -> None:
    """The learner packs (and functions/) as ``layout`` has them."""
    if layout == "before":
        run_dir.write_learners([cloudpickle.dumps(learner) for learner in learners])
        return
    blobs, functions = pickle_learners(learners)
    run_dir.write_functions(functions)
    run_dir.write_learners(blobs)


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_size(tmp: Path, nbytes: int) -> dict[str, int]:
    """Bytes of the run directory of 6 learners sharing one function, per layout."""
    f = closure(nbytes)
    learners = [adaptive.Learner1D(f, bounds=(-1, 1 + k)) for k in range(6)]
    fnames = [str(tmp / "data" / f"{k}.pickle") for k in range(6)]
    sizes = {}
    for layout in LAYOUTS:
        rm = ar.RunManager(ar.Local(), learners, fnames, goal=10, run_dir=tmp / f"size-{layout}")
        create_run(rm.run_dir, rm.spec, replace=False)  # what RunManager.start() writes
        if layout == "before":  # the same run directory with the packs of earlier releases
            shutil.rmtree(rm.run_dir.functions_dir)
            write_learners(rm.run_dir, learners, layout)
        sizes[layout] = size_of(rm.run_dir.path)
    return sizes


def time_worker(tmp: Path, nbytes: int, layout: str, executor: str) -> dict[str, float]:
    """One worker run to NPOINTS: wall seconds from process start to exit, and to 'started'."""
    learner = adaptive.Learner1D(closure(nbytes), bounds=(-1, 1))
    group = {"executor": executor, "cores": CORES if executor == "loky" else 1}
    run_dir = make_run(tmp, learner, NPOINTS, group, save_interval_s=60.0, log_interval_s=5.0)
    write_learners(run_dir, [learner], layout)
    with started(run_dir):
        begin = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "adaptive_runner.worker", str(run_dir.path)],
            env=worker_env(0),
            capture_output=True,
            text=True,
            check=False,
        )
        end = time.time()
    log = run_dir.task_log("L1_0").read_text()
    if proc.returncode != 0:
        raise SystemExit(f"worker exited with {proc.returncode}:\n{proc.stderr}\n{log}")
    events = {e["event"]: e for e in map(json.loads, log.splitlines())}
    if events["done"]["npoints"] < NPOINTS:
        raise SystemExit(f"worker ended at {events['done']['npoints']} points, not {NPOINTS}")
    claimed = datetime.fromisoformat(events["started"]["timestamp"]).timestamp()
    return {"total": end - begin, "after_claim": end - claimed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="once, with a 20 MB closure")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    configure_manager_logging(level="warning")
    repeat = 1 if args.quick else args.repeat
    nbytes = (20 if args.quick else 50) * MB
    with tempfile.TemporaryDirectory() as tmp:
        sizes = measure_size(Path(tmp), nbytes)
        print(f"run directory of 6 learners sharing a {nbytes // MB} MB closure:")
        for layout in LAYOUTS:
            print(f"  {layout:<7}{sizes[layout] / MB:>9.1f} MB")
        times: dict[tuple[str, str], list[dict[str, float]]] = {}
        for rep in range(repeat):
            combos = [(layout, executor) for layout in LAYOUTS for executor in EXECUTORS]
            for layout, executor in combos if rep % 2 == 0 else combos[::-1]:
                into = times.setdefault((layout, executor), [])
                base = Path(tmp) / f"{layout}-{executor}-{rep}"
                into.append(time_worker(base, nbytes, layout, executor))
                print(
                    f"  rep {rep} {layout:<7}{executor:<11}{into[-1]['total']:8.2f} s", flush=True
                )
    print(
        f"\n{NPOINTS} points of {DELAY_S * 1000:g} ms, {nbytes // MB} MB closure; median of "
        f"{repeat}; seconds"
    )
    print(f"{'layout':<8}{'executor':<12}{'total':>8}{'from claim':>12}{'loky/sequential':>17}")
    for layout in LAYOUTS:
        medians = {
            executor: {
                key: statistics.median(t[key] for t in times[(layout, executor)])
                for key in ("total", "after_claim")
            }
            for executor in EXECUTORS
        }
        ratio = medians["loky"]["total"] / medians["sequential"]["total"]
        for executor in EXECUTORS:
            m = medians[executor]
            shown = f"{ratio:>17.2f}" if executor == "loky" else ""
            print(f"{layout:<8}{executor:<12}{m['total']:>8.2f}{m['after_claim']:>12.2f}{shown}")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target: after, loky/sequential <= {TARGET}: {verdict}")


if __name__ == "__main__":
    main()
