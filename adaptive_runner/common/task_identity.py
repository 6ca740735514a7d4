"""Who a running array task is, read from the environment its scheduler gave it (job side).

The worker's one question to the scheduler, answered without importing any backend: the
manager-side classes in ``schedulers/`` build commands and parse queues, none of which a job
needs. Each reader turns one scheduler's variables into the task id that the same
scheduler's queue shows, so the job manager and the database agree on it.

=========  ==================================================  ======================
scheduler  variables                                           task id
=========  ==================================================  ======================
slurm      ``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``     ``123_4``
pbs        ``PBS_JOBID``, ``PBS_ARRAY_INDEX`` (PBS Pro) or     ``123[4].server``
           ``PBS_ARRAYID`` (Torque)
local      ``LOCAL_ARRAY_ID``, ``LOCAL_ARRAY_TASK_ID`` (set    ``L1_4``
           by the Local scheduler's supervisor)
ssh        ``SSH_ARRAY_ID``, ``SSH_ARRAY_TASK_ID`` (set by     ``S1_4``
           the SSH scheduler's task wrapper on the host)
=========  ==================================================  ======================

In a packed allocation (``workers_per_node=``) one array task runs several workers; each is
told its rank in ``ADAPTIVE_RUNNER_RANK`` by ``packing.py`` and claims as ``<task id>@<rank>``
(``123_4@2``), so each has its own holds, heartbeats and lease. The job manager maps such a
worker id back to the task it runs in with :func:`task_of`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

LOCAL_ARRAY_ID_VAR = "LOCAL_ARRAY_ID"
LOCAL_TASK_INDEX_VAR = "LOCAL_ARRAY_TASK_ID"
SSH_ARRAY_ID_VAR = "SSH_ARRAY_ID"
SSH_TASK_INDEX_VAR = "SSH_ARRAY_TASK_ID"
SSH_TASK_ID_VAR = "SSH_TASK_ID"  # the task id itself, for the job script (its log's name)
RANK_VAR = "ADAPTIVE_RUNNER_RANK"  # a packed worker's rank in its allocation (packing.py)
RANK_SEPARATOR = "@"  # in no scheduler's task ids: "123_4@2" is worker 2 of task 123_4
# A PBS subjob id: "123[4].server" -> "123", "4", ".server".
PBS_SUBJOB = re.compile(r"^(\d+)\[(\d+)\](.*)$")


@dataclass(frozen=True, slots=True)
class TaskIdentity:
    """Who a running array task is: its own id, its array's id and its index in the array.

    In a packed allocation ``task_id`` is the worker's (``123_4@2``) and ``rank`` its rank.
    """

    task_id: str
    array_id: str
    task_index: int
    rank: int | None = None


def slurm_identity(environ: Mapping[str, str]) -> TaskIdentity:
    """``A_a`` from SLURM_ARRAY_JOB_ID and SLURM_ARRAY_TASK_ID."""
    array_id = environ.get("SLURM_ARRAY_JOB_ID", "")
    index = environ.get("SLURM_ARRAY_TASK_ID", "")
    if not (array_id.isdigit() and index.isdigit()):
        raise ConfigError(
            "not inside a SLURM array task: SLURM_ARRAY_JOB_ID and SLURM_ARRAY_TASK_ID "
            f"are {array_id!r} and {index!r}"
        )
    return TaskIdentity(task_id=f"{array_id}_{index}", array_id=array_id, task_index=int(index))


def pbs_identity(environ: Mapping[str, str]) -> TaskIdentity:
    """The task's identity from PBS's environment (the dialect shows in the names).

    PBS Pro sets ``PBS_ARRAY_INDEX``, Torque ``PBS_ARRAYID``; both set ``PBS_JOBID`` to the
    subjob id as qstat shows it (``123[4].server``). A one-task PBS Pro job has no index: it
    is task 0 of an array whose id is its own.
    """
    job_id = environ.get("PBS_JOBID")
    if not job_id:
        raise ConfigError("PBS_JOBID is not set: this is not running inside a PBS job")
    index = environ.get("PBS_ARRAY_INDEX", environ.get("PBS_ARRAYID"))
    if index is None:
        return TaskIdentity(task_id=job_id, array_id=job_id, task_index=0)
    match = PBS_SUBJOB.match(job_id)
    if match is None or match.group(2) != index:
        raise ConfigError(
            f"PBS_JOBID={job_id!r} is not a subjob id with index {index!r} (like 123[4].srv)"
        )
    array_id = f"{match.group(1)}[]{match.group(3)}"
    return TaskIdentity(task_id=job_id, array_id=array_id, task_index=int(index))


def local_identity(environ: Mapping[str, str]) -> TaskIdentity:
    """Read ``LOCAL_ARRAY_ID`` and ``LOCAL_ARRAY_TASK_ID``, set by the Local supervisor."""
    return _identity(environ, LOCAL_ARRAY_ID_VAR, LOCAL_TASK_INDEX_VAR, scheduler="Local")


def ssh_identity(environ: Mapping[str, str]) -> TaskIdentity:
    """Read ``SSH_ARRAY_ID`` and ``SSH_ARRAY_TASK_ID``, set by the SSH scheduler's wrapper."""
    return _identity(environ, SSH_ARRAY_ID_VAR, SSH_TASK_INDEX_VAR, scheduler="SSH")


