"""The steps of the transitions in database.py: their SQL statements and shared helpers.

Each runs inside the transaction of one ``Database`` method, which commits before the reply
is sent; none commits or reads anything outside the connection it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from adaptive_runner.state.schema import CLAIM_ORDER, CLAIMABLE, CURRENT_HOLDS, LearnerState

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Mapping, Sequence

    from adaptive_runner.common.vocabulary import Outcome


CLAIM: Final = f"""
UPDATE learners SET state = 'running', task = ?, host = ?, pid = ?, attempts = attempts + 1,
    last_heartbeat = ?, started = ?, finished = NULL
WHERE idx = (SELECT idx {CLAIMABLE} ORDER BY {CLAIM_ORDER} LIMIT 1)
RETURNING idx, fname, attempts, npoints, stage
"""  # noqa: S608 - built from constants only
DEPENDENTS: Final = """
WITH RECURSIVE below(i) AS (
    SELECT learner FROM dependencies WHERE depends_on = :idx
    UNION SELECT d.learner FROM dependencies AS d JOIN below ON d.depends_on = below.i
)
UPDATE learners SET state = :state, error = :error, finished = :now
WHERE state = 'waiting' AND idx IN (SELECT i FROM below) RETURNING idx
"""
# Leaving 'running' without reaching the goal; a failure may exhaust max_fails (-> failed).
DROP: Final = """
UPDATE learners SET
    failures = failures + :failure,
    state = CASE WHEN failures + :failure >= :max_fails THEN 'failed' ELSE 'waiting' END,
    error = CASE WHEN :failure THEN :detail ELSE error END,
    finished = CASE WHEN failures + :failure >= :max_fails THEN :now ELSE NULL END,
    task = NULL, host = NULL, pid = NULL
WHERE idx = :idx AND task = :task AND state = 'running' RETURNING state, failures
"""


RETRY: Final = """
UPDATE learners SET state = 'waiting', attempts = 0, failures = 0, error = NULL,
    finished = NULL, task = NULL, host = NULL, pid = NULL, paused = 0
