"""SLURM's pure parts: parsers on recorded real output, option checks, the rendered script."""

from __future__ import annotations

import re
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import (
    JobState,
    QueuedTask,
    ScriptContext,
    TaskEnd,
)
from adaptive_runner.schedulers.slurm import (
    SLURM,
    Partition,
    accounting_disabled,
    format_time,
    parse_array_tasks,
    parse_job_nodes,
    parse_max_array_size,
    parse_mpi_plugins,
    parse_partitions,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    parse_squeue_names,
    parse_time,
    sacct_task_end,
)

# Recorded by tests/data/slurm/record.sh on the one-node SLURM 22.05 of ci/slurm/start.sh.
DATA = Path(__file__).parents[1] / "data" / "slurm"

P, R, C = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def squeue_states(text: str, array_ids: list[str]) -> dict[str, JobState]:
    return {task: queued.state for task, queued in parse_squeue(text, array_ids).items()}


def test_squeue_pending_ranges_and_running_tasks() -> None:
    text = recorded("squeue_pending_running.txt")
    # 2989: --array=0-11%8 with 8 running; 2986..2988: held --array=1,3,5-7 / 0-3000:2 /
    # 0-20000:3%5.
    states = squeue_states(text, ["2989", "2986", "2987", "2988"])
    assert {k: v for k, v in states.items() if k.startswith("2989_")} == {
        **{f"2989_{i}": R for i in range(8)},
        **{f"2989_{i}": P for i in range(8, 12)},
    }
    assert {k for k in states if k.startswith("2986_")} == {
        "2986_1",
        "2986_3",
        "2986_5",
        "2986_6",
        "2986_7",
    }
    assert sum(k.startswith("2987_") for k in states) == 1501
    assert "2987_3000" in states
    assert "2987_3" not in states
    assert sum(k.startswith("2988_") for k in states) == 6667
    assert states["2988_19998"] == P


def test_squeue_pending_reasons() -> None:
    # squeue's %r, in the same call as the states: why a task waits; "None" once it runs.
    tasks = parse_squeue(recorded("squeue_pending_running.txt"), ["2989", "2986"])
    assert {tasks[f"2989_{i}"].reason for i in range(8, 12)} == {"JobArrayTaskLimit"}
    assert tasks["2986_5"].reason == "JobHeldUser"
    assert {tasks[f"2989_{i}"].reason for i in range(8)} == {None}
    states = parse_squeue(recorded("squeue_states.txt"), ["2989"])
    assert states["2989_1"].reason == "Resources,BeginTime"  # requeued: two reasons in one


def test_squeue_keeps_only_the_asked_arrays() -> None:
    text = recorded("squeue_pending_running.txt")
    assert set(squeue_states(text, ["2986"])) == {"2986_1", "2986_3", "2986_5", "2986_6", "2986_7"}
    assert squeue_states(text, ["999"]) == {}
    assert squeue_states(text, []) == {}


def test_squeue_long_irregular_pending_set() -> None:
    # Printed in full only because SLURM_BITSTR_LEN=0 (the default cuts it at 64 characters).
    states = squeue_states(recorded("squeue_long_pending.txt"), ["2998"])
    # Tasks 3, 10, ..., 150 were released one by one; those up to 108 ran and finished, the
    # later ones still waited for a slot (Resources) when recorded.
    finished = set(range(3, 109, 7))
    indices = {
        state: {int(k.split("_")[1]) for k, v in states.items() if v == state}
        for state in (C, R, P)
    }
    assert indices[C] == finished
    assert indices[R] == set()
    assert indices[P] == set(range(301)) - finished


def test_squeue_completing_failed_suspended_requeued() -> None:
    states = squeue_states(recorded("squeue_states.txt"), ["2989", "3021", "3022"])
    assert states["3021_0"] == R  # COMPLETING: cancelled, ignoring SIGTERM until KillWait
    assert states["3021_1"] == R
    assert states["3022_0"] == states["3022_1"] == JobState.FAILED
    assert states["2989_0"] == R  # SUSPENDED keeps its allocation
    assert states["2989_1"] == P  # requeued: back in the pending set "1,8-11"
    assert {states[f"2989_{i}"] for i in range(8, 12)} == {P}


