"""The Local scheduler with real processes: concurrency cap, states, cancel, survival."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from helpers_run import wait_for

from adaptive_runner.common.task_identity import local_identity
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers import scheduler_options
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.schedulers.local import Local

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _cancel_leftover_tasks(tmp_path: Path) -> Iterator[None]:
    """A failed test must not leave held tasks spinning: cancel whatever it submitted."""
    yield
    jobs = tmp_path / "jobs"
    arrays = [p.name for p in jobs.iterdir() if p.is_dir()] if jobs.is_dir() else []
    if arrays:
        Local().bind(jobs).cancel(arrays)


def wait_equal(get: Callable[[], object], expected: object, what: str) -> None:
    wait_for(lambda: get() == expected, what)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def write_script(tmp_path: Path, body: str) -> tuple[Path, Path]:
    """A job script in tmp_path/jobs whose tasks mark their life in tmp_path/marks.

    ``$M`` in ``body`` is the marks directory; each task appends ``start``/``end`` lines to
    $M/events and creates $M/start-<task>; ``hold`` blocks until $M/release-<task> exists.
    """
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "jobs" / "array.sh"
    script.parent.mkdir()
    prelude = f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        M={shlex.quote(str(marks))}
        T="$LOCAL_TASK_ID"
        hold() {{ while [ ! -e "$M/release-$T" ]; do sleep 0.02; done; }}
        echo "start $T" >> "$M/events"
        echo "$$" > "$M/start-$T"
        """
    script.write_text(textwrap.dedent(prelude) + textwrap.dedent(body))
    return script, marks


def states(local: Local, tmp_path: Path, array_id: str) -> dict[str, JobState]:
    del tmp_path  # the scheduler is bound to its jobs directory
    return local.queue_states([array_id])


def supervisor_pid(tmp_path: Path, array_id: str) -> int:
    record = json.loads((tmp_path / "jobs" / array_id / "supervisor.json").read_text())
    pid: int = record["pid"]
    return pid


def test_cap_states_and_exit_codes(tmp_path: Path) -> None:
    script, marks = write_script(
        tmp_path,
        """\
        hold
        echo "end $T" >> "$M/events"
        exit $(( LOCAL_ARRAY_TASK_ID == 3 ? 3 : 0 ))
        """,
    )
    local = Local().bind(tmp_path / "jobs")
    array_id = local.submit(script, n_tasks=6, max_running=2)
    assert array_id == "L1"
    tasks = [f"L1_{i}" for i in range(6)]
    assert set(states(local, tmp_path, array_id)) == set(tasks)

    released: list[str] = []
    for _ in range(6):
        # Release the oldest running task once the cap's worth of tasks has started.
        expected = min(len(released) + 2, 6)
        wait_equal(lambda: len(list(marks.glob("start-*"))), expected, f"{expected} starts")
        running = [t for t in tasks if (marks / f"start-{t}").exists() and t not in released]
        wait_equal(
            lambda: sorted(
                t for t, s in states(local, tmp_path, array_id).items() if s == JobState.RUNNING
            ),
            running,
            f"{running} running",
        )
        current = states(local, tmp_path, array_id)
        assert all(current[t] == JobState.PENDING for t in tasks if t not in released + running)
        (marks / f"release-{running[0]}").touch()
        released.append(running[0])

    wait_for(lambda: not any(s.active for s in states(local, tmp_path, array_id).values()), "end")
    final = states(local, tmp_path, array_id)
    assert final == {t: JobState.FAILED if t == "L1_3" else JobState.COMPLETED for t in tasks}
    exit_file = tmp_path / "jobs" / "L1" / "3.exit"
    assert json.loads(exit_file.read_text())["returncode"] == 3

    # Overlap counted from the ordered event log: at most 2 tasks between start and end.
    alive, peak = 0, 0
    for line in (marks / "events").read_text().splitlines():
        alive += 1 if line.startswith("start") else -1
        peak = max(peak, alive)
    assert peak == 2
    wait_for(lambda: gone(supervisor_pid(tmp_path, array_id)), "the supervisor to exit")


