"""parse_logs on a run with 10,000 tasks: a first full parse against incremental re-parses.

Writes a synthetic run directory: per task, one log as a job leaves it: a few lines of the
task's own output (one with an error for every tenth task), then the worker's JSON lines
(``started``, ``resumed``, ``--status`` status lines, a ``saved`` line every sixth status,
``done`` for every other task). Then it times, each ``--repeat`` times, the median shown (wall clock
and CPU time of this process; on a busy shared machine the CPU time is the stable figure):

- first parse: a fresh LogParser reads every file (what a parser without offsets pays on
  every poll; the files are in the page cache after the first repeat);
- re-parse, nothing new: the same parser again (one stat per file, nothing read);
- re-parse, a few lines: after appending one status line to ``--appended`` logs.

    python benchmarks/bench_parse_logs.py                 # 10,000 tasks, 60 status lines each
    python benchmarks/bench_parse_logs.py --tasks 1000    # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.status.log_parser import LogParser


def log_line(task: str, event: str, t: float, **fields: object) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
    record = {"task": task, **fields, "event": event, "level": "info", "timestamp": stamp}
    return json.dumps(record) + "\n"


def write_run(path: Path, n_tasks: int, n_status: int) -> RunDir:
    run_dir = RunDir(path)
    run_dir.logs_dir.mkdir(parents=True)
    t0 = 1_700_000_000.0
    for i in range(n_tasks):
        task = f"{1000 + i // 1000}_{i % 1000}"
        lines = [
            log_line(
                task,
                "started",
                t0,
                host=f"node{i % 64:03d}",
                pid=10_000 + i,
                array=task.split("_", maxsplit=1)[0],
                index=i % 1000,
                learner=i,
                fname=f"/scratch/data/learner_{i}.pickle",
            ),
            log_line(task, "resumed", t0 + 1, learner=i, npoints=100, seconds=0.01),
        ]
        for k in range(n_status):
            t = t0 + 60 * (k + 1)
            lines.append(
                log_line(
                    task,
                    "status",
                    t,
                    learner=i,
                    npoints=100 + 10 * k,
                    loss=1.0 / (k + 1),
                    npoints_per_s=0.17,
                    elapsed_s=60.0 * (k + 1),
                    cpu_percent=99.0,
                    memory_bytes=150_000_000,
                )
            )
            if k % 6 == 5:
                lines.append(log_line(task, "saved", t, learner=i, seconds=0.02, bytes=40_000))
        if i % 2 == 0:
            lines.append(log_line(task, "done", t0 + 60 * (n_status + 1), learner=i, loss=0.01))
        out = "loading modules\nstarting worker\n"
        if i % 10 == 0:
            out += "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=1.batch\n"
        run_dir.task_log(task).write_text(out + "".join(lines))
    return run_dir


def timed(fn: object) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()`` (CPU time is what a shared machine cannot steal)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--status", type=int, default=60, help="status lines per job log")
    parser.add_argument("--appended", type=int, default=20, help="logs that get a new line")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_dir = write_run(Path(tmp) / "run", args.tasks, args.status)
        size = sum(p.stat().st_size for p in run_dir.logs_dir.iterdir())
        print(
            f"wrote {args.tasks:,} job logs "
            f"({size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s"
        )
        first = [timed(lambda: LogParser(run_dir).parse()) for _ in range(args.repeat)]
        kept = LogParser(run_dir)
        records = kept.parse()
        assert len(records) == args.tasks
        unchanged = [timed(kept.parse) for _ in range(args.repeat)]
        appended = []
        logs = sorted(run_dir.logs_dir.glob("*.log"))
        step = max(1, len(logs) // args.appended)
        for r in range(args.repeat):
            for path in logs[::step][: args.appended]:
                with path.open("a") as f:
                    f.write(log_line(path.stem, "status", time.time(), npoints=10_000 + r))
            appended.append(timed(kept.parse))
        assert any(rec.npoints == 10_000 + args.repeat - 1 for rec in kept.parse())

    rows = [
        ("first parse (fresh LogParser)", first),
        ("re-parse, nothing new", unchanged),
        (f"re-parse, {args.appended} logs +1 line", appended),
    ]
    base = statistics.median(cpu for _, cpu in first)
    print(f"\n{args.tasks:,} tasks, median of {args.repeat}:")
    print(f"{'':36}{'wall s':>10}{'cpu s':>10}{'cpu vs first':>14}")
    for name, times in rows:
        wall = statistics.median(w for w, _ in times)
        cpu = statistics.median(c for _, c in times)
        print(f"{name:36}{wall:10.3f}{cpu:10.3f}{base / cpu:13.0f}x")


if __name__ == "__main__":
    main()
