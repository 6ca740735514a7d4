"""Scheduler backends: Local (embedded), SLURM and PBS, behind one interface (base.py)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adaptive_runner.schedulers.base import Scheduler

# Registry key (as stored in run.json) -> (module, class). Modules load on first use so the
# worker, which needs only one backend's task_identity, imports nothing else.
_BACKENDS = {
    "local": ("adaptive_runner.schedulers.local", "Local"),
    "slurm": ("adaptive_runner.schedulers.slurm", "SLURM"),
    "pbs": ("adaptive_runner.schedulers.pbs", "PBS"),
}


def scheduler_class(name: str) -> type[Scheduler]:
    """The Scheduler subclass registered as ``name`` (a key of run.json's ``scheduler``)."""
    try:
        module, cls = _BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown scheduler {name!r}; known: {', '.join(_BACKENDS)}") from None
    result: type[Scheduler] = getattr(importlib.import_module(module), cls)
    return result
