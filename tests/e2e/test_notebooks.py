"""The example notebooks: example.ipynb runs top to bottom in a real kernel; all are valid."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def result_text(cell: nbformat.NotebookNode) -> str:
    """What a code cell returned or displayed, as plain text (the managers' log lines aside)."""
    return "".join(
        output["data"].get("text/plain", "")
        for output in cell.outputs
        if output["output_type"] in ("execute_result", "display_data")
    )


def find_cell(nb: nbformat.NotebookNode, source_start: str) -> nbformat.NotebookNode:
    cell: nbformat.NotebookNode = next(
        c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)
    )
    return cell


@pytest.mark.slow
def test_example_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    shutil.copy(NOTEBOOKS / "example.ipynb", tmp_path)
    nb = nbformat.read(tmp_path / "example.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    assert result_text(find_cell(nb, "rm.wait(")) == "True"
    panel_cell = find_cell(nb, "panel = rm.info()")
    (view,) = [o for o in panel_cell.outputs if o["output_type"] == "execute_result"]
    assert "application/vnd.jupyter.widget-view+json" in view["data"]
    # The panel's widgets were recorded with their state (their last refresh).
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [str(model["state"].get("value", "")) for model in states.values()]
    assert any('class="ar-counts-row"' in value for value in values)
    assert any(re.search(r'"ar-progress-label">(\d of )?4 finished: \d done', v) for v in values)
    assert any(value.startswith("learner 0: ") for value in values)  # the live plot's note
    table = result_text(find_cell(nb, "records = rm.parse_logs()"))
    assert table.count("done") >= 4
    plot = find_cell(nb, "learners = rm.load_learners()")
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
    per_learner = result_text(find_cell(nb, "df = rm.load_dataframes()"))
    assert per_learner.count("\n") >= 4  # a row per learner (and the header)
    data = tmp_path / "data" / "example"
    assert len(list(data.glob("peak_*[0-9].pickle"))) == 4
    assert len(list(data.glob("*.pickle.dataframe.pickle"))) == 4


@pytest.mark.slow
def test_progressive_sweep_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    shutil.copy(NOTEBOOKS / "progressive_sweep.ipynb", tmp_path)
    nb = nbformat.read(tmp_path / "progressive_sweep.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    assert result_text(find_cell(nb, "more_learners, more_fnames")) == "[12, 13, 14]"
    assert result_text(find_cell(nb, "rm.wait(")) == "True"
    final = stream_text(nb.cells[-3], "stdout")  # the text summary after the end
    assert "stage 1 (npoints >= 20): 15/15 · stage 2 (npoints >= 100): 15/15" in final
    points = result_text(find_cell(nb, "names = "))
    assert points.count(": 100") == 15
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    cells = [m["state"] for m in states.values() if m["model_name"] == "ToggleButtonsModel"]
    assert any(len(state.get("_options_labels", ())) in (12, 15) for state in cells)


def test_notebooks_are_valid() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", path
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name}: commit notebooks without outputs"
                compile(cell.source, f"{path.name}:{cell.id}", "exec")


def stream_text(cell: nbformat.NotebookNode, name: str) -> str:
    """What a code cell printed on ``name`` ("stdout" or "stderr")."""
    return "".join(o["text"] for o in cell.outputs if o.get("name") == name)


# Three learners, two of them with a data file that cannot be loaded: two warnings of one kind
# when the run starts (the goal check), then two "job failed" warnings as the jobs fail.
QUIET_RUN = """\
from pathlib import Path

import adaptive
import adaptive_runner as ar
from adaptive_runner.manager.logs import in_jupyter_kernel


def f(x):
    return x * x


learners = [adaptive.Learner1D(f, bounds=(-1, 1)) for _ in range(3)]
fnames = [f"data/{i}.pickle" for i in range(3)]
Path("data").mkdir()
for name in fnames[:2]:
    Path(name).write_bytes(b"not a data file")
rm = ar.RunManager(ar.Local(cores=1), learners, fnames, goal=10, run_dir="run", max_fails=1,
                   save_interval=0.3, log_interval=0.3, poll_interval=0.3)
rm.start()
print("kernel:", in_jupyter_kernel())
"""


@pytest.mark.slow
def test_a_notebook_cell_shows_each_warning_once_and_no_info(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(QUIET_RUN),
        nbformat.v4.new_code_cell("rm.wait(timeout=120)"),
        nbformat.v4.new_code_cell(
            "import time\nwhile ar.Run('run').active_tasks():\n    time.sleep(0.1)"
        ),
    ]
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    start, wait, _ = nb.cells
    assert stream_text(start, "stdout") == "kernel: True\n"
    assert result_text(wait) == "False"  # two learners failed
    # No info line in any cell; each warning once, as one line, though each came twice.
    shown = "".join(stream_text(cell, "stderr") for cell in nb.cells).splitlines()
    assert len(shown) == 2, shown
    check, failed = shown
    assert check.startswith("adaptive_runner warning: cannot check saved data learner=0 fname=")
    assert check in stream_text(start, "stderr")  # logged by start() itself, in its cell
    assert failed.startswith("adaptive_runner warning: job failed task=")
    assert "Not a gzipped file" in failed
    # Everything, info and every repeat, is in manager.log.
    lines = (tmp_path / "run" / "manager.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    logged = [e["event"] for e in events]
    assert logged.count("cannot check saved data") == 2
    assert logged.count("job failed") == 2
    assert "run started" in logged
    assert "submitted array" in logged
