"""Run: a handle on a run directory that unpickles no learner until asked; what the CLI uses."""

from __future__ import annotations

import math
import sqlite3
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from adaptive_runner.common import goals
from adaptive_runner.common.function_store import StoredFunctions
from adaptive_runner.common.run_dir import RunConfig, RunDir
from adaptive_runner.common.saving import load_data
from adaptive_runner.common.task_identity import task_of
from adaptive_runner.common.vocabulary import DataFrameFormat
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.dataframes import (
    DataFrameWarning,
    left_out,
    read_dataframes,
    table_state,
    write_tables,
)
from adaptive_runner.manager.logs import with_progress
from adaptive_runner.schedulers import bound_schedulers
from adaptive_runner.state.database import Database, LearnerState
from adaptive_runner.state.schema import as_damage, as_state, damaged
from adaptive_runner.status.log_parser import LogParser, LogRecords
from adaptive_runner.status.parameters import ParameterFile
from adaptive_runner.status.report import info_text, summary_html
from adaptive_runner.status.snapshot import StatusSnapshot, learners_text

if TYPE_CHECKING:
    import os
    from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.state.database import LearnerRow, TaskRow
    from adaptive_runner.status.parameters import Parameters
    from adaptive_runner.status.queue import Looks
    from adaptive_runner.status.report import InfoText
    from adaptive_runner.status.snapshot import View

log = structlog.get_logger("adaptive_runner.run")


class RetryWarning(UserWarning):
    """:meth:`Run.retry` left cancelled learners alone: ``cancelled=True`` brings them back."""


class Retried(list[int]):
    """The learners :meth:`Run.retry` put back, with those it left alone.

    A list, as ``retry`` always returned; ``left_alone`` maps a state to the learners asked
    for that stay in it (without a selection: the cancelled ones, when nothing was put back).
    """

    def __init__(self, put_back: Iterable[int], left_alone: Mapping[str, list[int]]) -> None:
        super().__init__(put_back)
        self.left_alone = dict(left_alone)

    def left_alone_text(self, state: str, how: str) -> str | None:
        """``learners 0, 6, 7 are cancelled: <how> to retry them`` (``learner 3 is done``).

        None if no learner was left alone in ``state``; ``how`` is said of cancelled ones only.
        """
        learners = self.left_alone.get(state)
        if not learners:
            return None
        one = len(learners) == 1
        text = f"{learners_text(learners)} {'is' if one else 'are'} {state}"
        if state == LearnerState.CANCELLED:
            text += f": {how} to retry {'it' if one else 'them'}"
        return text


