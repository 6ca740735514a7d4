"""The read side of the run's sqlite state: counts, rows, pages, arrays, group states.

Queries only, one statement each, no transaction of their own: the status panel, the CLI and
the job manager read through these while the database manager writes (WAL lets them).
:class:`~adaptive_runner.state.database.Database` adds the transitions on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptive_runner.common.vocabulary import Outcome
from adaptive_runner.errors import ConfigError
from adaptive_runner.state.schema import (
    CLAIMABLE,
    CURRENT_HOLDS,
    NAMED_ARRAY,
    ROW_COLUMNS,
    SORT_KEYS,
    ArrayRow,
    GroupState,
    LearnerRow,
    LearnerState,
    TaskRow,
    Usage,
    as_index,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Collection


class Queries:
    """Read-only views of one run's sqlite connection."""

    _conn: sqlite3.Connection

    def learners_in(self, state: LearnerState) -> list[tuple[int, str]]:
        """``(index, fname)`` of the learners in ``state``, by index."""
        query = "SELECT idx, fname FROM learners WHERE state = ? ORDER BY idx"
        rows = self._conn.execute(query, (LearnerState(state).value,))
        return [(int(idx), str(fname)) for idx, fname in rows]

    def recorded_arrays(self) -> set[str]:
        """Every array the run submitted or adopted, finished or not."""
        return {array_id for (array_id,) in self._conn.execute("SELECT array_id FROM arrays")}

    def active_arrays(self, group: int | None = None) -> list[str]:
        """The arrays not yet finished (of one group, or all), oldest first."""
        query = "SELECT array_id FROM arrays WHERE finished IS NULL"
        params: tuple[int, ...] = ()
        if group is not None:
            query, params = f"{query} AND grp = ?", (group,)
        rows = self._conn.execute(f"{query} ORDER BY submitted", params).fetchall()
        return [array_id for (array_id,) in rows]

    def knows_array(self, array_id: str) -> bool:
        """Whether the run submitted or adopted ``array_id`` (finished or not)."""
        query = "SELECT 1 FROM arrays WHERE array_id = ? LIMIT 1"
        return self._conn.execute(query, (array_id,)).fetchone() is not None

    def live_array(self, array_id: str) -> ArrayRow | None:
        """The unfinished array ``array_id`` names (its tasks may claim); None if none."""
        row = self._conn.execute(
            "SELECT submission, array_id, grp, n_tasks FROM arrays"
            " WHERE array_id = ? AND finished IS NULL",
            (array_id,),
        ).fetchone()
        return None if row is None else ArrayRow(*row)

    def array_tags(self) -> dict[str, str | None]:
        """Every unfinished array -> the tag (job name) it was submitted under; None before tags."""
        return dict(self._conn.execute("SELECT array_id, tag FROM arrays WHERE finished IS NULL"))

    def array_groups(self) -> dict[str, int]:
        """Every array the run submitted (finished or not) -> its group.

        An id the scheduler gave out again: its latest array's.
        """
        return dict(self._conn.execute("SELECT array_id, grp FROM arrays ORDER BY submission"))

    def array_claims(self, array_ids: Collection[str]) -> dict[str, int]:
        """Array -> how many claims its tasks made so far (recorded arrays only).

        An id given out again counts for the array it names now (:data:`NAMED_ARRAY`).
        """
        found: dict[str, int] = {}
        for array_id in array_ids:
            row = self._conn.execute(f"SELECT claims {NAMED_ARRAY}", (array_id,)).fetchone()
            if row is not None:
                found[array_id] = int(row[0])
        return found

    def exiting(self, tasks: Collection[str]) -> set[str]:
        """Which of ``tasks`` ended their latest hold other than done: they exit, not claim.

        A task that finished its learner (or handed it back at a stage) claims the next one;
        one that released it (a stop signal) or failed it ends. Only holds in unfinished
        arrays count (``CURRENT_HOLDS``).
        """
        found: set[str] = set()
        for task in tasks:
            row = self._conn.execute(
                f"SELECT t.outcome {CURRENT_HOLDS} AND t.task = ? ORDER BY t.started DESC LIMIT 1",
                (task,),
            ).fetchone()
            if row is not None and row[0] not in (None, Outcome.DONE, Outcome.HANDED_BACK):
                found.add(task)
        return found

    def cancelled_hold(self, task: str, learner: int) -> bool:
        """Whether ``task``'s latest hold of ``learner`` ended because the user cancelled it."""
        row = self._conn.execute(
            f"SELECT t.outcome {CURRENT_HOLDS} AND t.task = ? AND t.learner = ?"
            " ORDER BY t.started DESC LIMIT 1",
            (task, learner),
        ).fetchone()
        return row is not None and row[0] == Outcome.CANCELLED

    def claimed(self, tasks: Collection[str]) -> set[str]:
        """Which of ``tasks`` ever held a learner (in an unfinished array: ``CURRENT_HOLDS``)."""
        found: set[str] = set()
        for task in tasks:
            row = self._conn.execute(f"SELECT 1 {CURRENT_HOLDS} AND t.task = ? LIMIT 1", (task,))
            if row.fetchone() is not None:
                found.add(task)
        return found

    def start_failures(self, group: int) -> int:
        """Arrays of ``group`` in a row whose tasks never claimed (0 after one that did)."""
        row = self._conn.execute(
            "SELECT start_failures FROM groups WHERE grp = ?", (group,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def group_states(self) -> list[GroupState]:
        """The groups with start failures, a failed submission or stuck tasks (others are fine)."""
        rows = self._conn.execute(
            "SELECT grp, start_failures, start_error, submit_error, queue_error FROM groups"
            " WHERE start_failures > 0 OR submit_error IS NOT NULL OR queue_error IS NOT NULL"
            " ORDER BY grp"
        ).fetchall()
        return [GroupState(*row) for row in rows]

    def dependencies(self) -> dict[int, list[int]]:
        """Learner -> the learners it waits on, as given to :meth:`create`."""
        graph: dict[int, list[int]] = {}
        rows = self._conn.execute(
            "SELECT learner, depends_on FROM dependencies ORDER BY learner, depends_on"
        )
        for learner, dep in rows:
            graph.setdefault(learner, []).append(dep)
        return graph

    def running_tasks(self) -> dict[str, int]:
        """Task id -> the learner it holds, for every running learner."""
        rows = self._conn.execute("SELECT task, idx FROM learners WHERE state = 'running'")
        return dict(rows.fetchall())

    def n_claimable(self, group: int = 0) -> int:
        """Learners of ``group`` a claim could get now (waiting, every dependency done)."""
        (n,) = self._conn.execute(f"SELECT count(*) {CLAIMABLE}", (group,)).fetchone()
        return int(n)

    def learner_groups(self) -> list[int]:
        """The resource group of every learner, by index."""
        return [g for (g,) in self._conn.execute("SELECT grp FROM learners ORDER BY idx")]

    def counts(self) -> dict[str, int]:
        """The number of learners in every state, zeros included."""
        rows = self._conn.execute("SELECT state, n FROM state_counts").fetchall()
        found = dict(rows)
        return {state.value: int(found[state.value]) for state in LearnerState}

    def stage_counts(self) -> dict[int, int]:
        """How many stages of the goal learners reached -> how many learners reached that many.

        One pass (a GROUP BY): the learners that reached stage k are those of every count
        from k up.
        """
        rows = self._conn.execute("SELECT stage, count(*) FROM learners GROUP BY stage")
        return {int(stage): int(n) for stage, n in rows}

    def sweep_values(self) -> list[tuple[int, LearnerState, int | None, float | None]]:
        """``(index, state, npoints, loss)`` of every learner, by index: the sweep's overview.

        One query, the few columns only (not a :class:`LearnerRow` each).
        """
        rows = self._conn.execute("SELECT idx, state, npoints, loss FROM learners ORDER BY idx")
        return [(int(i), LearnerState(state), npoints, loss) for i, state, npoints, loss in rows]

    def learners(
        self, state: LearnerState | None = None, limit: int | None = None
    ) -> list[LearnerRow]:
        """Every learner (of ``state``; the first ``limit`` of them), by index."""
        where, params = ("WHERE state = ?", [LearnerState(state).value]) if state else ("", [])
        query = f"SELECT {ROW_COLUMNS} FROM learners {where} ORDER BY idx"  # noqa: S608 - constants only
        if limit is not None:
            query = f"{query} LIMIT {int(limit)}"
        rows = self._conn.execute(query, params).fetchall()
        return [LearnerRow(r[0], r[1], LearnerState(r[2]), *r[3:]) for r in rows]

    def learner_page(
        self,
        *,
        sort_by: str = "index",
        descending: bool = False,
        state: LearnerState | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[LearnerRow]:
        """One page of learners (of ``state``, or all) in ``SORT_KEYS`` order, empty values last.

        One query with sqlite's top-N sort: the status panel pages through 100,000 learners
        without building a row object for each.
        """
        if sort_by not in SORT_KEYS:
            raise ConfigError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")
        where, params = ("WHERE state = ?", [LearnerState(state).value]) if state else ("", [])
        direction = "DESC" if descending else "ASC"
        rows = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM learners {where}"  # noqa: S608 - SORT_KEYS only
            f" ORDER BY {SORT_KEYS[sort_by]} {direction} NULLS LAST, idx LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return [LearnerRow(r[0], r[1], LearnerState(r[2]), *r[3:]) for r in rows]

    def last_task(self, learner: int) -> str | None:
        """The task that held ``learner`` most recently; None if no task has claimed it."""
        idx = as_index(learner, self._count(self._conn), "last_task")
        row = self._conn.execute(
            "SELECT task FROM tasks WHERE learner = ? ORDER BY started DESC LIMIT 1", (idx,)
        ).fetchone()
        return None if row is None else str(row[0])

    def last_tasks(self, learners: Collection[int] | None = None) -> dict[int, str]:
        """Learner -> the task that held it most recently (of ``learners``; None: all).

        A failed or waiting learner no longer names its task (``LearnerRow.task``); this
        still does. Learners no task has claimed are left out. One pass over the tasks table
        (per 500 learners asked for).
        """
        # sqlite takes the bare column `task` from the row that has the max(started).
        query = "SELECT learner, task, max(started) FROM tasks {} GROUP BY learner"
        if learners is None:
            rows = self._conn.execute(query.format("")).fetchall()
        else:
            rows = [
                row
                for chunk in _chunks(learners)
                for row in self._conn.execute(
                    query.format(f"WHERE learner IN ({','.join('?' * len(chunk))})"), chunk
                )
            ]
        return {int(learner): str(task) for learner, task, _ in rows}

    def states_of(self, learners: Collection[int]) -> dict[int, LearnerState]:
        """Learner -> its state, for ``learners`` (indices the run does not have left out)."""
        found: dict[int, LearnerState] = {}
        for chunk in _chunks(learners):
            rows = self._conn.execute(
                f"SELECT idx, state FROM learners WHERE idx IN ({','.join('?' * len(chunk))})",  # noqa: S608 - placeholders only
                chunk,
            )
            found.update((int(idx), LearnerState(state)) for idx, state in rows)
        return found

    def tasks(self) -> list[TaskRow]:
        """Every hold of a learner by a task, in the order they started."""
        rows = self._conn.execute(
            "SELECT task, learner, attempt, host, pid, started, finished, outcome FROM tasks"
            " ORDER BY started, task"
        ).fetchall()
        return [TaskRow(*row) for row in rows]

    def holds_of(
        self,
        learners: Collection[int] | None = None,
        outcomes: Collection[str] | None = None,
        limit: int = 3,
        *,
        first: str | None = None,
    ) -> list[TaskRow]:
        """The latest ``limit`` holds (of ``learners``, ending in ``outcomes``; None: any).

        Newest first, those that ended in ``first`` before the others: the log viewer's
        "failed jobs only" asks for the NOT_CLEAN outcomes, failed first (the learner's own
        exception, ahead of tasks lost, expired or killed).
        """
        where, params = [], []
        for column, values in (("learner", learners), ("outcome", outcomes)):
            if values is not None:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                params += list(values)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "" if first is None else "outcome = ? DESC, "
        rows = self._conn.execute(
            "SELECT task, learner, attempt, host, pid, started, finished, outcome FROM tasks"  # noqa: S608 - placeholders only
            f" {clause} ORDER BY {order}started DESC, task LIMIT ?",
            [*params, *([] if first is None else [first]), limit],
        ).fetchall()
        return [TaskRow(*row) for row in rows]

    def usage(self, now: float) -> Usage:
        """What the tasks table and the heartbeats say the run used, up to ``now``.

        One pass over each table: the holds' durations (an open hold lasts until ``now``)
        weighted by their learner's latest CPU sample, and the running learners' samples.
        """
        held_s, cpu_s = self._conn.execute(
            "SELECT coalesce(sum(coalesce(t.finished, :now) - t.started), 0),"
            " coalesce(sum((coalesce(t.finished, :now) - t.started) * coalesce(l.cpu, 0)), 0)"
            " / 100 FROM tasks t JOIN learners l ON l.idx = t.learner",
            {"now": now},
        ).fetchone()
        sampled, mean_cpu, memory = self._conn.execute(
            "SELECT count(cpu), avg(cpu), coalesce(sum(memory), 0) FROM learners"
            " WHERE state = 'running'"
        ).fetchone()
        first, last = self._conn.execute(
            "SELECT (SELECT min(submitted) FROM arrays), (SELECT max(finished) FROM learners)"
        ).fetchone()
        return Usage(
            held_s=float(held_s),
            cpu_s=float(cpu_s),
            n_sampled=int(sampled),
            mean_cpu_percent=None if mean_cpu is None else float(mean_cpu),
            memory_bytes=int(memory),
            first_submitted=first,
            last_finished=last,
        )

    def allocation_spans(self, now: float) -> dict[str, tuple[float, float]]:
        """Packed allocation (task id) -> (span, held) in seconds, up to ``now``.

        The span is from its workers' first claim to their last hold's end; held sums their
        holds. Tasks of one worker (no ``@rank``) are left out.
        """
        rows = self._conn.execute(
            "SELECT substr(task, 1, instr(task, '@') - 1) AS allocation,"
            " max(coalesce(finished, :now)) - min(started),"
            " sum(coalesce(finished, :now) - started)"
            " FROM tasks WHERE instr(task, '@') > 0 GROUP BY allocation",
            {"now": now},
        )
        return {allocation: (float(span), float(held)) for allocation, span, held in rows}

    def first_claims(self) -> dict[str, float]:
        """Task (or packed worker) id -> when it first claimed a learner."""
        return dict(self._conn.execute("SELECT task, min(started) FROM tasks GROUP BY task"))

    def array_submissions(self) -> dict[str, float]:
        """Every array the run submitted -> when it was submitted.

        An id the scheduler gave out again: its latest array's.
        """
        return dict(
            self._conn.execute("SELECT array_id, submitted FROM arrays ORDER BY submission")
        )

    def fname(self, learner: int) -> str:
        """The data file of ``learner``."""
        idx = as_index(learner, self._count(self._conn), "fname")
        (fname,) = self._conn.execute("SELECT fname FROM learners WHERE idx = ?", (idx,)).fetchone()
        return str(fname)

    def fnames(self) -> list[str]:
        """Every learner's data file, by index."""
        return [f for (f,) in self._conn.execute("SELECT fname FROM learners ORDER BY idx")]

    def _count(self, c: sqlite3.Connection) -> int:
        (n,) = c.execute("SELECT sum(n) FROM state_counts").fetchone()
        return int(n)


def _chunks(values: Collection[int], size: int = 500) -> list[list[int]]:
    """``values`` (sorted, once each) in lists of ``size``: sqlite caps a query's parameters."""
    ordered = sorted(set(values))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
