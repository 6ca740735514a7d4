"""The job manager: keeps one array of jobs submitted for the learners that need one.

Once per interval it asks the scheduler for the run's queue (one call per resource group),
returns the learners of vanished jobs to ``waiting``, expires silent leases, and submits, per
group, a single array sized to the claimable learners that no queued task will pick up,
throttled to ``max_simultaneous_jobs`` for the whole run. It stops when no learner is waiting
or running and the run's tasks have ended (by themselves, see ``_wind_down``). A packed
allocation is one task of the queue whose workers hold learners under ids of their own
(``<task>@<rank>``, see task_identity.py); it is counted as one task and sized in workers.

Each round reads a :class:`Snapshot` (queue and database, at one time) and hands the next
round a :class:`Memory` value: what it cannot read back from the queue or the database.
Failures end bounded and explained (docs/architecture.md, "When things go wrong"):

- an array whose tasks all end without a claim is a *start failure* of its group; the group's
  next arrays are single-task probes, and after ``max_fails`` in a row its waiting learners
  fail with the tasks' own error lines as the reason;
- a task running but silent past ``claim_timeout_s`` is cancelled and counts as one;
- a failed submission is never repeated blindly: it backs off, and the queue is asked for
  its tag first, so an array that was queued all the same is adopted;
- a round that raises (a scheduler hiccup, a full disk) is tried again next interval, and
  its error handler cannot raise; whatever still ends the thread is kept in ``died``, which
  ``RunManager.wait()`` raises.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from adaptive_runner.common.task_identity import RANK_SEPARATOR, task_of, worker_ids
from adaptive_runner.errors import SchedulerCommandError, StateFileError
from adaptive_runner.manager.error_watch import ErrorWatch
from adaptive_runner.manager.idle_nodes import IdleNodes
from adaptive_runner.manager.logs import log_exception
from adaptive_runner.manager.reasons import (
    last_event,
    log_tail,
    output_errors,
    start_failure_reason,
    unreachable_reason,
    unresolvable,
    worker_ending,
)
from adaptive_runner.manager.submissions import FailedSubmission, Submitter
from adaptive_runner.schedulers.base import JobState
from adaptive_runner.state.database import Database, LearnerState

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.schedulers.base import QueuedTask, Scheduler

log = structlog.get_logger("adaptive_runner.job_manager")
# At the run's end, how long running tasks may take to end by themselves (each worker claims,
# hears "no more work" and exits), and how often the queue is asked meanwhile.
FINISH_GRACE_S = 30.0
FINISH_POLL_S = 0.25
# How a run whose jobs wait for good gets other options (tests/e2e/test_slurm_run.py does it).
CHANGE_OPTIONS = (
    "rm.cancel(), then run the cell again with the new options (the same run_dir): the "
    "cancelled run continues from its saves"
)


@dataclass(frozen=True, slots=True)
class Memory:
    """What one round hands the next: what neither the queue nor the database records."""

    first_running: Mapping[str, float] = field(default_factory=dict)  # unclaimed task -> seen
    cancelling: frozenset[str] = frozenset()  # taken for lost: cancelled until the queue agrees
    unreachable: Mapping[str, str] = field(default_factory=dict)  # array -> claim-timeout reason
    failed_submissions: Mapping[int, FailedSubmission] = field(default_factory=dict)
    last: Snapshot | None = None  # the last poll's snapshot, for rounds between polls
    quick_top_up: bool = False  # a round between polls submitted already since the last poll
    stale: bool = False  # the last poll submitted after it looked: its queue lacks that array
    ending_since: float | None = None  # no learner left to run since: tasks end by themselves
    stuck_since: float | None = None  # every task waits for good since (see none_can_start)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The queue and the database as one round sees them, at ``now``."""

    now: float
    arrays: tuple[tuple[str, ...], ...]  # per group: its unfinished arrays, oldest first
    queues: tuple[Mapping[str, JobState], ...]  # per group: its arrays' tasks, as scheduled
    # Worker -> the learner it holds (read after the queues). A worker is its task, or one
    # of a packed allocation's (``123_4@2``, see task_identity.py).
    holders: Mapping[str, int]
    recorded: frozenset[str]  # every array of the run, finished or not
    # Recorded array -> the name of the job the scheduler now shows under its id (not ours).
    foreign: Mapping[str, str] = field(default_factory=dict)
    # Per group: its pending tasks that the scheduler gives a reason for -> that reason.
    reasons: tuple[Mapping[str, str], ...] = ()
    # Computed once: a round asks for it six times, each a pass over every queued task.
    _active: Mapping[str, int] = field(init=False, repr=False, compare=False)
    # Task -> its packed workers that hold a learner (a task that runs one holds as itself).
    _packed: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        active = {
            task: group
            for group, queue in enumerate(self.queues)
            for task, state in queue.items()
            if state.active
        }
        object.__setattr__(self, "_active", active)
        packed: dict[str, list[str]] = {}
        for worker in self.holders:
            if RANK_SEPARATOR in worker:  # a C-level test: most runs have no packed worker
                packed.setdefault(task_of(worker), []).append(worker)
        object.__setattr__(self, "_packed", {t: tuple(w) for t, w in packed.items()})

    def active(self) -> Mapping[str, int]:
        """Active (pending or running) task -> its group."""
        return self._active

    def holding(self, task: str) -> tuple[str, ...]:
        """The workers of ``task`` that hold a learner: the task itself, or packed workers."""
        if task in self.holders:
            return (task,)
        return self._packed.get(task, ())

    def held_tasks(self) -> set[str]:
        """The tasks with a worker that holds a learner."""
        packed_workers = {worker for workers in self._packed.values() for worker in workers}
        return (self.holders.keys() - packed_workers) | self._packed.keys()