def test_squeue_timeout_is_an_ending_from_outside() -> None:
    text = recorded("squeue_timeout.txt")
    (array_id,) = {line.split("|")[0] for line in text.splitlines()}
    assert squeue_states(text, [array_id]) == {f"{array_id}_0": JobState.CANCELLED}


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("PENDING", P),
        ("CONFIGURING", R),
        ("RUNNING", R),
        ("COMPLETING", R),
        ("SUSPENDED", R),
        ("REQUEUED", P),
        ("REQUEUE_HOLD", P),
        ("PREEMPTED", JobState.CANCELLED),
        ("COMPLETED", C),
        ("FAILED", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("TIMEOUT", JobState.CANCELLED),
        ("CANCELLED", JobState.CANCELLED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
    ],
)
def test_every_state_code(code: str, state: JobState) -> None:
    assert squeue_states(f"5|2|{code}|None|run-1\n", ["5"]) == {"5_2": state}


def test_squeue_truncated_expression_is_an_error() -> None:
    # What squeue printed here without SLURM_BITSTR_LEN=0.
    text = (
        "19|0-2,4-9,11-16,18-23,25-30,32-37,39-44,46-51,53-58,60-65,67-7...|PENDING|JobHeldUser"
        "|run-1\n"
    )
    with pytest.raises(SchedulerCommandError, match="SLURM_BITSTR_LEN"):
        squeue_states(text, ["19"])


def test_squeue_malformed_line_is_an_error() -> None:
    with pytest.raises(SchedulerCommandError, match="unexpected squeue line"):
        parse_squeue("5 2 RUNNING\n", ["5"])
    with pytest.raises(SchedulerCommandError, match="unexpected squeue line"):
        parse_squeue("5|2|RUNNING\n", ["5"])  # without the job name


def test_squeue_names_every_task_and_a_job_that_is_no_array() -> None:
    # record.sh: a held array of three named run-ab12cd34 (2982) and a plain job 'other|job'
    # (2983), as the queue poll sees a recorded id that another job holds now.
    tasks = parse_squeue(recorded("squeue_named.txt"), ["2982", "2983"])
    assert tasks == {
        **{f"2982_{i}": QueuedTask(P, "run-ab12cd34", "JobHeldUser") for i in range(3)},
        # keyed by its own id; a name may hold '|'
        "2983": QueuedTask(P, "other|job", "JobHeldUser"),
    }
    assert set(parse_squeue(recorded("squeue_named.txt"), ["2983"])) == {"2983"}


@pytest.mark.parametrize(
    ("expression", "indices"),
    [
        ("7", [7]),
        ("[4-10%2]", [4, 5, 6, 7, 8, 9, 10]),
        ("1,3,5-7", [1, 3, 5, 6, 7]),
        ("0-9:3%5", [0, 3, 6, 9]),
        ("[0-2,8]", [0, 1, 2, 8]),
    ],
)
def test_array_expressions(expression: str, indices: list[int]) -> None:
    assert parse_array_tasks(expression) == indices


