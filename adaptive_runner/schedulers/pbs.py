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

Only stdlib is imported here: the worker imports this module for :meth:`PBS.task_identity`.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import (
    JobState,
    QueuedTask,
    Scheduler,
    TaskEnd,
    TaskIdentity,
    run_command,
)
from adaptive_runner.validation import positive_int

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from pathlib import Path

    from adaptive_runner.schedulers.base import ScriptContext

FLAVORS = ("pbspro", "torque")
MISSING_HINT = "is this a PBS login node?"
PBSPRO_DEFAULT_MAX_ARRAY_SIZE = 10000

_WALLTIME = re.compile(r"\d+:[0-5]\d:[0-5]\d")
_MEM = re.compile(r"(\d+)\s*([kmgt]?)b?", re.IGNORECASE)
_QUEUE = re.compile(r"[A-Za-z0-9_.@-]+")
_JOB_ID = re.compile(r"\d+(\[\])?(\.[^\s\[\]]+)?")
_SUBJOB = re.compile(r"^(\d+)\[(\d+)\](.*)$")
_UNKNOWN_ID = re.compile(r"Unknown Job Id(?: Error)? (\S+)")
_UNSAFE_DIRECTIVE = re.compile(r"[\s'\"\\#]")
# Answers meaning "that job is finished or gone": final, and for qdel what cancel wants.
_NO_SUCH_JOB = ("Unknown Job Id", "Job has finished", "Request invalid for state of job")

# job_state letters (PBS Pro: Q R E F H S W X B T M U; Torque: Q R E C H S W T).
_ACTIVE_STATES = {
    "Q": JobState.PENDING,
    "H": JobState.PENDING,
    "W": JobState.PENDING,
    "T": JobState.PENDING,
    "M": JobState.PENDING,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting after having run: the task still holds its learner
    "S": JobState.RUNNING,  # suspended: resumes with the learner it holds
    "U": JobState.RUNNING,
}
_FINISHED_STATES = ("F", "X", "C")
_SIGNAL_BASE = 256  # both dialects report a job killed by signal n as 256 + n


class _Entry(NamedTuple):
    """What qstat says of one task: its job_state letter, Exit_status and job name."""

    state: str
    exit_status: int | None
    name: str | None  # None where the (broken) output did not show it

    def queued(self) -> QueuedTask:
        """The task as the queue poll wants it."""
        return QueuedTask(job_state(self.state, self.exit_status), self.name)

    def end(self) -> TaskEnd:
        """How the task ended (or that it has not)."""
        return task_end(self.state, self.exit_status)


