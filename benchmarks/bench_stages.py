"""Progressive sweeps: ``goal=[25, 200]`` against ``goal=200``, side by side in one run.

48 ``adaptive.Learner1D`` of peaks of different widths and places (so their losses differ
after the same number of points), each point a 40 ms sleep (``--delay-ms``: so the 2 cores
are not what limits 8 workers), run to 200 points on the Local scheduler with 8 slots
(``Local(cores=1)``, ``max_simultaneous_jobs=8``), ``save_interval=5``, ``log_interval=2``,
``poll_interval=1`` (seconds). The plain goal and the staged one alternate, ``--repeat``
times each. For each run:

- **wall**: seconds from ``start()`` to ``wait()`` returning;
- **all >= 25**: seconds from ``start()`` until every learner had at least 25 points. The
  function appends the time of each evaluation to a file per learner in the run's temporary
  directory (it goes to the jobs by value, as a notebook's function does), so this is the
  time of each learner's 25th evaluation, the latest of them; **1st point** is the first
  evaluation of any learner (the workers' start-up, paid alike by both modes) and **after
  1st** the time from it to all >= 25;
- **saves** and **loads**: the ``saved`` and ``resumed`` events of the task logs, and the
  hand-backs (``handed_back``) and stages gone on with (``stage_reached`` with ``go_on``).

Targets: wall staged / plain <= 1.10; all >= 25 plain / staged >= 4 (medians).

    python benchmarks/bench_stages.py [--repeat 2] [--keep DIR] [--delay-ms 40]  # ~4.5 min

The workers' start-up (each imports adaptive, with scipy and pandas: ~1.3 s of CPU, 8 of them
on 2 cores here) is paid by both modes and counts in all >= 25: the longer a point takes, the
less it weighs (``--delay-ms 100``).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import adaptive
import cloudpickle
import numpy as np

import adaptive_runner as ar

if TYPE_CHECKING:
    from adaptive_runner.common.goals import Goal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers_run import task_events

# The function goes to the jobs by value, as one defined in a notebook does.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_LEARNERS = 48
SLOTS = 8
DELAY_S = 0.040
FIRST, LAST = 25, 200
MODES: dict[str, Goal] = {"plain": LAST, "staged": ar.Stages(FIRST, LAST)}
SAVE_S, LOG_S, POLL_S = 5, 2, 1  # save_interval, log_interval, poll_interval
WALL_TARGET = 1.10  # staged / plain
FIRST_TARGET = 4.0  # plain / staged


def peak(x: float, width: float, center: float, record: str, delay: float) -> float:
    """A peak of ``width`` at ``center`` after a ``delay`` sleep; the time goes to ``record``."""
    time.sleep(delay)
    with Path(record).open("a") as f:  # one short line per write: O_APPEND keeps them whole
        f.write(f"{time.time()!r}\n")
    return float(np.exp(-((x - center) ** 2) / width**2))


def make_learners(records: Path, delay: float) -> list[adaptive.Learner1D]:
    """Widths from 0.005 to 0.5 (log-spaced), centres spread over (-0.8, 0.8)."""
    widths = np.geomspace(0.005, 0.5, N_LEARNERS)
    return [
        adaptive.Learner1D(
            functools.partial(
                peak,
                width=float(w),
                center=0.8 * math.sin(7 * i),
                record=str(records / f"{i}"),
                delay=delay,
            ),
            bounds=(-1, 1),
        )
        for i, w in enumerate(widths)
    ]


def one_run(base: Path, goal: Goal, delay: float) -> dict[str, float]:
    """Wall time, time until every learner had FIRST points, and the task logs' counts."""
    records = base / "records"
    records.mkdir()
    learners = make_learners(records, delay)
    fnames = [base / "data" / f"l{i}.pickle" for i in range(N_LEARNERS)]
    rm = ar.RunManager(
        ar.Local(cores=1),
        learners,
        fnames,
        goal=goal,
        run_dir=base / "run",
        max_simultaneous_jobs=SLOTS,
        save_interval=SAVE_S,
        log_interval=LOG_S,
        poll_interval=POLL_S,
    )
    started = time.time()
    rm.start()
    try:
        assert rm.wait(timeout=1800)
        wall = time.time() - started
    finally:
        rm.stop()
    firsts, points = [], []
    for i in range(N_LEARNERS):
        times = sorted(float(line) for line in (records / f"{i}").read_text().split())
        assert len(times) == LAST, f"learner {i}: {len(times)} evaluations, not {LAST}"
        firsts.append(times[FIRST - 1] - started)
        points.append(times[0] - started)
    (base / "started").write_text(repr(started))  # for a look at a kept run's records
    events = task_events(base / "run")
    counts = Counter(e["event"] for e in events)
    return {
        "wall": wall,
        "startup": min(points),
        "first": max(firsts),
        "after": max(firsts) - min(points),
        "saves": counts["saved"],
        "loads": counts["resumed"],
        "handed": counts["handed_back"],
        "went_on": sum(1 for e in events if e["event"] == "stage_reached" and e["go_on"]),
        "claims": counts["started"],
    }


