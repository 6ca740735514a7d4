"""Pure readers of what the SSH scheduler's remote programs print, and of why ssh failed.

Failures are told apart by their fields (exit code, stdout, stderr), never by an exception's
text: ssh itself exits 255; the programs of ssh_programs.py say on stdout how far they got.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from adaptive_runner.errors import SchedulerCommandError
from adaptive_runner.schedulers.base import JobState, TaskEnd
from adaptive_runner.schedulers.ssh_programs import (
    CHECK_ENVIRONMENT_OK,
    CHECK_MISSING_TOOL,
    CHECK_PYTHON_OK,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

SSH_FAILED = 255  # ssh's own exit code: no connection, no login, ...
_COMMAND_NOT_FOUND = (126, 127)  # bash: not executable, not found
_TASK = re.compile(r"S[1-9][0-9]*_[0-9]+")
# A host's word about a task -> its state there; None: no wrapper of it runs there.
_SIMPLE_STATES: dict[str, JobState | None] = {
    "running": JobState.RUNNING,
    "pending": JobState.PENDING,
    "lost": JobState.FAILED,  # its processes there are gone without an exit record
    "none": None,  # no wrapper of it was started there
    "elsewhere": None,  # another host's wrapper claimed it
}
_VERDICTS = ("ok", "differs", "missing")
# stderr of a failed ssh -> what it means for people, and what to do.
_SSH_CAUSES = (
    (
        "Permission denied",
        (
            "key missing: no key of this user is accepted there (ssh runs with BatchMode=yes, "
            "without passwords: add one, e.g. ssh-copy-id HOST)"
        ),
    ),
    (
        "Host key verification failed",
        "host key unknown: run `ssh HOST true` once and accept it",
    ),
    ("Could not resolve hostname", "unknown host name: check the name or ~/.ssh/config"),
    ("Connection refused", "ssh refused: no sshd listens there (host down?)"),
    ("Connection timed out", "unreachable: the connection timed out (host down?)"),
    ("No route to host", "unreachable: no route to host"),
)


def exit_record(text: str) -> TaskEnd:
    """A TaskEnd from an ``<i>.exit`` record, ``"CODE CANCELLED"``.

    CODE is the job's return code, ``-n`` for signal n (the wrapper turns the shell's 128+n
    into that, so a job that exits with 130 by itself reads as SIGINT), or ``-`` for a task
    cancelled before it started; CANCELLED is 1 when a cancel ended it.
    """
    match = re.fullmatch(r"\s*(-|-?[0-9]+) ([01])\s*", text)
    if match is None:
        raise SchedulerCommandError(f"cannot read a task's exit record {text!r}")
    code, cancelled = match.group(1), match.group(2) == "1"
    return TaskEnd.from_exit(None if code == "-" else int(code), cancelled=cancelled)


def parse_look(text: str) -> dict[str, JobState | None]:
    """Task id -> its state on one host, from the LOOK program's lines (``S3_4 running``).

    None for a task no wrapper of which runs there (``none``, ``elsewhere``); an ended task
    (``S3_5 exit 0 0``) is ended on every host: its exit record is shared.
    """
    states: dict[str, JobState | None] = {}
    for line in text.splitlines():
        task, _, rest = line.strip().partition(" ")
        word, _, record = rest.partition(" ")
        if not _TASK.fullmatch(task) or (word != "exit" and word not in _SIMPLE_STATES):
            raise SchedulerCommandError(f"cannot read a host's answer about its tasks: {line!r}")
        states[task] = exit_record(record).state if word == "exit" else _SIMPLE_STATES[word]
    return states


def merged_state(answers: Iterable[JobState | None]) -> JobState:
    """A task's state from its hosts' answers (a host's wrapper of it may wait or run).

    Running if it runs on a host, else pending if a wrapper of it waits for a slot, else how
    it ended (an exit record before a wrapper lost without one: hosts that looked at
    different moments); failed if no wrapper of it was ever started.
    """
    seen = set(answers)
    for state in (JobState.RUNNING, JobState.PENDING):
        if state in seen:
            return state
    ended = sorted(s for s in seen if s is not None and s != JobState.FAILED)
    return ended[0] if ended else JobState.FAILED


def parse_tokens(text: str, n_tokens: int) -> list[str]:
    """The TOKENS program's verdict on each of ``n_tokens`` tokens: ok, differs or missing."""
    verdicts = ["missing"] * n_tokens
    for line in text.splitlines():
        index, _, verdict = line.strip().partition(" ")
        if not index.isdigit() or int(index) >= n_tokens or verdict not in _VERDICTS:
            raise SchedulerCommandError(f"cannot read a host's answer about the tokens: {line!r}")
        verdicts[int(index)] = verdict
    return verdicts


def last_line(text: str) -> str:
    """The last non-empty line of a command's output (where its error usually is)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def ssh_failure(host: str, error: SchedulerCommandError) -> str:
    """Why an ssh to ``host`` failed, for people: the cause, then what ssh or the host said."""
    said = last_line(error.stderr)
    if error.returncode is None:
        return f"no answer: {error}"  # timed out, or ssh is not installed here
    if error.returncode == SSH_FAILED:
        for needle, cause in _SSH_CAUSES:
            if needle in error.stderr:
                return f"{cause.replace('HOST', host)}; ssh said: {said}"
        return f"ssh failed; it said: {said}"
    return f"the command failed there with exit code {error.returncode}: {said}"


def check_failure(host: str, python: str, error: SchedulerCommandError) -> str:
    """Why the check of ``host`` failed: ssh, a missing tool, the environment or Python.

    The check program says on stdout how far it got (see ``ssh_programs.check_program``).
    """
    if error.returncode is None or error.returncode == SSH_FAILED:
        return ssh_failure(host, error)
    said = last_line(error.stderr)
    if CHECK_MISSING_TOOL in error.stdout:
        tool = error.stdout.split(CHECK_MISSING_TOOL, 1)[1].split()[0]
        return f"{tool} missing there (util-linux): the tasks need setsid and flock"
    if CHECK_ENVIRONMENT_OK not in error.stdout:
        return f"the job's environment failed there (env, extra_script): {said}"
    if CHECK_PYTHON_OK not in error.stdout and error.returncode in _COMMAND_NOT_FOUND:
        return f"python missing there: {python!r} cannot be run ({said}); give python="
    return (
        f"python there cannot import adaptive_runner.worker: {said} (install adaptive_runner "
        "where that python finds it, or set env={'PYTHONPATH': ...})"
    )
