"""The exceptions adaptive_runner raises; all derive from AdaptiveRunnerError."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


class AdaptiveRunnerError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AdaptiveRunnerError, ValueError):
    """Bad input from the user: says which argument, what was wrong and what to do."""


class ProtocolError(AdaptiveRunnerError):
    """A wire message that is not valid JSON of the expected shape."""


class SchedulerCommandError(AdaptiveRunnerError):
    """A scheduler command (sbatch, qsub, ...) failed, or printed what cannot be read.

    ``run_command`` fills every field, so callers classify a failure from the fields (the
    schedulers' small pure functions over them), never from the message. A parser raises it
    with the message alone for output it cannot read; ``command`` is then empty.

    Parameters
    ----------
    message
        Which command, what happened and its stderr, for people.
    command
        The command and its arguments.
    returncode
        Its exit code; None when it timed out or was not found.
    stdout
        What it printed on stdout (its last attempt).
    stderr
        What it printed on stderr (its last attempt).

    """

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] = (),
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.command = tuple(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


# A ConfigError (so also a ValueError): damaged state was raised as a ConfigError before this
# class existed, and callers catch it as one (the CLI's one line and exit 2, users of Run and
# Database.open); they go on doing so.
class RunStateError(ConfigError):
    """The run directory's state.sqlite is damaged, missing, or no run's state.

    Nothing of the run can be read from it or recorded into it: restore the file from a backup,
    or start the run again with ``overwrite=True`` (the learners' data files are kept). The
    message names the file and what is wrong with it.
    """


class StateFileError(RunStateError):
    """The run's state.sqlite was deleted, replaced or damaged while a manager used it.

    The manager stops: what it would record next would go to a file that is gone, so the
    message names the file and what happened to it. A RunStateError found in use rather than
    at opening, so it is restored or overwritten the same way.
    """


class ManagerUnreachableError(AdaptiveRunnerError):
    """The database manager did not answer within the client's patience."""


class ManagerUnresolvableError(ManagerUnreachableError):
    """The host in the database manager's url is no name the job's node can resolve.

    Found before the first claim: waiting would not change it, so the task says so and ends.
    """


class UnknownTaskError(AdaptiveRunnerError):
    """The database manager does not know the task's array, and did not learn it in time."""


class InitializerError(AdaptiveRunnerError):
    """One of the run's initializers raised in a job: the learner the job holds fails with it."""


class ManagerDiedError(AdaptiveRunnerError):
    """A manager thread of a run ended on an error, so the run cannot finish on its own.

    Raised by ``RunManager.wait()`` (after stopping the managers) instead of waiting for
    ever; ``RunManager.resume(run_dir)`` continues the run.

    Parameters
    ----------
    manager
        Which manager: ``"job manager"`` or ``"database manager"``.
    error
        The exception that ended its thread.

    """

    def __init__(self, manager: str, error: BaseException) -> None:
        super().__init__(
            f"the {manager} stopped on an error: {type(error).__name__}: {error}; "
            "RunManager.resume(run_dir) (or `adaptive-runner serve RUN_DIR`) continues the run"
        )
        self.manager = manager
        self.error = error
        self.summary = f"{manager} stopped: {type(error).__name__}: {error}"  # for status lines


class RunStuckError(AdaptiveRunnerError):
    """``RunManager.wait()`` gave up: every task of the run waits in the queue for good.

    Each has waited ``stuck_after`` for a reason no other job's end lifts (a partition limit,
    a partition set down, an account or QOS it may not use) and none ran, so the run cannot
    go on as it is. The jobs stay queued and the managers go on (the reason may pass, e.g. a
    partition set up again).

    Parameters
    ----------
    waited_s
        How long every task has waited so.
    problems
        The run's problems (``rm.problems()``): which tasks wait, why, and how to change the
        run's options.

    """

    def __init__(self, waited_s: float, problems: Sequence[str]) -> None:
        lines = "\n".join(f"- {problem}" for problem in problems)
        super().__init__(
            f"every task of the run has waited in the queue for {waited_s:.0f} s for a reason "
            f"no other job's end lifts, and none ran:\n{lines}\nThe jobs stay queued and the "
            "managers go on; rm.wait(stuck_after=None) waits on regardless."
        )
        self.waited_s = waited_s
        self.problems = list(problems)
