"""Run goals: when a learner is finished, and how that maps onto ``adaptive.Runner``.

A goal is one of

- a callable ``goal(learner) -> bool``: finished when it returns True;
- an ``int`` n >= 1: finished at ``learner.npoints >= n``;
- a ``float`` x > 0: finished at ``learner.loss() <= x``;
- a ``timedelta``: this job stops after running that long (a later job of the same learner
  starts its own clock, so this bounds one job, not the learner's total time);
- a timezone-aware ``datetime``: stop at that moment. Naive datetimes are refused: the
  notebook and the compute nodes may live in different time zones, so "18:00" is ambiguous;
- ``None``: until the learner says it is done (``learner.done()``), for learners whose end
  is their own: a ``SequenceLearner`` (every point evaluated), or a ``BalancingLearner``
  of them (:func:`check_learners_end` refuses the others);
- a list of such goals, or :class:`Stages`: a progressive sweep. Each learner reaches the
  stages in turn (points, loss, callable; ``None`` only last), each at least as strict as
  the one before, and is done at the last; a learner starts a stage only when no learner of
  its group waits at an earlier one (the database manager decides, ``Database.advance``).

The run manager validates the goal once (:func:`check_goal`) and pickles it; each worker
turns it into the callable adaptive's runners call (:func:`goal_check`), and so does the
manager to check saved data. Only :func:`goal_check` and :func:`check_learners_end` import
adaptive (the learners are adaptive's anyway).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from adaptive_runner.errors import ConfigError


class Stages:
    """A progressive goal: ``Stages(25, 200, 0.01)``, the same as ``goal=[25, 200, 0.01]``.

    Every learner of a group reaches the first stage's goal before any starts the second,
    and so on; a learner is done at the last stage. Each stage is an int number of points,
    a float loss, a callable ``goal(learner) -> bool``, or (last only) ``None``, the
    learner's own end. Stages of one kind must not get looser (fewer points, a larger
    loss); kinds may mix (points, then a loss).
    """

    __slots__ = ("goals",)

    def __init__(self, *goals: StageGoal) -> None:
        self.goals: tuple[StageGoal, ...] = goals

    def __repr__(self) -> str:
        return f"Stages({', '.join(map(repr, self.goals))})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stages) and self.goals == other.goals

    def __hash__(self) -> int:
        return hash(self.goals)


StageGoal: TypeAlias = Callable[[Any], bool] | int | float | None
PlainGoal: TypeAlias = Callable[[Any], bool] | int | float | timedelta | datetime | None
Goal: TypeAlias = PlainGoal | Stages
GivenGoal: TypeAlias = Goal | Sequence[StageGoal]  # what users pass: stages also as a list

_KINDS = (
    "a callable goal(learner) -> bool, an int number of points >= 1, a float loss > 0, "
    "a timedelta (run time of each job), a timezone-aware datetime (end time) or None "
    "(until a SequenceLearner is done), or a list of stages (e.g. [25, 200, 0.01])"
)


def check_goal(goal: object) -> Goal:
    """Check ``goal`` and return it in canonical form (numbers as plain int or float).

    Raises
    ------
    ConfigError
        If ``goal`` is not one of the accepted kinds or is out of range; the message names
        the bad value and lists the accepted kinds.

    """
    if goal is None:
        return None
    if isinstance(goal, (list, tuple, Stages)):
        return _check_stages(goal.goals if isinstance(goal, Stages) else tuple(goal))
    if isinstance(goal, bool):
        # bool is an int subclass, but goal=True surely is not "one point".
        raise ConfigError(f"goal={goal!r} is not a valid goal; give {_KINDS}")
    if isinstance(goal, numbers.Real):
        return _check_number(goal)
    if isinstance(goal, datetime):
        if goal.utcoffset() is None:
            raise ConfigError(
                f"goal={goal!r} is a naive datetime; give a timezone-aware one, e.g. "
                "datetime.now(timezone.utc) + timedelta(hours=5), or dt.astimezone()"
            )
        return goal
    if isinstance(goal, timedelta):
        if goal <= timedelta(0):
            raise ConfigError(f"goal={goal!r}: a run time must be positive")
        return goal
    if callable(goal):
        result: Callable[[Any], bool] = goal
        return result
    raise ConfigError(f"goal={goal!r} ({type(goal).__name__}) is not a valid goal; give {_KINDS}")


def _check_stages(given: tuple[object, ...]) -> Goal:
    """Stages checked: a list of one is that goal; looser stages are refused, naming both."""
    if not given:
        raise ConfigError("goal=[] has no stage: give at least one goal, e.g. goal=[25, 200]")
    stages: list[StageGoal] = []
    for k, stage in enumerate(given):
        if isinstance(stage, (list, tuple, Stages, timedelta, datetime)):
            raise ConfigError(
                f"goal stage [{k}]={stage!r} ({type(stage).__name__}) cannot be a stage: each "
                "stage is an int number of points, a float loss, a callable goal(learner) -> "
                "bool, or None (last only); a time goal bounds jobs, not a learner's progress: "
                "bound each job's time with the scheduler's walltime= instead"
            )
        if stage is None and k != len(given) - 1:
            raise ConfigError(
                f"goal stage [{k}] is None (until the learner is done), but stages follow it: "
                "None can only be the last stage"
            )
        checked = check_goal(stage)
        assert not isinstance(checked, (timedelta, datetime, Stages))  # noqa: S101 - refused above
        _check_not_looser(stages, checked, k)
        stages.append(checked)
    return stages[0] if len(stages) == 1 else Stages(*stages)


def _check_not_looser(before: Sequence[StageGoal], stage: StageGoal, k: int) -> None:
    """Refuse stage ``k`` if it asks less than the last stage ``before`` it of its kind.

    Points are compared with points and losses with losses (``[20, 0.1, 10]`` is refused:
    10 points after 20); callables and None with nothing.
    """
    if not isinstance(stage, (int, float)):
        return
    kind = type(stage)
    same = [(j, g) for j, g in enumerate(before[:k]) if isinstance(g, kind)]
    if not same:
        return
    j, earlier = same[-1]
    if (stage < earlier) if kind is int else (stage > earlier):
        what = "fewer points" if kind is int else "a larger loss"
        raise ConfigError(
            f"goal stage [{k}]={stage!r} asks {what} than stage [{j}]={earlier!r}: each "
            "stage must be at least as strict as the ones before it; order them coarse to fine"
        )


def n_stages(goal: Goal) -> int:
    """How many stages ``goal`` has (a plain goal: one)."""
    return len(goal.goals) if isinstance(goal, Stages) else 1


def stage_goal(goal: Goal, stage: int) -> PlainGoal:
    """The goal of stage ``stage`` (0-based); past the last (a rerun removed stages): the last."""
    if not isinstance(goal, Stages):
        return goal
    return goal.goals[min(stage, len(goal.goals) - 1)]


def final_goal(goal: Goal) -> PlainGoal:
    """The goal a learner is done at: the last stage's."""
    return stage_goal(goal, n_stages(goal) - 1)


