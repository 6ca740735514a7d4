"""The SLURM backend against a real SLURM (ci/slurm/start.sh): submit, queue, cancel, identity."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import helpers_run
import pytest

from adaptive_runner.common.task_identity import slurm_identity
from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import JobState, ScriptContext, TaskEnd, run_command
from adaptive_runner.schedulers.slurm import SLURM

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.slurm

# A bound on waits for SLURM (a failure guard, not a timing assertion).
PATIENCE_S = 120.0
DATA = Path(__file__).parents[1] / "data" / "slurm"


def wait_for(what: str, probe: Callable[[], object]) -> object:
    """Poll ``probe`` until it returns something truthy; fail after PATIENCE_S."""
    return helpers_run.wait_for(probe, what, timeout_s=PATIENCE_S, interval_s=0.3)


class Cluster:
    """Submits the real slurm.sh.j2 with a bash body in place of the worker; cancels at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "it's 100% logs"  # quoting and sbatch's %-patterns in the path
        self.logs.mkdir()
        self.arrays: list[str] = []

    def script(self, body: str, scheduler: SLURM) -> Path:
        ctx = ScriptContext(
            job_name="adaptive-runner-test",
            run_dir=self.root,
            log_dir=self.logs,
            n_tasks=0,
            max_running=0,
            worker_args=["-c", body],
        )
        path = self.root / f"job{len(self.arrays)}.sh"
        path.write_text(scheduler.render(ctx))
        return path

    def submit(self, body: str, *, n_tasks: int, max_running: int, hold: bool = False) -> str:
        # `exec bash -c BODY` stands in for the worker
        scheduler = SLURM(python="bash", extra_sbatch=["--hold"] if hold else [])
        array_id = scheduler.submit(
            self.script(body, scheduler), n_tasks=n_tasks, max_running=max_running
        )
        self.arrays.append(array_id)
        return array_id

    def queue(self, array_id: str) -> dict[str, JobState]:
        return SLURM().queue_states([array_id])

    def active(self, array_id: str) -> dict[str, JobState]:
        return {k: v for k, v in self.queue(array_id).items() if v.active}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    if c.arrays:
        SLURM().cancel(c.arrays)


def gated(root: Path) -> str:
    """A task body that notes its start and environment, then waits for the file GO."""
    return (
        f"cd {shlex.quote(str(root))}; env > env.$SLURM_ARRAY_TASK_ID; "
        "touch started.$SLURM_ARRAY_TASK_ID; while [ ! -e GO ]; do sleep 0.2; done"
    )


def test_array_runs_to_completion_and_tasks_know_who_they_are(cluster: Cluster) -> None:
    array_id = cluster.submit(gated(cluster.root), n_tasks=3, max_running=3)
    assert array_id.isdigit()
    tasks = {f"{array_id}_{i}" for i in range(3)}
    first = cluster.queue(array_id)
    assert set(first) == tasks
    assert all(state.active for state in first.values())
    wait_for(
        "3 running tasks", lambda: set(cluster.active(array_id).values()) == {JobState.RUNNING}
    )
    for i in range(3):
        env_file = cluster.root / f"env.{i}"
        wait_for(f"task {i}'s environment", env_file.exists)
        environ = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
        identity = slurm_identity(environ)
        assert (identity.task_id, identity.array_id, identity.task_index) == (
            f"{array_id}_{i}",
            array_id,
            i,
        )
        assert environ["OMP_NUM_THREADS"] == "1"
    (cluster.root / "GO").touch()
    wait_for("the array to finish", lambda: not cluster.active(array_id))
    # Finished tasks stay in `squeue -t all` for MinJobAge with their final state.
    assert set(cluster.queue(array_id).values()) <= {JobState.COMPLETED}
    assert sorted(p.name for p in cluster.logs.iterdir()) == sorted(f"{t}.log" for t in tasks)