@dataclass(frozen=True, kw_only=True)
class PBS(Scheduler):
    """A PBS Pro / OpenPBS or Torque cluster; an array task runs one learner at a time.

    Parameters
    ----------
    flavor
        ``"pbspro"`` (PBS Professional, OpenPBS) or ``"torque"``; ``check()`` tells you if
        ``qstat --version`` disagrees.
    nodes
        Nodes per task (``select=N`` on PBS Pro, ``nodes=N`` on Torque).
    queue_name
        Destination queue (``-q``); None uses the server's default. Named ``queue_name``
        because ``queue()`` is the method that polls the scheduler.
    walltime
        ``"HH:MM:SS"`` (hours may exceed 24), or None for the queue's default.
    mem
        Memory such as ``"8gb"`` or ``"8G"``; per node on PBS Pro (in the select chunk), for
        the whole job on Torque (``-l mem``). None requests nothing.
    account
        Account string (``-A``).
    extra_pbs
        Extra directives, one per entry, with or without the leading ``#PBS``
        (e.g. ``"-l place=scatter"``).
    max_run_subjobs
        PBS Pro only: pass the concurrency cap as ``-W max_run_subjobs=M`` (OpenPBS and
        PBS Pro 2020.1 or newer). Set False for older servers, which reject the attribute;
        all tasks of an array may then run at once.

    """

    name: ClassVar[str] = "pbs"
    template_name: ClassVar[str] = "pbs.sh.j2"
    poll_interval_s: ClassVar[float] = 30.0  # qstat -f is heavy for the PBS server

    flavor: str = "pbspro"
    nodes: int = 1
    queue_name: str | None = None
    walltime: str | None = None
    mem: str | None = None
    account: str | None = None
    extra_pbs: Sequence[str] = ()
    max_run_subjobs: bool = True

    def __post_init__(self) -> None:
        """Validate the PBS options (no I/O here; see :meth:`check`)."""
        super().__post_init__()
        if self.flavor not in FLAVORS:
            raise ConfigError(f"flavor must be 'pbspro' or 'torque', got {self.flavor!r}")
        positive_int(self.nodes, "nodes")
        if self.queue_name is not None and not _QUEUE.fullmatch(str(self.queue_name)):
            raise ConfigError(
                f"queue_name must be a PBS queue name (letters, digits, _ . @ -), "
                f"got {self.queue_name!r}"
            )
        if self.walltime is not None and not _WALLTIME.fullmatch(str(self.walltime)):
            raise ConfigError(
                f"walltime must look like 'HH:MM:SS' (e.g. '48:00:00'), got {self.walltime!r}"
            )
        if self.mem is not None and not _MEM.fullmatch(str(self.mem)):
            raise ConfigError(
                f"mem must be a size such as '8gb', '8G' or '500mb', got {self.mem!r}"
            )
        if self.account is not None and (
            not self.account or _UNSAFE_DIRECTIVE.search(str(self.account))
        ):
            raise ConfigError(
                f"account must be a non-empty string without spaces or quotes, got {self.account!r}"
            )
        if isinstance(self.extra_pbs, str):
            raise ConfigError("extra_pbs must be a list of directive lines, not one string")
        for line in self.extra_pbs:
            if not isinstance(line, str) or "\n" in line or "\r" in line or not line.strip():
                raise ConfigError(f"extra_pbs entries must be single non-empty lines, got {line!r}")

    # -- what the template uses -------------------------------------------------------------

    @property
    def pbs_mem(self) -> str | None:
        """``mem`` in PBS's own spelling: ``"8G"`` -> ``"8gb"``."""
        if self.mem is None:
            return None
        match = _MEM.fullmatch(str(self.mem))
        if match is None:  # __post_init__ validated it
            raise ConfigError(f"mem={self.mem!r} is not a size")
        return f"{match.group(1)}{match.group(2).lower()}b"

    @property
    def directives(self) -> list[str]:
        """``extra_pbs`` without any leading ``#PBS``."""
        return [line.strip().removeprefix("#PBS").strip() for line in self.extra_pbs]

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
                raise SchedulerCommandError(f"{command} not found: {MISSING_HINT}")
        version = run_command(["qstat", "--version"], missing_hint=MISSING_HINT)
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
        if self.queue_name is not None:
            try:
                run_command(["qstat", "-Q", self.queue_name], retries=1)
            except SchedulerCommandError as e:
                raise ConfigError(f"queue_name={self.queue_name!r}: {e}") from e

    def max_array_size(self) -> int | None:
        """The server's array size limit from ``qstat -B -f``.

        PBS Pro calls it ``max_array_size`` (default 10000 when unset), Torque
        ``max_job_array_size`` (no limit when unset).
        """
        out = run_command(["qstat", "-B", "-f"], missing_hint=MISSING_HINT)
        match = re.search(r"^\s*max(?:_job)?_array_size\s*=\s*(\d+)\s*$", out, re.MULTILINE)
        if match:
            return int(match.group(1))
        return PBSPRO_DEFAULT_MAX_ARRAY_SIZE if self.flavor == "pbspro" else None

    def submit(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None = None
    ) -> str:
        """Submit ``script`` as one array with one qsub call; return ``123[].server``.

        One attempt (see :meth:`Scheduler.submit`); ``tag`` becomes the job name (``-N``).
        """
        options = [item for pair in self.array_options(n_tasks, max_running) for item in pair]
        name = [] if tag is None else ["-N", tag]
        out = run_command(
            ["qsub", *name, *options, str(script)],
            retries=1,
            timeout_s=self.submit_timeout_s,
            missing_hint=MISSING_HINT,
        )
        job_id = out.strip()
        if not _JOB_ID.fullmatch(job_id):
            raise SchedulerCommandError(f"qsub printed {out!r}, expected a job id like 123[].srv")
        return job_id

    def queue_named(self, array_ids: Collection[str], *, jobs_dir: Path) -> dict[str, QueuedTask]:
        """One qstat call for these arrays; task ids map to their states and job names.

        Tasks of arrays the server no longer knows are absent.
        """
        del jobs_dir  # the server keeps the state
        return {task: entry.queued() for task, entry in self._qstat(array_ids).items()}

    def exit_states(self, array_ids: Collection[str], *, jobs_dir: Path) -> dict[str, TaskEnd]:
        """How these arrays' tasks ended, from the qstat call :meth:`queue` makes.

        qstat keeps finished tasks (PBS Pro's job history, Torque's ``keep_completed``) with
        their Exit_status, so this knows no more than what :meth:`queue` still lists.
        """
        del jobs_dir
        ends = {task: entry.end() for task, entry in self._qstat(array_ids).items()}
        return {task: end for task, end in ends.items() if not end.state.active}

    def _qstat(self, array_ids: Collection[str]) -> dict[str, _Entry]:
        """Ask qstat once about these arrays: what it says of each of their tasks.

        Arrays the server no longer knows make qstat fail with "Unknown Job Id"; they are
        dropped and the rest asked again (once per vanished array).
        """
        wanted = sorted(set(array_ids))
        if self.flavor == "pbspro":
            command, parse = ["qstat", "-f", "-F", "json", "-t", "-x"], _parse_pbspro_json
        else:
            command, parse = ["qstat", "-x", "-t"], _parse_torque_xml
        while wanted:
            try:
                out = _run_about_jobs([*command, *wanted])
            except SchedulerCommandError as e:
                gone = unknown_job_ids(e)
                if not gone & set(wanted):
                    raise
                wanted = [array_id for array_id in wanted if array_id not in gone]
                continue
            entries = parse(out)
            return {task: e for task, e in entries.items() if self.array_of(task) in wanted}
        return {}

    def find_tagged(self, tags: Collection[str], *, jobs_dir: Path) -> dict[str, str]:
        """Tag -> array id from one qstat listing of the server's jobs (with their names)."""
        del jobs_dir
        if not tags:
            return {}
        if self.flavor == "pbspro":
            out = run_command(["qstat", "-f", "-F", "json", "-x"], missing_hint=MISSING_HINT)
            names = parse_pbspro_names(out)
        else:
            out = run_command(["qstat", "-x"], missing_hint=MISSING_HINT)
            names = parse_torque_names(out)
        wanted = set(tags)
        return {name: job_id for job_id, name in names.items() if name in wanted}

    def cancel(self, ids: Collection[str], *, jobs_dir: Path) -> None:
        """Cancel tasks (``123[4].server``) or whole arrays (``123[].server``) with one qdel.

        Ids that already finished or left the server are fine: they are not running, which is
        what cancelling wants. Any other qdel complaint raises.
        """
        del jobs_dir
        if not ids:
            return
        try:
            _run_about_jobs(["qdel", *sorted(set(ids))])
        except SchedulerCommandError as e:
            if not only_jobs_gone(e):
                raise

    def array_of(self, task_id: str) -> str:
        """``123[4].server`` -> ``123[].server``; a plain PBS Pro job is its own array."""
        match = _SUBJOB.match(task_id)
        return f"{match.group(1)}[]{match.group(3)}" if match else task_id

    @classmethod
    def task_identity(cls, environ: Mapping[str, str]) -> TaskIdentity:
        """The task's identity from PBS's environment (the dialect shows in the names).

        PBS Pro sets ``PBS_ARRAY_INDEX``, Torque ``PBS_ARRAYID``; both set ``PBS_JOBID`` to
        the subjob id as qstat shows it (``123[4].server``). A one-task PBS Pro job has no
        index: it is task 0 of an array whose id is its own.
        """
        job_id = environ.get("PBS_JOBID")
        if not job_id:
            raise ConfigError("PBS_JOBID is not set: this is not running inside a PBS job")
        index = environ.get("PBS_ARRAY_INDEX", environ.get("PBS_ARRAYID"))
        if index is None:
            return TaskIdentity(task_id=job_id, array_id=job_id, task_index=0)
        match = _SUBJOB.match(job_id)
        if match is None or match.group(2) != index:
            raise ConfigError(
                f"PBS_JOBID={job_id!r} is not a subjob id with index {index!r} (like 123[4].srv)"
            )
        array_id = f"{match.group(1)}[]{match.group(3)}"
        return TaskIdentity(task_id=job_id, array_id=array_id, task_index=int(index))


