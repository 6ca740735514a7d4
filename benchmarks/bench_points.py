"""The function the overhead benchmark learns, in a module of its own.

A process pool pickles functions by reference, so the function must be importable in the
pool's processes (the benchmark puts this directory on PYTHONPATH).
"""

from __future__ import annotations

import os
import time


def point(x: float, *, delay: float, stamp: str) -> float:
    """``x**2`` after ``delay`` seconds; the first call anywhere writes the time to ``stamp``."""
    if not os.path.exists(stamp):  # noqa: PTH110 - the cheapest check, paid by both tools
        now = time.time()
        try:
            with open(stamp, "x") as f:  # noqa: PTH123
                f.write(repr(now))
        except FileExistsError:  # another pool process was first
            pass
    if delay:
        time.sleep(delay)
    return x * x
