"""What a running task reads from its scheduler's environment, and what the worker imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adaptive_runner.common.task_identity import READERS, TaskIdentity, task_identity
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers import _BACKENDS


def test_slurm() -> None:
    env = {"SLURM_ARRAY_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "4", "SLURM_JOB_ID": "130"}
    assert task_identity("slurm", env) == TaskIdentity("123_4", "123", 4)
    with pytest.raises(ConfigError, match="not inside a SLURM array task"):
        task_identity("slurm", {"SLURM_JOB_ID": "130"})


def test_pbs_per_dialect() -> None:
    pro = {"PBS_JOBID": "17[4].pbs01", "PBS_ARRAY_INDEX": "4", "PBS_ARRAY_ID": "17[].pbs01"}
    assert task_identity("pbs", pro) == TaskIdentity("17[4].pbs01", "17[].pbs01", 4)
    torque = {"PBS_JOBID": "88[2].t.example.edu", "PBS_ARRAYID": "2"}
    assert task_identity("pbs", torque) == TaskIdentity(
        "88[2].t.example.edu", "88[].t.example.edu", 2
    )
    # A one-task PBS Pro "array" is a plain job: task 0 of an array named like itself.
    single = task_identity("pbs", {"PBS_JOBID": "18.pbs01"})
    assert single == TaskIdentity("18.pbs01", "18.pbs01", 0)
    with pytest.raises(ConfigError, match="PBS_JOBID"):
        task_identity("pbs", {})
    with pytest.raises(ConfigError, match="subjob"):
        task_identity("pbs", {"PBS_JOBID": "17[4].pbs01", "PBS_ARRAY_INDEX": "5"})


def test_local() -> None:
    env = {"LOCAL_ARRAY_ID": "L3", "LOCAL_ARRAY_TASK_ID": "7"}
    assert task_identity("local", env) == TaskIdentity("L3_7", "L3", 7)
    with pytest.raises(ConfigError, match="LOCAL_ARRAY_ID and LOCAL_ARRAY_TASK_ID not set"):
        task_identity("local", {})
    with pytest.raises(ConfigError, match="is not a task index"):
        task_identity("local", {"LOCAL_ARRAY_ID": "L3", "LOCAL_ARRAY_TASK_ID": "x"})


def test_ssh() -> None:
    env = {"SSH_ARRAY_ID": "S2", "SSH_ARRAY_TASK_ID": "5", "SSH_TASK_ID": "S2_5"}
    assert task_identity("ssh", env) == TaskIdentity("S2_5", "S2", 5)
    with pytest.raises(ConfigError, match=r"not started by the SSH scheduler .*'ssh'"):
        task_identity("ssh", {"SSH_ARRAY_ID": "S2"})


def test_every_scheduler_has_a_reader_and_unknown_ones_are_named() -> None:
    assert set(READERS) == set(_BACKENDS)
    with pytest.raises(ConfigError, match=r"'lsf'.*known: slurm, pbs, local, ssh"):
        task_identity("lsf", {})


# Heavy or login-side packages a job never needs; each would slow every task's start-up.
FORBIDDEN = (
    "jinja2",
    "ipywidgets",
    "pandas",
    "pyarrow",  # save_dataframe's parquet: only through pandas, only when on
    "sqlite3",
    "structlog",  # with rich and pygments when installed: ~80 ms of CPU per task
    "adaptive",
)
# All of adaptive_runner a task may load: the entry point, the errors, common/ and job/.
ALLOWED = ("adaptive_runner", "adaptive_runner.worker", "adaptive_runner.errors")
ALLOWED_PACKAGES = ("adaptive_runner.common", "adaptive_runner.job")


def _is_in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_worker_imports_only_the_job_side_and_common() -> None:
    # A fresh interpreter: this test process has imported everything already. adaptive
    # itself is imported only after a learner was claimed (a task with no work exits fast).
    # The worker's modules for save_dataframe import pandas and pyarrow only with the frames.
    code = (
        "import sys, json, adaptive_runner.worker, adaptive_runner.common.dataframes; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    modules = set(json.loads(proc.stdout))
    assert "adaptive_runner.common.task_identity" in modules
    ours = {m for m in modules if _is_in(m, ("adaptive_runner",))}
    outside = sorted(m for m in ours if m not in ALLOWED and not _is_in(m, ALLOWED_PACKAGES))
    assert outside == []
    assert sorted(m for m in modules if _is_in(m, FORBIDDEN)) == []
