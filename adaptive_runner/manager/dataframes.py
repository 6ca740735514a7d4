"""The login side of ``save_dataframe``: the DataFrame files read back, checked, filled in.

The worker writes a learner's DataFrame file with each save of its data (common/dataframes.py),
so a learner saved before the option was on, or whose DataFrame could not be written, has no
file or an older one than its data file. Here each learner's file is compared with its data
file (:class:`TableState`), the files are read into one DataFrame that says which learners it
left out and why (:func:`read_dataframes`, :func:`left_out`), and the missing or stale files
are written from the data files (:func:`write_tables`), as the worker would have, for
``Run.load_dataframes(compute_missing=True)`` and ``RunManager.start``.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from adaptive_runner.common.dataframes import DataFrameFile, dataframe_path
from adaptive_runner.common.vocabulary import DataFrameFormat
from adaptive_runner.manager.logs import with_progress

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

log = structlog.get_logger("adaptive_runner.dataframes")

PROGRESS_EVERY = 1000  # write_tables logs its progress every this many learners


class DataFrameWarning(UserWarning):
    """``load_dataframes`` left learners out, or read DataFrame files older than their data."""


class TableState(StrEnum):
    """How a learner's DataFrame file stands against its data file."""

    CURRENT = "current"
    """Not older than the data file: it holds the data file's points."""
    STALE = "stale"
    """Older than the data file (written before the last save): it holds fewer points."""
    MISSING = "missing"
    """A data file and no DataFrame file: saved before save_dataframe was on, or not written."""
    NO_DATA = "no data"
    """No data file: nothing saved yet (a DataFrame file left from removed data is ignored)."""

    @property
    def writable(self) -> bool:
        """Whether the DataFrame file can be written from the data file (it is behind it)."""
        return self in (TableState.STALE, TableState.MISSING)

    @property
    def read(self) -> bool:
        """Whether ``load_dataframes`` reads this learner's file."""
        return self in (TableState.CURRENT, TableState.STALE)


def table_state(fname: str, fmt: DataFrameFormat) -> TableState:
    """How the DataFrame file of the learner whose data file is ``fname`` stands (two stats)."""
    try:
        data_mtime = Path(fname).stat().st_mtime_ns
    except FileNotFoundError:
        return TableState.NO_DATA
    try:
        table_mtime = dataframe_path(fname, fmt).stat().st_mtime_ns
    except FileNotFoundError:
        return TableState.MISSING
    return TableState.STALE if table_mtime < data_mtime else TableState.CURRENT


def write_tables(
    learners: Sequence[tuple[int, str]],
    fmt: DataFrameFormat,
    loaded: Callable[[int, Path], Any],
    *,
    progress_every: int = PROGRESS_EVERY,
) -> list[int]:
    """Write the DataFrame file of each ``(index, fname)`` from its data file; those written.

    ``loaded(index, path)`` is learner ``index`` unpickled with the data at ``path``. Each
    file is stamped with its data file's modification time, read before the data is loaded:
    if a job saves the learner meanwhile, the file is older than the new data (stale), never
    taken for current. A learner whose data cannot be loaded, or whose DataFrame cannot be
    made or written, is a warning in the log and keeps its old file (if any). Progress is
    logged every ``progress_every`` learners.
    """
    written = []
    started = time.monotonic()
    steps = with_progress(log, learners, "writing DataFrames from data files", every=progress_every)
    for index, fname in steps:
        frames = DataFrameFile(fname, fmt)
        try:
            mtime_ns = Path(fname).stat().st_mtime_ns
            error = frames.write(frames.take(loaded(index, Path(fname))), mtime_ns=mtime_ns)
        except Exception as e:  # noqa: BLE001 - a bad data file leaves the learner without one
            error = repr(e)
        if error is None:
            written.append(index)
        else:
            log.warning("cannot write a DataFrame", learner=index, fname=fname, error=error)
    if learners:
        log.info(
            "DataFrames written from data files",
            learners=len(written),
            tried=len(learners),
            seconds=round(time.monotonic() - started, 3),
        )
    return written


def read_dataframes(
    fnames: Sequence[str], fmt: DataFrameFormat, states: Sequence[TableState]
) -> Any:
    """One DataFrame of the files ``states`` says to read, columns ``learner`` and ``fname`` first.

    The result's ``attrs`` list learners by index: ``skipped``, left out (no DataFrame file,
    or no data file); ``missing``, those of them with a data file; ``stale``, read but older
    than their data file. Like the data files, the files are the run's own: a pickle runs code
    when it is read.
    """
    import pandas as pd  # noqa: PLC0415 - on demand: pandas costs a second to import

    read = pd.read_parquet if fmt is DataFrameFormat.PARQUET else pd.read_pickle
    frames = []
    for index, (fname, state) in enumerate(zip(fnames, states, strict=True)):
        if state.read:
            frame = read(dataframe_path(fname, fmt))
            frame.insert(0, "learner", index)
            frame.insert(1, "fname", fname)
            frames.append(frame)
    result = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["learner", "fname"])
    )
    result.attrs["skipped"] = [i for i, state in enumerate(states) if not state.read]
    result.attrs["missing"] = _having(states, TableState.MISSING)
    result.attrs["stale"] = _having(states, TableState.STALE)
    return result


def left_out(
    states: Sequence[TableState], running: Collection[int], *, computed: bool
) -> str | None:
    """What ``load_dataframes`` says of the learners it left out or read stale; None if all is well.

    ``running``: the learners held by a job now (their files are left to it); ``computed``:
    whether the missing and stale files were just written (those still behind could not be).
    """
    missing, stale = _having(states, TableState.MISSING), _having(states, TableState.STALE)
    no_data = _having(states, TableState.NO_DATA)
    parts = []
    if missing or no_data:
        why = []
        if missing:
            why.append(
                f"{len(missing)} without a DataFrame file (saved before save_dataframe was "
                "on, or the DataFrame could not be written: see the task logs)"
            )
        if no_data:
            why.append(f"{len(no_data)} without a data file yet")
        parts.append(
            f"{len(missing) + len(no_data)} of {_learners(len(states))} left out "
            f"(attrs['skipped']): {', '.join(why)}"
        )
    if stale:
        parts.append(
            f"{_learners(len(stale))} read from DataFrame files older than their data files, "
            "with fewer points (attrs['stale'])"
        )
    behind = [i for i in missing + stale if i not in running]
    if behind and computed:
        parts.append(
            f"the DataFrames of {_learners(len(behind))} could not be written (see the log)"
        )
    elif behind:
        parts.append(
            "load_dataframes(compute_missing=True) writes the DataFrame files of "
            f"{_learners(len(behind))} from their data files (it unpickles them: their code "
            "must be importable)"
        )
    if held := len(missing) + len(stale) - len(behind):
        parts.append(
            f"{_learners(held)} of these held by running jobs, left alone (compute_missing=True "
            "writes them once they end, if their jobs do not)"
        )
    return "; ".join(parts) + "." if parts else None


def _learners(n: int) -> str:
    return f"{n} learner" if n == 1 else f"{n} learners"


def _having(states: Sequence[TableState], state: TableState) -> list[int]:
    return [i for i, s in enumerate(states) if s is state]
