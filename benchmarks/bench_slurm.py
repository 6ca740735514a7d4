"""adaptive_runner against adaptive-scheduler on the CI SLURM: wall time, scheduler calls, files.

16 Learner1Ds to 50 points each, 10 ms per point, cores=1, sequential executor. Each tool
runs twice per round: with its default ``max_simultaneous_jobs`` (16 tasks at once on this
2-core node) and with ``max_simultaneous_jobs=4`` (a throttle, as on a shared cluster), every
other setting at its default but adaptive-scheduler's ``job_manager_interval``, set to our
10 s queue poll (its 60 s default would add a minute per round of throttled jobs).

Wall time runs from ``start()`` until the tool's own records say every learner is done
(polled every 50 ms). Each round first measures the floor: 16 Pythons that import adaptive
and sleep for a learner's compute time, all at once, which is what any tool running one
process per learner cannot beat on a 2-core machine (our tasks go on to the next learner, so
with a throttle they start fewer Pythons). ``sbatch`` and ``squeue`` are counted by wrapper
scripts put first on PATH; files are counted in the run directory, the data directory and
(adaptive-scheduler writes there) the working directory.

    python benchmarks/bench_slurm.py            # both, side by side
    python benchmarks/bench_slurm.py --only ours
    python benchmarks/bench_slurm.py --rounds 3   # the machine is shared: repeat, alternate
    python benchmarks/bench_slurm.py --max-jobs 2 8   # other throttles (0: the default)

adaptive-scheduler comes with the ``bench`` extra; without it only our row is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptive
import cloudpickle

import adaptive_runner as ar

if TYPE_CHECKING:
    from collections.abc import Callable

cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_LEARNERS = 16
N_POINTS = 50
DELAY_S = 0.01
PATIENCE_S = 600.0


def f(x: float, a: float) -> float:
    time.sleep(DELAY_S)
    return a * x**2


def learners() -> list[adaptive.Learner1D]:
    return [adaptive.Learner1D(partial(f, a=a), bounds=(-1, 1)) for a in range(N_LEARNERS)]


@dataclass
class Result:
    tool: str
    max_jobs: int  # max_simultaneous_jobs, 0 for the tool's default
    wall_s: float
    sbatch: int
    squeue: int
    files: int


def install_wrappers(bin_dir: Path) -> None:
    """``sbatch`` and ``squeue`` that note each call in $BENCH_CALLS, then run the real one."""
    bin_dir.mkdir(parents=True)
    for name in ("sbatch", "squeue"):
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name} not found: start SLURM with ci/slurm/start.sh")
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho {name} >> "$BENCH_CALLS"\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def count_calls(calls: Path) -> tuple[int, int]:
    lines = calls.read_text().split() if calls.exists() else []
    return lines.count("sbatch"), lines.count("squeue")


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not done():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {what}")
        time.sleep(0.05)


def drain_queue() -> None:
    """Wait until no job of ours is in squeue, so the next tool starts on an empty node."""
    wait_until(
        lambda: (
            not subprocess.run(
                ["squeue", "--me", "-h"], capture_output=True, text=True, check=True
            ).stdout.strip()
        ),
        "the queue to drain",
    )


def throttle(max_jobs: int) -> dict[str, Any]:
    """The keyword both tools take for ``max_jobs`` (none: the tool's default)."""
    return {"max_simultaneous_jobs": max_jobs} if max_jobs else {}


def bench_ours(root: Path, max_jobs: int) -> Result:
    calls = root / "calls"
    os.environ["BENCH_CALLS"] = str(calls)
    fnames = [root / "data" / f"{i}.pickle" for i in range(N_LEARNERS)]
    rm = ar.RunManager(
        ar.SLURM(cores=1),
        learners(),
        fnames,
        goal=N_POINTS,
        run_dir=root / "run",
        **throttle(max_jobs),
    )
    started = time.monotonic()
    rm.start()
    wait_until(lambda: rm.status()["done"] == N_LEARNERS, "adaptive_runner's learners")
    wall = time.monotonic() - started
    assert rm.wait(timeout=PATIENCE_S)  # the job manager's last round, counted too
    sbatch, squeue = count_calls(calls)
    calls.unlink()
    return Result("adaptive_runner", max_jobs, wall, sbatch, squeue, count_files(root))


def bench_adaptive_scheduler(root: Path, max_jobs: int) -> Result:
    from adaptive_scheduler import RunManager  # noqa: PLC0415
    from adaptive_scheduler.scheduler import SLURM  # noqa: PLC0415

    calls = root / "calls"
    os.environ["BENCH_CALLS"] = str(calls)
    here = Path.cwd()
    os.chdir(root)  # it writes its job scripts, logs and database to the working directory
    try:
        scheduler = SLURM(cores=1, executor_type="sequential")
        fnames = [str(root / "data" / f"{i}.pickle") for i in range(N_LEARNERS)]
        rm = RunManager(
            scheduler,
            learners(),
            fnames,
            goal=N_POINTS,
            job_name="bench-as",
            # Its job manager looks at the queue every 60 s by default; give it our SLURM
            # poll interval, or a throttled run waits a minute per round of jobs.
            job_manager_interval=int(ar.SLURM.poll_interval_s),
            **throttle(max_jobs),
        )

        async def until_done() -> float:
            started = time.monotonic()
            rm.start()
            deadline = started + PATIENCE_S
            while not rm.database_manager.is_done():
                if time.monotonic() > deadline:
                    sys.exit("gave up waiting for adaptive-scheduler's learners")
                await asyncio.sleep(0.05)
            wall = time.monotonic() - started
            await asyncio.wait_for(rm.task, PATIENCE_S)
            return wall

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        wall = loop.run_until_complete(until_done())
        leftovers = asyncio.all_tasks(loop)  # its other managers' tasks
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.close()
    finally:
        os.chdir(here)
    sbatch, squeue = count_calls(calls)
    calls.unlink()
    return Result("adaptive-scheduler", max_jobs, wall, sbatch, squeue, count_files(root))


FLOOR_SCRIPT = f"import adaptive, time; time.sleep({N_POINTS * DELAY_S})"


def bench_floor(root: Path, max_jobs: int) -> Result:
    """What any one-process-per-learner tool pays here: 16 Pythons importing adaptive at once.

    Each also sleeps for its learner's compute time; no scheduler, no files.
    """
    del root, max_jobs
    started = time.monotonic()
    # Each in its own session, as SLURM starts tasks: with the kernel's autogroup scheduling
    # (sched_autogroup_enabled) one session's 16 processes would share one CPU slice.
    procs = [
        subprocess.Popen([sys.executable, "-c", FLOOR_SCRIPT], start_new_session=True)
        for _ in range(N_LEARNERS)
    ]
    if any(proc.wait() for proc in procs):
        sys.exit("the floor measurement failed")
    return Result("floor (import adaptive)", N_LEARNERS, time.monotonic() - started, 0, 0, 0)


def run_round(
    root: Path, only: str | None, max_jobs: list[int], *, theirs_first: bool
) -> list[Result]:
    """The floor, then each tool at each throttle (tools in the given order), queue drained."""
    tools = []
    if only != "adaptive-scheduler":
        tools.append(bench_ours)
    if only != "ours":
        tools.append(bench_adaptive_scheduler)
    if theirs_first:
        tools.reverse()
    runs = [(bench_floor, N_LEARNERS)] + [(tool, m) for m in max_jobs for tool in tools]
    results = []
    for bench, m in runs:
        workdir = root / f"{bench.__name__}-{m}"
        workdir.mkdir()
        drain_queue()
        results.append(bench(workdir, m))
        shutil.rmtree(workdir)
    order = ("floor (import adaptive)", "adaptive_runner", "adaptive-scheduler")
    return sorted(results, key=lambda r: (r.max_jobs if r.tool != order[0] else -1, r.tool))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["ours", "adaptive-scheduler"])
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure each tool this many times (order alternates)"
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        nargs="+",
        default=[0, 4],
        help="max_simultaneous_jobs settings to run each tool with; 0: the tool's default",
    )
    args = parser.parse_args()
    only = args.only
    if only != "ours":
        try:
            import adaptive_scheduler  # noqa: F401, PLC0415
        except ImportError:
            print("adaptive-scheduler is not installed (pip install '.[bench]'): ours only")
            only = "ours"
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    install_wrappers(root / "bin")
    try:
        rounds = [
            run_round(root, only, args.max_jobs, theirs_first=i % 2 == 1)
            for i in range(args.rounds)
        ]
    finally:
        shutil.rmtree(root)
    print(
        f"\n{N_LEARNERS} Learner1D x {N_POINTS} points, {DELAY_S * 1000:g} ms per point, "
        f"cores=1, on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    header = f"{'round':>5} {'tool':<24} {'max jobs':>8} {'wall s':>7} {'sbatch':>7}"
    print(f"{header} {'squeue':>7} {'files':>6} {'files/learner':>14}")
    for i, results in enumerate(rounds):
        for r in results:
            print(
                f"{i + 1:>5} {r.tool:<24} {r.max_jobs or 'default':>8} {r.wall_s:7.2f} "
                f"{r.sbatch:7d} {r.squeue:7d} {r.files:6d} {r.files / N_LEARNERS:14.2f}"
            )
        ours = {r.max_jobs: r for r in results if r.tool == "adaptive_runner"}
        theirs = {r.max_jobs: r for r in results if r.tool == "adaptive-scheduler"}
        for m in sorted(ours.keys() & theirs.keys()):
            a, b = ours[m], theirs[m]
            print(
                f"{i + 1:>5} {'ours / theirs':<24} {m or 'default':>8} {a.wall_s / b.wall_s:7.2f} "
                f"{a.sbatch / max(b.sbatch, 1):7.2f} {a.squeue / max(b.squeue, 1):7.2f} "
                f"{a.files / b.files:6.2f}"
            )
        if ours and theirs:  # each tool at the throttle that suited it best this round
            a, b = min(ours.values(), key=wall), min(theirs.values(), key=wall)
            print(
                f"{i + 1:>5} best / best: ours {a.wall_s:.2f} s ({a.max_jobs or 'default'}), "
                f"theirs {b.wall_s:.2f} s ({b.max_jobs or 'default'}), "
                f"ratio {a.wall_s / b.wall_s:.2f}"
            )


def wall(result: Result) -> float:
    return result.wall_s


if __name__ == "__main__":
    main()