def test_task_output_and_the_workers_lines_share_one_log(cluster: Cluster) -> None:
    # The worker opens the task's log itself (O_APPEND) while SLURM writes the task's stdout
    # and stderr to it. --open-mode=append: what the log held when the task started (a requeued
    # task's first attempt; here a line written while it was held) is not truncated away.
    name = '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.log"'
    log_path = f"{shlex.quote(str(cluster.logs))}/{name}"
    body = f"echo before; echo 'worker line' >>{log_path}; echo after >&2"
    array_id = cluster.submit(body, n_tasks=1, max_running=1, hold=True)
    log = cluster.logs / f"{array_id}_0.log"
    log.write_text("earlier attempt\n")
    run_command(["scontrol", "release", array_id])
    wait_for("the task to finish", lambda: not cluster.active(array_id))
    assert log.read_text().splitlines() == ["earlier attempt", "before", "worker line", "after"]


def test_max_running_is_respected(cluster: Cluster) -> None:
    array_id = cluster.submit(gated(cluster.root), n_tasks=5, max_running=2)
    wait_for(
        "2 running tasks",
        lambda: list(cluster.active(array_id).values()).count(JobState.RUNNING) == 2,
    )
    for _ in range(5):  # SLURM gets several chances to start a third task; it must not
        states = cluster.active(array_id)
        assert sorted(states.values()) == sorted([JobState.RUNNING] * 2 + [JobState.PENDING] * 3)
        time.sleep(0.5)
    assert len(list(cluster.root.glob("started.*"))) == 2
    (cluster.root / "GO").touch()
    wait_for("the array to finish", lambda: not cluster.active(array_id))
    assert len(list(cluster.root.glob("started.*"))) == 5


def test_eight_tasks_run_at_once(cluster: Cluster) -> None:
    array_id = cluster.submit(gated(cluster.root), n_tasks=8, max_running=8)
    wait_for(
        "8 running tasks",
        lambda: list(cluster.active(array_id).values()).count(JobState.RUNNING) == 8,
    )
    (cluster.root / "GO").touch()
    wait_for("the array to finish", lambda: not cluster.active(array_id))


def test_cancel_one_task_then_the_array(cluster: Cluster) -> None:
    array_id = cluster.submit(gated(cluster.root), n_tasks=3, max_running=3)
    wait_for(
        "3 running tasks",
        lambda: list(cluster.active(array_id).values()).count(JobState.RUNNING) == 3,
    )
    SLURM().cancel([f"{array_id}_1"])
    wait_for("task 1 to leave", lambda: f"{array_id}_1" not in cluster.active(array_id))
    assert set(cluster.active(array_id)) == {f"{array_id}_0", f"{array_id}_2"}
    SLURM().cancel([array_id])
    wait_for("the array to leave", lambda: not cluster.active(array_id))
    assert set(cluster.queue(array_id).values()) <= {JobState.CANCELLED}
    SLURM().cancel([array_id, f"{array_id}_0"])  # gone already: fine


def test_pending_set_longer_than_64_characters(tmp_path: Path) -> None:
    # squeue cuts array expressions at 64 characters unless SLURM_BITSTR_LEN=0 is set.
    script = tmp_path / "held.sh"
    script.write_text("#!/usr/bin/env bash\ntrue\n")
    indices = list(range(1, 200, 3))
    out = run_command(
        [
            "sbatch",
            "--parsable",
            "--hold",
            f"--output={tmp_path}/%A_%a.log",
            "--array=" + ",".join(map(str, indices)),
            str(script),
        ]
    )
    array_id = out.strip()
    try:
        states = SLURM().queue_states([array_id])
        assert states == {f"{array_id}_{i}": JobState.PENDING for i in indices}
    finally:
        SLURM().cancel([array_id])


def test_refused_script_raises_with_stderr_and_path(tmp_path: Path) -> None:
    scheduler = SLURM(partition="no_such_partition")
    ctx = ScriptContext(
        job_name="refused",
        run_dir=tmp_path,
        log_dir=tmp_path,
        n_tasks=1,
        max_running=1,
        worker_args=["-c", "true"],
    )
    script = tmp_path / "refused.sh"
    script.write_text(scheduler.render(ctx))
    with pytest.raises(SchedulerCommandError) as excinfo:
        scheduler.submit(script, n_tasks=1, max_running=1)
    assert "invalid partition" in str(excinfo.value).lower()
    assert str(script) in str(excinfo.value)


