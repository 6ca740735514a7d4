"""SLURM backend: sbatch job arrays, one squeue poll, scancel, and sacct where accounting exists."""

from __future__ import annotations

import re
import shlex
import signal as signals
import tempfile
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from adaptive_runner.common.validation import positive_int
from adaptive_runner.common.vocabulary import STOP_SIGNALS, ExecutorName
from adaptive_runner.errors import ConfigError, SchedulerCommandError
from adaptive_runner.schedulers.base import (
    JobState,
    QueuedTask,
    ScriptContext,
    TaskEnd,
    run_command,
)
from adaptive_runner.schedulers.cluster import ClusterScheduler, plain_word

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from datetime import timedelta

# squeue: array job id | array task id or pending expression (e.g. "8-11%8") | long state name
# | why it waits ("Priority", "JobHeldUser"; "None" once it runs) | job name (last: a name may
# contain '|'). `-t all` keeps recently finished tasks (for MinJobAge) with their final state.
SQUEUE_FORMAT = "%F|%K|%T|%r|%j"
_SQUEUE_FIELDS = 5
_NO_REASON = frozenset({"", "None", "(null)"})  # what %r prints when nothing holds a job back
_NOT_AN_ARRAY = "N/A"  # squeue's %K for a job that is no array
# Pending reasons (squeue's %r) of a job that waits for a limit no other job's end lifts
# (SLURM's job reason codes), with what they mean for the job script's options.
_STUCK = {
    "PartitionNodeLimit": "it asks for more nodes than the partition allows (or its nodes are "
    "down or drained): fewer nodes, or another queue",
    "PartitionTimeLimit": "its walltime is above the partition's limit: a shorter walltime, "
    "or another queue",
    "PartitionConfig": "it asks for more than the partition allows (cores, memory, GPUs)",
    "BadConstraints": "no node has what its --constraint or resources ask for",
    "InvalidAccount": "the account is not valid: check account=",
    "InvalidQOS": "the QOS is not valid: check qos=",
    "AccountNotAllowed": "the account may not use this partition: check account= and queue=",
    "QOSNotAllowed": "the QOS may not be used in this partition: check qos= and queue=",
    "PartitionDown": "its partition is down (the administrators' setting): another queue, or "
    "wait until they set it up",
    "PartitionInactive": "its partition is inactive (the administrators' setting): another queue",
}
# A per-job maximum of the QOS or association (QOSMaxCpuPerJobLimit, AssocMaxWallDurationPerJob
# Limit, ...): the job asks for more than any one job may have.
_PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)Max\w*PerJob\w*")
# squeue and sacct cut array expressions at 64 characters unless told otherwise.
_FULL_ARRAY_EXPRESSIONS = {"SLURM_BITSTR_LEN": "0"}
# sacct: one line per array task (-X: no steps), pending tasks as one `A_[range]` line.
SACCT_FIELDS = "JobID,State,ExitCode"
_ACCOUNTING_DISABLED = "accounting storage is disabled"
_EXIT_CODE = re.compile(r"(\d+):(\d+)")  # sacct ExitCode: the exit code, then the signal

# Every job state code SLURM reports (squeue %T, sacct State), as far as a task's life goes:
# still queued, holding its allocation, or ended (and how).
_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,  # held after a special exit; runs again when released
    "CONFIGURING": JobState.RUNNING,  # allocated, nodes booting
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # ended, processes still being cleaned up
    "SUSPENDED": JobState.RUNNING,  # holds its allocation and its learner
    "STOPPED": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    # Ended from outside; the worker got a signal first and released its learner.
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.CANCELLED,
    "DEADLINE": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
}

_TIME_FORMS = (
    re.compile(r"(?P<m>\d+)"),
    re.compile(r"(?P<m>\d+):(?P<s>\d+)"),
    re.compile(r"(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d+)"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)"),
)
_JOB_ID = re.compile(r"\d+(_\d+)?")
_MAX_SIGNAL_GRACE_S = 65535  # sbatch --signal takes at most this
# The signals the worker saves and releases on, by the names sbatch --signal takes.
_WORKER_STOP_SIGNALS = tuple(sig.name.removeprefix("SIG") for sig in STOP_SIGNALS)


