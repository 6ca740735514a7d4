"""Each learner's parameters, recorded once in the run directory: what the overview draws over.

A sweep's learners differ by a few parameters. The run manager finds them when it writes the
run (``RunSpec.write_pickles``), where the learners are at hand (:func:`learner_parameters`):
the keyword defaults of the learner's function as adaptive's ``to_dataframe`` reads them (a
``functools.partial``'s keywords among them), then those parsed back from the data file's
name (:func:`~adaptive_runner.fnames.params_from_fname`) that the function lacks. It writes
them into ``parameters.json`` once (atomic), and :class:`ParameterFile` reads that file back:
so ``Run.parameters()`` and the panel never unpickle a learner for them, and a refresh of the
panel costs one ``stat`` of the file. A run written by an earlier release has no such file:
its learners have no parameters (the overview then shows a bar per learner).
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
from typing import TYPE_CHECKING, Final, TypeAlias

from adaptive_runner.common.files import atomic_write
from adaptive_runner.errors import ConfigError
from adaptive_runner.fnames import params_from_fname

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adaptive_runner.common.run_dir import RunDir

Value: TypeAlias = bool | int | float | str
Parameters: TypeAlias = dict[str, Value]

FORMAT: Final = 1  # parameters.json's "format"; a reader refuses another


def learner_parameters(learner: object, fname: str) -> Parameters:
    """The parameters of one learner: its function's keyword defaults, then its fname's.

    A key both name keeps the function's value. Only str, int, float and bool values are
    kept (numpy's numbers as Python's); a value of another kind (an array, an object) is
    left out. Without either: ``{}``.
    """
    found = _function_parameters(getattr(learner, "function", None))
    for key, value in (params_from_fname(fname) or {}).items():
        found.setdefault(key, value)
    return found


def _function_parameters(function: object) -> Parameters:
    """The scalar keyword defaults of ``function`` after its first argument (adaptive's x)."""
    if not callable(function):
        return {}
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or a callable without one
        return {}
    found: Parameters = {}
    for name, parameter in list(signature.parameters.items())[1:]:
        value = _scalar(parameter.default)
        if parameter.default is not parameter.empty and value is not None:
            found[name] = value
    return found


def _scalar(value: object) -> Value | None:
    """``value`` as a JSON scalar (numpy numbers as Python's); None for anything else."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def write_parameters(run_dir: RunDir, learners: Sequence[object], fnames: Sequence[str]) -> None:
    """Write every learner's parameters into ``run_dir``'s parameters.json (atomic)."""
    recorded = [learner_parameters(x, f) for x, f in zip(learners, fnames, strict=True)]
    text = json.dumps({"format": FORMAT, "learners": recorded}, separators=(",", ":"))
    atomic_write(run_dir.parameters_file, text.encode())


def varying(parameters: Sequence[Parameters]) -> list[str]:
    """The keys whose value is not the same for every learner, in the order first seen.

    A key some learners lack varies too. One learner, or none, has no varying key. A key
    whose values are those of an earlier one for every learner (``width`` in the function,
    ``peak`` in the fname) is the same parameter again: left out.
    """
    keys: dict[str, None] = {}
    for params in parameters:
        keys.update(dict.fromkeys(params))
    missing = object()
    columns: dict[tuple[object, ...], str] = {}
    for key in keys:
        column = tuple(_hashable(params.get(key, missing)) for params in parameters)
        if len(set(column)) > 1:
            columns.setdefault(column, key)
    return list(columns.values())


def _hashable(value: object) -> object:
    """``value`` for a set: a float NaN (never equal to itself) as one marker."""
    return "nan" if isinstance(value, float) and math.isnan(value) else (type(value), value)


class ParameterFile:
    """parameters.json of one run, read again only when the file changed (one ``stat``).

    Parameters
    ----------
    run_dir
        The run whose learners' parameters to read.

    """

    def __init__(self, run_dir: RunDir) -> None:
        self.path = run_dir.parameters_file
        self._version: tuple[int, int] | None = None
        self._parameters: list[Parameters] = []

    def read(self) -> list[Parameters]:
        """Every learner's parameters, by index; ``[]`` for a run without the file.

        Raises ConfigError naming the file if it is not what :func:`write_parameters` wrote.
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._version, self._parameters = None, []
            return []
        version = (stat.st_mtime_ns, stat.st_size)
        if version != self._version:
            self._parameters = _parsed(self.path.read_bytes(), str(self.path))
            self._version = version
        return self._parameters


def _parsed(data: bytes, where: str) -> list[Parameters]:
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise ConfigError(f"{where} is not JSON ({e}): a rerun of start() writes it again") from e
    learners = raw.get("learners") if isinstance(raw, dict) else None
    if not isinstance(learners, list) or raw.get("format") != FORMAT:
        raise ConfigError(
            f"{where} is not a parameters file of format {FORMAT}: a rerun of start() "
            "writes it again"
        )
    return [
        {str(k): v for k, v in params.items() if _scalar(v) is not None}
        if isinstance(params, dict)
        else {}
        for params in learners
    ]
