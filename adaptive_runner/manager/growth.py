"""Growing a run: learners appended to an existing run, and the order its learners keep.

A run's learners are numbered once, when they join it: those it was made with in the order
given (group by group), those added later after them. The same cell run again with learners
appended (:func:`in_run_order`) or ``RunManager.add`` (:func:`added`) give new learners the
next indices; no learner of the run is ever renumbered, so the learner packs, state.sqlite,
the dependencies, the panel and the DataFrames keep meaning the same learner by an index.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_runner.common import goals
from adaptive_runner.common.validation import plain_text
from adaptive_runner.errors import ConfigError
from adaptive_runner.manager.spec import RunSpec, check_dataframes, learner_type
from adaptive_runner.state.schema import validate_added_dependencies, validate_dependencies

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

    from adaptive_runner.common.run_dir import RunConfig


def in_run_order(
    spec: RunSpec,
    config: RunConfig,
    *,
    run_dir: Path,
    fnames: Sequence[str],
    groups: Sequence[int],
    dependencies: Mapping[int, Sequence[int]],
) -> RunSpec:
    """``spec`` numbered as the run in ``run_dir`` numbers it: its learners, then new ones.

    The run's learners (``fnames``, ``groups``, ``dependencies``: what its state.sqlite
    holds, by index; ``config``: its run.json) come first, each by its index, matched by
    fname; the learners of ``spec`` the run lacks follow in ``spec``'s order. With several
    groups, learners appended to an early group thus come after the later groups' learners.

    Raises
    ------
    ConfigError
        When ``spec`` is no continuation of the run, naming what differs: a learner of the
        run missing, in another group, waiting on other learners, or of another type.

    """
    validate_dependencies(spec.dependencies, len(spec.fnames))  # as given, before renumbering
    where = {fname: i for i, fname in enumerate(spec.fnames)}
    order: list[int] = []
    for index, (fname, group) in enumerate(zip(fnames, groups, strict=True)):
        mine = where.get(fname)
        if mine is None:
            missing = sum(f not in where for f in fnames)
            also = f" (nor {missing - 1} more of the run's {len(fnames)})" if missing > 1 else ""
            added = (
                "; learners added to the run (rm.add, or a cell that had more) must stay in the "
                "cell: append them"
                if fnames[: len(spec.fnames)] == list(spec.fnames[: len(fnames)])
                else ""
            )
            raise _different(
                run_dir, f"learner {index}'s fname {fname!r} is not among these{also}{added}"
            )
        if spec.learner_groups[mine] != group:
            raise _different(
                run_dir,
                f"learner {index} ({fname!r}) is in group {group} of the run, in group "
                f"{spec.learner_groups[mine]} here",
            )
        order.append(mine)
    taken = set(order)
    order += [i for i in range(len(spec.fnames)) if i not in taken]
    renumbered = {mine: index for index, mine in enumerate(order)}
    ordered = dataclasses.replace(
        spec,
        learners=tuple(spec.learners[i] for i in order),
        fnames=tuple(spec.fnames[i] for i in order),
        learner_groups=tuple(spec.learner_groups[i] for i in order),
        dependencies={
            renumbered[k]: [renumbered[d] for d in v] for k, v in spec.dependencies.items()
        },
    )
    for index in range(len(fnames)):
        given = sorted(set(ordered.dependencies.get(index, ())))
        if given != sorted(dependencies.get(index, ())):
            raise _different(
                run_dir,
                f"learner {index} waits on learners {sorted(dependencies.get(index, ()))} in "
                f"the run, on {given} here",
            )
    # run.json describes the run up to its last grow it recorded; a grow cut short after the
    # state.sqlite commit left more learners there, which the rewrite now records.
    if ordered.digest_of(min(config.n_learners, len(fnames))) != config.config_hash:
        raise _different(run_dir, "the types of learners of the run differ")
    return ordered


def _different(run_dir: Path, what: str) -> ConfigError:
    return ConfigError(
        f"{run_dir} holds a different run (its learners or fnames differ: {what}): use a new "
        "run_dir, pass overwrite=True to replace it, or RunManager.resume(run_dir) to "
        "continue it as it is; learners appended after the old ones (in their order) grow it"
    )


def added(
    spec: RunSpec,
    learners: Sequence[Any],
    fnames: Sequence[str | os.PathLike[str]],
    *,
    group: int | None,
    dependencies: Mapping[int, Sequence[int]] | None,
) -> RunSpec:
    """``spec`` with ``learners`` (saving into ``fnames``) appended to ``group``, checked.

    They get the indices ``len(spec.fnames)`` onward; ``dependencies`` names learners by
    those indices (new and old). ``group`` None: the one group with learners of their type.
    A ConfigError names the argument that is wrong and what to do.
    """
    if len(learners) != len(fnames):
        raise ConfigError(
            f"add: learners and fnames must have the same length, got {len(learners)} "
            f"learners and {len(fnames)} fnames"
        )
    if not learners:
        raise ConfigError("add: learners is empty: give at least one learner and its fname")
    chosen = group_for(spec, learners, group)
    n = len(spec.fnames)
    new = [str(Path(f).absolute()) for f in fnames]
    known = {fname: i for i, fname in enumerate(spec.fnames)}
    for j, fname in enumerate(new):
        plain_text(fname, f"fnames[{j}]")
        if fname in known:
            owner = known[fname]
            raise ConfigError(
                f"add: fnames[{j}] {fname!r} is the data file of "
                + (f"learner {owner} already" if owner < n else f"fnames[{owner - n}] too")
                + ": give every new learner a file of its own"
            )
        known[fname] = n + j
    graph = validate_added_dependencies(dependencies or {}, n, len(learners))
    goals.check_learners_end(spec.goal, learners)
    every = (*spec.learners, *learners)
    check_dataframes(
        every, [*spec.fnames, *new], save=spec.save_dataframe, fmt=spec.dataframe_format
    )
    return dataclasses.replace(
        spec,
        learners=every,
        fnames=(*spec.fnames, *new),
        learner_groups=(*spec.learner_groups, *[chosen] * len(new)),
        dependencies={**spec.dependencies, **{k: sorted(v) for k, v in graph.items()}},
    )


def group_for(spec: RunSpec, learners: Sequence[Any], group: int | None) -> int:
    """The group ``learners`` join: ``group``, or the one whose learners are of their type.

    A group's learners are what says which resources a type of learner needs, so new
    learners join a group that has learners of their type. A type the run does not have
    yet joins through the cell that makes the run (appended to a group of its choice).
    """
    kinds: list[set[str]] = [set() for _ in spec.schedulers]
    for learner, g in zip(spec.learners, spec.learner_groups, strict=True):
        kinds[g].add(learner_type(learner))
    given = {learner_type(x): type(x).__qualname__ for x in learners}
    new_kind = (
        "; learners of a type the run does not have yet join by the cell that makes the run: "
        "append them to the group they belong to and run it again"
    )
    if group is not None:
        if type(group) is not int or not 0 <= group < len(kinds):
            raise ConfigError(
                f"add: group={group!r} is no group of the run: give one of 0..{len(kinds) - 1}"
            )
        foreign = sorted(name for kind, name in given.items() if kind not in kinds[group])
        if foreign:
            raise ConfigError(
                f"add: group={group} has learners of type {_names(kinds[group])}, these are "
                f"{', '.join(foreign)}: give the group of their type ({_by_group(kinds)})"
                + new_kind
            )
        return group
    homes: dict[int, str] = {}
    for kind, name in given.items():
        holding = [g for g, held in enumerate(kinds) if kind in held]
        if not holding:
            raise ConfigError(
                f"add: no group of the run has learners of type {name} ({_by_group(kinds)})"
                + new_kind
            )
        if len(holding) > 1:
            raise ConfigError(
                f"add: groups {', '.join(map(str, holding))} all have learners of type {name}: "
                "say which these join with group=..."
            )
        homes[holding[0]] = name
    if len(homes) > 1:
        raise ConfigError(
            "add: these learners belong to different groups ("
            + "; ".join(f"{name}: group {g}" for g, name in sorted(homes.items()))
            + "): add them in one call per group"
        )
    return next(iter(homes))


def _names(kinds: set[str]) -> str:
    """``{"adaptive.learner.learner1D.Learner1D"}`` as ``Learner1D``."""
    return " and ".join(sorted(kind.rsplit(".", 1)[-1] for kind in kinds)) or "none"


def _by_group(kinds: Sequence[set[str]]) -> str:
    """``group 0: Learner1D; group 1: Learner2D``."""
    return "; ".join(f"group {g}: {_names(held)}" for g, held in enumerate(kinds))
