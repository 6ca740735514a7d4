"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

And the check files that prove a directory writable (and, over SSH, shared) before a run
starts.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

CHECK_FILE_PREFIX = ".adaptive-runner-check-"


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = None,
    mtime_ns: int | None = None,
) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    The bytes go to a temporary file in the same directory, which is fsynced and renamed over
    ``path``; then the directory is fsynced so the rename itself survives a power cut.
    Any failure raises (``OSError``) and removes the temporary file.

    Parameters
    ----------
    path
        The file to create or replace. Its directory is created if missing.
    data
        The complete new content.
    mode
        Permission bits for the new file (e.g. ``0o600`` for secrets); default keeps umask.
    mtime_ns
        The new file's modification time (access time too), in nanoseconds since the epoch;
        default: when it is written. Set before the rename, so the file never shows another.

    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mtime_ns is not None:
                os.utime(f.fileno(), ns=(mtime_ns, mtime_ns))
            os.fsync(f.fileno())
        if mode is not None:
            Path(tmp).chmod(mode)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename or a new file) to disk."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_check_file(directory: Path, text: str) -> Path:
    """Create a new file holding ``text`` in ``directory``, under a name no other file has.

    Proves that ``directory`` takes new files and their bytes (a read-only file system, a
    missing permission, a full disk or quota raise ``OSError``); the caller removes it.
    """
    path = directory / f"{CHECK_FILE_PREFIX}{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w") as f:  # closing writes the bytes: a full disk raises here
            f.write(text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
