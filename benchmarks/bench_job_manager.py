"""One job manager round with N tasks running, and parsing N lines of squeue: CPU time.

The job manager is a thread in the same process as the database manager (it takes the GIL
the serving thread needs), and it runs a round every ``poll_interval_s`` (and a short one
when a learner is done). Here ``JobManager.round()`` is driven with the in-memory scheduler
of tests/test_job_manager.py: one recorded array of N tasks, all running, each holding a
learner with a fresh heartbeat, so the round finds nothing to do but must look at everything
(queue, holders, leases, unclaimed tasks). Separately, ``slurm.parse_squeue`` reads N lines
of ``squeue`` output, which the SLURM scheduler's ``queue_named`` adds to each round.

    python benchmarks/bench_job_manager.py               # 10,000 and 100,000 tasks
    python benchmarks/bench_job_manager.py --n 1000000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from adaptive_runner.manager.job_manager import JobManager
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.schedulers.slurm import parse_squeue
from adaptive_runner.state.database import Database

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers_run import make_run

from adaptive_runner.testing import MemoryScheduler

ROUNDS = 5


def bench(base: Path, n: int) -> dict[str, float]:
    run_dir = make_run(base / f"run{n}", n)
    scheduler = MemoryScheduler()
    now = time.time()
    array_id = scheduler.submit(Path("array.sh"), n_tasks=n, max_running=n, tag="bench")
    scheduler.set_all(array_id, JobState.RUNNING)
    with Database.open(run_dir.database) as db:
        db.record_array(array_id, n_tasks=n, script="array.sh", now=now, tag="bench")
        with db.batch():
            for i in range(n):
                db.claim(f"{array_id}_{i}", host="node", pid=1, now=now, array=array_id)
        manager = JobManager(
            run_dir,
            [scheduler],
            max_simultaneous_jobs=n,
            lease_timeout_s=600.0,
            poll_interval_s=60.0,
            max_fails=3,
            claim_timeout_s=600.0,
            clock=time.time,
        )
        manager.round(db)  # the first round adopts nothing and learns the queue
        rounds, quick = [], []
        for _ in range(ROUNDS):
            start = time.process_time()
            manager.round(db)
            rounds.append(time.process_time() - start)
            start = time.process_time()
            manager.quick_round(db)
            quick.append(time.process_time() - start)
    text = "".join(f"{array_id}|{i}|RUNNING|bench\n" for i in range(n))
    start = time.process_time()
    parsed = parse_squeue(text, [array_id])
    parse = time.process_time() - start
    assert len(parsed) == n
    return {
        "round": statistics.median(rounds),
        "quick": statistics.median(quick),
        "squeue": parse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    print(f"{'tasks':>10} {'round s':>8} {'quick round s':>14} {'parse squeue s':>15}")
    with tempfile.TemporaryDirectory(prefix="bench-jm-") as tmp:
        for n in args.n:
            r = bench(Path(tmp), n)
            print(f"{n:>10,} {r['round']:>8.3f} {r['quick']:>14.4f} {r['squeue']:>15.3f}")


if __name__ == "__main__":
    main()
