"""The worker: claim a learner, run it to the goal, save it, report (``-m ... RUN_DIR``).

``python -m adaptive_runner.worker RUN_DIR`` is what every array task runs:

1. read run.json, learn who we are from the scheduler's environment, claim a learner from
   the database manager (nothing heavy is imported before that: no work, quick exit);
2. run the run's initializers (before the task's first learner only: a failing one fails
   that learner), unpickle the learner and the goal, load its saved data if there is some;
3. run an ``adaptive.Runner`` on our own asyncio loop with the run's executor, saving every
   ``save_interval_s`` and sending a heartbeat every ``log_interval_s``;
4. at the goal: final save, ``done``, and back to 1 for the next waiting learner of our
   group, with adaptive already loaded (a task's start-up, queue wait included, is paid
   once for as many learners as fit in its time). On SIGTERM or SIGUSR1:
   save, ``release``. When the function raises: save, ``fail`` with the traceback. When a
   heartbeat says another task holds the learner now: stop at once without saving (our data
   would overwrite theirs). When the final save fails (tried again for a while if its error
   may pass, a full disk): ``fail`` with the error, so a data file that can never be written
   fails its learner after ``max_fails`` jobs instead of taking one for ever.

Fencing: the job manager gives a learner to another task once this one's heartbeats have
not arrived for ``lease_timeout_s``. So the worker never writes the data file when its last
acknowledged heartbeat was *sent* that long ago (a frozen node, a stopped process, a manager
that is unreachable): periodic saves are skipped, and before the final save it asks for a
fresh acknowledgement first (no answer: no save, the last good save stays).

Exit code 0 after done, release, lost ownership or no work; 1 after a failure, an unreachable
manager, or an array the run never recorded (the task held nothing). A worker of a packed
allocation goes on with the next learner after a learner that was taken away or failed while
it ran (its allocation would idle otherwise); after a failure to set up (an initializer,
unpickling, the pool: perhaps its node's) it ends, as a task of its own does.

The task's log never ends the worker: a line it cannot write is dropped (``task_log``).
"""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from adaptive_runner.common.dataframes import DataFrameFile
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.common.task_identity import node_name, task_identity
from adaptive_runner.common.vocabulary import STOP_SIGNALS, DataFrameFormat, Event
from adaptive_runner.errors import (
    AdaptiveRunnerError,
    ManagerUnreachableError,
    ManagerUnresolvableError,
    UnknownTaskError,
)
from adaptive_runner.job.client import Client
from adaptive_runner.job.goal_watch import FollowedGoal
from adaptive_runner.job.task_log import JobLog, open_job_stream
from adaptive_runner.job.task_setup import TaskExecutor, TaskSetup

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Executor

    from adaptive_runner.common.function_store import StoredFunctions
    from adaptive_runner.common.protocol import Assignment
    from adaptive_runner.common.run_dir import RunConfig
    from adaptive_runner.common.task_identity import TaskIdentity
    from adaptive_runner.job.learner_runs import LearnerRun

T = TypeVar("T")
RELEASE_PATIENCE_S = 30.0  # how long a stopped worker tries to tell the manager
MAX_RETRY_DELAY_S = 30.0
CONFIRM_PATIENCE_S = 60.0  # at most this long for a heartbeat acknowledgement before a save
# The errors of a final save that may pass with time, so it is tried again for
# final_save_patience_s: space or a quota freed by others, a network file system's hiccup.
# Any other (a read-only file system, no permission, a path that is no directory, data that
# cannot be pickled) fails the learner at once: trying again would only cost the allocation.
PASSING_SAVE_ERRORS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
    }
)
# A task of an array the run has not recorded asks again for two job-manager rounds and this
# margin: an array whose submit command failed (or timed out, after up to a minute) although
# it queued is recorded when a later round finds its tag.
ADOPTION_MARGIN_S = 60.0


