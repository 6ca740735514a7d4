"""The totals row of the status panel: time, CPU-hours, CPU %, memory, data on disk, queue wait.

Plain data read from state.sqlite (and one ``stat`` per data file), shown by the panel, by
``info(format="text")`` and by the ``_repr_html_`` of RunManager and Run. What each figure
is made of, and what it cannot know:

- **elapsed**: from the run's first array submission to now; once no learner is waiting or
  running, to the last learner's end.
- **CPU-hours**: state.sqlite keeps each learner's latest CPU sample only (its last
  heartbeat: percent of one core, summed over the worker and its pool processes), so each
  hold of a learner by a task (the tasks table: claim to end, an open one to now) counts
  its duration times that learner's latest sample. An estimate: a hold before a later sample
  counts with the later one, a learner that never sent a heartbeat counts nothing. The
  hours held (the durations alone) are shown beside it.
- **mean CPU %** and **memory**: the running learners' latest samples; memory is their sum
  (the resident memory of the run's workers now), not a mean.
- **median queue wait**: per task that claimed, its first claim minus its array's submission
  (a packed allocation counts once, by its first worker); tasks still pending are not in it.
- **idle in allocations** (packed allocations only): the core-hours an allocation held no
  learner with: from its workers' first claim to their last hold's end, times its cores,
  minus what its workers held (times a worker's cores). A lower bound: the start-up before
  the first claim and the wait for the last worker after the last hold are not in it, and it
  counts every slot to the end, as if no idle node had been handed back (SLURM's are).
"""

from __future__ import annotations

import html
import math
import os
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adaptive_runner.common.task_identity import task_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.state.queries import Queries


@dataclass(frozen=True, slots=True)
class DataSize:
    """The learners' data files on disk: bytes summed over the files that exist."""

    n_bytes: int
    n_files: int
    age_s: float = 0.0  # how long ago the files were stat'ed (a panel's throttled look)


@dataclass(frozen=True, slots=True)
class Totals:
    """The run's totals at one moment; see the module docstring for how each is made."""

    elapsed_s: float | None  # None before the first array was submitted
    held_hours: float
    cpu_hours: float
    mean_cpu_percent: float | None  # of one core; None while no running learner has a sample
    n_sampled: int  # running learners with a sample
    memory_bytes: int  # summed over the running learners' workers
    data: DataSize
    median_wait_s: float | None  # None while no task has claimed
    n_waits: int
    idle_core_hours: float | None = None  # None: the run has no packed allocation


def read_totals(
    db: Queries,
    *,
    now: float,
    finished: bool,
    waits: Sequence[float],
    data: DataSize,
    idle_core_hours: float | None = None,
) -> Totals:
    """The totals from the run's open database, as of ``now``.

    Parameters
    ----------
    db
        The run's database (read only).
    now
        Wall clock: open holds last until then.
    finished
        Whether no learner waits or runs: the elapsed time then ends at the last learner.
    waits
        The tasks' queue waits (:func:`queue_waits`, or cached ones).
    data
        The data files' size (:func:`data_size`, or a cached one).
    idle_core_hours
        What packed allocations held idle (:func:`idle_core_hours`); None without any.

    """
    usage = db.usage(now)
    end = usage.last_finished if finished and usage.last_finished is not None else now
    return Totals(
        elapsed_s=None if usage.first_submitted is None else max(0.0, end - usage.first_submitted),
        held_hours=usage.held_s / 3600,
        cpu_hours=usage.cpu_s / 3600,
        mean_cpu_percent=usage.mean_cpu_percent,
        n_sampled=usage.n_sampled,
        memory_bytes=usage.memory_bytes,
        data=data,
        median_wait_s=statistics.median(waits) if waits else None,
        n_waits=len(waits),
        idle_core_hours=idle_core_hours,
    )


