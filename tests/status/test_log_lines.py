"""Task log lines for people: the CLI's text and the panel's HTML, from lines JobLog writes."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import pytest

from adaptive_runner.job.task_log import JobLog
from adaptive_runner.status.log_lines import (
    LogLine,
    epoch,
    lines_html,
    matches,
    read_events,
    tail_lines,
    task_lines,
)
from adaptive_runner.status.log_parser import LineReader

if TYPE_CHECKING:
    from pathlib import Path


def solver(x: float) -> float:
    if x > 1:
        msg = f"cannot evaluate at {x} <&>"
        raise ZeroDivisionError(msg)
    return x


def failed_log() -> bytes:
    """A task log as a worker writes it: started, the function's output, failed, a traceback."""
    out = io.BytesIO()
    log = JobLog(out).bind(task="L1_2", learner=2)
    log.info("started", host="node 7", fname="/data/l2.pickle")
    out.write(b"solver error: giving up\n")  # the task's own output, in the same file
    try:
        solver(2.0)
    except ZeroDivisionError:
        log.exception("failed", npoints=0)
    out.write(b"progress 50%")  # output being written: no newline yet
    return out.getvalue()


def test_lines_of_a_failed_task_read_as_the_cli_prints_them() -> None:
    lines = task_lines("L1_2", failed_log().splitlines())
    started, output, failed, last = lines
    assert re.fullmatch(
        r"\S{27} L1_2 info    started learner=2 host=\"node 7\" fname=/data/l2.pickle\n",
        started.text,
    )
    assert started.level == "info"
    assert output.text == f"{'':27} L1_2 solver error: giving up\n"
    assert output.level == ""
    assert output.time == started.time  # dated by the event before it
    assert failed.level == "error"
    head, *traceback = failed.text.splitlines()
    assert head.endswith("Z L1_2 error   failed learner=2 npoints=0")
    assert traceback[0] == "    Traceback (most recent call last):"
    assert traceback[-1] == "    ZeroDivisionError: cannot evaluate at 2.0 <&>"
    assert all(line.startswith("    ") for line in traceback)
    assert "\\n" not in failed.text  # real lines, not the JSON's escapes
    assert failed.time == epoch(re.match(r"\S+", failed.text)[0])  # type: ignore[index]
    assert last.text.endswith(" L1_2 progress 50%\n")


def test_output_before_any_event_takes_the_first_events_time() -> None:
    log = b'hello\n{"event": "started", "level": "info", "timestamp": "2024-05-01T10:00:00Z"}\n'
    first, started = task_lines("L1_0", log.splitlines())
    assert first.time == started.time == epoch("2024-05-01T10:00:00Z")
    (alone,) = task_lines("L1_0", [b"no event at all"])
    assert alone.time == 0.0  # sorts first when logs are merged


def test_read_events_merges_tasks_in_time_order(tmp_path: Path) -> None:
    def event(second: int) -> str:
        return f'{{"event": "status", "level": "info", "timestamp": "2024-05-01T10:00:0{second}Z"}}'

    (tmp_path / "L1_0.log").write_text(f"{event(1)}\nout a\n{event(3)}\n")
    (tmp_path / "L1_1.log").write_text(f"{event(2)}\n")
    reader = LineReader()
    paths = sorted(tmp_path.glob("*.log"))
    texts = [text.split()[-3:] for _, text in read_events(reader, paths)]
    assert texts == [
        ["L1_0", "info", "status"],
        ["L1_0", "out", "a"],
        ["L1_1", "info", "status"],
        ["L1_0", "info", "status"],
    ]
    assert read_events(reader, paths) == []  # nothing added since


class _Pre(HTMLParser):
    """The text of each <pre>, as a browser shows it, and the text of each traceback span."""

    def __init__(self) -> None:
        super().__init__()
        self.pres: list[str] = []
        self.tracebacks: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "pre":
            self.pres.append("")
        if tag == "span":
            traceback = ("class", "ar-traceback") in attrs
            self._open.append("traceback" if traceback else "span")
            if traceback:
                self.tracebacks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self.pres:
            self.pres[-1] += data
        if "traceback" in self._open:
            self.tracebacks[-1] += data


def test_html_is_the_same_text_with_a_preformatted_traceback() -> None:
    lines = task_lines("L1_2", failed_log().splitlines())
    page = lines_html(lines)
    parsed = _Pre()
    parsed.feed(page)
    (shown,) = parsed.pres
    assert shown == "".join(line.text for line in lines)  # what the CLI prints, escapes undone
    (traceback,) = parsed.tracebacks
    assert traceback.splitlines()[0] == "    Traceback (most recent call last):"
    assert len(traceback.splitlines()) >= 4
    assert "white-space:pre;" in page  # long lines scroll sideways, never break mid-word
    assert "word-break:normal" in page
    assert "<&>" not in page  # escaped
    assert '<span class="ar-log-line ar-level-error" style="color:#d62728">' in page
    assert '<span class="ar-log-line ar-output">' in page


def test_search_marks_matches_in_lines_and_tracebacks() -> None:
    lines = task_lines("L1_2", failed_log().splitlines())
    found = [line for line in lines if matches(line, "CANNOT evaluate")]
    assert [line.level for line in found] == ["error"]  # the event whose traceback matched
    page = lines_html(found, "CANNOT evaluate")
    assert "ZeroDivisionError: <mark>cannot evaluate</mark> at 2.0 &lt;&amp;&gt;" in page
    page = lines_html(lines, "l1_2")
    assert page.count("<mark>L1_2</mark>") == len(lines)


def test_a_line_without_level_or_time() -> None:
    line = task_lines("7_1", [b'{"event": "odd", "level": null}'])[0]
    assert line == LogLine(0.0, f"{'':27} 7_1 {'None':7} odd", "", ())


def test_tail_lines(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tail_lines(tmp_path / "missing.log", 100)
    (tmp_path / "empty.log").write_bytes(b"")
    assert tail_lines(tmp_path / "empty.log", 100) == ([], False)
    lines = [f"line {i}".encode() for i in range(2000)]
    (tmp_path / "big.log").write_bytes(b"\n".join(lines) + b"\n")
    tail, cut = tail_lines(tmp_path / "big.log", 100)
    assert cut
    assert tail[-1] == b"line 1999"
    assert tail == lines[-len(tail) :]  # whole lines only: the one the limit cut is left out
    assert tail_lines(tmp_path / "big.log", 10**6) == (lines, False)
    (tmp_path / "one.log").write_bytes(b"x" * 500)
    assert tail_lines(tmp_path / "one.log", 100) == ([], True)  # one line, longer than the limit
