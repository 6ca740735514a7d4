"""PBS backend: qsub / qstat / qdel in two dialects, PBS Pro (OpenPBS) and Torque.

The dialects share ``#PBS`` directives and ``qdel`` but differ where it hurts:

=================  ====================================  ==================================
                   PBS Pro / OpenPBS                     Torque
=================  ====================================  ==================================
array range        ``qsub -J 0-N`` (at least 2 tasks)    ``qsub -t 0-N%M``
throttle           ``-W max_run_subjobs=M`` (>= 2020)    ``%M`` in the range
task index env     ``PBS_ARRAY_INDEX``                   ``PBS_ARRAYID``
queue poll         ``qstat -f -F json -t -x`` (-x: also  ``qstat -x -t`` (-x: XML output,
                   finished jobs, -t: subjobs)           -t: one entry per subjob)
=================  ====================================  ==================================

Array ids look like ``123[].server``, task ids like ``123[4].server`` (``PBS_JOBID`` inside the
task, and how ``qstat`` names the subjob). A one-task PBS Pro "array" is a plain job
(``123.server``), because PBS Pro rejects a ``-J`` range with a single index.

This module holds the options, the script and the commands; what the commands print is read
by the pure parsers in :mod:`adaptive_runner.schedulers.pbs_parsers`.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import InitVar, dataclass
from typing import TYPE_CHECKING, ClassVar

from adaptive_runner.common.task_identity import PBS_SUBJOB, number_text
from adaptive_runner.common.validation import positive_int
from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import QueuedTask, TaskEnd, run_command
from adaptive_runner.schedulers.cluster import ClusterScheduler
from adaptive_runner.schedulers.pbs_parsers import (
    QstatEntry,
    only_jobs_gone,
    parse_pbspro_names,
    parse_torque_names,
    pbspro_json_entries,
    some_job_gone,
    torque_xml_entries,
    unknown_job_ids,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from pathlib import Path

    from adaptive_runner.schedulers.base import ScriptContext

FLAVORS = ("pbspro", "torque")
PBSPRO_DEFAULT_MAX_ARRAY_SIZE = 10000

_JOB_ID = re.compile(r"\d+(\[\])?(\.[^\s\[\]]+)?")
_UNSAFE_DIRECTIVE = re.compile(r"[\s'\"\\#]")


@dataclass(frozen=True, kw_only=True)
class PBS(ClusterScheduler):
    """A PBS Pro / OpenPBS or Torque cluster; an array task runs one learner at a time.

    Takes the common options (:class:`Scheduler`, :class:`ClusterScheduler`; ``walltime``
    strings are ``"HH:MM:SS"``, hours may exceed 24; ``memory`` is per node on PBS Pro, in
    the select chunk, and for the whole job on Torque) and this backend's earlier names for
    them: ``queue_name``, ``mem`` and ``extra_pbs``.

    Parameters
    ----------
    flavor
        ``"pbspro"`` (PBS Professional, OpenPBS) or ``"torque"``; ``check()`` tells you if
        ``qstat --version`` disagrees.
    nodes
        Nodes per task (``select=N`` on PBS Pro, ``nodes=N`` on Torque). With
        ``workers_per_node``, the nodes of each packed allocation (started by ``pbsdsh -u``).
    max_run_subjobs
        PBS Pro only: pass the concurrency cap as ``-W max_run_subjobs=M`` (OpenPBS and
        PBS Pro 2020.1 or newer). Set False for older servers, which reject the attribute;
        all tasks of an array may then run at once.

    """

    name: ClassVar[str] = "pbs"
    template_name: ClassVar[str] = "pbs.sh.j2"
    poll_interval_s: ClassVar[float] = 30.0  # qstat -f is heavy for the PBS server
    directive_prefix: ClassVar[str] = "#PBS"
    missing_hint: ClassVar[str] = "is this a PBS login node?"
    aliases: ClassVar[Mapping[str, str]] = {
        "queue_name": "queue",
        "mem": "memory",
        "extra_pbs": "extra_directives",
    }

    flavor: str = "pbspro"
    nodes: int = 1
    max_run_subjobs: bool = True
    queue_name: InitVar[str | None] = None
    mem: InitVar[str | None] = None
    extra_pbs: InitVar[Sequence[str] | None] = None

    def __post_init__(  # the aliases come in as InitVars
        self, queue_name: str | None, mem: str | None, extra_pbs: Sequence[str] | None
    ) -> None:
        """Validate the PBS options (no I/O here; see :meth:`check`)."""
        self.take_aliases({"queue_name": queue_name, "mem": mem, "extra_pbs": extra_pbs})
        super().__post_init__()
        if self.flavor not in FLAVORS:
            raise ConfigError(f"flavor must be 'pbspro' or 'torque', got {self.flavor!r}")
        positive_int(self.nodes, "nodes")

    # -- what the template uses -------------------------------------------------------------

    @property
    def node_count(self) -> int:
        """Nodes per array task."""
        return self.nodes

    @property
    def pack_command(self) -> str:
        """``pbsdsh -u``: one packer per node, each told its node's index (PBS_NODENUM)."""
        return "pbsdsh -u " if self.nodes > 1 else ""

    @property
    def pbs_mem(self) -> str | None:
        """``memory`` in PBS's own spelling: ``"8G"`` -> ``"8gb"``, ``"100"`` -> ``"100b"``."""
        size = self.memory_size()
        if size is None:
            return None
        number, unit = size
        return f"{number}{unit.removesuffix('B').lower()}b"

    def array_options(self, n_tasks: int, max_running: int) -> list[tuple[str, str]]:
        """The qsub options that make ``n_tasks`` tasks (at most ``max_running`` at once).

        Used by the template (as ``#PBS`` lines) and by :meth:`submit` (on the command line,
        where they take precedence), so both always agree.
        """
        if n_tasks <= 0 or max_running <= 0:
            raise ConfigError(
                f"n_tasks and max_running must be positive, got {n_tasks} and {max_running}"
            )
        last = n_tasks - 1
        if self.flavor == "torque":
            throttle = f"%{max_running}" if max_running < n_tasks else ""
            return [("-t", f"0-{last}{throttle}")]
        if n_tasks == 1:
            return []  # PBS Pro: "qsub: illegal -J value" for 0-0; a plain job instead
        options = [("-J", f"0-{last}")]
        if self.max_run_subjobs and max_running < n_tasks:
            options.append(("-W", f"max_run_subjobs={max_running}"))
        return options

    def job_name(self, ctx: ScriptContext) -> str:
        """``ctx.job_name`` as PBS accepts it: no spaces or specials, at most 236 chars."""
        name = re.sub(r"[^A-Za-z0-9_.+-]", "_", ctx.job_name)[:236]
        return name if name[:1].isalnum() else f"j{name}"[:236]

    def render(self, ctx: ScriptContext) -> str:
        """Render the job script; the log directory goes into a ``#PBS -o`` line."""
        if _UNSAFE_DIRECTIVE.search(str(ctx.log_dir)):
            raise ConfigError(
                f"log directory {str(ctx.log_dir)!r} contains spaces, quotes, '#' or "
                "backslashes, which qsub cannot take in a #PBS -o line: use a run directory "
                "without them"
            )
        return super().render(ctx)

    # -- cluster commands -------------------------------------------------------------------

    def check(self) -> None:
        """Check that qsub/qstat/qdel exist, the dialect matches and the queue exists."""
        for command in ("qsub", "qstat", "qdel"):
            if shutil.which(command) is None:
                raise SchedulerCommandError(f"{command} not found: {self.missing_hint}")
        version = run_command(["qstat", "--version"], missing_hint=self.missing_hint)
        is_pbspro = "pbs_version" in version
        if self.flavor == "pbspro" and not is_pbspro:
            raise ConfigError(
                "flavor='pbspro' but 'qstat --version' reports no pbs_version: this looks "
                "like Torque; use PBS(flavor='torque')"
            )
        if self.flavor == "torque" and is_pbspro:
            raise ConfigError(
                f"flavor='torque' but 'qstat --version' says {version.strip()!r}: this is "
                "PBS Pro/OpenPBS; use PBS(flavor='pbspro')"
            )
        if self.queue is not None:
            try:
                run_command(["qstat", "-Q", self.queue], retries=1)
            except SchedulerCommandError as e:
                raise ConfigError(f"queue={self.queue!r}: {e}") from e

    def max_array_size(self) -> int | None:
        """The server's array size limit from ``qstat -B -f``.

        PBS Pro calls it ``max_array_size`` (default 10000 when unset), Torque
        ``max_job_array_size`` (no limit when unset).
        """
        out = run_command(["qstat", "-B", "-f"], missing_hint=self.missing_hint)
        match = re.search(r"^\s*max(?:_job)?_array_size\s*=\s*(\d+)\s*$", out, re.MULTILINE)
        if match:
            return int(match.group(1))
        return PBSPRO_DEFAULT_MAX_ARRAY_SIZE if self.flavor == "pbspro" else None

    def submit_command(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None
    ) -> list[str]:
        """One qsub with the array options of :meth:`array_options`; ``tag`` is ``-N``."""
        options = [item for pair in self.array_options(n_tasks, max_running) for item in pair]
        name = [] if tag is None else ["-N", tag]
        return ["qsub", *name, *options, str(script)]

    def parse_submit(self, out: str) -> str:
        """The job id qsub printed: ``123[].server`` (``123.server`` for one PBS Pro task)."""
        job_id = out.strip()
        if not _JOB_ID.fullmatch(job_id):
            raise SchedulerCommandError(f"qsub printed {out!r}, expected a job id like 123[].srv")
        return job_id

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        """One qstat call for these arrays; task ids map to their states and job names.

        Tasks of arrays the server no longer knows are absent.
        """
        return {task: entry.queued() for task, entry in self._qstat(array_ids).items()}

    def exit_states(self, array_ids: Collection[str]) -> dict[str, TaskEnd]:
        """How these arrays' tasks ended, from the qstat call :meth:`queue_named` makes.

        qstat keeps finished tasks (PBS Pro's job history, Torque's ``keep_completed``) with
        their Exit_status, so this knows no more than what :meth:`queue_named` still lists.
        """
        ends = {task: entry.end() for task, entry in self._qstat(array_ids).items()}
        return {task: end for task, end in ends.items() if not end.state.active}

    def _qstat(self, array_ids: Collection[str]) -> dict[str, QstatEntry]:
        """Ask qstat once about these arrays: what it says of each of their tasks.

        Arrays the server no longer knows make qstat fail with "Unknown Job Id"; they are
        dropped and the rest asked again (once per vanished array).
        """
        wanted = sorted(set(array_ids))
        if self.flavor == "pbspro":
            command, parse = ["qstat", "-f", "-F", "json", "-t", "-x"], pbspro_json_entries
        else:
            command, parse = ["qstat", "-x", "-t"], torque_xml_entries
        while wanted:
            try:
                out = self._run_about_jobs([*command, *wanted])
            except SchedulerCommandError as e:
                gone = unknown_job_ids(e)
                if not gone & set(wanted):
                    raise
                wanted = [array_id for array_id in wanted if array_id not in gone]
                continue
            entries = parse(out)
            return {task: e for task, e in entries.items() if self.array_of(task) in wanted}
        return {}

    def tagged_command(self, tags: Collection[str]) -> list[str]:
        """One qstat listing of the server's jobs with their names (qstat cannot filter them)."""
        del tags
        if self.flavor == "pbspro":
            return ["qstat", "-f", "-F", "json", "-x"]
        return ["qstat", "-x"]

    def parse_tagged(self, out: str, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id in the listing of :meth:`tagged_command`."""
        parse = parse_pbspro_names if self.flavor == "pbspro" else parse_torque_names
        wanted = set(tags)
        return {name: job_id for job_id, name in parse(out).items() if name in wanted}

    def cancel(self, ids: Collection[str]) -> None:
        """Cancel tasks (``123[4].server``) or whole arrays (``123[].server``) with one qdel.

        Ids that already finished or left the server are fine: they are not running, which is
        what cancelling wants. Any other qdel complaint raises.
        """
        if not ids:
            return
        try:
            self._run_about_jobs(["qdel", *sorted(set(ids))])
        except SchedulerCommandError as e:
            if not only_jobs_gone(e):
                raise

    def array_of(self, task_id: str) -> str:
        """``123[4].server`` -> ``123[].server``; a plain PBS Pro job is its own array."""
        match = PBS_SUBJOB.match(task_id)
        return f"{match.group(1)}[]{match.group(3)}" if match else task_id

    def task_index(self, task_id: str) -> int | None:
        """``123[4].server`` -> 4; a plain PBS Pro job (``123.server``) is task 0 of its own.

        An array's own id (``123[].server``) names no task.
        """
        match = PBS_SUBJOB.match(task_id)
        if match:
            return number_text(match.group(2))
        return None if "[" in task_id else 0

    def _run_about_jobs(self, cmd: Sequence[str]) -> str:
        """run_command for qstat/qdel on job ids: a definite "no such job" comes back at once.

        Retrying cannot make an unknown or finished job known, so only other failures (server
        busy, timeouts) get run_command's retries with backoff.
        """
        try:
            return run_command(cmd, retries=1, missing_hint=self.missing_hint)
        except SchedulerCommandError as e:
            if some_job_gone(e):
                raise
        return run_command(cmd, missing_hint=self.missing_hint)
