"""Shared fixtures: `slurm` tests are skipped without sbatch, except in CI where they fail."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `slurm` tests where no SLURM runs, unless CI is set (then they must run)."""
    del config
    if shutil.which("sbatch") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="no sbatch on PATH: start SLURM with ci/slurm/start.sh")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)
