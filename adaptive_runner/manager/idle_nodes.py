"""Nodes of running packed allocations whose workers found no learner left: hand them back.

A packer whose workers all ended without a stop signal writes ``node_idle_line`` into its
allocation's output (``logs/<task>.log``). Once per round the job manager gives the running
multi-node allocations to :meth:`IdleNodes.scan`, which reads only the lines added since the
last round, and asks each one's scheduler to take such a node back (``release_node``): its
cores would otherwise stay allocated, unused, until the last worker of the allocation ends.
The node that runs the job script stays (the scheduler says no), and so does one whose
release failed: that is logged, never retried, and costs only the idle time it did before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptive_runner.common.vocabulary import read_node_idle
from adaptive_runner.status.log_parser import LOG_SUFFIX, LineReader

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path


class IdleNodes:
    """What the packers of running allocations said of their nodes, read incrementally."""

    def __init__(self, logs_dir: Path) -> None:
        self._logs_dir = logs_dir
        self._reader = LineReader()

    def scan(self, allocations: Collection[str]) -> list[tuple[str, str]]:
        """(allocation, node) for each node newly said to be idle; forget ended allocations."""
        found = []
        for task in allocations:
            new = self._reader.read(self._log_file(task))
            if new is None:
                continue
            for line in new.lines:
                node = read_node_idle(line.decode(errors="replace"))
                if node is not None:
                    found.append((task, node))
        keep = {self._log_file(task) for task in allocations}
        for path in self._reader.paths() - keep:
            self._reader.forget(path)
        return found

    def _log_file(self, task: str) -> str:
        return f"{self._logs_dir}/{task}{LOG_SUFFIX}"