def _run_about_jobs(cmd: Sequence[str]) -> str:
    """run_command for qstat/qdel on job ids: a definite "no such job" answer comes back at once.

    Retrying cannot make an unknown or finished job known, so only other failures (server
    busy, timeouts) get run_command's retries with backoff.
    """
    try:
        return run_command(cmd, retries=1, missing_hint=MISSING_HINT)
    except SchedulerCommandError as e:
        if any(_says_job_gone(line) for line in _complaints(e)):
            raise
    return run_command(cmd, missing_hint=MISSING_HINT)


def unknown_job_ids(error: SchedulerCommandError) -> set[str]:
    """The job ids a failed qstat or qdel called unknown ("Unknown Job Id [Error] ID")."""
    return {match for line in _complaints(error) for match in _UNKNOWN_ID.findall(line)}


def only_jobs_gone(error: SchedulerCommandError) -> bool:
    """Whether every complaint of a failed qdel is that a job is finished or gone.

    Then nothing it was asked to cancel still runs; any other complaint is a real failure.
    """
    complaints = _complaints(error)
    return bool(complaints) and all(_says_job_gone(line) for line in complaints)


def _complaints(error: SchedulerCommandError) -> list[str]:
    """The stderr lines of a command that ran and failed (none for a time-out)."""
    if not error.returncode:
        return []
    return [line for line in error.stderr.splitlines() if line.strip()]