def test_array_ids_and_task_identity(tmp_path: Path) -> None:
    script, marks = write_script(
        tmp_path,
        """\
        printf '%s\\n' "$LOCAL_ARRAY_ID" "$LOCAL_ARRAY_TASK_ID" > "$M/env-$T"
        exit "$LOCAL_ARRAY_TASK_ID"
        """,
    )
    local = Local().bind(tmp_path / "jobs")
    first = local.submit(script, n_tasks=3, max_running=3, tag="run-1a2b")
    second = local.submit(script, n_tasks=1, max_running=1)
    assert (first, second) == ("L1", "L2")
    both = [first, second]

    def queue() -> dict[str, JobState]:
        return local.queue_states(both)

    wait_for(lambda: not any(s.active for s in queue().values()), "both arrays to end")
    assert queue() == {
        "L1_0": JobState.COMPLETED,
        "L1_1": JobState.FAILED,
        "L1_2": JobState.FAILED,
        "L2_0": JobState.COMPLETED,
    }
    # Each task is named by its array's tag (the job name on a cluster); None without one.
    named = local.queue_named(both)
    assert {task: queued.name for task, queued in named.items()} == {
        "L1_0": "run-1a2b",
        "L1_1": "run-1a2b",
        "L1_2": "run-1a2b",
        "L2_0": None,
    }
    for task in queue():
        array_id, index = (marks / f"env-{task}").read_text().split()
        identity = local_identity({"LOCAL_ARRAY_ID": array_id, "LOCAL_ARRAY_TASK_ID": index})
        assert (identity.task_id, identity.array_id, identity.task_index) == (
            task,
            array_id,
            int(index),
        )


def test_cancel_task_then_array(tmp_path: Path) -> None:
    script, marks = write_script(
        tmp_path,
        """\
        sleep 30 &
        echo "$!" > "$M/child-$T"
        wait
        """,
    )
    local = Local().bind(tmp_path / "jobs")
    array_id = local.submit(script, n_tasks=5, max_running=2)

    def pids(task: str) -> list[int]:
        return [int((marks / f"{kind}-{task}").read_text()) for kind in ("start", "child")]

    local.cancel(["L1_4"])  # still pending: must never start
    wait_for(lambda: all((marks / f"child-L1_{i}").exists() for i in (0, 1)), "tasks 0, 1")
    local.cancel(["L1_0"])
    wait_for(lambda: all(gone(pid) for pid in pids("L1_0")), "task 0's group to die")
    wait_for(lambda: states(local, tmp_path, array_id)["L1_0"] == JobState.CANCELLED, "L1_0")
    wait_for((marks / "child-L1_2").exists, "task 2 to take the free slot")
    assert states(local, tmp_path, array_id)["L1_4"] == JobState.CANCELLED

    local.cancel([array_id])
    wait_for(lambda: gone(supervisor_pid(tmp_path, array_id)), "the supervisor to exit")
    for task in ("L1_1", "L1_2"):
        assert all(gone(pid) for pid in pids(task))
    assert not (marks / "start-L1_3").exists()
    assert not (marks / "start-L1_4").exists()
    assert states(local, tmp_path, array_id) == {f"L1_{i}": JobState.CANCELLED for i in range(5)}


def test_cancel_escalates_to_sigkill(tmp_path: Path) -> None:
    script, marks = write_script(
        tmp_path,
        """\
        trap '' TERM
        sleep 30 &
        echo "$!" > "$M/child-$T"
        wait
        """,
    )
    local = Local(kill_grace_s=0.3).bind(tmp_path / "jobs")
    array_id = local.submit(script, n_tasks=1, max_running=1)
    wait_for((marks / "child-L1_0").exists, "the task to start")
    local.cancel(["L1_0"])
    pids = [int((marks / f"{kind}-L1_0").read_text()) for kind in ("start", "child")]
    wait_for(lambda: all(gone(pid) for pid in pids), "SIGKILL of the whole group")
    wait_for(lambda: gone(supervisor_pid(tmp_path, array_id)), "the supervisor to exit")
    assert states(local, tmp_path, array_id) == {"L1_0": JobState.CANCELLED}
    end = json.loads((tmp_path / "jobs" / "L1" / "0.exit").read_text())
    assert end == {"returncode": -signal.SIGKILL, "cancelled": True, "timeout": False}


@pytest.mark.parametrize(
    ("on_term", "returncode"),
    [
        ('echo term >> "$M/events"; exit 0', 0),  # a worker: saves, releases, exits
        ("", -signal.SIGKILL),  # ignores SIGTERM: SIGKILL after kill_grace_s
    ],
)
def test_walltime_ends_a_task_like_a_cluster(tmp_path: Path, on_term: str, returncode: int) -> None:
    script, marks = write_script(
        tmp_path,
        f"""\
        trap '{on_term}' TERM
        sleep 30 &
        echo "$!" > "$M/child-$T"
        wait
        """,
    )
    local = Local(walltime=timedelta(seconds=1), kill_grace_s=0.5).bind(tmp_path / "jobs")
    assert local.walltime == "0:00:01"  # as run.json stores it
    array_id = local.submit(script, n_tasks=1, max_running=1)
    wait_for((marks / "child-L1_0").exists, "the task to start")
    pids = [int((marks / f"{kind}-L1_0").read_text()) for kind in ("start", "child")]
    wait_for(lambda: all(gone(pid) for pid in pids), "the walltime to end the task's group")
    wait_for(lambda: gone(supervisor_pid(tmp_path, array_id)), "the supervisor to exit")
    end = json.loads((tmp_path / "jobs" / "L1" / "0.exit").read_text())
    assert end == {"returncode": returncode, "cancelled": False, "timeout": True}
    (ended,) = local.exit_states([array_id]).values()
    assert ended.state == JobState.CANCELLED
    assert ended.describe() == "TIMEOUT (time limit reached)"
    saw_term = "term" in (marks / "events").read_text().splitlines()
    assert saw_term == bool(on_term)


