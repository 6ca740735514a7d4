"""``save_dataframe``: each learner's DataFrame written beside its data file, and read back.

With ``save_dataframe=True`` every save of a learner's data (saving.py) also writes its
``learner.to_dataframe()`` to ``<fname>.dataframe.parquet`` (or ``.dataframe.pickle``): the
data file's whole name with a suffix appended, so it never replaces a data file and no two
learners share one. The DataFrame is a convenience for analysis; the data file is what a
learner resumes from, so a DataFrame that cannot be made or written is a warning in the
task's log and the run goes on.

Stdlib only at import (the worker imports it): pandas and pyarrow come with the frames
(adaptive's ``to_dataframe``, pandas' ``to_parquet``); :func:`read_dataframes`, called on the
manager side, imports pandas itself.
"""

from __future__ import annotations

import importlib.util
import io
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_runner.errors import ConfigError
from adaptive_runner.files import atomic_write
from adaptive_runner.vocabulary import DataFrameFormat

if TYPE_CHECKING:
    from collections.abc import Sequence


def dataframe_path(fname: str | os.PathLike[str], fmt: DataFrameFormat) -> Path:
    """Where the DataFrame of the learner whose data file is ``fname`` goes."""
    return Path(f"{os.fspath(fname)}.dataframe.{fmt}")


def check_dataframes(
    learners: Sequence[Any], fnames: Sequence[str], *, save: bool, fmt: str
) -> DataFrameFormat:
    """``fmt`` as a format, once ``save_dataframe`` is known to work here; else a ConfigError.

    The format's name is always checked; pyarrow, the learners and the file names only when
    ``save`` (an option that is off needs nothing installed).

    Parameters
    ----------
    learners
        The run's learners: each needs a ``to_dataframe`` method.
    fnames
        Their data files (absolute): none may be another learner's DataFrame file.
    save
        ``save_dataframe``.
    fmt
        ``dataframe_format``.

    """
    try:
        chosen = DataFrameFormat(fmt)
    except ValueError:
        known = ", ".join(repr(f.value) for f in DataFrameFormat)
        raise ConfigError(f"dataframe_format={fmt!r} is unknown: use one of {known}") from None
    if not save:
        return chosen
    if chosen is DataFrameFormat.PARQUET and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            "dataframe_format='parquet' needs pyarrow, which is not installed: install it "
            "(pip install pyarrow) or pass dataframe_format='pickle'"
        )
    for index, learner in enumerate(learners):
        if not callable(getattr(learner, "to_dataframe", None)):
            raise ConfigError(
                f"learners[{index}] ({type(learner).__qualname__}) has no to_dataframe(), "
                "which save_dataframe=True calls at each save: give it one, or pass "
                "save_dataframe=False"
            )
    data_files = {fname: index for index, fname in enumerate(fnames)}
    for index, fname in enumerate(fnames):
        other = data_files.get(str(dataframe_path(fname, chosen)))
        if other is not None:
            raise ConfigError(
                f"fnames[{other}] {fnames[other]!r} is where the DataFrame of learner {index} "
                "goes (its fname with '.dataframe.<format>' appended): rename that data file"
            )
    return chosen


@dataclass(frozen=True, slots=True)
class TakenFrame:
    """A learner's DataFrame as taken with a save, or why it could not be taken."""

    frame: Any = None  # a pandas DataFrame
    error: str | None = None  # the traceback of to_dataframe


class DataFrameFile:
    """One learner's DataFrame file: taken where the save reads the learner, written after."""

    def __init__(self, fname: Path, fmt: DataFrameFormat) -> None:
        self.path = dataframe_path(fname, fmt)
        self.fmt = fmt

    @staticmethod
    def take(learner: Any) -> TakenFrame:
        """``learner.to_dataframe()`` (call it while nothing changes the learner); never raises."""
        try:
            return TakenFrame(frame=learner.to_dataframe())
        except Exception:  # noqa: BLE001 - any error of the learner's own method is reported
            return TakenFrame(error=traceback.format_exc())

    def write(self, taken: TakenFrame) -> str | None:
        """Write ``taken`` atomically: None, or why no new file is written (the old one stays)."""
        if taken.error is not None:
            return taken.error
        try:
            if self.fmt is DataFrameFormat.PARQUET:
                data: bytes = taken.frame.to_parquet()  # bytes when given no path
            else:
                buffer = io.BytesIO()
                taken.frame.to_pickle(buffer)
                data = buffer.getvalue()
            atomic_write(self.path, data)
        except Exception:  # noqa: BLE001 - a full disk, a column pyarrow cannot store, ...
            return traceback.format_exc()
        return None


def read_dataframes(fnames: Sequence[str], fmt: DataFrameFormat) -> Any:
    """One DataFrame of the learners whose DataFrame file exists, with ``learner`` and ``fname``.

    ``learner`` (the index) and ``fname`` (the data file) come first. Learners without a file
    yet are left out, and their indices listed in the result's ``attrs["skipped"]``. Like the
    data files, the files are the run's own: a pickle runs code when it is read.
    """
    import pandas as pd  # noqa: PLC0415, TID251 - the manager side reads; jobs never call this

    read = pd.read_parquet if fmt is DataFrameFormat.PARQUET else pd.read_pickle
    frames = []
    skipped = []
    for index, fname in enumerate(fnames):
        path = dataframe_path(fname, fmt)
        if not path.exists():
            skipped.append(index)
            continue
        frame = read(path)
        frame.insert(0, "learner", index)
        frame.insert(1, "fname", fname)
        frames.append(frame)
    result = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["learner", "fname"])
    )
    result.attrs["skipped"] = skipped
    return result