def _says_job_gone(line: str) -> bool:
    return any(answer in line for answer in _NO_SUCH_JOB)


def job_state(state: str, exit_status: int | None) -> JobState:
    """Map a PBS ``job_state`` letter (and exit status, once finished) to a JobState.

    Finished jobs (PBS Pro F/X, Torque C): exit 0 is completed, 256 + n (killed by signal n:
    qdel, walltime) cancelled, anything else (including PBS's negative "could not start"
    codes) failed. A finished job without an exit status never ran or comes from an older
    PBS Pro that forgets subjob exit codes: unknown.
    """
    if state in _ACTIVE_STATES:
        return _ACTIVE_STATES[state]
    if state in _FINISHED_STATES:
        if exit_status is None:
            return JobState.UNKNOWN
        if exit_status == 0:
            return JobState.COMPLETED
        if exit_status > _SIGNAL_BASE:
            return JobState.CANCELLED
        return JobState.FAILED
    return JobState.UNKNOWN


def task_end(state: str, exit_status: int | None) -> TaskEnd:
    """A TaskEnd from a ``job_state`` letter and ``Exit_status`` (256 + n: killed by signal n).

    Negative statuses are PBS's own "could not run the job" codes, kept as exit codes.
    """
    signal = None
    if exit_status is not None and exit_status > _SIGNAL_BASE:
        signal = exit_status - _SIGNAL_BASE
    ending = job_state(state, exit_status)
    word = f"job_state={state}" + ("" if exit_status is None else f" Exit_status={exit_status}")
    return TaskEnd(
        state=ending,
        exit_code=None if signal is not None or ending.active else exit_status,
        signal=signal,
        scheduler_state=word,
    )


