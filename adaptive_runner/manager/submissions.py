"""Submitting arrays: tagged job scripts, one attempt each, back-off and adoption after a failure.

A submit command is not idempotent: ``sbatch`` can queue an array and still report an error
(a time-out on the way back), so a blind retry would submit it twice. Every submission gets
a fresh tag as its job name; after a failure the job manager waits (doubling from its poll
interval, at most ``MAX_SUBMIT_BACKOFF_S``) and, every round meanwhile, asks the scheduler for
that tag: an array found under it is recorded (adopted) instead of being submitted again.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

import structlog

from adaptive_runner.common.files import atomic_write
from adaptive_runner.errors import SchedulerCommandError
from adaptive_runner.schedulers.base import ScriptContext

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.state.database import Database

log = structlog.get_logger("adaptive_runner.job_manager")

WORKER_MODULE = "adaptive_runner.worker"
MAX_SUBMIT_BACKOFF_S = 600.0  # a failing submit command is tried at least this often
_TAG_CHARS = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass(frozen=True, slots=True)
class FailedSubmission:
    """A submission that failed: maybe queued all the same, so its tag is asked for first."""

    tag: str
    script: str
    n_tasks: int
    failures: int  # submissions in a row that failed
    retry_at: float


class Submitter:
    """Writes and submits the run's job scripts, each array under a tag of its own.

    Parameters
    ----------
    run_dir
        The run; scripts go to its jobs/ directory, logs to logs/.
    schedulers
        ``schedulers[g]`` runs the arrays of resource group g, bound to the run (see
        :meth:`Scheduler.bind`).
    max_simultaneous_jobs
        The throttle written into each array (at most this many of its tasks at once).
    poll_interval_s
        The first back-off after a failed submission; it doubles with each failure.

    """

    def __init__(
        self,
        run_dir: RunDir,
        schedulers: Sequence[Scheduler],
        *,
        max_simultaneous_jobs: int,
        poll_interval_s: float,
    ) -> None:
        self.run_dir = run_dir
        self.schedulers = list(schedulers)
        self.max_simultaneous_jobs = max_simultaneous_jobs
        self.poll_interval_s = poll_interval_s
        self._script_numbers = count(1)
        self._max_array_sizes: list[int | None] | None = None  # asked at the first submission

    def adopt(
        self, db: Database, failed: Mapping[int, FailedSubmission], *, now: float
    ) -> tuple[dict[int, FailedSubmission], dict[int, int]]:
        """Record the arrays of failed submissions that the scheduler has after all.

        Asked every round until the submission is tried again (an array may show up late),
        and before the run can end, so no array of the run goes unrecorded. Returns the
        failed submissions still unresolved, and group -> tasks adopted.
        """
        unresolved = dict(failed)
        adopted: dict[int, int] = {}
        for group, previous in failed.items():
            found = self.schedulers[group].find_tagged([previous.tag])
            array_id = found.get(previous.tag)
            if array_id is None:
                continue
            record(
                db,
                array_id,
                n_tasks=previous.n_tasks,
                script=previous.script,
                group=group,
                tag=previous.tag,
                now=now,
            )
            del unresolved[group]
            adopted[group] = previous.n_tasks
            log.info(
                "adopted an array whose submission had failed", array=array_id, tag=previous.tag
            )
        return unresolved, adopted

    def submit(
        self,
        db: Database,
        group: int,
        n_tasks: int,
        previous: FailedSubmission | None,
        *,
        now: float,
    ) -> FailedSubmission | None:
        """Submit ``n_tasks`` for ``group``, split where the scheduler's array size forces it.

        Returns the failed submission to retry later (after asking for its tag), if any;
        ``previous`` is the one that failed before it, for the back-off.
        """
        if self._max_array_sizes is None:
            self._max_array_sizes = [s.max_array_size() for s in self.schedulers]
        chunk = self._max_array_sizes[group] or n_tasks
        for first in range(0, n_tasks, chunk):
            size = min(chunk, n_tasks - first)
            tag, script = self._write_script(group, size, now)
            try:
                array_id = self.schedulers[group].submit(
                    script,
                    n_tasks=size,
                    max_running=min(size, self.max_simultaneous_jobs),
                    tag=tag,
                )
            except SchedulerCommandError as e:
                failures = 1 if previous is None else previous.failures + 1
                delay = min(MAX_SUBMIT_BACKOFF_S, self.poll_interval_s * 2 ** (failures - 1))
                db.record_submit_error(group, error=str(e))
                log.warning(
                    "submission failed; asking for its tag before trying again",
                    group=group,
                    tag=tag,
                    retry_in_s=delay,
                    error=str(e),
                )
                return FailedSubmission(tag, str(script), size, failures, now + delay)
            record(db, array_id, n_tasks=size, script=str(script), group=group, tag=tag, now=now)
            log.info("submitted array", array=array_id, group=group, tasks=size, tag=tag)
        return None

    def _write_script(self, group: int, n_tasks: int, now: float) -> tuple[str, Path]:
        """A fresh tag and the job script for one array of ``group``, written atomically."""
        name = _TAG_CHARS.sub("_", self.run_dir.path.name)[:40]
        tag = f"{name if name[:1].isalnum() else 'run' + name}-{secrets.token_hex(4)}"
        ctx = ScriptContext(
            job_name=tag,
            run_dir=self.run_dir.path,
            log_dir=self.run_dir.logs_dir,
            n_tasks=n_tasks,
            max_running=min(n_tasks, self.max_simultaneous_jobs),
            worker_args=["-m", WORKER_MODULE, str(self.run_dir.path), str(group)],
        )
        number = next(self._script_numbers)
        script = self.run_dir.jobs_dir / f"{self.run_dir.path.name}-{int(now)}-{number}.sh"
        atomic_write(script, self.schedulers[group].render(ctx).encode(), mode=0o755)
        return tag, script


def record(
    db: Database, array_id: str, *, n_tasks: int, script: str, group: int, tag: str, now: float
) -> None:
    """Record a submitted array; an id the run recorded before is a new array all the same.

    A scheduler that lost its state (slurmctld's, a PBS server's) gives ids out again: the
    earlier array of that id is over (see :meth:`Database.record_array`), said in a warning.
    """
    reused = db.knows_array(array_id)
    lost = db.record_array(array_id, n_tasks=n_tasks, script=script, now=now, group=group, tag=tag)
    if reused:
        log.warning(
            "the scheduler gave out a recorded array id again (it lost its state): recorded "
            "as a new array, the earlier one of that id as finished",
            array=array_id,
            tag=tag,
            lost_learners=lost,
        )
