"""What a RunManager writes into its run directory: pickles, goal, keys, state.sqlite, run.json.

The pickles are the learners, the goal, the runner kwargs and the initializers
(``task_setup.store``).

A new run is staged beside its target and renamed into place (:func:`create_run`); a run
continued with new code gets new pickles, goal and run.json (:func:`rewrite_run`). The
manager decides which (``RunManager.start``) and holds the lock meanwhile.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cloudpickle

from adaptive_runner import goals
from adaptive_runner.auth import create_keys
from adaptive_runner.database import Database
from adaptive_runner.errors import ConfigError
from adaptive_runner.files import atomic_write
from adaptive_runner.run_dir import GroupConfig, RunConfig, RunDir, config_changes, config_hash
from adaptive_runner.schedulers import scheduler_class, scheduler_options
from adaptive_runner.task_setup import store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adaptive_runner.run_manager import RunManager


def run_digest(manager: RunManager) -> str:
    """The hash that tells whether a run directory holds this manager's run (run.json's)."""
    learner_types = [f"{type(x).__module__}.{type(x).__qualname__}" for x in manager.learners]
    return config_hash(manager.fnames, learner_types, manager.dependencies, manager.learner_groups)


def run_config(manager: RunManager, digest: str, *, name: str, created: str) -> RunConfig:
    """run.json for ``manager``'s settings; the url is set when the database manager listens."""
    return RunConfig(
        name=name,
        created=created,
        url="",  # set when the database manager listens
        config_hash=digest,
        groups=[GroupConfig(s.name, scheduler_options(s)) for s in manager.schedulers],
        n_learners=len(manager.learners),
        save_interval_s=manager.save_interval_s,
        log_interval_s=manager.log_interval_s,
        lease_timeout_s=manager.lease_timeout_s,
        max_fails=manager.max_fails,
        max_simultaneous_jobs=manager.max_simultaneous_jobs,
        poll_interval_s=manager.poll_interval_s,
        kill_on_error=list(manager.kill_on_error),
        claim_timeout_s=manager.claim_timeout_s,
        host=manager.host,
        interface=manager.interface,
        goal=goals.describe_goal(manager.goal),
        save_dataframe=manager.save_dataframe,
        dataframe_format=manager.dataframe_format,
    )


def create_run(manager: RunManager, digest: str, *, replace: bool) -> None:
    """Write a new run directory (staged beside its target, then renamed into place)."""
    blobs = pickle_learners(manager.learners)
    goal_blob = cloudpickle.dumps(manager.goal)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    run_dir = manager.run_dir

    def populate(staging: RunDir) -> None:
        staging.write_learners(blobs)
        atomic_write(staging.goal_file, goal_blob)
        store(staging, manager.runner_kwargs, manager.initializers)
        create_keys(staging.keys_dir)
        Database.create(
            staging.database,
            manager.fnames,
            dependencies=manager.dependencies,
            max_fails=manager.max_fails,
            groups=manager.learner_groups,
        ).close()
        name = run_dir.path.name
        staging.write_config(run_config(manager, digest, name=name, created=created))

    run_dir.create(populate, replace=replace)


def rewrite_run(manager: RunManager, existing: RunConfig) -> dict[str, list[Any]]:
    """Give an existing run ``manager``'s pickles, goal and settings; return what changed.

    What changed is run.json's fields; new runner kwargs or initializers are written too.

    Every pack is rewritten with the new pickles, done learners' too: those never run
    again, and one rewrite per pack is simpler and cheaper than splicing old entries in;
    ``load_learners`` then gives every learner the current code.
    """
    run_dir = manager.run_dir
    run_dir.write_learners(pickle_learners(manager.learners))
    atomic_write(run_dir.goal_file, cloudpickle.dumps(manager.goal))
    store(run_dir, manager.runner_kwargs, manager.initializers)
    config = run_config(manager, existing.config_hash, name=existing.name, created=existing.created)
    changed = config_changes(in_current_names(existing), config)
    run_dir.write_config(config)
    return changed


def in_current_names(config: RunConfig) -> RunConfig:
    """``config`` with its groups' options as this version writes them (``partition`` -> ``queue``).

    So a run.json of an earlier release, rewritten by a rerun, shows no change where the
    options only changed names. A group this version cannot make is left as written.
    """
    groups = []
    for group in config.groups:
        try:
            scheduler = scheduler_class(group.scheduler)(**group.options)
        except (ConfigError, KeyError, TypeError):  # an unknown scheduler or option
            groups.append(group)
        else:
            groups.append(GroupConfig(group.scheduler, scheduler_options(scheduler)))
    return dataclasses.replace(config, groups=groups)


def pickle_learners(learners: Sequence[Any]) -> list[bytes]:
    """Each learner cloudpickled; one that cannot be is a ConfigError naming it."""
    blobs = []
    for index, learner in enumerate(learners):
        try:
            blobs.append(cloudpickle.dumps(learner))
        except Exception as e:  # any pickling failure becomes one clear error
            raise ConfigError(
                f"learner {index} cannot be pickled ({type(e).__name__}: {e}); define its "
                "function at module level or make what it captures picklable"
            ) from e
    return blobs