class _StopRequest:
    """Records the first stop signal; wakes the event loop once one is running."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event: asyncio.Event | None = None

    def install(self) -> None:
        """Catch the stop signals before the loop exists (claim and loading phases)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, _frame: self.request(signal.Signals(signum).name))

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """Route the stop signals through ``loop``; the event is set once a stop is wanted."""
        self._event = asyncio.Event()
        if self.reason is not None:
            self._event.set()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request, sig.name)
        return self._event

    def requested(self) -> bool:
        """Whether a stop signal came."""
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Ask the worker to save, release its learner and exit."""
        if self.reason is None:
            self.reason = reason
        if self._event is not None:
            self._event.set()


class _End(StrEnum):
    """How a learner's run ended, as far as this task is concerned."""

    DONE = "done"
    HANDED_BACK = "handed_back"  # a stage reached, learners wait at an earlier one: release
    STOPPED = "stopped"  # a stop signal: release the learner
    NOT_OWNER = "not_owner"  # another task holds it now: exit without saving
    FAILED = "failed"
    UNREACHABLE = "unreachable"  # the manager did not answer a heartbeat


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a learner's run ended, and the detail to report."""

    kind: _End
    detail: str = ""  # the stop signal's name, or the traceback of a failure


@dataclass
class _Task:
    """The array task we run in: who it is, its connection, setup and executor; runs learners."""

    run_dir: RunDir
    config: RunConfig
    group_index: int
    identity: TaskIdentity
    client: Client
    setup: TaskSetup
    executor: TaskExecutor
    stop: _StopRequest
    log: Any
    # The learners' stored functions, kept from one learner to the next that shares them;
    # made with the first learner (importing cloudpickle: not before a claim).
    stored: StoredFunctions | None = None

    def run_learners(self) -> int:
        """Claim and run learners until none is left, a stop or a failure; the exit code."""
        group = self.config.groups[self.group_index]
        # The node by its scheduler's name goes to the database (status, panel); the log
        # has the host name beside it.
        node, host, pid = node_name(os.environ), os.uname().nodename, os.getpid()
        finished = 0
        while self.stop.reason is None:
            claim_sent = time.monotonic()  # the claim's reply acknowledges us as the holder
            assignment = self.client.claim(
                host=node,
                pid=pid,
                group=self.group_index,
                array=self.identity.array_id,
                unknown_patience_s=2 * self.config.poll_interval_s + ADOPTION_MARGIN_S,
                give_up=self.stop.requested,  # cancelled while claiming: it holds nothing
            )
            if assignment is None and self.stop.requested():
                break
            if assignment is None:
                # After a first learner this is no outcome: the record keeps that learner's.
                self.log.info(
                    Event.NO_WORK if finished == 0 else Event.NO_MORE_WORK, host=host, pid=pid
                )
                return 0
            self.log.info(
                Event.STARTED,
                host=host,
                node=node,
                pid=pid,
                array=self.identity.array_id,
                index=self.identity.task_index,
                learner=assignment.learner,
                fname=assignment.fname,
                stage=assignment.stage + 1,  # as people count stages: "stage 1 of 2"
                group=self.group_index,
                executor=group.executor,
                cores=group.cores,
            )
            hold = _Hold(self, assignment, acked=claim_sent)
            code = hold.run()
            # A packed worker whose learner was taken away (cancelled, its lease expired) or
            # failed while it ran goes on with the next one: its allocation is not cancelled
            # for it, so its cores would idle until the allocation ends. A task of its own is
            # being cancelled, or ends on the failure (its exit state shows it).
            packed = self.identity.rank is not None
            if not (hold.done or hold.handed_back or (packed and (hold.taken or hold.failed))):
                return code
            if hold.done:
                finished += 1
            self.executor.after_learner()
        self.log.info(Event.STOPPED, reason=self.stop.reason, learners_done=finished)
        return 0


