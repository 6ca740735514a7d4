"""adaptive_runner against adaptive-scheduler on the CI SLURM: wall time, scheduler calls, files.

N Learner1Ds (16 unless ``--learners``) to 50 points each, 10 ms per point, cores=1,
sequential executor. Each tool runs with each ``max_simultaneous_jobs`` of ``--max-jobs``
(default: its own default, 16 tasks at once on this node's 16 slots, and 4, a throttle as on
a shared cluster), every other setting at its default but adaptive-scheduler's
``job_manager_interval``, set to our 10 s queue poll (its 60 s default would add a minute per
round of throttled jobs).

Wall time runs from ``start()`` until the tool's own records say every learner is done
(polled every 50 ms). Each round first measures the *floor* for each number of tasks at once,
``c = min(N, max jobs, slots)``: what any tool that starts one Python per task slot cannot
beat here. It is the wall time of ``c`` Pythons importing adaptive, all at once, each in its
own session (measured), plus the compute time spread over the ``c`` slots,
``N x 50 x 10 ms / c`` (added, not measured: no scheduler, no files). Slots are the default
partition's CPUs times its ``OverSubscribe=FORCE:k``. ``sbatch`` and ``squeue`` are counted by
wrapper scripts put first on PATH; files are counted in the run directory, the data directory
and (adaptive-scheduler writes there) the working directory.

    python benchmarks/bench_slurm.py            # 16 learners, both tools, side by side
    python benchmarks/bench_slurm.py --learners 200 --max-jobs 0   # minutes (theirs)
    python benchmarks/bench_slurm.py --learners 200 --only ours
    python benchmarks/bench_slurm.py --quick    # 32 learners, floor and ours; under a minute
    python benchmarks/bench_slurm.py --rounds 3   # the machine is shared: repeat, alternate
    python benchmarks/bench_slurm.py --max-jobs 2 8   # other throttles (0: the default)
    python benchmarks/bench_slurm.py --keep DIR   # keep our runs' directories (task logs)

Our jobs get this process's ``PYTHONPATH``, so they run the adaptive_runner it imported.
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

N_LEARNERS = 16  # unless --learners
QUICK_LEARNERS = 32
N_POINTS = 50
DELAY_S = 0.01
PATIENCE_S = 600.0


def f(x: float, a: float) -> float:
    time.sleep(DELAY_S)
    return a * x**2


def learners(n: int) -> list[adaptive.Learner1D]:
    return [adaptive.Learner1D(partial(f, a=a), bounds=(-1, 1)) for a in range(n)]


@dataclass
class Result:
    tool: str
    max_jobs: int  # max_simultaneous_jobs, 0 for the tool's default
    wall_s: float
    sbatch: int
    squeue: int
    files: int


@dataclass(frozen=True)
class Floor:
    """The floor for ``n`` learners run ``parallel`` at a time (one task slot each)."""

    n: int
    parallel: int
    startup_s: float  # measured: `parallel` Pythons importing adaptive at once
    compute_s: float  # n x points x delay / parallel

    @property
    def wall_s(self) -> float:
        return self.startup_s + self.compute_s


def slurm_slots() -> int:
    """Tasks the default partition runs at once: CPUs times OverSubscribe=FORCE:k."""
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%C|%h|%P"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        cpus, oversubscribe, partition = line.split("|")
        if partition.endswith("*"):  # the default partition
            total = int(cpus.split("/")[-1])  # allocated/idle/other/total
            share = oversubscribe.partition(":")[2]
            return total * int(share) if oversubscribe.startswith("FORCE") and share else total
    sys.exit(f"no default partition in sinfo's output {out!r}")


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


def bench_ours(root: Path, n: int, max_jobs: int, keep: Path | None) -> Result:
    calls = root / "calls"
    os.environ["BENCH_CALLS"] = str(calls)
    fnames = [root / "data" / f"{i}.pickle" for i in range(n)]
    # The jobs import the adaptive_runner this process imported (a worktree, say).
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    rm = ar.RunManager(
        ar.SLURM(cores=1, env=env),
        learners(n),
        fnames,
        goal=N_POINTS,
        run_dir=root / "run",
        **throttle(max_jobs),
    )
    here = Path.cwd()
    # Jobs start in the directory sbatch ran in, which `python -m` puts first on sys.path:
    # in a source tree, its adaptive_runner would shadow PYTHONPATH's.
    os.chdir(root)
    try:
        started = time.monotonic()
        rm.start()
        wait_until(lambda: rm.status()["done"] == n, "adaptive_runner's learners")
        wall = time.monotonic() - started
        assert rm.wait(timeout=PATIENCE_S)  # the job manager's last round, counted too
    finally:
        os.chdir(here)
    sbatch, squeue = count_calls(calls)
    calls.unlink()
    result = Result("adaptive_runner", max_jobs, wall, sbatch, squeue, count_files(root))
    if keep is not None:
        drain_queue()  # the tasks' last lines are written
        shutil.copytree(root / "run", keep / f"{n}-learners-{max_jobs or 'default'}-{started:.0f}")
    return result


def bench_adaptive_scheduler(root: Path, n: int, max_jobs: int, keep: Path | None) -> Result:
    from adaptive_scheduler import RunManager  # noqa: PLC0415
    from adaptive_scheduler.scheduler import SLURM  # noqa: PLC0415

    del keep  # only our runs are kept
    calls = root / "calls"
    os.environ["BENCH_CALLS"] = str(calls)
    here = Path.cwd()
    os.chdir(root)  # it writes its job scripts, logs and database to the working directory
    try:
        scheduler = SLURM(cores=1, executor_type="sequential")
        fnames = [str(root / "data" / f"{i}.pickle") for i in range(n)]
        rm = RunManager(
            scheduler,
            learners(n),
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


def bench_floor(n: int, parallel: int) -> Floor:
    """``parallel`` Pythons importing adaptive at once, plus the compute time over as many slots.

    Each in its own session, as SLURM starts tasks: with the kernel's autogroup scheduling
    (sched_autogroup_enabled) one session's processes would share one CPU slice.
    """
    started = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, "-c", "import adaptive"], start_new_session=True)
        for _ in range(parallel)
    ]
    if any(proc.wait() for proc in procs):
        sys.exit("the floor measurement failed")
    startup = time.monotonic() - started
    return Floor(n, parallel, startup, n * N_POINTS * DELAY_S / parallel)


@dataclass(frozen=True)
class Plan:
    n: int  # learners
    slots: int
    only: str | None  # one tool, or both
    max_jobs: list[int]
    keep: Path | None  # where our run directories are copied

    def parallel(self, max_jobs: int) -> int:
        """How many tasks run at once: both tools' default throttle (100) is above the slots."""
        return min(self.n, max_jobs or self.slots, self.slots)


