"""Whole runs across the nodes of the real three-node SLURM (ci/slurm/start.sh: n1, n2, n3).

Packed allocations over two nodes, an MPI learner whose ranks span two nodes, a node set
DOWN under a running allocation, and the dry run that refuses what the partition cannot hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import adaptive
import cloudpickle
import pytest
from helpers_run import make_learners, no_overlaps, slow_square, task_rows, wait_for
from helpers_slurm import (
    PATIENCE_S,
    all_released_and_resumed,
    ended_clean,
    log_events,
    resumed_with_data,
    run,
    running_with_save,
)

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterator

# Learner functions travel by value: the workers cannot import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

__all__ = ["run"]  # a fixture, used by name

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

NODES = ("n1", "n2", "n3")
TWO_NODES = ar.SLURM(workers_per_node=2, nodes=2, cores=1)


def square_on(x: float, node_dir: str) -> float:
    """x**2, noting on which node (SLURM's name for it) and in which process it ran."""
    Path(node_dir, f"{os.environ.get('SLURMD_NODENAME', '?')}-{os.getpid()}").touch()
    time.sleep(0.01)
    return x**2


@pytest.fixture
def node_back() -> Iterator[list[str]]:
    """Nodes a test sets DOWN; each is resumed afterwards, whatever the test did."""
    downed: list[str] = []
    yield downed
    for node in downed:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
    wait_for(
        lambda: all(_node_state(n) in {"idle", "mixed", "allocated"} for n in NODES) or None,
        timeout_s=PATIENCE_S,
        what="every node up again",
    )


def _node_state(node: str) -> str:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().rstrip("*")


def _allocation_nodes(task: str) -> list[str]:
    """The nodes SLURM gave an array task (squeue's %N, expanded)."""
    out = subprocess.run(
        ["squeue", "-h", "-j", task, "-o", "%N"], capture_output=True, text=True, check=True
    )
    names = out.stdout.strip()
    if not names:
        return []
    expanded = subprocess.run(
        ["scontrol", "show", "hostnames", names], capture_output=True, text=True, check=True
    )
    return expanded.stdout.split()


def test_a_two_node_allocation_runs_workers_on_both_nodes_and_names_them(
    run: Callable[..., ar.RunManager],
) -> None:
    rm = run(make_learners(8, delay=0.02), goal=60, scheduler=TWO_NODES, max_simultaneous_jobs=1)
    rows = wait_for(
        partial(running_with_save, rm.run_dir.path, rm.fnames, 4),
        timeout_s=PATIENCE_S,
        what="four workers holding learners",
    )
    (allocation,) = {row["task"].partition("@")[0] for row in rows}
    nodes = _allocation_nodes(allocation)
    print(f"allocation {allocation} on nodes {nodes}")  # for the closing note
    assert len(nodes) == 2
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 8
    run_dir = rm.run_dir.path
    workers = {row["task"] for row in task_rows(run_dir)}
    assert workers <= {f"{allocation}@{rank}" for rank in range(4)}
    # Each worker claimed on its own identity and says which node it ran on: the database
    # (status, panel), its log's started event and parse_logs.
    holders = {(row["task"], row["host"]) for row in task_rows(run_dir)}
    assert {host for _, host in holders} == set(nodes)
    started = {
        worker: {e["node"] for e in log_events(run_dir, worker) if e["event"] == "started"}
        for worker in workers
    }
    assert set().union(*started.values()) == set(nodes)
    records = rm.parse_logs()
    assert {r.node for r in records if r.task in workers} == set(nodes)
    snapshot = rm.snapshot()
    assert {row.host for row in snapshot.rows} == set(nodes)
    # Workers that found no more work left their cores idle until the allocation ended.
    idle = snapshot.totals.idle_core_hours
    print(f"idle in the allocation: {idle} core-hours, held {snapshot.totals.held_hours} h")
    assert idle is not None
    assert idle >= 0
    # The CLI shows a worker's log with its node.
    worker = min(workers)
    shown = subprocess.run(
        [sys.executable, "-m", "adaptive_runner.cli", "logs", str(run_dir), "--task", worker],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (node,) = started[worker]
    assert " started host=" in shown
    assert f" node={node} " in shown
    no_overlaps(run_dir)
    # Its workers found no learner left and exited 0: the allocation and its srun step ended
    # by themselves, not cancelled.
    ended_clean(run_dir, allocation.partition("_")[0])


def _busy_allocation(
    run: Callable[..., ar.RunManager],
) -> tuple[ar.RunManager, list[sqlite3.Row], str]:
    """A run whose one two-node allocation has four workers holding learners with saves."""
    rm = run(make_learners(4, delay=0.05), goal=150, scheduler=TWO_NODES, max_simultaneous_jobs=1)
    victims = wait_for(
        partial(running_with_save, rm.run_dir.path, rm.fnames, 4),
        timeout_s=PATIENCE_S,
        what="four workers on two nodes holding learners with a save on disk",
    )
    assert len({row["host"] for row in victims}) == 2
    (allocation,) = {row["task"].partition("@")[0] for row in victims}
    return rm, victims, allocation


def _set_down(node: str, reason: str) -> None:
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=down", f"reason={reason}"], check=True
    )


def _first_holds_ended(
    rm: ar.RunManager, victims: list[sqlite3.Row]
) -> dict[int, tuple[str, str, int]]:
    """Learner -> (node, how the victim's hold ended, failures), once the run is done; each
    learner whose first hold did not finish it resumed from its save in a later task."""
    run_dir = rm.run_dir.path
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == len(rm.fnames)
    with Database.open(run_dir / "state.sqlite") as db:
        learners = db.learners()
    ended = {}
    for row in victims:
        (first,) = [r for r in task_rows(run_dir) if r["task"] == row["task"]]
        ended[row["learner"]] = (row["host"], first["outcome"], learners[row["learner"]].failures)
        if first["outcome"] != "done":
            resumed_with_data(run_dir, row["learner"], after=row["task"])
    no_overlaps(run_dir)
    return ended


def test_scancel_of_a_two_node_allocation_releases_every_learner(
    run: Callable[..., ar.RunManager],
) -> None:
    rm, victims, allocation = _busy_allocation(run)
    subprocess.run(["scancel", allocation], check=True)
    all_released_and_resumed(rm, victims)  # every worker on both nodes got the SIGTERM


def test_a_node_set_down_under_a_running_allocation(
    run: Callable[..., ar.RunManager], node_back: list[str]
) -> None:
    """An operator sets a node DOWN (its slurmd alive): SLURM ends the allocation on both."""
    rm, victims, allocation = _busy_allocation(run)
    node_back.append(victims[0]["host"])
    _set_down(victims[0]["host"], "adaptive_runner test")
    ended = _first_holds_ended(rm, victims)
    print(f"node {victims[0]['host']} set down under {allocation}: {json.dumps(ended)}")
    # --no-requeue: every worker got SIGTERM, saved and released; the job manager submitted
    # for the learners, which resumed from their saves.
    assert {(outcome, failures) for _, outcome, failures in ended.values()} <= {
        ("released", 0),
        ("done", 0),
    }


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_a_node_that_dies_under_a_running_allocation(
    run: Callable[..., ar.RunManager], node_back: list[str]
) -> None:
    """The allocation's processes on one node die at once and the node goes DOWN: a lost
    machine, as slurmctld and the job manager see it (its slurmd stays, to be resumed)."""
    rm, victims, _ = _busy_allocation(run)
    lost_node = victims[0]["host"]
    node_back.append(lost_node)
    # Everything of the allocation on that node: its workers, their packer, its slurmstepd.
    doomed: set[int] = set()
    for row in victims:
        if row["host"] == lost_node:
            packer = _parent(row["pid"])
            doomed |= {row["pid"], packer}
            if _comm(_parent(packer)) == "slurmstepd":
                doomed.add(_parent(packer))
    for pid in doomed:
        os.kill(pid, 9)
    # A dead slurmd is taken for DOWN only after minutes here (measured: ~3 min with
    # SlurmdTimeout=10); an operator or a node health check marks it at once, as here.
    _set_down(lost_node, "node died")
    ended = _first_holds_ended(rm, victims)
    print(f"node {lost_node} died: {json.dumps(ended)}")
    # Its learners count one failure each ("lost", found by the queue poll) and resume from
    # their saves; srun's "Node failure on nX" line is not taken for the job's error. The other
    # node's workers save and release when SLURM ends the allocation (or finish their learners).
    for host, outcome, failures in ended.values():
        if host == lost_node:
            assert (outcome, failures) == ("lost", 1)
        else:
            assert (outcome, failures) in {("released", 0), ("done", 0)}


def test_an_mpi_learner_runs_its_points_on_two_nodes(
    run: Callable[..., ar.RunManager], tmp_path: Path
) -> None:
    node_dir = tmp_path / "nodes"
    node_dir.mkdir()
    learner = adaptive.Learner1D(partial(square_on, node_dir=str(node_dir)), bounds=(-1, 1))
    scheduler = ar.SLURM(
        executor="mpi4py", nodes=2, cores_per_node=2, mpi_launcher="srun --mpi=pmi2"
    )
    rm = run([learner], goal=40, scheduler=scheduler)
    assert rm.wait(timeout=PATIENCE_S)
    (row,) = task_rows(rm.run_dir.path)
    assert row["outcome"] == "done"
    # Rank 0 is the worker; the three other ranks evaluate, on both nodes.
    evaluated_on = {p.name.rpartition("-")[0] for p in node_dir.iterdir()}
    print(f"MPI ranks evaluated on {sorted(evaluated_on)}")
    assert len(evaluated_on) == 2
    assert evaluated_on <= set(NODES)


@pytest.mark.parametrize(
    ("scheduler", "said"),
    [
        (
            ar.SLURM(workers_per_node=1, nodes=4),
            "asks for 4 nodes per task (nodes=), but partition debug has 3",
        ),
        (
            ar.SLURM(workers_per_node=8, cores=1),
            "asks for 8 cores on each node, but the nodes of partition debug have 4 CPUs",
        ),
        (ar.SLURM(extra_directives=["--constraint=gpu"]), "Invalid feature specification"),
        (ar.SLURM(memory="500G"), "asks for memory='500G', but the nodes of partition debug have"),
    ],
    ids=["nodes", "cores", "constraint", "memory"],
)
def test_the_dry_run_refuses_what_the_partition_cannot_hold(
    tmp_path: Path, scheduler: ar.SLURM, said: str
) -> None:
    rm = ar.RunManager(
        scheduler, make_learners(1), [tmp_path / "l0.pickle"], goal=10, run_dir=tmp_path / "run"
    )
    with pytest.raises(ConfigError, match="sbatch --test-only, nothing was queued") as refused:
        rm.start()
    assert said in str(refused.value)
    assert not (tmp_path / "run").exists()  # nothing written, nothing queued


def test_an_srun_mpi_plugin_that_slurm_lacks_is_refused_at_start(tmp_path: Path) -> None:
    scheduler = ar.SLURM(executor="mpi4py", cores=2, mpi_launcher="srun --mpi=nope")
    rm = ar.RunManager(
        scheduler, make_learners(1), [tmp_path / "l0.pickle"], goal=10, run_dir=tmp_path / "run"
    )
    with pytest.raises(
        ConfigError, match=r"this SLURM has no MPI plugin 'nope' \(srun --mpi=list: .*pmi2"
    ):
        rm.start()
    assert not (tmp_path / "run").exists()


def test_a_node_whose_workers_found_no_learner_left_is_handed_back(
    run: Callable[..., ar.RunManager],
) -> None:
    """Three nodes of two workers, one long learner among seven: once the short ones are
    done, at least one node that does not run the job script has only idle workers."""
    learners = [
        adaptive.Learner1D(
            partial(slow_square, a=a, delay=0.25 if a == 0 else 0.01), bounds=(-1, 1)
        )
        for a in range(7)
    ]
    three_nodes = ar.SLURM(workers_per_node=2, nodes=3, cores=1)
    rm = run(learners, goal=60, scheduler=three_nodes, max_simultaneous_jobs=1)
    run_dir = rm.run_dir.path
    allocation = wait_for(
        lambda: next((r["task"].partition("@")[0] for r in task_rows(run_dir)), None),
        timeout_s=PATIENCE_S,
        what="the allocation's first claim",
    )
    seen = _allocation_nodes(allocation)
    assert len(seen) == 3

    def fewer_nodes() -> list[str] | None:
        nodes = _allocation_nodes(allocation)
        return nodes if 0 < len(nodes) < len(seen) else None

    shrunk = wait_for(fewer_nodes, timeout_s=PATIENCE_S, what="the allocation handing a node back")
    print(f"allocation {allocation}: nodes {sorted(seen)} -> {shrunk} while learner 0 ran")
    assert rm.wait(timeout=PATIENCE_S)
    assert rm.status()["done"] == 7
    assert {row["outcome"] for row in task_rows(run_dir)} == {"done"}  # no worker was killed
    # The packer of each handed-back node said so first; the job script's node stayed.
    output = (run_dir / "logs" / f"{allocation}.log").read_text()
    for node in set(seen) - set(shrunk):
        assert f"node {node} idle: no learner left for its workers" in output
    assert seen[0] in shrunk
    ended_clean(run_dir, allocation.partition("_")[0])  # shrunk, then completed
