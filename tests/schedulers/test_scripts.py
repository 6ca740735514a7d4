"""Job-script rendering: the local template, hostile paths run for real, templates in the wheel."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers.base import ScriptContext
from adaptive_runner.schedulers.local import Local
from adaptive_runner.schedulers.pbs import PBS
from adaptive_runner.schedulers.scripts import templates_dir
from adaptive_runner.schedulers.slurm import SLURM

REPO = Path(__file__).resolve().parents[2]

# Writes os.environ[argv[2]] to the file argv[1] and says hello on stdout.
MARKER_CODE = (
    "import os, pathlib, sys; "
    "pathlib.Path(sys.argv[1]).write_text(os.environ[sys.argv[2]] + '|' + "
    "os.environ['OMP_NUM_THREADS']); print('worker ran')"
)
WEIRD_VALUE = 'it\'s "quoted" $HOME `id` ; echo foo\nsecond line'


@pytest.fixture
def weird_tmp_path(tmp_path: Path) -> Path:
    """A directory whose name tries to break out of shell quoting (as in submitit's tests)."""
    path = tmp_path / "a'; echo foo" / 'a"=0"' / "with space" / "new\nline $(echo bar)"
    path.mkdir(parents=True)
    return path


def context(run_dir: Path, worker_args: list[str]) -> ScriptContext:
    return ScriptContext(
        job_name=run_dir.name,
        run_dir=run_dir,
        log_dir=run_dir / "logs",
        n_tasks=1,
        max_running=1,
        worker_args=worker_args,
    )


def bash_syntax_ok(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_local_template(tmp_path: Path) -> None:
    scheduler = Local(
        num_threads=4, env={"MY_VAR": "x y"}, extra_script="module load foo\nmodule load bar"
    )
    text = scheduler.render(context(tmp_path, ["-m", "adaptive_runner.worker", str(tmp_path)]))
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert f'exec >>{tmp_path}/logs/"${{LOCAL_TASK_ID}}.log" 2>&1' in lines
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert f"export {var}=4" in lines
    assert "export MY_VAR='x y'" in lines
    assert lines.index("module load foo") < lines.index("module load bar")
    assert lines[-1] == f"exec {sys.executable} -m adaptive_runner.worker {tmp_path}"
    script = tmp_path / "local.sh"
    script.write_text(text)
    bash_syntax_ok(script)


def test_weird_paths_render_and_run_on_local(weird_tmp_path: Path) -> None:
    run_dir = weird_tmp_path
    (run_dir / "logs").mkdir()
    marker = run_dir / "marker 'x'\n.txt"
    scheduler = Local(
        num_threads=3, env={"WEIRD": WEIRD_VALUE}, extra_script="echo extra ran"
    ).bind(run_dir / "jobs")
    text = scheduler.render(context(run_dir, ["-c", MARKER_CODE, str(marker), "WEIRD"]))
    script = run_dir / "jobs" / "weird.sh"
    script.parent.mkdir()
    script.write_text(text)
    bash_syntax_ok(script)

    array_id = scheduler.submit(script, n_tasks=1, max_running=1)
    deadline = time.monotonic() + 30
    while scheduler.queue_states([array_id])[f"{array_id}_0"].active:
        assert time.monotonic() < deadline, "the task did not end"
        time.sleep(0.02)
    output = (run_dir / "logs" / f"{array_id}_0.log").read_text()
    assert output.splitlines() == ["extra ran", "worker ran"]  # nothing injected ran
    assert marker.read_text() == f"{WEIRD_VALUE}|3"


def test_user_template(tmp_path: Path) -> None:
    template = tmp_path / "mine.sh.j2"
    template.write_text("#!/bin/bash\n# {{ s.name }} {{ ctx.n_tasks }}\n{{ worker_command }}\n")
    scheduler = Local(template=template)
    text = scheduler.render(context(tmp_path, ["-c", "pass"]))
    assert text == f"#!/bin/bash\n# local 1\n{sys.executable} -c pass\n"


def test_user_template_elsewhere_includes_the_shipped_parts(tmp_path: Path) -> None:
    """A template in its own directory includes the environment and launch parts."""
    template = tmp_path / "site" / "mine.sh.j2"
    template.parent.mkdir()
    template.write_text(
        "#!/bin/bash\n#SBATCH --constraint=site\n"
        '{% include "_environment.sh.j2" %}\n\n{% include "_launch.sh.j2" %}\n'
    )
    options: dict[str, Any] = {"num_threads": 2, "env": {"A": "b c"}, "extra_script": "true"}
    scheduler = SLURM(template=template, executor="mpi4py", cores=3, **options)
    text = scheduler.render(context(tmp_path, ["-m", "adaptive_runner.worker", "run"]))
    shipped = SLURM(executor="mpi4py", cores=3, **options).render(
        context(tmp_path, ["-m", "adaptive_runner.worker", "run"])
    )
    body = text.split("#SBATCH --constraint=site\n", 1)[1]
    assert shipped.endswith(body)  # the same environment and exec lines as the shipped one
    assert "export A='b c'\n" in body
    assert body.splitlines()[-1].startswith("exec mpiexec -n 3 ")
    # A part of the same name beside the user's template wins over the shipped one.
    (template.parent / "_environment.sh.j2").write_text("# my environment\n")
    text = scheduler.render(context(tmp_path, ["-m", "adaptive_runner.worker", "run"]))
    assert "# my environment\n" in text
    assert "OMP_NUM_THREADS" not in text


def test_template_with_the_released_option_names(tmp_path: Path) -> None:
    """A template copied from an earlier release reads options under their old names."""
    template = tmp_path / "old.sh.j2"
    template.write_text(
        "{{ s.partition }} {{ s.time }} {{ s.mem }} {{ s.extra_sbatch | join(',') }}\n"
    )
    slurm = SLURM(
        template=template,
        queue="debug",
        walltime="90",
        memory="8G",
        extra_directives=["--gres=gpu:1"],
    )
    assert slurm.render(context(tmp_path, [])) == "debug 90 8G --gres=gpu:1\n"
    template.write_text("{{ s.queue_name }} {{ s.pbs_mem }} {{ s.directives | join(',') }}\n")
    pbs = PBS(template=template, queue="batch", memory="8G", extra_directives=["#PBS -m n"])
    assert pbs.render(context(tmp_path, [])) == "batch 8gb -m n\n"


def test_template_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        Local(template=tmp_path / "missing.j2").render(context(tmp_path, []))
    template = tmp_path / "bad.sh.j2"
    template.write_text("{{ s.no_such_option }}\n")
    with pytest.raises(ConfigError, match=r"'bad\.sh\.j2' failed to render"):
        Local(template=template).render(context(tmp_path, []))


def test_templates_are_in_the_wheel(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", str(REPO)),
            *("--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path)),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("adaptive_runner-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {f"adaptive_runner/templates/{p.name}" for p in templates_dir().glob("*.sh.j2")}
    assert "adaptive_runner/templates/local.sh.j2" in shipped
    assert "adaptive_runner/templates/_environment.sh.j2" in shipped
    assert shipped <= names
