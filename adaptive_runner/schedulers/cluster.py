"""What every batch cluster (SLURM, PBS) takes beyond the common options, under one name each.

A queue, an account, memory, extra directive lines and an MPI launcher mean the same on every
cluster, so they are named once here (as dask-jobqueue names them on every cluster class).
Each backend spells them in its own script lines; its users' own words for them
(``partition=``, ``mem=``, ...) stay accepted as aliases, listed in its ``aliases``.

A backend says how to submit and how to find an array by its tag as pure command builders
and parsers (``submit_command``/``parse_submit``, ``tagged_command``/``parse_tagged``, as
PSI-J's executors do); the commands run here, through ``run_command``, the one I/O seam.
"""

from __future__ import annotations

import re
import shlex
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from adaptive_runner.common.validation import plain_text, positive_int
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers.base import Scheduler, run_command

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from pathlib import Path

_WORD = re.compile(r"[^\s'\"\\#]+")  # a queue, an account: one word that needs no quoting
# A size: a positive number, then K, M, G or T and an optional B, in any case ("8G", "8gb").
_MEMORY = re.compile(r"(?P<n>\d+)\s*(?P<unit>[KMGT]?)(?P<b>B?)", re.IGNORECASE)


def plain_word(value: object, name: str) -> None:
    """Refuse a ``name`` that is not one word without spaces, quotes, backslashes or ``#``."""
    if value is not None and not (isinstance(value, str) and _WORD.fullmatch(value)):
        raise ConfigError(
            f"{name}={value!r}: give one word without spaces, quotes, backslashes or '#'"
        )


