"""Day-2 failures on the real SLURM: jobs that cannot start, a submit that fails late."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pytest
from helpers_run import make_learners
from helpers_slurm import PATIENCE_S, run, run_arrays, sbatch_calls, wrap_sbatch

import adaptive_runner as ar
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["run", "sbatch_calls"]  # fixtures, used by name

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_failing_module_load_ends_after_max_fails_arrays(
    run: Callable[..., ar.RunManager], sbatch_calls: Path
) -> None:
    rm = run(
        make_learners(3),
        scheduler=ar.SLURM(cores=1, extra_script="module load gcc/12"),
        max_fails=2,
    )
    assert rm.wait(timeout=PATIENCE_S) is False
    calls = sbatch_calls.read_text().splitlines()
    assert len(calls) == 2  # max_fails arrays, then nothing more for a shared slurmctld
    with Database.open(rm.run_dir.database) as db:
        errors = {row.error for row in db.learners()}
    (error,) = errors
    assert error is not None
    assert "cannot start: 2 array(s) in a row" in error
    assert "module: command not found" in error
    # From sacct, or from squeue's state when the accounting record lags a moment behind.
    assert "(FAILED, exit code 127)" in error or "(failed)" in error


@pytest.fixture
def late_failing_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``sbatch`` that queues the array, then reports a time-out once (as SLURM may)."""
    failed = shlex.quote(str(tmp_path / "sbatch-failed-once"))
    return wrap_sbatch(
        tmp_path,
        monkeypatch,
        f"""out=$("$REAL" "$@") || exit $?
if [ ! -e {failed} ]; then
    touch {failed}
    echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
    exit 1
fi
echo "$out"
""",
    )


def test_submit_that_queues_then_fails_is_adopted(
    run: Callable[..., ar.RunManager], late_failing_sbatch: Path
) -> None:
    rm = run(make_learners(2))
    assert rm.wait(timeout=PATIENCE_S) is True
    assert len(late_failing_sbatch.read_text().splitlines()) == 1  # one submission
    assert len(run_arrays(rm.run_dir.path)) == 1  # one array, adopted by its tag
    with Database.open(rm.run_dir.database) as db:
        assert all(row.failures == 0 for row in db.learners())
        assert db.group_states() == []
    log = (rm.run_dir.path / "manager.log").read_text()
    assert "adopted an array whose submission had failed" in log


@dataclass(frozen=True, kw_only=True)
class PromptSLURM(ar.SLURM):
    """SLURM that waits 3 s for sbatch instead of 60, so a hang is seen quickly."""

    submit_timeout_s: ClassVar[float] = 3.0


def test_submit_that_hangs_after_queueing_is_adopted(
    run: Callable[..., ar.RunManager], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Queues the array, then hangs (exec: the process the time-out kills is the sleep).
    calls = wrap_sbatch(tmp_path, monkeypatch, '"$REAL" "$@" > /dev/null || exit $?\nexec sleep 30')
    rm = run(make_learners(2), scheduler=PromptSLURM(cores=1))
    assert rm.wait(timeout=PATIENCE_S) is True
    assert len(calls.read_text().splitlines()) == 1
    assert len(run_arrays(rm.run_dir.path)) == 1
    log = (rm.run_dir.path / "manager.log").read_text()
    assert "timed out after 3 s" in log
    assert "adopted an array whose submission had failed" in log
