"""What a RunManager writes into its run directory: pickles, goal, keys, state.sqlite, run.json.

The pickles are the learners (their big functions stored once apart, in functions/: see
``common.function_store``), the goal, the runner kwargs and the initializers
(``RunSpec.write_pickles``).

A new run is staged beside its target and renamed into place (:func:`create_run`); a run
continued with new code gets new pickles, goal and run.json (:func:`rewrite_run`), and its
learners appended; a running one gets learners added (:func:`add_to_run`). The manager
decides which (``RunManager.start``, ``RunManager.add``) and holds the lock meanwhile.

A run grows in this order: the new learners' pickles, their rows in state.sqlite (one
transaction, after which tasks may claim them), run.json. A crash leaves the run as it was
(pickles nothing names yet) or grown (run.json's count and hash are written by the next
rerun: ``growth.in_run_order`` reads the state first).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.auth import create_keys
from adaptive_runner.common.function_store import LearnerPickles
from adaptive_runner.common.run_dir import GroupConfig, RunConfig, RunDir, config_changes
from adaptive_runner.errors import ConfigError
from adaptive_runner.schedulers import from_config, scheduler_options
from adaptive_runner.state.database import Database
from adaptive_runner.status.parameters import write_parameters

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from adaptive_runner.manager.spec import RunSpec


def create_run(run_dir: RunDir, spec: RunSpec, *, replace: bool) -> None:
    """Write a new run directory for ``spec`` (staged beside its target, then renamed)."""
    blobs, functions = pickle_learners(spec.learners)
    created = datetime.now(UTC).isoformat(timespec="seconds")

    def populate(staging: RunDir) -> None:
        staging.write_functions(functions)
        staging.write_learners(blobs)
        spec.write_pickles(staging)
        create_keys(staging.keys_dir)
        Database.create(
            staging.database,
            spec.fnames,
            dependencies=spec.dependencies,
            max_fails=spec.max_fails,
            groups=spec.learner_groups,
        ).close()
        name = run_dir.path.name
        staging.write_config(spec.to_config(name=name, created=created, digest=spec.digest))

    run_dir.create(populate, replace=replace)


def rewrite_run(
    run_dir: RunDir,
    spec: RunSpec,
    existing: RunConfig,
    *,
    first: int,
    may_prune: Callable[[], bool],
) -> dict[str, list[Any]]:
    """Give an existing run ``spec``'s pickles, goal and settings; return what changed.

    What changed is run.json's fields; new runner kwargs or initializers are written too.
    ``spec`` is in the run's order (``growth.in_run_order``); its learners from ``first``
    (the run's number of learners) on are new, and join the run.

    Every pack is rewritten with the new pickles, done learners' too: those never run
    again, and one rewrite per pack is simpler and cheaper than splicing old entries in;
    ``load_learners`` then gives every learner the current code. The new functions are
    written before the packs that name them; the function files no pack names any more are
    removed when ``may_prune()`` says so (asked only then): a task still running from before
    reads the files of the learner it holds (its pool processes, a new one among them).
    """
    blobs, functions = pickle_learners(spec.learners)
    run_dir.write_functions(functions)
    run_dir.write_learners(blobs)
    unused = run_dir.function_digests() - functions.keys()
    if unused and may_prune():
        run_dir.remove_functions(unused)
    spec.write_pickles(run_dir)
    _insert(run_dir, spec, first)
    config = spec.to_config(name=existing.name, created=existing.created, digest=spec.digest)
    changed = config_changes(in_current_names(existing), config)
    run_dir.write_config(config)
    return changed


def add_to_run(run_dir: RunDir, spec: RunSpec, *, first: int) -> None:
    """Give the run in ``run_dir`` the learners of ``spec`` from index ``first`` on.

    ``spec`` is the run's (in its order) with them appended; the run may be running. Only
    their pickles (their packs, their functions) are written, then their rows, then run.json's
    count and hash, and every learner's parameters (for the overview of the sweep).
    """
    blobs, functions = pickle_learners(spec.learners[first:], first=first)
    run_dir.write_functions(functions)
    run_dir.write_learners(blobs, first=first)
    _insert(run_dir, spec, first)
    config = run_dir.read_config()
    run_dir.write_config(
        dataclasses.replace(config, n_learners=len(spec.fnames), config_hash=spec.digest)
    )
    write_parameters(run_dir, spec.learners, spec.fnames)


def _insert(run_dir: RunDir, spec: RunSpec, first: int) -> None:
    """The rows of ``spec``'s learners from ``first`` on, into state.sqlite (one transaction)."""
    new = range(first, len(spec.fnames))
    if not new:
        return
    with Database.open(run_dir.database) as db:
        db.add_learners(
            [spec.fnames[i] for i in new],
            first=first,
            groups=[spec.learner_groups[i] for i in new],
            dependencies={i: spec.dependencies[i] for i in new if i in spec.dependencies},
            now=time.time(),
        )


def in_current_names(config: RunConfig) -> RunConfig:
    """``config`` with its groups' options as this version writes them (``partition`` -> ``queue``).

    So a run.json of an earlier release, rewritten by a rerun, shows no change where the
    options only changed names. A group this version cannot make is left as written.
    """
    groups = []
    for group in config.groups:
        try:
            scheduler = from_config(group)
        except (ConfigError, KeyError, TypeError):  # an unknown scheduler or option
            groups.append(group)
        else:
            groups.append(GroupConfig(group.scheduler, scheduler_options(scheduler)))
    return dataclasses.replace(config, groups=groups)


def pickle_learners(
    learners: Sequence[Any], *, first: int = 0
) -> tuple[list[bytes], dict[str, bytes]]:
    """Each learner cloudpickled, and the big functions they name, ``{sha256: pickle}``.

    One that cannot be pickled is a ConfigError naming it by its index (``learners[0]`` is
    learner ``first``).
    """
    pickles = LearnerPickles()
    blobs = []
    for index, learner in enumerate(learners, start=first):
        try:
            blobs.append(pickles.dumps(learner))
        except Exception as e:  # any pickling failure becomes one clear error
            raise ConfigError(
                f"learner {index} cannot be pickled ({type(e).__name__}: {e}); define its "
                "function at module level or make what it captures picklable"
            ) from e
    return blobs, pickles.functions