def _identity(
    environ: Mapping[str, str], array_var: str, index_var: str, *, scheduler: str
) -> TaskIdentity:
    """``A_i`` from the two variables that the embedded schedulers (Local, SSH) set."""
    missing = [var for var in (array_var, index_var) if var not in environ]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: this process was not started by the "
            f"{scheduler} scheduler (run.json says scheduler={scheduler.lower()!r})"
        )
    array_id, index = environ[array_var], environ[index_var]
    if not index.isdigit():
        raise ConfigError(f"{index_var}={index!r} is not a task index")
    return TaskIdentity(task_id=f"{array_id}_{index}", array_id=array_id, task_index=int(index))


# Keyed by the scheduler names of run.json (schedulers/__init__.py registers the same names).
READERS: dict[str, Callable[[Mapping[str, str]], TaskIdentity]] = {
    "slurm": slurm_identity,
    "pbs": pbs_identity,
    "local": local_identity,
    "ssh": ssh_identity,
}


def task_identity(scheduler: str, environ: Mapping[str, str]) -> TaskIdentity:
    """The identity of the task running under ``scheduler`` (a run.json scheduler name).

    A worker of a packed allocation (``ADAPTIVE_RUNNER_RANK`` set) is ``<task id>@<rank>``.
    """
    try:
        reader = READERS[scheduler]
    except KeyError:
        raise ConfigError(
            f"run.json names scheduler {scheduler!r}, which this version does not know "
            f"(known: {', '.join(READERS)})"
        ) from None
    task = reader(environ)
    rank = environ.get(RANK_VAR)
    if rank is None:
        return task
    if not rank.isdigit():
        raise ConfigError(f"{RANK_VAR}={rank!r} is not a worker rank (0, 1, ...)")
    return replace(task, task_id=f"{task.task_id}{RANK_SEPARATOR}{int(rank)}", rank=int(rank))


def node_name(environ: Mapping[str, str]) -> str:
    """The node this process runs on, by the name its scheduler gives it.

    SLURM names nodes in ``SLURMD_NODENAME``: usually the host name, but not always (nodes
    that share a host, node names that are not host names). Elsewhere the host name is the
    node's name.
    """
    return environ.get("SLURMD_NODENAME") or os.uname().nodename


def number_text(text: str) -> int | None:
    """``text`` as a task index or worker rank, written as ids write them; None otherwise.

    ASCII digits without a leading zero (``"0"``, ``"17"``), so that one task has one id:
    ``"017"``, ``"+17"`` and other scripts' digits name none.
    """
    if text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0")):
        return int(text)
    return None


def task_of(worker: str) -> str:
    """The array task a worker runs in: ``123_4`` for ``123_4@2``; a task's own id as is."""
    return worker.partition(RANK_SEPARATOR)[0]


def worker_ids(task: str, packed: int | None) -> list[str]:
    """The ids the workers of ``task`` claim under: ``packed`` ranks, or the task's own id."""
    if packed is None:
        return [task]
    return [f"{task}{RANK_SEPARATOR}{rank}" for rank in range(packed)]
