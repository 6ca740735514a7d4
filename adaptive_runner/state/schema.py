"""The sqlite file of a run: schema, migrations, connection settings, row types, input checks."""

from __future__ import annotations

import operator
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Literal

from adaptive_runner.errors import ConfigError, RunStateError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path


SCHEMA_VERSION: Final = 6
_BUSY_TIMEOUT_S: Final = 60.0


class LearnerState(StrEnum):
    """Where a learner stands; done, failed and cancelled are final."""

    WAITING = "waiting"
    """Claimable once its dependencies are done: the job manager submits tasks for it."""
    RUNNING = "running"
    """Held by one worker (its task in ``task``), until done, released, failed or lost."""
    DONE = "done"
    """Reached the goal (or met it on disk at start); final, its data file kept."""
    FAILED = "failed"
    """Failed ``max_fails`` times (or could not start); final until ``retry``."""
    CANCELLED = "cancelled"
    """Cancelled by the user, its data kept. Cancelled alone: final until
    ``retry(cancelled=True)``; with the whole run (``paused``): until the run starts again."""


@dataclass(frozen=True, slots=True)
class LearnerRow:
    """One learner as the widget and the run manager see it."""

    index: int
    fname: str
    state: LearnerState
    task: str | None  # the task holding it (running) or the one that finished it (done)
    host: str | None
    pid: int | None
    npoints: int | None
    loss: float | None
    attempts: int  # jobs that held it
    failures: int  # crashes, lost jobs, expired leases and fail messages
    last_heartbeat: float | None
    error: str | None  # the latest failure's reason or traceback
    started: float | None
    finished: float | None
    cpu: float | None
    memory: int | None
    stage: int = 0  # the stages of a staged goal it reached (done: all; a plain goal: 1)


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """The learner a claim gave a task: its index, its data file and the stage it works on."""

    learner: int
    fname: str
    stage: int = 0  # the stages it reached so far: it works towards goal stage ``stage``


@dataclass(frozen=True, slots=True)
class ArrayRow:
    """A recorded array that its tasks may claim under: one submission to a scheduler."""

    submission: int  # the row's own number: a scheduler may give its array_id out again
    array_id: str
    group: int
    n_tasks: int


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One hold of a learner by an array task (a task that claimed twice has two rows)."""

    task: str
    learner: int
    attempt: int  # the learner's attempts count when this task claimed it
    host: str | None
    pid: int | None
    started: float
    finished: float | None
    outcome: str | None  # an Outcome; None while the task holds the learner


@dataclass(frozen=True, slots=True)
class Usage:
    """What the run used so far, from the tasks table and the learners' latest heartbeats."""

    held_s: float  # seconds learners were held by tasks, summed over the holds
    cpu_s: float  # each hold's seconds times its learner's latest CPU fraction, summed
    n_sampled: int  # running learners with a CPU sample (a heartbeat)
    mean_cpu_percent: float | None  # their mean CPU % (of one core); None without any
    memory_bytes: int  # resident memory of the running learners' workers, summed
    first_submitted: float | None  # the run's first array; None before any
    last_finished: float | None  # the latest learner to finish (done, failed, cancelled)


@dataclass(frozen=True, slots=True)
class GroupState:
    """What the job manager found wrong with a resource group's jobs (nothing: all None/0)."""

    group: int
    start_failures: int  # arrays in a row whose tasks all ended without reaching the manager
    start_error: str | None  # why the last of them failed, from its output and exit state
    submit_error: str | None  # the last failed submission, cleared by the next that works
    queue_error: str | None = None  # tasks pending for a reason that may never pass

    def messages(self) -> list[str]:
        """What is wrong, in words: for the CLI, the panel and :meth:`Run.problems`."""
        found = []
        if self.start_failures:
            found.append(self.start_error or f"jobs of group {self.group} cannot start")
        if self.queue_error:
            found.append(self.queue_error)
        if self.submit_error:
            found.append(
                f"the last submission for group {self.group} failed (tried again with "
                f"back-off, after asking the queue for it): {self.submit_error}"
            )
        return found


