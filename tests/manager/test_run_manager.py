"""End-to-end runs on the Local scheduler: real workers, real ZeroMQ, real sqlite.

The scenarios every backend shares (goal, kill -9, cancel) are tests/e2e/test_scenarios.py.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptive
import cloudpickle
import pytest
from helpers_disks import read_only
from helpers_run import (
    always_fails,
    broken,
    fixed,
    make_learners,
    make_rm,
    no_overlaps,
    slow_square,
    stop_and_cancel,
    task_rows,
    wait_for,
)

import adaptive_runner as ar
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.common.saving import load_data
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.database_manager import interface_address
from adaptive_runner.manager.run_setup import create_run, rewrite_run
from adaptive_runner.manager.spec import RunOptions, RunSpec
from adaptive_runner.schedulers import scheduler_options
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from adaptive_runner.schedulers.base import Scheduler


def test_run_to_goal_and_layout(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(5)).start()
    assert rm.wait(timeout=120)
    assert rm.status()["done"] == 5
    for learner in rm.load_learners():
        assert learner.npoints >= 30
    run_dir = tmp_path / "run"
    for name in ("run.json", "state.sqlite", "goal.pickle", "learners", "logs", "jobs", "keys"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "keys").stat().st_mode & 0o777 == 0o700
    assert run_dir.stat().st_mode & 0o777 == 0o700  # its pickles are only ever the owner's
    started = [
        json.loads(line)
        for line in (run_dir / "manager.log").read_text().splitlines()
        if '"run started"' in line
    ]
    assert started[0]["goal"] == "npoints >= 30"
    assert started[0]["learners"] == 5
    for secret in ("server.key_secret", "client.key_secret"):
        assert (run_dir / "keys" / secret).stat().st_mode & 0o777 == 0o600
    # One array for the whole run: four tasks (the throttle), and the fifth learner went to
    # the first task that finished its own, no second submission.
    with Database.open(run_dir / "state.sqlite") as db:
        assert db.active_arrays() == []
    assert len(list((run_dir / "jobs").glob("*.sh"))) == 1
    holds = Counter(row["task"] for row in task_rows(run_dir))
    assert sum(holds.values()) == 5
    assert len(holds) <= 4  # so some task held two learners
    no_overlaps(run_dir)


def test_same_config_continues_and_finished_resume_reports_done(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2)).start()
    assert rm.wait(timeout=120)
    again = ar.RunManager.resume(tmp_path / "run")
    assert again.job_manager is None  # nothing left to do: no managers started
    assert again.finished()
    assert again.status()["done"] == 2


def test_failing_learner_ends_failed_with_traceback(tmp_path: Path) -> None:
    learners = [adaptive.Learner1D(always_fails, bounds=(0, 1)), *make_learners(1)]
    rm = make_rm(tmp_path, learners, max_fails=2).start()
    assert not rm.wait(timeout=120)
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        bad, good = db.learners()
    assert bad.state == "failed"
    assert bad.failures == 2
    assert "ZeroDivisionError" in (bad.error or "")
    log = [json.loads(line) for line in (tmp_path / "run" / "manager.log").read_text().splitlines()]
    fails = [r for r in log if r["event"] == "job failed" and r["learner"] == 0]
    assert len(fails) == 2
    assert all(r["reason"].startswith("ZeroDivisionError: cannot evaluate at") for r in fails)
    assert good.state == "done"


def test_dependencies_wait_for_their_learners(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(3), dependencies={2: [0, 1]}).start()
    assert rm.wait(timeout=120)
    rows = task_rows(tmp_path / "run")
    finished = {r["learner"]: r["finished"] for r in rows if r["outcome"] == "done"}
    started = min(r["started"] for r in rows if r["learner"] == 2)
    assert started >= max(finished[0], finished[1])


MANAGER_SCRIPT = """
import sys, time
from functools import partial
import adaptive, cloudpickle
import adaptive_runner as ar
sys.path.insert(0, {tests!r})
import helpers_run as t
rm = ar.RunManager(ar.Local(cores=1), t.make_learners(3, delay=0.02),
                   [{data!r} + f"/l{{i}}.pickle" for i in range(3)], goal=80,
                   run_dir={run!r}, max_simultaneous_jobs=3, save_interval=0.3,
                   log_interval=0.3, poll_interval=0.3)
