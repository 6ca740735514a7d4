"""split_sequence_learner and combine_sequence_learners: parts run apart, data put back."""

from __future__ import annotations

import adaptive
import numpy as np
import pytest

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError


def cube(x: float, offset: float = 0.5) -> float:
    return x**3 + offset


def learner(n: int = 10) -> adaptive.SequenceLearner:
    return adaptive.SequenceLearner(cube, list(np.linspace(0, 1, n)))


def test_split_gives_contiguous_parts_with_their_data() -> None:
    whole = learner(10)
    adaptive.runner.simple(whole, npoints_goal=5)  # points 0..4
    parts = ar.split_sequence_learner(whole, 3)
    assert [len(p.sequence) for p in parts] == [4, 3, 3]
    assert [x for p in parts for x in p.sequence] == whole.sequence
    assert dict(parts[0].data) == {i: whole.data[i] for i in range(4)}
    assert dict(parts[1].data) == {0: whole.data[4]}
    assert not parts[2].data
    for part in parts:
        assert part.function((0, 2.0)) == cube(2.0)


def test_parts_run_apart_and_combine_into_the_whole() -> None:
    whole = learner(11)
    parts = ar.split_sequence_learner(whole, 4)
    for part in parts:
        adaptive.runner.simple(part)
    combined = ar.combine_sequence_learners(parts)
    assert combined.done()
    assert combined.sequence == whole.sequence
    assert combined.result() == [cube(x) for x in whole.sequence]
    frame = combined.to_dataframe()
    assert list(frame["i"]) == list(range(11))
    assert list(frame["y"]) == combined.result()
    assert list(frame["function.offset"]) == [0.5] * 11


def test_round_trip_keeps_partial_data() -> None:
    whole = learner(9)
    adaptive.runner.simple(whole, npoints_goal=6)
    combined = ar.combine_sequence_learners(ar.split_sequence_learner(whole, 2))
    assert dict(combined.data) == dict(whole.data)
    assert not combined.done()
    adaptive.runner.simple(combined)  # what is left still runs
    assert combined.result() == [cube(x) for x in whole.sequence]


def test_one_part_and_as_many_parts_as_points() -> None:
    whole = learner(3)
    assert ar.split_sequence_learner(whole, 1)[0].sequence == whole.sequence
    assert [p.sequence for p in ar.split_sequence_learner(whole, 3)] == [
        [x] for x in whole.sequence
    ]


def test_refusals() -> None:
    with pytest.raises(ConfigError, match="learner is a Learner1D"):
        ar.split_sequence_learner(adaptive.Learner1D(cube, (0, 1)), 2)
    with pytest.raises(ConfigError, match="n_parts=4 is more than the 3 points"):
        ar.split_sequence_learner(learner(3), 4)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="n_parts="):
            ar.split_sequence_learner(learner(3), bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-empty list"):
        ar.combine_sequence_learners([])
    with pytest.raises(ConfigError, match="non-empty list"):
        ar.combine_sequence_learners(learner())
    with pytest.raises(ConfigError, match=r"parts\[1\] is a Learner1D"):
        ar.combine_sequence_learners([learner(), adaptive.Learner1D(cube, (0, 1))])
