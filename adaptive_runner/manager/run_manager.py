"""RunManager: the user's handle on a run; wires run directory, database and job managers."""

from __future__ import annotations

import dataclasses
import html
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

import cloudpickle
import structlog

from adaptive_runner.common import goals
from adaptive_runner.common.run_dir import RunConfig, RunDir, RunLock
from adaptive_runner.common.validation import plain_text, positive_seconds
from adaptive_runner.errors import ConfigError, ManagerDiedError, RunStateError, RunStuckError
from adaptive_runner.manager.database_manager import DatabaseManager, interface_address
from adaptive_runner.manager.growth import added, in_run_order
from adaptive_runner.manager.job_manager import JobManager
from adaptive_runner.manager.logs import log_managers_to, stop_logging_managers_to
from adaptive_runner.manager.run import Retried, Run, remove_files
from adaptive_runner.manager.run_setup import add_to_run, create_run, rewrite_run
from adaptive_runner.manager.spec import Group, RunOptions, RunSpec
from adaptive_runner.manager.writable import check_writable
from adaptive_runner.state.database import Database, LearnerState

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import timedelta

    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.status.report import InfoText
    from adaptive_runner.widgets.panel import StatusPanel


LOOPBACK = "127.0.0.1"
REPLACE_WAIT_S = 60.0  # overwrite=True waits this long at most for the old run's jobs to end
WAIT_SLICE_S = 0.5  # wait() looks this often whether a manager thread ended on an error
STUCK_AFTER_S = 600.0  # wait() gives up on a run whose every task waited this long for good

# Global state, this module's only: the RunManager of this process that runs each run's
# managers, by run directory, until it stops them. Running the same notebook cell again makes
# a new RunManager while the old one (no longer in any variable: held here, or its managers
# would run on with nobody to stop them) still holds the run; the new one stops it.
_RUNNING: dict[Path, RunManager] = {}

log = structlog.get_logger("adaptive_runner.run_manager")


