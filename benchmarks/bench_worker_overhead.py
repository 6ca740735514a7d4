"""Per-point cost of our worker against adaptive's own runner, side by side in one run.

One Learner1D to a number of points, its function sleeping 0, 1 or 10 ms. For each executor
the same learner runs twice, interleaved, each in a fresh process:

- **adaptive**: ``BlockingRunner`` with adaptive's ``SequentialExecutor`` (the sequential
  row), or adaptive's own ``Runner`` with the executor our worker makes for that name and
  the same cores (the process-pool and loky rows);
- **ours**: the real worker (``python -m adaptive_runner.worker``) claiming the learner from a
  real DatabaseManager over CURVE, heartbeating every second and saving every 2 s (the
  defaults are 60 s and 300 s: this is the worst case of what the worker adds).

A point costs (end - first evaluation) / points, where the first evaluation is stamped by
the function itself and the end is the runner's return for adaptive, and for ours the start
of the worker's final save (its duration is shown apart: adaptive saves nothing). The table
shows medians of ``--repeat`` runs, and the median of the ratios of the runs paired back to
back (alternating which goes first).

    python benchmarks/bench_worker_overhead.py           # 0, 1, 10 ms; three executors
    python benchmarks/bench_worker_overhead.py --quick   # a fifth of the points, once (< 1 min)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import adaptive
from bench_points import point
from bench_worker_startup import ARRAY_ID, REPO, make_run, started

from adaptive_runner.manager.logs import configure_manager_logging

HERE = Path(__file__).resolve().parent
EXECUTORS = ("sequential", "process-pool", "loky")
DELAYS_MS = (0, 1, 10)
CORES = 2  # pool processes (this machine has 2 cores)
# Points per run: about 3 s of work per run for each delay.
NPOINTS = {0: 10_000, 1: 3000, 10: 300}
TARGETS = {("sequential", 0): 1.5, ("sequential", 1): 1.02}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}


def learner(delay_ms: int, stamp: Path) -> adaptive.Learner1D:
    f = functools.partial(point, delay=delay_ms / 1000, stamp=str(stamp))
    return adaptive.Learner1D(f, bounds=(-1, 1))


def run_adaptive(executor: str, delay_ms: int, npoints: int, stamp: Path) -> None:
    """In a fresh process: adaptive's own runner; prints the wall time at its end."""
    from adaptive_runner.job.executors import make_executor, shutdown_executor  # noqa: PLC0415

    lrn = learner(delay_ms, stamp)
    made = make_executor(executor, CORES)
    if made is None:
        sequential = adaptive.runner.SequentialExecutor()
        adaptive.BlockingRunner(lrn, npoints_goal=npoints, executor=sequential)
        print(json.dumps({"end": time.time()}))
        return
    pool, ntasks = made
    runner = adaptive.Runner(lrn, npoints_goal=npoints, executor=pool, ntasks=ntasks)
    runner.ioloop.run_until_complete(runner.task)
    runner.task.result()
    print(json.dumps({"end": time.time()}))
    shutdown_executor(pool, now=True)


def time_adaptive(tmp: Path, executor: str, delay_ms: int, npoints: int) -> tuple[float, float]:
    """Seconds per point (adaptive saves nothing)."""
    stamp = tmp / "first_point"
    proc = subprocess.run(
        [sys.executable, __file__, "--adaptive", executor, str(delay_ms), str(npoints), str(stamp)],
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    end = json.loads(proc.stdout.strip().splitlines()[-1])["end"]
    return (end - float(stamp.read_text())) / npoints, 0.0


def time_ours(tmp: Path, executor: str, delay_ms: int, npoints: int) -> tuple[float, float]:
    """Seconds per point, and the seconds of the final save that follows the last point."""
    stamp = tmp / "first_point"
    run_dir = make_run(
        tmp / "run",
        learner(delay_ms, stamp),
        npoints,
        {"executor": executor, "cores": 1 if executor == "sequential" else CORES},
        save_interval_s=2.0,
        log_interval_s=1.0,
    )
    with started(run_dir):
        proc = subprocess.run(
            [sys.executable, "-m", "adaptive_runner.worker", str(run_dir.path)],
            env={**env(), "LOCAL_ARRAY_ID": ARRAY_ID, "LOCAL_ARRAY_TASK_ID": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
    log = run_dir.task_log(f"{ARRAY_ID}_0").read_text()
    if proc.returncode != 0:
        raise SystemExit(f"worker exited with {proc.returncode}:\n{proc.stderr}\n{log}")
    events = [json.loads(line) for line in log.splitlines()]
    done = next(e for e in events if e["event"] == "done")
    if done["npoints"] < npoints:
        raise SystemExit(f"worker ended at {done['npoints']} points, not {npoints}")
    # The points end where the final save (the last "saved" before "done") begins.
    final_save = [e for e in events if e["event"] == "saved"][-1]
    end = datetime.fromisoformat(final_save["timestamp"]).timestamp() - final_save["seconds"]
    return (end - float(stamp.read_text())) / npoints, final_save["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and repeats")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--executors", nargs="+", default=EXECUTORS, choices=EXECUTORS)
    parser.add_argument("--delays", nargs="+", type=int, default=DELAYS_MS)
    parser.add_argument("--adaptive", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.adaptive:
        executor, delay_ms, npoints, stamp = args.adaptive
        run_adaptive(executor, int(delay_ms), int(npoints), Path(stamp))
        return
    configure_manager_logging(level="warning")  # the managers' start and stop lines
    repeat = 1 if args.quick else args.repeat
    scale = 0.2 if args.quick else 1.0
    print(f"median of {repeat} runs each; ms per point; ours: heartbeat 1 s, save 2 s")
    print(
        f"{'executor':<13}{'point ms':>9}{'points':>8}{'adaptive':>10}{'ours':>9}"
        f"{'ratio':>8}{'+ms/pt':>9}{'save ms':>9}  target"
    )
    for executor in args.executors:
        for delay_ms in args.delays:
            npoints = max(20, int(NPOINTS.get(delay_ms, 200) * scale))
            theirs: list[tuple[float, float]] = []
            ours: list[tuple[float, float]] = []
            for rep in range(repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    base = Path(tmp)
                    (base / "a").mkdir()
                    (base / "o").mkdir()
                    # Alternate which goes first: the machine's noise hits both alike.
                    order = [("a", time_adaptive, theirs), ("o", time_ours, ours)]
                    for sub, timer, into in order if rep % 2 == 0 else order[::-1]:
                        into.append(timer(base / sub, executor, delay_ms, npoints))
            a = statistics.median(t for t, _ in theirs) * 1000
            o = statistics.median(t for t, _ in ours) * 1000
            save_ms = statistics.median(t for _, t in ours) * 1000
            # Each pair ran back to back, so the median of the pairs' ratios is less at the
            # mercy of a busy moment than the ratio of the medians.
            ratio = statistics.median(x[0] / y[0] for x, y in zip(ours, theirs, strict=True))
            target = TARGETS.get((executor, delay_ms), None if executor == "sequential" else 1.0)
            met = target is not None and ratio <= target
            verdict = "" if target is None else f"<= {target}: {'met' if met else 'MISSED'}"
            print(
                f"{executor:<13}{delay_ms:>9}{npoints:>8}{a:>10.3f}{o:>9.3f}"
                f"{ratio:>8.2f}{o - a:>+9.3f}{save_ms:>9.1f}  {verdict}",
                flush=True,
            )


if __name__ == "__main__":
    main()