WHERE idx = ?
"""


def count_done(c: sqlite3.Connection, learner: int) -> None:
    """``learner`` is done: its dependents wait on one learner fewer."""
    c.execute(
        "UPDATE learners SET unfinished_deps = unfinished_deps - 1 WHERE idx IN"
        " (SELECT learner FROM dependencies WHERE depends_on = ?)",
        (learner,),
    )


def retry_set(
    c: sqlite3.Connection, seed: set[int] | None, states: Sequence[str]
) -> tuple[dict[int, tuple[str, str | None]], dict[int, int]]:
    """Which learners a retry of ``seed`` (None: all in ``states``) puts back, and which not.

    Returns ``{learner: (state, error)}`` to put back and ``{learner: dependency}`` for the
    learners of ``seed`` and their dependents that stay: a dependency of theirs stays failed
    or cancelled, so they could never start. Dependents in ``states`` come back with the
    learners they wait on (they failed or were cancelled because of them).
    """
    marks = ", ".join("?" * len(states))
    retryable: dict[int, tuple[str, str | None]] = {
        idx: (state, error)
        for idx, state, error in c.execute(
            f"SELECT idx, state, error FROM learners WHERE state IN ({marks})",  # noqa: S608
            list(states),
        )
    }
    ended = {idx for (idx,) in c.execute(_ENDED)}
    waits_on: dict[int, list[int]] = {}
    dependents: dict[int, list[int]] = {}
    for learner, dep in c.execute("SELECT learner, depends_on FROM dependencies"):
        waits_on.setdefault(learner, []).append(dep)
        dependents.setdefault(dep, []).append(learner)
    chosen = set(retryable) if seed is None else seed & retryable.keys()
    frontier = list(chosen)
    while frontier:
        for learner in dependents.get(frontier.pop(), ()):
            if learner in retryable and learner not in chosen:
                chosen.add(learner)
                frontier.append(learner)
    blocked: dict[int, int] = {}
    changed = True
    while changed:  # until no chosen learner waits on one that stays failed or cancelled
        changed = False
        for learner in sorted(chosen):
            stuck = [d for d in waits_on.get(learner, ()) if d in ended and d not in chosen]
            if stuck:
                chosen.remove(learner)
                blocked[learner] = stuck[0]
                changed = True
    return {idx: retryable[idx] for idx in sorted(chosen)}, blocked


_ENDED: Final = "SELECT idx FROM learners WHERE state IN ('failed', 'cancelled')"


def put_back_learners(
    c: sqlite3.Connection, put_back: Mapping[int, tuple[str, str | None]], now: float
) -> None:
    """Return ``{learner: (state, error)}`` to waiting, each with a ``retried`` event."""
    c.executemany(RETRY, ((idx,) for idx in put_back))
    for idx, (state, error) in put_back.items():
        last_line = (error or "").strip().rsplit("\n", 1)[-1]
        detail = f"was {state}: {last_line}" if last_line else f"was {state}"
        add_event(c, now, idx, None, kind="retried", detail=detail)


def complete(
    c: sqlite3.Connection,
    learner: int,
    row: tuple[int, float | None],
    *,
    detail: str,
    now: float,
    stages: int,
) -> bool:
    """Mark ``learner`` done with ``row`` = (npoints, loss) if it is waiting; whether it was.

    Done, it reached every one of the goal's ``stages``.
    """
    cur = c.execute(
        "UPDATE learners SET state = 'done', npoints = ?, loss = ?, finished = ?,"
        " stage = max(stage, ?) WHERE idx = ? AND state = 'waiting'",
        (*row, now, stages, learner),
    )
    if cur.rowcount == 0:
        return False
    count_done(c, learner)
    add_event(c, now, learner, None, kind="done", detail=detail)
    return True


def reopen(c: sqlite3.Connection, learner: int, *, detail: str, now: float, stages: int) -> bool:
    """Put a done ``learner`` back to waiting (a stricter goal); whether it was done.

    Its dependents wait on it again; attempts and failures restart at 0, as on a retry. It
    works on the last of the goal's ``stages`` (the earlier ones it reached).
    """
    cur = c.execute(
        "UPDATE learners SET state = 'waiting', attempts = 0, failures = 0, error = NULL,"
        " finished = NULL, task = NULL, host = NULL, pid = NULL, stage = min(stage, ?)"
        " WHERE idx = ? AND state = 'done'",
        (stages - 1, learner),
    )
    if cur.rowcount == 0:
        return False
    c.execute(
        "UPDATE learners SET unfinished_deps = unfinished_deps + 1 WHERE idx IN"
        " (SELECT learner FROM dependencies WHERE depends_on = ?)",
        (learner,),
    )
    add_event(c, now, learner, None, kind="reopened", detail=detail)
    return True


def add_event(
    c: sqlite3.Connection,
    now: float,
    learner: int | None,
    task: str | None,
    *,
    kind: str,
    detail: str,
) -> None:
    """Record something worth keeping about a learner (a failure, a cancel, ...)."""
    c.execute(
        "INSERT INTO events (time, learner, task, kind, detail) VALUES (?, ?, ?, ?, ?)",
        (now, learner, task, kind, detail),
    )


def finish_task(
    c: sqlite3.Connection, task: str, learner: int, outcome: Outcome, now: float
) -> None:
    """Close ``task``'s open hold on ``learner`` with ``outcome``."""
    c.execute(
        "UPDATE tasks SET finished = ?, outcome = ? WHERE task = ? AND learner = ?"
        " AND finished IS NULL",
        (now, outcome, task, learner),
    )


def repeated(c: sqlite3.Connection, task: str, learner: int, outcome: Outcome) -> bool:
    """Whether ``task`` already ended its hold on ``learner`` with ``outcome`` (a retry).

    Only its holds in unfinished arrays: one under the same id in an array that ended is
    another task's (``CURRENT_HOLDS``).
    """
    row = c.execute(
        f"SELECT 1 {CURRENT_HOLDS} AND t.task = ? AND t.learner = ? AND t.outcome = ?",
        (task, learner, outcome),
    ).fetchone()
    return row is not None


def mark_dependents(c: sqlite3.Connection, learner: int, state: LearnerState, now: float) -> None:
    """Fail or cancel everything waiting (directly or not) on ``learner``: it can never start."""
    error = f"dependency {learner} {state.value}"
    rows = c.execute(
        DEPENDENTS, {"idx": learner, "state": state.value, "error": error, "now": now}
    ).fetchall()
    for (idx,) in rows:
        add_event(c, now, idx, None, kind=state.value, detail=error)