# The order claims take a group's claimable learners in: the least advanced, then the largest
# loss last reported (unknown first: never measured, or not finite), then the index.
CLAIM_ORDER: Final = "stage, loss IS NOT NULL, loss DESC, idx"

SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE learners (
    idx INTEGER PRIMARY KEY,
    fname TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'waiting',
    grp INTEGER NOT NULL DEFAULT 0,    -- resource group: only its arrays' tasks claim it
    unfinished_deps INTEGER NOT NULL,  -- dependencies not yet done; claimable at 0
    task TEXT, host TEXT, pid INTEGER,
    npoints INTEGER, loss REAL, cpu REAL, memory INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_heartbeat REAL, error TEXT, started REAL, finished REAL
);
-- claim is "first claimable learner": an index holding exactly the claimable ones.
CREATE INDEX learners_claimable ON learners (grp, idx)
    WHERE state = 'waiting' AND unfinished_deps = 0;
CREATE INDEX learners_by_task ON learners (task) WHERE state = 'running';
-- Lease expiry reads the running learners through learners_by_task (partial: running only);
-- an index on last_heartbeat would cost a page write on every heartbeat for nothing.
CREATE TABLE dependencies (
    depends_on INTEGER NOT NULL, learner INTEGER NOT NULL, PRIMARY KEY (depends_on, learner)
) WITHOUT ROWID;
CREATE TABLE arrays (
    array_id TEXT PRIMARY KEY, grp INTEGER NOT NULL DEFAULT 0, n_tasks INTEGER NOT NULL,
    script TEXT NOT NULL, submitted REAL NOT NULL, finished REAL
);
CREATE INDEX arrays_active ON arrays (grp, submitted) WHERE finished IS NULL;
-- One row per hold of a learner by a task; clustered by task, so no extra index to update.
CREATE TABLE tasks (
    task TEXT NOT NULL, learner INTEGER NOT NULL, attempt INTEGER NOT NULL,
    host TEXT, pid INTEGER, started REAL NOT NULL, finished REAL, outcome TEXT,
    PRIMARY KEY (task, learner, attempt)
) WITHOUT ROWID;
-- What went wrong or changed outside the normal claim -> done (which the tasks table records).
CREATE TABLE events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, learner INTEGER, task TEXT,
    kind TEXT NOT NULL, detail TEXT
);
-- Counts per state, kept by triggers so that counts() never scans the learners.
CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO state_counts VALUES
    ('waiting', 0), ('running', 0), ('done', 0), ('failed', 0), ('cancelled', 0);