def parse_time(value: str) -> int:
    """Seconds in a SLURM time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    for form in _TIME_FORMS:
        match = form.fullmatch(value.strip())
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items()}
            seconds = (
                parts.get("d", 0) * 86400
                + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60
                + parts.get("s", 0)
            )
            if seconds <= 0:
                break
            return seconds
    raise ConfigError(
        f"walltime={value!r} is not a positive SLURM time limit: give a timedelta, minutes "
        "('90'), 'MM:SS', 'HH:MM:SS' or 'D-HH:MM:SS'"
    )


def format_time(seconds: int) -> str:
    """A time limit as sbatch's unambiguous D-HH:MM:SS."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_array_tasks(expression: str) -> list[int]:
    """The task indices in a SLURM array expression such as ``1,3,5-7``, ``0-300:3%5`` or ``7``.

    A ``%N`` throttle suffix and surrounding brackets are ignored.
    """
    body = expression.strip().removeprefix("[").removesuffix("]").partition("%")[0]
    indices: list[int] = []
    for part in body.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if match is None:
            raise SchedulerCommandError(
                f"cannot read SLURM array expression {expression!r} (near {part!r}); a "
                "truncated one ends in '...' when SLURM_BITSTR_LEN is not 0"
            )
        first, last, step = match.groups()
        stop = int(last) if last is not None else int(first)
        indices.extend(range(int(first), stop + 1, int(step or 1)))
    return indices


def _state(code: str) -> JobState:
    # sacct writes "CANCELLED by 1000"; squeue only the code.
    return _STATES.get(code.split(" ", 1)[0], JobState.UNKNOWN)


def parse_squeue(text: str, array_ids: Collection[str]) -> dict[str, QueuedTask]:
    """Task id -> state, job name and pending reason of the tasks of ``array_ids`` in squeue.

    The command is ``squeue -h -o '%F|%K|%T|%r|%j'``. Pending ranges are expanded into their
    tasks; other users' and other runs' jobs are ignored. A job that is no array (``%K`` is
    ``N/A``) but has one of these ids got it after slurmctld lost its state: it is keyed by
    its own id, so its name shows whose it is.
    """
    wanted = set(array_ids)
    tasks: dict[str, QueuedTask] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|", _SQUEUE_FIELDS - 1)
        if len(fields) != _SQUEUE_FIELDS:
            raise SchedulerCommandError(f"unexpected squeue line {line!r}: want '{SQUEUE_FORMAT}'")
        array_id, indices, code, reason, name = fields
        if array_id not in wanted:
            continue
        task = QueuedTask(_state(code), name, None if reason in _NO_REASON else reason)
        if indices == _NOT_AN_ARRAY:
            tasks[array_id] = task
        else:
            tasks.update((f"{array_id}_{index}", task) for index in parse_array_tasks(indices))
    return tasks


def parse_squeue_names(text: str, tags: Collection[str]) -> dict[str, str]:
    """Job name -> array id in ``squeue -h -o '%F|%j'`` output, for the names in ``tags``."""
    wanted = set(tags)
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        array_id, sep, name = line.partition("|")
        if not sep or not array_id.isdigit():
            raise SchedulerCommandError(f"unexpected squeue line {line!r}: want '%F|%j'")
        if name in wanted:
            found[name] = array_id
    return found


def parse_sacct(text: str, array_ids: Collection[str]) -> dict[str, TaskEnd]:
    """Task id -> how it ended, for the tasks of ``array_ids`` in sacct output.

    The command is ``sacct -X -n --parsable2 -o JobID,State,ExitCode``; job ids look like
    ``123_4`` or, for tasks still pending, ``123_[5-9%2]``; ExitCode is ``code:signal``.
    A line ``123|STATE|...`` without a task index is skipped: sacct shows an array's own
    record so for a moment (seen right after scancel of its last running task), and it says
    nothing about which task.
    """
    wanted = set(array_ids)
    ends: dict[str, TaskEnd] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 3:  # noqa: PLR2004 - the three SACCT_FIELDS
            raise SchedulerCommandError(
                f"unexpected sacct line {line!r}: want 'A_tasks|STATE|code:signal'"
            )
        array_id, underscore, tasks = fields[0].partition("_")
        if underscore and array_id in wanted:
            end = sacct_task_end(fields[1], fields[2])
            ends.update((f"{array_id}_{index}", end) for index in parse_array_tasks(tasks))
    return ends


