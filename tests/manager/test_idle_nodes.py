"""The packers' "node idle" lines, read from allocations' output once each (no process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptive_runner.common.vocabulary import node_idle_line, read_node_idle, worker_ended_line
from adaptive_runner.manager.idle_nodes import IdleNodes

if TYPE_CHECKING:
    from pathlib import Path


def test_a_node_idle_line_is_read_back_and_nothing_else_is() -> None:
    assert (
        node_idle_line("n2")
        == "adaptive_runner.packing: node n2 idle: no learner left for its workers"
    )
    assert read_node_idle(node_idle_line("n2") + "\n") == "n2"
    assert read_node_idle(worker_ended_line(1, 3)) is None
    assert read_node_idle("srun: error: n2: task 1: Killed") is None


def test_idle_nodes_are_reported_once_and_ended_allocations_forgotten(tmp_path: Path) -> None:
    log = tmp_path / "7_0.log"
    log.write_text(f"srun: something\n{node_idle_line('n3')}\n")
    nodes = IdleNodes(tmp_path)
    assert nodes.scan(["7_0", "8_0"]) == [("7_0", "n3")]  # 8_0 has no output yet
    assert nodes.scan(["7_0"]) == []  # read once
    with log.open("a") as f:
        f.write(node_idle_line("n2") + "\n")
    assert nodes.scan(["7_0"]) == [("7_0", "n2")]
    assert nodes.scan([]) == []  # 7_0 ended: forgotten, and read from the start if it comes back
    assert nodes.scan(["7_0"]) == [("7_0", "n3"), ("7_0", "n2")]