def test_walltime_strings_and_refusals() -> None:
    assert Local(walltime="48:00:00").walltime_s == 48 * 3600
    assert Local().walltime_s is None
    for bad in ("90", "1:00", "1-00:00:00", 90):
        with pytest.raises(ConfigError, match="walltime="):
            Local(walltime=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least a second"):
        Local(walltime=timedelta(0))


def test_tasks_outlive_the_submitter(tmp_path: Path) -> None:
    script, marks = write_script(tmp_path, 'hold\necho "end $T" >> "$M/events"\n')
    submitter = f"""\
        from pathlib import Path
        from adaptive_runner.schedulers.local import Local
        local = Local().bind(Path({str(script.parent)!r}))
        print(local.submit(Path({str(script)!r}), n_tasks=3, max_running=2))
        """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(submitter)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    array_id = proc.stdout.strip()
    assert array_id == "L1"
    # The submitter has exited; its tasks are still held and then finish.
    wait_for(lambda: len(list(marks.glob("start-*"))) == 2, "two tasks to start")
    for i in range(3):
        (marks / f"release-L1_{i}").touch()
    local = Local().bind(tmp_path / "jobs")
    wait_for(lambda: not any(s.active for s in states(local, tmp_path, array_id).values()), "end")
    assert set(states(local, tmp_path, array_id).values()) == {JobState.COMPLETED}


def test_killed_supervisor_and_pid_reuse(tmp_path: Path) -> None:
    script, marks = write_script(tmp_path, "hold\n")
    local = Local().bind(tmp_path / "jobs")
    array_id = local.submit(script, n_tasks=2, max_running=1)
    wait_for(lambda: states(local, tmp_path, array_id)["L1_0"] == JobState.RUNNING, "L1_0")
    wait_for((marks / "start-L1_0").exists, "the task to start")
    supervisor = supervisor_pid(tmp_path, array_id)
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: gone(supervisor), "the supervisor to die")
    # The orphaned task still runs, and is reported so; the unstarted one never will run.
    assert states(local, tmp_path, array_id) == {
        "L1_0": JobState.RUNNING,
        "L1_1": JobState.FAILED,
    }
    task_pid = int((marks / "start-L1_0").read_text())
    os.killpg(task_pid, signal.SIGKILL)
    wait_for(lambda: gone(task_pid), "the task to die")
    assert states(local, tmp_path, array_id)["L1_0"] == JobState.FAILED

    # A live process that took over the pid is told apart by its start time.
    pid_file = tmp_path / "jobs" / "L1" / "0.pid"
    record = json.loads(pid_file.read_text())
    pid_file.write_text(json.dumps({**record, "pid": os.getpid()}))
    assert states(local, tmp_path, array_id)["L1_0"] == JobState.FAILED
    me = psutil.Process().create_time()
    pid_file.write_text(json.dumps({"pid": os.getpid(), "create_time": me}))
    assert states(local, tmp_path, array_id)["L1_0"] == JobState.RUNNING


def test_bind_gives_a_copy_that_knows_the_jobs_dir(tmp_path: Path) -> None:
    local = Local(kill_grace_s=5)
    with pytest.raises(ConfigError, match="not bound to a run"):
        local.queue_states(["L1"])
    bound = local.bind(tmp_path / "jobs")
    assert (bound.jobs_dir, local.jobs_dir) == (tmp_path / "jobs", None)
    assert bound == local  # the same options
    assert scheduler_options(bound) == scheduler_options(local)  # the directory is no option


def test_bad_input(tmp_path: Path) -> None:
    local = Local().bind(tmp_path / "jobs")
    script = tmp_path / "jobs" / "x.sh"
    script.parent.mkdir()
    script.write_text("exit 0\n")
    with pytest.raises(ConfigError, match="n_tasks"):
        local.submit(script, n_tasks=0, max_running=1)
    with pytest.raises(ConfigError, match="max_running"):
        local.submit(script, n_tasks=1, max_running=0)
    with pytest.raises(ConfigError, match="is not a file"):
        local.submit(tmp_path / "missing.sh", n_tasks=1, max_running=1)
    with pytest.raises(ConfigError, match="not a local array id"):
        local.cancel(["../x"])
    with pytest.raises(ConfigError, match="no local array L9"):
        local.cancel(["L9"])
    with pytest.raises(ConfigError, match="kill_grace_s"):
        Local(kill_grace_s=0)
    assert local.queue_states(["L9"]) == {}
