"""The example notebooks: example.ipynb runs top to bottom in a real kernel; all are valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


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
    assert any(value.endswith(" of 4 learners finished") for value in values)
    table = result_text(find_cell(nb, "records = rm.parse_logs()"))
    assert table.count("done") >= 4
    plot = find_cell(nb, "learners = rm.load_learners()")
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
    assert len(list((tmp_path / "data" / "example").glob("*.pickle"))) == 4


def test_notebooks_are_valid() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", path
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name}: commit notebooks without outputs"
                compile(cell.source, f"{path.name}:{cell.id}", "exec")
