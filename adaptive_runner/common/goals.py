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
  of them (:func:`check_learners_end` refuses the others).

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

Goal: TypeAlias = Callable[[Any], bool] | int | float | timedelta | datetime | None

_KINDS = (
    "a callable goal(learner) -> bool, an int number of points >= 1, a float loss > 0, "
    "a timedelta (run time of each job), a timezone-aware datetime (end time) or None "
    "(until a SequenceLearner is done)"
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
    if goal is None:
        for index, learner in enumerate(learners):
            missing = _without_end(learner)
            if missing is not None:
                raise ConfigError(
                    "goal=None runs a learner until learner.done(), which only a SequenceLearner "
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
    """``goal`` as the callable adaptive's runners make of it for ``learner``.

    A datetime is compared as a naive local time of this machine (what adaptive compares
    with ``datetime.now()``): call this on the machine that runs the learner. A run time
    (timedelta) counts from ``started`` (``time.monotonic()``; default: now), so a goal
    changed during a job keeps that job's clock.
    """
    from adaptive.runner import auto_goal  # noqa: PLC0415 - adaptive only when checking

    goal = check_goal(goal)
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
    """
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
