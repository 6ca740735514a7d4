"""The task log's JSON lines: the same lines structlog's JSONRenderer wrote, without structlog."""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any

import pytest
import structlog

from adaptive_runner.common.vocabulary import Event
from adaptive_runner.errors import ConfigError
from adaptive_runner.job.task_log import JobLog, open_job_stream

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def structlog_lines(calls: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The lines of ``calls`` as the worker wrote them with structlog (task 7_1, learner 3)."""
    out = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger("info"),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    log = structlog.get_logger().bind(task="7_1").bind(learner=3)
    emit(log, calls)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def job_log_lines(calls: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = io.BytesIO()
    emit(JobLog(out, context={"task": "7_1"}).bind(learner=3), calls)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def emit(log: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
    for method, event, fields in calls:
        if method == "exception":
            try:
                evaluate()
            except ValueError:
                log.exception(event, **fields)
        else:
            getattr(log, method)(event, **fields)


def evaluate() -> None:
    raise ValueError("cannot evaluate at 0.5")


CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("info", Event.STARTED, {"host": "vm", "pid": 42, "fname": "/d/3.pickle", "cores": 1}),
    ("debug", "not written", {}),
    ("info", Event.STATUS, {"npoints": 50, "loss": None, "cpu_percent": 98.5, "path": b"x"}),
    ("warning", Event.SAVE_FENCED, {"since_ack_s": 700}),
    ("error", Event.FAILED, {"npoints": 3, "traceback": "Traceback ...\nValueError: no"}),
    ("exception", Event.SAVE_FAILED, {"fname": "/d/3.pickle"}),
]


def test_lines_are_those_structlog_wrote() -> None:
    ours, theirs = job_log_lines(CALLS), structlog_lines(CALLS)
    assert len(ours) == len(theirs) == len(CALLS) - 1  # debug is below the level
    for a, b in zip(ours, theirs, strict=True):
        assert list(a) == list(b)  # the same keys in the same order
        assert ISO_UTC.fullmatch(a["timestamp"]), a["timestamp"]
        a.pop("timestamp")
        b.pop("timestamp")
        assert a == b
    assert ours[-1]["level"] == "error"
    assert ours[-1]["exception"].endswith("ValueError: cannot evaluate at 0.5")


def test_exception_outside_an_except_block_has_no_traceback() -> None:
    out = io.BytesIO()
    JobLog(out).exception(Event.REPORT_FAILED, outcome="done")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["level"] == "error"
    assert "exception" not in json.loads(line)


def test_bind_leaves_the_parent_alone_and_levels_filter() -> None:
    out = io.BytesIO()
    log = JobLog(out, level="warning", context={"task": "1_0"})
    log.bind(learner=5).warning("a")
    log.info("below the level")
    log.error("b")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["learner"] == 5
    assert "learner" not in second
    with pytest.raises(ConfigError, match="not a log level"):
        JobLog(out, level="verbose")


def test_open_job_stream_appends_and_creates_the_directory(tmp_path: Any) -> None:
    path = tmp_path / "logs" / "1_0.log"
    for event in ("first", "second"):
        stream = open_job_stream(path)
        JobLog(stream).info(event)
        stream.close()
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == [
        "first",
        "second",
    ]


def test_a_log_that_cannot_be_written_drops_lines_and_counts_them(tmp_path: Any) -> None:
    # /dev/full fails every write with ENOSPC, as a full disk does; dup2 then puts a file
    # that can be written under the same descriptor: the disk has room again.
    path = tmp_path / "1_0.log"
    path.symlink_to("/dev/full")
    stream = open_job_stream(path)
    try:
        log = JobLog(stream, context={"task": "1_0"})
        log.info(Event.STARTED, learner=3)
        log.bind(learner=3).info(Event.STATUS, npoints=5)  # a bound log counts into the same
        try:
            evaluate()
        except ValueError:
            log.exception(Event.SAVE_FAILED)  # an error handler's line: dropped, not raised
        path.unlink()
        with path.open("ab") as disk:
            os.dup2(disk.fileno(), stream.fileno())
        log.info(Event.DONE, npoints=9)
        log.info(Event.NO_MORE_WORK)
    finally:
        stream.close()
    lost, done, last = (json.loads(line) for line in path.read_text().splitlines())
    assert lost["event"] == Event.LINES_LOST
    assert lost["level"] == "warning"
    assert lost["task"] == "1_0"
    assert lost["lost"] == 3
    assert "No space left on device" in lost["error"]
    assert ISO_UTC.fullmatch(lost["timestamp"])
    assert (done["event"], done["npoints"]) == (Event.DONE, 9)
    assert last["event"] == Event.NO_MORE_WORK
