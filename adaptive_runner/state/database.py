"""The run's sqlite state (learners, dependencies, arrays, tasks, events) and state machine."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from adaptive_runner.common.vocabulary import POINTS_IN_EVALUATION, Outcome
from adaptive_runner.errors import ConfigError
from adaptive_runner.state.file import StateFile, check_existing, create_file, read_meta
from adaptive_runner.state.queries import Queries
from adaptive_runner.state.schema import (
    CLAIMABLE,
    NAMED_ARRAY,
    SORT_KEYS,
    ClaimRow,
    GroupState,
    LearnerRow,
    LearnerState,
    TaskRow,
    as_index,
    connect,
    validate_added_dependencies,
    validate_dependencies,
    validate_fnames,
)
from adaptive_runner.state.transitions import (
    CLAIM,
    DROP,
    add_event,
    complete,
    count_done,
    finish_task,
    mark_dependents,
    put_back_learners,
    reopen,
    repeated,
    retry_set,
)

if TYPE_CHECKING:
    import os
    import sqlite3
    from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
    from types import TracebackType

__all__ = [
    "SORT_KEYS",
    "ClaimRow",
    "Database",
    "GroupState",
    "LearnerRow",
    "LearnerState",
    "TaskRow",
]


class Database(Queries):
    """The run's sqlite state. Make one with :meth:`create` or :meth:`open`.

    Every method is one transaction, committed before it returns. Inside ``with db.batch():``
    the methods share one transaction (one commit for many requests), each under its own
    savepoint, so a method that raises undoes only its own changes.
    """

    def __init__(self, conn: sqlite3.Connection, *, max_fails: int, file: StateFile) -> None:
        self._conn = conn
        self.file = file  # the state file, to check it is still the one opened
        self._max_fails = max_fails
        self._in_batch = False
        # learner -> its latest heartbeat row values, written with the next transaction.
        self._heartbeats: dict[int, tuple[int, float | None, float, int, float, int, str]] = {}
        # Holds this connection ended (done, released, failed, lost): a change the job
        # manager acts on at once (the run may be over, a learner needs a new job).
        self.holds_ended = 0
        # Without dependencies, done has no dependents to update. Once some exist they stay
        # (a grown run may add the first: see _dependencies_exist).
        self._has_dependencies = (
            conn.execute("SELECT 1 FROM dependencies LIMIT 1").fetchone() is not None
        )

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        fnames: Sequence[str],
        *,
        dependencies: Mapping[int, Sequence[int]],
        max_fails: int,
        groups: Sequence[int] | None = None,
    ) -> Database:
        """Create the database file of a new run; all learners start ``waiting``.

        Parameters
        ----------
        path
            The new file; it must not exist yet.
        fnames
            One data file per learner; learner ``i`` saves to ``fnames[i]``.
        dependencies
            ``{learner: [learners it waits for]}``: a learner is claimable only when those
            are done. A learner whose dependency fails or is cancelled fails or is cancelled.
        max_fails
            A learner is marked failed when its failures (crashes, lost jobs, expired leases,
            fail messages) reach this number.
        groups
            The resource group of each learner (default: all in group 0); only tasks of
            that group's arrays claim it.

        """
        names = validate_fnames(fnames)
        grps = _checked_groups(groups, len(names))
        graph = validate_dependencies(dependencies, len(names))
        if type(max_fails) is not int or max_fails < 1:
            raise ConfigError(f"max_fails={max_fails!r}: must be an int >= 1")
        target = Path(path)
        conn = create_file(target, names, grps, graph, max_fails=max_fails)
        return cls(conn, max_fails=max_fails, file=StateFile(target, target.stat(), writer=True))

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, auto_checkpoint: bool = True, read_only: bool = False
    ) -> Database:
        """Open the database of an existing run; ConfigError if missing, RunStateError if not ours.

        Nothing is created, and a file that is no run's state (empty, another sqlite file,
        damaged) is refused before anything could write to it.

        Parameters
        ----------
        path
            The run's state.sqlite.
        auto_checkpoint
            Whether commits on this connection copy the WAL into the file when it has grown
            (sqlite's default, which now and then makes one commit wait for an fsync). The
            database manager turns it off and calls :meth:`checkpoint` from another thread.
        read_only
            Only read (status, the CLI, the panel): the file is never written, and one of an
            older schema is refused, not migrated under a manager that may still use it.

        """
        target = Path(path)
        check_existing(target)
        conn = connect(target, mode="ro" if read_only else "rw")
        try:
            if not auto_checkpoint:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            max_fails = read_meta(conn, target, upgrade=not read_only)
            file = StateFile(target, target.stat(), writer=not read_only)
        except BaseException:
            conn.close()
            raise
        return cls(conn, max_fails=max_fails, file=file)

    def check_file(self) -> None:
        """StateFileError if the file was deleted, replaced or damaged (``StateFile.check``)."""
        self.file.check()

    def checkpoint(self) -> None:
        """Copy committed WAL content into the database file, without waiting for writers.

        Only into the file the check finds intact just before: StateFileError otherwise.
        """
        self.file.check()
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Write buffered heartbeats and close the connection.

        A file that fails its check now gets neither (``StateFile.close``): nothing more is
        written into it. A reader has no heartbeats and checks nothing.
        """
        if self.file.writable():
            self.flush_heartbeats()
        self.file.close(self._conn)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the enclosed method calls in one transaction: one commit for all of them."""
        if self._in_batch:
            raise RuntimeError("Database.batch() does not nest")
        self._conn.execute("BEGIN IMMEDIATE")
        self._write_heartbeats(self._conn)
        self._in_batch = True
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._in_batch = False

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction of its own, or a savepoint inside :meth:`batch`."""
        conn = self._conn
        if self._in_batch:
            conn.execute("SAVEPOINT step")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO step")
                conn.execute("RELEASE step")
                raise
            conn.execute("RELEASE step")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write_heartbeats(conn)
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- transitions driven by workers (through the database manager) ---

    def claim(
        self, task: str, *, host: str, pid: int, now: float, group: int = 0, array: str = ""
    ) -> ClaimRow | None:
        """Give ``task`` the first claimable learner (the same one again on a repeat).

        Every claim, with work or without, counts for ``array`` (the task's array, the
        unfinished one of that id): its tasks reached the database manager, so it is no
        start failure, and the group's start failures in a row end. The hold records that
        array's submission.
        """
        with self._transaction() as c:
            submission = 0  # no array of the run's (a test's claim)
            if array:
                row = c.execute(
                    "UPDATE arrays SET claims = claims + 1 WHERE array_id = ? AND finished IS NULL"
                    " RETURNING submission",
                    (array,),
                ).fetchone()
                submission = 0 if row is None else row[0]
                c.execute(
                    "UPDATE groups SET start_failures = 0, start_error = NULL"
                    " WHERE grp = ? AND start_failures > 0",
                    (group,),
                )
            held = c.execute(
                "SELECT idx, fname, stage FROM learners WHERE task = ? AND state = 'running'",
                (task,),
            ).fetchone()
            if held is not None:
                return ClaimRow(*held)
            row = c.execute(CLAIM, (task, host, pid, now, now, group)).fetchone()
            if row is None:
                return None
            idx, fname, attempt, npoints, stage = row
            c.execute(
                "INSERT INTO tasks (task, learner, attempt, host, pid, started, npoints_start,"
                " submission) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task, idx, attempt, host, pid, now, npoints, submission),
            )
            return ClaimRow(idx, fname, stage)

    def heartbeat(
        self,
        task: str,
        learner: int,
        *,
        npoints: int,
        loss: float | None,
        cpu: float,
        memory: int,
        now: float,
    ) -> bool:
        """Record progress and renew the lease; False if ``task`` no longer holds ``learner``.

        A heartbeat is no state transition, so it costs no commit of its own: the row is
        written with the next transaction or :meth:`flush_heartbeats` (the database manager
        flushes at least once a second). A crash loses at most that second of progress
        figures; the leases it would have renewed are counted from the new manager's start.
        """
        held = self._conn.execute(
            "SELECT 1 FROM learners WHERE idx = ? AND task = ? AND state = 'running'",
            (learner, task),
        ).fetchone()
        if held is None:
            return False
        self._heartbeats[learner] = (npoints, loss, cpu, memory, now, learner, task)
        return True

    def _drop_heartbeat(self, task: str, learner: int) -> None:
        """Forget ``task``'s buffered heartbeat for ``learner``: it is about to stop running."""
        buffered = self._heartbeats.get(learner)
        if buffered is not None and buffered[-1] == task:
            del self._heartbeats[learner]

    def flush_heartbeats(self) -> None:
        """Write the buffered heartbeats now (one transaction), if there are any."""
        if self._heartbeats and not self._in_batch:
            with self._transaction():
                pass  # _transaction writes them first

    def _write_heartbeats(self, conn: sqlite3.Connection) -> None:
        """Apply buffered heartbeats to the learners their tasks still hold."""
        if self._heartbeats:
            conn.executemany(
                "UPDATE learners SET npoints = ?, loss = ?, cpu = ?, memory = ?,"
                " last_heartbeat = ? WHERE idx = ? AND task = ? AND state = 'running'",
                self._heartbeats.values(),
            )
            self._heartbeats.clear()

    def advance(
        self, task: str, learner: int, *, stage: int, npoints: int, loss: float | None
    ) -> bool | None:
        """``learner`` reached goal stage ``stage`` (not the last); whether ``task`` goes on.

        The learner has reached ``stage + 1`` stages now. ``task`` goes on with it, still
        holding it, unless a learner of its group is claimable at an earlier stage: then
        (False) the task saves and releases it, and claims again (the least advanced first).
        None if ``task`` does not hold ``learner``. A repeat gives the same stage.
        """
        self._drop_heartbeat(task, learner)  # these npoints and loss are the newer
        with self._transaction() as c:
            row = c.execute(
                "UPDATE learners SET stage = max(stage, ?), npoints = ?, loss = ?"
                " WHERE idx = ? AND task = ? AND state = 'running' RETURNING grp, stage",
                (stage + 1, npoints, loss, learner, task),
            ).fetchone()
            if row is None:
                return None
            behind = c.execute(
                f"SELECT 1 {CLAIMABLE} AND stage < ? LIMIT 1",
                row,
            ).fetchone()
            return behind is None

    def done(
        self, task: str, learner: int, *, npoints: int, loss: float | None, now: float
    ) -> bool:
        """Mark ``learner`` done; False if ``task`` does not hold it (and did not finish it).

        Done, it reached one stage more: the last (a plain goal is one stage).
        """
        self._drop_heartbeat(task, learner)  # done records the final npoints and loss itself
        with self._transaction() as c:
            cur = c.execute(
                "UPDATE learners SET state = 'done', npoints = ?, loss = ?, finished = ?,"
                " stage = stage + 1 WHERE idx = ? AND task = ? AND state = 'running'",
                (npoints, loss, now, learner, task),
            )
            if cur.rowcount == 0:
                return repeated(c, task, learner, Outcome.DONE)
            if self._dependencies_exist(c):
                count_done(c, learner)
            finish_task(c, task, learner, Outcome.DONE, now)
            self.holds_ended += 1
            return True

    def _dependencies_exist(self, c: sqlite3.Connection) -> bool:
        """Whether any learner waits on another, asked again until one does.

        Another connection may have grown the run with the first dependencies
        (:meth:`add_learners`); the question costs a lookup in an empty table.
        """
        if not self._has_dependencies:
            found = c.execute("SELECT 1 FROM dependencies LIMIT 1").fetchone()
            self._has_dependencies = found is not None
        return self._has_dependencies

    def release(
        self, task: str, learner: int, *, reason: str, now: float, npoints: int | None = None
    ) -> bool:
        """Return ``learner`` to waiting after an orderly stop (a time limit, a cancel).

        Not a failure, unless the job added no point (``npoints``, its count at the stop, is
        no more than when it claimed) while a point was in evaluation (the reason names it):
        a point that hangs would otherwise take one allocation per time limit forever. Such
        a release counts as a failure, and the learner fails at max_fails with a reason that
        says so. A job stopped before its first point (cancelled while it started) is none.
        """
        with self._transaction() as c:
            start = c.execute(
                "SELECT npoints_start FROM tasks WHERE task = ? AND learner = ?"
                " AND finished IS NULL",
                (task, learner),
            ).fetchone()
            stalled = (
                npoints is not None
                and start is not None
                and npoints <= (start[0] or 0)
                and POINTS_IN_EVALUATION in reason
            )
            if npoints is not None:
                c.execute(
                    "UPDATE learners SET npoints = ? WHERE idx = ? AND task = ?",
                    (npoints, learner, task),
                )
            detail = (
                f"no progress: the job ended with {npoints} points, no more than when it "
                f"started ({reason})"
                if stalled
                else reason
            )
            return self._drop(
                c, task, learner, now=now, outcome=Outcome.RELEASED, detail=detail, failure=stalled
            ) or repeated(c, task, learner, Outcome.RELEASED)

    def hand_back(self, task: str, learner: int, *, npoints: int, now: float) -> bool:
        """Return ``learner`` to waiting at the stage it reached (see :meth:`advance`).

        Saved by ``task``, which claims again; no failure. False if ``task`` does not hold it.
        """
        with self._transaction() as c:
            c.execute(
                "UPDATE learners SET npoints = ? WHERE idx = ? AND task = ? AND state = 'running'",
                (npoints, learner, task),
            )
            detail = "a stage reached while learners of its group wait at an earlier one"
            return self._drop(
                c, task, learner, now=now, outcome=Outcome.HANDED_BACK, detail=detail, failure=False
            ) or repeated(c, task, learner, Outcome.HANDED_BACK)

    def fail(self, task: str, learner: int, *, error: str, now: float) -> bool:
        """Count a failure of ``learner`` (its traceback is ``error``); failed at max_fails."""
        with self._transaction() as c:
            return self._drop(
                c, task, learner, now=now, outcome=Outcome.FAILED, detail=error, failure=True
            ) or repeated(c, task, learner, Outcome.FAILED)

    # --- used by the job manager and the run manager ---

    def add_learners(
        self,
        fnames: Sequence[str],
        *,
        first: int,
        groups: Sequence[int],
        dependencies: Mapping[int, Sequence[int]],
        now: float,
    ) -> list[int]:
        """Grow the run: ``fnames[j]`` becomes learner ``first + j``, waiting, at stage 0.

        One transaction: the run gets all of them or none. Their pickles must be on disk
        before: a task may claim them as soon as this commits. Returns their indices.

        Parameters
        ----------
        fnames
            The new learners' data files, none of them an old learner's.
        first
            The run's number of learners: a ConfigError if it has more (another writer grew it).
        groups
            The resource group of each new learner.
        dependencies
            ``{new learner: [learners it waits on]}``, by index (old or new learners); what
            the learners already in the run wait on stays as it is. One on a done learner
            is met at once; a new learner waiting on a failed or cancelled one fails or is
            cancelled with it, as the learners waiting on it did.

        """
        names = validate_fnames(fnames)
        grps = _checked_groups(groups, len(names))
        with self._transaction() as c:
            n = self._count(c)
            if first != n:
                raise ConfigError(
                    f"the run has {n} learners now, not {first}: another RunManager added "
                    "learners meanwhile; RunManager.open(run_dir) gives the run as it is"
                )
            graph = validate_added_dependencies(dependencies, n, len(names))
            for j, name in enumerate(names):
                row = c.execute("SELECT idx FROM learners WHERE fname = ?", (name,)).fetchone()
                if row is not None:
                    raise ConfigError(
                        f"fnames[{j}] = {name!r} is the data file of learner {row[0]} already: "
                        "give every new learner a file of its own"
                    )
            waited_on = sorted({dep for deps in graph.values() for dep in deps if dep < n})
            states = {
                dep: c.execute("SELECT state FROM learners WHERE idx = ?", (dep,)).fetchone()[0]
                for dep in waited_on
            }
            c.executemany(
                "INSERT INTO learners (idx, fname, grp, unfinished_deps) VALUES (?, ?, ?, ?)",
                (
                    (n + j, name, grp, sum(states.get(d) != "done" for d in graph.get(n + j, ())))
                    for j, (name, grp) in enumerate(zip(names, grps, strict=True))
                ),
            )
            c.executemany(
                "INSERT INTO dependencies (depends_on, learner) VALUES (?, ?)",
                ((dep, learner) for learner, deps in graph.items() for dep in deps),
            )
            for j in range(len(names)):
                add_event(c, now, n + j, None, kind="added", detail="added to the run")
            for dep, state in states.items():
                if state in (LearnerState.FAILED, LearnerState.CANCELLED):
                    mark_dependents(c, dep, LearnerState(state), now)
        return list(range(n, n + len(names)))

    def mark_lost(self, task_ids: Collection[str], *, reason: str, now: float) -> list[int]:
        """Count a failure for the learners held by vanished tasks; return those learners."""
        details = {task: f"job {task} was lost: {reason}" for task in task_ids}
        return list(self._fail_holders(details, outcome=Outcome.LOST, now=now).values())

    def kill(self, task: str, *, reason: str, now: float) -> int | None:
        """Count a failure for the learner ``task`` holds, its job being killed for ``reason``.

        Returns the learner (None if the task holds none); its ``error`` becomes ``reason``.
        """
        return self._fail_holders({task: reason}, outcome=Outcome.KILLED, now=now).get(task)

    def _fail_holders(
        self, details: Mapping[str, str], *, outcome: Outcome, now: float
    ) -> dict[str, int]:
        """Count a failure (with its detail) for the learner each task holds, if any."""
        held: dict[str, int] = {}
        with self._transaction() as c:
            for task, detail in details.items():
                row = c.execute(
                    "SELECT idx FROM learners WHERE task = ? AND state = 'running'", (task,)
                ).fetchone()
                if row is not None:
                    self._drop(
                        c, task, row[0], now=now, outcome=outcome, detail=detail, failure=True
                    )
                    held[task] = int(row[0])
        return held

    def expire_leases(
        self,
        *,
        lease_timeout_s: float,
        now: float,
        last_words: Callable[[str], str | None] = lambda _: None,
    ) -> list[tuple[str, int]]:
        """Count a failure for running learners without a heartbeat for ``lease_timeout_s``.

        ``last_words(task)``, asked for each expired task only, adds what the task said last
        to the reason (e.g. the initializer it started and never finished).
        """
        with self._transaction() as c:
            expired = c.execute(
                "SELECT task, idx FROM learners WHERE state = 'running' AND last_heartbeat < ?",
                (now - lease_timeout_s,),
            ).fetchall()
            for task, idx in expired:
                detail = f"no heartbeat from job {task} for {lease_timeout_s:g} s (lease expired)"
                if (said := last_words(task)) is not None:
                    detail = f"{detail}; {said}"
                self._drop(
                    c, task, idx, now=now, outcome=Outcome.EXPIRED, detail=detail, failure=True
                )
        return [(task, idx) for task, idx in expired]

    def cancel(self, learners: Collection[int] | None, *, now: float) -> list[str]:
        """Cancel waiting and running learners (all if None); return the tasks that held them.

        Learners waiting on a cancelled one are cancelled too; done and failed ones stay.
        Cancelling the whole run pauses it: :meth:`resume_paused` brings its learners back
        when the run starts again; learners cancelled alone stay cancelled.
        """
        with self._transaction() as c:
            if learners is None:
                rows = c.execute(
                    "SELECT idx, task FROM learners WHERE state IN ('waiting', 'running')"
                ).fetchall()
            else:
                n = self._count(c)
                rows = []
                for value in learners:
                    idx = as_index(value, n, "cancel")
                    rows += c.execute(
                        "SELECT idx, task FROM learners WHERE idx = ?"
                        " AND state IN ('waiting', 'running')",
                        (idx,),
                    ).fetchall()
            c.executemany(
                "UPDATE learners SET state = 'cancelled', finished = ?, task = NULL, host = NULL,"
                " pid = NULL, paused = ? WHERE idx = ?",
                ((now, learners is None, idx) for idx, _ in rows),
            )
            tasks = [task for _, task in rows if task is not None]
            detail = "cancelled with the run" if learners is None else "cancelled by the user"
            for idx, task in rows:
                if task is not None:
                    finish_task(c, task, idx, Outcome.CANCELLED, now)
                add_event(c, now, idx, task, kind=Outcome.CANCELLED, detail=detail)
                mark_dependents(c, idx, LearnerState.CANCELLED, now)
        return tasks

    def resume_paused(self, *, now: float) -> list[int]:
        """Put the learners cancelled with the whole run back to waiting; return them.

        As :meth:`retry` with ``cancelled`` does, but only for those, and without refusing:
        one whose dependency stays failed or cancelled stays cancelled.
        """
        with self._transaction() as c:
            seed = {idx for (idx,) in c.execute(_PAUSED)}
            if not seed:
                return []
            put_back, _ = retry_set(c, seed, ("cancelled",))
            put_back_learners(c, put_back, now)
            _fresh_start(c)
        return list(put_back)

    def retry(
        self, learners: Collection[int] | None = None, *, cancelled: bool = False, now: float
    ) -> list[int]:
        """Put failed (with ``cancelled``, also cancelled) learners back to ``waiting``.

        Attempts and failures restart at 0, the error goes, the history stays (+ a ``retried``
        event), and so do their groups' start failures in a row. Dependents that failed or were
        cancelled with them come back; one whose
        dependency stays failed or cancelled stays too. ``learners`` (default: all) in other
        states are left alone; an unknown index or a requested learner that must stay is a
        ConfigError (nothing changes). Returns the learners put back.
        """
        states = ("failed", "cancelled") if cancelled else ("failed",)
        with self._transaction() as c:
            n = self._count(c)
            seed = None if learners is None else {as_index(x, n, "retry") for x in learners}
            put_back, blocked = retry_set(c, seed, states)
            refused = sorted(blocked.keys() & (seed or set()))
            if refused:
                raise ConfigError(
                    f"retry: learner {refused[0]} waits on learner {blocked[refused[0]]}, "
                    "which stays failed or cancelled: retry that one too (its dependents "
                    "come back with it)"
                )
            put_back_learners(c, put_back, now)
            _fresh_start(c)
        return list(put_back)

    def complete(
        self,
        reached: Mapping[int, tuple[int, float | None]],
        *,
        detail: str,
        now: float,
        stages: int = 1,
    ) -> list[int]:
        """Mark waiting learners done without a job (their data meets the goal already).

        ``reached``: ``{learner: (npoints, loss)}``, those not waiting left alone; ``detail``
        goes in each ``done`` event; ``stages``: how many the goal has (all reached). Returns
        the learners marked done.
        """
        with self._transaction() as c:
            return [
                idx
                for idx, row in reached.items()
                if complete(c, idx, row, detail=detail, now=now, stages=stages)
            ]

    def reopen(
        self, learners: Collection[int], *, detail: str, now: float, stages: int = 1
    ) -> list[int]:
        """Put done ``learners`` back to waiting (the goal became stricter); others stay.

        ``detail`` goes in each ``reopened`` event; they work on the last of the goal's
        ``stages``. Returns the learners put back.
        """
        with self._transaction() as c:
            return [
                idx for idx in learners if reopen(c, idx, detail=detail, now=now, stages=stages)
            ]

    def record_array(
        self,
        array_id: str,
        *,
        n_tasks: int,
        script: str,
        now: float,
        group: int = 0,
        tag: str | None = None,
    ) -> list[int]:
        """Remember a job array submitted for ``group`` (under ``tag``) until it finishes.

        Each submission is an array of its own, also under an id the run recorded before:
        a scheduler that lost its state (slurmctld's, a PBS server's) gives ids out again.
        Then the earlier arrays of that id are over: they are finished (no start failure is
        counted for them) and the learners their tasks still held are lost, one failure
        each, since those tasks are gone with the scheduler's state and the new array's
        tasks take their ids. Returns those learners.
        """
        with self._transaction() as c:
            held = c.execute(
                "SELECT t.task, t.learner FROM tasks t JOIN arrays a ON a.submission = t.submission"
                " WHERE a.array_id = ? AND t.finished IS NULL",
                (array_id,),
            ).fetchall()
            lost = []
            for task, learner in held:
                detail = (
                    f"job {task} was lost: the scheduler gave its array's id, {array_id}, to a "
                    "new array (it lost its state, and the job with it)"
                )
                if self._drop(
                    c, task, learner, now=now, outcome=Outcome.LOST, detail=detail, failure=True
                ):
                    lost.append(learner)
            c.execute(
                "UPDATE arrays SET finished = ? WHERE array_id = ? AND finished IS NULL",
                (now, array_id),
            )
            c.execute(
                "INSERT INTO arrays (array_id, grp, n_tasks, script, submitted, tag)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (array_id, group, n_tasks, script, now, tag),
            )
            c.execute("UPDATE groups SET submit_error = NULL WHERE grp = ?", (group,))
        return lost

    def finish_array(self, array_id: str, *, now: float | None = None) -> int | None:
        """Mark the array ``array_id`` names as finished (none of its tasks will run any more).

        Returns how many claims its tasks made, or None if it was finished already.
        """
        with self._transaction() as c:
            row = c.execute(
                f"SELECT submission, finished, claims {NAMED_ARRAY}",
                (array_id,),
            ).fetchone()
            if row is None:
                raise ValueError(f"finish_array: no array {array_id!r} was recorded")
            submission, finished, claims = row
            if finished is not None:
                return None
            c.execute(
                "UPDATE arrays SET finished = ? WHERE submission = ?",
                (time.time() if now is None else now, submission),
            )
            return int(claims)

    # --- start failures and submission errors, per resource group ---

    def record_start_failure(self, group: int, *, reason: str) -> int:
        """Count one more array of ``group`` whose tasks never claimed; the count in a row."""
        with self._transaction() as c:
            c.execute("INSERT OR IGNORE INTO groups (grp) VALUES (?)", (group,))
            (n,) = c.execute(
                "UPDATE groups SET start_failures = start_failures + 1, start_error = ?"
                " WHERE grp = ? RETURNING start_failures",
                (reason, group),
            ).fetchone()
            return int(n)

    def record_submit_error(self, group: int, *, error: str) -> None:
        """Remember why the last submission for ``group`` failed (cleared by the next array)."""
        with self._transaction() as c:
            c.execute("INSERT OR IGNORE INTO groups (grp) VALUES (?)", (group,))
            c.execute("UPDATE groups SET submit_error = ? WHERE grp = ?", (error, group))

    def record_queue_error(self, group: int, error: str | None) -> None:
        """Remember why ``group``'s tasks may never leave the queue (None: they may again)."""
        with self._transaction() as c:
            c.execute("INSERT OR IGNORE INTO groups (grp) VALUES (?)", (group,))
            c.execute("UPDATE groups SET queue_error = ? WHERE grp = ?", (error, group))

    def fail_waiting(self, group: int, *, reason: str, now: float) -> list[int]:
        """Fail every waiting learner of ``group`` with ``reason``: its jobs cannot start.

        Learners depending on them fail too. Returns the learners failed here directly.
        """
        with self._transaction() as c:
            rows = c.execute(
                "UPDATE learners SET state = 'failed', error = ?, finished = ?"
                " WHERE grp = ? AND state = 'waiting' RETURNING idx",
                (reason, now, group),
            ).fetchall()
            failed = sorted(idx for (idx,) in rows)
            for idx in failed:
                add_event(c, now, idx, None, kind=LearnerState.FAILED, detail=reason)
                mark_dependents(c, idx, LearnerState.FAILED, now)
        return failed

    def _drop(
        self,
        c: sqlite3.Connection,
        task: str,
        learner: int,
        *,
        now: float,
        outcome: Outcome,
        detail: str,
        failure: bool,
    ) -> bool:
        """Take ``learner`` from ``task`` (waiting, or failed at max_fails); False if not held."""
        params: dict[str, Any] = {
            "failure": int(failure),
            "max_fails": self._max_fails,
            "detail": detail,
            "now": now,
            "idx": learner,
            "task": task,
        }
        rows = c.execute(DROP, params).fetchall()
        if not rows:
            return False
        ((state, failures),) = rows
        self.holds_ended += 1
        finish_task(c, task, learner, outcome, now)
        add_event(c, now, learner, task, kind=outcome, detail=detail)
        if state == LearnerState.FAILED:
            add_event(
                c,
                now,
                learner,
                task,
                kind=LearnerState.FAILED,
                detail=f"gave up after {failures} failures",
            )
            mark_dependents(c, learner, LearnerState.FAILED, now)
        return True


def _checked_groups(groups: Sequence[int] | None, n: int) -> list[int]:
    """Each of ``n`` learners' resource group (default: all in group 0), else a ConfigError."""
    grps = [0] * n if groups is None else list(groups)
    if len(grps) != n or any(type(g) is not int or g < 0 for g in grps):
        raise ConfigError("groups must give a non-negative int group for every learner")
    return grps


_PAUSED: Final = "SELECT idx FROM learners WHERE state = 'cancelled' AND paused = 1"


def _fresh_start(c: sqlite3.Connection) -> None:
    """The groups of waiting learners start anew: the user fixed what kept their jobs back."""
    c.execute(
        "UPDATE groups SET start_failures = 0, start_error = NULL WHERE grp IN"
        " (SELECT DISTINCT grp FROM learners WHERE state = 'waiting')"
    )
