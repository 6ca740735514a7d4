"""runner_kwargs and initializers: refused at construction, kept by a run, used by its jobs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from typing import Any

import adaptive
import cloudpickle
import pytest
from helpers_run import make_learners, make_rm, stop_and_cancel

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.spec import OWNED_RUNNER_KWARGS
from adaptive_runner.state.database import Database

# Workers cannot import this file: the learners and initializers carry these by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROBE = "ADAPTIVE_RUNNER_TEST_INITIALIZED_IN"  # the pids of the processes that initialized
_SEEN: set[float] = set()  # the points this process was asked for before


def flaky(x: float) -> float:
    """Fails the first time it is asked for each point, in each process."""
    if x not in _SEEN:
        _SEEN.add(x)
        raise ConnectionError(f"flaky service: try {x} again")
    return x**2


def record_pid() -> None:
    """Append this process's pid to PROBE, which the learners' function (os.getenv) reads."""
    before = os.environ.get(PROBE)
    os.environ[PROBE] = f"{before},{os.getpid()}" if before else str(os.getpid())


def no_licence() -> None:
    raise RuntimeError("no licence server at licence.example:27000")


def probe_learner() -> adaptive.SequenceLearner:
    # os.getenv is importable in any pool process (the process pool pickles by reference).
    return adaptive.SequenceLearner(os.getenv, [PROBE] * 4)


def learner_row(rm: ar.RunManager, index: int = 0) -> Any:
    with Database.open(rm.run_dir.database) as db:
        return db.learners()[index]


# -- refused at construction --------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(OWNED_RUNNER_KWARGS))
def test_runner_kwargs_we_set_are_refused_by_name(tmp_path: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"runner_kwargs\['{key}'\] is set by adaptive_runner"):
        make_rm(tmp_path, make_learners(1), runner_kwargs={key: 1})


def test_runner_kwargs_adaptive_does_not_take_are_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as info:
        make_rm(tmp_path, make_learners(1), runner_kwargs={"retry": 3})
    message = str(info.value)
    assert "runner_kwargs['retry']: adaptive's runners take no such argument" in message
    assert "raise_if_retries_exceeded, retries" in message  # what it could have been
    for ours_only in ("ioloop", "allow_running_forever"):  # Runner's or BaseRunner's alone
        with pytest.raises(ConfigError, match=ours_only):
            make_rm(tmp_path, make_learners(1), runner_kwargs={ours_only: None})


def test_unpicklable_runner_kwargs_and_initializers_are_refused_by_name(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"runner_kwargs\['retries'\] cannot be pickled"):
        make_rm(tmp_path, make_learners(1), runner_kwargs={"retries": threading.Lock()})
    lock = threading.Lock()

    def holds_a_lock() -> None:
        with lock:  # captured: a lock cannot be pickled
            pass

    with pytest.raises(ConfigError, match=r"initializers\[1\] \(.*holds_a_lock\) cannot be"):
        make_rm(tmp_path, make_learners(1), initializers=[record_pid, holds_a_lock])
    with pytest.raises(ConfigError, match=r"initializers\[0\] \('setup'\) is not callable"):
        make_rm(tmp_path, make_learners(1), initializers=["setup"])
    with pytest.raises(ConfigError, match="must be a list of callables"):
        make_rm(tmp_path, make_learners(1), initializers=record_pid)
    with pytest.raises(ConfigError, match="must be a dict"):
        make_rm(tmp_path, make_learners(1), runner_kwargs=[("retries", 3)])
    assert not (tmp_path / "run").exists()


# -- whole runs on the Local scheduler ----------------------------------------------------------


def test_retries_carry_a_flaky_function_to_its_goal_and_a_resumed_run_keeps_them(
    tmp_path: Any,
) -> None:
    learners = [adaptive.Learner1D(flaky, bounds=(-1, 1))]
    without = make_rm(tmp_path / "plain", learners, goal=10, max_fails=1).start()
    try:
        assert not without.wait(timeout=120)
        assert "flaky service" in (learner_row(without).error or "")
    finally:
        stop_and_cancel(without)

    rm = make_rm(tmp_path, learners, goal=10, runner_kwargs={"retries": 3}, max_fails=1)
    rm.start()
    try:
        assert rm.wait(timeout=120)
        assert rm.load_learners()[0].npoints >= 10
    finally:
        stop_and_cancel(rm)
    assert ar.RunManager.open(rm.run_dir.path).spec.runner_kwargs == {"retries": 3}


NEEDS_MPI = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpich")


@pytest.mark.parametrize(
    ("executor", "processes"),
    [
        ("sequential", 1),
        ("process-pool", 2),
        ("loky", 2),
        pytest.param("mpi4py", 2, marks=NEEDS_MPI),  # Local: the worker spawns its rank
    ],
)
def test_initializers_run_in_the_worker_and_in_each_pool_process(
    tmp_path: Any, executor: str, processes: int
) -> None:
    scheduler = ar.Local(cores=2, executor=executor, kill_grace_s=30)
    rm = make_rm(
        tmp_path, [probe_learner()], goal=None, initializers=[record_pid], scheduler=scheduler
    )
    rm.start()
    try:
        assert rm.wait(timeout=180)
    finally:
        stop_and_cancel(rm)
    values = set(rm.load_learners()[0].data.values())
    assert values, "no point evaluated"
    for value in values:
        # The worker ran it, then (for a pool) the pool process that evaluated the point,
        # whose environment the worker's pool server had inherited.
        pids = value.split(",")
        assert len(pids) == processes, value
        assert len(set(pids)) == processes
    assert len(ar.RunManager.open(rm.run_dir.path).spec.initializers) == 1


def test_a_failing_initializer_fails_the_learner_with_its_traceback(tmp_path: Any) -> None:
    rm = make_rm(tmp_path, make_learners(1), initializers=[no_licence], max_fails=2).start()
    try:
        assert not rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    row = learner_row(rm)
    assert row.state == "failed"
    assert row.failures == 2
    error = row.error or ""
    assert "RuntimeError: no licence server at licence.example:27000" in error
    assert "initializers[0] (no_licence) failed in process" in error
    assert "Traceback" in error


def hangs() -> None:
    time.sleep(3600)  # a licence server that never answers


def test_a_hanging_initializer_is_named_when_its_lease_expires(tmp_path: Any) -> None:
    """It runs before the first heartbeat: its task goes silent, and the reason says where."""
    rm = make_rm(
        tmp_path,
        make_learners(1),
        initializers=[record_pid, hangs],
        lease_timeout=3,
        max_fails=1,
        kill_grace_s=1,
    ).start()
    try:
        assert not rm.wait(timeout=120)
    finally:
        stop_and_cancel(rm)
    row = learner_row(rm)
    assert row.state == "failed"
    error = row.error or ""
    assert "for 3 s (lease expired); the task's last log line, " in error
    assert "s before: initializer_started initializer='initializers[1] (hangs)'" in error
    lines = rm.run_dir.task_log(rm.last_tasks()[0]).read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events == ["started", "initializer_started", "initializer_started"]
