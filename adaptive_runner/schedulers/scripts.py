"""Job scripts: the Jinja2 environment and the one function that renders a template."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from adaptive_runner.schedulers.base import Scheduler, ScriptContext


def templates_dir() -> Path:
    """The shipped templates: inside the wheel, or at the top of a source checkout."""
    package = Path(__file__).parent.parent  # adaptive_runner/
    packaged = package / "templates"
    return packaged if packaged.is_dir() else package.parent / "templates"


def _environment(*search_path: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(path) for path in search_path]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - shell scripts, not HTML; values go through shquote
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    return env


def render_job_script(scheduler: Scheduler, ctx: ScriptContext) -> str:
    """Render ``scheduler``'s template (or the user's ``template=``) for one array.

    The template sees ``s`` (the scheduler object), ``ctx`` (the ScriptContext) and
    ``worker_command`` (the shell-quoted command that starts the worker). A user template's
    ``{% include %}`` looks in its own directory first, then among the shipped templates, so
    it can include their parts (``_environment.sh.j2``, ``_launch.sh.j2``).
    """
    if scheduler.template is not None:
        path = Path(scheduler.template)
        if not path.is_file():
            raise ConfigError(f"template={str(path)!r} is not a file")
        env, name = _environment(path.parent, templates_dir()), path.name
    else:
        env, name = _environment(templates_dir()), scheduler.template_name
    worker_command = shlex.join([scheduler.python, *ctx.worker_args])
    try:
        return env.get_template(name).render(s=scheduler, ctx=ctx, worker_command=worker_command)
    except jinja2.TemplateError as e:
        raise ConfigError(f"job-script template {name!r} failed to render: {e}") from e