def sacct_task_end(state: str, exit_code: str) -> TaskEnd:
    """A TaskEnd from sacct's State (``"CANCELLED by 0"``) and ExitCode (``"0:11"``) fields."""
    match = _EXIT_CODE.fullmatch(exit_code)
    if match is None:
        raise SchedulerCommandError(f"sacct ExitCode {exit_code!r} is not 'code:signal'")
    job_state = _state(state)
    signal = int(match[2]) or None
    ended = not job_state.active and signal is None
    return TaskEnd(
        state=job_state,
        exit_code=int(match[1]) if ended else None,
        signal=signal,
        scheduler_state=state,
    )


def accounting_disabled(error: SchedulerCommandError) -> bool:
    """Whether sacct failed because the cluster keeps no accounting (an answer, not a fault)."""
    return bool(error.returncode) and _ACCOUNTING_DISABLED in error.stderr.lower()


def parse_sbatch(text: str) -> str:
    """The job id in ``sbatch --parsable`` output (``123`` or ``123;cluster``)."""
    job_id = text.strip().partition(";")[0]
    if not job_id.isdigit():
        raise SchedulerCommandError(f"sbatch --parsable printed {text!r}, not a job id")
    return job_id


def parse_max_array_size(config_text: str) -> int:
    """``MaxArraySize`` from ``scontrol show config`` output."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)\s*$", config_text, re.MULTILINE)
    if match is None:
        raise SchedulerCommandError("`scontrol show config` printed no MaxArraySize")
    return int(match[1])


@dataclass(frozen=True, kw_only=True)
class SLURM(ClusterScheduler):
    """SLURM: each run (or resource group) is submitted as ``sbatch --array``.

    Takes the common options (:class:`Scheduler`, :class:`ClusterScheduler`: ``queue`` is the
    partition, ``walltime`` also takes SLURM's forms: minutes ``"90"``, ``"MM:SS"``,
    ``"D-HH:MM:SS"``, ...) and SLURM's own words for them: ``partition``, ``time``, ``mem``
    and ``extra_sbatch``.

    Parameters
    ----------
    nodes
        Nodes per task. With ``workers_per_node``: the nodes of each packed allocation.
        Else for one MPI learner over several nodes: with ``cores_per_node`` it replaces
        ``cores`` (then ``cores = nodes * cores_per_node``); needs ``executor="mpi4py"`` if
        more than one.
    cores_per_node
        MPI ranks per node when ``nodes`` is given for one MPI learner.
    qos
        The quality of service (``--qos``).
    exclusive
        Ask for whole nodes (``--exclusive``).
    signal
        Sent to the batch shell (and so the worker) ``signal_grace_s`` before the time
        limit, so it saves and releases its learner: ``"USR1"`` or ``"TERM"`` (where USR1
        clashes with an MPI/NCCL stack), the signals the worker handles. None sends nothing
        besides SLURM's own TERM at the limit.
    signal_grace_s
        Seconds between ``signal`` and the time limit (SLURM may send it up to 60 s early).

    """

    name: ClassVar[str] = "slurm"
    template_name: ClassVar[str] = "slurm.sh.j2"
    directive_prefix: ClassVar[str] = "#SBATCH"
    missing_hint: ClassVar[str] = "is this a SLURM login node?"
    aliases: ClassVar[Mapping[str, str]] = {
        "partition": "queue",
        "time": "walltime",
        "mem": "memory",
        "extra_sbatch": "extra_directives",
    }

    nodes: int | None = None
    cores_per_node: int | None = None
    qos: str | None = None
    exclusive: bool = False
    signal: str | None = "USR1"
    signal_grace_s: int = 120
    partition: InitVar[str | None] = None
    time: InitVar[timedelta | str | None] = None
    mem: InitVar[str | None] = None
    extra_sbatch: InitVar[Sequence[str] | None] = None

    def __post_init__(  # the aliases come in as InitVars
        self,
        partition: str | None,
        time: timedelta | str | None,
        mem: str | None,
        extra_sbatch: Sequence[str] | None,
    ) -> None:
        """Validate every option, so a bad one fails here and not in sbatch."""
        self.take_aliases(
            {"partition": partition, "time": time, "mem": mem, "extra_sbatch": extra_sbatch}
        )
        super().__post_init__()
        self._check_nodes()
        plain_word(self.qos, "qos")
        if (self.memory_size() or (0, ""))[1] == "B":
            raise ConfigError(
                f"memory={self.memory!r}: SLURM takes no bytes; give K, M, G or T, e.g. '500M'"
            )
        for flag in self.directives:
            if not flag.startswith("-"):
                raise ConfigError(
                    f"extra_directives entries must be single sbatch flags like "
                    f"'--constraint=gpu', got {flag!r}"
                )
        self._check_signal()

    def stuck(self, reason: str) -> str | None:
        """What a pending reason that no other job's end lifts means (see ``_STUCK``)."""
        if reason in _STUCK:
            return _STUCK[reason]
        if _PER_JOB_LIMIT.fullmatch(reason):
            return "it asks for more than one job may have under its QOS or account"
        return None

    def parse_walltime(self, text: str) -> int:
        """Seconds in a SLURM time limit (see :func:`parse_time`)."""
        return parse_time(text)

    def _check_signal(self) -> None:
        names = {sig.name.removeprefix("SIG") for sig in signals.Signals}
        if self.signal_name is not None and self.signal_name not in names:
            raise ConfigError(f"signal must be a signal name like 'USR1', got {self.signal!r}")
        if self.signal_name is not None and self.signal_name not in _WORKER_STOP_SIGNALS:
            # Any other signal would kill the worker before it saves.
            raise ConfigError(
                f"signal must be 'USR1' or 'TERM' (the signals on which the worker saves and "
                f"releases its learner), or None; got {self.signal!r}"
            )
        grace = positive_int(self.signal_grace_s, "signal_grace_s")
        if grace > _MAX_SIGNAL_GRACE_S:
            raise ConfigError(
                f"signal_grace_s must be an integer in 1..{_MAX_SIGNAL_GRACE_S}, got {grace!r}"
            )
        walltime_s = self.walltime_s
        if self.signal_name is not None and walltime_s is not None and grace >= walltime_s:
            # The signal would come as the job starts: each job saves, releases and ends at
            # once, with no progress, and the learners fail for it after max_fails jobs.
            raise ConfigError(
                f"signal_grace_s={grace} is not below walltime={self.walltime!r} "
                f"({walltime_s} s): the {self.signal_name} that asks a job to save and stop "
                "would come as it starts; give a signal_grace_s below the walltime (a few "
                "minutes below, e.g. the default 120) or a longer walltime"
            )

    def _check_nodes(self) -> None:
        nodes, per_node = self.nodes, self.cores_per_node
        if self.workers_per_node is not None:
            if per_node is not None:
                raise ConfigError(
                    "cores_per_node is for one MPI learner over several nodes; packed workers "
                    "(workers_per_node) each run on 'cores' cores: give cores, not cores_per_node"
                )
            if nodes is not None:
                positive_int(nodes, "nodes")
            return
        if nodes is None and per_node is None:
            return
        if nodes is None or per_node is None:
            raise ConfigError(
                "nodes and cores_per_node go together (one MPI learner over several nodes): "
                "give both, or only cores; for many learners on several nodes, give nodes with "
                "workers_per_node"
            )
        positive_int(nodes, "nodes")
        positive_int(per_node, "cores_per_node")
        if self.cores not in (1, nodes * per_node):
            raise ConfigError(
                f"cores={self.cores} contradicts nodes={nodes} x cores_per_node={per_node}: "
                "give cores, or nodes and cores_per_node"
            )
        if nodes > 1 and self.executor != ExecutorName.MPI4PY:
            raise ConfigError(
                f"nodes={nodes} needs executor='mpi4py'; {self.executor!r} runs on one node"
            )
        object.__setattr__(self, "cores", nodes * per_node)  # frozen: set once, while constructing

    @property
    def node_count(self) -> int:
        """Nodes per array task."""
        return self.nodes or 1

    @property
    def pack_command(self) -> str:
        """One ``srun`` step of one packer per node, with all the node's cores.

        srun passes the batch shell's signals on to it; a packer that ends with an error
        (one of its workers was killed) does not end the others.
        """
        if self.node_count == 1:
            return ""
        return (
            f"srun --nodes={self.node_count} --ntasks-per-node=1 "
            f"--cpus-per-task={self.node_cores} --kill-on-bad-exit=0 "
        )

    @property
    def time_limit(self) -> str | None:
        """``walltime`` as sbatch's D-HH:MM:SS, or None for the partition's limit."""
        seconds = self.walltime_s
        return None if seconds is None else format_time(seconds)

    @property
    def slurm_mem(self) -> str:
        """``memory`` as ``--mem`` takes it (``"8gb"`` -> ``"8G"``); "" when not given."""
        size = self.memory_size()
        return "" if size is None else f"{size[0]}{size[1]}"

    @property
    def signal_name(self) -> str | None:
        """``signal`` as sbatch wants it: upper case, without ``SIG``."""
        return None if self.signal is None else self.signal.upper().removeprefix("SIG")

    def check(self) -> None:
        """Check, before anything is queued, that SLURM would take this run's tasks.

        One ``sinfo`` (the partition exists; its nodes and CPUs) and one
        ``sbatch --test-only`` of the job script with this scheduler's real directives: a bad
        account, QOS, constraint, node count or memory request is refused now, in SLURM's own
        words, with what the partition has when the request is larger.
        """
        out = run_command(["sinfo", "-h", "-o", "%P|%D|%c|%m"], missing_hint=self.missing_hint)
        partitions = parse_partitions(out)
        if not partitions:
            raise ConfigError("sinfo lists no partitions: this SLURM cannot run jobs")
        if self.queue is not None and self.queue not in partitions:
            raise ConfigError(
                f"queue={self.queue!r} is no partition of this cluster; it has: "
                f"{', '.join(sorted(partitions))}"
            )
        self._check_mpi_plugin()
        default = next((p for p in partitions.values() if p.default), None)
        partition = partitions[self.queue] if self.queue is not None else default
        try:
            self._test_submission()
        except SchedulerCommandError as e:
            said = (e.stderr or e.stdout).strip() or f"exit code {e.returncode}"
            hint = "" if partition is None else self._larger_than(partition)
            raise ConfigError(
                f"SLURM refuses this run's job script (sbatch --test-only, nothing was "
                f"queued): {said}{hint}"
            ) from e

    def _check_mpi_plugin(self) -> None:
        """An ``srun --mpi=NAME`` launcher names a plugin this SLURM has (``srun --mpi=list``).

        A missing plugin fails every task at its start; refused here in one line instead.
        """
        if self.executor != ExecutorName.MPI4PY:
            return
        words = shlex.split(self.mpi_launcher)
        wanted = next((w.removeprefix("--mpi=") for w in words if w.startswith("--mpi=")), None)
        if words[0] != "srun" or wanted is None:
            return
        out = run_command(["srun", "--mpi=list"], missing_hint=self.missing_hint)
        plugins = parse_mpi_plugins(out)
        if wanted not in plugins:
            raise ConfigError(
                f"mpi_launcher={self.mpi_launcher!r}: this SLURM has no MPI plugin {wanted!r} "
                f"(srun --mpi=list: {', '.join(sorted(plugins))})"
            )

    def _test_submission(self) -> None:
        """``sbatch --test-only`` of a one-task array of this scheduler's job script."""
        with tempfile.TemporaryDirectory(prefix="adaptive-runner-check-") as tmp:
            script = Path(tmp) / "check.sh"
            context = ScriptContext(
                job_name="adaptive-runner-check",
                run_dir=Path(tmp),
                log_dir=Path(tmp),
                n_tasks=1,
                max_running=1,
                worker_args=["-m", "adaptive_runner.worker", tmp, "0"],
            )
            script.write_text(self.render(context))
            command = ["sbatch", "--test-only", "--array=0-0", str(script)]
            run_command(command, retries=1, missing_hint=self.missing_hint)

    def _larger_than(self, partition: Partition) -> str:
        """Why a refused request does not fit ``partition``, where its size says so."""
        if self.node_count > partition.nodes:
            return (
                f". This run asks for {self.node_count} nodes per task (nodes=), but partition "
                f"{partition.name} has {partition.nodes}"
            )
        if partition.cpus is not None and self.node_cores > partition.cpus:
            return (
                f". This run asks for {self.node_cores} cores on each node, but the nodes of "
                f"partition {partition.name} have {partition.cpus} CPUs"
            )
        size = self.memory_size()
        if size is not None and partition.memory_mb is not None:
            asked_mb = size[0] * _MB_PER_UNIT[size[1]]
            if asked_mb > partition.memory_mb:
                return (
                    f". This run asks for memory={self.memory!r}, but the nodes of partition "
                    f"{partition.name} have {partition.memory_mb} MB"
                )
        return ""

    def release_node(self, task: str, node: str) -> bool:
        """Shrink the running job ``task`` to its other nodes (``scontrol update NodeList=``).

        SLURM frees the node at once; the srun step goes on on the others (checked on 22.05).
        The batch host, which runs the job script, is never released; an allocation of one
        node has nothing else to keep, so SLURM is not asked.
        """
        if self.node_count < 2:  # noqa: PLR2004 - a node to keep, one to free
            return False
        shown = run_command(["scontrol", "show", "job", task], missing_hint=self.missing_hint)
        batch_host, node_list = parse_job_nodes(shown)
        if node_list is None or node == batch_host:
            return False
        names = run_command(
            ["scontrol", "show", "hostnames", node_list], missing_hint=self.missing_hint
        ).split()
        if node not in names or len(names) < 2:  # noqa: PLR2004 - a node to keep, one to free
            return False
        keep = ",".join(n for n in names if n != node)
        run_command(
            ["scontrol", "update", f"JobId={task}", f"NodeList={keep}"],
            retries=1,
            missing_hint=self.missing_hint,
        )
        return True

    def max_array_size(self) -> int:
        """The most tasks one array may have (SLURM's ``MaxArraySize``; indices start at 0)."""
        out = run_command(["scontrol", "show", "config"], missing_hint=self.missing_hint)
        return parse_max_array_size(out)

    def submit_command(
        self, script: Path, *, n_tasks: int, max_running: int, tag: str | None
    ) -> list[str]:
        """``sbatch --parsable --array=0-N%M``: ``n_tasks`` tasks, ``max_running`` at once."""
        name = [] if tag is None else [f"--job-name={tag}"]
        return [
            "sbatch",
            "--parsable",
            *name,
            f"--array=0-{n_tasks - 1}%{max_running}",
            str(script),
        ]

    def parse_submit(self, out: str) -> str:
        """The job id sbatch printed (see :func:`parse_sbatch`)."""
        return parse_sbatch(out)

    def tagged_command(self, tags: Collection[str]) -> list[str]:
        """One squeue listing of the user's jobs named by ``tags``, finished ones too."""
        return [
            "squeue",
            "--me",
            "-h",
            "-t",
            "all",
            "--name",
            ",".join(sorted(tags)),
            "-o",
            "%F|%j",
        ]

    def parse_tagged(self, out: str, tags: Collection[str]) -> dict[str, str]:
        """Tag -> array id (see :func:`parse_squeue_names`)."""
        return parse_squeue_names(out, tags)

    def queue_named(self, array_ids: Collection[str]) -> dict[str, QueuedTask]:
        """Every task of these arrays squeue knows (finished ones for MinJobAge too), named."""
        if not array_ids:
            return {}
        out = run_command(
            ["squeue", "--me", "-h", "-t", "all", "-o", SQUEUE_FORMAT],
            env=_FULL_ARRAY_EXPRESSIONS,
            missing_hint=self.missing_hint,
        )
        return parse_squeue(out, array_ids)

    def exit_states(self, array_ids: Collection[str]) -> dict[str, TaskEnd]:
        """How these arrays' tasks ended, from one sacct call; {} where accounting is disabled."""
        if not array_ids:
            return {}
        cmd = ["sacct", "-X", "-n", "--parsable2", "-o", SACCT_FIELDS, "-j", ",".join(array_ids)]
        try:
            # One attempt first: a cluster without accounting says so at once, every time.
            out = run_command(
                cmd, retries=1, env=_FULL_ARRAY_EXPRESSIONS, missing_hint=self.missing_hint
            )
        except SchedulerCommandError as e:
            if accounting_disabled(e):
                return {}
            out = run_command(cmd, env=_FULL_ARRAY_EXPRESSIONS, missing_hint=self.missing_hint)
        return parse_sacct(out, array_ids)

    def cancel(self, ids: Collection[str]) -> None:
        """Cancel tasks (``A_a``) and whole arrays (``A``) with one ``scancel`` call."""
        bad = [job_id for job_id in ids if not _JOB_ID.fullmatch(job_id)]
        if bad:
            raise ConfigError(f"cannot cancel {bad}: SLURM ids look like '123' or '123_4'")
        if ids:
            run_command(["scancel", *ids], missing_hint=self.missing_hint)


