"""Build a minimal run directory for tests: run.json, CURVE keys and state.sqlite."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sqlite3
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import adaptive
import cloudpickle
import numpy as np
import pytest

from adaptive_runner.common.auth import create_keys
from adaptive_runner.common.run_dir import GroupConfig, RunConfig, RunDir
from adaptive_runner.manager.run_manager import RunManager
from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database
from adaptive_runner.status.log_parser import split_event

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path


def make_run(
    path: Path,
    fnames: Sequence[str] | int = 4,
    *,
    dependencies: Mapping[int, Sequence[int]] | None = None,
    max_fails: int = 3,
    **config: Any,
) -> RunDir:
    """A run directory at ``path`` with ``fnames`` (or that many generated names) as learners.

    ``config`` overrides RunConfig fields (url, scheduler, executor, intervals, ...); the url
    starts empty, as it is before a database manager has started.
    """
    names = (
        [str(path / "data" / f"{i}.pickle") for i in range(fnames)]
        if isinstance(fnames, int)
        else list(fnames)
    )
    run_dir = RunDir(path)
    for directory in (run_dir.path, run_dir.learners_dir, run_dir.logs_dir, run_dir.jobs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    create_keys(run_dir.keys_dir)
    Database.create(
        run_dir.database, names, dependencies=dependencies or {}, max_fails=max_fails
    ).close()
    group = GroupConfig(
        "local",
        {"executor": config.pop("executor", "sequential"), "cores": config.pop("cores", 1)},
    )
    defaults: dict[str, Any] = {
        "name": path.name,
        "created": "2024-01-01T00:00:00+00:00",
        "url": "",
        "config_hash": "test",
        "groups": [group],
        "n_learners": len(names),
        "save_interval_s": 60.0,
        "log_interval_s": 60.0,
        "lease_timeout_s": 600.0,
        "max_fails": max_fails,
    }
    run_dir.write_config(RunConfig(**(defaults | config)))
    return run_dir


def downgrade_to_schema_1(path: Path) -> None:
    """Make a new state.sqlite look like one written by schema 1 (before tags and groups)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE groups; ALTER TABLE learners DROP COLUMN paused;"
        # Schema 1's claimable index (schema 6 orders it by stage and loss too).
        " DROP INDEX learners_claimable; ALTER TABLE learners DROP COLUMN stage;"
        " CREATE INDEX learners_claimable ON learners (grp, idx)"
        " WHERE state = 'waiting' AND unfinished_deps = 0;"
        # Schema 1's tasks: keyed without the submission (a column of schema 5).
        " ALTER TABLE tasks RENAME TO tasks_5;"
        " CREATE TABLE tasks (task TEXT NOT NULL, learner INTEGER NOT NULL,"
        " attempt INTEGER NOT NULL, host TEXT, pid INTEGER, started REAL NOT NULL,"
        " finished REAL, outcome TEXT, PRIMARY KEY (task, learner, attempt)) WITHOUT ROWID;"
        " INSERT INTO tasks SELECT task, learner, attempt, host, pid, started, finished,"
        " outcome FROM tasks_5;"
        " DROP TABLE tasks_5;"
        # Schema 1's arrays: one row per id (schema 5 numbers each submission).
        " ALTER TABLE arrays RENAME TO arrays_5;"
        " CREATE TABLE arrays (array_id TEXT PRIMARY KEY, grp INTEGER NOT NULL DEFAULT 0,"
        " n_tasks INTEGER NOT NULL, script TEXT NOT NULL, submitted REAL NOT NULL, finished REAL);"
        " INSERT INTO arrays SELECT array_id, grp, n_tasks, script, submitted, finished"
        " FROM arrays_5;"
        " DROP TABLE arrays_5;"
        " CREATE INDEX arrays_active ON arrays (grp, submitted) WHERE finished IS NULL;"
        " UPDATE meta SET value = 1 WHERE key = 'schema';"
    )
    conn.close()


def set_url(run_dir: RunDir, url: str) -> None:
    """Point run.json at a (new) database manager url, as the run manager does on start."""
    run_dir.write_config(dataclasses.replace(run_dir.read_config(), url=url))


