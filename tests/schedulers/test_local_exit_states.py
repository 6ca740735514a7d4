"""How Local tasks ended (Scheduler.exit_states), from real processes' exit files."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import pytest
from helpers_run import wait_for

from adaptive_runner.schedulers.base import JobState, TaskEnd
from adaptive_runner.schedulers.local import Local, task_end

if TYPE_CHECKING:
    from pathlib import Path


def test_exit_code_signal_and_cancel(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    script = jobs / "ends.sh"
    script.write_text(
        f"cd {shlex.quote(str(tmp_path))}\n"
        'case "$LOCAL_ARRAY_TASK_ID" in\n'
        "  1) exit 3 ;;\n"
        "  2) kill -SEGV $$ ;;\n"
        "  3) touch started.3; exec sleep 300 ;;\n"
        "esac\n"
    )
    local = Local().bind(jobs)
    array_id = local.submit(script, n_tasks=4, max_running=4)
    try:
        wait_for((tmp_path / "started.3").exists, "task 3 to start")
        local.cancel([f"{array_id}_3"])
        wait_for(lambda: len(local.exit_states([array_id])) == 4, "4 ends")
    finally:
        local.cancel([array_id])
    ends = local.exit_states([array_id, "L99"])
    assert ends == {
        f"{array_id}_0": TaskEnd(JobState.COMPLETED, 0, None, "COMPLETED"),
        f"{array_id}_1": TaskEnd(JobState.FAILED, 3, None, "FAILED"),
        f"{array_id}_2": TaskEnd(JobState.FAILED, None, 11, "FAILED"),
        f"{array_id}_3": TaskEnd(JobState.CANCELLED, None, 15, "CANCELLED"),
    }
    assert [ends[f"{array_id}_{i}"].describe() for i in range(4)] == [
        "COMPLETED",
        "FAILED, exit code 3",
        "killed by signal 11 (SIGSEGV)",
        "CANCELLED",
    ]
    # queue_states() reads the same files the same way.
    assert local.queue_states([array_id]) == {t: e.state for t, e in ends.items()}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"returncode": 127, "cancelled": False}, "FAILED, exit code 127"),
        ({"returncode": -9, "cancelled": False}, "killed by signal 9 (SIGKILL)"),
        ({"returncode": 0, "cancelled": True}, "CANCELLED"),  # it saved and left in time
        ({"returncode": 0, "cancelled": False, "timeout": True}, "TIMEOUT (time limit reached)"),
    ],
)
def test_task_end_of_an_exit_record(record: dict[str, object], reason: str) -> None:
    assert task_end(record).describe() == reason