rm.start()
print("started", flush=True)
time.sleep(600)
"""


def test_managers_killed_then_resumed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = MANAGER_SCRIPT.format(
        tests=str(Path(__file__).parents[1]), data=str(tmp_path / "data"), run=str(run_dir)
    )
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # manager log lines come first
                if line.strip() == "started":
                    break
            wait_for(
                lambda: sum(r["finished"] is None for r in task_rows(run_dir)) >= 2,
                what="jobs running",
            )
        finally:
            proc.kill()
    rm = ar.RunManager.resume(run_dir)
    assert rm.wait(timeout=180)
    assert rm.status()["done"] == 3
    for learner in rm.load_learners():
        assert learner.npoints >= 80
    no_overlaps(run_dir)


# -- bad input: clear errors, nothing written --------------------------------------------------


def test_lengths_differ(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="same length"):
        ar.RunManager(ar.Local(), make_learners(2), ["a.pickle"], goal=10, run_dir=tmp_path / "r")


def test_duplicate_fnames(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fnames\[1\] and fnames\[0\]"):
        ar.RunManager(
            ar.Local(), make_learners(2), ["a.pickle", "./a.pickle"], goal=10, run_dir=tmp_path
        )


def test_unpicklable_learner_names_its_index(tmp_path: Path) -> None:
    learners = make_learners(2)
    unpicklable = partial(slow_square, a=threading.Lock(), delay=0)  # type: ignore[arg-type]
    learners[1] = adaptive.Learner1D(unpicklable, (0, 1))
    rm = make_rm(tmp_path, learners)
    with pytest.raises(ConfigError, match="learner 1 cannot be pickled"):
        rm.start()
    assert not (tmp_path / "run").exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_run_with_other_config_is_refused(tmp_path: Path) -> None:
    make_rm(tmp_path, make_learners(2), goal=5).start().wait(timeout=120)
    other = make_rm(tmp_path, make_learners(1))  # learner 1 left out (appended ones grow it)
    with pytest.raises(ConfigError, match="use a new run_dir, pass overwrite=True"):
        other.start()
    renamed = make_rm(tmp_path, make_learners(2), fname_prefix="other")
    with pytest.raises(ConfigError, match="learners or fnames differ"):
        renamed.start()
    replaced = make_rm(tmp_path, make_learners(3), overwrite=True, goal=5).start()
    assert replaced.wait(timeout=120)
    assert replaced.status()["done"] == 3


def test_bad_goal_and_executor(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="goal"):
        make_rm(tmp_path, make_learners(1), goal="forever")
    with pytest.raises(ConfigError, match="executor"):
        ar.Local(executor="threads")


def test_goal_none_runs_sequence_learners_until_done(tmp_path: Path) -> None:
    sequence = [x / 10 for x in range(12)]
    learners = [
        adaptive.SequenceLearner(partial(slow_square, a=a, delay=0.0), sequence) for a in (1, 2)
    ]
    rm = make_rm(tmp_path, learners, goal=None).start()
    assert rm.wait(timeout=120)
    for a, learner in zip((1, 2), rm.load_learners(), strict=True):
        assert learner.done()
        assert learner.result() == [a * x**2 for x in sequence]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["goal"] == (
        "until the learner is done"
    )
    # A fresh run over the same, complete data files is done at start, without a job.
    again = make_rm(tmp_path, learners, goal=None, overwrite=True).start()
    assert again.wait(timeout=120)
    assert not any((tmp_path / "run" / "jobs").glob("*.sh"))


def test_goal_none_is_refused_for_a_learner_without_an_end(tmp_path: Path) -> None:
    learners = [adaptive.SequenceLearner(abs, [1, 2]), *make_learners(1)]
    with pytest.raises(ConfigError, match=r"goal=None .* learners\[1\] is a Learner1D"):
        make_rm(tmp_path, learners, goal=None)


def test_run_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rm = make_rm(tmp_path, make_learners(1), run_dir=blocker / "run")
    with pytest.raises(ConfigError, match="cannot create the run directory"):
        rm.start()


def test_start_refuses_data_files_it_cannot_write(tmp_path: Path) -> None:
    # A read-only file system (as root: a read-only bind mount, EROFS) or a directory without
    # write permission (EACCES): the learners would compute, then never save.
    fnames = [tmp_path / "ro" / f"l{i}.pickle" for i in range(3)]
    fnames += [tmp_path / "ro" / "new" / "l3.pickle", tmp_path / "data" / "l4.pickle"]
    (tmp_path / "data").mkdir()
    rm = ar.RunManager(
        ar.Local(cores=1), make_learners(5), fnames, goal=30, run_dir=tmp_path / "run"
    )
    with read_only(tmp_path / "ro"), pytest.raises(ConfigError) as refused:
        rm.start()
    message = str(refused.value)
    assert re.search(
        rf"\n  {tmp_path / 'ro'}: (Read-only file system \(EROFS\)|Permission denied \(EACCES\)) "
        rf"\(fnames\[0\] '{fnames[0]}' and 3 more, some in directories to be made there\)\n",
        message,
    ), message
    assert str(tmp_path / "data") not in message  # the writable directory is not named
    assert not (tmp_path / "run").exists()  # nothing written
    assert list((tmp_path / "data").iterdir()) == []  # its check file is gone


def test_start_names_ten_refusing_directories_and_counts_the_rest(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    fnames = []
    for d in range(12):  # a file where each directory should be: ENOTDIR
        (files / f"d{d}").write_text("not a directory")
        fnames += [files / f"d{d}" / f"l{i}.pickle" for i in range(2)]
    rm = ar.RunManager(
        ar.Local(cores=1), make_learners(24), fnames, goal=30, run_dir=tmp_path / "run"
    )
    with pytest.raises(ConfigError) as refused:
        rm.start()
    lines = str(refused.value).splitlines()
    assert (
        lines[1]
        == f"  {files / 'd0'}: Not a directory (ENOTDIR) (fnames[0] '{fnames[0]}' and 1 more)"
    )
    assert lines[10].startswith(f"  {files / 'd9'}: Not a directory")
    assert lines[11] == "  ... and 2 more directories (4 fnames)"
    assert "then start again" in lines[12]


def test_a_missing_data_directory_is_made_by_the_first_save(tmp_path: Path) -> None:
    fnames = [tmp_path / "new" / "deeper" / "l0.pickle"]
    rm = ar.RunManager(
        ar.Local(cores=1), make_learners(1), fnames, goal=30, run_dir=tmp_path / "run"
    )
    rm.start()
    try:
        assert rm.wait(timeout=120)  # the bound only guards against a hang
    finally:
        stop_and_cancel(rm)
    assert [p.name for p in (tmp_path / "new" / "deeper").iterdir()] == ["l0.pickle"]


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        ar.RunManager.resume(tmp_path)


def test_from_groups_runs_each_group_on_its_own_arrays(tmp_path: Path) -> None:
    big, small = make_learners(2), make_learners(3)
    rm = ar.RunManager.from_groups(
        [
            (ar.Local(cores=2, executor="loky"), big, [tmp_path / f"big{i}" for i in range(2)]),
            (ar.Local(cores=1), small, [tmp_path / f"small{i}" for i in range(3)]),
        ],
        goal=20,
        run_dir=tmp_path / "run",
        max_simultaneous_jobs=5,
        save_interval=0.3,
        log_interval=0.3,
        poll_interval=0.3,
    ).start()
    assert rm.wait(timeout=120)
    conn = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    try:
        arrays = dict(conn.execute("SELECT array_id, grp FROM arrays").fetchall())
        learner_groups = dict(conn.execute("SELECT idx, grp FROM learners").fetchall())
    finally:
        conn.close()
    assert sorted(arrays.values()) == [0, 1]  # one array per group
    assert learner_groups == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1}
    for row in task_rows(tmp_path / "run"):  # every learner ran on its own group's array
        array = row["task"].rsplit("_", 1)[0]
        assert arrays[array] == learner_groups[row["learner"]]
    reopened = ar.RunManager.open(tmp_path / "run")
    assert [s.executor for s in reopened.schedulers] == ["loky", "sequential"]
    assert reopened.spec.learner_groups == (0, 0, 1, 1, 1)


def test_from_groups_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="groups is empty"):
        ar.RunManager.from_groups([], goal=10, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"groups\[0\] has 2 learners but 1 fnames"):
        ar.RunManager.from_groups(
            [(ar.Local(), make_learners(2), ["a"])], goal=10, run_dir=tmp_path
        )
    with pytest.raises(ConfigError, match=r"groups\[0\] must be"):
        ar.RunManager.from_groups([ar.Local()], goal=10, run_dir=tmp_path)  # type: ignore[list-item]


def test_one_manager_per_run(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2, delay=0.05), goal=10_000, kill_grace_s=1.0).start()
    try:
        with pytest.raises(ConfigError, match="is managed already"):
            ar.RunManager.resume(tmp_path / "run")
        # Another process (a second notebook) starting the same run, with new settings.
        code = textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            sys.path.insert(0, {str(Path(__file__).parents[1])!r})
            from helpers_run import make_learners, make_rm
            from adaptive_runner.errors import ConfigError
            try:
                make_rm(Path({str(tmp_path)!r}), make_learners(2), goal=5).start()
            except ConfigError as e:
                print(e)
                sys.exit(3)
            """
        )
        other = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
        )
        assert other.returncode == 3, other.stderr
        assert "is managed already" in other.stdout
        assert cloudpickle.loads((tmp_path / "run" / "goal.pickle").read_bytes()) == 10_000
        assert sum(ar.RunManager.open(tmp_path / "run").status().values()) == 2  # watching: fine
    finally:
        stop_and_cancel(rm)
    # The lock went with stop(); the run was cancelled as a whole, so it continues.
    again = ar.RunManager.resume(tmp_path / "run")
    try:
        assert again.status()["cancelled"] == 0
        assert again.job_manager is not None
    finally:
        stop_and_cancel(again)
    run = ar.Run(tmp_path / "run")
    assert run.resume_paused() == [0, 1]
    run.cancel([0, 1])  # cancelled one by one: they stay cancelled
    assert ar.RunManager.resume(tmp_path / "run").finished()