CREATE TRIGGER learners_count_insert AFTER INSERT ON learners BEGIN
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER learners_count_update AFTER UPDATE OF state ON learners
WHEN OLD.state <> NEW.state BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
"""
# Schema 2: the tag each array was submitted under, how often its tasks reached the database
# manager (claims, with or without work), and per group the start failures in a row.
# Migrations bring a file of schema N up to N + 1; create() applies them too, so a new file
# and a migrated one have the same layout.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "ALTER TABLE arrays ADD COLUMN tag TEXT",
        "ALTER TABLE arrays ADD COLUMN claims INTEGER NOT NULL DEFAULT 0",
        # The learner's points when the task claimed it: a release without more made none.
        "ALTER TABLE tasks ADD COLUMN npoints_start INTEGER",
        """CREATE TABLE groups (
            grp INTEGER PRIMARY KEY,
            start_failures INTEGER NOT NULL DEFAULT 0,  -- arrays in a row never claiming
            start_error TEXT,                           -- what the last of them said
            submit_error TEXT                           -- the last failed submission
        )""",
    ),
    # Schema 3: why a group's tasks may never leave the queue (a scheduler's pending reason).
    2: ("ALTER TABLE groups ADD COLUMN queue_error TEXT",),
    # Schema 4: cancelled with the whole run (a pause that a rerun or resume ends), not alone.
    3: ("ALTER TABLE learners ADD COLUMN paused INTEGER NOT NULL DEFAULT 0",),
    # Schema 5: an array is one submission, not one id. A scheduler that lost its state
    # (slurmctld's, a PBS server's) gives out ids again, so a recorded id may come back for
    # a new array: its own row, numbered by ``submission``. At most one row per id is
    # unfinished (the one the id names now), and each hold names the submission of the
    # array its task claimed under (0: held before schema 5), part of its key: two tasks
    # under one id may hold the same learner at the same attempt (a rerun starts attempts
    # again).
    4: (
        """CREATE TABLE arrays_by_submission (
            submission INTEGER PRIMARY KEY,
            array_id TEXT NOT NULL, grp INTEGER NOT NULL DEFAULT 0, n_tasks INTEGER NOT NULL,
            script TEXT NOT NULL, submitted REAL NOT NULL, finished REAL, tag TEXT,
            claims INTEGER NOT NULL DEFAULT 0
        )""",
        (
            "INSERT INTO arrays_by_submission (array_id, grp, n_tasks, script, submitted,"
            " finished, tag, claims) SELECT array_id, grp, n_tasks, script, submitted, finished,"
            " tag, claims FROM arrays ORDER BY submitted, rowid"
        ),
        "DROP TABLE arrays",
        "ALTER TABLE arrays_by_submission RENAME TO arrays",
        "CREATE INDEX arrays_active ON arrays (grp, submitted) WHERE finished IS NULL",
        "CREATE UNIQUE INDEX arrays_live ON arrays (array_id) WHERE finished IS NULL",
        "CREATE INDEX arrays_by_id ON arrays (array_id)",
        """CREATE TABLE tasks_by_submission (
            task TEXT NOT NULL, learner INTEGER NOT NULL, attempt INTEGER NOT NULL,
            host TEXT, pid INTEGER, started REAL NOT NULL, finished REAL, outcome TEXT,
            npoints_start INTEGER, submission INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (task, submission, learner, attempt)
        ) WITHOUT ROWID""",
        (
            "INSERT INTO tasks_by_submission (task, learner, attempt, host, pid, started,"
            " finished, outcome, npoints_start) SELECT task, learner, attempt, host, pid,"
            " started, finished, outcome, npoints_start FROM tasks"
        ),
        "DROP TABLE tasks",
        "ALTER TABLE tasks_by_submission RENAME TO tasks",
    ),
    # Schema 6: progressive sweeps. ``stage`` counts the stages of the goal a learner reached
    # (a done learner reached them all: a plain goal is one stage). A claim takes the least
    # advanced learner, then the largest loss last reported (unknown first), then the index:
    # the claimable index holds them in that order.
    5: (
        "ALTER TABLE learners ADD COLUMN stage INTEGER NOT NULL DEFAULT 0",
        "UPDATE learners SET stage = 1 WHERE state = 'done'",
        "DROP INDEX learners_claimable",
        (
            f"CREATE INDEX learners_claimable ON learners (grp, {CLAIM_ORDER})"
            " WHERE state = 'waiting' AND unfinished_deps = 0"
        ),
    ),
}


ROW_COLUMNS: Final = (
    "idx, fname, state, task, host, pid, npoints, loss, attempts, failures,"
    " last_heartbeat, error, started, finished, cpu, memory, stage"
)
# What learner_page may sort by: name -> SQL expression (never user text in the query).
SORT_KEYS: Final = {
    "index": "idx",
    "state": "CASE state WHEN 'running' THEN 0 WHEN 'waiting' THEN 1 WHEN 'failed' THEN 2"
    " WHEN 'cancelled' THEN 3 ELSE 4 END",
    "fname": "fname",
    "task": "task",
    "host": "host",
    "npoints": "npoints",
    "loss": "loss",
    "attempts": "attempts",
    "failures": "failures",
    "heartbeat_age": "-last_heartbeat",
}


def upgrade(conn: sqlite3.Connection, version: int) -> int:
    """Apply the migrations from schema ``version`` on, in the caller's transaction.

    Returns the version reached: ``SCHEMA_VERSION`` unless ``version`` is unknown.
    """
    while version in MIGRATIONS:
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        version += 1
    return version


def schema_version(conn: sqlite3.Connection) -> object:
    """The schema version the file records (None when it records none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return None if row is None else row[0]


def migrate(conn: sqlite3.Connection) -> object:
    """Bring an older file up to ``SCHEMA_VERSION`` in one transaction; return its version.

    The version is read again inside the write transaction, so two processes opening an old
    file at once migrate it once. Files of an unknown version are left as they are.
    """
    if schema_version(conn) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if type(found) is int and found in MIGRATIONS:
            found = upgrade(conn, found)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (found,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def connect(path: Path, *, mode: Literal["rwc", "rw", "ro"]) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (we BEGIN ourselves), WAL, with a 60 s busy timeout.

    ``mode``: ``rwc`` creates a new file, ``rw`` opens an existing one, ``ro`` reads one and
    never writes it (sqlite still creates its -wal and -shm files when they are missing).
    An existing file is checked to be a run's state (:func:`check_ours`) before anything could
    write to it: setting WAL mode on a file that is not ours, or an empty one, rewrites it.
    """
    conn = sqlite3.connect(
        f"file:{path}?mode={mode}",
        uri=True,
        timeout=_BUSY_TIMEOUT_S,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # one thread at a time, but not always the opening one
    )
    try:
        if mode != "rwc":
            check_ours(conn, path)
        if mode != "ro":  # a file of ours is in WAL mode already; a new one is set to it
            conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode, NORMAL loses no committed transaction when a process crashes (only on
        # an OS crash or power cut, the last few commits may roll back); FULL would fsync per
        # commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: the indexes of 100,000 learners
    except BaseException:
        conn.close()
        raise
    return conn


def damaged(path: Path, what: str, error: type[RunStateError] = RunStateError) -> RunStateError:
    """The error for a state file that is not (or no longer) a run's state, and what to do.

    One advice wherever it is found (opening, a manager's check, the CLI): ``error`` is
    :class:`StateFileError` for a file that went bad while a manager used it.
    """
    return error(
        f"{path} {what}: restore it from a backup, or start the run again with "
        "RunManager(..., overwrite=True) (the learners' data files are kept)"
    )


def check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Raise RunStateError unless ``conn`` reads a sqlite file with our ``meta`` table.

    sqlite checks the header ("SQLite format 3") and, against the file size, the page count
    it records; an empty file reads as an empty database, so it has no ``meta`` table.
    """
    try:
        schema_version(conn)
    except sqlite3.DatabaseError as e:
        problem = as_damage(path, e)
        if problem is None:
            raise
        raise problem from e


def as_damage(path: Path, error: sqlite3.DatabaseError) -> RunStateError | None:
    """``error`` as the RunStateError of a file that is no run's state; None if it is other."""
    match error.sqlite_errorname:
        case "SQLITE_NOTADB":
            return damaged(path, "is not a sqlite database (its header is wrong)")
        case "SQLITE_ERROR" if "no such table" in str(error):
            return damaged(path, f"is no run's state ({error})")
        case name if name.startswith("SQLITE_CORRUPT"):
            return damaged(path, f"is damaged (sqlite: {error})")
    return None


def as_index(value: object, n: int, what: str) -> int:
    """``value`` as a learner index (numpy integers welcome, bools not), else ConfigError."""
    if not isinstance(value, bool):
        try:
            index = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            if 0 <= index < n:
                return index
    raise ConfigError(f"{what}: {value!r} is not a learner index (0..{n - 1})")


def as_state(value: str) -> LearnerState:
    """``value`` (``"failed"``, ...) as a LearnerState, else a ConfigError listing the states."""
    try:
        return LearnerState(value)
    except ValueError:
        raise ConfigError(
            f"{value!r} is not a learner state: use one of {', '.join(LearnerState)}"
        ) from None


def validate_fnames(fnames: Sequence[str]) -> list[str]:
    """The file names as a list: at least one, each a non-empty str, no two alike."""
    names = list(fnames)
    if not names:
        raise ConfigError("fnames is empty: a run needs at least one learner")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"fnames[{i}] = {name!r}: every fname must be a non-empty str")
        if name in seen:
            raise ConfigError(
                f"fnames[{i}] = {name!r} is also fnames[{seen[name]}]: two learners would "
                "overwrite each other's data; give every learner its own file"
            )
        seen[name] = i
    return names


def validate_dependencies(dependencies: Mapping[int, Sequence[int]], n: int) -> dict[int, set[int]]:
    """Check indices, self-dependencies and cycles; return learner -> the learners it waits on."""
    graph: dict[int, set[int]] = {}
    for key, values in dependencies.items():
        learner = as_index(key, n, "dependencies key")
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            raise ConfigError(f"dependencies[{learner}] = {values!r}: give a list of indices")
        deps = {as_index(dep, n, f"dependencies[{learner}]") for dep in values}
        if learner in deps:
            raise ConfigError(
                f"dependencies[{learner}] contains {learner}: a learner cannot depend on itself"
            )
        if deps:
            graph[learner] = graph.get(learner, set()) | deps
    _refuse_cycles(graph, n)
    return graph


def validate_added_dependencies(
    dependencies: Mapping[int, Sequence[int]], n: int, added: int
) -> dict[int, set[int]]:
    """:func:`validate_dependencies` for ``added`` learners joining a run of ``n``.

    They are learners ``n`` to ``n + added - 1``; each may wait on any learner, old or new,
    but the old ones' dependencies stay as they were (a ConfigError names one given).
    """
    graph = validate_dependencies(dependencies, n + added)
    old = sorted(learner for learner in graph if learner < n)
    if old:
        raise ConfigError(
            f"dependencies[{old[0]}]: learner {old[0]} is in the run already, and what it "
            f"waits on cannot change; the learners added are {n}..{n + added - 1}"
        )
    return graph


def _refuse_cycles(graph: dict[int, set[int]], n: int) -> None:
    """Raise ConfigError naming one cycle of ``graph`` (learner -> learners it waits on)."""
    # Kahn's algorithm: whatever cannot be ordered lies on or behind a cycle.
    pending = {learner: len(deps) for learner, deps in graph.items()}
    dependents: dict[int, list[int]] = {}
    for learner, deps in graph.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(learner)
    ready = [i for i in range(n) if i not in pending]
    while ready:
        for learner in dependents.get(ready.pop(), ()):
            pending[learner] -= 1
            if pending[learner] == 0:
                del pending[learner]
                ready.append(learner)
    if pending:
        path = [min(pending)]
        while path[-1] not in path[:-1]:  # walk unordered dependencies until one repeats
            path.append(min(d for d in graph[path[-1]] if d in pending))
        cycle = " -> ".join(map(str, path[path.index(path[-1]) :]))
        raise ConfigError(
            f"dependencies contain a cycle ({cycle}, read 'depends on'); "
            "no learner on it could ever start"
        )


# Which learners a task of a group may claim (the claim and the queries count them).
CLAIMABLE: Final = "FROM learners WHERE state = 'waiting' AND unfinished_deps = 0 AND grp = ?"
# The holds of the tasks that may run now, for a WHERE that goes on with AND: those of
# unfinished arrays. A task id's holds in a finished array are another task's when the
# scheduler gave that array's id out again (submission 0: held before schema 5).
CURRENT_HOLDS: Final = (
    "FROM tasks t LEFT JOIN arrays a ON a.submission = t.submission WHERE a.finished IS NULL"
)
# The row an array id names now: its unfinished one, else its latest.
NAMED_ARRAY: Final = (
    "FROM arrays WHERE array_id = ? ORDER BY finished IS NOT NULL, submission DESC LIMIT 1"
)
