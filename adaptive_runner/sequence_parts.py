"""Split a SequenceLearner into contiguous parts, and put the parts back together.

One SequenceLearner runs in one job at a time. Split into parts, its sequence runs in as
many jobs at once, each part a learner with its own data file; after the run,
:func:`combine_sequence_learners` makes one learner with all the parts' data again (for
``result()``, ``to_dataframe()``, plots).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import adaptive

from adaptive_runner.common.validation import positive_int
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence


def split_sequence_learner(learner: Any, n_parts: int) -> list[Any]:
    """``n_parts`` SequenceLearners over contiguous chunks of ``learner``'s sequence.

    The chunks are as equal as can be (the first ``len(sequence) % n_parts`` are one point
    longer). Each part has ``learner``'s function and the values ``learner`` already has for
    its chunk, indexed from 0 within the part; points pending in ``learner`` are not taken.

    Raises
    ------
    ConfigError
        If ``learner`` is not a SequenceLearner, or ``n_parts`` is not a positive int or is
        larger than the sequence (a part would be empty, done before it starts).

    """
    _check_sequence_learner(learner, "learner")
    n_parts = positive_int(n_parts, "n_parts")
    total = len(learner.sequence)
    if n_parts > total:
        raise ConfigError(
            f"n_parts={n_parts} is more than the {total} points of the sequence: "
            "every part needs at least one"
        )
    size, longer = divmod(total, n_parts)
    parts = []
    start = 0
    for k in range(n_parts):
        stop = start + size + (k < longer)
        part = adaptive.SequenceLearner(_function(learner), learner.sequence[start:stop])
        done = list(learner.data.irange(start, stop, inclusive=(True, False)))
        part.tell_many(
            [(i - start, learner.sequence[i]) for i in done], [learner.data[i] for i in done]
        )
        parts.append(part)
        start = stop
    return parts


def combine_sequence_learners(parts: Sequence[Any]) -> Any:
    """One SequenceLearner over the parts' sequences, in order, with all their values.

    Its function is the first part's (the parts of one split share it); its sequence is a
    list. The inverse of :func:`split_sequence_learner`, also for parts loaded from their
    data files after a run (``RunManager.load_learners()``).

    Raises
    ------
    ConfigError
        If ``parts`` is empty or one of them is not a SequenceLearner (naming its index).

    """
    if isinstance(parts, adaptive.SequenceLearner) or not parts:
        raise ConfigError("parts must be a non-empty list of SequenceLearners")
    for index, part in enumerate(parts):
        _check_sequence_learner(part, f"parts[{index}]")
    sequence = [x for part in parts for x in part.sequence]
    combined = adaptive.SequenceLearner(_function(parts[0]), sequence)
    offset = 0
    for part in parts:
        points = [(offset + i, part.sequence[i]) for i in part.data]
        combined.tell_many(points, list(part.data.values()))
        offset += len(part.sequence)
    return combined


def _check_sequence_learner(learner: object, name: str) -> None:
    if not isinstance(learner, adaptive.SequenceLearner):
        raise ConfigError(f"{name} is a {type(learner).__name__}, not an adaptive.SequenceLearner")


def _function(learner: Any) -> Any:
    """The function the user gave the SequenceLearner (``learner.function`` wraps it)."""
    return learner._original_function  # noqa: SLF001 - what adaptive's own new() uses
