"""CPU and memory of a worker and the processes it started, for its heartbeats."""

from __future__ import annotations

import os

import psutil


class ProcessUsage:
    """CPU percent and resident memory of this worker and every process it started."""

    def __init__(self) -> None:
        self._me = psutil.Process(os.getpid())
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, int]:
        """Percent of one core used since the last sample (summed over processes), and bytes."""
        cpu, memory = 0.0, 0
        alive: dict[int, psutil.Process] = {}
        for process in [self._me, *self._me.children(recursive=True)]:
            # Keep the Process objects: cpu_percent measures since the previous call on each.
            known = self._known.get(process.pid, process)
            try:
                cpu += known.cpu_percent()
                memory += known.memory_info().rss
            except psutil.NoSuchProcess:
                continue  # a pool process ended between listing and measuring
            alive[process.pid] = known
        self._known = alive
        return cpu, memory