# -- fix and rerun, retry, overwrite -----------------------------------------------------------


def saved_xs(fname: Path) -> set[float]:
    learner = adaptive.Learner1D(fixed, bounds=(-1, 1))
    load_data(learner, fname)
    return set(learner.data)


def test_fix_and_rerun_finishes_with_the_new_code_from_the_saved_points(tmp_path: Path) -> None:
    # Learner 1 waits on 0, so it fails with it: it must come back with it.
    def learners(f: Any) -> list[adaptive.Learner1D]:
        return [adaptive.Learner1D(f, bounds=(-1, 1)) for _ in range(2)]

    first = make_rm(tmp_path, learners(broken), max_fails=1, dependencies={1: [0]}).start()
    assert not first.wait(timeout=120)
    assert first.status()["failed"] == 2
    fname = tmp_path / "data" / "l0.pickle"
    before = saved_xs(fname)
    assert before  # the failed attempt saved its points
    assert not any(0.5 < x < 0.75 for x in before)

    again = make_rm(tmp_path, learners(fixed), max_fails=1, dependencies={1: [0]}, goal=40)
    assert again.start().wait(timeout=120)
    after = saved_xs(fname)
    assert before <= after  # resumed from the first attempt's data file
    assert any(0.5 < x < 0.75 for x in after)
    assert len(after) >= 40  # the new goal
    logs = [json.loads(x) for x in (tmp_path / "run" / "manager.log").read_text().splitlines()]
    changed = next(e for e in logs if e["event"] == "run continued with new code")["changed"]
    assert changed["goal"] == ["npoints >= 30", "npoints >= 40"]
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        rows = db.learners()
        kinds = [k for (k,) in db._conn.execute("SELECT kind FROM events WHERE learner = 0")]
    assert [(r.state, r.attempts, r.failures, r.error) for r in rows] == [("done", 1, 0, None)] * 2
    assert kinds[:2] == ["failed", "failed"]  # the history is kept
    assert "retried" in kinds