class RunManager(Run):
    """Run ``learners`` to ``goal`` on ``scheduler``'s array tasks, one learner at a time each.

    A :class:`Run` (status, problems, cancel, retry, logs, learners) that also starts, waits
    for and stops the run's managers.

    Parameters
    ----------
    scheduler
        ``Local(...)``, ``SLURM(...)``, ``PBS(...)`` or ``SSH(...)``.
    learners
        The adaptive learners; each is cloudpickled once into the run directory.
    fnames
        One file per learner where its data is saved (adaptive's format; resume reads it).
    goal
        When a learner is finished: a callable ``goal(learner) -> bool``, an ``int`` (points),
        a ``float`` (loss), a ``timedelta`` (run time per job), a ``datetime`` (end time), or
        ``None``: until ``learner.done()``, for SequenceLearners (and BalancingLearners of
        them) only. A list of such goals (or ``Stages(...)``) is a progressive sweep:
        ``[25, 200]`` takes every learner of a group to 25 points before any goes on to 200.
    run_dir
        Where the run keeps its state. An existing run with the same learners and fnames is
        continued with this call's code and settings (the fix-and-rerun loop): the learners
        are pickled again, so those not done yet run the new code and resume from their
        data files; goal, intervals and scheduler options are adopted (the changes logged).
        Learners and fnames appended after the run's own grow the run (see :meth:`add`).
    max_simultaneous_jobs
        At most this many array tasks queued or running at once.
    save_interval
        Seconds (or a timedelta) between two saves of a learner in its job.
    log_interval
        Seconds between two heartbeats/status lines of a job.
    max_fails
        A learner whose jobs crashed, vanished or raised this many times is marked failed.
    lease_timeout
        A job silent for this long loses its learner; default ``max(120, 5 * log_interval)``.
    dependencies
        ``{i: [j, k]}``: learner ``i`` starts only after ``j`` and ``k`` are done.
    poll_interval
        Seconds between two looks at the scheduler's queue; default per scheduler.
    overwrite
        Replace an existing run directory with a fresh run state (every learner waiting,
        attempts 0), whether its learners differ or not; its jobs still queued or running are
        cancelled first. The data files are the user's and stay, so learners resume from
        them; :meth:`remove_data` deletes them.
    claim_timeout
        A job running this long without asking the database manager for a learner cannot
        reach it (or hangs before Python starts): it is cancelled and counts as a start
        failure of its group. After ``max_fails`` arrays in a row whose jobs all ended
        without a claim, the group's waiting learners fail with the jobs' own error lines.
    kill_on_error
        Cancel a job whose own output (the non-event lines of ``logs/<task>.log``) shows one
        of these plain substrings and count a failure for its learner, with the line as the
        reason. The
        default, ``DEFAULT_KILL_PATTERNS``, is ``"srun: error:"``, ``"MemoryError"``,
        ``"oom-kill"`` and ``"Out of memory"``; ``None`` turns this off.
    retry_failed
        On an existing run, put its failed learners (and their dependents that failed with
        them) back to waiting, attempts and failures reset, history kept. Cancelled
        learners stay cancelled (see :meth:`retry`).
    check_goal_on_start
        Mark done, without a job, each waiting learner whose data file already meets the
        goal (one load per learner with a data file, progress in the log).
    host
        The address or host name of this machine that the jobs connect to (written into
        run.json's url). Default: this machine's host name (``socket.gethostname()``),
        or 127.0.0.1 on the Local scheduler. Give it when the compute nodes reach this
        machine by another name or address, e.g. that of its high-speed network.
    interface
        Instead of ``host``: a network interface of this machine, e.g. ``"ib0"``, whose IPv4
        address the jobs connect to (looked up at :meth:`start`). The managers listen on
        all interfaces (on the Local scheduler: loopback only) whatever is chosen.
    runner_kwargs
        More arguments of adaptive's Runner in each job, e.g. ``{"retries": 3}``. Those the
        jobs set themselves (the goal's, ``executor``, ``ntasks``, ``log``,
        ``shutdown_executor``) are refused, and so are values that cannot be pickled.
    initializers
        Callables without arguments that each job runs once before its first learner, and
        each pool process (``process-pool``, ``loky``, ``mpi4py``) before its first point:
        to set an environment variable, fill a cache, configure a library. One that raises
        fails the job's learner with its traceback (counted towards ``max_fails``).
    save_dataframe
        Each save of a learner's data also writes its ``to_dataframe()`` beside the data
        file, as ``<fname>.dataframe.parquet`` (or ``.pickle``); :meth:`load_dataframes`
        reads them all. Off by default: it costs each save a copy of the learner's data.
        Switched on for learners that saved data before (a rerun, or data files that exist),
        :meth:`start` first writes each missing DataFrame file (and each one older than its
        data file) from the data file, for every learner no job holds: no point is computed
        again (one load per such learner, progress in the log).
    dataframe_format
        ``"parquet"`` (needs pyarrow) or ``"pickle"`` (pandas' ``to_pickle``).

    """

    def __init__(
        self,
        scheduler: Scheduler,
        learners: Sequence[Any],
        fnames: Sequence[str | os.PathLike[str]],
        *,
        goal: goals.GivenGoal,
        run_dir: str | os.PathLike[str] = "runs/default",
        dependencies: Mapping[int, Sequence[int]] | None = None,
        overwrite: bool = False,
        retry_failed: bool = True,
        check_goal_on_start: bool = True,
        **options: Unpack[RunOptions],
    ) -> None:
        if len(learners) != len(fnames):
            raise ConfigError(
                f"learners and fnames must have the same length, got {len(learners)} learners "
                f"and {len(fnames)} fnames"
            )
        spec = RunSpec.check(
            [(scheduler, learners, fnames)], goal=goal, dependencies=dependencies, **options
        )
        self._set_up(spec, run_dir, overwrite, retry_failed, check_goal_on_start)

    def _set_up(
        self,
        spec: RunSpec,
        run_dir: str | os.PathLike[str],
        overwrite: bool,  # noqa: FBT001 - private; the public constructors name them
        retry_failed: bool,  # noqa: FBT001
        check_goal_on_start: bool,  # noqa: FBT001
    ) -> None:
        # Its path is in every job script: a newline there breaks #SBATCH and #PBS lines.
        plain_text(str(Path(run_dir).absolute()), "run_dir")
        super().__init__(run_dir)
        self.spec = spec
        self.overwrite = overwrite
        self.retry_failed = retry_failed
        self.check_goal_on_start = check_goal_on_start
        self._short_of_goal: frozenset[int] = frozenset()  # checked at this start: not again
        self.database_manager: DatabaseManager | None = None
        self.job_manager: JobManager | None = None
        self._lock = RunLock(self.run_dir)  # manager.lock, held while our managers run

    @classmethod
    def from_groups(
        cls,
        groups: Sequence[Group],
        *,
        goal: goals.GivenGoal,
        run_dir: str | os.PathLike[str] = "runs/default",
        dependencies: Mapping[int, Sequence[int]] | None = None,
        overwrite: bool = False,
        retry_failed: bool = True,
        check_goal_on_start: bool = True,
        **options: Unpack[RunOptions],
    ) -> RunManager:
        """A run whose learners need different resources: one array per group.

        ``groups`` is a list of ``(scheduler, learners, fnames)``; the other arguments are
        those of :class:`RunManager`. Learners are numbered group by group, in the order
        given; ``max_simultaneous_jobs`` counts the jobs of all groups. Learners appended to
        the groups of an existing run come after its learners, whatever their group: after
        :meth:`start`, :attr:`fnames` is in the run's order.
        """
        spec = RunSpec.check(groups, goal=goal, dependencies=dependencies, **options)
        return cls._made(spec, run_dir, overwrite, retry_failed, check_goal_on_start)

    @classmethod
    def _made(
        cls,
        spec: RunSpec,
        run_dir: str | os.PathLike[str],
        overwrite: bool,  # noqa: FBT001 - private; the public constructors name them
        retry_failed: bool,  # noqa: FBT001
        check_goal_on_start: bool,  # noqa: FBT001
    ) -> RunManager:
        """A RunManager of a checked ``spec`` (what the public constructors end in)."""
        self = cls.__new__(cls)
        self._set_up(spec, run_dir, overwrite, retry_failed, check_goal_on_start)
        return self

    @property
    def fnames(self) -> list[str]:
        """The learners' data files, absolute; ``fnames[i]`` is learner ``i``'s (after start)."""
        return list(self.spec.fnames)

    @property
    def schedulers(self) -> list[Scheduler]:
        """The schedulers of the run's groups, as given."""
        return list(self.spec.schedulers)

    @property
    def goal(self) -> goals.Goal:
        """When a learner is done (checked)."""
        return self.spec.goal

    # -- starting --------------------------------------------------------------------------

    def start(self) -> RunManager:
        """Create (or continue, or replace) the run directory, start both managers, return.

        The managers run in background threads, so this works in Jupyter and in scripts.
        An earlier RunManager of this process that still runs this run's managers (the same
        cell, run again) is stopped first; one in another process is refused.
        """
        if self.job_manager is not None:
            raise ConfigError(
                "this RunManager has started already: wait() for it, or stop() it and make a "
                "new RunManager (or RunManager.resume(run_dir)) to start again"
            )
        previous = _RUNNING.get(self.run_dir.path)
        if previous is not None and previous is not self:
            log.info("stopping the managers this process started earlier for this run")
            previous.stop()
        self._check_places()  # before anything is written
        url_host = self._url_host()  # an unknown interface, too
        if self.run_dir.exists():
            existing = self.run_dir.read_config()
            if self.overwrite:
                self._replace()
            else:
                first = self._in_run_order(existing)
                self._locked(lambda: self._rerun(existing, first))
        else:
            create_run(self.run_dir, self.spec, replace=False)
        if self.check_goal_on_start:
            self._locked(lambda: self.complete_reached(self.goal, skip=self._short_of_goal))
        if self.spec.save_dataframe:  # after complete_reached: the learners it just finished
            self._locked(self._write_missing_dataframes)
        self._start_managers(url_host)
        return self

    def _locked(self, step: Callable[[], object]) -> None:
        """Do ``step`` holding manager.lock and logging to manager.log (both kept after).

        The lock comes first: another manager may be serving the run. On an error both go.
        """
        self._lock.acquire()
        try:
            log_managers_to(self.run_dir.path / "manager.log")
            step()
        except BaseException:
            self.stop()
            raise

    def _replace(self) -> None:
        """``overwrite=True``: cancel the old run's jobs, then a fresh run directory in place.

        The old jobs would write to the same data files and run-directory paths as the new
        run's, so their end is awaited (at most ``REPLACE_WAIT_S``; then a warning).
        """
        self._lock.acquire()
        try:
            try:
                self._cancel_replaced()
            except RunStateError as e:  # what the advice for a damaged state leads to
                log.warning(
                    "overwrite: the old run's state cannot be read, so its jobs are not known "
                    "(its managers cancelled those queued when they found the state gone)",
                    error=str(e),
                )
            create_run(self.run_dir, self.spec, replace=True)
        finally:
            self._lock.release()  # a lock on the replaced directory's file

    def _cancel_replaced(self) -> None:
        """Cancel the old run's jobs and wait for them to end (``REPLACE_WAIT_S`` at most)."""
        Run.cancel(self)  # no round to wait for: our managers do not run
        log.info(
            "overwrite: cancelled the old run's jobs; waiting for them to end",
            at_most_s=REPLACE_WAIT_S,
        )
        deadline = time.monotonic() + REPLACE_WAIT_S
        while (active := self.active_tasks()) and time.monotonic() < deadline:
            time.sleep(0.2)  # tasks still exiting write into the run directory's paths
        if active:
            log.warning("jobs of the replaced run are still active", tasks=active)

    def _url_host(self) -> str:
        """The host in the url the jobs connect to (looks the interface or the host up: I/O)."""
        if self.spec.host is not None:
            return _resolvable(self.spec.host)
        if self.spec.interface is not None:
            return interface_address(self.spec.interface)
        return LOOPBACK if self._local_only() else socket.gethostname()

    def _check_places(self) -> None:
        """Refuse a run whose data files cannot be written, or whose jobs could not run.

        The data files' directories first (cheap, and a run whose learners can never be saved
        would take a job per learner for ever), then each group's scheduler (a bad partition,
        a host that does not answer, a path not shared).
        """
        check_writable(self.spec.fnames)
        for group, scheduler in enumerate(self.schedulers):
            scheduler.check()
            scheduler.check_shared(self._shared_paths(group))

    def _shared_paths(self, group: int) -> dict[str, Path]:
        """What ``group``'s tasks read and write, by name: the run directory and its fnames."""
        fnames = zip(self.spec.fnames, self.spec.learner_groups, strict=True)
        return {
            "run_dir": self.run_dir.path,
            **{f"fnames[{i}]": Path(f) for i, (f, g) in enumerate(fnames) if g == group},
        }

    def _local_only(self) -> bool:
        return all(s.bind_host == LOOPBACK for s in self.spec.schedulers)

    def _in_run_order(self, existing: RunConfig) -> int:
        """Number this object's learners as the run in its directory does; its learner count.

        The run's learners keep their indices, learners appended to the cell join after
        them (:func:`growth.in_run_order`, which refuses a different run).
        """
        with self._open() as db:
            fnames = db.fnames()
            groups = db.learner_groups()
            dependencies = db.dependencies()
        self.spec = in_run_order(
            self.spec,
            existing,
            run_dir=self.run_dir.path,
            fnames=fnames,
            groups=groups,
            dependencies=dependencies,
        )
        return len(fnames)

    def _rerun(self, existing: RunConfig, first: int) -> None:
        """Continue an existing run with this call's learners, goal and settings.

        Learners from index ``first`` on are new: the run grows by them. The pickles, goal
        and run.json are rewritten (see :func:`run_setup.rewrite_run`), so
        :meth:`load_learners` gives every learner the current code, and running jobs follow
        the new goal from their next heartbeat. A goal that may ask for more than the old one
        puts the done learners short of it back to waiting (:meth:`Run.reopen_unreached`).
        """
        old_goal = self.run_dir.goal_file.read_bytes()
        changed = rewrite_run(
            self.run_dir, self.spec, existing, first=first, may_prune=self._no_task_active
        )
        # What changed since the last session (goal, options, intervals), when anything did.
        details = {"changed": changed} if changed else {}
        log.info("run continued with new code", run_dir=str(self.run_dir.path), **details)
        if old_goal != self.run_dir.goal_file.read_bytes() and goals.may_need_more(
            _unpickled_goal(old_goal), self.spec.goal
        ):
            reopened = self.reopen_unreached(self.spec.goal, check=self.check_goal_on_start)
            self._short_of_goal = frozenset(reopened if self.check_goal_on_start else ())
        self.resume_paused()  # a whole-run cancel was a pause
        if self.retry_failed:
            put_back = Run.retry(self)  # the managers start after this
            if put_back:
                log.info("failed learners back to waiting", learners=len(put_back))

    def _no_task_active(self) -> bool:
        """Whether no task of the run is queued or running (function files may go then)."""
        active = self.active_tasks()
        if active:
            log.info(
                "function files no learner names any more kept: tasks of the run are active "
                "(a later rerun removes them)",
                tasks=len(active),
            )
        return not active

    def _start_managers(self, url_host: str) -> None:
        self._lock.acquire()
        try:
            self._start_locked_managers(url_host)
        except BaseException:
            self.stop()  # whatever started, and the lock
            raise
        log.info(
            "run started",
            run_dir=str(self.run_dir.path),
            learners=len(self.spec.learners),
            goal=goals.describe_goal(self.spec.goal),
            schedulers=[s.name for s in self.spec.schedulers],
            **self.status(),
        )

    def _start_locked_managers(self, url_host: str) -> None:
        log_managers_to(self.run_dir.path / "manager.log")
        _RUNNING[self.run_dir.path] = self
        spec = self.spec
        host = LOOPBACK if self._local_only() else "0.0.0.0"  # noqa: S104 - other nodes; CURVE
        self.database_manager = DatabaseManager(
            self.run_dir,
            bind_host=host,
            url_host=url_host,
            # Each worker of a packed allocation is a connection of its own.
            expected_jobs=spec.max_simultaneous_jobs * max(s.packed or 1 for s in spec.schedulers),
        )
        url = self.database_manager.start()
        config = self.run_dir.read_config()
        self.run_dir.write_config(dataclasses.replace(config, url=url))
        self.job_manager = JobManager(
            self.run_dir,
            list(spec.schedulers),
            max_simultaneous_jobs=spec.max_simultaneous_jobs,
            lease_timeout_s=spec.lease.total_seconds(),
            poll_interval_s=spec.poll.total_seconds(),
            max_fails=spec.max_fails,
            claim_timeout_s=spec.claim_timeout.total_seconds(),
            url=url,
            kill_on_error=spec.kill_on_error,
        )
        self.database_manager.on_change = self.job_manager.wake  # act within a second
        self.job_manager.start()

    # -- resuming --------------------------------------------------------------------------

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> RunManager:
        """The run in ``run_dir`` as run.json and state.sqlite describe it, managers not started.

        The learners are unpickled, so their functions' modules must be importable; to
        watch and steer a run without them, use :class:`adaptive_runner.Run`.
        """
        rd = RunDir(run_dir)
        config = Run(rd.path).config()  # a missing state.sqlite: said as Run and the CLI say it
        with Database.open(rd.database) as db:
            fnames = [row.fname for row in db.learners()]
            learner_groups = db.learner_groups()
            dependencies = db.dependencies()
        spec = RunSpec.read(
            rd, config, fnames=fnames, learner_groups=learner_groups, dependencies=dependencies
        )
        return cls._made(
            spec, rd.path, overwrite=False, retry_failed=True, check_goal_on_start=True
        )

    @classmethod
    def resume(cls, run_dir: str | os.PathLike[str]) -> RunManager:
        """Continue the run in ``run_dir`` (e.g. after a kernel restart) and return it started.

        Jobs still running keep their learners; they reconnect to the new database manager.
        A run cancelled as a whole continues; on a finished run this only reports that
        everything is done.
        """
        self = cls.open(run_dir)
        self._locked(self.resume_paused)  # a whole-run cancel was a pause
        if self.finished():
            self.stop()  # the lock
            return self
        self._locked(self._check_places)  # refused: the lock goes too
        self._start_managers(self._url_host())
        return self

    # -- watching and steering -------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the run does not go on now ([] when all is well), in words.

        First a manager whose thread ended on an error (``"job manager stopped: ..."``, see
        :meth:`dead_managers`), then why its jobs do not start or its submissions fail (also
        shown by the panel and ``adaptive-runner status``); failed learners carry their own
        reason in the ``error`` column. A state.sqlite that cannot be read is a
        :class:`~adaptive_runner.errors.RunStateError`, as for :class:`Run`, unless a manager
        of this object stopped: then it is a problem too (said once, by the manager that
        found it).
        """
        died = self.dead_managers()
        dead = [e.summary for e in died]
        try:
            return dead + super().problems()
        except RunStateError as e:
            if not died:
                raise
            said = any(isinstance(m.error, RunStateError) for m in died)
            return dead if said else [*dead, str(e)]

    def status(self) -> dict[str, int]:
        """Learners per state, from state.sqlite.

        When the file cannot be read and a manager of this object has stopped on an error
        (the state is gone, see :meth:`problems`), raises that manager's
        :class:`~adaptive_runner.errors.ManagerDiedError`, with the file's error as its cause.
        """
        try:
            return super().status()
        except RunStateError as e:
            dead = self.dead_managers()
            if not dead:
                raise
            raise dead[0] from e

    def dead_managers(self) -> list[ManagerDiedError]:
        """The managers of this object whose thread ended on an error (what :meth:`wait` raises).

        A dead manager stays dead: the run goes on after :meth:`stop` and :meth:`resume`.
        """
        managers = (("job manager", self.job_manager), ("database manager", self.database_manager))
        return [
            ManagerDiedError(name, manager.died)
            for name, manager in managers
            if manager is not None and manager.died is not None
        ]

    def wait(
        self,
        timeout: float | None = None,
        *,
        stuck_after: float | timedelta | None = STUCK_AFTER_S,
    ) -> bool:
        """Block until every learner is done, failed or cancelled; True if all are done.

        Returns False as well when ``timeout`` seconds pass first, or when the managers are
        stopped meanwhile. Raises :class:`~adaptive_runner.errors.ManagerDiedError` as soon as
        a manager thread has ended on an error, instead of waiting for a run that cannot
        finish: the managers are stopped first (jobs keep running), and :meth:`resume`
        continues the run. Raises :class:`~adaptive_runner.errors.RunStuckError` when every
        task of the run has waited in the queue for ``stuck_after`` (seconds or a timedelta;
        default 10 minutes) for a reason no other job's end lifts, none running (the same
        reasons as :meth:`problems`): the jobs stay queued and the managers go on; the error
        says how to change the options. ``stuck_after=None`` waits on regardless. Waiting on
        a RunManager that does not run the run's managers (not started, or refused) is an
        error.
        """
        stuck_s = None if stuck_after is None else positive_seconds(stuck_after, "stuck_after")
        if self.job_manager is None and not self.finished():
            raise ConfigError(
                f"this RunManager does not run the managers of {self.run_dir.path}: call "
                "start(), or RunManager.resume(run_dir); adaptive_runner.Run(run_dir) watches "
                "a run that another process serves"
            )
        jm = self.job_manager
        deadline = None if timeout is None else time.monotonic() + timeout
        while jm is not None:
            left = None if deadline is None else deadline - time.monotonic()
            if jm.wait(WAIT_SLICE_S if left is None else max(0.0, min(WAIT_SLICE_S, left))):
                break
            if dead := self.dead_managers():
                self.stop()
                raise dead[0] from dead[0].error
            stuck = jm.stuck_for()
            if stuck_s is not None and stuck is not None and stuck >= stuck_s:
                raise RunStuckError(stuck, super().problems())
            if not jm.running or (left is not None and left <= WAIT_SLICE_S):
                return False
        self.stop()
        counts = self.status()
        return counts[LearnerState.DONE] == sum(counts.values())

    # A Run gives text by default; a RunManager, which runs the managers, the panel.
    @overload  # type: ignore[override]
    def info(
        self, *, refresh_interval: float | timedelta = ..., format: Literal["widget"] = ...
    ) -> StatusPanel: ...

    @overload
    def info(
        self, *, refresh_interval: float | timedelta = ..., format: Literal["text"]
    ) -> InfoText: ...

    def info(
        self,
        *,
        refresh_interval: float | timedelta = 2.0,
        format: Literal["widget", "text"] = "widget",  # noqa: A002 - the word users know
    ) -> StatusPanel | InfoText:
        """A status panel for Jupyter, or with ``format="text"`` the run's summary as text.

        The panel (counts, totals, progress, the queue, the learners, cancel, logs, a plot)
        refreshes itself from a background thread (a toggle on the panel), so the kernel
        stays free; with the managers stopped it shows the last state in state.sqlite.
        The text (a ``str`` that shows as itself at a prompt) has the state, the counts and
        the totals, for terminals.
        """
        if format == "text":
            return super().info()
        if format != "widget":
            raise ConfigError(f"format must be 'widget' or 'text', got {format!r}")
        from adaptive_runner.widgets.panel import StatusPanel  # noqa: PLC0415 - ipywidgets on demand

        interval = positive_seconds(refresh_interval, "refresh_interval")
        return StatusPanel(self, refresh_interval_s=interval)

    def _managers(self) -> dict[str, Any]:
        """What the snapshot says of this object's managers: running, last error, dead ones."""
        jm = self.job_manager
        error = None if jm is None else jm.error
        return {
            "managers_running": jm is not None and jm.running and not jm.finished,
            "manager_error": None if error is None else f"{type(error).__name__}: {error}",
            "dead_managers": [e.summary for e in self.dead_managers()],
        }

    def _repr_html_(self) -> str:
        """The run in a notebook: its summary, or while its managers run, where to watch it.

        ``rm.start()`` as a cell's last line shows what it returns, this RunManager: a
        summary taken then would stand in the page, stale, while the run goes on (above the
        live panel of ``rm.info()``). While the managers run it is one line without figures.
        """
        path = html.escape(str(self.run_dir.path))
        if not self.run_dir.exists():
            return f"RunManager for <code>{path}</code>: not started"
        if self._managers()["managers_running"]:
            return (
                f'<div class="ar-started">RunManager for <code>{path}</code>: managers '
                "running; <code>info()</code> shows the live panel, <code>wait()</code> "
                "waits for the end</div>"
            )
        return super()._repr_html_()

    def cancel(self, learners: Collection[int] | None = None) -> None:
        """Cancel learners (default: the whole run) and kill the jobs that hold them.

        The saved data stays on disk. A whole-run cancel is a pause that running the cell
        again (or :meth:`resume`) ends; learners cancelled by index stay cancelled until
        ``retry(cancelled=True)``.
        """
        if self.job_manager is None:
            super().cancel(learners)
            return
        with self.job_manager.round_lock:  # an array being submitted now is cancelled too
            super().cancel(learners)

    def retry(self, learners: Collection[int] | None = None, *, cancelled: bool = False) -> Retried:
        """Put failed learners (with ``cancelled``, cancelled ones too) back to waiting.

        Attempts, failures and the error restart from nothing, the history stays, and
        dependents that failed with them come back (see :meth:`Run.retry`). If this object
        started the run and its job manager has finished, the managers start again so the
        learners run. Returns the learners put back, with those left alone (``Retried``).
        """
        put_back = super().retry(learners, cancelled=cancelled)
        if put_back and self.job_manager is not None and not self.job_manager.running:
            self.stop()
            self._start_managers(self._url_host())
        return put_back

    def add(
        self,
        learners: Sequence[Any],
        fnames: Sequence[str | os.PathLike[str]],
        *,
        group: int | None = None,
        dependencies: Mapping[int, Sequence[int]] | None = None,
    ) -> list[int]:
        """Add learners to the run, to be run to its goal as the others are; their indices.

        The new learners get the next indices, ``len(rm.fnames)`` onward (returned); the
        learners of the run keep theirs. On a running run they are claimable at once (no
        restart); if this object started the managers and they have ended (the run had
        finished, or :meth:`stop`), they start again. Before :meth:`start` they join this
        object's learners, and ``start()`` adds them to the run. Nothing changes on a
        refusal (a ConfigError naming the argument).

        Parameters
        ----------
        learners
            The new learners; each is cloudpickled once into the run directory.
        fnames
            One new data file per learner, none of them one the run uses.
        group
            The resource group they join. Default: the one group whose learners are of
            their type (give it when several are). Learners of a type no group has join by
            the cell that makes the run, appended to the group they belong to.
        dependencies
            ``{i: [j, k]}``: new learner ``i`` starts only after ``j`` and ``k`` are done, all
            by their indices in the run (the new ones from ``len(rm.fnames)`` on). One on a
            done learner is met at once; a new learner waiting on a failed or cancelled one
            fails or is cancelled with it. The dependencies of the learners in the run stay.

        """
        grown = added(self.spec, learners, fnames, group=group, dependencies=dependencies)
        first = len(self.spec.fnames)
        new = list(range(first, len(grown.fnames)))
        jm = self.job_manager
        if jm is None:  # not started: start() writes them into the run
            self.spec = grown
            return new
        paths = grown.fnames[first:]
        check_writable(paths)
        grown.schedulers[grown.learner_groups[first]].check_shared(
            {"run_dir": self.run_dir.path, **{f"fnames[{j}]": Path(f) for j, f in enumerate(paths)}}
        )
        if jm.running:
            # Between two rounds: none sees the run half grown, and one that found it
            # finished (the thread ends without another round) has said so.
            with jm.round_lock:
                add_to_run(self.run_dir, grown, first=first)
                ended = jm.finished
        else:
            self._locked(lambda: add_to_run(self.run_dir, grown, first=first))
            ended = True
        self.spec = grown
        log.info(
            "learners added", learners=len(new), first=first, group=grown.learner_groups[first]
        )
        if ended:
            self.stop()
            self._start_managers(self._url_host())
        else:
            jm.wake()
        return new

    def load_dataframes(self, *, compute_missing: bool = True) -> Any:
        """:meth:`Run.load_dataframes`, the missing and stale files written first by default.

        A RunManager has its learners' code at hand, so a DataFrame file older than its data
        file (or none at all) is made again from the data file rather than read stale; pass
        ``compute_missing=False`` to read what is on disk as it is.
        """
        return super().load_dataframes(compute_missing=compute_missing)

    def remove_data(self) -> list[Path]:
        """Delete the data files of this object's learners (their saved points), on request.

        The data files are the user's: a rerun and ``overwrite=True`` keep them, so learners
        resume from them. Call this (with the run stopped, no learner running) to start the
        learners from no points. Returns the files deleted.
        """
        running = self.status()[LearnerState.RUNNING] if self.run_dir.exists() else 0
        return remove_files(self.fnames, running=running)

    def stop(self) -> None:
        """Stop both managers; jobs keep running and reconnect after :meth:`resume`."""
        if self.job_manager is not None:
            self.job_manager.stop()
        if self.database_manager is not None:
            self.database_manager.stop()
        stop_logging_managers_to(self.run_dir.path / "manager.log")
        if _RUNNING.get(self.run_dir.path) is self:
            del _RUNNING[self.run_dir.path]
        self._lock.release()


def _resolvable(host: str) -> str:
    """``host`` if this machine can resolve it; else a ConfigError, before anything is written.

    The jobs connect to this machine under that name, so it should know it too (a typo, most
    likely); otherwise its jobs find out one array at a time. Where only the compute nodes
    know the name, its address does instead.
    """
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(
            f"host={host!r} does not resolve on {socket.gethostname()} ({e.strerror}): give "
            "a host name or an IP address of this machine that the compute nodes reach, or "
            "interface='<e.g. ib0>'"
        ) from None
    return host


def _unpickled_goal(blob: bytes) -> object:
    """The goal a run had (cloudpickled by an earlier start); ``...`` if it cannot be loaded.

    Its callable may live in a module that is gone: then the goal counts as changed.
    """
    try:
        return cloudpickle.loads(blob)
    except Exception:  # noqa: BLE001 - any failure: unknown, so it may need more
        return ...