def test_sacct_exit_states() -> None:
    # Array 1: task 1 exits 3, task 2 kills itself with SIGSEGV, task 3 is scancelled while it
    # runs; array 2 hits its time limit; array 3 is held (one pending-range line).
    ends = parse_sacct(recorded("sacct_exit_states.txt"), ["1", "2", "3"])
    assert ends["1_0"] == TaskEnd(JobState.COMPLETED, 0, None, "COMPLETED")
    assert ends["1_1"] == TaskEnd(JobState.FAILED, 3, None, "FAILED")
    assert ends["1_2"] == TaskEnd(JobState.FAILED, None, 11, "FAILED")
    assert ends["1_3"] == TaskEnd(JobState.CANCELLED, 0, None, "CANCELLED by 0")
    assert ends["2_0"] == TaskEnd(JobState.CANCELLED, 0, None, "TIMEOUT")
    pending = TaskEnd(JobState.PENDING, None, None, "PENDING")
    assert {task: ends[task] for task in ends if task.startswith("3_")} == {
        f"3_{i}": pending for i in range(6)
    }
    assert [ends[f"1_{i}"].describe() for i in range(4)] == [
        "COMPLETED",
        "FAILED, exit code 3",
        "killed by signal 11 (SIGSEGV)",
        "CANCELLED by 0",
    ]
    assert ends["2_0"].describe() == "TIMEOUT (time limit reached)"


def test_sacct_keeps_only_the_asked_arrays() -> None:
    assert set(parse_sacct(recorded("sacct_exit_states.txt"), ["2"])) == {"2_0"}
    assert parse_sacct(recorded("sacct_exit_states.txt"), ["99"]) == {}


@pytest.mark.parametrize(
    ("state", "exit_code", "reason"),
    [
        ("OUT_OF_MEMORY", "0:125", "OUT_OF_MEMORY (over its memory limit)"),
        ("NODE_FAIL", "0:0", "NODE_FAIL (its node failed)"),
        ("FAILED", "127:0", "FAILED, exit code 127"),
        ("CANCELLED by 1000", "0:15", "CANCELLED by 1000"),
        ("PREEMPTED", "0:15", "PREEMPTED (preempted by another job)"),
        ("FAILED", "0:99", "killed by signal 99 (unknown signal)"),
    ],
)
def test_sacct_endings_not_recorded_here(state: str, exit_code: str, reason: str) -> None:
    # Endings this one-node SLURM cannot produce (no cgroups, no second node), in sacct's
    # documented formats.
    assert sacct_task_end(state, exit_code).describe() == reason


def test_sacct_array_record_without_a_task_is_skipped() -> None:
    # Seen on the CI SLURM right after scancel of an array's last running task.
    assert parse_sacct("7|CANCELLED by 0|0:0\n7_0|COMPLETED|0:0\n", ["7"]) == {
        "7_0": TaskEnd(JobState.COMPLETED, 0, None, "COMPLETED")
    }


@pytest.mark.parametrize("line", ["1_0|COMPLETED", "1_0|COMPLETED|0:0|x", "1_0|FAILED|3"])
def test_sacct_malformed_line_is_an_error(line: str) -> None:
    with pytest.raises(SchedulerCommandError, match="sacct"):
        parse_sacct(line, ["1"])


def test_accounting_disabled_is_told_from_the_fields() -> None:
    def failure(stderr: str, returncode: int | None = 1) -> SchedulerCommandError:
        return SchedulerCommandError("sacct failed", returncode=returncode, stderr=stderr)

    assert accounting_disabled(failure(recorded("sacct_disabled.stderr")))
    assert not accounting_disabled(failure(recorded("sbatch_bad_partition.stderr")))
    assert not accounting_disabled(failure(""))
    assert not accounting_disabled(failure(recorded("sacct_disabled.stderr"), returncode=None))


def test_sbatch_parsable() -> None:
    assert parse_sbatch(recorded("sbatch_parsable.txt")) == "2981"
    assert parse_sbatch("123;cluster2\n") == "123"
    with pytest.raises(SchedulerCommandError, match="not a job id"):
        parse_sbatch("Submitted batch job 5\n")


def test_max_array_size_from_scontrol() -> None:
    assert parse_max_array_size(recorded("scontrol_show_config.txt")) == 100001
    with pytest.raises(SchedulerCommandError, match="MaxArraySize"):
        parse_max_array_size("MaxJobCount = 10\n")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90", 5400),
        ("30:15", 1815),
        ("2:00:00", 7200),
        ("1-12", 129600),
        ("1-00:30", 88200),
        ("3-01:02:03", 262923),
    ],
)
def test_parse_time(value: str, seconds: int) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", ["", "0", "0:00", "1h", "1:2:3:4", "-5", "1-", "1.5"])
def test_parse_time_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="HH:MM:SS"):
        parse_time(value)