def test_rerun_keeps_failed_learners_with_retry_failed_false(tmp_path: Path) -> None:
    learners = [adaptive.Learner1D(always_fails, bounds=(0, 1)), *make_learners(1)]
    assert not make_rm(tmp_path, learners, max_fails=1).start().wait(timeout=120)
    again = make_rm(tmp_path, learners, max_fails=1, retry_failed=False).start()
    assert not again.wait(timeout=120)
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        assert [(r.state, r.attempts) for r in db.learners()] == [("failed", 1), ("done", 1)]


def test_retry_restarts_the_managers_of_a_finished_run(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, [adaptive.Learner1D(always_fails, bounds=(0, 1))], max_fails=1)
    assert not rm.start().wait(timeout=120)
    with pytest.raises(ConfigError, match="retry: 5 is not a learner index"):
        rm.retry([5])
    assert rm.retry() == [0]
    assert rm.job_manager is not None
    assert rm.job_manager.running
    assert not rm.wait(timeout=120)  # it fails again, a second time
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        (row,) = db.learners()
        assert (row.state, row.attempts, row.failures) == ("failed", 1, 1)
        assert len(db.tasks()) == 2


def test_overwrite_starts_fresh_and_keeps_data_until_remove_data(tmp_path: Path) -> None:
    assert make_rm(tmp_path, make_learners(2), goal=10).start().wait(timeout=120)
    fnames = sorted((tmp_path / "data").iterdir())
    # A fresh run state; the data files stay and already meet the goal: done without a job.
    rm = make_rm(tmp_path, make_learners(2), goal=10, overwrite=True).start()
    assert rm.wait(timeout=120)
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        assert db.tasks() == []
        assert [(r.state, r.attempts) for r in db.learners()] == [("done", 0)] * 2
    assert rm.remove_data() == fnames
    assert not any(f.exists() for f in fnames)
    rm = make_rm(tmp_path, make_learners(2), goal=10, overwrite=True).start()
    assert rm.wait(timeout=120)
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        assert len(db.tasks()) == 2  # no data: both ran


