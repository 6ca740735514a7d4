"""LogFilter: the lines of chosen holds in task logs that run several learners one after another.

The CLI tests run it on real runs; here a log is written line by line, so that a hold that is
still open when its lines are read is certain, not a matter of timing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from adaptive_runner.state.database import TaskRow
from adaptive_runner.status import log_filter
from adaptive_runner.status.log_filter import LogFilter

if TYPE_CHECKING:
    from pathlib import Path


def event(name: str, learner: int) -> str:
    """A worker event line of learner ``learner``, as the task log holds it."""
    return json.dumps({"event": name, "learner": learner, "timestamp": "2024-05-01T10:00:00Z"})


def hold(learner: int, outcome: str | None, task: str = "L1_0") -> TaskRow:
    """Task ``task`` held ``learner``; None: it holds it still."""
    return TaskRow(task, learner, 1, "node1", 42, 0.0, None if outcome is None else 1.0, outcome)


def append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.writelines(line + "\n" for line in lines)


def read(reader: LogFilter, path: Path) -> list[str]:
    new = reader.read(path)
    return [] if new is None else [line.decode() for line in new.lines]


def test_the_lines_of_one_learner_only(tmp_path: Path) -> None:
    path = tmp_path / "L1_0.log"
    append(path, "before any learner", event("started", 0), "zero", event("done", 0))
    append(path, event("started", 1), "one", event("done", 1), event("started", 2), "two")
    reader = LogFilter([1, 7])
    reader.select([hold(0, "done"), hold(1, "done"), hold(2, None)])
    assert reader.tasks == {"L1_0"}
    assert read(reader, path) == [event("started", 1), "one", event("done", 1)]
    append(path, "more of two", event("started", 7), "seven")  # a claim made since select
    assert read(reader, path) == [event("started", 7), "seven"]


def test_a_task_without_a_chosen_hold_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "L1_0.log"
    append(path, event("started", 0), "zero")
    reader = LogFilter([3])
    reader.select([hold(0, None)])
    assert reader.tasks == set()
    assert reader.read(path) is None
    reader.select([hold(0, "done"), hold(3, None)])  # it claims learner 3: read from its start
    append(path, event("done", 0), event("started", 3), "three")
    assert read(reader, path) == [event("started", 3), "three"]


@pytest.mark.parametrize("outcome", ["failed", "lost", "expired", "killed"])
def test_following_keeps_an_open_hold_until_it_did_not_end_cleanly(
    tmp_path: Path, outcome: str
) -> None:
    path = tmp_path / "L1_0.log"
    append(path, event("started", 0), "zero", event("done", 0), event("started", 1), "one")
    reader = LogFilter(failed=True, follow=True)
    reader.select([hold(0, "done"), hold(1, None)])
    assert read(reader, path) == []  # learner 0 ended cleanly; learner 1 not yet
    append(path, "one more")
    assert read(reader, path) == []
    reader.select([hold(0, "done"), hold(1, outcome)])
    append(path, "after the end")
    assert read(reader, path) == [event("started", 1), "one", "one more", "after the end"]


def test_following_drops_an_open_hold_that_ended_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "L1_0.log"
    append(path, event("started", 0), "zero")
    reader = LogFilter(failed=True, follow=True)
    reader.select([hold(0, None)])
    assert read(reader, path) == []
    append(path, event("done", 0), event("started", 1), "one")
    reader.select([hold(0, "done"), hold(1, "failed")])
    assert read(reader, path) == [event("started", 1), "one"]


def test_without_follow_an_open_hold_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "L1_0.log"
    append(path, event("started", 0), "zero", event("started", 1), "one")
    reader = LogFilter(failed=True)
    reader.select([hold(0, "expired"), hold(1, None)])
    assert read(reader, path) == [event("started", 0), "zero"]
    append(path, event("failed", 1))
    reader.select([hold(0, "expired"), hold(1, "failed")])
    assert read(reader, path) == [event("failed", 1)]  # what came before was passed by


def test_a_long_open_hold_keeps_its_latest_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_filter, "MAX_KEPT_LINES", 2)
    path = tmp_path / "L1_0.log"
    append(path, event("started", 5), "a", "b", "c")
    reader = LogFilter([5], failed=True, follow=True)
    reader.select([hold(5, None)])
    assert read(reader, path) == []
    reader.select([hold(5, "killed")])
    assert read(reader, path) == [
        "(adaptive-runner logs: 2 earlier lines of learner 5 were not kept while its job ran)",
        "b",
        "c",
    ]


def test_without_a_choice_every_line(tmp_path: Path) -> None:
    path = tmp_path / "L1_0.log"
    append(path, "before", event("started", 0), "zero")
    reader = LogFilter()
    assert not reader.choosing
    assert read(reader, path) == ["before", event("started", 0), "zero"]