@dataclass(frozen=True, kw_only=True)
class ClusterScheduler(Scheduler):
    """A batch cluster: the options that mean the same on every one of them.

    Parameters
    ----------
    queue
        Where the jobs go: SLURM's partition, PBS's queue; None for the cluster's default.
        Checked in :meth:`check`.
    account
        The account charged for the jobs.
    memory
        Memory per node (per job on Torque): a number and a unit K, M, G or T, with or
        without a B, in any case (``"8G"``, ``"8gb"``, ``"500MB"``). A number alone takes the
        scheduler's own unit (SLURM: megabytes, PBS: bytes).
    extra_directives
        More directive lines, one per entry, with or without the ``#SBATCH``/``#PBS`` in
        front, e.g. ``["--constraint=skylake"]`` or ``["-l place=scatter"]``.
    mpi_launcher
        The command that starts the MPI ranks for ``executor="mpi4py"``, followed by
        ``-n <cores>``, e.g. ``"mpiexec"`` or ``"srun --mpi=pmi2"``.
    workers_per_node
        Pack workers into each array task: it becomes one allocation of ``nodes`` nodes
        that runs this many workers per node, each with ``cores`` cores, each claiming
        learner after learner under its own id. None (the default): one worker per task.
        ``max_simultaneous_jobs`` counts allocations. Not with ``executor="mpi4py"``.

    """

    # The directive that starts an option line in the job script.
    directive_prefix: ClassVar[str]
    # Said when a command is missing from PATH, e.g. "is this a SLURM login node?".
    missing_hint: ClassVar[str]
    # The backend's own option names -> the names above; accepted by the constructor (as
    # InitVars handed to take_aliases) and never stored in run.json.
    aliases: ClassVar[Mapping[str, str]] = {}

    queue: str | None = None
    account: str | None = None
    memory: str | None = None
    extra_directives: Sequence[str] = field(default_factory=tuple)
    mpi_launcher: str = "mpiexec"
    workers_per_node: int | None = None

    def __post_init__(self) -> None:
        """Validate the cluster options (no I/O: the queue is checked in :meth:`check`)."""
        super().__post_init__()
        plain_word(self.queue, "queue")
        plain_word(self.account, "account")
        if self.memory is not None:
            self.memory_size()
        self._check_directives()
        try:
            launcher = shlex.split(self.mpi_launcher)
        except (ValueError, AttributeError) as e:
            raise ConfigError(f"mpi_launcher={self.mpi_launcher!r} is not a command: {e}") from e
        if not launcher:
            raise ConfigError("mpi_launcher must name a command, e.g. 'mpiexec'")
        plain_text(self.mpi_launcher, "mpi_launcher")  # one line of the job script
        self._check_packing()
        # Old names stay readable, for job-script templates written against them.
        for alias, name in self.aliases.items():
            object.__setattr__(self, alias, getattr(self, name))

    def _check_packing(self) -> None:
        if self.workers_per_node is None:
            return
        positive_int(self.workers_per_node, "workers_per_node")
        if self.executor == "mpi4py":
            raise ConfigError(
                "workers_per_node packs workers that each run their own learner on 'cores' "
                "cores; executor='mpi4py' runs one learner over MPI ranks: give one of the two"
            )

    @property
    @abstractmethod
    def node_count(self) -> int:
        """Nodes per array task."""

    @property
    def packed(self) -> int | None:
        """``workers_per_node`` x nodes when packing, else None."""
        if self.workers_per_node is None:
            return None
        return self.workers_per_node * self.node_count

    @property
    def node_cores(self) -> int:
        """Cores asked for per node: ``cores`` for each worker packed there."""
        return self.cores * (self.workers_per_node or 1)

    @property
    @abstractmethod
    def pack_command(self) -> str:
        """What starts ``packing.py`` once on every node of a packed allocation.

        "" on one node, where the job script runs it itself (a script runs on the first
        node of its allocation only); shell words ending with a space otherwise.
        """

    def take_aliases(self, given: Mapping[str, object]) -> None:
        """Move options given under their ``aliases`` to their common names.

        Called by a backend's ``__post_init__`` with its alias InitVars before this class's
        checks run; an alias given (not None) beside its name is a ConfigError naming both.
        """
        for alias, value in given.items():
            name = self.aliases[alias]
            if value is None:
                continue
            if getattr(self, name) not in (None, (), []):  # the defaults: not given
                raise ConfigError(
                    f"{name}= and {alias}= are the same option ({alias} is {type(self).__name__}'s "
                    f"own name for it): give only one, preferably {name}="
                )
            object.__setattr__(self, name, value)

    def _check_directives(self) -> None:
        if isinstance(self.extra_directives, str):
            raise ConfigError(
                f"extra_directives must be a list of lines, got the string "
                f"{self.extra_directives!r}: wrap it in a list"
            )
        object.__setattr__(self, "extra_directives", tuple(self.extra_directives))
        for line in self.extra_directives:
            if not isinstance(line, str) or "\n" in line or "\r" in line or not line.strip():
                raise ConfigError(
                    f"extra_directives entries must be single non-empty lines, got {line!r}"
                )

    @property
    def directives(self) -> list[str]:
        """``extra_directives`` without a leading ``#SBATCH``/``#PBS``, for the job script."""
        prefix = self.directive_prefix
        return [line.strip().removeprefix(prefix).strip() for line in self.extra_directives]

    def memory_size(self) -> tuple[int, str] | None:
        """``memory`` as a number and its unit: K, M, G, T, B (bytes) or "" (none given)."""
        if self.memory is None:
            return None
        match = _MEMORY.fullmatch(str(self.memory).strip())
        if match is None or int(match["n"]) == 0:
            raise ConfigError(
                f"memory={self.memory!r} is not a memory size: give a positive number with a "
                "unit K, M, G or T, e.g. '8G', '8gb' or '500MB'"
            )
        return int(match["n"]), (match["unit"] or match["b"]).upper()

    @property
    def mpi_command(self) -> str:
        """``mpi_launcher`` split and shell-quoted, ready for the job script."""
        return shlex.join(shlex.split(self.mpi_launcher))

    # -- submitting, and finding what was submitted ------------------------------------------

    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        """Submit ``script`` as one array with one command; return the array's id.

        One attempt: a submit command may queue the array and still fail (``Socket timed
        out``), so a retry is the job manager's, after :meth:`find_tagged`.
        """
        if n_tasks <= 0 or max_running <= 0:
            raise ConfigError(
                f"n_tasks and max_running must be positive, got {n_tasks} and {max_running}"
            )
        out = run_command(
            self.submit_command(script, n_tasks=n_tasks, max_running=max_running, tag=tag),
            retries=1,
            timeout_s=self.submit_timeout_s,
            missing_hint=self.missing_hint,
        )
        return self.parse_submit(out)

    def find_tagged(self, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id for the arrays named by ``tags`` that the cluster knows (one call)."""
        if not tags:
            return {}
        out = run_command(self.tagged_command(tags), missing_hint=self.missing_hint)
        return self.parse_tagged(out, tags)

    @abstractmethod
    def submit_command(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None
    ) -> list[str]:
        """The command that submits ``script`` as ``n_tasks`` tasks, ``tag`` its job name."""

    @abstractmethod
    def parse_submit(self, out: str) -> str:
        """The array id in what :meth:`submit_command` printed."""

    @abstractmethod
    def tagged_command(self, tags: Collection[str]) -> list[str]:
        """The command that lists the user's jobs with their names (those in ``tags`` at least)."""

    @abstractmethod
    def parse_tagged(self, out: str, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id in what :meth:`tagged_command` printed, for the names in ``tags``."""