# -- the manager's address ---------------------------------------------------------------------


def test_host_goes_into_the_url_and_is_kept(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(1), goal=5, host="localhost").start()
    assert rm.wait(timeout=120)
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["url"].startswith("tcp://localhost:")
    assert (config["host"], config["interface"]) == ("localhost", None)
    assert ar.RunManager.open(tmp_path / "run").spec.host == "localhost"


def test_interface_address_and_bad_addresses(tmp_path: Path) -> None:
    assert interface_address("lo") == "127.0.0.1"
    with pytest.raises(ConfigError, match="not both"):
        make_rm(tmp_path, make_learners(1), host="node1", interface="ib0")
    with pytest.raises(ConfigError, match="without a scheme or port"):
        make_rm(tmp_path, make_learners(1), host="tcp://node1")
    rm = make_rm(tmp_path, make_learners(1), interface="nosuch0")  # no I/O yet
    with pytest.raises(ConfigError, match=r"interface='nosuch0': no such .* it has .*\blo\b"):
        rm.start()
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_host_that_does_not_resolve_is_refused_at_start(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(1), host="no-such-host.invalid")  # no I/O yet
    with pytest.raises(ConfigError, match=r"host='no-such-host.invalid' does not resolve on "):
        rm.start()
    assert not (tmp_path / "run").exists()  # refused before anything was written