# sbatch's --mem units in MB (a number without a unit is MB).
_MB_PER_UNIT = {"": 1, "B": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}


@dataclass(frozen=True, slots=True)
class Partition:
    """A partition as ``sinfo -o '%P|%D|%c|%m'`` shows it: its nodes, their CPUs and memory."""

    name: str
    nodes: int
    cpus: int | None  # CPUs of its largest node; None when sinfo did not say
    memory_mb: int | None  # memory of its largest node
    default: bool


def parse_partitions(out: str) -> dict[str, Partition]:
    """Partitions by name from ``sinfo -h -o '%P|%D|%c|%m'`` (one line per node group).

    ``%P`` marks the default partition with ``*``; ``%c`` and ``%m`` are ``4`` or ``4+``
    (nodes of several sizes: the smallest, then ``+``).
    """
    found: dict[str, Partition] = {}
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[0]:  # noqa: PLR2004 - the format's fields
            continue
        name = fields[0].rstrip("*")
        count, cpus, memory = (_number(f) for f in fields[1:])
        before = found.get(name)
        if before is not None:
            count = (count or 0) + before.nodes
            cpus = _largest(cpus, before.cpus)
            memory = _largest(memory, before.memory_mb)
        found[name] = Partition(name, count or 0, cpus, memory, fields[0].endswith("*"))
    return found


