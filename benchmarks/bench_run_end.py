"""How a packed run ends: its allocation left to end by itself, against cancelled at once.

On the three-node SLURM of ci/slurm/start.sh: one allocation of ``--nodes`` x 2 workers (one
core each) runs 2 x nodes x 2 Learner1D to 30 points. At the run's end the job manager
either leaves the running allocation to end by itself (each worker hears "no more work" and
exits 0; at most ``FINISH_GRACE_S``), or, as before, cancels it at once (``FINISH_GRACE_S``
set to 0 here). For each: the seconds from the last learner's ``done`` to ``rm.wait()``
returning, the allocation's state in sacct and whether its log has an error line. The two
alternate, side by side in one process:

    python benchmarks/bench_run_end.py [--repeat 3] [--nodes 1 2]
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adaptive
import cloudpickle

import adaptive_runner as ar
from adaptive_runner.manager import job_manager

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers_run import slow_square

cloudpickle.register_pickle_by_value(sys.modules["helpers_run"])


def one_run(base: Path, nodes: int) -> tuple[float, str, bool]:
    """Seconds from the last done to wait() returning; sacct's states; an error line?"""
    n = 2 * nodes * 2
    learners = [
        adaptive.Learner1D(functools.partial(slow_square, a=a, delay=0.01), bounds=(-1, 1))
        for a in range(n)
    ]
    fnames = [base / "data" / f"l{i}.pickle" for i in range(n)]
    rm = ar.RunManager(
        ar.SLURM(workers_per_node=2, nodes=nodes, cores=1),
        learners,
        fnames,
        goal=30,
        run_dir=base / "run",
        max_simultaneous_jobs=1,
        save_interval=1,
        log_interval=0.5,
        poll_interval=0.5,
    ).start()
    try:
        assert rm.wait(timeout=300)
        returned = time.time()
    finally:
        rm.stop()
    conn = sqlite3.connect(base / "run" / "state.sqlite")
    (array,) = [row[0] for row in conn.execute("SELECT array_id FROM arrays")]
    (last_done,) = conn.execute("SELECT max(finished) FROM tasks").fetchone()
    conn.close()
    states: list[str] = []
    for _ in range(50):  # accounting lags a moment behind the queue
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", array, "-o", "State"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = [line.split()[0] for line in out.splitlines() if line]
        if states and not {"RUNNING", "COMPLETING", "PENDING"} & set(states):
            break
        time.sleep(0.2)
    log = (base / "run" / "logs" / f"{array}_0.log").read_text()
    return returned - last_done, ",".join(states), "error" in log.lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    grace = job_manager.FINISH_GRACE_S
    variants = {"ends by itself": grace, "cancelled at once": 0.0}
    print("nodes | variant | last done -> wait() returned | sacct | error line in its log")
    for nodes in args.nodes:
        latency: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, seconds in variants.items():
                job_manager.FINISH_GRACE_S = seconds
                with tempfile.TemporaryDirectory() as tmp:
                    took, states, error = one_run(Path(tmp), nodes)
                latency[name].append(took)
                print(f"{nodes} | {name:17} | {took:5.2f} s | {states} | {error}")
        job_manager.FINISH_GRACE_S = grace
        mine, theirs = (sorted(latency[name])[len(latency[name]) // 2] for name in variants)
        print(f"{nodes} node(s): median {mine:.2f} s vs {theirs:.2f} s, ratio {mine / theirs:.2f}")


if __name__ == "__main__":
    main()
