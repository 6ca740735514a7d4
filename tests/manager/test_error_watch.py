"""kill_on_error: the error watch on task logs, and a real Local run whose job is killed."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import adaptive
import cloudpickle
import pytest

import adaptive_runner as ar
from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.error_watch import DEFAULT_KILL_PATTERNS, ErrorWatch, check_patterns
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from pathlib import Path

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_scan_reports_a_matching_task_once(tmp_path: Path) -> None:
    watch = ErrorWatch(tmp_path, ["srun: error:", "MemoryError"])
    (tmp_path / "7_1.log").write_text("starting\n")
    (tmp_path / "7_2.log").write_text("starting\n")
    assert watch.scan(["7_1", "7_2", "7_3"], {}) == {}  # 7_3 pending: no file yet, no warning
    with (tmp_path / "7_2.log").open("a") as f:
        f.write("srun: error: node3: task 0: Killed\nmore\n")
    found = watch.scan(["7_1", "7_2", "7_3"], {})
    assert list(found) == ["7_2"]
    assert "'srun: error:'" in found["7_2"]
    assert "node3: task 0: Killed" in found["7_2"]
    assert watch.scan(["7_1", "7_2", "7_3"], {}) == {}  # reported once, while it is cancelled


def test_scan_reads_only_new_complete_lines(tmp_path: Path) -> None:
    out = tmp_path / "L1_0.log"
    out.write_text("Memory")  # no newline yet: the line is not complete
    watch = ErrorWatch(tmp_path, ["MemoryError"])
    assert watch.scan(["L1_0"], {}) == {}
    with out.open("a") as f:
        f.write("Error: cannot allocate\n")
    assert "L1_0" in watch.scan(["L1_0"], {})


def test_matches_are_plain_and_case_sensitive(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("memoryerror\n[x] (y)\n")
    watch = ErrorWatch(tmp_path, ["MemoryError", "(y)"])
    assert list(watch.scan(["a"], {})) == ["a"]  # "(y)" as text, not a regex group
    assert "'(y)'" in ErrorWatch(tmp_path, ["MemoryError", "(y)"]).scan(["a"], {})["a"]


def test_a_node_failure_is_not_the_jobs_error(tmp_path: Path) -> None:
    """SLURM ends an allocation that lost a node; the queue poll, not kill_on_error, handles it."""
    (tmp_path / "9_0.log").write_text("srun: error: Node failure on n2\n")
    watch = ErrorWatch(tmp_path, DEFAULT_KILL_PATTERNS)
    assert watch.scan(["9_0"], {}) == {}
    with (tmp_path / "9_0.log").open("a") as f:
        f.write("srun: error: n1: task 0: Exited with exit code 1\n")
    assert "Exited with exit code 1" in watch.scan(["9_0"], {})["9_0"]


def started(learner: int) -> str:
    return json.dumps({"event": "started", "learner": learner, "level": "info"}) + "\n"


def test_an_error_counts_only_while_its_learner_is_held(tmp_path: Path) -> None:
    """A task that went on to another learner is not killed for the last one's output."""
    log = tmp_path / "L1_0.log"
    log.write_text(started(3) + "srun: error: step of learner 3\n" + started(5) + "fine\n")
    assert ErrorWatch(tmp_path, ["srun: error:"]).scan(["L1_0"], {"L1_0": 5}) == {}
    assert ErrorWatch(tmp_path, ["srun: error:"]).scan(["L1_0"], {}) == {}  # between learners
    found = ErrorWatch(tmp_path, ["srun: error:"]).scan(["L1_0"], {"L1_0": 3})
    assert "step of learner 3" in found["L1_0"]  # the scan ran before learner 3 ended
    watch = ErrorWatch(tmp_path, ["srun: error:"])
    assert watch.scan(["L1_0"], {"L1_0": 5}) == {}
    with log.open("a") as f:
        f.write("srun: error: step of learner 5\n")
    assert "step of learner 5" in watch.scan(["L1_0"], {"L1_0": 5})["L1_0"]