def _is_array_parent(job_id: str) -> bool:
    return "[]" in job_id


def _exit_status(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


# -- PBS Pro: qstat -f -F json ------------------------------------------------------------------


def parse_pbspro_json(text: str) -> dict[str, QueuedTask]:
    """Task states and names from ``qstat -f -F json -t [-x]``; array parents are skipped."""
    return {task: entry.queued() for task, entry in _parse_pbspro_json(text).items()}


def _parse_pbspro_json(text: str) -> dict[str, _Entry]:
    """Each task's job_state, Exit_status and Job_Name in qstat's JSON.

    PBS Pro writes Variable_List values without escaping them, so a job submitted from an
    environment with quotes, backslashes or exported bash functions yields invalid JSON
    (openpbs issues #2541, #1255; PR #2049 fixed only some cases). Nothing here needs
    Variable_List, so a failed parse is repaired by blanking those blocks, and if that is not
    enough each job's state is read from its own block.
    """
    for candidate in (text, _blank_variable_lists(text)):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            break
        jobs = data.get("Jobs", {})
        if not isinstance(jobs, dict):
            break
        return {
            job_id: _Entry(
                str(attrs.get("job_state", "")),
                _exit_status(attrs.get("Exit_status")),
                None if attrs.get("Job_Name") is None else str(attrs["Job_Name"]),
            )
            for job_id, attrs in jobs.items()
            if isinstance(attrs, dict) and not _is_array_parent(job_id)
        }
    return _scan_pbspro_jobs(text)


def parse_pbspro_names(text: str) -> dict[str, str]:
    """Job id -> job name for arrays and plain jobs in ``qstat -f -F json`` (no ``-t``)."""
    try:
        data = json.loads(_blank_variable_lists(text))
    except json.JSONDecodeError as e:
        raise SchedulerCommandError(
            f"cannot read qstat -F json output ({e}): {text[:300]!r}"
        ) from e
    jobs = data.get("Jobs", {}) if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        raise SchedulerCommandError(f"qstat -F json output has no Jobs object: {text[:300]!r}")
    return {
        job_id: str(attrs.get("Job_Name", ""))
        for job_id, attrs in jobs.items()
        if isinstance(attrs, dict) and not _SUBJOB.match(job_id)
    }


_VARLIST_OPEN = re.compile(r'^(?P<indent>[ \t]*)"Variable_List"\s*:\s*\{\s*$')


def _blank_variable_lists(text: str) -> str:
    """Replace each multi-line ``"Variable_List":{...}`` block with an empty object.

    The block ends at the first ``}`` line indented exactly like its opening line: values
    (exported bash functions end in a bare ``}``) are never indented by PBS.
    """
    out: list[str] = []
    closing: re.Pattern[str] | None = None
    for line in text.splitlines():
        if closing is None:
            match = _VARLIST_OPEN.match(line)
            if match:
                indent = match.group("indent")
                closing = re.compile(rf"^{re.escape(indent)}\}}(,?)\s*$")
                out.append(f'{indent}"Variable_List":{{}}')
            else:
                out.append(line)
        else:
            end = closing.match(line)
            if end:
                out[-1] += end.group(1)
                closing = None
    return "\n".join(out)


_JOB_OPEN = re.compile(r'^[ \t]*"(\d+(?:\[\d*\])?(?:\.[^"\s]*)?)"\s*:\s*\{\s*$', re.MULTILINE)
_STATE_FIELD = re.compile(r'^[ \t]*"job_state"\s*:\s*"([A-Z])"', re.MULTILINE)
_EXIT_FIELD = re.compile(r'^[ \t]*"Exit_status"\s*:\s*"?(-?\d+)"?', re.MULTILINE)
_NAME_FIELD = re.compile(r'^[ \t]*"Job_Name"\s*:\s*"([^"\\]*)"', re.MULTILINE)


def _scan_pbspro_jobs(text: str) -> dict[str, _Entry]:
    """Last resort for broken JSON: read ids, job_state, Exit_status, Job_Name line by line."""
    starts = list(_JOB_OPEN.finditer(text))
    if not starts:
        raise SchedulerCommandError(f"cannot read qstat -F json output: {text[:300]!r}")
    ends = [start.start() for start in starts[1:]] + [len(text)]
    states: dict[str, _Entry] = {}
    for start, end in zip(starts, ends, strict=True):
        job_id, block = start.group(1), text[start.end() : end]
        state = _STATE_FIELD.search(block)
        if state is None:
            raise SchedulerCommandError(
                f"qstat -F json output for {job_id} has no job_state; cannot tell its state: "
                f"{block[:200]!r}"
            )
        if not _is_array_parent(job_id):
            exit_match = _EXIT_FIELD.search(block)
            name = _NAME_FIELD.search(block)
            states[job_id] = _Entry(
                state.group(1),
                int(exit_match.group(1)) if exit_match else None,
                name.group(1) if name else None,
            )
    return states


# -- Torque: qstat -x ---------------------------------------------------------------------------


_XML_VARLIST = re.compile(r"<Variable_List>.*?</Variable_List>", re.DOTALL)


def parse_torque_xml(text: str) -> dict[str, QueuedTask]:
    """Task states and names from Torque's ``qstat -x -t`` XML (``<Data><Job><Job_Id>...``)."""
    return {task: entry.queued() for task, entry in _parse_torque_xml(text).items()}


def _parse_torque_xml(text: str) -> dict[str, _Entry]:
    """Each task's job_state, exit_status and job name in Torque's XML.

    Array summaries (``123[].server``, shown without ``-t``) are skipped. Torque names subjob
    i of array ``name`` ``name-i``: the array's name is given. Variable_List is the only
    free-form field; if the document does not parse, it is parsed again without it.
    """
    body = text.strip()
    if not body:
        return {}
    root = _parse_xml(body)
    if root is None:
        root = _parse_xml(_XML_VARLIST.sub("", body))
    if root is None or root.tag != "Data":
        raise SchedulerCommandError(f"cannot read Torque qstat -x output: {body[:300]!r}")
    states: dict[str, _Entry] = {}
    for job in root.iter("Job"):
        job_id = (job.findtext("Job_Id") or "").strip()
        if not job_id or _is_array_parent(job_id):
            continue
        state = (job.findtext("job_state") or "").strip()
        name = (job.findtext("Job_Name") or "").strip() or None
        subjob = _SUBJOB.match(job_id)
        if name is not None and subjob is not None:
            name = name.removesuffix(f"-{subjob.group(2)}")
        states[job_id] = _Entry(state, _exit_status(job.findtext("exit_status")), name)
    return states


def parse_torque_names(text: str) -> dict[str, str]:
    """Job id -> job name for arrays and plain jobs in Torque's ``qstat -x`` (no ``-t``)."""
    body = text.strip()
    if not body:
        return {}
    root = _parse_xml(body) or _parse_xml(_XML_VARLIST.sub("", body))
    if root is None or root.tag != "Data":
        raise SchedulerCommandError(f"cannot read Torque qstat -x output: {body[:300]!r}")
    names: dict[str, str] = {}
    for job in root.iter("Job"):
        job_id = (job.findtext("Job_Id") or "").strip()
        if job_id and not _SUBJOB.match(job_id):
            names[job_id] = (job.findtext("Job_Name") or "").strip()
    return names


def _parse_xml(text: str) -> Any:
    try:
        return ET.fromstring(text)  # noqa: S314 - qstat's output on the login node, not network data
    except ET.ParseError:
        return None
