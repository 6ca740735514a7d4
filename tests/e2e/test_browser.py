"""The status panel in a real browser: JupyterLab on loopback, Debian's chromium via Playwright.

A copy of example.ipynb, plus cells that run a learner that fails and start a second, slow
run (``slow_rm.start()`` as a cell's last line, then its panel), is run top to bottom in
JupyterLab. The test checks the counts, progress and totals the panels show, the failed
learner's log (a multi-line traceback, no line wrapped), what ``start()`` showed, the slow
run's queue view, draws a learner's plot in the finished run's panel, cancels the slow run
with the panel's button (and its confirmation) and saves screenshots. Playwright drives
/usr/bin/chromium; no browser is ever downloaded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from helpers_run import wait_for
from nbformat.v4 import new_code_cell

from adaptive_runner.schedulers.local import Local
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Locator, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root has no user namespace sandbox here
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "example.ipynb"
# Three learners that never reach a goal on their own within the test (at most 3 minutes a
# job, so nothing outlives a failed test for long).
# One learner whose function raises: it fails at its first point (max_fails=1).
FAILING_RUN = """\
def broken(x: float) -> float:
    raise ValueError(f"no value at {x}")


broken_rm = ar.RunManager(
    ar.Local(cores=1),
    [adaptive.Learner1D(broken, bounds=(0, 1))],
    ["data/broken/0.pickle"],
    goal=10,
    run_dir="runs/broken",
    max_fails=1,
)
broken_rm.start().wait(timeout=120)
broken_panel = broken_rm.info()
broken_panel"""
SLOW_RUN = """\
import time
from datetime import timedelta


def slow(x: float) -> float:
    time.sleep(0.2)
    return x


