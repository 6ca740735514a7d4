"""Data file names from parameters: ``{"a": 1, "b": 0.5}`` -> ``a_1__b_0.5.pickle``.

A sweep gives each learner a dict of parameters; :func:`fname_from_params` turns it into a
file name that is the same for the same dict (in any key order), safe on any file system
and in a shell, short enough, and readable. The exact rules are in its docstring.
:func:`params_from_fname` reads such a name back (the panel's overview of a sweep).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from pathlib import Path
from typing import TYPE_CHECKING

from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

MAX_STEM = 120  # characters before the suffix; file systems allow 255 bytes
HASH_CHARS = 12  # hex digits of the hash that marks a name that was changed
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]")  # everything but these is replaced in a value
_PLAIN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*(_[A-Za-z0-9.+-]+)*")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]+)*")
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]*$")  # what params_from_fname takes as suffix
_INT = re.compile(r"-?[0-9]+")


def fname_from_params(
    params: Mapping[str, object],
    *,
    suffix: str = ".pickle",
    max_length: int = MAX_STEM,
) -> str:
    """A file name for the learner of ``params``, e.g. ``a_1__b_0.5.pickle``.

    The rules:

    1. The keys are sorted; each item is ``key_value``; items are joined by ``__``; then
       ``suffix``. So the same dict gives the same name whatever its key order.
    2. A value is written as: ``True``/``False`` for a bool; decimal digits for an int
       (numpy integers too); the shortest text that reads back as the same float for a
       float (Python's ``repr``: ``0.5``, ``1e-05``, ``inf``); a str as itself.
    3. Only ASCII letters, digits, ``.``, ``+`` and ``-`` stay as they are, and in a key
       single ``_`` between them; a key starts with a letter or digit. Every other character
       (``/``, a space, quotes, ``$``, ``_`` in a value, non-ASCII, ...) becomes ``-``, and a
       key loses a leading ``.``, ``+`` or ``-`` (no hidden files, no names that look like
       options). A str value that is empty or reads as a number or a bool (``"1"``,
       ``"True"``) counts as changed too: it would look like another value.
    4. When anything was changed by rule 3, or the name before the suffix is longer than
       ``max_length``, the name is cut to leave room and ends with ``__h`` and 12 hex
       digits of a SHA-256 of the exact parameters (keys, values and their types). So two
       different dicts never share a name (but for a hash collision), and a name stays
       within ``max_length`` characters plus the suffix.

    Parameters
    ----------
    params
        The learner's parameters: str keys; str, int (numpy's too), float or bool values.
    suffix
        Appended as it is: ``""``, or dot-separated ASCII letters and digits.
    max_length
        At most this many characters before the suffix (at least 20).

    Raises
    ------
    ConfigError
        If ``params`` is empty, a key is not a str, or a value is not a str, int, float or
        bool (naming the key); or ``suffix`` or ``max_length`` is out of bounds.

    """
    if not params:
        raise ConfigError("params is empty: give at least one parameter, e.g. {'a': 1}")
    if not isinstance(suffix, str) or not _SUFFIX.fullmatch(suffix):
        raise ConfigError(f"suffix={suffix!r}: give '' or e.g. '.pickle' (letters and digits)")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 20:  # noqa: PLR2004
        raise ConfigError(f"max_length={max_length!r}: must be an int >= 20")
    typed = sorted(_typed(key, value) for key, value in params.items())
    items, changed = [], False
    for key, kind, text in typed:
        plain_key = _PLAIN_KEY.fullmatch(key) is not None
        value = _UNSAFE.sub("-", text)
        changed |= not plain_key or value != text or (kind == "str" and _reads_as_other(text))
        # A name never starts with "." (hidden) or "-" (an option to a shell command).
        items.append(f"{key if plain_key else _UNSAFE.sub('-', key).lstrip('.+-')}_{value}")
    stem = "__".join(items)
    if changed or len(stem) > max_length:
        digest = hashlib.sha256(json.dumps(typed).encode()).hexdigest()[:HASH_CHARS]
        tag = f"__h{digest}"
        stem = stem[: max_length - len(tag)] + tag
    return stem + suffix


def _typed(key: object, value: object) -> tuple[str, str, str]:
    """(key, type name, text) of one parameter, refusing what rule 2 does not cover."""
    if not isinstance(key, str):
        raise ConfigError(f"params key {key!r} is a {type(key).__name__}: keys must be str")
    if isinstance(value, bool):
        return key, "bool", str(value)
    if isinstance(value, numbers.Integral):
        return key, "int", str(int(value))
    if isinstance(value, float):
        return key, "float", repr(float(value))
    if isinstance(value, str):
        return key, "str", value
    raise ConfigError(
        f"params[{key!r}]={value!r} is a {type(value).__name__}: give a str, int, float or "
        "bool (a file name shows the value as text)"
    )


def _reads_as_other(text: str) -> bool:
    """Whether a str value would look like a number or a bool in a name (or is empty)."""
    if text in {"", "True", "False"}:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def params_from_fname(fname: str | os.PathLike[str]) -> dict[str, bool | int | float | str] | None:
    """The parameters a name made by :func:`fname_from_params` was made from; None otherwise.

    ``data/a_1__b_0.5.pickle`` gives ``{"a": 1, "b": 0.5}`` (its directory is ignored). The
    suffix is the name's last extension when it starts with a letter (``.pickle``, ``.h5``),
    else none. Values read back as bool, int, float or str, as rule 2 wrote them. A name
    whose parameters were hashed (``__h`` and 12 hex digits), or that
    :func:`fname_from_params` would not write again exactly as it is (other key order, a
    value not in its shortest form, ...), gives None: so a hand-written name that follows
    the rules (``peak_0.01.pickle``) reads back too, and a misreading is never returned.
    """
    name = Path(fname).name
    found = _EXTENSION.search(name)
    suffix = found.group() if found else ""
    stem = name[: len(name) - len(suffix)]
    params: dict[str, bool | int | float | str] = {}
    for item in stem.split("__"):
        key, sep, text = item.rpartition("_")  # a value has no "_": rule 3
        if not sep or not key or not text or key in params:
            return None
        params[key] = _value(text)
    try:
        again = fname_from_params(params, suffix=suffix, max_length=max(20, len(stem)))
    except ConfigError:
        return None
    return params if again == name else None


def _value(text: str) -> bool | int | float | str:
    """A value as rule 2 wrote it: a bool, an int, a float, else a str."""
    if text in {"True", "False"}:
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text
