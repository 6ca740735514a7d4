"""adaptive_runner: run many adaptive learners on HPC clusters as resumable job arrays."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptive_runner.common.goals import Stages
    from adaptive_runner.common.vocabulary import Event, Outcome
    from adaptive_runner.errors import AdaptiveRunnerError, ConfigError, RunStateError
    from adaptive_runner.fnames import fname_from_params
    from adaptive_runner.manager.dataframes import DataFrameWarning
    from adaptive_runner.manager.error_watch import DEFAULT_KILL_PATTERNS
    from adaptive_runner.manager.logs import configure_manager_logging, in_jupyter_kernel
    from adaptive_runner.manager.run import Run
    from adaptive_runner.manager.run_manager import RunManager
    from adaptive_runner.schedulers.local import Local
    from adaptive_runner.schedulers.pbs import PBS
    from adaptive_runner.schedulers.scripts import templates_dir
    from adaptive_runner.schedulers.slurm import SLURM
    from adaptive_runner.schedulers.ssh import SSH
    from adaptive_runner.sequence_parts import combine_sequence_learners, split_sequence_learner
    from adaptive_runner.status.log_parser import parse_logs

__version__ = "0.1.0"

# Public name -> module. Loaded on first access so that `python -m adaptive_runner.worker`
# (which imports this package first) does not pay for jinja2, ipywidgets or the managers.
_PUBLIC = {
    "RunManager": "adaptive_runner.manager.run_manager",
    "Run": "adaptive_runner.manager.run",
    "Local": "adaptive_runner.schedulers.local",
    "SLURM": "adaptive_runner.schedulers.slurm",
    "PBS": "adaptive_runner.schedulers.pbs",
    "SSH": "adaptive_runner.schedulers.ssh",
    "AdaptiveRunnerError": "adaptive_runner.errors",
    "ConfigError": "adaptive_runner.errors",
    "RunStateError": "adaptive_runner.errors",
    "Stages": "adaptive_runner.common.goals",
    "DataFrameWarning": "adaptive_runner.manager.dataframes",
    "parse_logs": "adaptive_runner.status.log_parser",
    "fname_from_params": "adaptive_runner.fnames",
    "split_sequence_learner": "adaptive_runner.sequence_parts",
    "combine_sequence_learners": "adaptive_runner.sequence_parts",
    # Named in the README: the shipped job templates, logging in a kernel, the task-log and
    # outcome vocabularies, the default of kill_on_error.
    "templates_dir": "adaptive_runner.schedulers.scripts",
    "configure_manager_logging": "adaptive_runner.manager.logs",
    "in_jupyter_kernel": "adaptive_runner.manager.logs",
    "Event": "adaptive_runner.common.vocabulary",
    "Outcome": "adaptive_runner.common.vocabulary",
    "DEFAULT_KILL_PATTERNS": "adaptive_runner.manager.error_watch",
}

__all__ = [
    "DEFAULT_KILL_PATTERNS",
    "PBS",
    "SLURM",
    "SSH",
    "AdaptiveRunnerError",
    "ConfigError",
    "DataFrameWarning",
    "Event",
    "Local",
    "Outcome",
    "Run",
    "RunManager",
    "RunStateError",
    "Stages",
    "__version__",
    "combine_sequence_learners",
    "configure_manager_logging",
    "fname_from_params",
    "in_jupyter_kernel",
    "parse_logs",
    "split_sequence_learner",
    "templates_dir",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'adaptive_runner' has no attribute {name!r}")
