"""rm.add's checks, before anything is written: which group, which files, which indices.

Runs that grow are in tests/e2e/test_grow.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import adaptive
import pytest
from helpers_run import make_learners

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def square(x: float) -> float:
    return x**2


def sequences(n: int) -> list[adaptive.SequenceLearner]:
    return [adaptive.SequenceLearner(square, range(5)) for _ in range(n)]


def two_groups(tmp_path: Path) -> ar.RunManager:
    """Group 0: two Learner1D; group 1: one SequenceLearner and one Learner1D."""
    return ar.RunManager.from_groups(
        [
            (ar.Local(), make_learners(2), [tmp_path / "a0", tmp_path / "a1"]),
            (ar.Local(), [*sequences(1), *make_learners(1)], [tmp_path / "s0", tmp_path / "b0"]),
        ],
        goal=10,
        run_dir=tmp_path / "run",
    )


def test_added_learners_join_the_group_of_their_type_with_the_next_indices(
    tmp_path: Path,
) -> None:
    rm = two_groups(tmp_path)
    assert rm.add(sequences(2), [tmp_path / "s1", tmp_path / "s2"], dependencies={5: [0, 4]}) == [
        4,
        5,
    ]
    assert rm.add(make_learners(1), [tmp_path / "a2"], group=0) == [6]
    assert rm.spec.learner_groups == (0, 0, 1, 1, 1, 1, 0)
    assert rm.fnames[4:] == [str(tmp_path / f) for f in ("s1", "s2", "a2")]
    assert rm.spec.dependencies == {5: [0, 4]}
    assert not (tmp_path / "run").exists()  # before start(): start() writes them


@pytest.mark.parametrize(
    ("learners", "names", "kwargs", "match"),
    [
        (1, ["x", "y"], {}, "add: learners and fnames must have the same length, got 1 learners"),
        (0, [], {}, "add: learners is empty"),
        (
            1,
            ["a1"],
            {"group": 0},
            r"add: fnames\[0\] '.*/a1' is the data file of learner 1 already",
        ),
        (
            2,
            ["x", "x"],
            {"group": 0},
            r"add: fnames\[1\] '.*/x' is the data file of fnames\[0\] too",
        ),
        (1, ["x"], {}, "add: groups 0, 1 all have learners of type Learner1D: say which"),
        (1, ["x"], {"group": 2}, r"add: group=2 is no group of the run: give one of 0..1"),
        (1, ["x"], {"group": 0, "dependencies": {1: [0]}}, r"dependencies\[1\]: learner 1 is in"),
        (
            1,
            ["x"],
            {"group": 0, "dependencies": {4: [9]}},
            r"dependencies\[4\]: 9 is not a learner",
        ),
    ],
)
def test_add_refusals_name_the_argument(
    tmp_path: Path, learners: int, names: list[str], kwargs: dict[str, object], match: str
) -> None:
    rm = two_groups(tmp_path)
    with pytest.raises(ConfigError, match=match):
        rm.add(make_learners(learners), [tmp_path / n for n in names], **kwargs)  # type: ignore[arg-type]
    assert len(rm.fnames) == 4  # nothing added


def test_add_refuses_learners_of_another_type_than_their_group(tmp_path: Path) -> None:
    rm = two_groups(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"add: group=0 has learners of type Learner1D, these are SequenceLearner: give the "
        r"group of their type \(group 0: Learner1D; group 1: Learner1D and SequenceLearner\)",
    ):
        rm.add(sequences(1), [tmp_path / "x"], group=0)
    with pytest.raises(ConfigError, match="add: no group of the run has learners of type AverageL"):
        rm.add([adaptive.AverageLearner(square, atol=0.1)], [tmp_path / "x"])
    only_sequences = ar.RunManager(ar.Local(), sequences(1), [tmp_path / "q"], goal=None)
    with pytest.raises(ConfigError, match="append them to the group they belong to"):
        only_sequences.add(make_learners(1), [tmp_path / "x"])
    mixed = ar.RunManager.from_groups(
        [(ar.Local(), make_learners(1), ["a"]), (ar.Local(), sequences(1), ["s"])],
        goal=10,
        run_dir=tmp_path / "run",
    )
    with pytest.raises(
        ConfigError,
        match=r"belong to different groups \(Learner1D: group 0; SequenceLearner: group 1\): "
        "add them in one call per group",
    ):
        mixed.add([*make_learners(1), *sequences(1)], ["x", "y"])
    balanced = ar.RunManager(
        ar.Local(), [adaptive.BalancingLearner(sequences(2))], [tmp_path / "b"], goal=None
    )
    with pytest.raises(ConfigError, match=r"goal=None .* but learners\[0\] is a BalancingLearner"):
        balanced.add([adaptive.BalancingLearner(make_learners(2))], [tmp_path / "x"])
