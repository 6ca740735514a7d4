"""RunSpec: what a run is (learners, files, groups) and its options, checked once.

A ``RunManager`` turns the user's arguments into one ``RunSpec`` (:meth:`RunSpec.check`),
writes it into the run directory (run.json plus the pickles: goal, runner kwargs,
initializers, learners) and reads it back from there (:meth:`RunSpec.read`). Durations are
``timedelta`` here; run.json keeps them in seconds (``RunConfig``'s ``*_s`` fields), which is
what the workers of every release read.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

import cloudpickle

from adaptive_runner.common import goals
from adaptive_runner.common.dataframes import dataframe_path
from adaptive_runner.common.files import atomic_write
from adaptive_runner.common.function_store import StoredFunctions
from adaptive_runner.common.run_dir import GroupConfig, RunConfig, RunDir, config_hash
from adaptive_runner.common.validation import (
    callable_name,
    plain_text,
    positive_int,
    positive_seconds,
)
from adaptive_runner.common.vocabulary import DataFrameFormat
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.database_manager import check_address
from adaptive_runner.manager.error_watch import DEFAULT_KILL_PATTERNS, check_patterns
from adaptive_runner.schedulers import from_config, scheduler_options
from adaptive_runner.status.parameters import write_parameters

if TYPE_CHECKING:
    import os

    from adaptive_runner.schedulers.base import Scheduler

T = TypeVar("T")
Initializer = Callable[[], object]
Group = tuple["Scheduler", Sequence[Any], Sequence["str | os.PathLike[str]"]]

_GOAL = "give RunManager(goal=...) instead"
# The Runner arguments the worker sets itself, and why a user's own would not do.
OWNED_RUNNER_KWARGS = {
    "learner": "the learner is the one the task claimed",
    "goal": _GOAL,
    "npoints_goal": _GOAL,
    "loss_goal": _GOAL,
    "end_time_goal": _GOAL,
    "duration_goal": _GOAL,
    "executor": "give the scheduler's executor= instead (e.g. Local(executor='loky'))",
    "ntasks": "the scheduler's cores= sets how many points are evaluated at once",
    "log": "a log of every ask and tell would grow without bound in a long job",
    "shutdown_executor": "the task makes its pool once, shares it between learners, and ends it",
}


class RunOptions(TypedDict, total=False):
    """The options of ``RunManager`` as a user gives them (seconds or timedelta, lists, ...).

    Their meaning is in ``RunManager``'s docstring; :meth:`RunSpec.check` turns them into
    the fields of :class:`RunSpec`, whose defaults apply to the options not given.
    """

    max_simultaneous_jobs: int
    save_interval: float | timedelta
    log_interval: float | timedelta
    max_fails: int
    lease_timeout: float | timedelta | None
    poll_interval: float | timedelta | None
    kill_on_error: Sequence[str] | None
    claim_timeout: float | timedelta
    host: str | None
    interface: str | None
    runner_kwargs: Mapping[str, Any] | None
    initializers: Sequence[Initializer] | None
    save_dataframe: bool
    dataframe_format: str


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """A run, checked: its learners by group, their data files, goal and options.

    ``learners[i]`` saves into ``fnames[i]`` and runs on ``schedulers[learner_groups[i]]``.
    What makes a run *this* run (run.json's ``config_hash``) is the fnames, the learners'
    types, the dependencies and the groups, in the run's order; the goal and the options may
    change between sessions of the same run (a rerun adopts them), and learners may be
    appended (``growth.py``).
    """

    learners: tuple[Any, ...]
    fnames: tuple[str, ...]  # absolute paths
    schedulers: tuple[Scheduler, ...]
    learner_groups: tuple[int, ...]
    dependencies: Mapping[int, list[int]]
    goal: goals.Goal
    max_simultaneous_jobs: int = 100
    save_interval: timedelta = timedelta(seconds=300)
    log_interval: timedelta = timedelta(seconds=60)
    max_fails: int = 3
    lease_timeout: timedelta | None = None  # None: max(120 s, 5 log intervals)
    poll_interval: timedelta | None = None  # None: the smallest of the schedulers' defaults
    kill_on_error: tuple[str, ...] = DEFAULT_KILL_PATTERNS  # (): off
    claim_timeout: timedelta = timedelta(seconds=300)
    host: str | None = None
    interface: str | None = None
    runner_kwargs: Mapping[str, Any] = field(default_factory=dict)
    initializers: tuple[Initializer, ...] = ()
    save_dataframe: bool = False
    dataframe_format: DataFrameFormat = DataFrameFormat.PARQUET

    @classmethod
    def check(
        cls,
        groups: Sequence[Group],
        *,
        goal: object,
        dependencies: Mapping[int, Sequence[int]] | None = None,
        **options: Unpack[RunOptions],
    ) -> RunSpec:
        """The user's groups, goal and options, checked; a ConfigError names what is wrong.

        ``groups`` is a list of ``(scheduler, learners, fnames)``; learners are numbered
        group by group, in the order given.
        """
        unknown = sorted(set(options) - set(RunOptions.__annotations__))
        if unknown:
            near = difflib.get_close_matches(unknown[0], RunOptions.__annotations__, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"RunManager got an unknown option {unknown[0]!r}{hint}")
        learners, fnames, schedulers, learner_groups = _flatten(groups)
        checked_goal = goals.check_goal(goal)
        goals.check_learners_end(checked_goal, learners)
        host, interface = check_address(options.get("host"), options.get("interface"))
        save_dataframe = options.get("save_dataframe", False)
        log_interval = _duration(options, "log_interval")
        lease_timeout = options.get("lease_timeout")
        return cls(
            learners=tuple(learners),
            fnames=tuple(fnames),
            schedulers=tuple(schedulers),
            learner_groups=tuple(learner_groups),
            dependencies={int(k): [int(d) for d in v] for k, v in (dependencies or {}).items()},
            goal=checked_goal,
            max_simultaneous_jobs=positive_int(
                options.get("max_simultaneous_jobs", cls.max_simultaneous_jobs),
                "max_simultaneous_jobs",
            ),
            save_interval=_duration(options, "save_interval"),
            log_interval=log_interval,
            max_fails=positive_int(options.get("max_fails", cls.max_fails), "max_fails"),
            lease_timeout=None if lease_timeout is None else _duration(options, "lease_timeout"),
            poll_interval=(
                None
                if options.get("poll_interval") is None
                else _duration(options, "poll_interval")
            ),
            kill_on_error=check_patterns(options.get("kill_on_error", DEFAULT_KILL_PATTERNS)),
            claim_timeout=_duration(options, "claim_timeout"),
            host=host,
            interface=interface,
            runner_kwargs=check_runner_kwargs(options.get("runner_kwargs")),
            initializers=tuple(check_initializers(options.get("initializers"))),
            save_dataframe=save_dataframe,
            dataframe_format=check_dataframes(
                learners,
                fnames,
                save=save_dataframe,
                fmt=options.get("dataframe_format", DataFrameFormat.PARQUET),
            ),
        )

    # -- derived values ----------------------------------------------------------------------

    @property
    def lease(self) -> timedelta:
        """How long a silent task keeps its learner: ``lease_timeout`` or its default."""
        if self.lease_timeout is not None:
            return self.lease_timeout
        return max(timedelta(seconds=120), 5 * self.log_interval)

    @property
    def poll(self) -> timedelta:
        """Time between two looks at the queues: ``poll_interval`` or the schedulers' least."""
        if self.poll_interval is not None:
            return self.poll_interval
        return timedelta(seconds=min(s.poll_interval_s for s in self.schedulers))

    @property
    def digest(self) -> str:
        """The hash that tells whether a run directory holds this run (run.json's)."""
        return self.digest_of(len(self.learners))

    def digest_of(self, n: int) -> str:
        """The hash of the run made of the first ``n`` learners (a grown run before it grew)."""
        return config_hash(
            self.fnames[:n],
            [learner_type(x) for x in self.learners[:n]],
            {k: v for k, v in self.dependencies.items() if k < n},
            self.learner_groups[:n],
        )

    # -- to and from the run directory -------------------------------------------------------

    def to_config(self, *, name: str, created: str, digest: str) -> RunConfig:
        """run.json for this run; the url is set when the database manager listens."""
        return RunConfig(
            name=name,
            created=created,
            url="",
            config_hash=digest,
            groups=[GroupConfig(s.name, scheduler_options(s)) for s in self.schedulers],
            n_learners=len(self.learners),
            save_interval_s=self.save_interval.total_seconds(),
            log_interval_s=self.log_interval.total_seconds(),
            lease_timeout_s=self.lease.total_seconds(),
            max_fails=self.max_fails,
            max_simultaneous_jobs=self.max_simultaneous_jobs,
            poll_interval_s=self.poll.total_seconds(),
            kill_on_error=list(self.kill_on_error),
            claim_timeout_s=self.claim_timeout.total_seconds(),
            host=self.host,
            interface=self.interface,
            goal=goals.describe_goal(self.goal),
            stages=(
                [goals.describe_goal(stage) for stage in self.goal.goals]
                if isinstance(self.goal, goals.Stages)
                else None
            ),
            save_dataframe=self.save_dataframe,
            dataframe_format=self.dataframe_format,
        )

    def write_pickles(self, run_dir: RunDir) -> None:
        """The goal, runner kwargs and initializers, cloudpickled into ``run_dir`` (atomic).

        And the learners' parameters, as JSON (parameters.json, for the panel's overview).
        The learners are written by the caller (``RunDir.write_learners``): a new run's
        beside its target, a continued run's in place.
        """
        atomic_write(run_dir.goal_file, cloudpickle.dumps(self.goal))
        atomic_write(run_dir.runner_kwargs_file, cloudpickle.dumps(dict(self.runner_kwargs)))
        atomic_write(run_dir.initializers_file, cloudpickle.dumps(list(self.initializers)))
        write_parameters(run_dir, self.learners, self.fnames)

    @classmethod
    def read(
        cls,
        run_dir: RunDir,
        config: RunConfig,
        *,
        fnames: Sequence[str],
        learner_groups: Sequence[int],
        dependencies: Mapping[int, list[int]],
    ) -> RunSpec:
        """The run in ``run_dir`` as run.json and its pickles describe it.

        The learners are unpickled, so their functions' modules must be importable: a
        ConfigError says which pickle did not load and why. What ``config`` (run.json) and
        what ``state.sqlite`` holds (fnames, groups, dependencies) are the caller's to read.
        """
        initializers = run_dir.read_initializers()
        stored = StoredFunctions(run_dir)  # learners that shared a function share it again
        return cls(
            learners=_unpickled(
                "the learners", lambda: tuple(stored.learner(i) for i in range(len(fnames)))
            ),
            fnames=tuple(fnames),
            schedulers=tuple(from_config(g) for g in config.groups),
            learner_groups=tuple(learner_groups),
            dependencies=dependencies,
            goal=_unpickled("the goal", lambda: cloudpickle.loads(run_dir.goal_file.read_bytes())),
            max_simultaneous_jobs=config.max_simultaneous_jobs,
            save_interval=timedelta(seconds=config.save_interval_s),
            log_interval=timedelta(seconds=config.log_interval_s),
            max_fails=config.max_fails,
            lease_timeout=timedelta(seconds=config.lease_timeout_s),
            poll_interval=timedelta(seconds=config.poll_interval_s),
            kill_on_error=check_patterns(config.kill_on_error),
            claim_timeout=timedelta(seconds=config.claim_timeout_s),
            host=config.host,
            interface=config.interface,
            runner_kwargs=run_dir.read_runner_kwargs(),
            initializers=(
                ()
                if initializers is None
                else _unpickled(
                    "the initializers",
                    lambda: tuple(pickle.loads(initializers)),  # noqa: S301 - the run's own pickle
                )
            ),
            save_dataframe=config.save_dataframe,
            dataframe_format=DataFrameFormat(config.dataframe_format),
        )


def learner_type(learner: object) -> str:
    """A learner's type as the run's hash names it: ``adaptive.learner.learner1D.Learner1D``."""
    return f"{type(learner).__module__}.{type(learner).__qualname__}"


def _unpickled(what: str, load: Callable[[], T]) -> T:
    """``load()``, the unpickling of ``what``; any failure of it a ConfigError that says so.

    The usual cause is a module the pickled functions come from that cannot be imported in
    this Python (``adaptive-runner serve`` elsewhere than the notebook that made the run):
    one line that names it, and what works without the learners.
    """
    try:
        return load()
    except Exception as e:  # whatever the unpickling raised, said in one line
        raise ConfigError(
            f"{what} of this run cannot be loaded here: {type(e).__name__}: {e}; make the "
            "modules of their functions importable in this Python (install them or set "
            "PYTHONPATH), or watch and steer the run without them: adaptive_runner.Run(run_dir), "
            "adaptive-runner status/cancel/retry/logs"
        ) from e


def _flatten(
    groups: Sequence[Group],
) -> tuple[list[Any], list[str], list[Scheduler], list[int]]:
    """The groups' learners, absolute fnames, schedulers and each learner's group."""
    if not groups:
        raise ConfigError("groups is empty: give a list of (scheduler, learners, fnames)")
    learners: list[Any] = []
    fnames: list[str] = []
    learner_groups: list[int] = []
    for g, group in enumerate(groups):
        if not isinstance(group, tuple) or len(group) != 3:  # noqa: PLR2004 - the triple
            raise ConfigError(f"groups[{g}] must be a (scheduler, learners, fnames) tuple")
        _, group_learners, group_fnames = group
        if len(group_learners) != len(group_fnames):
            raise ConfigError(
                f"groups[{g}] has {len(group_learners)} learners but {len(group_fnames)} "
                "fnames: give one fname per learner"
            )
        learners.extend(group_learners)
        fnames.extend(str(Path(f).absolute()) for f in group_fnames)
        learner_groups.extend([g] * len(group_learners))
    if not learners:
        raise ConfigError("learners is empty: give at least one learner and its fname")
    seen: dict[str, int] = {}
    for i, fname in enumerate(fnames):
        plain_text(fname, f"fnames[{i}]")
        if fname in seen:
            raise ConfigError(
                f"fnames[{i}] and fnames[{seen[fname]}] are the same file {fname!r}: "
                "each learner needs its own file"
            )
        seen[fname] = i
    return learners, fnames, [group[0] for group in groups], learner_groups


def _duration(options: RunOptions, name: str) -> timedelta:
    """Option ``name`` (seconds or a timedelta, else its RunSpec default) as a timedelta."""
    given = options.get(name, getattr(RunSpec, name))
    return timedelta(seconds=positive_seconds(given, name))


def check_runner_kwargs(runner_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the user's extra Runner arguments against adaptive's ``BlockingRunner``.

    Raises
    ------
    ConfigError
        Naming the key that the worker sets itself, that adaptive's runners do not take, or
        whose value cannot be pickled.

    """
    if runner_kwargs is None:
        return {}
    if not isinstance(runner_kwargs, Mapping):
        raise ConfigError(
            f"runner_kwargs={runner_kwargs!r} must be a dict of adaptive Runner arguments, "
            "e.g. {'retries': 3}"
        )
    import adaptive  # noqa: PLC0415 - its import costs a second; only when checking these

    # The sequential executor runs BlockingRunner, the pools Runner: both take these.
    accepted = set(inspect.signature(adaptive.BlockingRunner).parameters) - set(OWNED_RUNNER_KWARGS)
    for key, value in runner_kwargs.items():
        if key in OWNED_RUNNER_KWARGS:
            raise ConfigError(
                f"runner_kwargs[{key!r}] is set by adaptive_runner itself: "
                f"{OWNED_RUNNER_KWARGS[key]}"
            )
        if key not in accepted:
            raise ConfigError(
                f"runner_kwargs[{key!r}]: adaptive's runners take no such argument; "
                f"give one of {', '.join(sorted(accepted))}"
            )
        _check_pickles(value, f"runner_kwargs[{key!r}]")
    return dict(runner_kwargs)


def check_initializers(initializers: Sequence[Initializer] | None) -> list[Initializer]:
    """Check that each initializer is a callable that can be pickled.

    Raises
    ------
    ConfigError
        Naming the first initializer (index and name) that is not callable or cannot be
        pickled.

    """
    if initializers is None:
        return []
    given: object = initializers  # a user may give anything
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise ConfigError(
            f"initializers={initializers!r} must be a list of callables that take no "
            "arguments, e.g. initializers=[set_up]"
        )
    for index, initializer in enumerate(initializers):
        what = f"initializers[{index}] ({callable_name(initializer)})"
        if not callable(initializer):
            raise ConfigError(f"{what} is not callable: give functions that take no arguments")
        _check_pickles(initializer, what)
    return list(initializers)


def _check_pickles(value: object, what: str) -> None:
    try:
        cloudpickle.dumps(value)
    except Exception as e:  # any pickling failure becomes one clear error
        raise ConfigError(
            f"{what} cannot be pickled ({type(e).__name__}: {e}); every job gets a copy, "
            "so define it at module level or make what it captures picklable"
        ) from e


def check_dataframes(
    learners: Sequence[Any], fnames: Sequence[str], *, save: bool, fmt: str
) -> DataFrameFormat:
    """``fmt`` as a format, once ``save_dataframe`` is known to work here; else a ConfigError.

    The format's name is always checked; pyarrow, the learners and the file names only when
    ``save`` (an option that is off needs nothing installed).

    Parameters
    ----------
    learners
        The run's learners: each needs a ``to_dataframe`` method.
    fnames
        Their data files (absolute): none may be another learner's DataFrame file.
    save
        ``save_dataframe``.
    fmt
        ``dataframe_format``.

    """
    try:
        chosen = DataFrameFormat(fmt)
    except ValueError:
        known = ", ".join(repr(f.value) for f in DataFrameFormat)
        raise ConfigError(f"dataframe_format={fmt!r} is unknown: use one of {known}") from None
    if not save:
        return chosen
    if chosen is DataFrameFormat.PARQUET and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            "dataframe_format='parquet' needs pyarrow, which is not installed: install it "
            "(pip install pyarrow) or pass dataframe_format='pickle'"
        )
    for index, learner in enumerate(learners):
        if not callable(getattr(learner, "to_dataframe", None)):
            raise ConfigError(
                f"learners[{index}] ({type(learner).__qualname__}) has no to_dataframe(), "
                "which save_dataframe=True calls at each save: give it one, or pass "
                "save_dataframe=False"
            )
    data_files = {fname: index for index, fname in enumerate(fnames)}
    for index, fname in enumerate(fnames):
        other = data_files.get(str(dataframe_path(fname, chosen)))
        if other is not None:
            raise ConfigError(
                f"fnames[{other}] {fnames[other]!r} is where the DataFrame of learner {index} "
                "goes (its fname with '.dataframe.<format>' appended): rename that data file"
            )
    return chosen