# -- paths that reach job scripts ------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler",
    [ar.Local(), ar.SLURM(), ar.PBS(), ar.SSH(hosts={"node1": 1})],
    ids=["local", "slurm", "pbs", "ssh"],
)
def test_control_characters_in_paths_are_refused_at_construction(
    tmp_path: Path, scheduler: Scheduler
) -> None:
    """A newline in a #SBATCH or #PBS line breaks every submission, for ever: said at once."""
    learners = make_learners(2)
    fnames = [tmp_path / "a.pickle", tmp_path / "b\tc.pickle"]
    with pytest.raises(ConfigError, match=r"fnames\[1\] '.*b\\tc.pickle' holds .* '\\t' at"):
        ar.RunManager(scheduler, learners, fnames, goal=5, run_dir=tmp_path / "run")
    fnames[1] = tmp_path / "b.pickle"
    with pytest.raises(ConfigError, match=r"run_dir '.*runs\\nx' holds .* '\\n' at position"):
        ar.RunManager(scheduler, learners, fnames, goal=5, run_dir=tmp_path / "runs\nx")
    with pytest.raises(ConfigError, match=r"python 'python\\n3' holds the control character"):
        dataclasses.replace(scheduler, python="python\n3")
    assert list(tmp_path.iterdir()) == []


def test_cancel_while_a_round_submits_leaves_no_task(tmp_path: Path) -> None:
    # cancel() waits for the round in flight, so the array it submits is cancelled too,
    # even when the managers are stopped right after.
    rm = make_rm(tmp_path, make_learners(6, delay=0.05), kill_grace_s=1).start()
    rm.cancel()
    rm.stop()
    with Database.open(rm.run_dir.database) as db:
        arrays = db.recorded_arrays()
        assert db.counts()["cancelled"] == 6
    local = ar.Local().bind(rm.run_dir.jobs_dir)
    wait_for(
        lambda: not any(s.active for s in local.queue_states(arrays).values()),
        what=f"the tasks of {arrays} to end",
        timeout_s=60,
    )


def test_running_the_same_cell_again_takes_the_run_over(tmp_path: Path) -> None:
    first = make_rm(tmp_path, make_learners(3, delay=0.05), goal=200, kill_grace_s=1).start()
    with pytest.raises(ConfigError, match="has started already"):
        first.start()
    # The cell again: a new RunManager for the same run while the first one still runs it.
    second = make_rm(tmp_path, make_learners(3), kill_grace_s=1)
    second.start()
    try:
        assert first.job_manager is not None
        assert not first.job_manager.running  # stopped by the second start()
        assert second.wait(timeout=120)
    finally:
        stop_and_cancel(second)


def test_the_cell_again_takes_over_from_a_run_manager_no_variable_holds(tmp_path: Path) -> None:
    """``rm = ar.RunManager(...); rm.start()`` run twice: the first object is in no variable
    any more (collected, were it not for its running managers); the second start stops it."""
    make_rm(tmp_path, make_learners(3, delay=0.05), goal=200, kill_grace_s=1).start()
    gc.collect()
    second = make_rm(tmp_path, make_learners(3), kill_grace_s=1)
    second.start()  # was: ConfigError "is managed already"
    try:
        assert second.wait(timeout=120)
    finally:
        stop_and_cancel(second)