COLUMNS = {  # name: (heading, format)
    "wall": ("wall s", "7.1f"),
    "startup": ("1st point s", "12.1f"),
    "first": ("all>=25 s", "10.1f"),
    "after": ("after 1st", "10.1f"),
    "saves": ("saves", "6.0f"),
    "loads": ("loads", "6.0f"),
    "handed": ("handed back", "12.0f"),
    "went_on": ("went on", "8.0f"),
    "claims": ("claims", "7.0f"),
}


def row(label: str, values: dict[str, float]) -> str:
    """One line of the table: ``label`` and each column's value."""
    return f"{label:14}" + "".join(f"{values[c]:{f}}" for c, (_, f) in COLUMNS.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="copy each run's directory (task logs) here")
    parser.add_argument("--delay-ms", type=float, default=DELAY_S * 1000, help="per point")
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    print(
        f"{N_LEARNERS} Learner1D to {LAST} points, {args.delay_ms:g} ms per point, "
        f"Local with {SLOTS} slots, intervals: save {SAVE_S} s, log {LOG_S} s, poll {POLL_S} s"
    )
    print(f"{'round mode':14}" + "".join(f"{h:>{f.split('.')[0]}}" for h, f in COLUMNS.values()))
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for k in range(args.repeat):
        for mode, goal in MODES.items():
            with tempfile.TemporaryDirectory() as tmp:
                results[mode].append(one_run(Path(tmp), goal, delay))
                if args.keep is not None:
                    shutil.copytree(tmp, args.keep / f"{k + 1}-{mode}")
            print(row(f"{k + 1:5} {mode}", results[mode][-1]), flush=True)
    median = {
        mode: {c: statistics.median(r[c] for r in rs) for c in COLUMNS}
        for mode, rs in results.items()
    }
    for mode, values in median.items():
        print(row(f"median {mode}", values))
    plain, staged = median["plain"], median["staged"]
    extra = {c: staged[c] - plain[c] for c in ("saves", "loads")}
    print(f"extra with stages: {extra['saves']:g} saves, {extra['loads']:g} loads")
    wall = staged["wall"] / plain["wall"]
    first = plain["first"] / staged["first"]
    verdict = {True: "met ", False: "MISS"}
    print(f"{verdict[wall <= WALL_TARGET]}  wall staged / plain <= {WALL_TARGET}: {wall:.2f}")
    print(
        f"{verdict[first >= FIRST_TARGET]}  all >= {FIRST} plain / staged >= {FIRST_TARGET:g}: "
        f"{first:.2f}"
    )
    after = plain["after"] / staged["after"]
    print(f"      all >= {FIRST} counted from the first point (start-up left out): {after:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