class Run:
    """A run directory: its state, jobs and logs, readable without the learners' code.

    Nothing here unpickles a learner except :meth:`load_learners` (and
    :meth:`complete_reached`, ``load_dataframes(compute_missing=True)``), so status, cancel,
    retry, the logs and the DataFrame files work where the modules
    of the learners' functions cannot be imported: a login node, the command line.

    Parameters
    ----------
    run_dir
        The run directory, as given to ``RunManager(run_dir=...)``.

    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = RunDir(run_dir)
        self._log_parser: LogParser | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir.path)!r})"

    def info(self, *, format: Literal["text"] = "text") -> InfoText:  # noqa: A002 - as RunManager
        """The run's state, counts per state and totals as text (see ``RunManager.info``).

        This handle serves no managers, so whether some process serves the run is not known
        here: an unfinished run is "unfinished". The panel needs a RunManager
        (``RunManager.open(run_dir).info()``).
        """
        if format != "text":
            raise ConfigError(
                f"Run.info gives format='text' only, got {format!r}: for the panel use "
                "RunManager.open(run_dir).info()"
            )
        return info_text(self.snapshot())

    def _repr_html_(self) -> str:
        """The run's summary in a notebook: state, counts, totals, problems."""
        return summary_html(self.snapshot())

    def snapshot(self, view: View | None = None, *, looks: Looks | None = None) -> StatusSnapshot:
        """The run as the panel shows it, as plain data (see :class:`StatusSnapshot`)."""
        self._check_database()
        return StatusSnapshot.take(self.run_dir, view, looks=looks, **self._managers())

    def _managers(self) -> dict[str, Any]:
        """What the snapshot says of the run's managers: unknown, as this handle serves none."""
        return {"managers_running": None}

    def config(self) -> RunConfig:
        """What run.json says; ConfigError if this is not a run directory."""
        config = self.run_dir.read_config()
        self._check_database()
        return config

    def _check_database(self) -> None:
        if self.run_dir.database.exists():
            return
        if self.run_dir.exists():  # run.json without state.sqlite: the run lost its state
            raise damaged(self.run_dir.database, "is missing (deleted?)")
        raise ConfigError(f"{self.run_dir.path} is not a run directory (no state.sqlite)")

    @contextmanager
    def _open(self, *, write: bool = False) -> Iterator[Database]:
        """The run's database, only read unless ``write``; a damaged file is a ConfigError."""
        self._check_database()
        with Database.open(self.run_dir.database, read_only=not write) as db:
            try:
                yield db
            except sqlite3.DatabaseError as e:  # a page sqlite reads only now is damaged
                problem = as_damage(self.run_dir.database, e)
                if problem is None:
                    raise
                raise problem from e

    # -- reading ---------------------------------------------------------------------------

    def status(self) -> dict[str, int]:
        """Learners per state, from state.sqlite."""
        with self._open() as db:
            return db.counts()

    def problems(self) -> list[str]:
        """Why jobs do not start or submissions fail now, in words ([] when all is well).

        The failed learners' own reasons are in :meth:`learners` (``error``).
        """
        with self._open() as db:
            return [message for state in db.group_states() for message in state.messages()]

    def finished(self) -> bool:
        """Whether no learner is waiting or running any more."""
        counts = self.status()
        return counts[LearnerState.WAITING] == 0 and counts[LearnerState.RUNNING] == 0

    def learners(
        self, state: LearnerState | str | None = None, *, limit: int | None = None
    ) -> list[LearnerRow]:
        """One row per learner, by index: state, task, npoints, loss, attempts, error, ...

        Parameters
        ----------
        state
            Only the learners in this state (``"failed"``, ...); None: all.
        limit
            At most this many rows (the first by index); None: all.

        """
        with self._open() as db:
            return db.learners(None if state is None else as_state(state), limit)

    def last_tasks(self, learners: Collection[int] | None = None) -> dict[int, str]:
        """Learner -> the task that held it last, also once it failed or waits again.

        ``learners``: only these (None: every learner a task has claimed). A learner no task
        has claimed is left out.
        """
        with self._open() as db:
            return db.last_tasks(learners)

    def parameters(self) -> list[Parameters]:
        """Each learner's parameters, by index, as recorded at start (no learner unpickled).

        From the data file's name (made by ``ar.fname_from_params``) and the keyword
        defaults of the learner's function (a ``functools.partial``'s keywords), as
        parameters.json holds them: ``[{"a": 1, "b": 0.5}, ...]``; ``{}`` for a learner
        without any, ``[]`` for a run started by a release that did not record them.
        """
        self.config()
        return ParameterFile(self.run_dir).read()

    def tasks(self) -> list[TaskRow]:
        """Every hold of a learner by an array task, in the order they started."""
        with self._open() as db:
            return db.tasks()

    def parse_logs(self) -> LogRecords:
        """One record per array task from the job logs: latest status, outcome, errors.

        Each call reads only what the logs gained since the previous call on this handle
        (see log_parser.py); ``.to_dataframe()`` turns the result into a pandas DataFrame.
        """
        if self._log_parser is None:
            self._log_parser = LogParser(self.run_dir)
        return self._log_parser.parse()

    def load_learners(self) -> list[Any]:
        """The learners, unpickled now, with the data their jobs saved so far.

        Unpickling runs the learners' code: their functions' modules must be importable.
        Learners whose function was one object share one object again.
        """
        with self._open() as db:
            fnames = db.fnames()
        stored = StoredFunctions(self.run_dir)
        return [self._loaded(stored, i, Path(fname)) for i, fname in enumerate(fnames)]

    def load_learner(self, index: int) -> Any:
        """Learner ``index`` alone, unpickled now, with the data its jobs saved so far."""
        return self._loaded(StoredFunctions(self.run_dir), index, self.data_file(index))

    def data_file(self, index: int) -> Path:
        """Where learner ``index`` saves its data (it may not exist yet)."""
        with self._open() as db:
            return Path(db.fname(index))

    def _loaded(self, stored: StoredFunctions, index: int, data_file: Path) -> Any:
        learner = stored.learner(index)
        if data_file.exists():
            load_data(learner, data_file)
        return learner

    def load_dataframes(self, *, compute_missing: bool = False) -> Any:
        """One pandas DataFrame of the DataFrame files that ``save_dataframe=True`` writes.

        Columns ``learner`` (the index) and ``fname`` (the data file) come first, then the
        learner's own. Learners without a DataFrame file (saved before the option was on, or
        their DataFrame could not be written) or without a data file are left out and
        listed in the result's ``attrs["skipped"]`` (``attrs["missing"]``: those with a data
        file); a file older than its data file is read and listed in ``attrs["stale"]``. A
        ``adaptive_runner.DataFrameWarning`` says how many of each and why, so an empty or
        partial table never comes back silently. Without ``compute_missing`` this needs no
        learner's code. A run without ``save_dataframe`` is a ConfigError.

        Parameters
        ----------
        compute_missing
            First write the missing and stale files from the data files, as the jobs would
            have (learners a job holds now are left to it). This unpickles those learners:
            their code must be importable. Progress is in the log.

        """
        config = self.config()
        if not config.save_dataframe:
            raise ConfigError(
                f"the run in {self.run_dir.path} saves no DataFrames: start it with "
                "save_dataframe=True, or use load_learners() and each learner's to_dataframe()"
            )
        fmt = DataFrameFormat(config.dataframe_format)
        if compute_missing:
            self._write_missing_dataframes()
        with self._open() as db:
            rows = db.learners()
        fnames = [row.fname for row in rows]
        states = [table_state(fname, fmt) for fname in fnames]
        running = {row.index for row in rows if row.state is LearnerState.RUNNING}
        message = left_out(states, running, computed=compute_missing)
        if message is not None:
            warnings.warn(message, DataFrameWarning, stacklevel=2)
        return read_dataframes(fnames, fmt, states)

    def _write_missing_dataframes(self) -> list[int]:
        """Write the missing and stale DataFrame files of the learners no job holds now.

        From their data files (see :func:`write_tables`); returns the learners written.
        """
        fmt = DataFrameFormat(self.config().dataframe_format)
        with self._open() as db:
            rows = db.learners()
        behind = [
            (row.index, row.fname)
            for row in rows
            if row.state is not LearnerState.RUNNING and table_state(row.fname, fmt).writable
        ]
        stored = StoredFunctions(self.run_dir)  # a function file read once for its learners
        return write_tables(behind, fmt, partial(self._loaded, stored))

    # -- steering --------------------------------------------------------------------------

    def cancel(self, learners: Collection[int] | None = None) -> None:
        """Cancel learners (default: the whole run) and kill the jobs that hold them.

        The saved data stays on disk. Learners cancelled by index stay cancelled (until
        ``retry(cancelled=True)``); cancelling the whole run pauses it: running the cell
        again (or ``start()``, ``RunManager.resume``) continues it. The jobs are cancelled
        through the schedulers that run.json names.
        """
        schedulers = self.bound_schedulers()
        by_group: dict[int, list[str]] = {}
        with self._open(write=True) as db:
            holders = db.running_tasks()
            if learners is None:  # whole arrays: their pending tasks go too
                by_group = {g: db.active_arrays(g) for g in range(len(schedulers))}
            tasks = db.cancel(None if learners is None else list(learners), now=time.time())
            if learners is not None:
                groups = db.learner_groups()
                # A packed worker is not cancelled with its allocation's others: its next
                # heartbeat (within log_interval) finds the learner gone, and it goes on
                # with the next one.
                for task in tasks:
                    if task_of(task) == task:
                        by_group.setdefault(groups[holders[task]], []).append(task)
        for group, ids in by_group.items():
            if ids:
                schedulers[group].cancel(ids)

    def active_tasks(self) -> list[str]:
        """The run's array tasks that are queued or running (one queue call per group).

        Asks about every array the run ever submitted: a task whose learner is finished may
        still be exiting.
        """
        schedulers = self.bound_schedulers()
        by_group: dict[int, list[str]] = {}
        with self._open() as db:
            for array_id, group in db.array_groups().items():
                by_group.setdefault(group, []).append(array_id)
        active: list[str] = []
        for group, arrays in by_group.items():
            queue = schedulers[group].queue_states(arrays)
            active += sorted(task for task, state in queue.items() if state.active)
        return active

    def bound_schedulers(self) -> list[Scheduler]:
        """The schedulers of the run's groups, as run.json describes them, bound to the run."""
        return bound_schedulers(self.config().groups, self.run_dir.jobs_dir)

    def retry(self, learners: Collection[int] | None = None, *, cancelled: bool = False) -> Retried:
        """Put failed learners (and with ``cancelled`` cancelled ones) back to waiting.

        Attempts, failures and the error restart from nothing; the history stays. Dependents
        that failed or were cancelled with them come back too. The learners run when a
        manager serves the run (``RunManager.resume`` or ``adaptive-runner serve``); their
        data files are kept, so they resume from their points.

        Parameters
        ----------
        learners
            Which learners (default: all failed ones); others are left alone. An unknown
            index, or a learner whose dependency stays failed or cancelled, is a ConfigError.
        cancelled
            Whether cancelled learners come back too.

        Returns
        -------
        Retried
            The learners put back (a list), with ``left_alone``: by state, the learners
            asked for that stay as they are (without ``learners``: the cancelled ones, when
            nothing was put back). Cancelled learners asked for by index and left alone
            are also a :class:`RetryWarning` that names them.

        """
        alone: dict[str, list[int]] = {}
        with self._open(write=True) as db:
            put_back = db.retry(learners, cancelled=cancelled, now=time.time())
            if learners is not None:  # those asked for that stay, by state
                for index, state in db.states_of(
                    {int(i) for i in learners} - set(put_back)
                ).items():
                    alone.setdefault(state, []).append(index)
            elif not put_back and not cancelled:  # nothing failed: say so of the cancelled ones
                alone[LearnerState.CANCELLED] = [
                    i for i, _ in db.learners_in(LearnerState.CANCELLED)
                ]
        if put_back:
            log.info("learners retried", learners=len(put_back), run_dir=str(self.run_dir.path))
        result = Retried(put_back, {state: ids for state, ids in alone.items() if ids})
        hint = result.left_alone_text(LearnerState.CANCELLED, "pass cancelled=True")
        if hint is not None and learners is not None:  # asked for by name
            warnings.warn(f"retry: {hint}", RetryWarning, stacklevel=2)
        return result

    def resume_paused(self) -> list[int]:
        """Put the learners of a cancelled run back to waiting (a rerun or resume does this).

        Only those cancelled with the whole run (``cancel()``); those cancelled by index stay.
        """
        with self._open(write=True) as db:
            put_back = db.resume_paused(now=time.time())
        if put_back:
            log.info("the cancelled run continues", learners=len(put_back))
        return put_back

    def remove_data(self) -> list[Path]:
        """Delete the learners' data files, so that they start again from no points.

        The data files are the user's: neither a rerun nor ``overwrite=True`` touches them;
        this does, on request only. Refused while a learner is running. Returns the files
        deleted.
        """
        with self._open() as db:
            fnames = [row.fname for row in db.learners()]
        return remove_files(fnames, running=self.status()[LearnerState.RUNNING])

    def complete_reached(
        self, goal: goals.Goal, *, skip: Collection[int] = (), progress_every: int = 1000
    ) -> list[int]:
        """Mark done, without a job, the waiting learners whose saved data meets ``goal``.

        Costs one load per waiting learner with a data file, as its job would do it:
        unpickle, load the data, then adaptive's own goal check (:func:`goals.goal_check`).
        A run-time goal (timedelta) says nothing about saved data, so nothing is loaded
        then. A learner whose data cannot be loaded stays waiting (logged): its job reports
        the error. Progress is logged every ``progress_every`` learners; ``skip``: learners
        just found short of ``goal`` (not loaded again). Returns the learners marked done.
        """
        goal = goals.check_goal(goal)
        if isinstance(goal, timedelta):
            return []
        with self._open() as db:
            waiting = [row for row in db.learners_in(LearnerState.WAITING) if row[0] not in skip]
        reached = self._check_saved(waiting, goal, progress_every)
        with self._open(write=True) as db:
            done = db.complete(
                reached,
                detail="its data file meets the goal",
                now=time.time(),
                stages=goals.n_stages(goal),
            )
        if reached:
            log.info("learners done at start", learners=len(done))
        return done

    def reopen_unreached(
        self, goal: goals.Goal, *, check: bool = True, progress_every: int = 1000
    ) -> list[int]:
        """Put back to waiting the done learners that do not meet ``goal`` (a raised goal).

        With ``check`` (``check_goal_on_start``), each done learner's saved data is loaded
        and checked as :meth:`complete_reached` does, and those that meet ``goal`` stay
        done; without it, every done learner goes back to its job. Returns those put back.
        """
        goal = goals.check_goal(goal)
        with self._open() as db:
            done = db.learners_in(LearnerState.DONE)
        stay = self._check_saved(done, goal, progress_every) if check else {}
        detail = f"the goal changed to {goals.describe_goal(goal)}"
        with self._open(write=True) as db:
            reopened = db.reopen(
                [i for i, _ in done if i not in stay],
                detail=detail,
                now=time.time(),
                stages=goals.n_stages(goal),
            )
        log.info(
            "the goal changed: done learners short of it are waiting again",
            goal=goals.describe_goal(goal),
            reopened=len(reopened),
            still_done=len(done) - len(reopened),
        )
        return reopened

    def _check_saved(
        self, learners: Sequence[tuple[int, str]], goal: goals.Goal, progress_every: int
    ) -> dict[int, tuple[int, float | None]]:
        """``{learner: (npoints, loss)}`` of ``learners`` whose saved data meets ``goal``."""
        saved = [(i, Path(f)) for i, f in learners if Path(f).exists()]
        reached: dict[int, tuple[int, float | None]] = {}
        started = time.monotonic()
        stored = StoredFunctions(self.run_dir)  # a function file read once for its learners
        steps = with_progress(
            log, saved, "checked saved data against the goal", every=progress_every
        )
        for index, path in steps:
            found = self._reached(stored, index, path, goal)
            if found is not None:
                reached[index] = found
        if saved:
            log.info(
                "saved data checked",
                meet_the_goal=len(reached),
                checked=len(saved),
                seconds=round(time.monotonic() - started, 3),
            )
        return reached

    def _reached(
        self, stored: StoredFunctions, index: int, path: Path, goal: goals.Goal
    ) -> tuple[int, float | None] | None:
        """(npoints, loss) of learner ``index`` if its data at ``path`` meets ``goal``."""
        try:
            learner = stored.learner(index)
            stored.keep_last()  # the functions of learners checked before it may go
            load_data(learner, path)
            if not goals.goal_check(goal, learner)(learner):
                return None
            loss = float(learner.loss())
        except Exception as e:  # noqa: BLE001 - any bad file leaves the learner to its job
            log.warning("cannot check saved data", learner=index, fname=str(path), error=repr(e))
            return None
        return int(learner.npoints), loss if math.isfinite(loss) else None


def remove_files(fnames: Iterable[str], *, running: int) -> list[Path]:
    """Delete the data files in ``fnames`` that exist; refused while ``running`` > 0."""
    if running:
        raise ConfigError(
            f"{running} learners are running and would save again: cancel or stop the run "
            "(and wait for its jobs) before removing data files"
        )
    removed = []
    for fname in fnames:
        path = Path(fname)
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