def test_wait_on_a_run_manager_that_runs_nothing_says_so(tmp_path: Path) -> None:
    rm = make_rm(tmp_path, make_learners(2))
    with pytest.raises(ConfigError, match=r"stuck_after=0 is not a duration; give a positive"):
        rm.wait(timeout=1, stuck_after=0)
    rm.run_dir.path.mkdir(parents=True)
    with pytest.raises(ConfigError, match="is not a run directory"):
        rm.wait(timeout=1)
    rm.start()
    try:
        other = make_rm(tmp_path, make_learners(2))
        with pytest.raises(ConfigError, match="does not run the managers"):
            other.wait(timeout=1)
        assert rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)


# run.json as the release before the common scheduler vocabulary wrote it (groups' options
# under partition, time, mem, extra_sbatch; queue_name, mem, extra_pbs), recorded with that
# release's run_setup.create_run from SLURM, PBS and Local groups.
RELEASED_RUN_JSON = Path(__file__).parents[1] / "data" / "run_json_released_options.json"


def test_run_json_with_the_released_option_names_opens_and_reruns(tmp_path: Path) -> None:
    released = json.loads(RELEASED_RUN_JSON.read_text())
    python = released["groups"][0]["options"]["python"]
    schedulers: list[Scheduler] = [
        ar.SLURM(
            cores=2,
            python=python,
            env={"A": 1},
            extra_script="true",
            queue="debug",
            walltime="90",
            memory="500M",
            account="proj",
            qos="normal",
            extra_directives=["--constraint=cpu"],
            signal="TERM",
            signal_grace_s=60,
            mpi_launcher="srun --mpi=pmi2",
        ),
        ar.PBS(
            cores=4,
            python=python,
            flavor="torque",
            queue="batch",
            walltime="48:00:00",
            memory="8gb",
            account="proj",
            extra_directives=["#PBS -l place=scatter"],
            max_run_subjobs=False,
        ),
        ar.Local(python=python, kill_grace_s=5),
    ]
    pairs = zip(schedulers, make_learners(3), strict=True)
    groups = [(s, [x], [f"{i}.pickle"]) for i, (s, x) in enumerate(pairs)]
    rm = ar.RunManager.from_groups(groups, goal=0.5, run_dir=tmp_path / "run")
    create_run(rm.run_dir, rm.spec, replace=False)
    # The run directory as the release left it: its run.json with the released groups, and
    # without the fields added since (save_dataframe, ...).
    config_file = tmp_path / "run" / "run.json"
    config = json.loads(config_file.read_text())
    as_released = {key: config[key] for key in released}
    config_file.write_text(json.dumps(as_released | {"groups": released["groups"]}))

    opened = ar.RunManager.open(tmp_path / "run")
    assert opened.schedulers == schedulers
    assert (opened.spec.save_dataframe, opened.spec.dataframe_format) == (
        False,
        "parquet",
    )  # defaults
    # A rerun writes the common names and reports no change where only names changed.
    existing = RunDir(tmp_path / "run").read_config()
    changed = rewrite_run(
        rm.run_dir, rm.spec, existing, first=len(rm.fnames), may_prune=lambda: True
    )
    assert "groups" not in changed
    written = json.loads(config_file.read_text())["groups"]
    assert written == [{"scheduler": s.name, "options": scheduler_options(s)} for s in schedulers]
    assert {"queue", "memory", "extra_directives"} <= set(written[0]["options"])
    assert not {"partition", "time", "mem", "extra_sbatch"} & set(written[0]["options"])


def test_run_options_are_the_spec_options_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    """RunOptions (what users pass) and RunSpec (what is checked) name the same options."""
    spec_fields = {f.name for f in dataclasses.fields(RunSpec)}
    run_identity = {"learners", "fnames", "schedulers", "learner_groups", "dependencies", "goal"}
    assert set(RunOptions.__annotations__) == spec_fields - run_identity
    with pytest.raises(
        ConfigError, match="unknown option 'save_intervall'; did you mean 'save_interval'"
    ):
        make_rm(tmp_path, make_learners(1), goal=5, save_intervall=3)