def check_learners_end(goal: Goal, learners: Sequence[Any]) -> None:
    """Refuse ``goal=None`` unless every learner defines its own end.

    adaptive's runners stop a goal-less learner at ``learner.done()``, which a
    ``SequenceLearner`` (and a ``BalancingLearner`` of them) has; any other learner would run
    until its job's time runs out, again in every new job.

    Raises
    ------
    ConfigError
        Naming the first learner (and, in a BalancingLearner, its learner) that has no end.

    """
    if final_goal(goal) is None:
        for index, learner in enumerate(learners):
            missing = _without_end(learner)
            if missing is not None:
                said = "a last goal stage of None" if isinstance(goal, Stages) else "goal=None"
                raise ConfigError(
                    f"{said} runs a learner until learner.done(), which only a SequenceLearner "
                    f"(or a BalancingLearner of SequenceLearners) has, but learners[{index}] is "
                    f"{missing}: give a goal (an int number of points, a float loss, ...)"
                )


def _without_end(learner: Any) -> str | None:
    """What ``learner`` is (``"a Learner1D"``) if it has no end of its own, else None."""
    import adaptive  # noqa: PLC0415 - only for goal=None; the learners are adaptive's

    if isinstance(learner, adaptive.SequenceLearner):
        return None
    if isinstance(learner, adaptive.BalancingLearner):
        for k, inner in enumerate(learner.learners):
            if not isinstance(inner, adaptive.SequenceLearner):
                return f"a BalancingLearner whose learners[{k}] is a {type(inner).__name__}"
        return None
    return f"a {type(learner).__name__}"


