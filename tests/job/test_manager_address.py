"""A manager address the compute nodes cannot resolve: said by the job at once, acted on at once.

The login side refuses a ``host=`` it cannot resolve itself (tests/manager/test_run_manager.py);
a name that resolves there and not on the nodes is made here by writing the url into run.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers_run import make_run, set_url, wait_for

from adaptive_runner.manager.job_manager import JobManager
from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database, LearnerState

REPO = Path(__file__).resolve().parents[2]
URL = "tcp://no-such-host.invalid:5555"


def test_a_worker_that_cannot_resolve_the_manager_says_so_first_and_ends(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", 1)
    set_url(run_dir, URL)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LOCAL_ARRAY_ID": "L1",
        "LOCAL_ARRAY_TASK_ID": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "adaptive_runner.worker", str(run_dir.path)],
        env=env,
        capture_output=True,
        timeout=120,  # without the check it would wait for a reply for an hour
        check=False,
    )
    assert proc.returncode == 1
    first, *rest = run_dir.task_log("L1_0").read_text().splitlines()
    assert rest == []
    event = json.loads(first)
    assert (event["event"], event["level"]) == ("manager_unresolvable", "error")
    assert event["error"].startswith("cannot resolve host 'no-such-host.invalid' (")
    assert URL in event["error"]
    assert "host=" in event["error"]


def test_the_group_fails_at_its_first_array_that_cannot_resolve_the_manager(
    tmp_path: Path,
) -> None:
    """Not after max_fails arrays, each waiting claim_timeout: the name will not resolve later."""
    run_dir = make_run(tmp_path / "run", 2)
    set_url(run_dir, URL)
    manager = JobManager(
        run_dir,
        [Local(kill_grace_s=1)],
        max_simultaneous_jobs=4,
        lease_timeout_s=600.0,
        poll_interval_s=0.3,
        max_fails=3,
        claim_timeout_s=600.0,
        url=URL,
    )
    manager.start()
    try:
        assert manager.wait(timeout_s=120)  # the run ends: its learners failed
    finally:
        manager.stop()
    with Database.open(run_dir.database, read_only=True) as db:
        rows = db.learners()
        arrays = db.recorded_arrays()
    assert [row.state for row in rows] == [LearnerState.FAILED] * 2
    assert len(arrays) == 1
    reason = rows[0].error or ""
    assert reason.startswith("jobs of group 0 cannot start: 1 array(s) in a row")
    assert "manager_unresolvable: cannot resolve host 'no-such-host.invalid'" in reason
    wait_for(
        lambda: (
            not any(s.active for s in Local().bind(run_dir.jobs_dir).queue_states(arrays).values())
        ),
        "the array's tasks to end",
    )