def idle_core_hours(
    spans: Mapping[str, tuple[float, float]],
    array_groups: Mapping[str, int],
    schedulers: Sequence[Scheduler],
) -> float | None:
    """Core-hours the run's packed allocations held without a learner (module docstring).

    ``spans`` is :meth:`Queries.allocation_spans`; an allocation's array gives its group,
    whose scheduler says how many workers it has and how many cores each. None when the run
    has no packed allocation.
    """
    readers = list({type(s): s for s in schedulers}.values())  # array_of is per backend
    idle_s = None
    for allocation, (span_s, held_s) in spans.items():
        arrays = (reader.array_of(allocation) for reader in readers)
        group = next((array_groups[a] for a in arrays if a in array_groups), None)
        if group is None or schedulers[group].packed is None:
            continue
        scheduler = schedulers[group]
        workers = scheduler.packed or 0
        idle_s = (idle_s or 0.0) + max(0.0, span_s * workers - held_s) * scheduler.cores
    return None if idle_s is None else idle_s / 3600


def queue_waits(
    first_claims: Mapping[str, float],
    submitted: Mapping[str, float],
    schedulers: Sequence[Scheduler],
) -> list[float]:
    """Seconds each task waited in the queue: its first claim minus its array's submission.

    ``first_claims`` is keyed by worker id: the workers of a packed allocation (``task@rank``)
    count once, by the first of them. A task of no recorded array is left out.
    """
    firsts: dict[str, float] = {}
    for worker, claimed in first_claims.items():
        task = task_of(worker)
        firsts[task] = min(claimed, firsts.get(task, math.inf))
    readers = list({type(s): s for s in schedulers}.values())  # array_of is per backend
    waits = []
    for task, claimed in firsts.items():
        for scheduler in readers:
            array = scheduler.array_of(task)
            if array in submitted:
                waits.append(max(0.0, claimed - submitted[array]))
                break
    return waits


def data_size(fnames: Iterable[str]) -> DataSize:
    """The summed size of the files in ``fnames`` that exist (one ``stat`` each)."""
    n_bytes = n_files = 0
    for fname in fnames:
        try:
            n_bytes += os.stat(fname).st_size  # noqa: PTH116 - a Path per file costs more
        except FileNotFoundError:
            continue  # not saved yet
        n_files += 1
    return DataSize(n_bytes, n_files)


# --- words --------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.0 h``, ``1.5 d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def size(n_bytes: float) -> str:
    """``512 B``, ``1.5 MB`` (powers of 1000)."""
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:  # noqa: PLR2004 - the next unit
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def totals_items(totals: Totals) -> list[tuple[str, str]]:
    """The totals as (label, value) pairs: the panel's row and the text info say the same."""
    cpu = (
        "none (no running worker has reported)"
        if totals.mean_cpu_percent is None
        else f"{totals.mean_cpu_percent:.0f} % of a core ({totals.n_sampled} running)"
    )
    wait = (
        "none (no task has claimed yet)"
        if totals.median_wait_s is None
        else f"{duration(totals.median_wait_s)} ({totals.n_waits} tasks)"
    )
    elapsed = (
        "none (no job submitted yet)" if totals.elapsed_s is None else duration(totals.elapsed_s)
    )
    idle = (
        []
        if totals.idle_core_hours is None
        else [("idle in allocations", f"{totals.idle_core_hours:.3g} core-hours (at least)")]
    )
    return [
        ("elapsed", elapsed),
        ("CPU-hours", f"{totals.cpu_hours:.3g} (estimate; {totals.held_hours:.3g} h held)"),
        ("mean CPU", cpu),
        ("memory", f"{size(totals.memory_bytes)} (sum over running workers)"),
        ("data on disk", _data_on_disk(totals.data)),
        ("median queue wait", wait),
        *idle,
    ]


def _data_on_disk(data: DataSize) -> str:
    """``1.5 MB in 2000 files``, with the look's age once it is a second old or more."""
    text = f"{size(data.n_bytes)} in {data.n_files} files"
    return text if data.age_s < 1 else f"{text} ({duration(data.age_s)} ago)"


def totals_html(totals: Totals) -> str:
    """The totals as one row of labelled values."""
    items = " · ".join(
        f'<span class="ar-total" style="white-space:nowrap"><b>{html.escape(label)}</b> '
        f"{html.escape(value)}</span>"
        for label, value in totals_items(totals)
    )
    return f'<div class="ar-totals-row" style="font-size:12px">{items}</div>'
