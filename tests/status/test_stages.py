"""A staged goal's progress: learners per stage from one GROUP BY, in the snapshot and its text."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from helpers_run import make_run

import adaptive_runner as ar
from adaptive_runner.state.database import Database, LearnerState
from adaptive_runner.status.report import info_text, learner_table, watch_text
from adaptive_runner.status.snapshot import StatusSnapshot, stages_html, stages_text, table_html

if TYPE_CHECKING:
    from pathlib import Path

DONE, WAITING, FAILED = LearnerState.DONE, LearnerState.WAITING, LearnerState.FAILED


def set_stages(run_dir_db: Path, rows: list[tuple[int, LearnerState, int]]) -> None:
    conn = sqlite3.connect(run_dir_db)
    with conn:
        conn.executemany(
            "UPDATE learners SET state = ?, stage = ? WHERE idx = ?",
            [(state.value, stage, idx) for idx, state, stage in rows],
        )
    conn.close()


def test_stage_counts_out_of_every_learner(tmp_path: Path) -> None:
    stages = ["npoints >= 25", "npoints >= 200"]
    run_dir = make_run(tmp_path / "run", 5, stages=stages)
    set_stages(
        run_dir.database,
        [(0, DONE, 2), (1, WAITING, 1), (2, FAILED, 1), (3, WAITING, 0), (4, WAITING, 1)],
    )
    with Database.open(run_dir.database, read_only=True) as db:
        assert db.stage_counts() == {0: 1, 1: 3, 2: 1}
    snap = StatusSnapshot.take(run_dir, managers_running=False)
    assert [(s.goal, s.reached) for s in snap.stages] == [(stages[0], 4), (stages[1], 1)]
    line = "stage 1 (npoints >= 25): 4/5 · stage 2 (npoints >= 200): 1/5"
    assert stages_text(snap) == line
    assert info_text(snap).splitlines()[2] == line
    assert ar.Run(run_dir.path).info().splitlines()[2] == line
    assert line in watch_text(snap, [], {})
    page = stages_html(snap)
    assert page.count('class="ar-stage"') == 2
    assert "4/5" in page
    assert "width:80%" in page
    # Each learner's stages reached: in the terminal's table and the panel's.
    table = learner_table(snap.rows, now=0.0, stages=2).splitlines()
    assert table[0].split()[:3] == ["LEARNER", "STATE", "STAGES"]
    assert [line.split()[2] for line in table[1:]] == ["2/2", "1/2", "1/2", "0/2", "1/2"]
    assert table_html(snap).count("<td") == 12 * 5  # a column more than a plain goal's
    assert ">stages</th>" in table_html(snap)


def test_a_plain_goal_has_no_stage_line(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", 2)
    snap = StatusSnapshot.take(run_dir, managers_running=False)
    assert snap.stages == ()
    assert stages_text(snap) == ""
    assert stages_html(snap) == ""
    assert not any(line.startswith("stage") for line in info_text(snap).splitlines())
    assert "STAGES" not in learner_table(snap.rows, now=0.0)
    assert ">stages</th>" not in table_html(snap)
    assert table_html(snap).count("<td") == 11 * 2