def test_check_names_the_partitions() -> None:
    SLURM(partition="debug").check()
    SLURM().check()
    with pytest.raises(ConfigError, match="has: debug"):
        SLURM(partition="no_such_partition").check()


def test_cluster_limits() -> None:
    assert SLURM().max_array_size() == 100001


def test_exit_states_from_accounting(cluster: Cluster) -> None:
    # ci/slurm/start.sh runs slurmdbd, so sacct tells how each task ended.
    body = (
        f"cd {shlex.quote(str(cluster.root))}; case $SLURM_ARRAY_TASK_ID in "
        "1) exit 3 ;; 2) kill -SEGV $$ ;; 3) touch started.3; sleep 300 ;; esac"
    )
    array_id = cluster.submit(body, n_tasks=4, max_running=4)
    held = cluster.submit("true", n_tasks=2, max_running=2, hold=True)
    wait_for("task 3 to start", (cluster.root / "started.3").exists)
    SLURM().cancel([f"{array_id}_3"])
    wait_for("the array to end", lambda: not cluster.active(array_id))

    def ends() -> dict[str, TaskEnd] | None:
        # slurmctld hands the records to slurmdbd asynchronously, a moment after the end.
        found = SLURM().exit_states([array_id, held])
        ended = [found.get(f"{array_id}_{i}") for i in range(4)]
        return found if all(end and not end.state.active for end in ended) else None

    found = wait_for("sacct to record the ends", ends)
    assert found == {
        f"{array_id}_0": TaskEnd(JobState.COMPLETED, 0, None, "COMPLETED"),
        f"{array_id}_1": TaskEnd(JobState.FAILED, 3, None, "FAILED"),
        f"{array_id}_2": TaskEnd(JobState.FAILED, None, 11, "FAILED"),
        f"{array_id}_3": TaskEnd(JobState.CANCELLED, 0, None, "CANCELLED by 0"),
        f"{held}_0": TaskEnd(JobState.PENDING, None, None, "PENDING"),
        f"{held}_1": TaskEnd(JobState.PENDING, None, None, "PENDING"),
    }


def test_exit_states_without_accounting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What sacct says on a cluster without slurmdbd (recorded), from a stand-in sacct that
    # counts its calls: one call, no retries, no error, nothing known.
    calls = tmp_path / "calls"
    sacct = tmp_path / "sacct"
    sacct.write_text(
        f"#!/usr/bin/env bash\necho >>{shlex.quote(str(calls))}\n"
        f"cat {shlex.quote(str(DATA / 'sacct_disabled.stderr'))} >&2\nexit 1\n"
    )
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert SLURM().exit_states(["1", "2"]) == {}
    assert calls.read_text() == "\n"


def test_queue_of_nothing_asks_nothing() -> None:
    assert SLURM().queue_states([]) == {}
    assert SLURM().queue_states(["999999"]) == {}


@pytest.mark.slow
def test_time_limit_signal_reaches_the_worker(tmp_path: Path) -> None:
    # --signal=B:USR1@90 with a two-minute limit: SLURM sends USR1 at its first limit check
    # after 30 s (up to a minute early).
    scheduler = SLURM(python="bash", time="2", signal_grace_s=90)
    body = (
        f"cd {shlex.quote(str(tmp_path))}; trap 'touch got-usr1; exit 0' USR1; "
        "while true; do sleep 0.2; done"
    )
    ctx = ScriptContext(
        job_name="signal",
        run_dir=tmp_path,
        log_dir=tmp_path,
        n_tasks=1,
        max_running=1,
        worker_args=["-c", body],
    )
    script = tmp_path / "signal.sh"
    script.write_text(scheduler.render(ctx))
    array_id = scheduler.submit(script, n_tasks=1, max_running=1)
    try:
        wait_for("USR1 in the task", (tmp_path / "got-usr1").exists)
        wait_for(
            "the task to end",
            lambda: not {k: v for k, v in scheduler.queue_states([array_id]).items() if v.active},
        )
        assert scheduler.queue_states([array_id]) == {f"{array_id}_0": JobState.COMPLETED}
    finally:
        scheduler.cancel([array_id])
