"""The exceptions adaptive_runner raises; all derive from AdaptiveRunnerError."""

from __future__ import annotations


class AdaptiveRunnerError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AdaptiveRunnerError, ValueError):
    """Bad input from the user: says which argument, what was wrong and what to do."""


class ProtocolError(AdaptiveRunnerError):
    """A wire message that is not valid JSON of the expected shape."""


class SchedulerCommandError(AdaptiveRunnerError):
    """A scheduler command (sbatch, qsub, ...) failed after its retries."""


class ManagerUnreachableError(AdaptiveRunnerError):
    """The database manager did not answer within the client's patience."""