slow_rm = ar.RunManager(
    ar.Local(cores=1),
    [adaptive.Learner1D(slow, bounds=(0, 1)) for _ in range(3)],
    [f"data/slow/{i}.pickle" for i in range(3)],
    goal=timedelta(minutes=3),
    run_dir="runs/slow",
    save_interval=1,
    log_interval=0.5,
)
slow_rm.start()"""
SLOW_PANEL = """\
slow_panel = slow_rm.info(refresh_interval=0.5)
slow_panel"""
# JupyterLab settings: no news or update checks (no network), every cell rendered (no
# windowing), so both panels are in the page.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium (apt-get install chromium); CI always runs this",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer {url}:\n{log.read_text()}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """JupyterLab serving a copy of example.ipynb (plus the slow run) from a temporary root."""
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell(FAILING_RUN, id="failing-run"))
    nb.cells.append(new_code_cell(SLOW_RUN, id="slow-run"))
    nb.cells.append(new_code_cell(SLOW_PANEL, id="slow-panel"))
    nbformat.write(nb, root / "example.ipynb")
    home = tmp_path / "jupyter"
    for plugin, values in LAB_SETTINGS.items():
        path = home / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/api/status?token={token}", server, log)
        yield f"{base}/lab/tree/example.ipynb?token={token}", root
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        slow_run = root / "runs" / "slow"
        if (slow_run / "state.sqlite").exists():
            import adaptive_runner as ar  # noqa: PLC0415 - only to clean up after a failure

            ar.RunManager.open(slow_run).cancel()


def test_panel_in_jupyterlab(lab: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - slow import

    url, root = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url)
            try:
                drive(page, tmp_path)
            except Exception:
                page.screenshot(path=tmp_path / "failure.png")
                raise
        finally:
            browser.close()
    slow_run = root / "runs" / "slow"
    with Database.open(slow_run / "state.sqlite") as db:
        assert db.counts()["cancelled"] == 3
        arrays = db.recorded_arrays()
    # The cancelled tasks release their learners to the kernel's database manager: the
    # kernel must outlive them (the fixture shuts it down), or a release waits for a reply.
    local = Local().bind(slow_run / "jobs")
    wait_for(
        lambda: not any(s.active for s in local.queue_states(arrays).values()),
        what="the slow run's cancelled tasks to end",
    )
    screenshots = os.environ.get("AR_SCREENSHOT_DIR")
    if screenshots:  # keep them for a look (CI uploads this directory)
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, screenshots)


def drive(page: Page, tmp_path: Path) -> None:
    """Run every cell, check both panels, cancel the slow run from its panel, screenshot."""
    from playwright.sync_api import expect  # noqa: PLC0415 - slow import

    expect.set_options(timeout=180_000)  # kernel start, two runs and a cancel on 2 busy cores
    # The kernel is connected once the status bar names it and says Idle.
    status = page.locator(".jp-StatusBar-Widget")
    expect(status).to_contain_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    panels = page.locator(".ar-panel")
    expect(panels).to_have_count(3)
    example, broken, slow = panels.nth(0), panels.nth(1), panels.nth(2)
    expect(example.locator(".ar-counts")).to_contain_text("done 4")
    expect(example.locator(".ar-counts")).to_contain_text("total 4")
    expect(example.locator(".ar-progress-label")).to_have_text(
        "4 finished: 4 done · 0 failed · 0 cancelled"
    )
    # slow_rm.start() as the cell's last line: a line pointing to the panel, no stale figures.
    started = page.locator(".ar-started")
    expect(started).to_have_count(1)
    expect(started).to_contain_text("managers running; info() shows the live panel")
    expect(page.locator(".ar-summary")).to_have_count(0)
    expect(slow.locator(".ar-counts")).to_contain_text(re.compile(r"running [1-3]"))
    for panel in (example, slow):
        expect(panel.locator(".ar-totals")).to_contain_text("CPU-hours")
        expect(panel.locator(".ar-totals")).to_contain_text("median queue wait")
    expect(example.locator(".ar-totals")).to_contain_text(
        re.compile(r"data on disk \S+ \S+ in 4 files")
    )
    # The slow run's tasks hold its learners: the queue view lists them with their learners.
    expect(slow.locator(".ar-queue")).to_contain_text(re.compile(r"queue: running [1-3]"))
    expect(slow.locator(".ar-queue-group summary").first).to_contain_text(
        re.compile(r"running · [1-3] tasks?")
    )

    check_failed_log(broken, tmp_path)

    example.get_by_placeholder("e.g. 3, 7-9").fill("0")
    # By its text: the icon's glyph is part of the button's accessible name.
    example.locator("button", has_text=re.compile(r"^\s*Plot$")).click()
    expect(example.locator(".ar-plot img")).to_be_visible()
    expect(example.locator(".ar-plot")).to_contain_text(re.compile(r"learner 0: \d+ points"))
    example.scroll_into_view_if_needed()
    example.screenshot(path=tmp_path / "panel_example.png")
    check_overview(example, tmp_path)

    slow.get_by_role("button", name="Cancel run").click()
    confirm = slow.get_by_role("button", name="Yes, cancel the run")
    expect(confirm).to_be_visible()
    confirm.click()
    expect(slow.locator(".ar-counts")).to_contain_text("cancelled 3")
    expect(slow).to_contain_text("Cancelled the run: ")
    expect(slow).to_contain_text("run finished")
    slow.scroll_into_view_if_needed()
    slow.screenshot(path=tmp_path / "panel_cancelled.png")
    page.screenshot(path=tmp_path / "jupyterlab.png")


def check_failed_log(panel: Locator, tmp_path: Path) -> None:
    """The failed learner's log, shown as the CLI prints it: its traceback on lines of its own."""
    from playwright.sync_api import expect  # noqa: PLC0415 - slow import

    expect(panel.locator(".ar-progress-label")).to_have_text(
        "1 finished: 0 done · 1 failed · 0 cancelled"
    )
    failed_part = panel.locator(".ar-progress-failed")
    expect(failed_part).to_have_attribute("style", re.compile(r"width:100%"))
    panel.get_by_text("failed jobs only").click()
    panel.get_by_role("button", name="Show log").click()
    log = panel.locator("pre.ar-log")
    expect(log).to_be_visible()
    expect(panel.locator(".ar-log-head")).to_contain_text("learner 0, job ")
    expect(panel.locator(".ar-log-head")).to_contain_text("(failed)")
    text = log.inner_text()
    lines = text.splitlines()
    assert "    Traceback (most recent call last):" in lines
    assert any(line.endswith("ValueError: no value at 0.0") for line in lines), text
    assert "\\n" not in text  # real lines, not the JSON's escaped newlines
    assert any(re.search(r"Z \S+ error +failed learner=0", line) for line in lines), text
    traceback = panel.locator(".ar-traceback").first.inner_text()
    assert len(traceback.splitlines()) >= 4, traceback
    assert log.evaluate("pre => getComputedStyle(pre).whiteSpace") == "pre"
    # Each line is one line on the screen: a wrapped span would have several boxes.
    boxes = log.locator(".ar-log-line").evaluate_all(
        "spans => spans.map(span => span.getClientRects().length)"
    )
    assert boxes, text
    assert set(boxes) == {1}, boxes
    # A long log shows its end, where the failure is: its top is scrolled out of the box.
    box, pre = panel.locator(".ar-log-box").bounding_box(), log.bounding_box()
    assert box is not None
    assert pre is not None
    assert pre["y"] < box["y"] - 10, (pre, box)
    assert abs((pre["y"] + pre["height"]) - (box["y"] + box["height"])) < 10, (pre, box)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=tmp_path / "panel_failed_log.png")


def check_overview(panel: Locator, tmp_path: Path) -> None:
    """The sweep's overview: a cell per learner (the four widths), coloured; a click plots one."""
    from playwright.sync_api import expect  # noqa: PLC0415 - slow import

    panel.locator("button", has_text=re.compile(r"^\s*Overview$")).click()
    cells = panel.locator(".ar-overview-cells button")
    expect(cells).to_have_count(4)
    expect(panel.locator(".ar-overview-x")).to_contain_text("0.01")
    boxes = cells.evaluate_all(
        "cells => cells.map(c => { const r = c.getBoundingClientRect();"
        " return [r.x, r.y, r.width, r.height, getComputedStyle(c).backgroundColor]; })"
    )
    assert len({round(x) for x, *_ in boxes}) == 4, boxes  # side by side, along the widths
    assert len({round(y) for _, y, *_ in boxes}) == 1, boxes  # one parameter: one row
    assert all(w > 5 and h > 5 for _, _, w, h, _ in boxes), boxes
    assert "rgb(208, 208, 208)" not in {c for *_, c in boxes}, boxes  # every loss coloured
    cells.nth(2).click()
    expect(panel.locator(".ar-plot")).to_contain_text(re.compile(r"learner 2: \d+ points"))
    expect(panel.get_by_placeholder("e.g. 3, 7-9")).to_have_value("2")
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=tmp_path / "panel_overview.png")
