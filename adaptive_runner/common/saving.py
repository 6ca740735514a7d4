"""A learner's data on disk, in adaptive's own format, written atomically.

The format is what ``learner.save(fname)`` writes: gzip of the cloudpickle of
``learner._get_data()``. So ``learner.load(fname)`` reads our files and we read theirs.
Unlike adaptive's ``save``/``load``, failures raise: a save that returned False, or a
corrupt file loaded as "no data", would lose work without a word.
"""

from __future__ import annotations

import gzip
import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle

from adaptive_runner.common.files import atomic_write

if TYPE_CHECKING:
    from pathlib import Path

# zlib's default level: nearly the size of level 9 (adaptive's) at a fraction of the time,
# which matters for a large learner saved every few minutes. Any level reads back the same.
COMPRESS_LEVEL = 6


def pickle_data(learner: Any) -> bytes:
    """The cloudpickle of ``learner._get_data()``: the part of a save that reads the learner."""
    pickled: bytes = cloudpickle.dumps(learner._get_data(), protocol=pickle.HIGHEST_PROTOCOL)  # noqa: SLF001 - adaptive's data API
    return pickled


def write_data(pickled: bytes, path: Path) -> int:
    """Write :func:`pickle_data`'s bytes to ``path``, gzipped, atomically and durably.

    Returns the bytes written. Raises ``OSError`` (disk full, permissions); the old file, if
    any, is then left as it was.
    """
    data = gzip.compress(pickled, compresslevel=COMPRESS_LEVEL)
    atomic_write(path, data)
    return len(data)


def load_data(learner: Any, path: Path) -> None:
    """Load the data saved at ``path`` into ``learner`` (resume).

    Only files this run (or adaptive's ``learner.save``) wrote belong here: like any pickle,
    loading runs code from the file. A missing or corrupt file raises.
    """
    data = cloudpickle.loads(gzip.decompress(path.read_bytes()))
    learner._set_data(data)  # noqa: SLF001 - adaptive's data API