class _Hold:
    """One held learner (see the glossary), from loading to the final report."""

    def __init__(self, task: _Task, assignment: Assignment, *, acked: float) -> None:
        self.run_dir = task.run_dir
        self.config = task.config
        self.task = task
        self.setup = task.setup
        self.executor = task.executor
        self.assignment = assignment
        self.client = task.client
        self.stop = task.stop
        self.fname = Path(assignment.fname)
        self.log = task.log.bind(learner=assignment.learner)
        self.learner: Any = None
        self._run: LearnerRun | None = None  # while adaptive runs it, read it through this
        self._state: tuple[int, float | None] = (0, None)  # npoints, loss when last read
        self._saved_npoints = 0  # in the data file (none yet: no point to save either)
        self._writing: asyncio.Task[tuple[int, str | None]] | None = None  # the last save's write
        self._frames = (  # save_dataframe: the learner's DataFrame file
            DataFrameFile(self.fname, DataFrameFormat(self.config.dataframe_format))
            if self.config.save_dataframe
            else None
        )
        self._finishing = asyncio.Event()
        self._beat_now = asyncio.Event()  # send a heartbeat without waiting for log_interval_s
        self._abandoned = threading.Event()  # stop waiting for an unanswered heartbeat
        self._acked = acked  # when the last acknowledged heartbeat (or the claim) was sent
        self.done = False  # reached the goal and said so: the task may take another learner
        self.handed_back = False  # reached a stage, saved and released: the task claims again
        self.taken = False  # the manager gave the learner away: nothing of it was saved
        self.failed = False  # failed while it ran (not while loading), and said so
        self._reported = False  # the manager acknowledged the outcome

    def run(self) -> int:
        """Load, run and report; return the process exit code."""
        try:
            runner_kwargs = self.setup.prepare(self.log)  # initializers, before the first learner
            stored = self._stored()
            goal = self._load(stored)
            if self.stop.reason is not None:
                return self._report(_Outcome(_End.STOPPED, self.stop.reason))
            executor = self.executor.get(stored)
        except Exception:  # noqa: BLE001 - any error while loading is the learner's failure
            return self._report(_Outcome(_End.FAILED, traceback.format_exc()))
        loop = asyncio.new_event_loop()
        try:
            outcome = loop.run_until_complete(self._supervise(executor, runner_kwargs, goal))
            loop.run_until_complete(loop.shutdown_default_executor())
        except Exception:  # noqa: BLE001 - e.g. adaptive.Runner refusing the learner
            outcome = _Outcome(_End.FAILED, traceback.format_exc())
            if not self._fenced():
                loop.run_until_complete(self._save())
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)  # back to SIG_DFL, so catch them again:
            self.stop.install()
            loop.close()
        code = self._report(outcome)
        self.done = outcome.kind == _End.DONE and self._reported
        self.handed_back = outcome.kind == _End.HANDED_BACK and self._reported
        self.failed = outcome.kind == _End.FAILED and self._reported
        self.taken = outcome.kind == _End.NOT_OWNER
        return code

    def _stored(self) -> StoredFunctions:
        """The task's reader of learners and their stored functions."""
        from adaptive_runner.common.function_store import StoredFunctions  # noqa: PLC0415

        if self.task.stored is None:
            self.task.stored = StoredFunctions(self.run_dir)
        return self.task.stored

    def _load(self, stored: StoredFunctions) -> FollowedGoal:
        """Unpickle the learner and the goal; load the saved data."""
        from adaptive_runner.common.saving import load_data  # noqa: PLC0415

        # The pickles were written by this run's manager (cloudpickle; pickle reads them).
        self.learner = stored.learner(self.assignment.learner)
        stored.keep_last()  # a function the last learner had and this one lacks goes
        goal = FollowedGoal(self.run_dir.goal_file, self.learner, self.assignment.stage)
        goal.load()
        if self.fname.exists():
            started = time.monotonic()
            load_data(self.learner, self.fname)
            self._saved_npoints = self.learner.npoints
            self.log.info(
                Event.RESUMED,
                npoints=self.learner.npoints,
                seconds=round(time.monotonic() - started, 3),
            )
        self._state = (self.learner.npoints, None)
        return goal

    async def _supervise(
        self,
        executor: tuple[Executor, int] | None,
        runner_kwargs: dict[str, Any],
        goal: FollowedGoal,
    ) -> _Outcome:
        """Run the learner until the goal, a stop signal, lost ownership or an error."""
        from adaptive_runner.job.learner_runs import start_run, with_points  # noqa: PLC0415 - adaptive

        stopped = self.stop.attach(asyncio.get_running_loop())
        heartbeats = asyncio.create_task(self._heartbeats())
        saves = asyncio.create_task(self._periodic_saves())
        following = asyncio.create_task(self._follow_goal(goal))
        stop_wait = asyncio.create_task(stopped.wait())
        while True:  # one run per stage of a staged goal, as long as the manager lets us go on
            run = self._run = start_run(self.learner, runner_kwargs | {"goal": goal}, executor)
            ends: set[asyncio.Future[Any]] = {run.finished, heartbeats, stop_wait}
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            outcome = self._outcome(run.finished, heartbeats)
            if outcome.kind != _End.DONE or goal.last:
                break
            handed = await self._stage_reached(goal)
            if handed is not None:
                outcome = handed
                break
        if outcome.kind == _End.STOPPED:  # say what it was computing, in case it never ends
            outcome = _Outcome(outcome.kind, with_points(outcome.detail, run.pending_points()))
        for task in (saves, following, stop_wait):
            task.cancel()
        await asyncio.wait({saves, following, stop_wait})
        await run.stop()
        if outcome.kind == _End.NOT_OWNER:
            self._state = await self._read(_npoints_and_loss)
        else:
            outcome = await self._final_save(outcome, heartbeats)  # sets _state as saved
        self._finishing.set()  # no await since the save: no status line after it
        # A heartbeat in flight to a manager that is gone would wait its full patience:
        # none is needed any more, so it stops waiting within a second.
        self._abandoned.set()
        await asyncio.wait({heartbeats})
        if not heartbeats.cancelled():
            heartbeats.exception()  # retrieved: an abandoned heartbeat's error is expected
        return outcome

    async def _stage_reached(self, goal: FollowedGoal) -> _Outcome | None:
        """Tell the manager the learner reached ``goal``'s stage; None: go on with the next.

        Nothing is saved first: going on needs no save, and handing back saves after.
        """
        npoints, loss = await self._read(_npoints_and_loss)
        stage = goal.stage
        try:
            go_on = await asyncio.to_thread(
                self.client.stage_reached,
                self.assignment.learner,
                stage=stage,
                npoints=npoints,
                loss=loss,
            )
        except AdaptiveRunnerError as e:  # an unreachable manager: as a heartbeat's would
            return _Outcome(_End.UNREACHABLE, _format(e))
        self.log.info(  # stage 1 is the first, as the status counts them
            Event.STAGE_REACHED, stage=stage + 1, npoints=npoints, loss=loss, go_on=go_on
        )
        if go_on is None:
            return _Outcome(_End.NOT_OWNER)
        described = goal.description
        goal.advance()
        if go_on:
            return None
        return _Outcome(
            _End.HANDED_BACK,
            f"reached {described}; learners of its group wait at an earlier stage",
        )

    async def _final_save(self, outcome: _Outcome, heartbeats: asyncio.Task[bool]) -> _Outcome:
        """Save before reporting ``outcome``, while this task provably still holds the learner.

        A save that fails with an error that may pass (a full disk: ``PASSING_SAVE_ERRORS``)
        is retried with back-off, since the data is only in memory. One that fails for good
        (a read-only file system, no permission), or keeps failing, fails the learner with the
        error: one failure towards ``max_fails``, so a file that can never be written does
        not take one job after another for ever. Its last good save stays, and the next task
        resumes from it.
        """
        patience = (
            self.config.final_save_patience_s
            if outcome.kind in (_End.DONE, _End.HANDED_BACK)
            else RELEASE_PATIENCE_S
        )
        deadline = time.monotonic() + patience
        delay = 1.0
        while True:
            lost = await self._confirm_hold(heartbeats)
            if lost is not None:
                return lost
            error = await self._save()
            if error is None:
                return outcome
            if outcome.kind == _End.FAILED:
                return outcome  # the function's own error is the reason; the save is secondary
            passing = getattr(error, "errno", None) in PASSING_SAVE_ERRORS
            if not passing or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_RETRY_DELAY_S)
        how = f"kept failing for {patience:g} s" if passing else "failed (not tried again)"
        return _Outcome(
            _End.FAILED,
            f"the final save to {self.fname} {how}: {type(error).__name__}: {error}; its last "
            "good save stays",
        )

    def _fenced(self) -> bool:
        """Whether the manager may have given the learner away: no ack within the lease."""
        return time.monotonic() - self._acked >= self.config.lease_timeout_s

    async def _confirm_hold(self, heartbeats: asyncio.Task[bool]) -> _Outcome | None:
        """None when a heartbeat was acknowledged within the lease (asking now if need be).

        Otherwise the outcome to report instead: another task holds the learner (no save),
        or the manager did not answer (no save: we cannot know who holds it).
        """
        deadline = time.monotonic() + min(CONFIRM_PATIENCE_S, self.config.lease_timeout_s)
        if self._fenced():
            self._beat_now.set()
            self.log.warning(Event.SAVE_FENCED, since_ack_s=round(time.monotonic() - self._acked))
        while self._fenced():
            if heartbeats.done():
                if heartbeats.exception() is None and not heartbeats.result():
                    return _Outcome(_End.NOT_OWNER)
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if not self._fenced():
            return None
        self._abandoned.set()  # the heartbeat thread stops waiting within a second
        return _Outcome(
            _End.UNREACHABLE,
            "no heartbeat acknowledged for "
            f"{time.monotonic() - self._acked:.0f} s (lease {self.config.lease_timeout_s:g} s): "
            "not saving, another task may hold the learner now",
        )

    def _outcome(self, finished: asyncio.Future[None], heartbeats: asyncio.Task[bool]) -> _Outcome:
        if heartbeats.done():
            if heartbeats.exception() is None and not heartbeats.result():
                return _Outcome(_End.NOT_OWNER)
            error = heartbeats.exception()
            if isinstance(error, ManagerUnreachableError):
                return _Outcome(_End.UNREACHABLE, _format(error))
            if error is not None:
                return _Outcome(_End.FAILED, _format(error))
        if finished.done():
            if finished.cancelled():
                return _Outcome(_End.FAILED, "the adaptive runner was cancelled")
            error = finished.exception()
            return _Outcome(_End.DONE) if error is None else _Outcome(_End.FAILED, _format(error))
        return _Outcome(_End.STOPPED, self.stop.reason or "stop requested")

    async def _follow_goal(self, goal: FollowedGoal) -> None:
        """Take up the goal a rerun writes, every log interval (a ``stat``, in a thread).

        Not part of the heartbeat: a rerun restarts the managers, and the heartbeats wait
        for the new one meanwhile, while the goal file is already there to read.
        """
        while True:
            await asyncio.sleep(self.config.log_interval_s)
            try:
                if await asyncio.to_thread(goal.follow):
                    self.log.info(Event.GOAL_CHANGED, goal=goal.description)
            except Exception as e:  # noqa: BLE001 - keep the goal we have; try again next time
                self.log.warning(Event.GOAL_CHANGED, error=_format(e), goal=goal.description)

    async def _heartbeats(self) -> bool:
        """Log status and heartbeat every log_interval_s; False once we lost the learner."""
        from adaptive_runner.job.usage import ProcessUsage  # noqa: PLC0415

        usage = ProcessUsage()
        usage.sample()  # cpu_percent counts from the first call
        start_npoints, started = self._state[0], time.monotonic()
        while True:
            await self._next_beat()
            if self._finishing.is_set():
                return True
            npoints, loss = await self._read(_npoints_and_loss)
            cpu, memory = await asyncio.to_thread(usage.sample)  # it reads /proc: not in the loop
            elapsed = time.monotonic() - started
            self.log.info(
                Event.STATUS,
                npoints=npoints,
                loss=loss,
                npoints_per_s=round((npoints - start_npoints) / elapsed, 3) if elapsed else 0.0,
                elapsed_s=round(elapsed, 3),
                cpu_percent=round(cpu, 1),
                memory_bytes=memory,
            )
            # In a thread: an unreachable manager must not stall the points or the signals.
            sent = time.monotonic()
            held = await asyncio.to_thread(
                self.client.heartbeat,
                self.assignment.learner,
                npoints=npoints,
                loss=loss,
                cpu=cpu,
                memory=memory,
                give_up=self._abandoned.is_set,
            )
            if not held:
                return False
            self._acked = max(self._acked, sent)

    async def _next_beat(self) -> None:
        """Wait for the next heartbeat's time, a request for one now, or the end."""
        waits = {asyncio.create_task(e.wait()) for e in (self._finishing, self._beat_now)}
        await asyncio.wait(waits, timeout=self.config.log_interval_s, return_when="FIRST_COMPLETED")
        for waiting in waits:
            waiting.cancel()
        self._beat_now.clear()

    async def _periodic_saves(self) -> None:
        while True:
            await asyncio.sleep(self.config.save_interval_s)
            if self._fenced():  # the learner may be another task's now: never overwrite it
                self._beat_now.set()
                self.log.warning(
                    Event.SAVE_FENCED, since_ack_s=round(time.monotonic() - self._acked)
                )
            else:
                await self._save()

    async def _read(self, fn: Callable[[Any], T]) -> T:
        """``fn(learner)``, called while adaptive does not change the learner."""
        if self._run is None:
            return fn(self.learner)
        return await asyncio.wrap_future(self._run.read(fn))

    async def _save(self) -> Exception | None:
        """Save the learner's data unless unchanged since the last save; None or the error.

        A failure is logged and returned, never raised: the run goes on, the next save may
        work (a full disk gets space again), and the final one decides.
        """
        from adaptive_runner.common.saving import pickle_data, write_data  # noqa: PLC0415

        if self._writing is not None:  # a cancelled save's thread may still write: let it end
            await asyncio.wait({self._writing})
        saved, frames = self._saved_npoints, self._frames
        started = time.monotonic()
        try:
            # Only the pickling (and to_dataframe) holds the learner; compressing and writing,
            # in a thread of their own, hold neither the learner nor the event loop.
            (npoints, loss), blob, frame = await self._read(
                lambda lrn: (
                    _npoints_and_loss(lrn),
                    None if lrn.npoints == saved else pickle_data(lrn),
                    None if lrn.npoints == saved or frames is None else frames.take(lrn),
                )
            )
            self._state = (npoints, loss)  # what the report says is what the file holds
            if blob is None:
                return None

            def write() -> tuple[int, str | None]:  # the data file first: it is what resumes
                size = write_data(blob, self.fname)
                return size, None if frames is None or frame is None else frames.write(frame)

            self._writing = asyncio.create_task(asyncio.to_thread(write))
            size, frame_error = await asyncio.shield(self._writing)
        except Exception as e:
            self.log.exception(Event.SAVE_FAILED, fname=str(self.fname), npoints=self._state[0])
            return e
        if frame_error is not None and frames is not None:  # a convenience: the run goes on
            self.log.warning(Event.DATAFRAME_FAILED, fname=str(frames.path), error=frame_error)
        self._saved_npoints = npoints
        self.log.info(
            Event.SAVED, npoints=npoints, seconds=round(time.monotonic() - started, 3), bytes=size
        )
        return None

    def _report(self, outcome: _Outcome) -> int:
        """Log the outcome, tell the database manager, return the exit code."""
        npoints, loss = self._state
        if outcome.kind in (_End.FAILED, _End.UNREACHABLE):
            self.log.error(Event.FAILED, npoints=npoints, traceback=outcome.detail)
            if outcome.kind == _End.UNREACHABLE:
                return 1  # saved; the job manager finds this task gone and resubmits
        elif outcome.kind == _End.DONE:
            self.log.info(Event.DONE, npoints=npoints, loss=loss)
        elif outcome.kind == _End.HANDED_BACK:
            self.log.info(Event.HANDED_BACK, reason=outcome.detail, npoints=npoints, loss=loss)
        else:
            reason = outcome.detail or outcome.kind
            self.log.info(Event.RELEASED, reason=reason, npoints=npoints)
        if self.stop.requested():
            # Told to stop: the scheduler kills us after its grace period anyway, so a
            # manager that is down gets a short wait, not the client's full patience.
            self.client.patience_s = min(self.client.patience_s, RELEASE_PATIENCE_S)
        try:
            self._tell(outcome)
        except AdaptiveRunnerError:
            # The data is saved; the job manager will find this task gone and resubmit.
            self.log.exception(Event.REPORT_FAILED, outcome=outcome.kind)
            return 1
        self._reported = True
        return 1 if outcome.kind == _End.FAILED else 0

    def _tell(self, outcome: _Outcome) -> None:
        """Tell the database manager how the hold ended (not_owner: nothing to tell)."""
        learner = self.assignment.learner
        npoints, loss = self._state
        if outcome.kind == _End.FAILED:
            self.client.fail(learner, error=outcome.detail)
        elif outcome.kind == _End.DONE:
            self.client.done(learner, npoints=npoints, loss=loss)
        elif outcome.kind == _End.HANDED_BACK:
            self.client.hand_back(learner, npoints=npoints)
        elif outcome.kind == _End.STOPPED:
            self.client.release(learner, reason=outcome.detail, npoints=npoints)


