"""Scheduler backends: Local (embedded), SLURM, PBS and SSH, behind one interface (base.py)."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adaptive_runner.common.run_dir import GroupConfig
    from adaptive_runner.schedulers.base import Scheduler

# Registry key (as stored in run.json) -> (module, class); task_identity.READERS has the same
# keys. Modules load on first use: a run imports only the backends it uses.
_BACKENDS = {
    "local": ("adaptive_runner.schedulers.local", "Local"),
    "slurm": ("adaptive_runner.schedulers.slurm", "SLURM"),
    "pbs": ("adaptive_runner.schedulers.pbs", "PBS"),
    "ssh": ("adaptive_runner.schedulers.ssh", "SSH"),
}


def scheduler_class(name: str) -> type[Scheduler]:
    """The Scheduler subclass registered as ``name`` (a key of run.json's ``scheduler``)."""
    try:
        module, cls = _BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown scheduler {name!r}; known: {', '.join(_BACKENDS)}") from None
    result: type[Scheduler] = getattr(importlib.import_module(module), cls)
    return result


def from_config(group: GroupConfig) -> Scheduler:
    """The scheduler of one of run.json's groups, made again from its registry key and options."""
    return scheduler_class(group.scheduler)(**group.options)


def bound_schedulers(groups: Sequence[GroupConfig], jobs_dir: Path) -> list[Scheduler]:
    """The schedulers of run.json's ``groups``, each bound to the run's ``jobs_dir``."""
    return [from_config(group).bind(jobs_dir) for group in groups]


def scheduler_options(scheduler: Scheduler) -> dict[str, Any]:
    """The scheduler's constructor arguments as JSON values, to rebuild it on resume.

    run.json stores them per group beside the registry key; :func:`from_config` makes the
    scheduler again. Options given under an alias (``partition=``) are stored under
    their common name (``queue``); a run.json with the aliases still makes the scheduler.
    """
    options: dict[str, Any] = {}
    for field in dataclasses.fields(scheduler):
        if not field.init:
            continue
        value = getattr(scheduler, field.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, dict | tuple):
            value = dict(value) if isinstance(value, dict) else list(value)
        options[field.name] = value
    return options
