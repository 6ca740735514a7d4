"""parse_logs / LogParser: records from task logs (worker events and output), read incrementally."""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, cast

import adaptive
import cloudpickle
import pytest

import adaptive_runner as ar
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.error_watch import ErrorWatch
from adaptive_runner.state.database import Database
from adaptive_runner.status.log_parser import LogParser, LogParseWarning, TaskRecord, split_event

if TYPE_CHECKING:
    from pathlib import Path

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def line(event: str, **fields: object) -> str:
    """One job-log line as the worker writes it (job_log.JobLog)."""
    record = {"task": "L1_0", **fields, "event": event, "level": "info"}
    record["timestamp"] = fields.get("timestamp", "2024-05-01T10:00:00.000000Z")
    return json.dumps(record) + "\n"


STARTED = line(
    "started",
    host="node7",
    pid=4242,
    array="L1",
    index=0,
    learner=3,
    fname="/data/l3.pickle",
    timestamp="2024-05-01T10:00:00.000001Z",
)
STATUS = line(
    "status",
    learner=3,
    npoints=40,
    loss=0.25,
    npoints_per_s=4.0,
    elapsed_s=10.0,
    cpu_percent=98.5,
    memory_bytes=123456,
)
SAVED = line("saved", learner=3, npoints=40, seconds=0.01, bytes=2048)


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    rd = RunDir(tmp_path / "run")
    rd.logs_dir.mkdir(parents=True)
    return rd


def only(records: list[TaskRecord], task: str) -> TaskRecord:
    (record,) = [r for r in records if r.task == task]
    return record


def test_a_task_that_goes_on_to_another_learner_shows_the_latest(run_dir: RunDir) -> None:
    first = STARTED + line("resumed", npoints=20) + STATUS + SAVED
    first += line("done", learner=3, npoints=50, loss=0.1)
    second = line("started", host="node7", pid=4242, learner=5, fname="/data/l5.pickle")
    second += line("status", learner=5, npoints=7, loss=0.5, npoints_per_s=1.0, elapsed_s=7.0)
    run_dir.task_log("L1_0").write_text(first + second)
    (record,) = ar.parse_logs(run_dir.path)
    assert (record.learner, record.fname, record.learners) == (5, "/data/l5.pickle", 2)
    assert (record.npoints, record.loss, record.elapsed_s) == (7, 0.5, 7.0)
    # nothing of learner 3's run is taken for learner 5's
    assert (record.outcome, record.saves, record.resumed_npoints) == (None, 0, None)
    with run_dir.task_log("L1_0").open("a") as f:
        f.write(line("done", learner=5, npoints=60, loss=0.05) + line("no_more_work"))
    (record,) = ar.parse_logs(run_dir.path)
    assert (record.outcome, record.npoints, record.last_event) == ("done", 60, "no_more_work")


def test_record_from_worker_events_and_the_tasks_output(run_dir: RunDir) -> None:
    failed = line("failed", learner=3, npoints=41, traceback="Traceback...\nValueError: bad")
    run_dir.task_log("L1_0").write_text(
        "loading\n" + STARTED + line("resumed", npoints=20) + STATUS + SAVED + "all fine\n"
    )
    with run_dir.task_log("L1_0").open("a") as f:
        f.write(failed + "slurmstepd: error: Detected 1 oom-kill event(s)\n")
    (record,) = ar.parse_logs(run_dir.path)  # output lines are not bad lines: no warning
    assert record.task == "L1_0"
    assert (record.learner, record.host, record.pid, record.array, record.index) == (
        3,
        "node7",
        4242,
        "L1",
        0,
    )
    assert record.fname == "/data/l3.pickle"
    assert record.started == "2024-05-01T10:00:00.000001Z"
    assert record.resumed_npoints == 20
    assert (record.npoints, record.loss, record.npoints_per_s) == (41, 0.25, 4.0)
    assert (record.elapsed_s, record.cpu_percent, record.memory_bytes) == (10.0, 98.5, 123456)
    assert (record.saves, record.last_save_s, record.last_save_bytes) == (1, 0.01, 2048)
    assert record.outcome == "failed"
    assert record.error is not None
    assert "ValueError: bad" in record.error
    # Only the output is scanned: the traceback of the failed event is its error, not output.
    assert record.output_errors == ("slurmstepd: error: Detected 1 oom-kill event(s)",)
    assert record.last_event == "failed"


def test_output_lines_are_not_events(run_dir: RunDir) -> None:
    run_dir.task_log("L1_0").write_text(
        STARTED
        + "not json at all\n"
        + '["a list"]\n'
        + '{"no": "event key", "error": "x"}\n'  # the task printed JSON of its own
        + "{broken json error\n"
        + "\n"
        + STATUS
    )
    (record,) = ar.parse_logs(run_dir)
    assert (record.npoints, record.last_event) == (40, "status")
    assert record.output_errors == ('{"no": "event key", "error": "x"}', "{broken json error")


