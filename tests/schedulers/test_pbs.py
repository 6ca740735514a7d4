"""PBS backend, both dialects: options, script, parsers on recorded samples, and the fakes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import JobState, QueuedTask, ScriptContext, TaskEnd
from adaptive_runner.schedulers.pbs import PBS
from adaptive_runner.schedulers.pbs_parsers import (
    only_jobs_gone,
    parse_pbspro_json,
    parse_pbspro_names,
    parse_torque_names,
    parse_torque_xml,
    task_end,
    unknown_job_ids,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

FAKES = Path(__file__).parents[1] / "fakes" / "pbs"
DATA = Path(__file__).parents[1] / "data" / "pbs"
FLAVORS = ["pbspro", "torque"]

# A stand-in worker: says it started, waits for its go-file, exits with the code written in it.
TASK_CODE = """
import os, sys, time, pathlib
gate = pathlib.Path(sys.argv[1])
index = os.environ.get("PBS_ARRAY_INDEX", os.environ.get("PBS_ARRAYID", "0"))
(gate / f"started-{index}").write_text(os.environ["PBS_JOBID"])
go = gate / f"go-{index}"
while not go.exists():
    time.sleep(0.05)
print("task", index, "finished", flush=True)
sys.exit(int(go.read_text() or 0))
"""


def context(
    tmp_path: Path, *, n_tasks: int = 4, max_running: int = 2, args: Sequence[str] | None = None
) -> ScriptContext:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    return ScriptContext(
        job_name="adaptive run",
        run_dir=run_dir,
        log_dir=run_dir / "logs",
        n_tasks=n_tasks,
        max_running=max_running,
        worker_args=args or ["-m", "adaptive_runner.worker", str(run_dir)],
    )


# -- options and the job script ------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("executor", ["sequential", "mpi4py"])
def test_render_is_valid_bash(tmp_path: Path, flavor: str, executor: str) -> None:
    pbs = PBS(
        flavor=flavor,
        cores=4,
        nodes=2,
        executor=executor,
        memory="8G",
        walltime="48:00:00",
        queue="workq",
        account="proj-1",
        extra_directives=["#PBS -l place=scatter", "-m n"],
        mpi_launcher="mpirun --bind-to none",
        env={"MY_VAR": "it's $HOME"},
        extra_script="module load python",
    )
    script = pbs.render(context(tmp_path))
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "#PBS -N adaptive_run\n" in script
    assert "#PBS -l walltime=48:00:00\n" in script
    assert "#PBS -q workq\n" in script
    assert "#PBS -A proj-1\n" in script
    assert "#PBS -l place=scatter\n#PBS -m n\n" in script
    assert f"#PBS -o {tmp_path}/run/logs/\n" in script
    assert f'exec >>{tmp_path}/run/logs/"${{PBS_JOBID}}.log" 2>&1' in script
    assert "export OMP_NUM_THREADS=1" in script
    assert "module load python" in script
    if flavor == "pbspro":
        assert "#PBS -l select=2:ncpus=4:mem=8gb\n" in script
        assert "#PBS -J 0-3\n#PBS -W max_run_subjobs=2\n" in script
        assert "-t " not in script
    else:
        assert "#PBS -l nodes=2:ppn=4\n#PBS -l mem=8gb\n" in script
        assert "#PBS -t 0-3%2\n" in script
        assert "#PBS -J" not in script
    last = script.rstrip().splitlines()[-1]
    if executor == "mpi4py":
        assert last == (
            f"exec mpirun --bind-to none -n 4 {pbs.python} -m mpi4py.futures "
            f"-m adaptive_runner.worker {tmp_path}/run"
        )
    else:
        assert last == f"exec {pbs.python} -m adaptive_runner.worker {tmp_path}/run"


def test_render_refuses_log_dir_qsub_cannot_take(tmp_path: Path) -> None:
    ctx = context(tmp_path / "a b")
    with pytest.raises(ConfigError, match="spaces"):
        PBS().render(ctx)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"walltime": "1h"}, "walltime"),
        ({"walltime": "10:61:00"}, "walltime"),
        ({"walltime": 3600}, "timedelta or a string"),
        ({"memory": "lots"}, "memory="),
        ({"mem": "8 gigs"}, "memory="),
        ({"cores": 0}, "cores"),
        ({"cores": 2.5}, "cores"),
        ({"nodes": 0}, "nodes"),
        ({"flavor": "sge"}, "flavor"),
        ({"queue": "a b"}, "queue="),
        ({"queue_name": "a b"}, "queue="),
        ({"account": "x y"}, "account"),
        ({"extra_directives": ["-l a\n-l b"]}, "extra_directives"),
        ({"extra_pbs": "-l a"}, "extra_directives"),
        ({"mpi_launcher": ""}, "mpi_launcher"),
    ],
)
def test_bad_options_say_which(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PBS(**kwargs)


@pytest.mark.parametrize(
    ("memory", "spelled"),
    [("8G", "8gb"), ("8gb", "8gb"), ("500MB", "500mb"), ("100", "100b"), ("100b", "100b")],
)
def test_memory_in_pbs_spelling(memory: str, spelled: str) -> None:
    assert PBS(memory=memory).pbs_mem == spelled


def test_array_options_per_dialect() -> None:
    assert PBS().array_options(4, 4) == [("-J", "0-3")]
    assert PBS().array_options(4, 2) == [("-J", "0-3"), ("-W", "max_run_subjobs=2")]
    assert PBS(max_run_subjobs=False).array_options(4, 2) == [("-J", "0-3")]
    assert PBS().array_options(1, 1) == []  # PBS Pro rejects -J 0-0: a plain job
    assert PBS(flavor="torque").array_options(4, 2) == [("-t", "0-3%2")]
    assert PBS(flavor="torque").array_options(4, 9) == [("-t", "0-3")]
    assert PBS(flavor="torque").array_options(1, 1) == [("-t", "0-0")]


def test_commands_are_built_without_running_anything() -> None:
    script = Path("/j.sh")
    assert PBS().submit_command(script, n_tasks=4, max_running=2, tag="run-1") == [
        *("qsub", "-N", "run-1", "-J", "0-3", "-W", "max_run_subjobs=2", "/j.sh"),
    ]
    torque = PBS(flavor="torque")
    assert torque.submit_command(script, n_tasks=4, max_running=2, tag=None) == [
        *("qsub", "-t", "0-3%2", "/j.sh"),
    ]
    assert PBS().tagged_command(["run-1"]) == ["qstat", "-f", "-F", "json", "-x"]
    assert torque.tagged_command(["run-1"]) == ["qstat", "-x"]
    assert torque.parse_submit("12[].srv\n") == "12[].srv"
    with pytest.raises(SchedulerCommandError, match="expected a job id"):
        torque.parse_submit("qsub: submit error\n")


def test_array_of() -> None:
    assert PBS().array_of("17[4].pbs01") == "17[].pbs01"
    assert PBS().array_of("18.pbs01") == "18.pbs01"


# -- parsers on recorded samples -----------------------------------------------------------------

PBSPRO_EXPECTED = {
    "4711[0].pbs01": QueuedTask(JobState.COMPLETED, "adaptive"),
    "4711[1].pbs01": QueuedTask(JobState.FAILED, "adaptive"),
    "4711[2].pbs01": QueuedTask(JobState.RUNNING, "adaptive"),
    "4711[3].pbs01": QueuedTask(JobState.RUNNING, "adaptive"),
    "4711[4].pbs01": QueuedTask(JobState.PENDING, "adaptive"),
    "4711[5].pbs01": QueuedTask(JobState.PENDING, "adaptive"),
    "4712.pbs01": QueuedTask(JobState.CANCELLED, "postprocess"),
}


def test_parse_pbspro_json_sample() -> None:
    assert parse_pbspro_json((DATA / "pbspro_qstat_array.json").read_text()) == PBSPRO_EXPECTED


def test_parse_pbspro_json_with_invalid_variable_list() -> None:
    text = (DATA / "pbspro_qstat_bad_variable_list.json").read_text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert parse_pbspro_json(text) == PBSPRO_EXPECTED


def test_parse_pbspro_json_falls_back_per_job() -> None:
    # Broken outside Variable_List too (an unescaped quote in a comment): read job by job.
    text = (DATA / "pbspro_qstat_array.json").read_text()
    text = text.replace('"Submit_Host":"login1.cluster"', '"comment":"say "hi"",', 1)
    assert parse_pbspro_json(text) == PBSPRO_EXPECTED


def test_parse_pbspro_json_without_jobs_and_garbage() -> None:
    assert parse_pbspro_json('{"timestamp":1,"pbs_version":"x","pbs_server":"s"}') == {}
    with pytest.raises(SchedulerCommandError, match="job_state"):
        parse_pbspro_json('{"Jobs":{\n\t"5[1].s":{\n\t"oops\n')
    with pytest.raises(SchedulerCommandError):
        parse_pbspro_json('{"Jobs": garbage')


def test_parse_torque_xml_samples() -> None:
    text = (DATA / "torque_qstat_x_t.xml").read_text()
    # Torque names subjob i of array "adaptive" "adaptive-i": each task has its array's name.
    assert parse_torque_xml(text) == {
        "88[0].torque01.hpc.example.edu": QueuedTask(JobState.COMPLETED, "adaptive"),
        "88[1].torque01.hpc.example.edu": QueuedTask(JobState.CANCELLED, "adaptive"),
        "88[2].torque01.hpc.example.edu": QueuedTask(JobState.RUNNING, "adaptive"),
        "88[3].torque01.hpc.example.edu": QueuedTask(JobState.PENDING, "adaptive"),
        "91.torque01.hpc.example.edu": QueuedTask(JobState.FAILED, "other"),
    }
    # Without -t Torque shows only the array summary, which is not a task.
    assert parse_torque_xml((DATA / "torque_qstat_x_summary.xml").read_text()) == {}
    assert parse_torque_xml("") == {}
    broken = text.replace("NOTE=a\\,b &amp;", "NOTE=a & b")
    assert len(parse_torque_xml(broken)) == 5
    with pytest.raises(SchedulerCommandError, match="Torque"):
        parse_torque_xml("<Data><Job>")


@pytest.mark.parametrize(
    ("state", "exit_status", "end", "reason"),
    [
        ("X", 0, TaskEnd(JobState.COMPLETED, 0, None, "job_state=X Exit_status=0"), "COMPLETED"),
        (
            "X",
            1,
            TaskEnd(JobState.FAILED, 1, None, "job_state=X Exit_status=1"),
            "FAILED, exit code 1",
        ),
        (
            "F",
            271,
            TaskEnd(JobState.CANCELLED, None, 15, "job_state=F Exit_status=271"),
            "killed by signal 15 (SIGTERM)",
        ),
        (
            "C",
            139,
            TaskEnd(JobState.FAILED, 139, None, "job_state=C Exit_status=139"),
            "FAILED, exit code 139",
        ),
        (
            "F",
            -1,
            TaskEnd(JobState.FAILED, -1, None, "job_state=F Exit_status=-1"),
            "FAILED, exit code -1",
        ),
        ("F", None, TaskEnd(JobState.UNKNOWN, None, None, "job_state=F"), "UNKNOWN"),
        ("R", None, TaskEnd(JobState.RUNNING, None, None, "job_state=R"), "RUNNING"),
    ],
)
def test_task_end(state: str, exit_status: int | None, end: TaskEnd, reason: str) -> None:
    # The exit statuses of the samples (X 0 and 1, F 271, Torque C 271), a shell's report of a
    # child killed by SIGSEGV (139) and PBS's own "could not run it" (-1).
    assert task_end(state, exit_status) == end
    assert end.describe() == reason


def stderr_of(name: str, returncode: int | None = 1) -> SchedulerCommandError:
    return SchedulerCommandError(
        "qstat/qdel failed", returncode=returncode, stderr=(DATA / name).read_text()
    )


def test_failures_told_from_the_fields() -> None:
    assert unknown_job_ids(stderr_of("pbspro_qstat_unknown.stderr")) == {"4713[].pbs01"}
    assert unknown_job_ids(stderr_of("torque_qstat_unknown.stderr")) == {
        "92[].torque01.hpc.example.edu"
    }
    assert unknown_job_ids(stderr_of("pbspro_qstat_no_server.stderr")) == set()
    assert only_jobs_gone(stderr_of("pbspro_qdel_finished.stderr"))
    assert only_jobs_gone(stderr_of("torque_qdel_finished.stderr"))
    assert only_jobs_gone(stderr_of("pbspro_qstat_unknown.stderr"))
    assert not only_jobs_gone(stderr_of("pbspro_qstat_no_server.stderr"))
    assert not only_jobs_gone(SchedulerCommandError("qdel failed", returncode=1, stderr=""))
    # A time-out's partial stderr is no answer.
    timed_out = stderr_of("pbspro_qdel_finished.stderr", returncode=None)
    assert not only_jobs_gone(timed_out)
    assert unknown_job_ids(timed_out) == set()


# -- missing commands -----------------------------------------------------------------------------


def test_missing_qsub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SchedulerCommandError, match=r"qsub not found.*PBS login node"):
        PBS().check()
    with pytest.raises(SchedulerCommandError, match=r"qsub not found.*PBS login node"):
        PBS().submit(tmp_path / "job.sh", n_tasks=2, max_running=2)


# -- against the fake qsub/qstat/qdel -------------------------------------------------------------


@pytest.fixture(params=FLAVORS)
def fake_pbs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    state = tmp_path / "pbs-state"
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_STATE", str(state))
    monkeypatch.setenv("FAKE_PBS_FLAVOR", request.param)
    yield request.param
    for job_file in (state / "jobs").glob("*.json"):
        for task in json.loads(job_file.read_text())["tasks"].values():
            if task["pid"] and task["state"] != "F":
                with contextlib.suppress(ProcessLookupError):  # ended on its own
                    os.killpg(task["pid"], signal.SIGKILL)


def wait_for(
    pbs: PBS, array_id: str, predicate: Callable[[dict[str, JobState]], bool]
) -> dict[str, JobState]:
    """Poll the queue until predicate(states) holds; the deadline only guards against a hang."""
    deadline = time.monotonic() + 120
    states: dict[str, JobState] = {}
    while time.monotonic() < deadline:
        states = pbs.queue_states([array_id])
        if predicate(states):
            return states
        time.sleep(0.1)
    pytest.fail(f"queue never got there; last states: {states}")


def wait_file(path: Path) -> None:
    """Wait until ``path`` has content: write_text creates the file before it writes."""
    deadline = time.monotonic() + 120
    while not (path.exists() and path.read_text()):
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


def test_array_through_the_fakes(
    fake_pbs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fake_pbs == "pbspro":
        # Every job carries an environment value PBS Pro prints as invalid JSON.
        monkeypatch.setenv("FAKE_PBS_ODD_VARIABLE", 'BASH_FUNC_f%%=() {  echo "x\\y"\n}')
    gate = tmp_path / "gate"
    gate.mkdir()
    pbs = PBS(flavor=fake_pbs, python=sys.executable, walltime="00:10:00")
    pbs.check()
    ctx = context(tmp_path, args=["-c", TASK_CODE, str(gate)])
    script = ctx.run_dir / "array.sh"
    script.write_text(pbs.render(ctx))
    array_id = pbs.submit(script, n_tasks=4, max_running=2)
    assert array_id == "100[].pbs-fake"
    tasks = [f"100[{i}].pbs-fake" for i in range(4)]
    states = wait_for(pbs, array_id, lambda s: list(s.values()).count(JobState.RUNNING) == 2)
    assert states == {
        tasks[0]: JobState.RUNNING,
        tasks[1]: JobState.RUNNING,
        tasks[2]: JobState.PENDING,
        tasks[3]: JobState.PENDING,
    }
    wait_file(gate / "started-0")
    assert (gate / "started-0").read_text() == tasks[0]  # PBS_JOBID is the task id

    (gate / "go-0").write_text("0")
    (gate / "go-1").write_text("3")
    states = wait_for(
        pbs,
        array_id,
        lambda s: s.get(tasks[0]) == "completed" and s.get(tasks[1]) == "failed",
    )
    wait_for(pbs, array_id, lambda s: s.get(tasks[2]) == s.get(tasks[3]) == "running")
    log = ctx.log_dir / f"{tasks[0]}.log"
    assert log.read_text() == "task 0 finished\n"  # logs/<task_id>.log: events and output

    wait_file(gate / "started-2")
    pbs.cancel([tasks[2]])
    wait_for(pbs, array_id, lambda s: s.get(tasks[2]) == "cancelled")
    pbs.cancel([array_id])
    states = wait_for(pbs, array_id, lambda s: not any(st.active for st in s.values()))
    assert states == {
        tasks[0]: JobState.COMPLETED,
        tasks[1]: JobState.FAILED,
        tasks[2]: JobState.CANCELLED,
        tasks[3]: JobState.CANCELLED,
    }
    # Cancelling what already finished is not an error.
    pbs.cancel([array_id, tasks[0]])
    ends = pbs.exit_states([array_id])
    assert {task: end.describe() for task, end in ends.items()} == {
        tasks[0]: "COMPLETED",
        tasks[1]: "FAILED, exit code 3",
        tasks[2]: "killed by signal 15 (SIGTERM)",
        tasks[3]: "killed by signal 15 (SIGTERM)",
    }

    # Once the server forgets an array (no job history / keep_completed passed), its tasks are
    # absent, and the arrays it still knows answer in the same call.
    monkeypatch.setenv("FAKE_PBS_HISTORY", "0")
    monkeypatch.setenv("FAKE_PBS_KEEP_COMPLETED", "0")
    gate2 = tmp_path / "gate2"
    gate2.mkdir()
    ctx2 = context(tmp_path, n_tasks=2, max_running=2, args=["-c", TASK_CODE, str(gate2)])
    script2 = ctx2.run_dir / "array2.sh"
    script2.write_text(pbs.render(ctx2))
    second = pbs.submit(script2, n_tasks=2, max_running=2)
    states = pbs.queue_states([array_id, second])
    assert set(states) == {"101[0].pbs-fake", "101[1].pbs-fake"}
    assert all(state.active for state in states.values())
    pbs.cancel([second])
    wait_for(pbs, second, lambda s: not s)


def test_one_task_and_plain_job_ids(fake_pbs: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "go-0").write_text("0")
    pbs = PBS(flavor=fake_pbs, python=sys.executable)
    ctx = context(tmp_path, n_tasks=1, max_running=1, args=["-c", TASK_CODE, str(gate)])
    script = ctx.run_dir / "one.sh"
    script.write_text(pbs.render(ctx))
    array_id = pbs.submit(script, n_tasks=1, max_running=1)
    task = "100.pbs-fake" if fake_pbs == "pbspro" else "100[0].pbs-fake"
    assert array_id == ("100.pbs-fake" if fake_pbs == "pbspro" else "100[].pbs-fake")
    states = wait_for(pbs, array_id, lambda s: s.get(task) == "completed")
    assert states == {task: JobState.COMPLETED}
    assert (gate / "started-0").read_text() == task
    assert (ctx.log_dir / f"{task}.log").read_text() == "task 0 finished\n"


def test_check_catches_wrong_dialect_and_queue(
    fake_pbs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "torque" if fake_pbs == "pbspro" else "pbspro"
    with pytest.raises(ConfigError, match=f"flavor='{fake_pbs}'"):
        PBS(flavor=other).check()
    with pytest.raises(ConfigError, match="queue='nosuch'"):
        PBS(flavor=fake_pbs, queue="nosuch").check()
    monkeypatch.setenv("FAKE_PBS_QUEUES", "short,long")
    PBS(flavor=fake_pbs, queue="long").check()


def test_max_array_size(fake_pbs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PBS(flavor=fake_pbs).max_array_size() == (10000 if fake_pbs == "pbspro" else None)
    monkeypatch.setenv("FAKE_PBS_MAX_ARRAY_SIZE", "500")
    assert PBS(flavor=fake_pbs).max_array_size() == 500


def test_fake_qsub_speaks_only_its_dialect(fake_pbs: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    wrong = ["-t", "0-3"] if fake_pbs == "pbspro" else ["-J", "0-3"]
    proc = subprocess.run(
        ["qsub", *wrong, str(script)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "invalid option" in proc.stderr
    if fake_pbs == "pbspro":
        proc = subprocess.run(
            ["qsub", "-J", "0-0", str(script)], capture_output=True, text=True, check=False
        )
        assert "illegal -J value" in proc.stderr


@pytest.mark.parametrize("n_tasks", [1, 3])
def test_find_tagged_through_the_fakes(fake_pbs: str, tmp_path: Path, n_tasks: int) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    pbs = PBS(flavor=fake_pbs, python=sys.executable)
    ctx = context(tmp_path, n_tasks=n_tasks, max_running=1, args=["-c", TASK_CODE, str(gate)])
    script = ctx.run_dir / "tagged.sh"
    script.write_text(pbs.render(ctx))
    array_id = pbs.submit(script, n_tasks=n_tasks, max_running=1, tag="run-1a2b")
    assert pbs.find_tagged(["run-1a2b", "run-other"]) == {"run-1a2b": array_id}
    assert pbs.find_tagged(["run-other"]) == {}
    # The queue poll names each task by its array's tag (Torque's "-i" suffix taken off).
    tasks = pbs.queue_named([array_id])
    assert len(tasks) == n_tasks
    assert {task.name for task in tasks.values()} == {"run-1a2b"}
    pbs.cancel([array_id])


def test_names_parsed_from_recorded_listings() -> None:
    for name in ("pbspro_qstat_array.json", "pbspro_qstat_bad_variable_list.json"):
        names = parse_pbspro_names((DATA / name).read_text())
        assert names["4711[].pbs01"] == "adaptive"
        assert not [job for job in names if "[" in job and "[]" not in job]  # no subjobs
    torque = parse_torque_names((DATA / "torque_qstat_x_summary.xml").read_text())
    assert torque == {"88[].torque01.hpc.example.edu": "adaptive"}


def test_a_packed_run_through_the_fakes(fake_pbs: str, tmp_path: Path) -> None:
    # Three workers in one PBS job (a plain job: one task), through six learners.
    from helpers_run import make_learners  # noqa: PLC0415

    import adaptive_runner as ar  # noqa: PLC0415

    pbs = PBS(flavor=fake_pbs, workers_per_node=3, python=sys.executable)
    fnames = [tmp_path / "data" / f"l{i}.pickle" for i in range(6)]
    rm = ar.RunManager(
        pbs,
        make_learners(6),
        fnames,
        goal=20,
        run_dir=tmp_path / "run",
        max_simultaneous_jobs=1,
        poll_interval=0.3,
        log_interval=0.3,
    ).start()
    try:
        assert rm.wait(timeout=120)
    finally:
        rm.stop()
    assert rm.status()["done"] == 6
    with sqlite3.connect(tmp_path / "run" / "state.sqlite") as conn:
        rows = conn.execute("SELECT task, pid, outcome FROM tasks").fetchall()
        arrays = [row[0] for row in conn.execute("SELECT array_id FROM arrays")]
    assert len(arrays) == 1
    job = "100.pbs-fake" if fake_pbs == "pbspro" else "100[0].pbs-fake"
    assert {task for task, _, _ in rows} <= {f"{job}@{rank}" for rank in range(3)}
    assert len({pid for _, pid, _ in rows}) == len({task for task, _, _ in rows}) > 1
    assert {outcome for _, _, outcome in rows} == {"done"}
