"""``save_dataframe``: each learner's DataFrame file beside its data file; its name and writer.

With ``save_dataframe=True`` every save of a learner's data (saving.py) also writes its
``learner.to_dataframe()`` to ``<fname>.dataframe.parquet`` (or ``.dataframe.pickle``): the
data file's whole name with a suffix appended, so it never replaces a data file and no two
learners share one. The DataFrame is a convenience for analysis; the data file is what a
learner resumes from, so a DataFrame that cannot be made or written is a warning and the run
goes on.

Both sides write these files with :class:`DataFrameFile`: the worker after each save (the
file written after the data file, so it is never older than the data it holds), and the login
side for learners whose data was saved without a DataFrame (``Run.load_dataframes``'s
``compute_missing``, ``RunManager.start``; see manager/dataframes.py), stamping the file with
its data file's modification time. A file older than its data file therefore holds fewer
points than the data file.

Stdlib only at import (the worker imports it): pandas and pyarrow come with the frames
(adaptive's ``to_dataframe``, pandas' ``to_parquet``). The option is checked in spec.py.
"""

from __future__ import annotations

import io
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive_runner.common.files import atomic_write
from adaptive_runner.common.vocabulary import DataFrameFormat


def dataframe_path(fname: str | os.PathLike[str], fmt: DataFrameFormat) -> Path:
    """Where the DataFrame of the learner whose data file is ``fname`` goes (save_dataframe)."""
    return Path(f"{os.fspath(fname)}.dataframe.{fmt}")


@dataclass(frozen=True, slots=True)
class TakenFrame:
    """A learner's DataFrame as taken with a save, or why it could not be taken."""

    frame: Any = None  # a pandas DataFrame
    error: str | None = None  # the traceback of to_dataframe


class DataFrameFile:
    """One learner's DataFrame file: taken where the save reads the learner, written after."""

    def __init__(self, fname: str | os.PathLike[str], fmt: DataFrameFormat) -> None:
        self.path = dataframe_path(fname, fmt)
        self.fmt = fmt

    @staticmethod
    def take(learner: Any) -> TakenFrame:
        """``learner.to_dataframe()`` (call it while nothing changes the learner); never raises."""
        try:
            return TakenFrame(frame=learner.to_dataframe())
        except Exception:  # noqa: BLE001 - any error of the learner's own method is reported
            return TakenFrame(error=traceback.format_exc())

    def write(self, taken: TakenFrame, *, mtime_ns: int | None = None) -> str | None:
        """Write ``taken`` atomically: None, or why no new file is written (the old one stays).

        ``mtime_ns`` stamps the file with that modification time (the login side gives its
        data file's, read before loading the data; default: now).
        """
        if taken.error is not None:
            return taken.error
        try:
            if self.fmt is DataFrameFormat.PARQUET:
                data: bytes = taken.frame.to_parquet()  # bytes when given no path
            else:
                buffer = io.BytesIO()
                taken.frame.to_pickle(buffer)
                data = buffer.getvalue()
            atomic_write(self.path, data, mtime_ns=mtime_ns)
        except Exception:  # noqa: BLE001 - a full disk, a column pyarrow cannot store, ...
            return traceback.format_exc()
        return None