class JobManager:
    """Submit, watch and resubmit the run's job arrays from a background thread.

    Parameters
    ----------
    run_dir
        The run directory (its state.sqlite is the source of truth).
    schedulers
        Where each resource group's jobs go: ``schedulers[g]`` runs the learners of group g.
        They are bound to the run here (:meth:`Scheduler.bind`).
    max_simultaneous_jobs
        At most this many tasks of the run are queued or running at once.
    lease_timeout_s
        A running learner whose job has not sent a heartbeat for this long is taken back.
    poll_interval_s
        Seconds between two rounds (one scheduler queue call each).
    max_fails
        Arrays in a row whose tasks all end without a claim before a group gives up.
    claim_timeout_s
        A task running this long without claiming cannot reach the database manager.
    url
        Where the database manager listens (quoted when tasks cannot reach it).
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
        max_fails: int,
        claim_timeout_s: float,
        url: str = "",
        kill_on_error: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_dir = run_dir
        self.schedulers = [s.bind(run_dir.jobs_dir) for s in schedulers]
        self.max_simultaneous_jobs = max_simultaneous_jobs
        self.lease_timeout_s = lease_timeout_s
        self.poll_interval_s = poll_interval_s
        self.max_fails = max_fails
        self.claim_timeout_s = claim_timeout_s
        self.url = url
        self.clock = clock
        self.error_watch = ErrorWatch(run_dir.logs_dir, kill_on_error) if kill_on_error else None
        self.idle_nodes = IdleNodes(run_dir.logs_dir)
        self.error: BaseException | None = None  # of the last round, if it failed
        self.died: BaseException | None = None  # what ended the thread, if not stop or finish
        self.memory = Memory()
        self._stop = threading.Event()
        # Held through each round: whoever changes the run from outside (a cancel) waits for
        # the round in flight, so an array it submits is recorded before the cancel looks.
        self.round_lock = threading.Lock()
        self._finished = threading.Event()
        self._ended = threading.Event()  # the thread ended: finished, stopped or died
        self._wake = threading.Event()  # a learner is done or back: act before the next poll
        self._thread: threading.Thread | None = None
        self._started_at = clock()
        self.submitter = Submitter(
            run_dir,
            self.schedulers,
            max_simultaneous_jobs=max_simultaneous_jobs,
            poll_interval_s=poll_interval_s,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Run rounds in a daemon thread until the run is finished or :meth:`stop` is called."""
        self._started_at = self.clock()
        self._thread = threading.Thread(target=self._loop, name="job-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round; jobs keep running."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the run is finished (True), or the thread ends or the timeout passes.

        False when the thread ended without finishing the run: stopped, or :attr:`died`.
        """
        self._ended.wait(timeout_s)
        return self._finished.is_set()

    def stuck_for(self) -> float | None:
        """Seconds every task has waited for good, none running; None: not at the last poll.

        See :func:`none_can_start`; counted from the first poll that found it so.
        """
        since = self.memory.stuck_since
        return None if since is None else self.clock() - since

    @property
    def finished(self) -> bool:
        """Whether every learner is done, failed or cancelled."""
        return self._finished.is_set()

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        """Rounds until the run is finished or stopped; an error that ends them is kept."""
        try:
            # Commits never checkpoint into the file themselves (the database manager's
            # checkpoints check it first): between two checks it may have gone bad.
            with Database.open(self.run_dir.database, auto_checkpoint=False) as db:
                self._rounds(db)
        except BaseException as e:  # noqa: BLE001 - kept for wait() and the panel, not lost
            self.died = e
            log_exception(log, "the job manager stopped on an error; resume the run")
        finally:
            self._ended.set()

    def wake(self) -> None:
        """Act now, not at the next poll: a learner was done, released or failed.

        The woken round asks the scheduler nothing (see :meth:`quick_round`). Thread-safe:
        the database manager calls it from its serving thread.
        """
        self._wake.set()

    def _rounds(self, db: Database) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()  # a change during this round wakes the next one
            poll = time.monotonic() >= next_poll
            if poll:
                next_poll = time.monotonic() + self.poll_interval_s
            try:
                with self.round_lock:
                    finished = self.round(db) if poll else self.quick_round(db)
                    if finished:  # under the lock: RunManager.add sees it with the round's end
                        self._finished.set()
            except StateFileError:
                self._cancel_all(db)
                raise  # the state is gone: no round can work; _loop keeps it for wait()
            except Exception as e:  # noqa: BLE001 - a scheduler hiccup, a full disk: try again
                self.error = e
                log_exception(log, "job manager round failed; retrying next interval")
            else:
                self.error = None
                if finished:
                    return
            if self.memory.ending_since is not None:  # tasks ending by themselves: look soon
                next_poll = min(next_poll, time.monotonic() + FINISH_POLL_S)
            self._wake.wait(max(0.0, next_poll - time.monotonic()))

    # -- one round -------------------------------------------------------------------------

    def quick_round(self, db: Database) -> bool:
        """A round between polls, woken by a learner that is done or back; True when finished.

        No scheduler call: when no learner is waiting or running the last full round runs
        now (so the run ends within a second of its last learner, at the cost of one queue
        call); otherwise claimable learners get their array now, from the last poll's
        queue and the current holders (at most once between two polls: the new array's
        tasks are not in that queue). If the last poll submitted an array itself, its queue
        lacks it: the round looks again instead (one queue call more, once between polls).
        """
        db.check_file()  # woken by the database manager: it may have found the file gone
        counts = db.counts()
        if counts[LearnerState.WAITING] == 0 and counts[LearnerState.RUNNING] == 0:
            return self.round(db)
        last = self.memory.last
        if last is None or self.memory.quick_top_up:
            return False
        if self.memory.stale:
            # The last poll's queue lacks the array it submitted: topping up from it would
            # exceed max_simultaneous_jobs. Look again, once between two polls.
            finished = self.round(db)
            self.memory = replace(self.memory, quick_top_up=True)
            return finished
        snap = replace(last, now=self.clock(), holders=db.running_tasks())
        memory = self._top_up(db, snap, self.memory, {})
        self.memory = replace(memory, quick_top_up=True)
        return False

    def round(self, db: Database) -> bool:
        """Do one round of bookkeeping and submission; return True when the run is finished."""
        db.check_file()  # StateFileError: state.sqlite was deleted, replaced or damaged
        snap = self._look(db, self.clock())
        memory, adopted = self._adopt(db, snap, self.memory)
        killed = self._kill_on_error(db, snap)
        self._release_idle_nodes(snap)
        lost = self._reclaim(db, snap)
        memory, timed_out = self._claim_timeouts(db, snap, memory)
        memory = self._cancel_lost(snap, memory, killed | lost | timed_out)
        memory = self._finish_arrays(db, snap, memory)
        self._report_stuck(db, snap)
        counts = db.counts()
        if counts[LearnerState.WAITING] == 0 and counts[LearnerState.RUNNING] == 0:
            memory, finished = self._wind_down(db, snap, memory)
            self.memory = memory
            if finished:
                log.info("run finished", **counts)
            return finished
        stuck_since = None  # every task waits for good: since when (wait() gives up after)
        if none_can_start(snap, self.schedulers):
            stuck_since = snap.now if memory.stuck_since is None else memory.stuck_since
        memory = replace(
            memory, last=snap, quick_top_up=False, ending_since=None, stuck_since=stuck_since
        )
        self._place_pending(snap, memory)
        memory = self._top_up(db, snap, memory, adopted)
        self.memory = replace(memory, stale=frozenset(db.recorded_arrays()) != snap.recorded)
        return False

    def _wind_down(self, db: Database, snap: Snapshot, memory: Memory) -> tuple[Memory, bool]:
        """No learner is waiting or running: end the run once its tasks have ended (True).

        Every task left can only find no work. Pending ones are cancelled now (they would
        start for nothing). Running ones end by themselves: each worker's next claim is
        answered "no more work" and it exits 0, so the task ends as completed. Cancelled, it
        would end CANCELLED, with the scheduler's and srun's error lines in its log. The
        managers answer those claims until the tasks are gone, for ``FINISH_GRACE_S`` at
        most: what runs then is cancelled (a worker that never claims would hold its
        allocation, and the stopped managers would never answer it).
        """
        active = snap.active()
        since = snap.now if memory.ending_since is None else memory.ending_since
        pending = {t for t, g in active.items() if snap.queues[g][t] == JobState.PENDING}
        running = active.keys() - pending
        if not running or snap.now - since >= FINISH_GRACE_S:
            self._cancel(snap, set(active))
            running = set()
        else:
            self._cancel(snap, pending)
        # Arrays cancelled before they ran are finished now: no start failure of their group.
        ending = {self.schedulers[active[t]].array_of(t) for t in running}
        for array_id in db.active_arrays():
            if array_id not in ending:
                db.finish_array(array_id, now=snap.now)
        if running:
            return replace(memory, ending_since=since), False
        return replace(memory, ending_since=None), True

    def _cancel_all(self, db: Database) -> None:
        """The state is gone: cancel every task of the run still queued or running.

        Nothing can hand them a learner any more: a pending task would start only to ask the
        stopped managers for one for an hour, a running one could no longer record or save
        its learner (SIGTERM: it saves while its lease allows, and exits). Its arrays are
        those of the last poll, and those the open connection still reads (a deleted file's
        inode lives on until closed). Errors are logged: the state error is what is raised.
        """
        last = self.memory.last
        arrays = [set(group) for group in last.arrays] if last else [set() for _ in self.schedulers]
        tags: dict[str, str | None] = {}
        try:
            for group, known in enumerate(arrays):
                known.update(db.active_arrays(group))
            tags = db.array_tags()
        except sqlite3.Error as e:  # a truncated file: the last poll's arrays are all there is
            log.warning("the run's arrays cannot be read any more", error=str(e))
        cancelled: list[str] = []
        for scheduler, known in zip(self.schedulers, arrays, strict=True):
            if not known:
                continue
            try:
                ours, _ = split_foreign(scheduler.queue_named(known), tags, scheduler.array_of)
                active = sorted(task for task, state in ours.items() if state.active)
                if active:
                    scheduler.cancel(active)
            except Exception:  # noqa: BLE001 - a scheduler hiccup: the state error is what counts
                log_exception(log, "could not cancel the run's tasks", arrays=sorted(known))
                continue
            cancelled += active
        log.warning(
            "the run's state is gone: its tasks still queued or running were cancelled",
            tasks=cancelled,
        )

    def _look(self, db: Database, now: float) -> Snapshot:
        """Ask each group's scheduler (once) about the run's arrays, then read the holders.

        Only tasks named by their array's tag are ours: a scheduler that lost its state (SLURM
        after slurmctld did) may give a recorded id to another job, which is left out of the
        queues, so it is neither counted nor cancelled; its array's own tasks are gone.
        """
        arrays = tuple(tuple(db.active_arrays(g)) for g in range(len(self.schedulers)))
        tags = db.array_tags()
        queues: list[dict[str, JobState]] = []
        reasons: list[dict[str, str]] = []
        foreign: dict[str, str] = {}
        for scheduler, group_arrays in zip(self.schedulers, arrays, strict=True):
            listed = scheduler.queue_named(group_arrays) if group_arrays else {}
            ours, theirs = split_foreign(listed, tags, scheduler.array_of)
            queues.append(ours)
            reasons.append(
                {
                    task: reason
                    for task, state in ours.items()
                    if state == JobState.PENDING and (reason := listed[task].reason)
                }
            )
            foreign.update(theirs)
        for array_id, name in sorted(foreign.items()):
            log.warning(
                "a recorded array id names another job now; taking the array as finished",
                array=array_id,
                tag=tags.get(array_id),
                job_name=name,
            )
        # The queue was read before the holders, so a task that claimed meanwhile is in it.
        return Snapshot(
            now=now,
            arrays=arrays,
            queues=tuple(queues),
            holders=db.running_tasks(),
            recorded=frozenset(db.recorded_arrays()),
            foreign=foreign,
            reasons=tuple(reasons),
        )

    def _place_pending(self, snap: Snapshot, memory: Memory) -> None:
        """Let each group's scheduler start its pending tasks where a slot is free (SSH).

        Not those being cancelled. A pending task still counts as one to come, wherever it
        starts, so the submissions below are sized as before.
        """
        for scheduler, queue in zip(self.schedulers, snap.queues, strict=True):
            pending = [
                task
                for task, state in queue.items()
                if state == JobState.PENDING and task not in memory.cancelling
            ]
            if pending:
                scheduler.place_pending(pending)

    def _cancel(self, snap: Snapshot, tasks: Iterable[str]) -> None:
        """Cancel the active ones of ``tasks``, one scheduler call per group that has some."""
        active = snap.active()
        by_group: dict[int, list[str]] = {}
        for task in tasks:
            if task in active:
                by_group.setdefault(active[task], []).append(task)
        for group, ids in by_group.items():
            self.schedulers[group].cancel(sorted(ids))

    def _kill_on_error(self, db: Database, snap: Snapshot) -> set[str]:
        """Fail the learners of active tasks whose output matched kill_on_error; the tasks."""
        if self.error_watch is None:
            return set()
        active = snap.active()
        # Packed workers write their own output to their own logs: each is watched, and a
        # match fails that worker's learner only (it drops it at its next heartbeat and
        # takes the next; the allocation goes on). A match in an allocation's own output
        # (its job script, srun) fails every learner it holds, and the allocation is cancelled.
        packed = [w for task in active for w in snap.holding(task) if w != task]
        matched = self.error_watch.scan([*active, *packed], snap.holders)
        # Recorded before the cancel: the job's release on SIGTERM then finds the learner gone,
        # so the kill counts as a failure (with its reason) and not as an orderly release.
        for task, reason in matched.items():
            learners = [db.kill(w, reason=reason, now=snap.now) for w in snap.holding(task)]
            log.warning("killed a job on error", task=task, learners=learners, reason=reason)
        return {task for task in matched if task in active}

    def _release_idle_nodes(self, snap: Snapshot) -> None:
        """Hand back the nodes of running allocations whose workers found no learner left."""
        running = [
            task
            for group, queue in enumerate(snap.queues)
            if (self.schedulers[group].packed or 0) > 1
            for task, state in queue.items()
            if state is JobState.RUNNING
        ]
        for task, node in self.idle_nodes.scan(running):
            scheduler = self.schedulers[snap.active()[task]]
            try:
                released = scheduler.release_node(task, node)
            except SchedulerCommandError as e:
                log.warning("could not hand an idle node back", task=task, node=node, error=str(e))
                continue
            if released:
                log.info("idle node handed back", task=task, node=node)

    def _reclaim(self, db: Database, snap: Snapshot) -> set[str]:
        """Take learners back from vanished tasks and expired leases; the tasks to cancel."""
        active = snap.active()
        # Only tasks of the run's own arrays can vanish: one of an array that failed to record
        # (a submission that failed after queueing) is adopted later, not taken for lost.
        vanished = [
            task
            for task in snap.held_tasks()
            if task not in active
            and any(s.array_of(task) in snap.recorded for s in self.schedulers)
        ]
        by_reason: dict[str, list[str]] = {}
        for task, end in self._end_states(snap, vanished).items():
            why = "job vanished from the queue" + (f" (scheduler: {end})" if end else "")
            for worker in snap.holding(task):
                # A packed worker that died before its allocation ended: its packer said how.
                ending = self._packed_ending(task, worker)
                by_reason.setdefault(f"{why}; {ending}" if ending else why, []).append(worker)
        for reason, workers in by_reason.items():
            lost = db.mark_lost(workers, reason=reason, now=snap.now)
            log.warning("jobs vanished", tasks=workers, learners=lost, reason=reason)
        # Leases only count from our own start, so a manager restart is no reason to expire.
        if snap.now - self._started_at < self.lease_timeout_s:
            return set()
        expired = db.expire_leases(
            lease_timeout_s=self.lease_timeout_s,
            now=snap.now,
            last_words=lambda worker: last_event(self.run_dir.task_log(worker), now=snap.now),
        )
        if expired:
            log.warning(
                "heartbeat leases expired",
                tasks=[task for task, _ in expired],
                learners=[learner for _, learner in expired],
                reason=f"no heartbeat for {self.lease_timeout_s:g} s",
            )
        # A packed worker gone silent is not worth its allocation's other workers: it is only
        # fenced (it saves nothing more, and stops at its next heartbeat if it ever sends one).
        return {worker for worker, _ in expired if task_of(worker) == worker}

    def _packed_ending(self, task: str, worker: str) -> str | None:
        """How a packed ``worker`` of ``task`` ended, from the allocation's output (or None)."""
        rank = worker.removeprefix(task + RANK_SEPARATOR)
        if rank == worker or not rank.isdigit():
            return None  # the task's own worker: its end is the task's
        tail = log_tail(self.run_dir.task_log(task)).decode("utf-8", errors="replace")
        return worker_ending(tail, int(rank))

    def _end_states(self, snap: Snapshot, tasks: Collection[str]) -> dict[str, str | None]:
        """How each ended task ended, in words: exit code or signal where the scheduler has it.

        One records call per group that has such tasks (sacct, PBS history, Local's exit
        files); where it knows nothing, the state the queue last showed (SLURM's MinJobAge).
        """
        states: dict[str, str | None] = dict.fromkeys(tasks)
        for group, scheduler in enumerate(self.schedulers):
            mine = [task for task in tasks if scheduler.array_of(task) in snap.arrays[group]]
            # The records under a reused id are the other job's.
            for task in mine:
                if (name := snap.foreign.get(scheduler.array_of(task))) is not None:
                    states[task] = f"its id names another job now, {name!r}"
            mine = [task for task in mine if states[task] is None]
            if not mine:
                continue
            arrays = sorted({scheduler.array_of(task) for task in mine})
            found = scheduler.exit_states(arrays)
            for task in mine:
                if task in found:
                    states[task] = found[task].describe()
                elif task in snap.queues[group]:
                    states[task] = str(snap.queues[group][task])
        return states

    def _report_stuck(self, db: Database, snap: Snapshot) -> None:
        """Record, per group, tasks pending for a reason no other job's end lifts (or clear it).

        Nothing is cancelled: such a reason may still pass (drained nodes come back), and
        the user decides. The run's problems (panel, CLI, ``rm.problems()``) say it meanwhile.
        """
        recorded = {state.group: state.queue_error for state in db.group_states()}
        for group, reasons in enumerate(snap.reasons):
            scheduler = self.schedulers[group]
            stuck = {r: why for r in set(reasons.values()) if (why := scheduler.stuck(r))}
            message = None
            if stuck:
                reason = min(stuck)
                tasks = sorted(t for t, r in reasons.items() if r == reason)
                message = (
                    f"{len(tasks)} task(s) of group {group} (e.g. {tasks[0]}) wait in the queue "
                    f"with reason {reason}: {stuck[reason]}. They may never start; to change "
                    f"the scheduler's options: {CHANGE_OPTIONS}"
                )
            if message != recorded.get(group):
                db.record_queue_error(group, message)
                if message is not None:
                    log.warning("jobs may never start", group=group, reason=message)

    def _claim_timeouts(
        self, db: Database, snap: Snapshot, memory: Memory
    ) -> tuple[Memory, set[str]]:
        """The tasks running without a claim for claim_timeout_s (to cancel: start failures)."""
        active = snap.active()
        running = {
            task: worker_ids(task, self.schedulers[active[task]].packed)
            for task in active.keys() - snap.holders.keys()  # set operations: 100,000 tasks
            if snap.queues[active[task]][task] == JobState.RUNNING and not snap.holding(task)
        }
        claimed = db.claimed([worker for workers in running.values() for worker in workers])
        unclaimed = {task for task, workers in running.items() if claimed.isdisjoint(workers)}
        first = {task: memory.first_running.get(task, snap.now) for task in unclaimed}
        timed_out = {t for t, seen in first.items() if snap.now - seen >= self.claim_timeout_s}
        unreachable = dict(memory.unreachable)
        for task in sorted(timed_out):
            reason = unreachable_reason(task, url=self.url, waited_s=snap.now - first[task])
            unreachable.setdefault(self.schedulers[active[task]].array_of(task), reason)
            log.warning("task never claimed; cancelling it", task=task, reason=reason)
        first = {t: seen for t, seen in first.items() if t not in timed_out}
        return replace(memory, first_running=first, unreachable=unreachable), timed_out

    def _cancel_lost(self, snap: Snapshot, memory: Memory, new: set[str]) -> Memory:
        """Cancel tasks taken for lost, again each round until the queue shows them gone.

        Such a task is never one about to claim (see :meth:`_top_up`).
        """
        active = snap.active()
        cancelling = {task for task in memory.cancelling | new if task in active}
        self._cancel(snap, cancelling)
        return replace(memory, cancelling=frozenset(cancelling))

    def _finish_arrays(self, db: Database, snap: Snapshot, memory: Memory) -> Memory:
        """Finish the arrays with no active task left; count those that never claimed."""
        live = {self.schedulers[g].array_of(t) for t, g in snap.active().items()}
        unreachable = dict(memory.unreachable)
        for group, arrays in enumerate(snap.arrays):
            for array_id in arrays:
                if array_id in live:
                    continue
                claims = db.finish_array(array_id, now=snap.now)
                if claims is None:
                    continue
                if claims == 0 and array_id not in snap.foreign:  # it may never have started
                    self._start_failed(db, snap, group, array_id, unreachable.get(array_id))
                unreachable.pop(array_id, None)
        return replace(memory, unreachable=unreachable)

    def _start_failed(
        self, db: Database, snap: Snapshot, group: int, array_id: str, unreachable: str | None
    ) -> None:
        """Record an array of ``group`` whose tasks never claimed; give up at max_fails.

        An array whose every task was cancelled (by ``rm.cancel()``, the user's ``scancel``)
        is none: it did not fail to start, it was not let start (such as one pending for
        good, cancelled to change the run's options). One we cancelled for never claiming
        (``unreachable``) is. A task that could not resolve the manager's host
        (:func:`~adaptive_runner.manager.reasons.unresolvable`) fails the group at once: the
        name will not resolve for the next array either.
        """
        scheduler = self.schedulers[group]
        ends = {t: s for t, s in snap.queues[group].items() if scheduler.array_of(t) == array_id}
        if not ends:
            ends = {t: end.state for t, end in scheduler.exit_states([array_id]).items()}
        if unreachable is None and ends and set(ends.values()) == {JobState.CANCELLED}:
            log.info("array cancelled before any task claimed", array=array_id, group=group)
            return
        tasks = sorted(ends)
        task = tasks[0] if tasks else None
        end = self._end_states(snap, [task])[task] if task else None
        lines = [unreachable] if unreachable else []
        hopeless = None  # what the task said that no later array can change
        if task is not None:
            lines += output_errors(self.run_dir.task_log(task))
            # A packed allocation's first worker logs on its own (its id: <task>@0).
            first = worker_ids(task, scheduler.packed)[0]
            hopeless = unresolvable(self.run_dir.task_log(first))
            if hopeless is not None and hopeless not in lines:
                lines.insert(0, hopeless)
        reason = start_failure_reason(
            group=group, in_a_row=db.start_failures(group) + 1, task=task, end=end, lines=lines
        )
        streak = db.record_start_failure(group, reason=reason)
        log.warning("array ended without a claim", array=array_id, group=group, reason=reason)
        if streak >= self.max_fails or hopeless is not None:
            failed = db.fail_waiting(group, reason=reason, now=snap.now)
            log.error(
                "giving up on a group whose jobs cannot start",
                group=group,
                learners=len(failed),
                reason=reason,
            )

    # -- submitting ------------------------------------------------------------------------

    def _top_up(
        self, db: Database, snap: Snapshot, memory: Memory, adopted: Mapping[int, int]
    ) -> Memory:
        """Per group, submit one array for the claimable learners no queued task will take.

        ``adopted`` (group -> tasks) are arrays recorded this round, after the snapshot: their
        tasks will claim, so their groups wait for the next round.
        """
        active = snap.active()
        # Not those being cancelled as lost; those cancelled for never claiming count until
        # their array ends, when it counts as a start failure (and a probe follows).
        lost = {
            t
            for t in memory.cancelling
            if self.schedulers[active[t]].array_of(t) not in memory.unreachable
        }
        claims, exiting = self._claims_to_come(db, snap, set(active) - lost)
        room = self.max_simultaneous_jobs - len(active) + exiting - sum(adopted.values())
        probing = {state.group for state in db.group_states() if state.start_failures}
        doubtful = self._doubtful_groups(db, snap, memory)
        failed = dict(memory.failed_submissions)
        for group in range(len(self.schedulers)):
            if group in adopted:
                continue
            previous = failed.pop(group, None)
            if previous is not None and snap.now < previous.retry_at:
                failed[group] = previous
                room -= previous.n_tasks  # it may be queued after all: keep its room
                continue
            if group in doubtful:
                continue  # its live array may be one that cannot start: let it end first
            # Each task (a packed allocation: each of its workers) claims one learner at once.
            workers = self.schedulers[group].packed or 1
            n_tasks = -(-(db.n_claimable(group) - claims.get(group, 0)) // workers)
            if group in probing:
                # Its last array could not start: one task at a time until one claims.
                if group in active.values():
                    continue
                n_tasks = min(n_tasks, 1)
            n_tasks = min(n_tasks, room)
            if n_tasks <= 0:
                continue
            room -= n_tasks
            retry = self.submitter.submit(db, group, n_tasks, previous, now=snap.now)
            if retry is not None:
                failed[group] = retry
        return replace(memory, failed_submissions=failed)

    def _claims_to_come(
        self, db: Database, snap: Snapshot, tasks: Collection[str]
    ) -> tuple[dict[int, int], int]:
        """Per group, the claims ``tasks`` will make now; and how many of them are exiting.

        Every worker of a pending task will claim; of a running one, those that hold
        nothing and did not end their latest learner other than done. A running task all of
        whose workers released or failed their learners is exiting, not claiming: its slot
        is as good as free (counting it against the throttle would hold its learner's next
        job back a whole poll).
        """
        active = snap.active()
        claims: dict[int, int] = {}
        exiting = 0
        # A task that holds as itself claims nothing now: only the others need a look.
        for task in set(tasks) - snap.holders.keys():
            group = active[task]
            workers = worker_ids(task, self.schedulers[group].packed)
            idle = [w for w in workers if w not in snap.holders]
            if idle and snap.queues[group][task] == JobState.RUNNING:
                ended = db.exiting(idle)
                exiting += len(ended) == len(workers)
                idle = [w for w in idle if w not in ended]
            claims[group] = claims.get(group, 0) + len(idle)
        return claims, exiting

    def _doubtful_groups(self, db: Database, snap: Snapshot, memory: Memory) -> set[int]:
        """Groups with a live array whose tasks end (or time out) without any claim.

        Submitting more for such a group would only pay for more jobs that cannot start:
        it waits until the array ends and is counted (a start failure, or not).
        """
        doubtful: set[int] = set()
        for group, (scheduler, queue) in enumerate(zip(self.schedulers, snap.queues, strict=True)):
            live = {scheduler.array_of(t) for t, state in queue.items() if state.active}
            ended = {scheduler.array_of(t) for t, state in queue.items() if not state.active}
            suspects = (live & ended) | (live & memory.unreachable.keys())
            if suspects and 0 in db.array_claims(suspects).values():
                doubtful.add(group)
        return doubtful

    def _adopt(self, db: Database, snap: Snapshot, memory: Memory) -> tuple[Memory, dict[int, int]]:
        """Adopt the arrays of failed submissions the scheduler has after all (see Submitter).

        Returns the memory without them, and group -> tasks adopted (not in this snapshot).
        """
        failed, adopted = self.submitter.adopt(db, memory.failed_submissions, now=snap.now)
        return replace(memory, failed_submissions=failed), adopted


def none_can_start(snap: Snapshot, schedulers: Sequence[Scheduler]) -> bool:
    """Whether every task of the run is pending for a reason no other job's end lifts.

    And none runs and no learner is held: nothing the run does will change the queue, so it
    cannot go on until someone changes the run's options or the cluster (a partition set
    up again). False while the run has no task in the queue at all.

    Parameters
    ----------
    snap
        The queue and the holders, as a round saw them.
    schedulers
        The groups' schedulers, which say which pending reasons no job's end lifts.

    """
    active = snap.active()
    if not active or snap.holders:
        return False
    for task, group in active.items():
        reason = snap.reasons[group].get(task) if group < len(snap.reasons) else None
        if snap.queues[group][task] != JobState.PENDING or reason is None:
            return False
        if schedulers[group].stuck(reason) is None:
            return False
    return True


def split_foreign(
    listed: Mapping[str, QueuedTask],
    tags: Mapping[str, str | None],
    array_of: Callable[[str], str],
) -> tuple[dict[str, JobState], dict[str, str]]:
    """Our tasks' states, and array -> job name for the recorded ids other jobs have now.

    A task is ours when its job name is its array's recorded tag, or when either is unknown
    (arrays recorded before tags existed; a scheduler answer without the name).

    Parameters
    ----------
    listed
        Task id -> state and job name, as :meth:`Scheduler.queue_named` gives them.
    tags
        Array id -> the tag it was submitted under.
    array_of
        The scheduler's task id -> array id.

    """
    ours: dict[str, JobState] = {}
    foreign: dict[str, str] = {}
    for task, queued in listed.items():
        array_id = array_of(task)
        tag = tags.get(array_id)
        if tag is None or queued.name is None or queued.name == tag:
            ours[task] = queued.state
        else:
            foreign[array_id] = queued.name
    return ours, foreign
