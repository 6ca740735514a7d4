"""The managers' logging: console lines in scripts, one line per warning in notebooks."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import structlog

from adaptive_runner.manager.logs import (
    configure_notebook_logging,
    in_jupyter_kernel,
    log_exception,
    log_managers_to,
    stop_logging_managers_to,
)

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_a_script_keeps_its_console_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not in_jupyter_kernel()  # pytest: no kernel
    log_managers_to(tmp_path / "manager.log")
    try:
        structlog.get_logger("t").info("submitted array", array="L1")
    finally:
        stop_logging_managers_to(tmp_path / "manager.log")
    assert "submitted array" in capsys.readouterr().err
    assert "submitted array" in (tmp_path / "manager.log").read_text()


def test_notebook_lines_show_each_warning_once_per_run(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_notebook_logging(stream=out)
    log = structlog.get_logger("t")
    first, second = tmp_path / "a" / "manager.log", tmp_path / "b" / "manager.log"
    for path in (first, second):
        path.parent.mkdir()
        log_managers_to(path)
        log.info("submitted array", array="L1")
        log.warning("jobs vanished", tasks=["L1_0"], reason="gone")
        log.warning("jobs vanished", tasks=["L1_1"], reason="gone")  # next round: not again
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            log_exception(log, "job manager round failed; retrying next interval")
        stop_logging_managers_to(path)
    run_lines = [
        "adaptive_runner warning: jobs vanished tasks=['L1_0'] reason='gone'",
        (
            "adaptive_runner error: job manager round failed; retrying next interval "
            "exception='ZeroDivisionError: division by zero'"
        ),
    ]
    assert out.getvalue().splitlines() == run_lines * 2  # each run shows its own once
    events = [json.loads(line) for line in first.read_text().splitlines()]
    assert [(e["level"], e["event"]) for e in events] == [
        ("info", "submitted array"),
        ("warning", "jobs vanished"),
        ("warning", "jobs vanished"),
        ("error", "job manager round failed; retrying next interval"),
    ]
    assert "Traceback" in events[-1]["exception"]
