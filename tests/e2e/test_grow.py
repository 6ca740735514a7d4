"""Growing a run on the Local scheduler: the cell again with learners appended, ``rm.add``.

The learners of a run keep their indices; new ones get the next. The checks of ``rm.add``
that need no run are in tests/manager/test_growth.py.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import adaptive
import pytest
from helpers_run import always_fails, fixed, make_learners, make_rm, wait_for

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

PATIENCE_S = 120.0  # bounds every wait: a guard against a hang, never a timing assertion


def sequences(n: int) -> list[adaptive.SequenceLearner]:
    return [adaptive.SequenceLearner(fixed, range(10)) for _ in range(n)]


def holds(run_dir: Path) -> list[tuple[int, int]]:
    """(learner, group of the array whose task held it), for every hold."""
    conn = sqlite3.connect(run_dir / "state.sqlite")
    try:
        return conn.execute(
            "SELECT t.learner, a.grp FROM tasks t JOIN arrays a ON a.submission = t.submission"
            " ORDER BY t.learner"
        ).fetchall()
    finally:
        conn.close()


def test_the_cell_again_with_learners_appended_grows_the_run(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2), goal=10, dependencies={1: [0]}).start()
    assert rm.wait(timeout=PATIENCE_S)
    config_file = tmp_path / "run" / "run.json"
    before = config_file.read_text()

    refusals: list[tuple[list[Any], dict[int, list[int]], str]] = [
        (
            make_learners(1),
            {},
            (
                r"learner 1's fname '.*/l1.pickle' is not among these; learners added to the"
                r" run \(rm.add, or a cell that had more\) must stay in the cell: append them"
            ),
        ),
        (make_learners(3), {}, r"learner 1 waits on learners \[0\] in the run, on \[\] here"),
        ([*make_learners(1), *sequences(2)], {1: [0]}, "the types of learners of the run differ"),
    ]
    for learners, dependencies, reason in refusals:
        cell = make_rm(tmp_path, learners, goal=10, dependencies=dependencies)
        with pytest.raises(ConfigError, match=rf"holds a different run \(.*{reason}\): use a new"):
            cell.start()
    assert config_file.read_text() == before  # nothing changed
    assert rm.status()["done"] == 2

    grown = make_rm(tmp_path, make_learners(4), goal=10, dependencies={1: [0], 3: [1, 2]})
    assert grown.start().wait(timeout=PATIENCE_S)
    assert [(r.index, r.fname, r.state) for r in grown.learners()] == [
        (i, str(tmp_path / "data" / f"l{i}.pickle"), "done") for i in range(4)
    ]
    assert [learner for learner, _ in holds(tmp_path / "run")] == [0, 1, 2, 3]  # 0, 1 once
    config = json.loads(config_file.read_text())
    assert config["n_learners"] == 4
    assert config["config_hash"] == grown.spec.digest

    # A grow cut short after state.sqlite's commit (run.json as before): the cell continues.
    config_file.write_text(before)
    again = make_rm(tmp_path, make_learners(4), goal=10, dependencies={1: [0], 3: [1, 2]})
    assert again.start().wait(timeout=PATIENCE_S)
    assert json.loads(config_file.read_text())["n_learners"] == 4

    # A finished run resumed (its managers not started): start() adds what add() was given.
    resumed = ar.RunManager.resume(tmp_path / "run")
    assert resumed.job_manager is None
    assert resumed.add(make_learners(1), [tmp_path / "data" / "l4.pickle"]) == [4]
    assert resumed.start().wait(timeout=PATIENCE_S)
    assert [row.state for row in resumed.learners()] == ["done"] * 5


def test_add_on_a_live_run_runs_the_new_learners_without_a_restart(tmp_path: Path) -> None:
    learners = [*make_learners(2, delay=0.05), adaptive.Learner1D(always_fails, bounds=(0, 1))]
    rm = make_rm(tmp_path, learners, goal=30, max_fails=1).start()
    wait_for(lambda: rm.status()["running"], what="a learner running", timeout_s=PATIENCE_S)
    jm = rm.job_manager
    added = rm.add(
        make_learners(2), [tmp_path / "n0", tmp_path / "n1"], dependencies={3: [0], 4: [2]}
    )
    assert added == [3, 4]
    assert rm.job_manager is jm
    assert not rm.wait(timeout=PATIENCE_S)  # learner 2 failed, and 4 with it
    rows = rm.learners()
    assert [r.state for r in rows] == ["done", "done", "failed", "done", "failed"]
    assert rows[4].error == "dependency 2 failed"
    assert rows[3].fname == str(tmp_path / "n0")

    # The run finished and wait() stopped the managers: add starts them again.
    assert rm.add(make_learners(1), [tmp_path / "n2"], dependencies={5: [3]}) == [5]
    assert rm.job_manager is not jm
    assert not rm.wait(timeout=PATIENCE_S)
    assert rm.learners()[5].state == "done"
    assert rm.load_learner(5).npoints >= 30
    assert json.loads((tmp_path / "run" / "run.json").read_text())["n_learners"] == 6


def test_two_groups_grow_by_fname_and_keep_their_indices(tmp_path: Path) -> None:
    def cell(n_a: int, n_s: int, n_new: int = 0, **kwargs: Any) -> ar.RunManager:
        groups = [
            (ar.Local(), make_learners(n_a), [tmp_path / f"a{i}" for i in range(n_a)]),
            (ar.Local(), sequences(n_s), [tmp_path / f"s{i}" for i in range(n_s)]),
        ]
        if n_new:  # a group of its own
            groups.append((ar.Local(), make_learners(n_new), [tmp_path / "g0"]))
        return ar.RunManager.from_groups(
            groups,
            goal=10,
            run_dir=tmp_path / "run",
            max_simultaneous_jobs=4,
            save_interval=0.3,
            log_interval=0.3,
            poll_interval=0.3,
            **kwargs,
        )

    assert cell(2, 1).start().wait(timeout=PATIENCE_S)
    # Appended to both groups and in a new one; a2 (index 2 as given) waits on s0 (index 3).
    rm = cell(3, 2, 1, dependencies={2: [3]}).start()
    names = ["a0", "a1", "s0", "a2", "s1", "g0"]  # the run's order: the new learners come last
    assert rm.fnames == [str(tmp_path / name) for name in names]
    assert rm.spec.dependencies == {3: [2]}
    assert rm.wait(timeout=PATIENCE_S)
    assert [r.fname for r in rm.learners()] == rm.fnames
    assert rm.add(sequences(1), [tmp_path / "s2"]) == [6]  # group 1: SequenceLearners
    assert rm.wait(timeout=PATIENCE_S)

    kinds = [type(learner).__name__[0] for learner in rm.load_learners()]
    assert kinds == ["L", "L", "S", "L", "S", "L", "S"]  # Learner1D, SequenceLearner
    assert rm.spec.learner_groups == (0, 0, 1, 0, 1, 2, 1)
    expected = dict(enumerate(rm.spec.learner_groups))
    assert {learner: expected[learner] for learner, _ in holds(rm.run_dir.path)} == dict(
        holds(rm.run_dir.path)
    )  # each learner ran on an array of its group
    assert rm.status()["done"] == 7

    moved = ar.RunManager.from_groups(
        [
            (ar.Local(), make_learners(1), [tmp_path / "a0"]),
            (ar.Local(), [*make_learners(1), *sequences(1)], [tmp_path / "a1", tmp_path / "s0"]),
        ],
        goal=10,
        run_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError, match=r"learner 1 \('.*/a1'\) is in group 0 of the run, in"):
        moved.start()