def wait_for(
    predicate: Callable[[], T | None],
    what: str,
    *,
    timeout_s: float = 120.0,
    interval_s: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    The deadline only bounds a hang (then the test fails naming ``what``); it asserts no speed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


# -- learners and runs on the Local scheduler, shared by the end-to-end tests ------------------
# Workers cannot import this file: the learners carry these functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_square(x: float, a: float, delay: float) -> float:
    time.sleep(delay)
    return a * x**2


def always_fails(x: float) -> float:
    print(f"solver error: giving up at {x}", file=sys.stderr, flush=True)  # into the task's log
    raise ZeroDivisionError(f"cannot evaluate at {x}")


def broken(x: float) -> float:
    """A bug between 0.5 and 0.75: the learner saves its points so far, then fails."""
    if 0.5 < x < 0.75:
        raise ValueError(f"bug at {x}")
    return x**2


def fixed(x: float) -> float:
    """``broken``, fixed: what a rerun brings (the fix-and-rerun loop)."""
    return x**2


class CountedUnpickles:
    """Captured by a learner's function: each unpickling appends its process id to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getstate__(self) -> str:
        return self.path

    def __setstate__(self, path: str) -> None:
        self.path = path
        with open(path, "a") as f:  # noqa: PTH123 - runs in the worker, pickled by value
            f.write(f"{os.getpid()}\n")


def big_closure(
    offset: float, nbytes: int, counted: CountedUnpickles, delay: float = 0.0
) -> Callable[[Any], float]:
    """A function closing over ``nbytes`` of random data: ``sum(x) + offset`` (any point)."""
    data = np.random.default_rng(int(offset)).random(nbytes // 8)
    data[0] = offset

    def f(x: Any) -> float:
        assert counted is not None  # captured, so unpickled with the function
        time.sleep(delay)
        return float(np.sum(x)) + float(data[0])

    return f


def fails_slowly(x: float, delay: float) -> float:
    """Print an error line, then fail ``delay`` seconds later: its job stays open meanwhile."""
    print(f"solver error: giving up at {x} in {delay} s", file=sys.stderr, flush=True)
    time.sleep(delay)
    raise ZeroDivisionError(f"cannot evaluate at {x}")


def peak(x: float, width: float, delay: float) -> float:
    time.sleep(delay)
    return float(np.exp(-(x**2) / width**2))


# Learner1D's loss scales y to its range: unlike a * x**2, peaks of these widths have
# different losses after the same number of points (the narrower, the larger at first).
PEAK_WIDTHS = (0.5, 0.05, 0.2, 0.01, 0.1, 0.3, 0.02, 0.15, 0.07)


def make_peaks(n: int, delay: float = 0.0) -> list[adaptive.Learner1D]:
    """``n`` Learner1D of peaks of different widths (PEAK_WIDTHS), on [-1, 1]."""
    return [
        adaptive.Learner1D(partial(peak, width=width, delay=delay), bounds=(-1, 1))
        for width in PEAK_WIDTHS[:n]
    ]


def task_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every worker event of the run's task logs, in the order of their time stamps."""
    events = []
    for log in sorted((run_dir / "logs").glob("*.log")):
        for line in log.read_bytes().splitlines():
            _, event = split_event(line)
            if event is not None:
                events.append(event)
    return sorted(events, key=lambda e: str(e["timestamp"]))


def make_learners(n: int, delay: float = 0.0) -> list[adaptive.Learner1D]:
    return [
        adaptive.Learner1D(partial(slow_square, a=a, delay=delay), bounds=(-1, 1)) for a in range(n)
    ]


def make_rm(
    tmp_path: Path,
    learners: Sequence[Any],
    *,
    fname_prefix: str = "l",
    kill_grace_s: float = 30.0,
    scheduler: Local | None = None,
    **kwargs: Any,
) -> RunManager:
    """A RunManager on the Local scheduler with short intervals; ``kwargs`` override them.

    ``scheduler`` replaces the default ``Local(cores=1, kill_grace_s=kill_grace_s)``.
    """
    fnames = [tmp_path / "data" / f"{fname_prefix}{i}.pickle" for i in range(len(learners))]
    options: dict[str, Any] = {
        "goal": 30,
        "run_dir": tmp_path / "run",
        "max_simultaneous_jobs": 4,
        "save_interval": 0.3,
        "log_interval": 0.3,
        "poll_interval": 0.3,
    }
    scheduler = scheduler or Local(cores=1, kill_grace_s=kill_grace_s)
    return RunManager(scheduler, learners, fnames, **(options | kwargs))


def stop_and_cancel(rm: RunManager) -> None:
    """Stop the managers, cancel the run, and wait until its tasks have ended.

    Stop first: a job manager round in flight could submit an array after cancel() looked
    for arrays, and that array's tasks would wait for a manager long after the test.
    A task still claiming gets no answer from the stopped manager; the Local supervisor
    kills it ``kill_grace_s`` after the cancel.
    """
    rm.stop()
    with Database.open(rm.run_dir.database) as db:
        arrays = db.active_arrays()  # before the cancel, which ends them in the database
    rm.cancel()
    local = Local().bind(rm.run_dir.jobs_dir)
    wait_for(
        lambda: not any(s.active for s in local.queue_states(arrays).values()),
        what=f"the tasks of {arrays} to end",
    )


def task_rows(run_dir: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(run_dir / "state.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM tasks ORDER BY started").fetchall()
    finally:
        conn.close()


def no_overlaps(run_dir: Path) -> None:
    """At most one task held each learner at any time."""
    by_learner: dict[int, list[tuple[float, float]]] = {}
    for row in task_rows(run_dir):
        end = row["finished"] if row["finished"] is not None else float("inf")
        by_learner.setdefault(row["learner"], []).append((row["started"], end))
    for learner, spans in by_learner.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"learner {learner} was held by two tasks at once"
