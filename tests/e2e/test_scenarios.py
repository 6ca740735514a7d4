"""Each whole-run scenario written once, run over every backend (HyperQueue's all_flavors).

The ``backend`` fixture gives Local, PBS (the fakes of tests/fakes/pbs on PATH), the real
SLURM of ci/slurm/start.sh and the SSH hosts node1/node2 of ci/ssh/start.sh. Each makes the
scheduler of a run, kills a worker as that backend's jobs die, and says what a run left
behind in its queue and among the processes. SLURM and SSH are skipped where their service
is absent, and fail instead in CI (conftest.py's ``slurm`` and ``ssh`` markers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import adaptive
import psutil
import pytest
from helpers_run import PEAK_WIDTHS, make_learners, make_peaks, no_overlaps, task_events, wait_for

import adaptive_runner as ar
from adaptive_runner.manager.run import Run
from adaptive_runner.schedulers.base import is_array_id
from adaptive_runner.schedulers.local import ARRAY_PREFIX
from adaptive_runner.schedulers.ssh_hosts import control_dir, slot_key
from adaptive_runner.state.database import Database
from adaptive_runner.status.log_parser import split_event

if TYPE_CHECKING:
    from collections.abc import Iterator

    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.state.schema import LearnerRow, TaskRow

PATIENCE_S = 150.0  # bounds every wait: a guard against a hang, never a timing assertion
REPO = Path(__file__).resolve().parents[2]
FAKE_PBS = REPO / "tests" / "fakes" / "pbs"
SLURM_PARTITION = "debug"  # ci/slurm/slurm.conf.in
SSH_HOSTS = {"node1": 2, "node2": 2}  # ci/ssh/start.sh
# Short intervals: each run takes seconds.
INTERVALS = {"save_interval": 0.3, "log_interval": 0.3, "poll_interval": 0.3}


def processes_naming(path: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``path`` or a path under it (not ``path1``):
    job scripts, wrappers, workers."""
    needle = f"{path}{os.sep}"
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any(
                needle in f"{arg}{os.sep}" for arg in process.cmdline()
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def run_arrays(run_dir: Path) -> dict[str, int]:
    """Every array the run submitted (finished or not) -> its number of tasks."""
    conn = sqlite3.connect(run_dir / "state.sqlite")
    try:
        return dict(conn.execute("SELECT array_id, n_tasks FROM arrays").fetchall())
    finally:
        conn.close()


@dataclass
class Backend:
    """One backend under a run: its scheduler, how its workers die, what a run left there."""

    # How the scheduler describes the end of a job whose worker got SIGKILL.
    sigkill_ends: ClassVar[tuple[str, ...]] = ("killed by signal 9 (SIGKILL)",)

    name: str
    tmp_path: Path
    started: list[ar.RunManager] = field(default_factory=list)

    def scheduler(self) -> Scheduler:
        """The scheduler of a run: one core per task."""
        return ar.Local(cores=1, kill_grace_s=5)

    def start(self, learners: list[Any], **options: Any) -> ar.RunManager:
        """Start a run of ``learners`` (one data file each) with short intervals."""
        fnames = [self.tmp_path / "data" / f"l{i}.pickle" for i in range(len(learners))]
        defaults: dict[str, Any] = {
            "run_dir": self.tmp_path / "run",
            "max_simultaneous_jobs": len(learners),
            **INTERVALS,
        }
        rm = ar.RunManager(self.scheduler(), learners, fnames, **(defaults | options))
        self.started.append(rm)
        return rm.start()

    def kill(self, pid: int) -> None:
        """Kill a worker as a job dies under this backend: SIGKILL, no chance to save."""
        os.kill(pid, signal.SIGKILL)

    def queued(self, run_dir: Path) -> list[str]:
        """The run's tasks that the backend's queue still holds, pending or running."""
        return Run(run_dir).active_tasks()

    def lose_state(self, run_dir: Path) -> None:
        """Forget every array, as a scheduler that lost its state: it gives ids out again.

        Local keeps its records in the run's jobs/ (L1, L2, ...): the next array is L1.
        """
        for array_dir in (run_dir / "jobs").glob(f"{ARRAY_PREFIX}*"):
            if is_array_id(array_dir.name, ARRAY_PREFIX):
                shutil.rmtree(array_dir)

    def leftovers(self, run_dir: Path) -> list[str]:
        """What the run left behind: tasks in the queue, processes (workers, job scripts)."""
        processes = [f"pid {p.pid}" for p in processes_naming(run_dir)]
        return self.queued(run_dir) + processes

    def assert_nothing_left(self, rm: ar.RunManager) -> None:
        """Wait (bounded) until the run has no task in the queue and no process running."""
        run_dir = rm.run_dir.path
        deadline = time.monotonic() + PATIENCE_S
        while (left := self.leftovers(run_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"{self.name}: the run left behind {left}"

    def clean_up(self) -> None:
        """After a test, passed or not: stop the runs, cancel their arrays, end their processes."""
        for rm in self.started:
            rm.stop()
            if not rm.run_dir.database.exists():
                continue
            arrays = run_arrays(rm.run_dir.path)
            if arrays:
                (scheduler,) = Run(rm.run_dir.path).bound_schedulers()
                scheduler.cancel(list(arrays))
        deadline = time.monotonic() + PATIENCE_S
        while (left := processes_naming(self.tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


class PBSBackend(Backend):
    """The PBS Pro fakes: qsub starts each task as a detached local process."""

    def scheduler(self) -> Scheduler:
        """A PBS Pro scheduler: one core per task."""
        return ar.PBS(cores=1)

    def lose_state(self, run_dir: Path) -> None:
        """The server's state directory goes: its next job is number 100 again."""
        del run_dir
        shutil.rmtree(os.environ["FAKE_PBS_STATE"])


class SlurmBackend(Backend):
    """The real SLURM of ci/slurm/start.sh (three nodes), in its partition."""

    # Or squeue's state: for a moment after the array's own job record (the task started
    # last) ends, sacct shows it as "A|FAILED|0:9", without its index, and parse_sacct skips
    # such a line. Seen in about half the runs here.
    sigkill_ends = (*Backend.sigkill_ends, "failed")

    def scheduler(self) -> Scheduler:
        """SLURM in the test partition: one core per task."""
        return ar.SLURM(cores=1, queue=SLURM_PARTITION)

    def queued(self, run_dir: Path) -> list[str]:
        """Through the scheduler, and squeue's own list of the user's jobs."""
        out = subprocess.run(
            ["squeue", "--me", "-h", "-o", "%F"], capture_output=True, text=True, check=True
        ).stdout
        in_squeue = sorted(set(run_arrays(run_dir)) & set(out.split()))
        return super().queued(run_dir) + [f"array {a} in squeue" for a in in_squeue]


class SSHBackend(Backend):
    """The hosts node1 and node2 (this machine, over sshd), two slots each."""

    def scheduler(self) -> Scheduler:
        """Both hosts; the workers import this tree and carry the session's marker."""
        env = {
            "PYTHONPATH": str(REPO),
            "ADAPTIVE_RUNNER_TEST_SESSION": os.environ.get("ADAPTIVE_RUNNER_TEST_SESSION", ""),
        }
        return ar.SSH(hosts=SSH_HOSTS, env=env, kill_grace_s=5)

    def clean_up(self) -> None:
        """Also the slot files on the hosts and the shared connections (ControlMaster)."""
        super().clean_up()
        base = Path("/tmp") / f"adaptive-runner-{os.getuid()}"  # TMPDIR is unset there
        for rm in self.started:
            for host in SSH_HOSTS:
                slots = base / slot_key(rm.run_dir.jobs_dir.absolute(), host)
                shutil.rmtree(slots, ignore_errors=True)
        for host in SSH_HOSTS:
            subprocess.run(
                ["ssh", "-o", f"ControlPath={control_dir()}/%C", "-O", "exit", host],
                capture_output=True,
                timeout=60,
                check=False,
            )


@pytest.fixture(
    params=[
        "local",
        "pbs",
        pytest.param("slurm", marks=pytest.mark.slurm),
        pytest.param("ssh", marks=pytest.mark.ssh),
    ]
)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """Each backend with its set-up; afterwards nothing of its runs is left running."""
    name: str = request.param
    chosen: Backend
    if name == "pbs":
        monkeypatch.setenv("PATH", f"{FAKE_PBS}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_PBS_STATE", str(tmp_path / "pbs-state"))
        monkeypatch.setenv("FAKE_PBS_FLAVOR", "pbspro")
        chosen = PBSBackend(name, tmp_path)
    elif name == "slurm":
        chosen = SlurmBackend(name, tmp_path)
    elif name == "ssh":
        monkeypatch.chdir(tmp_path)  # tasks start in the working directory: shared, the test's
        chosen = SSHBackend(name, tmp_path)
    else:
        chosen = Backend(name, tmp_path)
    yield chosen
    chosen.clean_up()


# -- what the scenarios read ---------------------------------------------------------------------


def saved_xs(rm: ar.RunManager, learner: int) -> set[float]:
    """The points in learner ``learner``'s data file (none before its first save)."""
    if not Path(rm.fnames[learner]).exists():
        return set()
    return set(Run(rm.run_dir.path).load_learner(learner).data)


def running_with_saves(rm: ar.RunManager, n: int) -> list[tuple[LearnerRow, set[float]]] | None:
    """``n`` running learners (with their worker's pid) that saved points, with those points."""
    rows = [r for r in Run(rm.run_dir.path).learners() if r.state == "running" and r.pid]
    found = [(row, xs) for row in rows if (xs := saved_xs(rm, row.index))]
    return found[:n] if len(found) >= n else None


def resumed_npoints(run_dir: Path, task: str, learner: int) -> list[int]:
    """The points ``learner`` had in its data file each time ``task`` resumed it (its log)."""
    lines = (run_dir / "logs" / f"{task}.log").read_bytes().splitlines()
    events = [event for _, event in map(split_event, lines) if event is not None]
    return [
        int(e["npoints"]) for e in events if e["event"] == "resumed" and e["learner"] == learner
    ]


# -- the scenarios -------------------------------------------------------------------------------


def test_learners_reach_their_goal_through_one_array(backend: Backend) -> None:
    """A few learners to a small goal: one array, each learner done in one hold, no overlap."""
    rm = backend.start(make_learners(3), goal=20)
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 3
    assert all(learner.npoints >= 20 for learner in rm.load_learners())
    ((array_id, n_tasks),) = run_arrays(rm.run_dir.path).items()  # one submission
    assert n_tasks == 3
    run = Run(rm.run_dir.path)
    (scheduler,) = run.bound_schedulers()
    rows = run.tasks()
    assert {scheduler.array_of(row.task) for row in rows} == {array_id}
    assert sorted(row.learner for row in rows) == [0, 1, 2]  # usually one learner per task
    assert {row.outcome for row in rows} == {"done"}
    no_overlaps(rm.run_dir.path)
    backend.assert_nothing_left(rm)


def test_a_worker_killed_with_sigkill_is_resumed_from_its_save(backend: Backend) -> None:
    """SIGKILL after a save: the learner is lost (a failure counted, with how the job died),
    resubmitted, resumed from its data file (its first points kept), and the run finishes."""
    rm = backend.start(make_learners(2, delay=0.05), goal=60)
    run_dir = rm.run_dir.path
    ((victim, first_xs),) = wait_for(
        lambda: running_with_saves(rm, 1),
        what="a running learner with points saved",
        timeout_s=PATIENCE_S,
    )
    assert victim.pid is not None
    assert victim.task is not None
    backend.kill(victim.pid)
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 2
    with Database.open(rm.run_dir.database) as db:
        row = db.learners()[victim.index]
        holds = [t for t in db.tasks() if t.learner == victim.index]
    assert row.failures == 1
    assert row.attempts >= 2
    # How the job died, from the scheduler's records: the same words on every backend.
    lost = f"job {victim.task} was lost: job vanished from the queue"
    assert row.error in {f"{lost} (scheduler: {end})" for end in backend.sigkill_ends}, row.error
    (killed,) = [t for t in holds if t.task == victim.task]
    assert killed.outcome == "lost"
    later = sorted(
        (t for t in holds if t.started >= killed.started and t != killed), key=lambda t: t.started
    )
    assert later, "the learner was not resubmitted"
    # The next hold started from the killed worker's save.
    assert resumed_npoints(run_dir, later[0].task, victim.index)[0] > 0
    assert first_xs <= saved_xs(rm, victim.index)
    no_overlaps(run_dir)
    backend.assert_nothing_left(rm)


def test_cancel_leaves_nothing_behind_but_the_data(backend: Backend) -> None:
    """``rm.cancel()`` mid-run: every learner cancelled, no task queued or running, no
    worker left, and the data files kept with every point they had."""
    rm = backend.start(make_learners(4, delay=0.05), goal=100_000)
    saved = wait_for(
        lambda: running_with_saves(rm, 3),
        what="three running learners with points saved",
        timeout_s=PATIENCE_S,
    )
    assert backend.queued(rm.run_dir.path)  # the check sees the run's tasks and workers
    assert processes_naming(rm.run_dir.path)
    rm.cancel()
    assert not rm.wait(timeout=PATIENCE_S)  # finished, but not done
    assert rm.status()["cancelled"] == 4
    backend.assert_nothing_left(rm)
    for row, xs in saved:
        assert xs <= saved_xs(rm, row.index), f"learner {row.index} lost points"


def test_a_raised_goal_on_a_rerun_brings_done_learners_back(backend: Backend) -> None:
    """The cell again with goal 20 -> 40: done learners short of 40 run on from their saves;
    one whose data file is already at 40 stays done, without a job."""
    rm = backend.start(make_learners(3), goal=20)
    assert rm.wait(timeout=PATIENCE_S)
    run = Run(rm.run_dir.path)
    ahead = run.load_learner(2)  # taken further by hand, e.g. in the notebook
    adaptive.runner.simple(ahead, npoints_goal=50)
    ahead.save(rm.fnames[2])
    holds_before = len(run.tasks())

    again = backend.start(make_learners(3), goal=40)
    assert again.wait(timeout=PATIENCE_S)
    assert [row.state for row in run.learners()] == ["done"] * 3
    assert [learner.npoints for learner in again.load_learners()][:2] == [40, 40]
    later = run.tasks()[holds_before:]
    assert sorted(row.learner for row in later) == [0, 1]  # learner 2 met 40 on disk
    for row in later:  # each resumed from its 20 points
        assert resumed_npoints(rm.run_dir.path, row.task, row.learner)[0] >= 20
    backend.assert_nothing_left(again)


@pytest.mark.parametrize("backend", ["local", "pbs"], indirect=True)
def test_a_scheduler_that_lost_its_state_gives_out_a_recorded_id_again(backend: Backend) -> None:
    """The cell again with a raised goal, after the scheduler lost its state (slurmctld with
    its StateSaveLocation cleared, a PBS server's): the new array gets the id of the run's
    first one. It is an array of its own, its tasks' holds no one else's, nothing is taken
    for lost, and nothing is left in the queue. (Not on the CI SLURM: clearing its state
    would end every job on that cluster.)"""
    rm = backend.start(make_learners(3), goal=20)
    assert rm.wait(timeout=PATIENCE_S)
    backend.assert_nothing_left(rm)
    backend.lose_state(rm.run_dir.path)

    again = backend.start(make_learners(3), goal=40)
    assert again.wait(timeout=PATIENCE_S)
    run = Run(rm.run_dir.path)
    assert [(row.state, row.npoints, row.failures) for row in run.learners()] == [
        ("done", 40, 0)
    ] * 3
    conn = sqlite3.connect(rm.run_dir.database)
    try:
        arrays = conn.execute(
            "SELECT array_id, tag, finished IS NOT NULL FROM arrays ORDER BY submission"
        ).fetchall()
        holds = conn.execute("SELECT DISTINCT submission FROM tasks ORDER BY 1").fetchall()
        lost = conn.execute("SELECT count(*) FROM events WHERE kind = 'lost'").fetchone()
    finally:
        conn.close()
    (first, _, _), (second, _, _) = arrays
    assert first == second  # the id given out again
    assert len({tag for _, tag, _ in arrays}) == 2
    assert all(finished for *_, finished in arrays)
    assert holds == [(1,), (2,)]
    assert lost == (0,)
    backend.assert_nothing_left(again)


def test_a_lowered_goal_reaches_the_learners_in_jobs(backend: Backend) -> None:
    """The cell again with goal 100000 -> 60 while every learner runs: the jobs holding them
    take the new goal at their next heartbeat and finish there, saved and done."""
    rm = backend.start(make_learners(2, delay=0.1), goal=100_000)
    wait_for(lambda: running_with_saves(rm, 2), what="both learners saving", timeout_s=PATIENCE_S)
    holders = {row.index: row.task for row in Run(rm.run_dir.path).learners()}

    again = backend.start(make_learners(2, delay=0.1), goal=60)
    assert again.wait(timeout=PATIENCE_S)
    run = Run(rm.run_dir.path)
    rows = run.learners()
    assert [row.state for row in rows] == ["done", "done"]
    for row in rows:
        assert row.task == holders[row.index]  # the job that held it finished it
        assert 60 <= len(saved_xs(again, row.index)) < 100  # saved at the new goal
        log = (rm.run_dir.path / "logs" / f"{row.task}.log").read_text()
        assert '"goal_changed"' in log
        assert "npoints >= 60" in log
    backend.assert_nothing_left(again)


def test_cancel_change_options_and_run_again_continues_the_run(backend: Backend) -> None:
    """The advice of our "may never start" warning, followed: ``rm.cancel()``, the cell again
    with other options. The whole-run cancel was a pause: the learners resume from their
    saves, and nothing the user cancelled counts as a start failure. A learner cancelled on
    its own stays cancelled."""
    rm = backend.start(make_learners(3, delay=0.05), goal=100_000)  # none done before the cancel
    wait_for(lambda: running_with_saves(rm, 2), what="learners saving", timeout_s=PATIENCE_S)
    rm.cancel([2])
    rm.cancel()
    assert not rm.wait(timeout=PATIENCE_S)
    assert rm.status()["cancelled"] == 3
    saved = {i: saved_xs(rm, i) for i in range(2)}
    backend.assert_nothing_left(rm)

    again = backend.start(make_learners(3, delay=0.05), goal=60, save_interval=0.5)
    assert not again.wait(timeout=PATIENCE_S)  # learner 2 stays cancelled
    assert [row.state for row in Run(rm.run_dir.path).learners()] == ["done", "done", "cancelled"]
    assert again.problems() == []
    for i, xs in saved.items():
        assert xs <= saved_xs(again, i)
    backend.assert_nothing_left(again)


@pytest.mark.parametrize(
    "backend", ["local", pytest.param("slurm", marks=pytest.mark.slurm)], indirect=True
)
def test_a_staged_goal_runs_breadth_first_then_the_largest_loss_first(backend: Backend) -> None:
    """goal=[10, 40] with one slot: every learner reaches 10 points before any goes on to
    40; then they are claimed by the loss they reported at 10 points, largest first. Each
    one handed back is saved and resumed exactly where it stopped; the last to reach stage
    1 goes on without a save and a load."""
    rm = backend.start(make_peaks(5), goal=[10, 40], max_simultaneous_jobs=1)
    assert rm.wait(timeout=PATIENCE_S)
    assert [learner.npoints for learner in rm.load_learners()] == [40] * 5
    assert [row.stage for row in Run(rm.run_dir.path).learners()] == [2] * 5
    events = task_events(rm.run_dir.path)
    work = [(e["event"], e["learner"], e.get("stage")) for e in events if e["event"] == "started"]
    assert work[:5] == [("started", i, 1) for i in range(5)]  # stage 1 for all first
    reached = {e["learner"]: e for e in events if e["event"] == "stage_reached"}
    assert [reached[i]["go_on"] for i in range(5)] == [False] * 4 + [True]
    by_loss = sorted(range(4), key=lambda i: -reached[i]["loss"])
    assert work[5:] == [("started", i, 2) for i in by_loss]  # learner 4 went on
    handed = {e["learner"]: e["npoints"] for e in events if e["event"] == "handed_back"}
    resumed = {e["learner"]: e["npoints"] for e in events if e["event"] == "resumed"}
    assert handed == resumed == dict.fromkeys(range(4), 10)  # one save and one load each
    outcomes = Counter(row.outcome for row in Run(rm.run_dir.path).tasks())
    assert outcomes == {"done": 5, "handed_back": 4}
    no_overlaps(rm.run_dir.path)
    backend.assert_nothing_left(rm)


def stage_claims(run_dir: Path) -> list[tuple[TaskRow, int, float]]:
    """Every hold, in the order of its claim: its row, the stage its task log says, and when
    it ended if it was handed back (else inf)."""
    stages: dict[tuple[str, int], list[int]] = {}  # a task may hold a learner several times
    for e in task_events(run_dir):
        if e["event"] == "started":
            stages.setdefault((e["task"], e["learner"]), []).append(e["stage"])
    holds = sorted(Run(run_dir).tasks(), key=lambda row: row.started)
    return [
        (
            row,
            stages[(row.task, row.learner)].pop(0),
            row.finished if row.outcome == "handed_back" and row.finished else float("inf"),
        )
        for row in holds
    ]


ADDED_MARGIN_S = 0.2


def waited_behind(run_dir: Path) -> list[str]:
    """Claims at a stage while a learner of the run waited at an earlier one.

    Read from state.sqlite (claims, hand-backs and additions are transactions, in one order,
    on the manager's clock): a learner waits at a stage from the start (or from its ``added``
    event, when it joined the run later) until its first claim, and from each hand-back to
    its next claim; the stage of each claim is its task log's. The ``added`` event's time is
    taken just before its transaction waits for the file's lock: a learner counts as added
    ``ADDED_MARGIN_S`` after it.
    """
    conn = sqlite3.connect(run_dir / "state.sqlite")
    try:
        added = {
            learner: at + ADDED_MARGIN_S
            for learner, at in conn.execute("SELECT learner, time FROM events WHERE kind = 'added'")
        }
    finally:
        conn.close()
    claims = stage_claims(run_dir)
    waits: list[tuple[int, int, float, float]] = []
    since: dict[int, float] = {}
    for row, stage, handed_back in claims:
        start = since.pop(row.learner, added.get(row.learner, float("-inf")))
        waits.append((row.learner, stage, start, row.started))
        if handed_back < float("inf"):
            since[row.learner] = handed_back
    return [
        f"learner {row.learner} claimed at stage {stage} while {learner} waited at stage {at}"
        for row, stage, _ in claims
        for learner, at, start, end in waits
        if at < stage and start <= row.started < end
    ]


@pytest.mark.parametrize(
    "backend", ["local", pytest.param("slurm", marks=pytest.mark.slurm)], indirect=True
)
def test_on_several_slots_and_grown_no_learner_starts_a_stage_while_another_waits_before(
    backend: Backend,
) -> None:
    """Seven learners on three slots, goal=[10, 30, 60], two more added (rm.add) once four
    are past stage 1: no claim at stage k while a learner waits at an earlier stage, the new
    ones included (they start at stage 1); all end done at 60 points. Each hold's stage is
    its task log's; when learners waited and were claimed, state.sqlite's."""
    rm = backend.start(make_peaks(7, delay=0.005), goal=[10, 30, 60], max_simultaneous_jobs=3)
    wait_for(
        lambda: sum(row.stage >= 1 for row in Run(rm.run_dir.path).learners()) >= 4,
        what="four learners past stage 1",
        timeout_s=PATIENCE_S,
    )
    more = make_peaks(9, delay=0.005)[7:]
    new = rm.add(more, [backend.tmp_path / f"new{i}.p" for i in (7, 8)])
    assert new == [7, 8]
    assert rm.wait(timeout=PATIENCE_S)
    assert [learner.npoints for learner in rm.load_learners()] == [60] * 9
    run_dir = rm.run_dir.path
    claims = stage_claims(run_dir)
    assert {stage for _, stage, _ in claims} == {1, 2, 3}
    assert next(stage for row, stage, _ in claims if row.learner in new) == 1
    widths = [p["width"] for p in Run(run_dir).parameters()]  # the overview's axes
    assert widths == [pytest.approx(w) for w in PEAK_WIDTHS]
    assert waited_behind(run_dir) == []
    no_overlaps(run_dir)
    backend.assert_nothing_left(rm)
