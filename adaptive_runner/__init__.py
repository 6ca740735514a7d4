"""adaptive_runner: run many adaptive learners on HPC clusters as resumable job arrays."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptive_runner.errors import AdaptiveRunnerError, ConfigError, RunStateError
    from adaptive_runner.fnames import fname_from_params
    from adaptive_runner.log_parser import parse_logs
    from adaptive_runner.run import Run
    from adaptive_runner.run_manager import RunManager
    from adaptive_runner.schedulers.local import Local
    from adaptive_runner.schedulers.pbs import PBS
    from adaptive_runner.schedulers.slurm import SLURM
    from adaptive_runner.schedulers.ssh import SSH
    from adaptive_runner.sequence_parts import combine_sequence_learners, split_sequence_learner

__version__ = "0.1.0"

# Public name -> module. Loaded on first access so that `python -m adaptive_runner.worker`
# (which imports this package first) does not pay for jinja2, ipywidgets or the managers.
_PUBLIC = {
    "RunManager": "adaptive_runner.run_manager",
    "Run": "adaptive_runner.run",
    "Local": "adaptive_runner.schedulers.local",
    "SLURM": "adaptive_runner.schedulers.slurm",
    "PBS": "adaptive_runner.schedulers.pbs",
    "SSH": "adaptive_runner.schedulers.ssh",
    "AdaptiveRunnerError": "adaptive_runner.errors",
    "ConfigError": "adaptive_runner.errors",
    "RunStateError": "adaptive_runner.errors",
    "parse_logs": "adaptive_runner.log_parser",
    "fname_from_params": "adaptive_runner.fnames",
    "split_sequence_learner": "adaptive_runner.sequence_parts",
    "combine_sequence_learners": "adaptive_runner.sequence_parts",
}

__all__ = [
    "PBS",
    "SLURM",
    "SSH",
    "AdaptiveRunnerError",
    "ConfigError",
    "Local",
    "Run",
    "RunManager",
    "RunStateError",
    "__version__",
    "combine_sequence_learners",
    "fname_from_params",
    "parse_logs",
    "split_sequence_learner",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'adaptive_runner' has no attribute {name!r}")
