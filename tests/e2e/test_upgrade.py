"""A run started by an earlier release resumes under this one (on-disk formats, module paths)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import adaptive_runner as ar

FIXTURE = Path(__file__).parents[1] / "data" / "run_before_layout"
MADE_AT = "/tmp/oldrun/fixture"  # where the fixture's run was made, see its README


def test_a_run_made_before_the_package_move_resumes_from_its_data(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run_dir)
    shutil.copytree(FIXTURE / "data", tmp_path / "data")
    for empty in ("jobs", "logs"):
        (run_dir / empty).mkdir()
    # git keeps no modes but the executable bit: give back those a run directory has.
    run_dir.chmod(0o700)
    (run_dir / "keys").chmod(0o700)
    for secret in (run_dir / "keys").glob("*_secret"):
        secret.chmod(0o600)
    # The machine that made it had other paths: its data files and its python.
    conn = sqlite3.connect(run_dir / "state.sqlite")
    with conn:
        conn.execute("UPDATE learners SET fname = replace(fname, ?, ?)", (MADE_AT, str(tmp_path)))
    conn.close()
    config = json.loads((run_dir / "run.json").read_text())
    config["groups"][0]["options"]["python"] = sys.executable
    (run_dir / "run.json").write_text(json.dumps(config))

    rm = ar.RunManager.resume(run_dir)
    try:
        assert rm.wait(timeout=120)
    finally:
        rm.stop()
    learners = rm.load_learners()
    assert [learner.npoints >= 20 for learner in learners] == [True, True]
    # Learner 0 went on from its saved points, among them one no fresh Learner1D asks for.
    assert 0.123456 in learners[0].data