def test_worker_events_are_not_output(tmp_path: Path) -> None:
    failed = {"event": "failed", "traceback": "Traceback...\nMemoryError", "level": "error"}
    log = tmp_path / "L1_0.log"
    log.write_text(json.dumps(failed) + "\n")
    watch = ErrorWatch(tmp_path, ["MemoryError"])
    assert watch.scan(["L1_0"], {}) == {}  # the worker reports its own failure; no kill
    with log.open("a") as f:  # output without its newline, then an event glued to it
        f.write("MemoryError in a C extension" + json.dumps(failed) + "\n")
    found = watch.scan(["L1_0"], {})
    assert found["L1_0"].endswith(": MemoryError in a C extension")


def test_patterns_are_checked() -> None:
    assert check_patterns(None) == ()
    assert check_patterns(["a"]) == ("a",)
    with pytest.raises(ConfigError, match="list of strings"):
        check_patterns("MemoryError")
    with pytest.raises(ConfigError, match=r"kill_on_error\[1\]"):
        check_patterns(["a", ""])
    assert "MemoryError" in DEFAULT_KILL_PATTERNS


def prints_memory_error(x: float) -> float:
    print(f"MemoryError: pretend we ran out at x={x}", file=sys.stderr, flush=True)
    time.sleep(60)  # hangs: only kill_on_error ends this job
    return x


def quick(x: float) -> float:
    return x**2


@pytest.mark.slow  # two jobs start, print, get killed: ~10 s
def test_job_whose_output_matches_is_killed_and_its_learner_fails(tmp_path: Path) -> None:
    learners = [
        adaptive.Learner1D(prints_memory_error, bounds=(0, 1)),
        adaptive.Learner1D(quick, bounds=(0, 1)),
    ]
    rm = ar.RunManager(
        ar.Local(cores=1, kill_grace_s=1.0),
        learners,
        [tmp_path / "bad.pickle", tmp_path / "good.pickle"],
        goal=20,
        run_dir=tmp_path / "run",
        max_fails=2,
        save_interval=0.3,
        log_interval=0.3,
        poll_interval=0.3,
    ).start()  # the default kill_on_error patterns include "MemoryError"
    assert not rm.wait(timeout=120)
    with Database.open(tmp_path / "run" / "state.sqlite") as db:
        bad, good = db.learners()
        tasks = db.tasks()
    assert good.state == "done"
    assert bad.state == "failed"
    assert bad.failures == 2
    assert bad.error is not None
    assert "kill_on_error" in bad.error
    assert "MemoryError: pretend we ran out" in bad.error
    assert [t.outcome for t in tasks if t.learner == 0] == ["killed", "killed"]
    records = {r.task: r for r in rm.parse_logs()}
    killed = [t.task for t in tasks if t.outcome == "killed"]
    assert all(any("MemoryError" in e for e in records[t].output_errors) for t in killed)


def test_kill_on_error_none_is_kept_in_run_json(tmp_path: Path) -> None:
    rm = ar.RunManager(
        ar.Local(cores=1),
        [adaptive.Learner1D(quick, bounds=(0, 1))],
        [tmp_path / "l.pickle"],
        goal=5,
        run_dir=tmp_path / "run",
        poll_interval=0.3,
        kill_on_error=None,
    ).start()
    assert rm.job_manager is not None
    assert rm.job_manager.error_watch is None
    assert rm.wait(timeout=120)
    assert RunDir(tmp_path / "run").read_config().kill_on_error == []
    assert ar.RunManager.open(tmp_path / "run").spec.kill_on_error == ()
    with pytest.raises(ConfigError, match="kill_on_error"):
        ar.RunManager(
            ar.Local(),
            [quick],
            ["x"],
            goal=1,
            kill_on_error="MemoryError",
        )