def test_event_glued_to_output_without_newline(run_dir: RunDir) -> None:
    # A print flushed without its newline, then the worker's event (one whole line):
    # both writers append to the same file.
    run_dir.task_log("L1_0").write_text(STARTED + "progress: error at 50%" + STATUS + "%\n")
    (record,) = ar.parse_logs(run_dir)
    assert (record.npoints, record.last_event) == (40, "status")
    assert record.output_errors == ("progress: error at 50%",)
    output, event = split_event(b'x {"a": 1} {"event": "done", "r": {"b": 2}}')
    assert (output, event) == (b'x {"a": 1} ', {"event": "done", "r": {"b": 2}})
    assert split_event(b'{"event": "done"} tail') == (b'{"event": "done"} tail', None)


def test_nul_bytes_in_output_do_not_hide_the_events(run_dir: RunDir) -> None:
    log = run_dir.task_log("L1_0")
    log.write_text(STARTED + STATUS)
    parser = LogParser(run_dir)
    assert parser.parse()[0].npoints == 40
    with log.open("ab") as f:
        f.write(b"a C library error \0\0 printed this\n" + SAVED.encode())
    (record,) = parser.parse()  # a NUL after the file's start is part of a line
    assert record.saves == 1
    assert record.output_errors == ("a C library error \0\0 printed this",)


def test_records_in_natural_task_order(run_dir: RunDir) -> None:
    for task in ("L1_10", "L1_9", "L2_0"):
        run_dir.task_log(task).write_text(STARTED)
    assert [r.task for r in ar.parse_logs(run_dir)] == ["L1_9", "L1_10", "L2_0"]


def test_second_parse_reads_only_appended_bytes(run_dir: RunDir) -> None:
    log = run_dir.task_log("L1_0")
    log.write_text(STARTED + STATUS + SAVED)
    parser = LogParser(run_dir)
    assert parser.parse()[0].saves == 1
    # Scribble over what was read already, keeping the size: only a parser that reads from
    # its offset (and not the whole file again) misses this and sees just the new line.
    size = log.stat().st_size
    with log.open("r+b") as f:
        f.write(b"\0garbage" + b"x" * (size - 9) + b"\n")
    with log.open("a") as f:
        f.write(SAVED + line("done", npoints=50, loss=0.1))
    record = parser.parse()[0]
    assert record.saves == 2  # not 3: the first save was not counted twice
    assert record.outcome == "done"
    assert (record.npoints, record.loss) == (50, 0.1)
    assert record.output_errors == ()
    assert record.host == "node7"  # kept from the first read


def test_unchanged_files_give_the_same_records(run_dir: RunDir) -> None:
    run_dir.task_log("L1_0").write_text(STARTED + STATUS)
    parser = LogParser(run_dir)
    first = parser.parse()
    assert parser.parse() == first


def test_truncated_last_line_waits_for_its_newline(run_dir: RunDir) -> None:
    log = run_dir.task_log("L1_0")
    full = line("done", npoints=60, loss=0.5)
    log.write_text(STARTED + full[:20])
    parser = LogParser(run_dir)
    record = parser.parse()[0]
    assert record.outcome is None
    assert record.last_event == "started"
    with log.open("a") as f:
        f.write(full[20:])
    record = parser.parse()[0]
    assert record.outcome == "done"
    assert record.npoints == 60


def test_binary_file_is_skipped_with_a_warning(run_dir: RunDir) -> None:
    run_dir.task_log("L1_0").write_text(STARTED)
    run_dir.task_log("L1_1").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" * 10)
    parser = LogParser(run_dir)
    with pytest.warns(LogParseWarning, match=r"L1_1\.log is not a text file"):
        records = parser.parse()
    assert only(records, "L1_0").host == "node7"
    assert only(records, "L1_1").host is None
    parser.parse()  # warned once: filterwarnings=error would raise on a second warning


def test_deleted_log_is_skipped_with_a_warning(run_dir: RunDir) -> None:
    run_dir.task_log("L1_0").write_text(STARTED)
    run_dir.task_log("L1_1").write_text(STARTED)
    parser = LogParser(run_dir)
    assert len(parser.parse()) == 2
    run_dir.task_log("L1_1").unlink()
    with pytest.warns(LogParseWarning, match=r"L1_1\.log was deleted"):
        records = parser.parse()
    assert only(records, "L1_1").host == "node7"  # what was read stays
    parser.parse()


def test_replaced_or_truncated_log_is_read_from_its_start(run_dir: RunDir) -> None:
    log = run_dir.task_log("L1_0")
    log.write_text(STARTED + STATUS + SAVED)
    parser = LogParser(run_dir)
    assert parser.parse()[0].saves == 1
    replacement = log.with_suffix(".new")
    replacement.write_text(STARTED + "an error\n" + SAVED + SAVED + SAVED)
    replacement.replace(log)  # a new inode
    record = parser.parse()[0]
    assert (record.saves, record.output_errors) == (3, ("an error",))
    log.write_text(STARTED)  # same inode, shorter
    record = parser.parse()[0]
    assert (record.saves, record.output_errors) == (0, ())
    assert record.npoints is None