def _check_number(goal: numbers.Real) -> int | float:
    """An int is a number of points (>= 1), any other real a loss (finite, > 0)."""
    if isinstance(goal, numbers.Integral):
        if goal < 1:
            raise ConfigError(f"goal={goal!r}: a number of points must be >= 1")
        return int(goal)
    loss = float(goal)
    if not (math.isfinite(loss) and loss > 0):
        raise ConfigError(f"goal={goal!r}: a loss goal must be a finite float > 0")
    return loss


def goal_check(
    goal: object, learner: Any, *, started: float | None = None
) -> Callable[[Any], bool]:
    """``goal`` (its last stage's) as the callable adaptive's runners make of it for ``learner``.

    A datetime is compared as a naive local time of this machine (what adaptive compares
    with ``datetime.now()``): call this on the machine that runs the learner. A run time
    (timedelta) counts from ``started`` (``time.monotonic()``; default: now), so a goal
    changed during a job keeps that job's clock.
    """
    from adaptive.runner import auto_goal  # noqa: PLC0415 - adaptive only when checking

    goal = final_goal(check_goal(goal))
    check: Callable[[Any], bool]
    if isinstance(goal, timedelta):
        deadline = (time.monotonic() if started is None else started) + goal.total_seconds()
        check = _RunTime(deadline)
    elif isinstance(goal, datetime):
        check = auto_goal(end_time=goal.astimezone().replace(tzinfo=None), learner=learner)
    elif isinstance(goal, int):
        check = auto_goal(npoints=goal, learner=learner)
    elif isinstance(goal, float):
        check = auto_goal(loss=goal, learner=learner)
    elif goal is None:  # learner.done() of a SequenceLearner (or a BalancingLearner of them)
        check = auto_goal(learner=learner)
    else:
        check = goal
    return check


class _RunTime:
    """A run-time goal: reached at ``deadline`` (``time.monotonic()``), whatever the learner."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, _: Any) -> bool:
        return time.monotonic() >= self.deadline


def may_need_more(old: object, new: Goal) -> bool:
    """Whether learners done at ``old`` might not meet ``new`` (a rerun changed the goal).

    False when ``new`` is provably no stricter: fewer or as many points, a larger or equal
    loss, an earlier or equal end time. A run time (timedelta) bounds one job, so nothing
    done is ever run again for it. Anything else (a callable, another kind) may need more.
    Stages are compared by their last (a learner is done there).
    """
    old, new = final_goal(old) if isinstance(old, Stages) else old, final_goal(new)
    if isinstance(new, timedelta):
        return False
    if type(old) is int and type(new) is int:
        return new > old
    if isinstance(old, datetime) and isinstance(new, datetime):
        return new > old
    if type(old) is float and type(new) is float:
        return new < old
    return not (old is None and new is None)


def describe_goal(goal: Goal) -> str:
    """A short human-readable form of ``goal`` for logs and the status panel."""
    if isinstance(goal, Stages):
        return "stages: " + " → ".join(_describe_one(stage) for stage in goal.goals)
    return _describe_one(goal)


def _describe_one(goal: Goal) -> str:
    if goal is None:
        return "until the learner is done"
    if isinstance(goal, int):
        return f"npoints >= {goal}"
    if isinstance(goal, float):
        return f"loss <= {goal:g}"
    if isinstance(goal, datetime):
        return f"until {goal.isoformat()}"
    if isinstance(goal, timedelta):
        return f"for {goal} per job"
    return f"until {getattr(goal, '__qualname__', repr(goal))}(learner)"