def _npoints_and_loss(learner: Any) -> tuple[int, float | None]:
    return learner.npoints, _finite(learner.loss())


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _format(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one array task on RUN_DIR; return the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    run_dir_arg, *rest = args or [""]
    if not run_dir_arg or len(rest) > 1 or not all(arg.isdigit() for arg in rest):
        sys.stderr.write("usage: python -m adaptive_runner.worker RUN_DIR [GROUP]\n")
        return 2
    stop = _StopRequest()
    stop.install()
    run_dir = RunDir(run_dir_arg)
    config = run_dir.read_config()
    group_index = int(rest[0]) if rest else 0
    group = config.groups[group_index]
    identity = task_identity(group.scheduler, os.environ)
    stream = open_job_stream(run_dir.task_log(identity.task_id))
    if identity.rank is not None:
        # A packed worker shares its allocation's output file: its own output (the learner's
        # prints, tracebacks) goes to its own log, where kill_on_error can tell whose it is.
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(stream.fileno(), sys.stdout.fileno())
        os.dup2(stream.fileno(), sys.stderr.fileno())
    # A fatal signal (SIGSEGV, SIGABRT, ...) in the learner's function kills the process before
    # any event is written: the Python stack then goes to the task's log instead.
    faulthandler.enable(stream, all_threads=True)
    log = JobLog(stream, context={"task": identity.task_id})
    setup = TaskSetup(run_dir)
    executor = TaskExecutor(group, setup)
    try:
        with Client(run_dir, identity.task_id) as client:
            task = _Task(run_dir, config, group_index, identity, client, setup, executor, stop, log)
            return task.run_learners()
    except ManagerUnresolvableError as e:  # before the first claim: one line says it all
        log.error(Event.MANAGER_UNRESOLVABLE, error=str(e))  # noqa: TRY400 - no traceback: one line
        return 1
    except ManagerUnreachableError:
        log.exception(Event.MANAGER_UNREACHABLE)
        return 1
    except UnknownTaskError:  # not one of the run's tasks; it never held a learner
        log.exception(Event.UNKNOWN_TASK)
        return 1
    finally:
        executor.shutdown()
        faulthandler.disable()
        stream.close()
