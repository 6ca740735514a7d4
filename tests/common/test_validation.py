"""The one set of option checks: bools are not ints, durations, environment variables."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

import adaptive_runner as ar
from adaptive_runner.common.validation import (
    environment,
    non_negative_int,
    positive_int,
    positive_seconds,
)
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers import scheduler_options

if TYPE_CHECKING:
    from pathlib import Path

    from adaptive_runner.schedulers.base import Scheduler
    from adaptive_runner.schedulers.cluster import ClusterScheduler


def test_positive_int() -> None:
    assert positive_int(3, "cores") == 3
    for bad in (0, -1, 1.0, "2", None):
        with pytest.raises(ConfigError, match=r"cores=.*give a positive integer"):
            positive_int(bad, "cores")
    with pytest.raises(ConfigError, match="cores=True is a bool; give a positive integer"):
        positive_int(True, "cores")  # noqa: FBT003 - the point of the test


def test_non_negative_int() -> None:
    assert non_negative_int(0, "offset") == 0
    with pytest.raises(ConfigError, match=r"offset=-1 is out of range; give an integer >= 0"):
        non_negative_int(-1, "offset")
    with pytest.raises(ConfigError, match="offset=False is a bool"):
        non_negative_int(False, "offset")  # noqa: FBT003 - the point of the test


def test_positive_seconds() -> None:
    assert positive_seconds(2, "save_interval") == 2.0
    assert positive_seconds(0.5, "save_interval") == 0.5
    assert positive_seconds(timedelta(minutes=2), "save_interval") == 120.0
    for bad in (0, -1.0, timedelta(0), math.inf, math.nan, True, "30", None):
        with pytest.raises(ConfigError, match=r"save_interval=.* is not a duration; give a pos"):
            positive_seconds(bad, "save_interval")


def test_environment() -> None:
    env = {"OMP_PROC_BIND": "true", "_X1": 2, "RATE": 0.5}
    checked = environment(env)
    assert checked == env
    assert checked is not env
    for name in ("A B", "1A", "", "A-B", "Ä"):
        with pytest.raises(ConfigError, match=r"not an environment variable name: use letters"):
            environment({name: "1"})
    with pytest.raises(ConfigError, match=r"env has the key 3"):
        environment({3: "1"})
    for value in (True, None, ["a"], b"x"):
        with pytest.raises(ConfigError, match=r"env\['A'\]=.*: give a str, int or float"):
            environment({"A": value})
    with pytest.raises(ConfigError, match="NUL byte"):
        environment({"A": "a\0b"})
    with pytest.raises(ConfigError, match="env must be a mapping"):
        environment([("A", "1")])


@pytest.mark.parametrize("scheduler", [ar.Local, ar.SLURM, ar.PBS])
def test_schedulers_refuse_a_bad_env_name_at_construction(scheduler: type[Scheduler]) -> None:
    with pytest.raises(ConfigError, match=r"env has the key 'A B'"):
        scheduler(env={"A B": 1})


def test_schedulers_refuse_bools_as_ints() -> None:
    with pytest.raises(ConfigError, match="cores=True is a bool"):
        ar.Local(cores=True)
    with pytest.raises(ConfigError, match="num_threads=True is a bool"):
        ar.SLURM(num_threads=True)
    with pytest.raises(ConfigError, match="nodes=True is a bool"):
        ar.PBS(nodes=True)
    with pytest.raises(ConfigError, match="cores_per_node=True is a bool"):
        ar.SLURM(nodes=2, cores_per_node=True, executor="mpi4py")
    with pytest.raises(ConfigError, match="signal_grace_s=True is a bool"):
        ar.SLURM(signal_grace_s=True)


def test_scheduler_env_is_a_copy_and_grace_is_seconds() -> None:
    env = {"A": "1"}
    local = ar.Local(env=env, kill_grace_s=timedelta(seconds=5))  # type: ignore[arg-type]
    env["B"] = "2"
    assert local.env == {"A": "1"}
    assert local.kill_grace_s == 5.0


@pytest.mark.parametrize("cluster", [ar.SLURM, ar.PBS])
def test_one_vocabulary_on_every_cluster(cluster: type[ClusterScheduler]) -> None:
    """The same option names on every backend, stored under those names in run.json."""
    scheduler = cluster(
        cores=2,
        walltime=timedelta(hours=50, seconds=0.5),
        queue="q1",
        account="proj",
        memory="8G",
        extra_directives=[f"{cluster.directive_prefix} --x=1"],
        mpi_launcher="mpirun --bind-to none",
        executor="mpi4py",
        num_threads=2,
        env={"A": 1},
        extra_script="true",
        python="/opt/py",
    )
    options = scheduler_options(scheduler)
    assert {key: options[key] for key in ("queue", "account", "memory", "walltime")} == {
        "queue": "q1",
        "account": "proj",
        "memory": "8G",
        "walltime": "50:00:01",  # a timedelta is stored as H:MM:SS, rounded up to a second
    }
    assert options["extra_directives"] == [f"{cluster.directive_prefix} --x=1"]
    assert scheduler.directives == ["--x=1"]
    assert scheduler.walltime_s == 50 * 3600 + 1
    assert not set(options) & set(cluster.aliases)  # aliases are never stored
    assert cluster(**options) == scheduler  # what resuming does


@pytest.mark.parametrize(
    ("cluster", "aliases"),
    [
        (
            ar.SLURM,
            {"partition": "q", "time": "2:00:00", "mem": "8G", "extra_sbatch": ["--x=1"]},
        ),
        (ar.PBS, {"queue_name": "q", "mem": "8G", "extra_pbs": ["-l x=1"]}),
    ],
)
def test_backend_words_are_aliases(
    cluster: type[ClusterScheduler], aliases: dict[str, Any]
) -> None:
    common = {cluster.aliases[alias]: value for alias, value in aliases.items()}
    assert cluster(**aliases) == cluster(**common)
    assert scheduler_options(cluster(**aliases)) == scheduler_options(cluster(**common))
    for alias, name in cluster.aliases.items():
        both = {alias: aliases.get(alias, "q"), name: common.get(name, "q")}
        with pytest.raises(ConfigError, match=f"{name}= and {alias}= are the same option"):
            cluster(**both)


def test_local_takes_no_cluster_options() -> None:
    """Local has no queue, account, memory, directives or MPI launcher: Python says which."""
    for option in ("queue", "account", "memory", "extra_directives", "mpi_launcher", "time"):
        kwargs: dict[str, Any] = {option: "x"}
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{option}'"):
            ar.Local(**kwargs)


def test_run_manager_checks_its_numbers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_fails=True is a bool"):
        ar.RunManager(ar.Local(), [object()], ["a"], goal=1, run_dir=tmp_path, max_fails=True)
    with pytest.raises(ConfigError, match="save_interval=0 is not a duration"):
        ar.RunManager(ar.Local(), [object()], ["a"], goal=1, run_dir=tmp_path, save_interval=0)
