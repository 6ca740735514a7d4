"""PBS output parsers: what ``qstat`` and ``qdel`` print, read into task states and ends.

Pure functions over text, tested on recorded output of both dialects (PBS Pro's
``qstat -f -F json``, Torque's ``qstat -x`` XML) in ``tests/data/pbs/``; the commands that
produce it are in :mod:`adaptive_runner.schedulers.pbs`.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple

from adaptive_runner.common.task_identity import PBS_SUBJOB
from adaptive_runner.errors import SchedulerCommandError
from adaptive_runner.schedulers.base import JobState, QueuedTask, TaskEnd

_UNKNOWN_ID = re.compile(r"Unknown Job Id(?: Error)? (\S+)")
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


class QstatEntry(NamedTuple):
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


def unknown_job_ids(error: SchedulerCommandError) -> set[str]:
    """The job ids a failed qstat or qdel called unknown ("Unknown Job Id [Error] ID")."""
    return {match for line in _complaints(error) for match in _UNKNOWN_ID.findall(line)}


def only_jobs_gone(error: SchedulerCommandError) -> bool:
    """Whether every complaint of a failed qdel is that a job is finished or gone.

    Then nothing it was asked to cancel still runs; any other complaint is a real failure.
    """
    complaints = _complaints(error)
    return bool(complaints) and all(_says_job_gone(line) for line in complaints)


def some_job_gone(error: SchedulerCommandError) -> bool:
    """Whether a failed qstat or qdel said of some job that it is finished or gone."""
    return any(_says_job_gone(line) for line in _complaints(error))


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
    return {task: entry.queued() for task, entry in pbspro_json_entries(text).items()}


def pbspro_json_entries(text: str) -> dict[str, QstatEntry]:
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
            job_id: QstatEntry(
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
        if isinstance(attrs, dict) and not PBS_SUBJOB.match(job_id)
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


def _scan_pbspro_jobs(text: str) -> dict[str, QstatEntry]:
    """Last resort for broken JSON: read ids, job_state, Exit_status, Job_Name line by line."""
    starts = list(_JOB_OPEN.finditer(text))
    if not starts:
        raise SchedulerCommandError(f"cannot read qstat -F json output: {text[:300]!r}")
    ends = [start.start() for start in starts[1:]] + [len(text)]
    states: dict[str, QstatEntry] = {}
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
            states[job_id] = QstatEntry(
                state.group(1),
                int(exit_match.group(1)) if exit_match else None,
                name.group(1) if name else None,
            )
    return states


# -- Torque: qstat -x ---------------------------------------------------------------------------


_XML_VARLIST = re.compile(r"<Variable_List>.*?</Variable_List>", re.DOTALL)


def parse_torque_xml(text: str) -> dict[str, QueuedTask]:
    """Task states and names from Torque's ``qstat -x -t`` XML (``<Data><Job><Job_Id>...``)."""
    return {task: entry.queued() for task, entry in torque_xml_entries(text).items()}


def torque_xml_entries(text: str) -> dict[str, QstatEntry]:
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
    states: dict[str, QstatEntry] = {}
    for job in root.iter("Job"):
        job_id = (job.findtext("Job_Id") or "").strip()
        if not job_id or _is_array_parent(job_id):
            continue
        state = (job.findtext("job_state") or "").strip()
        name = (job.findtext("Job_Name") or "").strip() or None
        subjob = PBS_SUBJOB.match(job_id)
        if name is not None and subjob is not None:
            name = name.removesuffix(f"-{subjob.group(2)}")
        states[job_id] = QstatEntry(state, _exit_status(job.findtext("exit_status")), name)
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
        if job_id and not PBS_SUBJOB.match(job_id):
            names[job_id] = (job.findtext("Job_Name") or "").strip()
    return names


def _parse_xml(text: str) -> Any:
    try:
        return ET.fromstring(text)  # noqa: S314 - qstat's output on the login node, not network data
    except ET.ParseError:
        return None
