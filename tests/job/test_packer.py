"""Packed allocations, job side: worker ids with ranks, and the packer that starts them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_run import wait_for

from adaptive_runner.common.task_identity import TaskIdentity, task_identity, task_of, worker_ids
from adaptive_runner.errors import ConfigError
from adaptive_runner.job.packer import node_index

SLURM_TASK = {"SLURM_ARRAY_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "4"}

# A stand-in worker: notes its rank and pid, and on SIGTERM or SIGUSR1 notes the signal and
# exits 0 (as a worker that saved and released would). argv[1] is the directory to note in.
FAKE_WORKER = """
import os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
rank = os.environ["ADAPTIVE_RUNNER_RANK"]
def stop(signum, frame):
    (out / f"signal-{rank}").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGUSR1, stop)
(out / f".pid-{rank}").write_text(str(os.getpid()))
os.rename(out / f".pid-{rank}", out / f"pid-{rank}")  # whole: the test may read it at once
while True:
    time.sleep(0.05)
"""


def test_a_packed_worker_claims_under_its_task_and_rank() -> None:
    env = {**SLURM_TASK, "ADAPTIVE_RUNNER_RANK": "2"}
    assert task_identity("slurm", env) == TaskIdentity("123_4@2", "123", 4, rank=2)
    pbs = {"PBS_JOBID": "17[4].pbs01", "PBS_ARRAY_INDEX": "4", "ADAPTIVE_RUNNER_RANK": "0"}
    assert task_identity("pbs", pbs).task_id == "17[4].pbs01@0"
    assert task_identity("slurm", SLURM_TASK).rank is None  # not packed: the task's own id
    with pytest.raises(ConfigError, match="ADAPTIVE_RUNNER_RANK='x' is not a worker rank"):
        task_identity("slurm", {**SLURM_TASK, "ADAPTIVE_RUNNER_RANK": "x"})


def test_worker_ids_map_back_to_their_task() -> None:
    assert worker_ids("123_4", 3) == ["123_4@0", "123_4@1", "123_4@2"]
    assert worker_ids("123_4", None) == ["123_4"]
    assert {task_of(w) for w in worker_ids("17[4].pbs01", 2)} == {"17[4].pbs01"}
    assert task_of("123_4") == "123_4"


def test_the_node_index_comes_from_the_launcher() -> None:
    assert node_index({"SLURM_NODEID": "2"}) == 2
    assert node_index({"PBS_NODENUM": "1"}) == 1
    assert node_index({}) == 0


def _packer(tmp_path: Path, workers: int, **env: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return subprocess.Popen(
        [sys.executable, "-m", "adaptive_runner.packing", str(workers), str(script), str(tmp_path)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        start_new_session=True,  # so that a failing test can kill the workers with it
    )


def _kill_all(packer: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(packer.pid, signal.SIGKILL)


def _pids(tmp_path: Path) -> dict[str, int]:
    return {p.name.removeprefix("pid-"): int(p.read_text()) for p in tmp_path.glob("pid-*")}


def test_the_packer_starts_ranked_workers_and_passes_stop_signals_on(tmp_path: Path) -> None:
    with _packer(tmp_path, 3, SLURM_NODEID="1") as packer:  # the second node: ranks 3, 4, 5
        try:
            wait_for(lambda: len(_pids(tmp_path)) == 3, "three workers started")
            assert set(_pids(tmp_path)) == {"3", "4", "5"}
            assert len(set(_pids(tmp_path).values())) == 3  # three processes
            packer.send_signal(signal.SIGUSR1)  # the time-limit warning
            assert packer.wait(timeout=60) == 0  # all saved and released: an orderly end
        finally:
            _kill_all(packer)
    assert {p.read_text() for p in tmp_path.glob("signal-*")} == {"SIGUSR1"}
    assert len(list(tmp_path.glob("signal-*"))) == 3


def test_a_killed_worker_ends_alone(tmp_path: Path) -> None:
    with _packer(tmp_path, 2) as packer:
        try:
            wait_for(lambda: len(_pids(tmp_path)) == 2, "two workers started")
            os.kill(_pids(tmp_path)["0"], signal.SIGKILL)
            time.sleep(0.5)
            assert packer.poll() is None  # the other worker goes on, and so does the allocation
            packer.send_signal(signal.SIGTERM)
            assert packer.wait(timeout=60) == 128 + signal.SIGKILL  # as a shell reports it
            out = packer.stdout.read().decode() if packer.stdout else ""
        finally:
            _kill_all(packer)
    # Only the killed one has a line (the job manager reads it: reasons.worker_ending).
    assert out.splitlines() == ["adaptive_runner.packing: worker 0 ended with signal 9 (SIGKILL)"]
    assert [p.name for p in tmp_path.glob("signal-*")] == ["signal-1"]


def test_the_packer_refuses_bad_arguments() -> None:
    for argv in (["0", "-m", "x"], ["two", "-m", "x"], ["3"]):
        proc = subprocess.run(
            [sys.executable, "-m", "adaptive_runner.packing", *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2
        assert "usage: python -m adaptive_runner.packing WORKERS COMMAND" in proc.stderr


def test_the_packer_imports_only_the_stdlib_the_identity_and_the_vocabulary() -> None:
    code = "import sys, json, adaptive_runner.packing; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    ours = sorted(m for m in json.loads(proc.stdout) if m.startswith("adaptive_runner."))
    assert ours == [
        "adaptive_runner.common",
        "adaptive_runner.common.task_identity",
        "adaptive_runner.common.vocabulary",
        "adaptive_runner.errors",
        "adaptive_runner.job",
        "adaptive_runner.job.packer",
        "adaptive_runner.packing",
    ]
    assert "zmq" not in json.loads(proc.stdout)


def test_workers_die_with_a_killed_packer(tmp_path: Path) -> None:
    # A packer killed outright must not leave its workers computing (and saving) outside
    # the allocation, which the job manager takes for lost.
    with _packer(tmp_path, 2) as packer:
        try:
            wait_for(lambda: len(_pids(tmp_path)) == 2, "two workers started")
            packer.kill()
            packer.wait(timeout=60)
            pids = _pids(tmp_path).values()
            wait_for(lambda: not any(map(_alive, pids)), "the workers to die with the packer")
        finally:
            _kill_all(packer)
    assert not list(tmp_path.glob("signal-*"))  # killed, not asked to stop


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by init, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
