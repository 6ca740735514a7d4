"""A log file of lines that loses lines instead of raising (a full disk, a quota, a lost mount).

Both logs are written so: the managers' ``manager.log`` (``manager/logs.py``) and each task's
log (``job/task_log.py``). A log that cannot be written must not end what it records: a
manager's round, or a worker that holds a learner and would lose its points. A line that
cannot be written is dropped and counted, and the next line that can be written is preceded
by one that says how many were lost and why (made by the caller: each log has its own form).

The file is written unbuffered: a line whose write failed is never written later, out of
order, by a buffer that flushes once the disk has room again.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable


class RawWriter(Protocol):
    """Where lines go: an unbuffered binary file (``open(path, "ab", buffering=0)``)."""

    def write(self, data: bytes, /) -> int | None:
        """Write some of ``data``; the number of bytes written."""
        ...


class LineFile:
    """Appends lines to ``stream``; a line that cannot be written is lost, never raised.

    Parameters
    ----------
    stream
        An unbuffered binary file, opened for appending.
    lost_line
        The line (without its newline) written before the next line after ``count`` lines
        were lost, the last of them to ``error`` (the OS error's text).

    """

    def __init__(self, stream: RawWriter, lost_line: Callable[[int, str], str]) -> None:
        self.stream = stream
        self._lost_line = lost_line
        self._lock = threading.Lock()  # lines from several threads never interleave
        self.lost = 0  # lines lost since the last one written
        self.error = ""  # why the last of them was lost
        self._partial = False  # a lost line left part of itself in the file

    def write(self, line: str) -> bool:
        """Append ``line`` and a newline (after the count of lines lost before it, if any).

        Returns whether it was written; on an ``OSError`` it is counted as lost instead.
        """
        with self._lock:
            text = line + "\n"
            if self.lost:
                lost = self._lost_line(self.lost, self.error)
                text = ("\n" if self._partial else "") + lost + "\n" + text
            written, error = _write_all(self.stream, text.encode())
            if error is not None:
                self._partial = self._partial or written > 0
                self.lost += 1
                self.error = str(error)
                return False
            self.lost, self._partial = 0, False
            return True


def _write_all(stream: RawWriter, data: bytes) -> tuple[int, OSError | None]:
    """Write ``data``, short writes continued (the disk filled up during it).

    Returns how many bytes were written, and the error that stopped it (None: all written).
    """
    written = 0
    while written < len(data):
        try:
            count = stream.write(data[written:])
        except OSError as e:
            return written, e
        if not count:  # only a file opened non-blocking; never an endless loop
            return written, OSError(errno.EAGAIN, "the file took none of the line")
        written += count
    return written, None
