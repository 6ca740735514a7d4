"""RunManager: the user's handle on a run; wires run directory, database and job managers."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import structlog

from adaptive_runner import goals
from adaptive_runner.auth import create_keys
from adaptive_runner.database import Database, LearnerState
from adaptive_runner.database_manager import DatabaseManager
from adaptive_runner.error_watch import DEFAULT_KILL_PATTERNS, check_patterns
from adaptive_runner.errors import ConfigError
from adaptive_runner.files import atomic_write, fsync_dir
from adaptive_runner.job_manager import JobManager
from adaptive_runner.log_parser import LogParser, LogRecords
from adaptive_runner.logs import log_managers_to, stop_logging_managers_to
from adaptive_runner.run_dir import GroupConfig, RunConfig, RunDir, config_hash
from adaptive_runner.saving import load_data
from adaptive_runner.schedulers import scheduler_class
from adaptive_runner.validation import positive_int, positive_seconds

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.widgets.panel import StatusPanel


LOOPBACK = "127.0.0.1"

log = structlog.get_logger("adaptive_runner.run_manager")


class RunManager:
    """Run ``learners`` to ``goal`` on ``scheduler``'s array tasks, one learner at a time each.

    Parameters
    ----------
    scheduler
        ``Local(...)``, ``SLURM(...)`` or ``PBS(...)``.
    learners
        The adaptive learners; each is cloudpickled once into the run directory.
    fnames
        One file per learner where its data is saved (adaptive's format; resume reads it).
    goal
        When a learner is finished: a callable ``goal(learner) -> bool``, an ``int`` (points),
        a ``float`` (loss), a ``timedelta`` (run time per job) or a ``datetime`` (end time).
    run_dir
        Where the run keeps its state; an existing run with the same learners is continued.
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
        Replace an existing run directory whose learners or fnames differ.
    kill_on_error
        Cancel a job whose own output (the non-event lines of ``logs/<task>.log``) shows one
        of these plain substrings and count a failure for its learner, with the line as the
        reason. The
        default, ``DEFAULT_KILL_PATTERNS``, is ``"srun: error:"``, ``"MemoryError"``,
        ``"oom-kill"`` and ``"Out of memory"``; ``None`` turns this off.

    """

    def __init__(
        self,
        scheduler: Scheduler,
        learners: Sequence[Any],
        fnames: Sequence[str | os.PathLike[str]],
        *,
        goal: goals.Goal,
        run_dir: str | os.PathLike[str] = "runs/default",
        max_simultaneous_jobs: int = 100,
        save_interval: float | timedelta = 300.0,
        log_interval: float | timedelta = 60.0,
        max_fails: int = 3,
        lease_timeout: float | timedelta | None = None,
        dependencies: Mapping[int, Sequence[int]] | None = None,
        poll_interval: float | timedelta | None = None,
        overwrite: bool = False,
        kill_on_error: Sequence[str] | None = DEFAULT_KILL_PATTERNS,
    ) -> None:
        if len(learners) != len(fnames):
            raise ConfigError(
                f"learners and fnames must have the same length, got {len(learners)} learners "
                f"and {len(fnames)} fnames"
            )
        if not learners:
            raise ConfigError("learners is empty: give at least one learner and its fname")
        self.fnames = [str(Path(f).absolute()) for f in fnames]
        seen: dict[str, int] = {}
        for i, fname in enumerate(self.fnames):
            if fname in seen:
                raise ConfigError(
                    f"fnames[{i}] and fnames[{seen[fname]}] are the same file {fname!r}: "
                    "each learner needs its own file"
                )
            seen[fname] = i
        self.learners = list(learners)
        self.goal = goals.check_goal(goal)
        self.run_dir = RunDir(run_dir)
        self.max_simultaneous_jobs = positive_int(max_simultaneous_jobs, "max_simultaneous_jobs")
        self.save_interval_s = positive_seconds(save_interval, "save_interval")
        self.log_interval_s = positive_seconds(log_interval, "log_interval")
        self.max_fails = positive_int(max_fails, "max_fails")
        self.lease_timeout_s = (
            max(120.0, 5 * self.log_interval_s)
            if lease_timeout is None
            else positive_seconds(lease_timeout, "lease_timeout")
        )
        self._set_groups([scheduler], [0] * len(self.learners), poll_interval)
        self.dependencies = {int(k): [int(d) for d in v] for k, v in (dependencies or {}).items()}
        self.overwrite = overwrite
        self.kill_on_error = check_patterns(kill_on_error)
        self.database_manager: DatabaseManager | None = None
        self.job_manager: JobManager | None = None
        self._log_parser: LogParser | None = None
        self._lock_fd: int | None = None  # manager.lock, held while our managers run

    @classmethod
    def from_groups(
        cls,
        groups: Sequence[tuple[Scheduler, Sequence[Any], Sequence[str | os.PathLike[str]]]],
        **options: Any,
    ) -> RunManager:
        """A run whose learners need different resources: one array per group.

        ``groups`` is a list of ``(scheduler, learners, fnames)``; ``options`` are the other
        arguments of :class:`RunManager` (goal, run_dir, ...). Learners are numbered group by
        group, in the order given; ``max_simultaneous_jobs`` counts the jobs of all groups.
        """
        if not groups:
            raise ConfigError("groups is empty: give a list of (scheduler, learners, fnames)")
        learners: list[Any] = []
        fnames: list[str | os.PathLike[str]] = []
        learner_groups: list[int] = []
        for g, group in enumerate(groups):
            if not isinstance(group, tuple) or len(group) != 3:  # noqa: PLR2004 - the triple
                raise ConfigError(f"groups[{g}] must be a (scheduler, learners, fnames) tuple")
            _, group_learners, group_fnames = group
            if len(group_learners) != len(group_fnames):
                raise ConfigError(
                    f"groups[{g}] has {len(group_learners)} learners but {len(group_fnames)} "
                    "fnames: give one fname per learner"
                )
            learners.extend(group_learners)
            fnames.extend(group_fnames)
            learner_groups.extend([g] * len(group_learners))
        rm = cls(groups[0][0], learners, fnames, **options)
        rm._set_groups([g[0] for g in groups], learner_groups, options.get("poll_interval"))
        return rm

    def _set_groups(
        self,
        schedulers: Sequence[Scheduler],
        learner_groups: Sequence[int],
        poll_interval: float | timedelta | None,
    ) -> None:
        self.schedulers = list(schedulers)
        self.learner_groups = list(learner_groups)
        self.poll_interval_s = (
            min(s.poll_interval_s for s in self.schedulers)
            if poll_interval is None
            else positive_seconds(poll_interval, "poll_interval")
        )

    # -- starting --------------------------------------------------------------------------

    def start(self) -> RunManager:
        """Create (or continue) the run directory, start both managers and return at once.

        The managers run in background threads, so this works in Jupyter and in scripts.
        """
        for scheduler in self.schedulers:  # before anything is written: a bad partition, ...
            scheduler.check()
        learner_types = [f"{type(x).__module__}.{type(x).__qualname__}" for x in self.learners]
        digest = config_hash(self.fnames, learner_types, self.dependencies, self.learner_groups)
        if self.run_dir.exists():
            existing = self.run_dir.read_config()
            if existing.config_hash != digest and not self.overwrite:
                raise ConfigError(
                    f"{self.run_dir.path} holds a different run (its learners or fnames "
                    "differ): pass overwrite=True to replace it, or "
                    "RunManager.resume(run_dir) to continue it"
                )
            self._lock()  # before touching a run that other managers might be serving
            try:
                if existing.config_hash != digest:
                    self._create(digest, replace=True)
                    self._unlock()  # that lock was on the replaced directory's file
                else:
                    self._update_settings(existing)
            except BaseException:
                self._unlock()
                raise
        else:
            self._create(digest, replace=False)
        self._start_managers()
        return self

    def _lock(self) -> None:
        """Hold ``manager.lock`` in the run directory while this object manages the run.

        Two managers on one run would hand the same learner to two jobs. The lock (flock) is
        released by :meth:`stop`, or by the kernel when the process dies.
        """
        if self._lock_fd is not None:
            return
        fd = os.open(self.run_dir.path / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.run_dir.path} is managed already (by another RunManager or "
                "`adaptive-runner serve`): stop that one first, or only watch the run with "
                "RunManager.open(run_dir)"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _config(self, digest: str, *, name: str, created: str, url: str) -> RunConfig:
        return RunConfig(
            name=name,
            created=created,
            url=url,
            config_hash=digest,
            groups=[GroupConfig(s.name, scheduler_options(s)) for s in self.schedulers],
            n_learners=len(self.learners),
            save_interval_s=self.save_interval_s,
            log_interval_s=self.log_interval_s,
            lease_timeout_s=self.lease_timeout_s,
            max_fails=self.max_fails,
            max_simultaneous_jobs=self.max_simultaneous_jobs,
            poll_interval_s=self.poll_interval_s,
            kill_on_error=list(self.kill_on_error),
        )

    def _create(self, digest: str, *, replace: bool) -> None:
        """Build the whole run directory beside its target, then rename it into place.

        Nothing is half-written: a failure leaves no run directory (or the old one).
        """
        blobs = [self._pickle_learner(i, learner) for i, learner in enumerate(self.learners)]
        goal_blob = cloudpickle.dumps(self.goal)
        target = self.run_dir.path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {target}: {e}") from e
        try:
            staging = RunDir(tmp)
            for sub in (staging.learners_dir, staging.logs_dir, staging.jobs_dir):
                sub.mkdir()
            staging.write_learners(blobs)
            atomic_write(staging.goal_file, goal_blob)
            create_keys(staging.keys_dir)
            Database.create(
                staging.database,
                self.fnames,
                dependencies=self.dependencies,
                max_fails=self.max_fails,
                groups=self.learner_groups,
            ).close()
            created = datetime.now(UTC).isoformat(timespec="seconds")
            staging.write_config(self._config(digest, name=target.name, created=created, url=""))
            if replace:
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old)
            else:
                tmp.rename(target)
            fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _pickle_learner(self, index: int, learner: Any) -> bytes:
        try:
            blob: bytes = cloudpickle.dumps(learner)
        except Exception as e:  # any pickling failure becomes one clear error
            raise ConfigError(
                f"learner {index} cannot be pickled ({type(e).__name__}: {e}); define its "
                "function at module level or make what it captures picklable"
            ) from e
        return blob

    def _update_settings(self, existing: RunConfig) -> None:
        """Continue an existing run with this call's goal and settings."""
        atomic_write(self.run_dir.goal_file, cloudpickle.dumps(self.goal))
        self.run_dir.write_config(
            self._config(existing.config_hash, name=existing.name, created=existing.created, url="")
        )

    def _start_managers(self) -> None:
        self._lock()
        try:
            self._start_locked_managers()
        except BaseException:
            self.stop()  # whatever started, and the lock
            raise
        log.info(
            "run started",
            run_dir=str(self.run_dir.path),
            learners=len(self.learners),
            goal=goals.describe_goal(self.goal),
            schedulers=[s.name for s in self.schedulers],
            **self.status(),
        )

    def _start_locked_managers(self) -> None:
        log_managers_to(self.run_dir.path / "manager.log")
        local_only = all(s.bind_host == LOOPBACK for s in self.schedulers)
        host = LOOPBACK if local_only else "0.0.0.0"  # noqa: S104 - jobs on other nodes; CURVE
        url_host = LOOPBACK if local_only else socket.gethostname()
        self.database_manager = DatabaseManager(self.run_dir, bind_host=host, url_host=url_host)
        url = self.database_manager.start()
        config = self.run_dir.read_config()
        self.run_dir.write_config(dataclasses.replace(config, url=url))
        self.job_manager = JobManager(
            self.run_dir,
            self.schedulers,
            max_simultaneous_jobs=self.max_simultaneous_jobs,
            lease_timeout_s=self.lease_timeout_s,
            poll_interval_s=self.poll_interval_s,
            kill_on_error=self.kill_on_error,
        )
        self.job_manager.start()

    # -- resuming --------------------------------------------------------------------------

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> RunManager:
        """The run in ``run_dir`` as run.json and state.sqlite describe it, managers not started.

        Enough to watch and steer it (status, cancel, parse_logs, load_learners); the
        learners are unpickled, so their functions' modules must be importable.
        """
        rd = RunDir(run_dir)
        config = rd.read_config()
        with Database.open(rd.database) as db:
            fnames = [row.fname for row in db.learners()]
            learner_groups = db.learner_groups()
            dependencies = db.dependencies()
        learners = [cloudpickle.loads(rd.read_learner(i)) for i in range(len(fnames))]
        groups = [
            (
                scheduler_class(group.scheduler)(**group.options),
                [x for x, g in zip(learners, learner_groups, strict=True) if g == number],
                [f for f, g in zip(fnames, learner_groups, strict=True) if g == number],
            )
            for number, group in enumerate(config.groups)
        ]
        return cls.from_groups(
            groups,
            goal=cloudpickle.loads(rd.goal_file.read_bytes()),
            run_dir=rd.path,
            max_simultaneous_jobs=config.max_simultaneous_jobs,
            save_interval=config.save_interval_s,
            log_interval=config.log_interval_s,
            max_fails=config.max_fails,
            lease_timeout=config.lease_timeout_s,
            dependencies=dependencies,
            poll_interval=config.poll_interval_s,
            kill_on_error=config.kill_on_error,
        )

    @classmethod
    def resume(cls, run_dir: str | os.PathLike[str]) -> RunManager:
        """Continue the run in ``run_dir`` (e.g. after a kernel restart) and return it started.

        Jobs still running keep their learners; they reconnect to the new database manager.
        On a finished run this only reports that everything is done.
        """
        self = cls.open(run_dir)
        if self.finished():
            return self
        for scheduler in self.schedulers:
            scheduler.check()
        self._start_managers()
        return self

    # -- watching and steering -------------------------------------------------------------

    def status(self) -> dict[str, int]:
        """Learners per state, read from state.sqlite (works with the managers stopped)."""
        with Database.open(self.run_dir.database) as db:
            return {str(k): v for k, v in db.counts().items()}

    def finished(self) -> bool:
        """Whether no learner is waiting or running any more."""
        counts = self.status()
        return counts[LearnerState.WAITING] == 0 and counts[LearnerState.RUNNING] == 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every learner is done, failed or cancelled; True if all are done.

        Returns False as well when ``timeout`` seconds pass first.
        """
        if self.job_manager is not None and not self.job_manager.wait(timeout):
            return False
        self.stop()
        counts = self.status()
        return counts[LearnerState.DONE] == sum(counts.values())

    def info(self, *, refresh_interval: float | timedelta = 2.0) -> StatusPanel:
        """A status panel for Jupyter: counts, progress, the learners, cancel, logs, loading.

        It refreshes itself from a background thread (a toggle on the panel), so the kernel
        stays free; with the managers stopped it shows the last state in state.sqlite.
        """
        from adaptive_runner.widgets.panel import StatusPanel  # noqa: PLC0415 - ipywidgets on demand

        interval = positive_seconds(refresh_interval, "refresh_interval")
        return StatusPanel(self, refresh_interval_s=interval)

    def cancel(self, learners: Collection[int] | None = None) -> None:
        """Cancel learners (default: the whole run) and kill the jobs that hold them.

        Cancelled learners are never resubmitted; their saved data stays on disk.
        """
        now = datetime.now(UTC).timestamp()
        by_group: dict[int, list[str]] = {}
        with Database.open(self.run_dir.database) as db:
            holders = db.running_tasks()
            tasks = db.cancel(None if learners is None else list(learners), now=now)
            for group in range(len(self.schedulers)):
                if learners is None:  # whole arrays: their pending tasks go too
                    by_group[group] = db.active_arrays(group)
            for task in tasks if learners is not None else ():
                by_group.setdefault(self.learner_groups[holders[task]], []).append(task)
        for group, ids in by_group.items():
            if ids:
                self.schedulers[group].cancel(ids, jobs_dir=self.run_dir.jobs_dir)

    def stop(self) -> None:
        """Stop both managers; jobs keep running and reconnect after :meth:`resume`."""
        if self.job_manager is not None:
            self.job_manager.stop()
        if self.database_manager is not None:
            self.database_manager.stop()
        stop_logging_managers_to(self.run_dir.path / "manager.log")
        self._unlock()

    def parse_logs(self) -> LogRecords:
        """One record per array task from the job logs: latest status, outcome, errors.

        Each call reads only what the logs gained since the previous call (see log_parser.py);
        ``.to_dataframe()`` turns the result into a pandas DataFrame.
        """
        if self._log_parser is None:
            self._log_parser = LogParser(self.run_dir)
        return self._log_parser.parse()

    def load_learners(self) -> list[Any]:
        """The learners with the data their jobs saved so far."""
        learners = [
            cloudpickle.loads(self.run_dir.read_learner(i)) for i in range(len(self.fnames))
        ]
        for learner, fname in zip(learners, self.fnames, strict=True):
            if Path(fname).exists():
                load_data(learner, Path(fname))
        return learners


def scheduler_options(scheduler: Scheduler) -> dict[str, Any]:
    """The scheduler's constructor arguments as JSON values, to rebuild it on resume."""
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