def test_format_time() -> None:
    assert format_time(262923) == "3-01:02:03"
    assert format_time(60) == "0-00:01:00"


@pytest.mark.parametrize(
    ("value", "spelled"),
    [("500M", "500M"), ("8G", "8G"), ("8gb", "8G"), ("8 GB", "8G"), ("100", "100"), ("1t", "1T")],
)
def test_memory_in_slurm_spelling(value: str, spelled: str) -> None:
    assert SLURM(memory=value).slurm_mem == spelled


@pytest.mark.parametrize("value", ["", "0G", "1.5G", "lots", "8X"])
def test_memory_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="'8G'"):
        SLURM(memory=value)


def test_memory_in_bytes_is_refused() -> None:
    with pytest.raises(ConfigError, match="SLURM takes no bytes"):
        SLURM(memory="4096b")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"walltime": "2h"}, "walltime='2h'"),
        ({"time": "2h"}, "walltime='2h'"),  # an alias is checked under its common name
        ({"memory": "8 XB"}, "memory="),
        ({"queue": "a b"}, "queue="),
        ({"partition": "a b"}, "queue="),
        ({"account": "x'y"}, "account"),
        ({"qos": "a#b"}, "qos"),
        ({"extra_directives": "--constraint=gpu"}, "list of lines"),
        ({"extra_sbatch": ["constraint=gpu"]}, "single sbatch flags"),
        ({"extra_directives": ["#SBATCH constraint=gpu"]}, "single sbatch flags"),
        ({"extra_directives": ["--comment=a\n#SBATCH --x"]}, "single non-empty lines"),
        ({"signal": "NOPE"}, "signal"),
        ({"signal": "USR2"}, "'USR1' or 'TERM'"),  # the worker would die without saving
        ({"signal_grace_s": 0}, "signal_grace_s"),
        # The signal that asks a job to save and stop would come as it starts.
        ({"walltime": "0:02:00"}, r"signal_grace_s=120 is not below walltime='0:02:00' \(120 s\)"),
        ({"time": "1", "signal_grace_s": 90}, r"signal_grace_s=90 is not below walltime='1' \(60"),
        ({"mpi_launcher": "srun\n--mpi=pmi2"}, r"mpi_launcher 'srun\\n--mpi=pmi2' holds the contr"),
        ({"nodes": 2}, "go together"),
        ({"nodes": 2, "cores_per_node": 4}, "mpi4py"),
        ({"nodes": 0, "cores_per_node": 4, "executor": "mpi4py"}, "nodes=0 is out of range"),
        ({"nodes": 2, "cores_per_node": 4, "cores": 3, "executor": "mpi4py"}, "contradicts"),
        ({"mpi_launcher": "  "}, "mpi_launcher"),
        ({"cores": 0}, "cores"),
        ({"workers_per_node": 0}, "workers_per_node=0 is out of range"),
        ({"workers_per_node": 4, "executor": "mpi4py"}, "give one of the two"),
        ({"workers_per_node": 4, "nodes": 2, "cores_per_node": 8}, "give cores, not cores_per"),
        ({"workers_per_node": 4, "nodes": 0}, "nodes=0 is out of range"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SLURM(**kwargs)


def test_a_signal_grace_below_the_walltime_or_no_signal_is_taken() -> None:
    assert SLURM(walltime="0:02:01").signal_grace_s == 120
    assert SLURM(walltime="0:01:00", signal=None).walltime_s == 60  # no signal, no grace
    assert SLURM(signal_grace_s=600).walltime is None  # the partition's limit: not known here


def test_nodes_set_cores() -> None:
    s = SLURM(nodes=2, cores_per_node=4, executor="mpi4py")
    assert s.cores == 8
    assert SLURM(signal="SIGTERM").signal_name == "TERM"
    assert SLURM(walltime="90").time_limit == "0-01:30:00"  # SLURM's minutes
    assert SLURM(walltime=timedelta(days=2, seconds=1)).time_limit == "2-00:00:01"


def test_commands_are_built_without_running_anything() -> None:
    s = SLURM()
    assert s.submit_command(Path("/j.sh"), n_tasks=3, max_running=2, tag="run-1") == [
        *("sbatch", "--parsable", "--job-name=run-1", "--array=0-2%2", "/j.sh"),
    ]
    assert s.tagged_command(["b", "a"]) == [
        *("squeue", "--me", "-h", "-t", "all", "--name", "a,b", "-o", "%F|%j"),
    ]
    with pytest.raises(ConfigError, match="n_tasks and max_running must be positive"):
        s.submit(Path("/j.sh"), n_tasks=0, max_running=1)  # refused before anything runs


def test_cancel_refuses_names() -> None:
    with pytest.raises(ConfigError, match="cannot cancel"):
        SLURM().cancel(["my-job-name"])


def _context(tmp_path: Path) -> ScriptContext:
    weird = tmp_path / 'it\'s a %d "dir"'
    return ScriptContext(
        job_name="run 'one'",
        run_dir=weird,
        log_dir=weird / "logs",
        n_tasks=3,
        max_running=2,
        worker_args=["-m", "adaptive_runner.worker", str(weird)],
    )


def test_rendered_script_options_and_syntax(tmp_path: Path) -> None:
    s = SLURM(
        cores=4,
        walltime="1-00:00:00",
        memory="8gb",
        queue="debug",
        account="proj",
        qos="low",
        exclusive=True,
        extra_directives=["--constraint=a b", "#SBATCH --gres=gpu:1"],
        signal_grace_s=300,
        env={"MY_VAR": "x'; rm -rf /"},
        extra_script="echo ready",
    )
    ctx = _context(tmp_path)
    text = s.render(ctx)
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    sbatch = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH")]
    assert sbatch == [
        "--job-name='run '\"'\"'one'\"'\"''",
        "--output=" + shlex.quote(str(ctx.log_dir).replace("%", "%%") + "/%A_%a.log"),
        "--open-mode=append",
        "--no-requeue",
        "--ntasks=1",
        "--cpus-per-task=4",
        "--time=1-00:00:00",
        "--mem=8G",
        "--partition=debug",
        "--account=proj",
        "--qos=low",
        "--exclusive",
        "--signal=B:USR1@300",
        "'--constraint=a b'",
        "--gres=gpu:1",
    ]
    assert "export MY_VAR='x'\"'\"'; rm -rf /'" in lines
    assert "export OMP_NUM_THREADS=1" in lines
    assert lines[-1].startswith("exec ")
    assert lines[-1].endswith("-m adaptive_runner.worker " + shlex.quote(str(ctx.run_dir)))
    script = tmp_path / "job.sh"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_rendered_mpi_script(tmp_path: Path) -> None:
    s = SLURM(
        nodes=2,
        cores_per_node=3,
        executor="mpi4py",
        mpi_launcher="srun --mpi=pmi2",
        signal=None,
        python="/opt/py 3/bin/python",
    )
    text = s.render(_context(tmp_path))
    assert "#SBATCH --nodes=2" in text
    assert "#SBATCH --ntasks-per-node=3" in text
    assert "--signal" not in text
    exec_line = text.splitlines()[-1]
    assert exec_line.startswith(
        "exec srun --mpi=pmi2 -n 6 '/opt/py 3/bin/python' -m mpi4py.futures "
        "-m adaptive_runner.worker "
    )
    script = tmp_path / "job.sh"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    one_node = SLURM(cores=4, executor="mpi4py").render(_context(tmp_path))
    assert "#SBATCH --ntasks=4" in one_node
    assert "exec mpiexec -n 4 " in one_node


def test_rendered_packed_scripts(tmp_path: Path) -> None:
    # One node: the script itself runs the packer, which starts the four workers.
    one = SLURM(workers_per_node=4, cores=2)
    assert one.packed == 4
    text = one.render(_context(tmp_path))
    for line in ("--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=8", "--signal=B:USR1@120"):
        assert f"#SBATCH {line}" in text
    exec_line = text.splitlines()[-1]
    assert exec_line.startswith(f"exec {shlex.quote(one.python)} -m adaptive_runner.packing 4 ")
    assert " -m adaptive_runner.worker " in exec_line
    # Several nodes: one srun step of one packer per node, each with all its node's cores.
    three = SLURM(workers_per_node=8, nodes=3)
    assert three.packed == 24
    text = three.render(_context(tmp_path))
    assert "#SBATCH --nodes=3" in text
    assert text.splitlines()[-1].startswith(
        "exec srun --nodes=3 --ntasks-per-node=1 --cpus-per-task=8 --kill-on-bad-exit=0 "
    )
    script = tmp_path / "job.sh"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert SLURM(cores=4).packed is None  # one worker per task, under the task's own id


def test_missing_sbatch_says_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    script = tmp_path / "job.sh"
    script.write_text("#!/usr/bin/env bash\n")
    with pytest.raises(SchedulerCommandError, match=r"sbatch not found.*SLURM login node"):
        SLURM().submit(script, n_tasks=1, max_running=1)


def test_parse_squeue_names_finds_arrays_by_tag() -> None:
    # squeue --me -h -t all -o '%F|%j' (record.sh): a held array "run-ab12cd34", "other|job".
    text = (DATA / "squeue_names.txt").read_text()
    assert parse_squeue_names(text, ["run-ab12cd34", "run-none"]) == {"run-ab12cd34": "2982"}
    assert parse_squeue_names(text, ["other|job"]) == {"other|job": "2983"}
    assert parse_squeue_names(text + "2982|run-ab12cd34\n", ["run-ab12cd34"]) == {
        "run-ab12cd34": "2982"
    }  # one line per task once they run: the same array
    assert parse_squeue_names(text, []) == {}
    with pytest.raises(SchedulerCommandError, match=re.escape("want '%F|%j'")):
        parse_squeue_names("67 run-ab12cd34\n", ["run-ab12cd34"])


def test_partitions_from_sinfo_add_up_node_groups_and_mark_the_default() -> None:
    out = "debug*|2|4|1000\ndebug*|1|8+|4000+\nlong|12|64|256000\nbroken|||\nshort|1|2\n"
    partitions = parse_partitions(out)
    assert partitions == {
        "debug": Partition("debug", 3, 8, 4000, default=True),
        "long": Partition("long", 12, 64, 256000, default=False),
        "broken": Partition("broken", 0, None, None, default=False),
    }


def test_mpi_plugins_from_srun_mpi_list() -> None:
    # Recorded on the CI SLURM 22.05 (ci/slurm/start.sh).
    out = (DATA / "srun_mpi_list.txt").read_text()
    assert parse_mpi_plugins(out) == {"pmix", "none", "cray_shasta", "pmi2", "pmix_v4"}


def test_the_batch_host_and_node_list_of_a_running_job() -> None:
    shown = (
        "JobId=452 ArrayJobId=452 ArrayTaskId=0 JobName=run-eb5b7871\n"
        "   ReqNodeList=(null) ExcNodeList=(null)\n"
        "   NodeList=n[1-2]\n"
        "   BatchHost=n1\n"
    )
    assert parse_job_nodes(shown) == ("n1", "n[1-2]")
    assert parse_job_nodes("JobId=9 JobState=PENDING\n   NodeList=(null)\n") == (None, None)


def test_a_one_node_allocation_hands_no_node_back_without_asking_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: asking would raise
    assert SLURM(workers_per_node=4).release_node("12_0", "n1") is False
