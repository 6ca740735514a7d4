"""The idle core-hours of packed allocations: the query and the sum (no process started)."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import TYPE_CHECKING

import pytest
from helpers_run import make_run

from adaptive_runner.state.database import Database
from adaptive_runner.status.totals import DataSize, Totals, idle_core_hours, totals_items
from adaptive_runner.testing import MemoryScheduler

if TYPE_CHECKING:
    from pathlib import Path


def test_allocation_spans_group_the_workers_of_each_allocation(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", 4)
    conn = sqlite3.connect(run_dir.database)
    with conn:
        conn.executemany(
            "INSERT INTO tasks (task, learner, attempt, started, finished) VALUES (?, ?, 1, ?, ?)",
            [
                ("100_0@0", 0, 10.0, 40.0),
                ("100_0@1", 1, 12.0, 30.0),
                ("100_0@1", 2, 30.0, None),  # still held: until now
                ("101_3", 3, 0.0, 5.0),  # one worker per task: no allocation
            ],
        )
    conn.close()
    with Database.open(run_dir.database, read_only=True) as db:
        assert db.allocation_spans(now=50.0) == {"100_0": (40.0, 30.0 + 18.0 + 20.0)}


def test_idle_core_hours_count_each_allocations_cores_less_what_its_workers_held() -> None:
    packed = MemoryScheduler(workers=4, cores=2)
    spans = {"100_0": (100.0, 250.0), "100_1": (10.0, 50.0), "999_0": (5.0, 0.0)}
    # 100_0: 100 s x 4 workers - 250 s held = 150 s; 100_1: busier than its span allows: 0.
    # 999_0 is no array of the run: left out. Times 2 cores per worker.
    assert idle_core_hours(spans, {"100": 0}, [packed]) == pytest.approx(300 / 3600)
    assert idle_core_hours(spans, {"100": 0}, [MemoryScheduler()]) is None  # not packed
    assert idle_core_hours({}, {"100": 0}, [packed]) is None


def test_the_totals_show_idle_core_hours_only_for_packed_runs() -> None:
    base = Totals(None, 0.0, 0.0, None, 0, 0, DataSize(0, 0), None, 0)
    assert "idle in allocations" not in dict(totals_items(base))
    packed = dataclasses.replace(base, idle_core_hours=1.25)
    assert dict(totals_items(packed))["idle in allocations"] == "1.25 core-hours (at least)"
