"""Shared hooks: `slurm` and `ssh` tests skip where their service is absent (fail in CI);
the session leaves nothing running.

Every process the suite starts inherits ``ADAPTIVE_RUNNER_TEST_SESSION`` (set once per
session) and pytest's ``PYTEST_CURRENT_TEST``. The Local scheduler's supervisors and tasks run
in sessions of their own, so they are not descendants of pytest; the marker finds them anyway
(and the fake PBS's tasks), and names the test that started them. A process still alive at
the end fails the session, and is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import psutil
import pytest
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SESSION_MARKER = "ADAPTIVE_RUNNER_TEST_SESSION"
SSH_HOSTS = ("node1", "node2")  # ci/ssh/start.sh
LEFTOVER_GRACE_S = 10.0  # cancelled tasks get time to save, release and exit
# Helpers that multiprocessing and loky start once per interpreter (the process-pool and
# loky executor tests start them in pytest itself); they end when pytest ends.
INTERPRETER_HELPERS = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
    "from loky.backend.resource_tracker import main",
)


def pytest_configure(config: pytest.Config) -> None:
    """Mark this session's processes: a fresh token, so concurrent sessions stay apart."""
    del config
    os.environ[SESSION_MARKER] = f"{os.getpid()}-{uuid.uuid4().hex}"


def _ssh_hosts_answer() -> bool:
    """Whether the SSH test hosts of ci/ssh/start.sh (node1, node2) answer."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    try:
        return all(
            subprocess.run(
                [*command, host, "true"], capture_output=True, timeout=60, check=False
            ).returncode
            == 0
            for host in SSH_HOSTS
        )
    except (OSError, subprocess.TimeoutExpired):  # no ssh client, or a host that hangs
        return False


# marker -> whether its service runs here (asked only when a collected test has the marker),
# and how to start it.
SERVICES: dict[str, tuple[Callable[[], bool], str]] = {
    "slurm": (
        lambda: shutil.which("sbatch") is not None,
        "no sbatch on PATH: start SLURM with ci/slurm/start.sh",
    ),
    "ssh": (_ssh_hosts_answer, "ssh node1/node2 do not answer: start them with ci/ssh/start.sh"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `slurm` and `ssh` tests where their service does not run, unless CI is set (then
    they must run: they fail)."""
    del config
    if os.environ.get("CI"):
        return
    for marker, (available, start) in SERVICES.items():
        marked = [item for item in items if item.get_closest_marker(marker) is not None]
        if marked and not available():
            for item in marked:
                item.add_marker(pytest.mark.skip(reason=start))


def _started_by_session() -> list[psutil.Process]:
    """Live processes this session started: pytest's descendants and the marked ones."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    token = os.environ[SESSION_MARKER]
    for process in psutil.process_iter():
        if process.pid == me.pid or process.pid in found:
            continue
        try:
            if process.environ().get(SESSION_MARKER) == token:
                found[process.pid] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found.values() if _running(p) and not _interpreter_helper(p, me.pid)]


def _interpreter_helper(process: psutil.Process, pytest_pid: int) -> bool:
    try:
        command = " ".join(process.cmdline())
        parent: int = process.ppid()
    except psutil.Error:
        return False
    return parent == pytest_pid and any(helper in command for helper in INTERPRETER_HELPERS)


def _running(process: psutil.Process) -> bool:
    try:
        status: str = process.status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


def _describe(process: psutil.Process) -> str:
    try:
        test = process.environ().get("PYTEST_CURRENT_TEST", "(unknown test)")
        command = " ".join(process.cmdline())[:200]
    except psutil.Error:
        return f"pid {process.pid} (ended while being listed)"
    return f"pid {process.pid} started in {test}: {command}"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if processes it started outlive a short grace period; kill them."""
    del exitstatus
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    leftovers = _started_by_session()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = _started_by_session()
    if not leftovers:
        return
    lines = [_describe(p) for p in leftovers]
    while leftovers:  # a supervisor may start another task before it is killed itself
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(leftovers, timeout=5)
        leftovers = _started_by_session()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.section("processes left running (now killed)", sep="=", red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts with structlog unconfigured: a configuration (and the captured
    stream it writes to) never leaks into the next test."""
    yield
    structlog.reset_defaults()
