"""What a packed allocation costs with its idle nodes handed back, against keeping them.

On the three-node SLURM of ci/slurm/start.sh: one allocation of 3 nodes x 2 workers (one
core each) runs 7 Learner1D to 60 points; learner 0 is 25x slower than the others, so most
workers find no learner left long before it ends. sacct's CPUTimeRAW (allocated CPUs times
elapsed, summed over the job's records: a resized job has one per size) is what the
allocation cost; without retirement the same job would have held its first size to its end.
The learners' held core-seconds (the tasks table) are what was used. One run, side by side:

    python benchmarks/bench_node_retirement.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import adaptive
import cloudpickle

import adaptive_runner as ar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers_run import slow_square

cloudpickle.register_pickle_by_value(sys.modules["helpers_run"])


def one_run(base: Path) -> dict[str, float]:
    learners = [
        adaptive.Learner1D(
            functools.partial(slow_square, a=a, delay=0.25 if a == 0 else 0.01), bounds=(-1, 1)
        )
        for a in range(7)
    ]
    fnames = [base / "data" / f"l{i}.pickle" for i in range(7)]
    rm = ar.RunManager(
        ar.SLURM(workers_per_node=2, nodes=3, cores=1),
        learners,
        fnames,
        goal=60,
        run_dir=base / "run",
        max_simultaneous_jobs=1,
        save_interval=1,
        log_interval=0.5,
        poll_interval=0.5,
    ).start()
    try:
        assert rm.wait(timeout=300)
    finally:
        rm.stop()
    conn = sqlite3.connect(base / "run" / "state.sqlite")
    (array,) = [row[0] for row in conn.execute("SELECT array_id FROM arrays")]
    (held,) = conn.execute("SELECT sum(finished - started) FROM tasks").fetchone()
    conn.close()
    rows = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", array, "-o", "AllocCPUS,ElapsedRaw,CPUTimeRAW"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    records = [tuple(int(x) for x in row.split("|")) for row in rows]
    first_cpus = records[0][0]
    elapsed = sum(r[1] for r in records)
    return {
        "held": float(held),
        "allocated": float(sum(r[2] for r in records)),
        "kept": float(first_cpus * elapsed),
        "sizes": float(len(records)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("core-seconds: held by learners | allocated, idle nodes handed back | if kept")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            r = one_run(Path(tmp))
        print(
            f"run {i}: {r['held']:6.1f} | {r['allocated']:6.1f} ({int(r['sizes'])} sizes) | "
            f"{r['kept']:6.1f}   allocated/kept {r['allocated'] / r['kept']:.2f}, "
            f"idle {r['allocated'] - r['held']:.1f} vs {r['kept'] - r['held']:.1f}"
        )


if __name__ == "__main__":
    main()
