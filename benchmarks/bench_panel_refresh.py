"""One refresh of the status panel with its totals row and queue view, side by side with the
bare table refresh, at 10,000 learners: the server side, what the refresh thread costs.

The run is the one of bench_widget_refresh.py (a quarter done, a quarter running with
heartbeats, a few failed, the rest waiting; one array), with a data file per learner on disk
and a SLURM queue of 10,000 tasks of that array (the running ones and a pending range with
its reason), answered from squeue output held in memory and read by the real parser. Side by
side, medians over the same repeats, interleaved:

- **table**: what every refresh paid before the totals: counts, one page of learners, its
  HTML (``Database.counts`` + ``learner_page`` + ``table_html``);
- **cached**: the panel's refresh (``RunManager.snapshot`` as the panel takes it: totals,
  the queue view) between two looks: the queue and the data files' size from its throttle
  (here the data files are looked at every 30 s, whatever the look costs: see *disk*);
- **due**: the same when the looks are due (every few seconds): one squeue answer parsed and
  10,000 data files stat'ed.
- **disk**: the look at the data files alone (every file stat'ed), which a panel repeats as
  soon as its last look took at most 5 % of the time since (``DISK_SHARE``): the part of a
  refresh that is due at every refresh of a panel where this look is cheap enough.

    python benchmarks/bench_panel_refresh.py           # 10,000 and 100,000 learners; ~5 min
    python benchmarks/bench_panel_refresh.py --quick   # 10,000 learners, fewer repeats; < 1 min
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench_widget_refresh import build

from adaptive_runner.schedulers.slurm import SLURM, parse_squeue
from adaptive_runner.state.database import Database
from adaptive_runner.status.queue import Looks, queue_html
from adaptive_runner.status.snapshot import counts_html, status_html, table_html
from adaptive_runner.status.totals import DataSize, Totals, data_size, totals_html
from adaptive_runner.widgets import StatusSnapshot, View

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.schedulers.base import QueuedTask

ARRAY = "1000"  # the tasks of bench_widget_refresh.build are 1000_<i>
TARGET_MS = 50.0  # a refresh every 2 s must not hold the kernel's GIL for long
NO_TOTALS = Totals(None, 0.0, 0.0, None, 0, 0, DataSize(0, 0), None, 0)


@dataclass(frozen=True, kw_only=True)
class RecordedSLURM(SLURM):
    """SLURM whose squeue answer is text held in memory, read by the real parser."""

    squeue: ClassVar[str] = ""

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        return parse_squeue(self.squeue, array_ids)


def prepare(run_dir: RunDir, n: int) -> None:
    """Record the array (submitted 10 min ago) and write its squeue answer: n tasks in all."""
    with Database.open(run_dir.database) as db:
        db.record_array(ARRAY, n_tasks=n, script="job.sh", now=time.time() - 700, tag="run-1")
        running = sorted(db.running_tasks(), key=lambda task: int(task.split("_")[1]))
    lines = [f"{ARRAY}|{task.split('_')[1]}|RUNNING|None|run-1" for task in running]
    lines.append(f"{ARRAY}|{n // 2}-{n - 1}|PENDING|Priority|run-1")
    RecordedSLURM.squeue = "\n".join(lines) + "\n"


def table_refresh(run_dir: RunDir) -> int:
    """The refresh before the totals: counts, one page of learners, their HTML."""
    with Database.open(run_dir.database, read_only=True) as db:
        counts = db.counts()
        rows = db.learner_page(limit=View().page_size)
    snap = StatusSnapshot(
        run_name="run",
        taken_at=time.time(),
        counts=counts,
        rows=tuple(rows),
        view=View(),
        n_matching=sum(counts.values()),
        managers_running=True,
        totals=NO_TOTALS,
    )
    return len(counts_html(snap)) + len(table_html(snap))


def panel_refresh(run_dir: RunDir, looks: Looks) -> int:
    """One refresh as the panel does it: the snapshot with looks, and every part's HTML."""
    snap = StatusSnapshot.take(run_dir, View(), managers_running=True, looks=looks)
    assert snap.queue is not None
    parts = (
        status_html(snap),
        counts_html(snap),
        totals_html(snap.totals),
        queue_html(snap.queue),
        table_html(snap),
    )
    return sum(map(len, parts))


def timed(refresh: Callable[[], int]) -> float:
    start = time.perf_counter()
    refresh()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 learners, 15 repeats")
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    sizes, repeats = ([10_000], 15) if args.quick else (args.n, args.repeats)
    print(f"{'learners':>9} {'refresh':8} {'median ms':>10} {'p95 ms':>8} {'/ table':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = Path(tmp) / f"run{n}"
            run_dir = build(root / "run", n, data_dir=root / "data")
            prepare(run_dir, n)
            schedulers = [RecordedSLURM()]
            cached = Looks(schedulers, disk_share=None)  # the disk: every 30 s, see "disk"
            due = Looks(schedulers, queue_interval_s=0.0, disk_interval_s=0.0)
            with Database.open(run_dir.database, read_only=True) as db:
                fnames = db.fnames()
            kinds: dict[str, Callable[[], int]] = {
                "table": lambda rd=run_dir: table_refresh(rd),
                "cached": lambda rd=run_dir, looks=cached: panel_refresh(rd, looks),
                "due": lambda rd=run_dir, looks=due: panel_refresh(rd, looks),
                "disk": lambda names=fnames: data_size(names).n_files,
            }
            for refresh in kinds.values():
                refresh()  # warm the page cache and the throttle
            times: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(repeats):  # interleaved: the machine's load hits all alike
                for kind, refresh in kinds.items():
                    times[kind].append(timed(refresh))
            floor = statistics.median(times["table"])
            for kind, ms in times.items():
                ms.sort()
                median, p95 = statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]
                flag = "" if kind != "cached" or p95 <= TARGET_MS else "  over the target"
                print(f"{n:>9,} {kind:8} {median:>10.2f} {p95:>8.2f} {median / floor:>7.1f}x{flag}")


if __name__ == "__main__":
    main()