def test_wrong_types_in_a_line_become_none(run_dir: RunDir) -> None:
    run_dir.task_log("L1_0").write_text(line("status", npoints="many", loss=[1], pid=True))
    (record,) = ar.parse_logs(run_dir)
    assert (record.npoints, record.loss, record.pid) == (None, None, None)


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        ar.parse_logs(tmp_path)


def test_to_dataframe(run_dir: RunDir) -> None:
    pd = pytest.importorskip("pandas")
    run_dir.task_log("L1_0").write_text(STARTED + STATUS)
    run_dir.task_log("L1_1").write_text(STARTED)
    frame = ar.parse_logs(run_dir).to_dataframe()
    assert list(frame["task"]) == ["L1_0", "L1_1"]
    assert frame.loc[0, "npoints"] == 40
    assert frame["started"].dt.tz is not None
    assert frame.loc[0, "started"] == pd.Timestamp("2024-05-01T10:00:00.000001Z")


# -- a real run on the Local scheduler ---------------------------------------------------------


def square(x: float, delay: float) -> float:
    time.sleep(delay)
    return x**2


def test_parse_logs_of_a_real_run(tmp_path: Path) -> None:
    learners = [adaptive.Learner1D(partial(square, delay=0.01), bounds=(-1, 1)) for _ in range(2)]
    rm = ar.RunManager(
        ar.Local(cores=1),
        learners,
        [tmp_path / f"l{i}.pickle" for i in range(2)],
        goal=40,
        run_dir=tmp_path / "run",
        save_interval=0.2,
        log_interval=0.2,
        poll_interval=0.3,
    ).start()
    first = rm.parse_logs()  # while it runs: whatever is there, no error
    assert all(isinstance(r, TaskRecord) for r in first)
    assert rm.wait(timeout=120)
    records = [r for r in rm.parse_logs() if r.outcome != "no_work"]
    assert sorted(cast("int", r.learner) for r in records) == [0, 1]
    for record in records:
        assert record.outcome == "done"
        assert record.npoints is not None
        assert record.npoints >= 40
        assert record.host == os.uname().nodename
        assert record.pid is not None
        assert record.saves >= 1
        assert record.output_errors == ()
    manager_log = [
        json.loads(x) for x in (tmp_path / "run" / "manager.log").read_text().splitlines()
    ]
    events = [entry["event"] for entry in manager_log]
    assert "submitted array" in events
    assert "run finished" in events
    assert all(entry["level"] == "info" for entry in manager_log)


def chatty(x: float) -> float:
    print(f"hello from x={x}", flush=True)
    print(f"solver error: pretend it diverged at x={x}", file=sys.stderr, flush=True)
    return x**2


def test_real_run_leaves_one_log_per_task_with_events_and_output(tmp_path: Path) -> None:
    rm = ar.RunManager(
        ar.Local(cores=1),
        [adaptive.Learner1D(chatty, bounds=(-1, 1)) for _ in range(2)],
        [tmp_path / f"l{i}.pickle" for i in range(2)],
        goal=10,
        run_dir=tmp_path / "run",
        poll_interval=0.3,
    ).start()
    assert rm.wait(timeout=120)
    logs = rm.run_dir.logs_dir
    with Database.open(rm.run_dir.database) as db:
        holds = sorted(db.tasks(), key=lambda t: t.started)
    claimed = {t.task for t in holds}
    latest = {t.task: t.learner for t in holds}  # as if each task still held its last learner
    records = {r.task: r for r in rm.parse_logs()}  # filterwarnings=error: output is no warning
    assert sorted(p.name for p in logs.iterdir()) == sorted(f"{task}.log" for task in records)
    assert 1 <= len(claimed) <= 2  # two tasks; one may have run both learners
    assert claimed <= records.keys()
    for task in claimed:
        lines = rm.run_dir.task_log(task).read_text().splitlines()
        events = [json.loads(x)["event"] for x in lines if x.startswith('{"')]
        assert events[0] == "started"
        # It asked for another learner; the finished run cancels a task still asking.
        assert events[-2] == "done"
        assert events[-1] in ("no_more_work", "stopped")
        assert any(x.startswith("hello from x=") for x in lines)  # the function's stdout
        record = records[task]
        assert record.outcome == "done"
        assert record.output_errors
        assert all(e.startswith("solver error: pretend") for e in record.output_errors)
    watch = ErrorWatch(logs, ["solver error:", '"event"', "done"])
    found = watch.scan(sorted(claimed), latest)
    assert found.keys() == claimed
    # Matched in the function's stderr, not in the worker's JSON events (which hold "done").
    assert all("'solver error:'" in reason for reason in found.values())
    assert ErrorWatch(logs, ['"event"', "started"]).scan(sorted(claimed), latest) == {}
