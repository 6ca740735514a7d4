"""The sequential executor's thread and its gate: reads of the learner never race adaptive."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import adaptive
import pytest

from adaptive_runner.job.learner_runs import PointGate, start_run

WAIT_S = 30.0


def test_a_read_during_a_point_is_served_at_once_and_holds_the_point_back() -> None:
    gate = PointGate()
    in_point, release = threading.Event(), threading.Event()
    ends: list[str] = []

    def point(x: int) -> int:
        in_point.set()
        release.wait(WAIT_S)
        return x

    def reader() -> str:
        release.set()  # the point could end now, but must wait for this read to finish
        time.sleep(0.2)
        ends.append("read")
        return "value"

    def run_point() -> None:
        gate.submit(point, 1)
        ends.append("point")

    runner = threading.Thread(target=run_point)
    runner.start()
    assert in_point.wait(WAIT_S)
    assert gate.pending() == [1]
    assert gate.read(reader).result(timeout=WAIT_S) == "value"
    runner.join(WAIT_S)
    assert ends == ["read", "point"]
    assert gate.pending() == []


def test_a_read_between_points_waits_for_the_next_point_or_the_end() -> None:
    gate = PointGate()
    first = gate.read(lambda: "first")
    assert not first.done()  # nobody is in a point: the runner thread serves it
    assert gate.submit(abs, -3).result() == 3
    assert first.result(timeout=0) == "first"
    second = gate.read(lambda: 1 / 0)
    gate.close()  # the runner thread ended: what it left is served, errors included
    with pytest.raises(ZeroDivisionError):
        second.result(timeout=0)
    assert gate.read(lambda: "after").result(timeout=0) == "after"


def test_a_stopped_gate_starts_no_new_point() -> None:
    gate = PointGate()
    gate.stop()
    calls: list[float] = []
    with pytest.raises(Exception, match=r"^$"):  # ends adaptive's BlockingRunner
        gate.submit(count_calls, 2.0, calls)
    assert calls == []


def count_calls(x: float, calls: list[float]) -> float:
    calls.append(x)
    return x * x


def test_the_thread_runs_the_learner_to_its_goal_while_the_loop_reads_it() -> None:
    calls: list[float] = []
    learner = adaptive.Learner1D(lambda x: count_calls(x, calls), bounds=(-1, 1))

    async def main() -> list[tuple[int, Any]]:
        run = start_run(learner, {"npoints_goal": 3000}, None)
        seen = []
        while not run.finished.done():
            # Reading the learner while adaptive tells it points: every read is consistent.
            seen.append(await asyncio.wrap_future(run.read(lambda lrn: (lrn.npoints, lrn.loss()))))
            await asyncio.sleep(0.001)
        await run.finished
        return seen

    seen = asyncio.run(main())
    assert learner.npoints >= 3000
    assert len(calls) == learner.npoints
    assert len(seen) > 1
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)


def test_the_thread_reports_the_functions_error() -> None:
    learner = adaptive.Learner1D(lambda x: x / 0, bounds=(-1, 1))

    async def main() -> None:
        await start_run(learner, {"npoints_goal": 10}, None).finished

    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        asyncio.run(main())


def test_a_stop_during_a_long_point_returns_at_once() -> None:
    started, end_of_test = threading.Event(), threading.Event()

    def slow(x: float) -> float:
        started.set()
        if x < 0:
            end_of_test.wait(3600)
        return x

    learner = adaptive.Learner1D(slow, bounds=(-1, 1))  # the first point is -1: it hangs

    async def main() -> tuple[list[Any], int]:
        run = start_run(learner, {"npoints_goal": 10}, None)
        await asyncio.to_thread(started.wait, WAIT_S)
        pending = run.pending_points()
        await asyncio.wait_for(run.stop(), WAIT_S)
        npoints = await asyncio.wrap_future(run.read(lambda lrn: lrn.npoints))  # a final save
        return pending, npoints

    try:
        assert asyncio.run(main()) == ([-1], 0)
    finally:
        end_of_test.set()
