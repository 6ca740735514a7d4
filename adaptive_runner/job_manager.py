"""The job manager: keeps one array of jobs submitted for the learners that need one.

Once per interval it asks the scheduler for the run's queue (one call per resource group),
returns the learners of vanished jobs to ``waiting``, expires silent leases, and submits, per
group, a single array sized to the claimable learners that no queued task will pick up,
throttled to ``max_simultaneous_jobs`` for the whole run. It stops when no learner is waiting
or running.
"""

from __future__ import annotations

import threading
import time
from itertools import count
from typing import TYPE_CHECKING

import structlog

from adaptive_runner.database import Database, LearnerState
from adaptive_runner.error_watch import ErrorWatch
from adaptive_runner.files import atomic_write
from adaptive_runner.schedulers.base import JobState, ScriptContext

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from adaptive_runner.run_dir import RunDir
    from adaptive_runner.schedulers.base import Scheduler

log = structlog.get_logger("adaptive_runner.job_manager")

WORKER_MODULE = "adaptive_runner.worker"


class JobManager:
    """Submit, watch and resubmit the run's job arrays from a background thread.

    Parameters
    ----------
    run_dir
        The run directory (its state.sqlite is the source of truth).
    schedulers
        Where each resource group's jobs go: ``schedulers[g]`` runs the learners of group g.
    max_simultaneous_jobs
        At most this many tasks of the run are queued or running at once.
    lease_timeout_s
        A running learner whose job has not sent a heartbeat for this long is taken back.
    poll_interval_s
        Seconds between two rounds (one scheduler queue call each).
    kill_on_error
        Cancel a job whose scheduler output file shows one of these substrings, counting a
        failure for its learner (see error_watch.py); empty: never.
    clock
        Wall clock, injectable for tests; the database stores its timestamps.

    """

    def __init__(
        self,
        run_dir: RunDir,
        schedulers: Sequence[Scheduler],
        *,
        max_simultaneous_jobs: int,
        lease_timeout_s: float,
        poll_interval_s: float,
        kill_on_error: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_dir = run_dir
        self.schedulers = list(schedulers)
        self.max_simultaneous_jobs = max_simultaneous_jobs
        self.lease_timeout_s = lease_timeout_s
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.error_watch = ErrorWatch(run_dir.logs_dir, kill_on_error) if kill_on_error else None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = clock()
        self._script_numbers = count(1)
        self._max_array_sizes: list[int | None] = []
        self._task_groups: dict[str, int] = {}  # active task -> its group, from the last queue
        self._pending: set[str] = set()  # tasks the last queue showed as not started yet
        self._ended: dict[str, JobState] = {}  # tasks the last queue showed as ended, and how
        self._round_arrays: list[list[str]] = []  # per group: the arrays asked about this round

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Run rounds in a daemon thread until the run is finished or :meth:`stop` is called."""
        self._started_at = self.clock()
        self._thread = threading.Thread(target=self._loop, name="job-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round; jobs keep running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the run is finished (True) or the timeout passes (False)."""
        return self._finished.wait(timeout_s)

    @property
    def finished(self) -> bool:
        """Whether every learner is done, failed or cancelled."""
        return self._finished.is_set()

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        db = Database.open(self.run_dir.database)
        try:
            self._max_array_sizes = [s.max_array_size() for s in self.schedulers]
            while not self._stop.is_set():
                try:
                    finished = self.round(db)
                except Exception as e:  # a scheduler hiccup must not end the run; keep trying
                    self.error = e
                    log.exception("job manager round failed; retrying next interval")
                else:
                    self.error = None
                    if finished:
                        self._finished.set()
                        return
                self._stop.wait(self.poll_interval_s)
        finally:
            db.close()

    # -- one round -------------------------------------------------------------------------

    def round(self, db: Database) -> bool:
        """Do one round of bookkeeping and submission; return True when the run is finished."""
        now = self.clock()
        active = self._active_tasks(db, now)
        self._kill_on_error(db, active, now)
        self._reclaim(db, active, now)
        counts = db.counts()
        if counts[LearnerState.WAITING] == 0 and counts[LearnerState.RUNNING] == 0:
            # Pending tasks would only start to find no work; running ones are exiting.
            self._cancel(self._pending)
            for array_id in db.active_arrays():
                db.finish_array(array_id, now=now)
            log.info("run finished", **counts)
            return True
        self._top_up(db, active, now)
        return False

    def _active_tasks(self, db: Database, now: float) -> set[str]:
        """Ask each group's scheduler (once) which of the run's tasks are queued or running."""
        self._task_groups, self._pending, self._ended = {}, set(), {}
        self._round_arrays = [db.active_arrays(group) for group in range(len(self.schedulers))]
        for group, scheduler in enumerate(self.schedulers):
            arrays = self._round_arrays[group]
            if not arrays:
                continue
            queue = scheduler.queue(arrays, jobs_dir=self.run_dir.jobs_dir)
            active = {task for task, state in queue.items() if state.active}
            self._task_groups.update(dict.fromkeys(active, group))
            self._pending.update(t for t, state in queue.items() if state == JobState.PENDING)
            self._ended.update((t, state) for t, state in queue.items() if not state.active)
            # Arrays with no active task left are finished: stop asking about them.
            live_arrays = {scheduler.array_of(task) for task in active}
            for array_id in arrays:
                if array_id not in live_arrays:
                    db.finish_array(array_id, now=now)
        return set(self._task_groups)

    def _cancel(self, tasks: Iterable[str]) -> None:
        """Cancel active tasks, one scheduler call per group that has some."""
        by_group: dict[int, list[str]] = {}
        for task in tasks:
            if task in self._task_groups:  # not active: nothing to cancel
                by_group.setdefault(self._task_groups[task], []).append(task)
        for group, ids in by_group.items():
            self.schedulers[group].cancel(sorted(ids), jobs_dir=self.run_dir.jobs_dir)

    def _kill_on_error(self, db: Database, active: set[str], now: float) -> None:
        """Cancel the active tasks whose output matched kill_on_error; fail their learners."""
        if self.error_watch is None:
            return
        matched = self.error_watch.scan(active, db.running_tasks())
        if not matched:
            return
        # Record first: the job's release on SIGTERM then finds the learner gone, so the
        # kill counts as a failure (with its reason) and not as an orderly release.
        for task, reason in matched.items():
            learner = db.kill(task, reason=reason, now=now)
            log.warning("killed a job on error", task=task, learner=learner, reason=reason)
        self._cancel(matched)
        active -= matched.keys()

    def _reclaim(self, db: Database, active: set[str], now: float) -> None:
        """Take learners back from vanished tasks and from tasks whose lease expired."""
        # The queue was read before the holders, so a task that claimed meanwhile is in it.
        vanished = [task for task in db.running_tasks() if task not in active]
        by_reason: dict[str, list[str]] = {}
        for task, state in self._end_states(vanished).items():
            why = "job vanished from the queue" + (f" (scheduler: {state})" if state else "")
            by_reason.setdefault(why, []).append(task)
        for reason, tasks in by_reason.items():
            lost = db.mark_lost(tasks, reason=reason, now=now)
            log.warning("jobs vanished", tasks=tasks, learners=lost, reason=reason)
        # Leases only count from our own start, so a manager restart is no reason to expire.
        if now - self._started_at >= self.lease_timeout_s:
            expired = db.expire_leases(lease_timeout_s=self.lease_timeout_s, now=now)
            if expired:
                tasks = [task for task, _ in expired]
                log.warning("heartbeat leases expired", tasks=tasks)
                self._cancel(tasks)

    def _end_states(self, tasks: list[str]) -> dict[str, JobState | None]:
        """How each ended task ended, as far as the scheduler still knows.

        The queue keeps finished tasks for a while (SLURM's MinJobAge); for the others, one
        accounting call per group (sacct; nothing where the scheduler keeps no records).
        """
        states: dict[str, JobState | None] = {task: self._ended.get(task) for task in tasks}
        for group, scheduler in enumerate(self.schedulers):
            unknown = [
                task
                for task, state in states.items()
                if state is None and scheduler.array_of(task) in self._round_arrays[group]
            ]
            if unknown:
                arrays = sorted({scheduler.array_of(task) for task in unknown})
                found = scheduler.exit_states(arrays, jobs_dir=self.run_dir.jobs_dir)
                states.update((task, found[task]) for task in unknown if task in found)
        return states

    def _top_up(self, db: Database, active: set[str], now: float) -> None:
        """Per group, submit one array for the claimable learners no queued task will take."""
        room = self.max_simultaneous_jobs - len(active)
        unbound = active - set(db.running_tasks())
        for group in range(len(self.schedulers)):
            waiting_tasks = sum(self._task_groups[task] == group for task in unbound)
            n_tasks = min(db.n_claimable(group) - waiting_tasks, room)
            if n_tasks <= 0:
                continue
            room -= n_tasks
            # Split only where the scheduler's maximum array size forces it.
            chunk = self._max_array_sizes[group] or n_tasks
            for first in range(0, n_tasks, chunk):
                self._submit(db, group, min(chunk, n_tasks - first), now)

    def _submit(self, db: Database, group: int, n_tasks: int, now: float) -> None:
        name = f"{self.run_dir.path.name}-{int(now)}-{next(self._script_numbers)}"
        ctx = ScriptContext(
            job_name=self.run_dir.path.name,
            run_dir=self.run_dir.path,
            log_dir=self.run_dir.logs_dir,
            n_tasks=n_tasks,
            max_running=min(n_tasks, self.max_simultaneous_jobs),
            worker_args=["-m", WORKER_MODULE, str(self.run_dir.path), str(group)],
        )
        script = self.run_dir.jobs_dir / f"{name}.sh"
        scheduler = self.schedulers[group]
        atomic_write(script, scheduler.render(ctx).encode(), mode=0o755)
        array_id = scheduler.submit(script, n_tasks=n_tasks, max_running=ctx.max_running)
        db.record_array(array_id, n_tasks=n_tasks, script=str(script), now=now, group=group)
        log.info("submitted array", array=array_id, group=group, tasks=n_tasks, script=str(script))
