from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import adaptive
import numpy as np
import pytest

from adaptive_runner.common.goals import (
    Stages,
    check_goal,
    check_learners_end,
    describe_goal,
    final_goal,
    goal_check,
    may_need_more,
    n_stages,
    stage_goal,
)
from adaptive_runner.errors import ConfigError


def _stop_at_ten(learner: adaptive.Learner1D) -> bool:
    return bool(learner.npoints >= 10)


def _learner() -> adaptive.Learner1D:
    return adaptive.Learner1D(np.sin, bounds=(0, 3))


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        (5, 5),
        (np.int64(7), 7),
        (0.01, 0.01),
        (np.float64(0.5), 0.5),
        (timedelta(minutes=3), timedelta(minutes=3)),
        (_stop_at_ten, _stop_at_ten),
    ],
)
def test_valid_goals_are_canonical(goal: object, expected: object) -> None:
    checked = check_goal(goal)
    assert checked == expected
    assert type(checked) is type(expected)


def test_aware_datetime_is_accepted() -> None:
    end = datetime.now(UTC) + timedelta(hours=1)
    assert check_goal(end) == end


@pytest.mark.parametrize(
    ("goal", "fragment"),
    [
        (True, "True is not a valid goal"),
        (False, "False is not a valid goal"),
        (0, "must be >= 1"),
        (-3, "must be >= 1"),
        (0.0, "finite float > 0"),
        (-0.1, "finite float > 0"),
        (float("nan"), "finite float > 0"),
        (float("inf"), "finite float > 0"),
        (timedelta(0), "must be positive"),
        (timedelta(seconds=-1), "must be positive"),
        (datetime(2030, 1, 1, 12, 0), "naive datetime"),  # noqa: DTZ001 - the point of the test
        ("100", "not a valid goal"),
        ({100}, "not a valid goal"),
    ],
)
def test_bad_goals_name_the_value_and_the_kinds(goal: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_goal(goal)
    message = str(info.value)
    assert fragment in message
    assert f"goal={goal!r}" in message


def test_wrong_type_lists_accepted_kinds() -> None:
    with pytest.raises(ConfigError, match=r"callable.*int.*float.*timedelta.*datetime"):
        check_goal("lots")


def test_none_is_until_the_learner_is_done() -> None:
    assert check_goal(None) is None
    assert describe_goal(None) == "until the learner is done"
    learner = adaptive.SequenceLearner(np.sin, np.linspace(0, 1, 7))
    adaptive.runner.simple(learner, goal=goal_check(None, learner))
    assert learner.done()
    assert learner.npoints == 7


def _sequence() -> adaptive.SequenceLearner:
    return adaptive.SequenceLearner(np.sin, [0.0, 1.0])


def test_none_is_for_learners_that_end_by_themselves() -> None:
    balanced = adaptive.BalancingLearner([_sequence(), _sequence()])
    check_learners_end(None, [_sequence(), balanced])
    check_learners_end(10, [_learner()])  # any learner with a goal
    with pytest.raises(ConfigError) as info:
        check_learners_end(None, [_sequence(), _learner(), _learner()])
    assert "learners[1] is a Learner1D: give a goal" in str(info.value)
    balanced_1d = adaptive.BalancingLearner([_learner(), _learner()])
    with pytest.raises(ConfigError, match=r"\[0\] is a BalancingLearner whose learners\[0\] is a"):
        check_learners_end(None, [balanced_1d])


def test_goal_checks() -> None:
    learner = _learner()
    adaptive.runner.simple(learner, npoints_goal=12)
    assert goal_check(12, learner)(learner)
    assert not goal_check(13, learner)(learner)
    assert goal_check(learner.loss(), learner)(learner)
    assert not goal_check(learner.loss() / 2, learner)(learner)
    assert goal_check(_stop_at_ten, learner) is _stop_at_ten


def test_a_run_time_counts_from_its_start() -> None:
    learner = _learner()
    assert goal_check(timedelta(seconds=9), learner, started=time.monotonic() - 10)(learner)
    assert not goal_check(timedelta(seconds=9), learner)(learner)


def test_end_time_is_the_same_instant_in_any_time_zone() -> None:
    learner = _learner()
    soon = datetime.now(timezone(timedelta(hours=-5))) + timedelta(seconds=30)
    assert not goal_check(soon, learner)(learner)
    assert goal_check(soon - timedelta(seconds=60), learner)(learner)


@pytest.mark.parametrize(
    ("old", "new", "more"),
    [
        (50, 200, True),
        (200, 50, False),
        (50, 50, False),
        (0.1, 0.01, True),
        (0.01, 0.1, False),
        (50, 0.01, True),  # another kind: checked
        (_stop_at_ten, _stop_at_ten, True),  # a callable: nothing says it asks no more
        (None, None, False),
        (None, 10, True),
        (10, timedelta(hours=1), False),  # a run time bounds a job: nothing done runs again
        (datetime(2030, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC), True),
        (datetime(2031, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC), False),
        (..., 10, True),  # the old goal could not be loaded
    ],
)
def test_may_need_more(old: object, new: object, more: bool) -> None:  # noqa: FBT001
    assert may_need_more(old, check_goal(new)) is more


@pytest.mark.parametrize("goal", [15, 0.05, _stop_at_ten])
def test_adaptive_runner_reaches_the_goal(goal: object) -> None:
    learner = _learner()
    adaptive.runner.simple(learner, goal=goal_check(goal, learner))
    if isinstance(goal, int):
        assert learner.npoints == goal
    elif isinstance(goal, float):
        assert learner.loss() <= goal
    else:
        assert learner.npoints == 10


def test_time_goals_stop_an_adaptive_runner() -> None:
    # Termination is the assertion; how many points fit in the time is not checked.
    for goal in (timedelta(milliseconds=50), datetime.now(UTC) + timedelta(milliseconds=50)):
        learner = _learner()
        adaptive.runner.simple(learner, goal=goal_check(goal, learner))


def test_end_time_in_the_past_evaluates_nothing() -> None:
    learner = _learner()
    adaptive.runner.simple(
        learner, goal=goal_check(datetime.now(UTC) - timedelta(seconds=1), learner)
    )
    assert learner.npoints == 0


def test_describe() -> None:
    assert describe_goal(10) == "npoints >= 10"
    assert describe_goal(0.5) == "loss <= 0.5"
    assert describe_goal(timedelta(hours=2)) == "for 2:00:00 per job"
    assert "_stop_at_ten" in describe_goal(_stop_at_ten)
    end = datetime(2030, 1, 1, tzinfo=UTC)
    assert describe_goal(end) == "until 2030-01-01T00:00:00+00:00"


def test_a_list_of_goals_is_stages_and_one_stage_is_a_plain_goal() -> None:
    assert check_goal([25, 200, 0.01]) == Stages(25, 200, 0.01)
    assert check_goal((np.int64(25), 25)) == Stages(25, 25)  # as strict as before: accepted
    assert check_goal(Stages(10, _stop_at_ten, None)) == Stages(10, _stop_at_ten, None)
    assert check_goal([100]) == 100
    assert type(check_goal([100])) is int
    assert check_goal([0.5, 100]) == Stages(0.5, 100)  # kinds may mix


@pytest.mark.parametrize(
    ("goal", "fragment"),
    [
        ([200, 25], "stage [1]=25 asks fewer points than stage [0]=200"),
        ([25, 200, 100], "stage [2]=100 asks fewer points than stage [1]=200"),
        ([0.01, 0.1], "stage [1]=0.1 asks a larger loss than stage [0]=0.01"),
        ([None, 100], "stage [0] is None (until the learner is done), but stages follow it"),
        ([25, timedelta(hours=1)], "stage [1]=datetime.timedelta(seconds=3600)"),
        ([25, [50, 100]], "stage [1]=[50, 100] (list) cannot be a stage"),
        ([25, 0], "goal=0: a number of points must be >= 1"),
        ([20, 0.1, 10], "stage [2]=10 asks fewer points than stage [0]=20"),
        ([0.1, 50, 0.2], "stage [2]=0.2 asks a larger loss than stage [0]=0.1"),
        ([], "goal=[] has no stage"),
    ],
)
def test_bad_stages_name_the_stages(goal: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_goal(goal)
    assert fragment in str(info.value)


def test_stage_goals_and_the_final_goal() -> None:
    stages = check_goal([25, 200, 0.01])
    assert n_stages(stages) == 3
    assert [stage_goal(stages, k) for k in range(4)] == [25, 200, 0.01, 0.01]  # past: the last
    assert final_goal(stages) == 0.01
    assert (n_stages(100), stage_goal(100, 0), final_goal(100)) == (1, 100, 100)
    assert describe_goal(stages) == "stages: npoints >= 25 → npoints >= 200 → loss <= 0.01"
    learner = _learner()
    adaptive.runner.simple(learner, npoints_goal=30)
    assert not goal_check(Stages(25, 200), learner)(learner)  # done at the last stage only
    assert goal_check(Stages(10, 25), learner)(learner)


def test_stages_may_need_more_by_their_last_stage() -> None:
    assert may_need_more(Stages(25, 200), Stages(25, 400))
    assert may_need_more(Stages(25, 200), Stages(10, 25, 300))
    assert not may_need_more(Stages(25, 200), Stages(50, 200))  # an earlier stage only
    assert not may_need_more(200, Stages(25, 200))
    assert may_need_more(100, Stages(25, 200))


def test_stages_ending_at_none_are_for_learners_that_end_by_themselves() -> None:
    with pytest.raises(ConfigError, match=r"a last goal stage of None runs a learner until"):
        check_learners_end(check_goal([10, None]), [_learner()])
    sequence = adaptive.SequenceLearner(np.sin, range(3))
    check_learners_end(check_goal([2, None]), [sequence])
