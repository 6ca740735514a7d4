"""The README's migration example, run as written (on the Local scheduler instead of SLURM)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _section_code(title: str) -> str:
    """The first python block after the heading ``title``."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no python block under {title!r}"
    return match.group(1)


@pytest.mark.slow
def test_the_adaptive_scheduler_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _section_code("Coming from adaptive-scheduler")
    slurm = 'ar.SLURM(cores=10, executor="loky")'
    assert slurm in code
    code = code.replace(slurm, 'ar.Local(cores=2, executor="loky")')
    code += "\nassert rm.wait(timeout=300), rm.problems()\nrm.stop()\n"
    monkeypatch.chdir(tmp_path)  # its run_dir and data/ are relative
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    rm = namespace["rm"]
    assert rm.status()["done"] == 20
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names[0] == "a_0.1__pow_0.pickle"
    learners = rm.load_learners()
    assert all(learner.npoints > 200 for learner in learners)
    df = rm.load_dataframes()  # save_dataframe=True, as adaptive-scheduler's default
    assert len(df) == sum(learner.npoints for learner in learners)
