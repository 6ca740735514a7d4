"""The checks every option goes through at construction, with messages that say what to do.

One rule per kind of value, the same in every class: a bool is never taken for an int
(``cores=True`` is a mistake, not one core), durations are seconds or a timedelta, and
environment variables get valid names before any job script is written. Stdlib only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from adaptive_runner.common.vocabulary import LEVELS
from adaptive_runner.errors import ConfigError

# POSIX portable names: what `export NAME=...` accepts in every shell.
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

EnvValue = str | int | float


def _int(value: object, name: str, *, least: int, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a bool" if isinstance(value, bool) else type(value).__name__
        raise ConfigError(f"{name}={value!r} is {kind}; give {expected}")
    if value < least:
        raise ConfigError(f"{name}={value!r} is out of range; give {expected}")
    return value


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 1 (not a bool); else a ConfigError naming ``name``."""
    return _int(value, name, least=1, expected="a positive integer (1, 2, ...)")


def non_negative_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 0 (not a bool); else a ConfigError naming ``name``."""
    return _int(value, name, least=0, expected="an integer >= 0")


def positive_seconds(value: object, name: str) -> float:
    """A positive, finite duration given as seconds (int or float) or a timedelta, in seconds."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ConfigError(
            f"{name}={value!r} is not a duration; give a positive number of seconds or a "
            f"timedelta, e.g. {name}=30 or {name}=timedelta(minutes=5)"
        )
    return float(seconds)


def environment(value: object, name: str = "env") -> dict[str, EnvValue]:
    """A copy of ``value`` once it is a mapping of variable names to str, int or float values.

    Names are what ``export`` accepts (letters, digits and ``_``, not starting with a digit).
    Numbers are exported as ``str(value)``; a bool is refused (``True`` or ``1``?), and so is
    a string with a NUL byte, which no environment can hold.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{name} must be a mapping of variable names to values, e.g. "
            f'{name}={{"OMP_PROC_BIND": "true"}}; got {type(value).__name__}'
        )
    checked: dict[str, EnvValue] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ConfigError(
                f"{name} has the key {key!r}, which is not an environment variable name: use "
                "letters, digits and '_', not starting with a digit (e.g. 'MY_VAR_2')"
            )
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ConfigError(
                f"{name}[{key!r}]={item!r}: give a str, int or float (e.g. '1' or 'yes'), "
                f"not {type(item).__name__}"
            )
        if isinstance(item, str) and "\0" in item:
            raise ConfigError(f"{name}[{key!r}] holds a NUL byte, which no environment can hold")
        checked[key] = item
    return checked


def plain_text(value: str, name: str) -> str:
    """``value`` if it holds no control character; else a ConfigError naming ``name`` and it.

    For paths and words that reach job scripts and records: a newline in a ``#SBATCH`` or
    ``#PBS`` line ends the directive there (every submission fails), and in SSH's remote
    commands and records it splits a record in two.
    """
    for position, char in enumerate(value):
        if ord(char) < 32 or ord(char) == 127:  # noqa: PLR2004 - the ASCII control characters
            raise ConfigError(
                f"{name} {value!r} holds the control character {char!r} at position "
                f"{position}; job scripts and the run's records need plain text: rename it"
            )
    return value


def callable_name(value: object) -> str:
    """How an error message names a user's function: its qualified name, else its repr."""
    return str(getattr(value, "__qualname__", None) or repr(value))


def check_level(level: str) -> None:
    """Refuse a ``level`` that is none of ``LEVELS`` (vocabulary.py)."""
    if level not in LEVELS:
        raise ConfigError(f"level={level!r} is not a log level; choose one of {', '.join(LEVELS)}")