@dataclass
class Round:
    floors: dict[int, Floor]  # by tasks at once
    results: list[Result]


def run_round(root: Path, plan: Plan, *, theirs_first: bool) -> Round:
    """The floors, then each tool at each throttle (tools in the given order), queue drained."""
    tools: list[Callable[[Path, int, int, Path | None], Result]] = []
    if plan.only != "adaptive-scheduler":
        tools.append(bench_ours)
    if plan.only != "ours":
        tools.append(bench_adaptive_scheduler)
    if theirs_first:
        tools.reverse()
    drain_queue()
    floors = {}
    for parallel in sorted({plan.parallel(m) for m in plan.max_jobs}, reverse=True):
        floors[parallel] = bench_floor(plan.n, parallel)
    results = []
    for m in plan.max_jobs:
        for bench in tools:
            workdir = root / f"{bench.__name__}-{m}"
            workdir.mkdir()
            drain_queue()
            results.append(bench(workdir, plan.n, m, plan.keep))
            shutil.rmtree(workdir)
    return Round(floors, sorted(results, key=lambda r: (r.max_jobs, r.tool)))


def print_round(i: int, plan: Plan, rnd: Round) -> None:
    n = plan.n
    for parallel, floor in rnd.floors.items():
        print(
            f"{i:>5} floor at {parallel} at once: {parallel} Pythons importing adaptive "
            f"{floor.startup_s:.2f} s (measured) + {n} x {N_POINTS} x {DELAY_S * 1000:g} ms "
            f"/ {parallel} = {floor.compute_s:.2f} s: {floor.wall_s:.2f} s"
        )
    for parallel, floor in rnd.floors.items():
        print(f"{i:>5} {'floor':<24} {parallel:>8} {floor.wall_s:7.2f} {1:7.2f}")
    for r in rnd.results:
        floor = rnd.floors[plan.parallel(r.max_jobs)]
        print(
            f"{i:>5} {r.tool:<24} {r.max_jobs or 'default':>8} {r.wall_s:7.2f} "
            f"{r.wall_s / floor.wall_s:7.2f} {r.sbatch:7d} {r.squeue:7d} {r.files:6d} "
            f"{r.files / n:14.2f}"
        )
    ours = {r.max_jobs: r for r in rnd.results if r.tool == "adaptive_runner"}
    theirs = {r.max_jobs: r for r in rnd.results if r.tool == "adaptive-scheduler"}
    for m in sorted(ours.keys() & theirs.keys()):
        a, b = ours[m], theirs[m]
        print(
            f"{i:>5} {'ours / theirs':<24} {m or 'default':>8} {a.wall_s / b.wall_s:7.2f} "
            f"{'':>7} {a.sbatch / max(b.sbatch, 1):7.2f} {a.squeue / max(b.squeue, 1):7.2f} "
            f"{a.files / b.files:6.2f}"
        )
    if len(ours) > 1 and theirs:  # each tool at the throttle that suited it best this round
        a, b = min(ours.values(), key=wall), min(theirs.values(), key=wall)
        print(
            f"{i:>5} best / best: ours {a.wall_s:.2f} s ({a.max_jobs or 'default'}), "
            f"theirs {b.wall_s:.2f} s ({b.max_jobs or 'default'}), "
            f"ratio {a.wall_s / b.wall_s:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--learners", type=int, default=None, help=f"how many learners (default {N_LEARNERS})"
    )
    parser.add_argument("--only", choices=["ours", "adaptive-scheduler"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_LEARNERS} learners (unless --learners), floor and ours at the default "
        "throttle only: under a minute",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure each tool this many times (order alternates)"
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        nargs="+",
        default=None,
        help="max_simultaneous_jobs settings to run each tool with; 0: the tool's default "
        "(default: 0 4; with --quick: 0)",
    )
    parser.add_argument("--keep", type=Path, help="copy each of our run directories here")
    parser.add_argument("--slots", type=int, help="task slots (default: read from sinfo)")
    args = parser.parse_args()
    n = args.learners or (QUICK_LEARNERS if args.quick else N_LEARNERS)
    max_jobs = args.max_jobs or ([0] if args.quick else [0, 4])
    only = "ours" if args.quick and args.only is None else args.only
    if only != "ours":
        try:
            import adaptive_scheduler  # noqa: F401, PLC0415
        except ImportError:
            print("adaptive-scheduler is not installed (pip install '.[bench]'): ours only")
            only = "ours"
    plan = Plan(n, args.slots or slurm_slots(), only, max_jobs, args.keep)
    if plan.keep is not None:
        plan.keep.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    install_wrappers(root / "bin")
    try:
        rounds = [run_round(root, plan, theirs_first=i % 2 == 1) for i in range(args.rounds)]
    finally:
        shutil.rmtree(root)
    print(
        f"\n{n} Learner1D x {N_POINTS} points, {DELAY_S * 1000:g} ms per point, cores=1, "
        f"{plan.slots} slots on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    header = f"{'round':>5} {'tool':<24} {'max jobs':>8} {'wall s':>7} {'/floor':>7}"
    print(f"{header} {'sbatch':>7} {'squeue':>7} {'files':>6} {'files/learner':>14}")
    for i, rnd in enumerate(rounds):
        print_round(i + 1, plan, rnd)


def wall(result: Result) -> float:
    return result.wall_s


if __name__ == "__main__":
    main()
