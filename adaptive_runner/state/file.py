"""The state.sqlite file itself: created, refused when it is no run's state, watched in use."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from adaptive_runner.errors import ConfigError, StateFileError
from adaptive_runner.state.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    connect,
    damaged,
    migrate,
    schema_version,
    upgrade,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence


def check_existing(path: Path) -> os.stat_result:
    """``path``'s stat if it is a file worth opening, else ConfigError or RunStateError.

    A missing file is a ConfigError (no run there); one that is odd or empty is a
    RunStateError. An empty file is refused here: sqlite would read it as an empty database,
    and setting WAL mode would then write a new one over it.
    """
    try:
        found = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: create the run first") from None
    if not stat.S_ISREG(found.st_mode):
        raise damaged(path, "is not a regular file")
    if found.st_size == 0:
        raise damaged(path, "is empty (0 bytes)")
    return found


def read_meta(conn: sqlite3.Connection, path: Path, *, upgrade: bool) -> int:
    """Check the schema version of the file ``conn`` reads; return its ``max_fails``.

    With ``upgrade``, an older file is migrated first (a manager opening it). Readers leave it
    as it is and refuse it: a manager of the older version may still be using it.
    """
    version = migrate(conn) if upgrade else schema_version(conn)
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{path} has schema {version!r}; this version reads {SCHEMA_VERSION}"
            + (" and older" if upgrade else " (a manager upgrades older ones)")
            + ": use the adaptive_runner version that created the run"
        )
    (max_fails,) = conn.execute("SELECT value FROM meta WHERE key = 'max_fails'").fetchone()
    return int(max_fails)


def header_problem(path: Path) -> str | None:
    """What is wrong with the first page of ``path`` as the file holds it now; None: nothing.

    Read by sqlite with ``immutable=1``: from the file itself (not the WAL), without locks or
    -shm. A plain open() and close() of the file would drop every sqlite lock this process
    holds on it (POSIX locks belong to the process), and another process could then delete
    the live WAL; sqlite's own close keeps them. ``writable_schema`` lets a page count ahead
    of the file size pass: a checkpoint writes page 1 before it extends the file.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as e:
        return f"cannot be opened ({e})"
    try:
        conn.execute("PRAGMA writable_schema = ON")
        (cookie,) = conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as e:
        return f"is no sqlite database any more ({e})"
    finally:
        conn.close()
    return None if cookie else "holds no database any more (its first page is empty)"


class StateFile:
    """The state file as a :class:`Database` opened it, to notice what happens to it since.

    A file that fails its check once stays failed, and a writer never writes it again: not a
    checkpoint, not sqlite's own checkpoint when the last connection to the file closes (see
    :meth:`close`). The file stays as the damage left it, and a backup restored over it in
    place is not overwritten with the old WAL.

    Parameters
    ----------
    path
        The run's state.sqlite.
    opened
        Its stat when it was opened: the inode sqlite reads and the size it had.
    writer
        Whether the Database writes the file: it then keeps a read-only connection open
        beside its own (the guard), so that closing its own never checkpoints a damaged file.

    """

    def __init__(self, path: Path, opened: os.stat_result, *, writer: bool) -> None:
        self.path = path
        self._seen = opened
        self.failed: str | None = None  # what the first failed check found
        self._guard = _guard(path) if writer else None

    def check(self) -> None:
        """Raise StateFileError if the file was deleted, replaced or damaged since opening.

        Cheap enough to call every second: a stat, an access check and a read of the first
        page. sqlite goes on committing into its WAL and cache after the file is truncated or
        deleted, so without this a manager would answer for a state that is gone. Once it
        failed it fails for good: a file restored in place looks intact again, but the WAL
        and cache of this connection are not its own.
        """
        if self.failed is None:
            self.failed = self._problem()
        if self.failed is not None:
            raise damaged(
                self.path,
                f"{self.failed} while the run used it; the managers stopped, so that nothing "
                "more is recorded into a state that is gone",
                StateFileError,
            )

    def writable(self) -> bool:
        """Whether a writer may still write the file: it passes its check now (readers: no)."""
        if self._guard is None:
            return False
        try:
            self.check()
        except StateFileError:
            return False
        return True

    def close(self, conn: sqlite3.Connection) -> None:
        """Close ``conn`` (the Database's connection) and the guard.

        The last connection to a WAL database that closes copies the WAL into the file. For an
        intact file that is wanted (the guard goes first); for one that failed its check it
        would write the old WAL's pages into whatever is at that inode now: so ``conn`` closes
        while the guard still holds its shared lock, and then the guard, which only read and
        never checkpoints.
        """
        guard, self._guard = self._guard, None
        if guard is not None and self.failed is None:
            guard.close()
        conn.close()
        if guard is not None:
            guard.close()

    def _problem(self) -> str | None:
        """What is wrong with the file at our path now (None: it is the one opened, intact)."""
        try:
            now = self.path.stat()
        except FileNotFoundError:
            return "was deleted"
        except OSError as e:
            return f"cannot be read ({e.strerror})"
        return self._changed(now) or header_problem(self.path)

    def _changed(self, now: os.stat_result) -> str | None:
        """How the file at our path differs from the one opened (None: the same, intact)."""
        seen = self._seen
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
            return "was replaced by another file"
        # The file never shrinks (no row is ever deleted, no VACUUM): smaller is truncated.
        if now.st_size < seen.st_size:
            return f"was truncated from {seen.st_size} to {now.st_size} bytes"
        if not os.access(self.path, os.R_OK):
            return "is no longer readable"
        self._seen = now
        return None


def _guard(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path`` that holds sqlite's shared lock on it until closed.

    In WAL mode every connection keeps a shared lock on the file once it has read; the last
    one to close takes the lock exclusively and checkpoints. While this one is open no other
    connection of the file is the last, and being read-only it never checkpoints itself.
    """
    guard = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        guard.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
    except BaseException:
        guard.close()
        raise
    return guard


def create_file(
    target: Path,
    names: Sequence[str],
    groups: Sequence[int],
    graph: Mapping[int, Collection[int]],
    *,
    max_fails: int,
) -> sqlite3.Connection:
    """Write a new run's state file (learners waiting, dependencies, meta); its connection.

    The name is claimed atomically (two runs never share a file); on any failure nothing is
    left behind. The schema version goes in last, so a half-created file is refused by open.
    """
    try:  # claim the name atomically: two runs never share a database
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise ConfigError(
            f"{target} already exists: use Database.open to continue that run"
        ) from None
    conn = None
    try:
        conn = connect(target, mode="rwc")
        conn.executescript(SCHEMA)
        # The schema version goes in last: a half-created file is refused by open().
        conn.execute("BEGIN IMMEDIATE")
        version = upgrade(conn, 1)
        conn.executemany(
            "INSERT INTO learners (idx, fname, grp, unfinished_deps) VALUES (?, ?, ?, ?)",
            (
                (i, name, grp, len(graph.get(i, ())))
                for i, (name, grp) in enumerate(zip(names, groups, strict=True))
            ),
        )
        conn.executemany(
            "INSERT INTO dependencies (depends_on, learner) VALUES (?, ?)",
            ((dep, learner) for learner, deps in graph.items() for dep in deps),
        )
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("max_fails", max_fails), ("schema", version)],
        )
        conn.execute("COMMIT")
        # Move the bulk insert from the WAL into the file now, not in the first request.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:
        if conn is not None:
            conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        raise
    return conn
