"""Proof, before a run starts, that its data files can be written where they are to go.

A data file that can never be written (a read-only file system, a directory without write
permission, a quota that stays exceeded) would cost a whole job per learner each time: it
computes to the goal, then its final save fails. So :func:`check_writable` creates and
removes a check file in each distinct directory of the fnames (one for 10,000 fnames in one
directory), and ``RunManager.start``/``resume`` refuse the run with a :class:`ConfigError`
naming each directory that refused, its fnames and the OS error. A directory that does not
exist yet is made by the first save, as always: its nearest existing parent must take it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from adaptive_runner.common.files import write_check_file
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_LISTED = 10  # directories named in the error; the rest are counted


def check_writable(fnames: Sequence[str]) -> None:
    """Raise a ConfigError unless every directory of ``fnames`` takes a new file.

    ``fnames`` are absolute. Each distinct directory is probed once (its nearest existing
    parent, if it does not exist yet): a check file is created, written and removed.
    """
    by_dir: dict[str, list[int]] = {}
    for index, fname in enumerate(fnames):
        by_dir.setdefault(os.path.dirname(fname), []).append(index)  # noqa: PTH120 - 10,000 strings
    refused: dict[Path, tuple[OSError, list[int]]] = {}
    probed: dict[Path, OSError | None] = {}
    for directory, indices in by_dir.items():
        place, error = _existing_directory(Path(directory))
        if place not in probed:
            probed[place] = error or _probe(place)
        if (error := probed[place]) is not None:
            refused.setdefault(place, (error, []))[1].extend(indices)
    if refused:
        raise ConfigError(_refusal(refused, fnames))


def _existing_directory(directory: Path) -> tuple[Path, OSError | None]:
    """``directory``, or its nearest existing parent, where the first save makes it.

    The error is set when that path exists but is no directory (a file where a directory
    of the fnames should be), or cannot be looked at.
    """
    while True:
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            directory = directory.parent  # the root exists: this ends
            continue
        except OSError as e:
            return directory, e
        if stat.S_ISDIR(mode):
            return directory, None
        return directory, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))


def _probe(directory: Path) -> OSError | None:
    """Create, write and remove a check file in ``directory``; the error if any step failed."""
    try:
        write_check_file(
            directory, "adaptive_runner: can the data files be written here?\n"
        ).unlink()
    except OSError as e:
        return e
    return None


def _refusal(refused: dict[Path, tuple[OSError, list[int]]], fnames: Sequence[str]) -> str:
    """The error's text: each refusing directory, its fnames and the OS error; then the rest."""
    lines = []
    for place, (error, indices) in list(refused.items())[:MAX_LISTED]:
        first = indices[0]
        others = f" and {len(indices) - 1:,} more" if len(indices) > 1 else ""
        missing = any(Path(fnames[i]).parent != place for i in indices)
        made = ", some in directories to be made there" if missing else ""
        lines.append(
            f"\n  {place}: {_os_error(error)} (fnames[{first}] {fnames[first]!r}{others}{made})"
        )
    rest = len(refused) - MAX_LISTED
    if rest > 0:
        count = sum(len(indices) for _, indices in list(refused.values())[MAX_LISTED:])
        lines.append(f"\n  ... and {rest:,} more directories ({count:,} fnames)")
    return (
        "cannot write the data files: a file could not be created in these directories"
        f"{''.join(lines)}\nThe learners could not be saved there: choose fnames in "
        "directories you can write (or fix their permissions, mount, space or quota), then "
        "start again. Nothing was submitted"
    )


def _os_error(error: OSError) -> str:
    """``Read-only file system (EROFS)``: the OS's words and the errno's name."""
    if error.errno is None:
        return str(error)
    return f"{error.strerror} ({errno.errorcode.get(error.errno, error.errno)})"