def _number(field: str) -> int | None:
    digits = field.rstrip("+")
    return int(digits) if digits.isdigit() else None


def _largest(a: int | None, b: int | None) -> int | None:
    return max((x for x in (a, b) if x is not None), default=None)


def parse_mpi_plugins(out: str) -> set[str]:
    """The MPI plugin names ``srun --mpi=list`` prints (indented, below a heading).

    SLURM 22.05 prints ``MPI plugin types are...`` then one indented name per line, and may
    end with ``specific pmix plugin versions available: pmix_v4``, whose versions count too.
    """
    plugins = {line.strip() for line in out.splitlines() if line[:1].isspace() and line.strip()}
    for line in out.splitlines():
        if "versions available:" in line:
            plugins.update(v.strip() for v in line.split(":", 1)[1].split(",") if v.strip())
    return plugins


def parse_job_nodes(shown: str) -> tuple[str | None, str | None]:
    """(BatchHost, NodeList) from ``scontrol show job``; None for what it does not show."""
    batch = re.search(r"(?:^|\s)BatchHost=(\S+)", shown)
    nodes = re.search(r"(?:^|\s)NodeList=(\S+)", shown)
    node_list = None if nodes is None or nodes[1] == "(null)" else nodes[1]
    return (None if batch is None else batch[1]), node_list
