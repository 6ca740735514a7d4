"""The run's goal as a worker follows it: goal.pickle, read again whenever a rerun rewrites it.

A rerun of the notebook cell with another goal rewrites goal.pickle (atomically) while jobs
run. The worker's heartbeat asks :meth:`FollowedGoal.follow` whether the file changed (one
``stat``); if so, the learner's runner checks the new goal from its next point on: a lowered
goal ends the learner there (saved and done), a raised one keeps it going.

A staged goal (``goal=[25, 200]``) is followed one stage at a time: the stage the claim
gave, then the next each time the database manager lets the worker go on (:meth:`advance`).
"""

from __future__ import annotations

import os
import pickle
import time
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.goals import (
    Goal,
    check_goal,
    describe_goal,
    goal_check,
    n_stages,
    stage_goal,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class FollowedGoal:
    """The callable goal adaptive's runner is given: the latest goal.pickle's, for ``learner``.

    Call :meth:`load` once before the runner starts, then :meth:`follow` now and then.
    A run-time goal (timedelta) counts from this object's making: the job's clock. Of a
    staged goal, it is stage ``stage``'s (0-based; past the last: the last).
    """

    def __init__(self, path: Path, learner: Any, stage: int = 0) -> None:
        self._path = path
        self._learner = learner
        self._started = time.monotonic()
        self._stamp: tuple[int, int, int] | None = None  # (inode, size, mtime) of the file read
        self._check: Callable[[Any], bool] = lambda _: False
        self._goal: Goal = None
        self.stage = stage
        self.description = ""

    @property
    def last(self) -> bool:
        """Whether this is the goal's last stage (a plain goal has one): reaching it is done."""
        return self.stage >= n_stages(self._goal) - 1

    def advance(self) -> None:
        """Follow the next stage from now on."""
        self.stage += 1
        self._use(self._goal)

    def __call__(self, learner: Any) -> bool:
        """Whether ``learner`` meets the goal (adaptive's runner asks after every point)."""
        return self._check(learner)

    def load(self) -> None:
        """Read goal.pickle (written by this run's manager) and check against it from now on."""
        with self._path.open("rb") as f:
            stamp = _stamp(os.fstat(f.fileno()))
            goal = check_goal(pickle.load(f))  # noqa: S301 - the run manager's own pickle
        self._use(goal)
        self._stamp = stamp

    def _use(self, goal: Goal) -> None:
        """Check this stage of ``goal`` from now on."""
        stage = stage_goal(goal, self.stage)
        # Replaced in one assignment: the runner's thread may be calling the old one.
        self._check = goal_check(stage, self._learner, started=self._started)
        self._goal = goal
        self.description = describe_goal(stage)
        if n_stages(goal) > 1:
            self.description += (
                f" (stage {min(self.stage, n_stages(goal) - 1) + 1} of {n_stages(goal)})"
            )

    def follow(self) -> bool:
        """Load goal.pickle again if a rerun rewrote it; whether the goal changed.

        An unreadable new file raises (the caller logs it and keeps the goal it has);
        the next call tries again.
        """
        if _stamp(self._path.stat()) == self._stamp:
            return False
        self.load()
        return True


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)
