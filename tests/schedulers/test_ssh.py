"""The SSH scheduler: over real OpenSSH (two sshd of ci/ssh/start.sh), and its pure parts.

The hosts node1 and node2 are this machine, so their tasks are processes here: a test takes
a host down by stopping its sshd (ci/ssh/stop.sh) and killing what runs there. Tasks started
through sshd are not pytest's descendants; they carry the session marker (conftest.py) only
once their job script has exported ``env``, so every test also checks that no process whose
command line names its directory outlives it. The scenarios every backend shares (goal,
kill -9, cancel) are tests/e2e/test_scenarios.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from helpers_run import make_learners, wait_for

from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.manager.run import Run
from adaptive_runner.manager.run_manager import RunManager
from adaptive_runner.schedulers import scheduler_class, scheduler_options
from adaptive_runner.schedulers.base import JobState, ScriptContext
from adaptive_runner.schedulers.ssh import SSH, claimed_by, recorded_state, token_places
from adaptive_runner.schedulers.ssh_hosts import (
    HostBook,
    check_hosts,
    control_dir,
    on_hosts,
    place,
    slot_key,
)
from adaptive_runner.schedulers.ssh_parsers import (
    check_failure,
    exit_record,
    merged_state,
    parse_look,
    parse_tokens,
    ssh_failure,
)
from adaptive_runner.schedulers.ssh_programs import (
    CANCEL,
    LOOK,
    START,
    TASK,
    TOKENS,
    check_program,
    remote_command,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
CI_SSH = REPO / "ci" / "ssh"
HOSTS = ("node1", "node2")
ALIASES = (*HOSTS, "node1-not-shared", "node1-nokey", "nowhere")
# node1-not-shared sees a directory of its own here (ci/ssh/start.sh: not_shared).
NOT_SHARED = Path("/var/tmp/adaptive-runner-not-shared")
# The workers import this tree, and carry conftest.py's marker of this session.
ENV = {
    "PYTHONPATH": str(REPO),
    "ADAPTIVE_RUNNER_TEST_SESSION": os.environ.get("ADAPTIVE_RUNNER_TEST_SESSION", ""),
}
LEFTOVER_WAIT_S = 60.0  # kill_grace_s (5 s), a wrapper's second, and a loaded machine


@pytest.fixture(scope="module")
def connections_closed() -> Iterator[None]:
    """The shared ssh connections of the tests over ssh are closed at the end.

    Those tests are marked ``ssh``: skipped where node1 and node2 do not answer, failed in CI
    (conftest.py).
    """
    yield
    for host in ALIASES:  # the ControlMaster processes would outlive the session by a minute
        subprocess.run(
            ["ssh", "-o", f"ControlPath={control_dir()}/%C", "-O", "exit", host],
            capture_output=True,
            timeout=60,
            check=False,
        )


def processes_naming(path: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``path``: wrappers, job scripts, workers."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any(
                str(path) in arg for arg in process.cmdline()
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def jobs_dirs(root: Path) -> set[Path]:
    return {path.parent.parent for path in root.rglob("S*/array.json")}


def cancel_everything(root: Path) -> None:
    """Cancel every SSH array under ``root`` (placements come from their array.json)."""
    for jobs_dir in jobs_dirs(root):
        arrays = [path.parent.name for path in jobs_dir.glob("S*/array.json")]
        SSH(hosts={"node1": 1}, kill_grace_s=5).bind(jobs_dir).cancel(arrays)


def remove_slots(root: Path) -> None:
    """The slot files the tasks under ``root`` left on the hosts (TMPDIR is unset there)."""
    base = Path("/tmp") / f"adaptive-runner-{os.getuid()}"
    for jobs_dir in jobs_dirs(root):
        for host in HOSTS:
            shutil.rmtree(base / slot_key(jobs_dir, host), ignore_errors=True)


@pytest.fixture(autouse=True)
def _nothing_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tasks start in the working directory, so it is the test's; no task outlives the test."""
    monkeypatch.chdir(tmp_path)
    yield
    cancel_everything(tmp_path)
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while (left := processes_naming(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        lines = [f"{p.pid}: {' '.join(p.cmdline())[:200]}" for p in left]
        for process in left:
            process.kill()
        pytest.fail("processes left running (now killed):\n" + "\n".join(lines))
    remove_slots(tmp_path)


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[..., RunManager]]:
    """Start a run on node1 and node2 (2 slots each); its managers are stopped at the end."""
    started: list[RunManager] = []

    def start(
        learners: list[Any], *, hosts: dict[str, int] | None = None, **options: Any
    ) -> RunManager:
        scheduler = SSH(hosts=hosts or {"node1": 2, "node2": 2}, env=ENV, kill_grace_s=5)
        fnames = [tmp_path / "data" / f"l{i}.pickle" for i in range(len(learners))]
        defaults: dict[str, Any] = {
            "goal": 20,
            "run_dir": tmp_path / "run",
            "max_simultaneous_jobs": 4,
            "save_interval": 0.5,
            "log_interval": 0.5,
            "poll_interval": 1,
        }
        rm = RunManager(scheduler, learners, fnames, **(defaults | options))
        started.append(rm)
        return rm.start()

    yield start
    for rm in started:
        rm.stop()


def host_of(jobs_dir: Path, task: str) -> str:
    """The host that runs or ran ``task`` (its wrapper there claimed it)."""
    host = claimed_by(jobs_dir, task)
    assert host is not None, f"{task} was never claimed"
    return host


def host_of_wrapper(jobs_dir: Path, array_id: str, index: int) -> str:
    """The one host with a wrapper of the task (as submit placed it)."""
    (wrapper,) = jobs_dir.glob(f"{array_id}/hosts/*/{index}.wrapper")
    return wrapper.parent.name


def recorded_pid(jobs_dir: Path, task: str, kind: str) -> int:
    """The pid in a task's ``wrapper`` record (on the host that claimed it) or ``job`` record."""
    array_id, _, index = task.rpartition("_")
    array_dir = jobs_dir / array_id
    path = (
        array_dir / "hosts" / host_of(jobs_dir, task) / f"{index}.wrapper"
        if kind == "wrapper"
        else array_dir / f"{index}.{kind}"
    )
    return int(path.read_text().split()[0])


def holders(rm: RunManager) -> dict[int, str]:
    """Running learner -> the task that holds it."""
    return {
        row.index: row.task
        for row in Run(rm.run_dir.path).learners()
        if row.state == "running" and row.task
    }


def all_held(rm: RunManager, n: int) -> dict[int, str] | None:
    """The holders, once ``n`` learners run."""
    held = holders(rm)
    return held if len(held) == n else None


def stop_node2_and_kill_its_tasks(jobs_dir: Path, tasks: set[str]) -> None:
    """node2 crashes: its sshd stops and its tasks die without a word."""
    subprocess.run(["bash", str(CI_SSH / "stop.sh"), "node2"], check=True, timeout=60)
    for task in tasks:
        os.kill(recorded_pid(jobs_dir, task, "wrapper"), signal.SIGKILL)
        os.killpg(recorded_pid(jobs_dir, task, "job"), signal.SIGKILL)


def waiting_on(jobs_dir: Path, host: str, arrays: set[str]) -> list[str]:
    """The tasks of arrays other than ``arrays`` with a wrapper on ``host`` and no claim."""
    tasks = [
        f"{wrapper.parents[2].name}_{wrapper.stem}"
        for wrapper in jobs_dir.glob(f"S*/hosts/{host}/*.wrapper")
        if wrapper.parents[2].name not in arrays
    ]
    return sorted(task for task in tasks if claimed_by(jobs_dir, task) is None)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of these (start, end) intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:  # an end before a start at the same moment: -1 sorts first
        now += step
        most = max(most, now)
    return most


@contextlib.contextmanager
def slots_held(jobs_dir: Path, hosts: dict[str, int]) -> Iterator[None]:
    """Hold every slot of ``hosts`` for ``jobs_dir`` (this machine is both hosts): tasks wait."""
    base = Path("/tmp") / f"adaptive-runner-{os.getuid()}"
    with contextlib.ExitStack() as stack:
        for host, n_slots in hosts.items():
            slot_dir = base / slot_key(jobs_dir, host)
            slot_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for k in range(n_slots):
                f = stack.enter_context((slot_dir / str(k)).open("a"))
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


# -- over ssh ----------------------------------------------------------------------------------


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_a_run_over_both_hosts_reaches_its_goal(
    tmp_path: Path, start_run: Callable[..., RunManager]
) -> None:
    run_dir = tmp_path / "run it's $HOME `id`"  # quoted through ssh, the login shell and bash
    rm = start_run(make_learners(6, delay=0.02), run_dir=run_dir, host="127.0.0.1")
    assert rm.run_dir.read_config().url.startswith("tcp://127.0.0.1:")
    assert rm.wait(timeout=240)
    assert rm.status()["done"] == 6
    jobs = rm.run_dir.jobs_dir
    tasks = {row.task for row in Run(run_dir).tasks()}
    assert all(re.fullmatch(r"S[0-9]+_[0-9]+", task) for task in tasks)
    assert {host_of(jobs, task) for task in tasks} == {"node1", "node2"}
    for learner in rm.load_learners():
        assert learner.npoints >= 20


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_a_host_that_goes_down_leaves_its_learners_to_the_other(
    start_run: Callable[..., RunManager],
) -> None:
    rm = start_run(make_learners(4, delay=0.5), goal=30, lease_timeout=8)
    jobs = rm.run_dir.jobs_dir
    held = wait_for(lambda: all_held(rm, 4), "4 learners running")
    on_node2 = {task for task in held.values() if host_of(jobs, task) == "node2"}
    assert len(on_node2) == 2
    try:
        stop_node2_and_kill_its_tasks(jobs, on_node2)
        # What node2 held when it went (a learner it finished just before is not).
        lost = {(learner, task) for learner, task in holders(rm).items() if task in on_node2}
        assert lost
        assert rm.wait(timeout=300)
    finally:
        subprocess.run(["bash", str(CI_SSH / "start.sh")], check=True, timeout=300)
    run = Run(rm.run_dir.path)
    # Not taken for dead when node2 stopped answering: their leases expired.
    outcomes = {(t.learner, t.task): t.outcome for t in run.tasks()}
    assert {outcomes[hold] for hold in lost} == {"expired"}, outcomes
    rows = run.learners()
    for learner, _ in lost:
        assert rows[learner].state == "done"
        assert host_of(jobs, rows[learner].task or "") == "node1", rows[learner]


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_a_host_that_answers_again_takes_the_tasks_that_wait(
    start_run: Callable[..., RunManager],
) -> None:
    rm = start_run(make_learners(12, delay=0.3), goal=40, lease_timeout=8)
    jobs = rm.run_dir.jobs_dir
    held = wait_for(lambda: all_held(rm, 4), "4 learners running")
    on_node2 = {task for task in held.values() if host_of(jobs, task) == "node2"}
    assert len(on_node2) == 2
    before = {path.parent.name for path in jobs.glob("S*/array.json")}
    try:
        stop_node2_and_kill_its_tasks(jobs, on_node2)
        # Their learners come back when their leases expire; the tasks made for them go to
        # node1, the host that answers, and wait there for its two busy slots.
        waiting = wait_for(
            lambda: w if len(w := waiting_on(jobs, "node1", before)) == 2 else None,
            "two new tasks waiting on node1",
        )
        arrays = sorted({task.rpartition("_")[0] for task in waiting})
        states = SSH(hosts={"node1": 1}).bind(jobs).queue_states(arrays)
        assert {states[task] for task in waiting} == {JobState.PENDING}
    finally:
        back = time.time()
        subprocess.run(["bash", str(CI_SSH / "start.sh")], check=True, timeout=300)
    assert rm.wait(timeout=300)
    assert rm.status()["done"] == 12
    spans: dict[str, tuple[float, float]] = {}
    for row in Run(rm.run_dir.path).tasks():  # a task's holds, one after another
        start, end = spans.get(row.task, (row.started, row.finished or row.started))
        spans[row.task] = (min(start, row.started), max(end, row.finished or row.started))
    # The waiting tasks started on node2 once it answered again, not on node1's slots.
    assert {host_of(jobs, task) for task in waiting} == {"node2"}
    assert all(spans[task][0] > back for task in waiting)
    # After it came back, both hosts ran two tasks at once: the run used all four slots.
    for host in HOSTS:
        after = [span for task, span in spans.items() if host_of(jobs, task) == host]
        assert most_at_once([span for span in after if span[1] > back]) == 2, (host, spans)


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_a_task_with_a_wrapper_on_each_host_runs_once(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    started = tmp_path / "started"
    script = jobs / "once.sh"
    script.write_text(f'echo "$SSH_TASK_ID" >> {shlex.quote(str(started))}; sleep 1\n')
    hosts = {"node1": 8, "node2": 8}
    ssh = SSH(hosts=hosts, kill_grace_s=5).bind(jobs)
    with slots_held(jobs, hosts):  # every wrapper waits
        array = ssh.submit(script, n_tasks=8, max_running=8)
        first = {f"{array}_{i}": host_of_wrapper(jobs, array, i) for i in range(8)}
        assert sorted(first.values()) == ["node1"] * 4 + ["node2"] * 4
        # Each task gets a wrapper on the other host too (what place_pending does when a
        # task waits), started on both hosts at once.
        commands = {}
        for host in HOSTS:
            indices = ",".join(t.rpartition("_")[2] for t, h in first.items() if h != host)
            args = [str(jobs), host, slot_key(jobs, host), "8", "5", array, str(script)]
            commands[host] = remote_command(
                START, "adaptive-runner-start", [*args, str(tmp_path), indices]
            )
        assert set(on_hosts(commands, timeout_s=60).values()) == {""}
        assert len(list(jobs.glob(f"{array}/hosts/*/*.wrapper"))) == 16
        assert set(ssh.queue_states([array]).values()) == {JobState.PENDING}
    # All 16 slots free at once: both wrappers of each task take one within the same second.
    wait_for(
        lambda: set(ssh.queue_states([array]).values()) == {JobState.COMPLETED},
        "every task to end",
    )
    assert sorted(started.read_text().split()) == sorted(first)  # each ran once
    assert {claimed_by(jobs, task) for task in first} <= set(HOSTS)
    wait_for(lambda: not processes_naming(jobs), "the wrappers that lost to end")


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_cancel_ends_every_process_on_both_hosts(
    tmp_path: Path, start_run: Callable[..., RunManager]
) -> None:
    rm = start_run(make_learners(4, delay=0.1), goal=10**6)
    jobs = rm.run_dir.jobs_dir
    held = wait_for(lambda: all_held(rm, 4), "4 learners running")
    assert {host_of(jobs, task) for task in held.values()} == {"node1", "node2"}
    rm.stop()
    rm.cancel()
    wait_for(lambda: not processes_naming(tmp_path), "every task to end", timeout_s=60)
    arrays = [path.parent.name for path in jobs.glob("S*/array.json")]
    states = SSH(hosts={"node1": 1}).bind(jobs).queue_states(arrays)
    assert {states[task] for task in held.values()} == {JobState.CANCELLED}


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_a_cancel_reaches_a_host_that_ssh_cannot(
    tmp_path: Path, start_run: Callable[..., RunManager]
) -> None:
    rm = start_run(make_learners(4, delay=0.1), goal=10**6)
    wait_for(lambda: len(holders(rm)) == 4, "4 learners running")
    rm.stop()
    try:
        subprocess.run(["bash", str(CI_SSH / "stop.sh"), "node2"], check=True, timeout=60)
        rm.cancel()  # node2's tasks see their cancel files
        wait_for(lambda: not processes_naming(tmp_path), "every task to end", timeout_s=60)
    finally:
        subprocess.run(["bash", str(CI_SSH / "start.sh")], check=True, timeout=300)


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
def test_slots_hold_across_arrays_and_cancel_ends_waiting_and_running_tasks(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    script = jobs / "hold.sh"
    script.write_text(f'touch {shlex.quote(str(tmp_path))}/"started-$SSH_TASK_ID"; sleep 300\n')
    ssh = SSH(hosts={"node1": 1}, kill_grace_s=5).bind(jobs)
    first = ssh.submit(script, n_tasks=2, max_running=2)
    second = ssh.submit(script, n_tasks=1, max_running=1)
    assert (first, second) == ("S1", "S2")

    def running() -> list[str]:
        states = ssh.queue_states([first, second])
        return sorted(task for task, state in states.items() if state == JobState.RUNNING)

    (runs,) = wait_for(running, "a task to run")
    time.sleep(2)  # the others wait for the one slot
    states = ssh.queue_states([first, second])
    waiting = sorted(task for task in states if task != runs)
    assert states == {runs: "running", waiting[0]: "pending", waiting[1]: "pending"}
    ssh.cancel([waiting[0]])
    ssh.cancel([runs])
    wait_for(lambda: running() == [waiting[1]], "the last task to run in the freed slot")
    states = ssh.queue_states([first, second])
    assert states[runs] == states[waiting[0]] == JobState.CANCELLED
    started = sorted(p.name.removeprefix("started-") for p in tmp_path.glob("started-*"))
    assert started == sorted([runs, waiting[1]])
    ends = ssh.exit_states([first, second])
    assert ends[waiting[0]].exit_code is None  # never started
    assert ends[runs].signal == signal.SIGTERM


@pytest.mark.ssh
@pytest.mark.usefixtures("connections_closed")
@pytest.mark.parametrize(
    ("hosts", "python", "refusal"),
    [
        ({"node1": 1, "nowhere": 1}, sys.executable, "nowhere: ssh refused: no sshd listens"),
        ({"node1": 1, "node1-nokey": 1}, sys.executable, "node1-nokey: key missing"),
        (
            {"node1": 1, "node1-not-shared": 1},
            sys.executable,
            "node1-not-shared: path not shared: run_dir",
        ),
        ({"node1": 1}, "/nonexistent/python3", "node1: python missing there"),
    ],
)
def test_start_is_refused_before_anything_is_written(
    tmp_path: Path, hosts: dict[str, int], python: str, refusal: str
) -> None:
    scheduler = SSH(hosts=hosts, python=python, env=ENV)
    # Under NOT_SHARED for the host that sees its own there; the rest is shared everywhere.
    base = Path(tempfile.mkdtemp(dir=NOT_SHARED)) if "node1-not-shared" in hosts else tmp_path
    try:
        fnames = [base / "data" / "l0.pickle"]
        rm = RunManager(scheduler, make_learners(1), fnames, goal=5, run_dir=base / "run")
        with pytest.raises(ConfigError, match=re.escape(refusal)) as refused:
            rm.start()
        assert "1 of " in str(refused.value)
        assert list(base.iterdir()) == []  # no run directory, no check token left
    finally:
        if base != tmp_path:
            shutil.rmtree(base)


# -- without ssh -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["-oProxyCommand=touch x", "node1;reboot", "a b", "", "node1\n", "u@-x", "x$(id)", 7]
)
def test_hosts_that_ssh_would_misread_are_refused(host: object) -> None:
    with pytest.raises(ConfigError, match="not a host for ssh"):
        check_hosts({host: 1})


def test_slots_and_the_mapping_are_checked() -> None:
    assert check_hosts({"node1": 8, "alice@10.0.0.5": 1, "n_2.lab-x": 2}) == {
        "node1": 8,
        "alice@10.0.0.5": 1,
        "n_2.lab-x": 2,
    }
    for slots in (0, True, "8"):
        with pytest.raises(ConfigError, match=re.escape("hosts['node1']")):
            check_hosts({"node1": slots})
    hosts: object
    for hosts in ({}, ["node1"]):
        with pytest.raises(ConfigError, match="non-empty mapping"):
            SSH(hosts=hosts)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="control character"):
        SSH(hosts={"node1": 1}, python="python\n3")
    with pytest.raises(ConfigError, match="no time limit to enforce"):
        SSH(hosts={"node1": 1}, walltime="1:00:00")


def test_options_survive_run_json() -> None:
    ssh = SSH(hosts={"node2": 4, "node1": 8}, cores=2, env={"A": 1}, kill_grace_s=7)
    options = json.loads(json.dumps(scheduler_options(ssh)))
    again = scheduler_class("ssh")(**options)
    assert again == ssh
    assert list(again.hosts) == ["node2", "node1"]  # the order breaks placement ties


def test_placement_fills_free_slots_then_queues_in_proportion() -> None:
    slots = {"a": 8, "b": 4}
    assert place(6, slots, slots) == ["a", "b", "a", "a", "b", "a"]
    assert place(3, {"a": 0, "b": 1}, {"a": 2, "b": 2}) == ["b", "a", "b"]
    book = HostBook()
    book.started("a", [f"S1_{i}" for i in range(8)])
    assert book.placement(2, slots) == ["b", "b"]
    book.answered("a", ["S1"], {"S1_0": JobState.COMPLETED, "S1_1": JobState.RUNNING})
    assert book.active["a"] == {"S1_1"}
    book.unanswered("b", "ssh refused")
    assert book.placement(2, slots) == ["a", "a"]
    book.unanswered("a", "ssh refused")
    assert set(book.placement(3, slots)) == {"a", "b"}  # none answers: try them all


def test_tasks_that_wait_for_a_slot_get_a_host_with_one_free() -> None:
    slots = {"a": 2, "b": 2, "c": 1}
    book = HostBook()
    book.answered("a", ["S1"], {"S1_0": JobState.RUNNING, "S1_1": JobState.RUNNING})
    book.answered("a", ["S2"], {"S2_0": JobState.PENDING, "S2_1": JobState.PENDING})
    book.answered("b", ["S1", "S2"], {"S1_0": None, "S2_0": None})
    book.started("c", ["S3_0"])
    book.unanswered("c", "ssh refused")
    # a has 4 tasks for 2 slots: its pending ones wait; b has 2 free; c does not answer, so
    # its pending task waits too, and c gets none.
    assert book.moves(["S2_0", "S2_1", "S3_0"], slots) == {"b": ["S2_0", "S2_1"]}
    assert book.moves(["S2_0", "S2_1", "S3_0"], {"a": 2, "b": 3}) == {"b": ["S2_0", "S2_1", "S3_0"]}
    assert book.moves(["S2_0", "S2_1"], {"a": 2, "b": 1}) == {"b": ["S2_0"]}
    book.started("b", ["S2_0"])
    # S2_0 has a wrapper on b, which has no more tasks than slots: it starts there. Never
    # two wrappers of a task on one host.
    assert book.moves(["S2_0", "S2_1"], slots) == {"b": ["S2_1"]}
    assert book.moves(["S2_0"], {"a": 2, "b": 0}) == {}
    book.answered("c", ["S3"], {"S3_0": JobState.RUNNING})  # c answers again
    # c: 1 slot, 1 task; b: 1 of 2 slots free. A pending task with no wrapper anywhere
    # (its host's ssh failed before starting one) waits too.
    assert book.moves(["S2_1", "S4_0"], slots) == {"b": ["S2_1"]}
    book.answered("c", ["S3"], {"S3_0": JobState.COMPLETED})
    assert book.moves(["S2_1", "S4_0"], slots) == {"c": ["S2_1"], "b": ["S4_0"]}


def test_the_answers_of_the_hosts_are_read() -> None:
    text = "S1_0 running\nS1_1 pending\nS1_2 exit 0 0\nS1_3 exit -9 0\nS1_4 exit - 1\n"
    text += "S2_0 lost\nS2_1 none\nS2_2 elsewhere\n"
    assert parse_look(text) == {
        "S1_0": JobState.RUNNING,
        "S1_1": JobState.PENDING,
        "S1_2": JobState.COMPLETED,
        "S1_3": JobState.FAILED,
        "S1_4": JobState.CANCELLED,
        "S2_0": JobState.FAILED,
        "S2_1": None,
        "S2_2": None,
    }
    # One task, as its hosts answered: where it runs, else where it waits, else its end.
    assert merged_state([None, JobState.PENDING, JobState.RUNNING]) == JobState.RUNNING
    assert merged_state([JobState.FAILED, JobState.PENDING]) == JobState.PENDING
    assert merged_state([JobState.FAILED, JobState.COMPLETED, None]) == JobState.COMPLETED
    assert merged_state([JobState.FAILED, None]) == JobState.FAILED
    assert merged_state([None, None]) == JobState.FAILED  # no wrapper of it ever started
    assert exit_record("-9 0").describe() == "killed by signal 9 (SIGKILL)"
    assert exit_record("127 0").describe() == "FAILED, exit code 127"
    assert exit_record("0 1").state == JobState.CANCELLED
    assert parse_tokens("0 ok\n1 differs\n", 3) == ["ok", "differs", "missing"]
    for bad in ("S1_0 sleeping", "L1_0 running", "S1_0 exit x 0"):
        with pytest.raises(SchedulerCommandError):
            parse_look(bad)
    with pytest.raises(SchedulerCommandError):
        parse_tokens("5 ok", 2)


def error(returncode: int | None, stdout: str = "", stderr: str = "") -> SchedulerCommandError:
    return SchedulerCommandError("x", returncode=returncode, stdout=stdout, stderr=stderr)


def test_why_ssh_failed_is_told_from_its_fields() -> None:
    refused = error(255, stderr="ssh: connect to host 10.0.0.5 port 22: Connection refused\n")
    assert ssh_failure("n1", refused).startswith("ssh refused: no sshd listens there")
    denied = error(255, stderr="root@10.0.0.5: Permission denied (publickey).")
    assert "key missing" in ssh_failure("n1", denied)
    assert "ssh-copy-id n1" in ssh_failure("n1", denied)
    assert "unknown host name" in ssh_failure(
        "n1", error(255, stderr="Could not resolve hostname n1")
    )
    assert "exit code 3" in ssh_failure("n1", error(3, stderr="does not exist on this host"))
    environment_ok = "adaptive-runner-check: environment ok\n"
    cases = {
        "setsid missing there": error(3, stdout="adaptive-runner-check: missing setsid\n"),
        "the job's environment failed there": error(127, stderr="module: command not found"),
        "python missing there": error(127, stdout=environment_ok, stderr="no such file"),
        "cannot import adaptive_runner.worker": error(
            1, stdout=environment_ok, stderr="ModuleNotFoundError: No module named 'x'"
        ),
    }
    for cause, failure in cases.items():
        assert cause in check_failure("n1", "python3", failure)


def test_records_answer_for_a_host_that_does_not(tmp_path: Path) -> None:
    array = tmp_path / "S1"
    (array / "hosts" / "n1").mkdir(parents=True)
    (array / "0.exit").write_text("0 0\n")
    (array / "1.claim").symlink_to("n1 4242")
    (array / "1.job").touch()
    (array / "hosts" / "n1" / "2.wrapper").touch()
    (array / "4.claim").symlink_to("n2 4343")
    (array / "4.job").touch()
    (array / "5.cancel").touch()
    (array / "hosts" / "n1" / "5.wrapper").touch()
    states = [recorded_state(tmp_path, f"S1_{i}", "n1") for i in range(6)]
    assert states == ["completed", "running", "pending", None, None, "cancelled"]
    assert recorded_state(tmp_path, "S1_4", "n2") == JobState.RUNNING
    assert [claimed_by(tmp_path, f"S1_{i}") for i in (0, 1, 4)] == [None, "n1", "n2"]


def test_one_check_token_per_file_system(tmp_path: Path) -> None:
    places = token_places(
        {"run_dir": tmp_path / "new" / "run", "fnames[0]": tmp_path / "data" / "a.pickle"}
    )
    assert places == [(tmp_path, f"run_dir {str(tmp_path / 'new' / 'run')!r}")]


def test_remote_commands_keep_hostile_paths_whole(tmp_path: Path) -> None:
    # What ssh does with the command: hand it to the login shell there, here sh.
    token_file = tmp_path / 'it\'s "$HOME" `id` $(echo no) ; echo foo'
    token_file.write_text("tok\n")
    command = remote_command(TOKENS, "adaptive-runner-tokens", [str(token_file), "tok"])
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert proc.stdout == "0 ok\n"
    assert list(tmp_path.iterdir()) == [token_file]


def test_wrappers_that_race_for_a_task_run_it_once(tmp_path: Path) -> None:
    # Two wrappers of each task, as two hosts would start them (this machine is both),
    # started back to back, so both often hold a slot before either has claimed the task.
    array = tmp_path / "S1"
    array.mkdir()
    started = tmp_path / "started"
    script = tmp_path / "job.sh"
    script.write_text(f'echo "$SSH_TASK_ID" >> {shlex.quote(str(started))}\n')
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the slots' files
    n_tasks = 40

    def args(i: int, host: str) -> list[str]:
        """TASK's: ARRAY_DIR INDEX SCRIPT SLOT_KEY SLOTS GRACE_S WORKDIR HOST."""
        slots = str(n_tasks)
        return [str(array), str(i), str(script), f"slots-{host}", slots, "5", str(tmp_path), host]

    wrappers = [
        subprocess.Popen(
            ["bash", "-c", TASK, "task", *args(i, host)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(n_tasks)
        for host in HOSTS
    ]
    assert [wrapper.wait(timeout=120) for wrapper in wrappers] == [0] * len(wrappers)
    assert sorted(started.read_text().split()) == sorted(f"S1_{i}" for i in range(n_tasks))
    assert all((array / f"{i}.exit").read_text() == "0 0\n" for i in range(n_tasks))
    assert {claimed_by(tmp_path, f"S1_{i}") for i in range(n_tasks)} <= set(HOSTS)


def test_the_programs_and_the_job_script_are_valid_bash(tmp_path: Path) -> None:
    check = check_program("/usr/bin/python3", [("A", "x y")], "module load foo")
    for program in (TASK, START, LOOK, CANCEL, TOKENS, check):
        proc = subprocess.run(
            ["bash", "-n", "-c", program], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
    ssh = SSH(hosts={"node1": 1}, env={"MY_VAR": "x y"}, extra_script="module load foo")
    context = ScriptContext(
        job_name="t",
        run_dir=tmp_path,
        log_dir=tmp_path / "logs",
        n_tasks=1,
        max_running=1,
        worker_args=["-m", "adaptive_runner.worker", str(tmp_path), "0"],
    )
    text = ssh.render(context)
    assert f'exec >>{tmp_path}/logs/"${{SSH_TASK_ID}}.log" 2>&1' in text.splitlines()
    assert "module load foo" in text.splitlines()
    proc = subprocess.run(["bash", "-n", "-c", text], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
