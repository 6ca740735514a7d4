"""The run directory: where a run keeps its configuration, state, learners, logs and keys.

Layout::

    run.json                 RunConfig (JSON): scheduler, database manager url, config hash, ...
    state.sqlite             learners, jobs and events (database.py)
    goal.pickle              the goal, cloudpickled by the run manager
    runner_kwargs.pickle     more arguments of adaptive's Runner (task_setup.py), cloudpickled
    initializers.pickle      callables each job and pool process runs first, cloudpickled
    parameters.json          each learner's parameters, for the panel's overview of a sweep
    learners/pack-<k>.bin    the learners, each cloudpickled once, 1024 to a pack file
    functions/<sha256>.pickle  each big learner function once, however many learners share it
                             (function_store.py); the learners' pickles name it
    logs/<task_id>.log       one per task: the worker's JSON lines and the task's stdout/stderr
    jobs/                    rendered job scripts (and the local scheduler's pid files)
    keys/                    ZMQ CURVE certificates (mode 0700, secrets 0600)
    manager.log              the managers' JSON log lines
    manager.lock             flocked while a RunManager manages the run (one at a time)

A run directory is built beside its target and renamed into place (:meth:`RunDir.create`),
so a failure leaves no half-written run.

The directory is made with mode 0700 (mkdtemp): the pickles in it are read back only by the
owner's processes, never taken from the network.

Only stdlib is imported here: the worker reads this module at start-up.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import pickle
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.files import atomic_write, fsync_dir
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

CONFIG_VERSION = 1
PACK_SIZE = 1024  # learners per pack file in learners/
PACK_MAGIC = b"ARLPACK1"
FUNCTION_SUFFIX = ".pickle"  # functions/<sha256 of the function's pickle>.pickle


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """One resource group: its scheduler's registry key and constructor arguments."""

    scheduler: str  # registry key: "local", "slurm", "pbs"
    options: dict[str, Any]  # JSON values; executor and cores among them

    @property
    def executor(self) -> str:
        """How the group's tasks evaluate points."""
        return str(self.options.get("executor", "sequential"))

    @property
    def cores(self) -> int:
        """Cores per task of this group."""
        return int(self.options.get("cores", 1))


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What run.json holds: everything a worker or a restarted manager needs to know."""

    name: str
    created: str  # ISO 8601, UTC
    url: str  # where the database manager listens, e.g. "tcp://node1:5555"
    config_hash: str
    groups: list[GroupConfig]  # resource groups; learners of group g run on groups[g]
    n_learners: int
    save_interval_s: float
    log_interval_s: float
    lease_timeout_s: float
    max_fails: int
    max_simultaneous_jobs: int = 100
    poll_interval_s: float = 10.0
    kill_on_error: list[str] | None = None  # patterns of error_watch.py; None: off
    claim_timeout_s: float = 300.0  # a task running this long without a claim failed to start
    final_save_patience_s: float = 300.0  # a final save that may pass: tried this long
    host: str | None = None  # the url's host as the user gave it (host=); None: the default
    interface: str | None = None  # or the network interface whose address the url uses
    goal: str | None = None  # the goal in words (goals.describe_goal), for people and diffs
    stages: list[str] | None = None  # a staged goal's stages in words; None: one stage
    save_dataframe: bool = False  # each save also writes the learner's DataFrame (dataframes.py)
    dataframe_format: str = "parquet"  # a vocabulary.DataFrameFormat
    version: int = CONFIG_VERSION


def config_hash(
    fnames: Sequence[str],
    learner_types: Sequence[str],
    dependencies: Mapping[int, Sequence[int]],
    learner_groups: Sequence[int],
) -> str:
    """Fingerprint of what makes a run *this* run: files, learner kinds, dependencies, groups.

    Goal, intervals and scheduler options may change between sessions of the same run, so
    they are left out; pickled bytes are left out because they differ between sessions.
    """
    payload = {
        "fnames": list(fnames),
        "learners": list(learner_types),
        "dependencies": {str(k): sorted(v) for k, v in sorted(dependencies.items())},
        "groups": list(learner_groups),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def config_changes(old: RunConfig, new: RunConfig) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the run.json fields a rerun changed (not url or dates)."""
    before, after = dataclasses.asdict(old), dataclasses.asdict(new)
    return {
        key: [before[key], after[key]]
        for key in after
        if key not in {"url", "created", "name"} and before[key] != after[key]
    }


class RunDir:
    """Paths inside one run directory, and reading/writing its run.json."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_file(self) -> Path:
        """run.json."""
        return self.path / "run.json"

    @property
    def database(self) -> Path:
        """state.sqlite."""
        return self.path / "state.sqlite"

    @property
    def goal_file(self) -> Path:
        """goal.pickle."""
        return self.path / "goal.pickle"

    @property
    def runner_kwargs_file(self) -> Path:
        """runner_kwargs.pickle."""
        return self.path / "runner_kwargs.pickle"

    @property
    def initializers_file(self) -> Path:
        """initializers.pickle."""
        return self.path / "initializers.pickle"

    @property
    def parameters_file(self) -> Path:
        """parameters.json: each learner's parameters, for the overview (status/parameters.py)."""
        return self.path / "parameters.json"

    @property
    def learners_dir(self) -> Path:
        """learners/."""
        return self.path / "learners"

    @property
    def functions_dir(self) -> Path:
        """functions/."""
        return self.path / "functions"

    @property
    def logs_dir(self) -> Path:
        """logs/."""
        return self.path / "logs"

    @property
    def jobs_dir(self) -> Path:
        """jobs/."""
        return self.path / "jobs"

    @property
    def keys_dir(self) -> Path:
        """keys/."""
        return self.path / "keys"

    def write_learners(self, blobs: Sequence[bytes], *, first: int = 0) -> None:
        """Store the pickled learners, ``PACK_SIZE`` to a pack file (atomic, fsynced).

        Packs instead of one file per learner keep a 100,000-learner run from creating
        100,000 files on a cluster's shared file system. ``first``: the index of ``blobs[0]``
        (a grown run's new learners); the learners before it in its pack are kept, those
        after it are replaced.
        """
        self.learners_dir.mkdir(parents=True, exist_ok=True)
        start = first - first % PACK_SIZE
        if start < first:  # the pack that holds the first new learner: its earlier ones stay
            kept = self._pack_blobs(start // PACK_SIZE)[: first - start]
            if len(kept) < first - start:
                raise ConfigError(
                    f"learner {first} cannot be stored: {self._pack(start // PACK_SIZE)} "
                    f"holds learners {start}..{start + len(kept) - 1} only"
                )
            blobs = [*kept, *blobs]
        for offset in range(0, len(blobs), PACK_SIZE):
            chunk = blobs[offset : offset + PACK_SIZE]
            offsets = [0]
            for blob in chunk:
                offsets.append(offsets[-1] + len(blob))
            header = PACK_MAGIC + struct.pack(f"<I{len(offsets)}Q", len(chunk), *offsets)
            atomic_write(self._pack((start + offset) // PACK_SIZE), header + b"".join(chunk))

    def _pack_blobs(self, number: int) -> list[bytes]:
        """The pickled learners in pack ``number``, in order."""
        data = self._pack(number).read_bytes()
        head = len(PACK_MAGIC) + 4
        if data[: len(PACK_MAGIC)] != PACK_MAGIC:
            raise ConfigError(f"{self._pack(number)} is not a learner pack")
        (count,) = struct.unpack("<I", data[len(PACK_MAGIC) : head])
        offsets = struct.unpack(f"<{count + 1}Q", data[head : head + 8 * (count + 1)])
        body = head + 8 * (count + 1)
        return [data[body + a : body + b] for a, b in itertools.pairwise(offsets)]

    def read_learner(self, index: int) -> bytes:
        """The pickled bytes of learner ``index``: three small reads, whatever the run's size."""
        pack, slot = divmod(index, PACK_SIZE)
        path = self._pack(pack)
        with path.open("rb") as f:
            head = f.read(len(PACK_MAGIC) + 4)
            if head[: len(PACK_MAGIC)] != PACK_MAGIC:
                raise ConfigError(f"{path} is not a learner pack")
            (count,) = struct.unpack("<I", head[len(PACK_MAGIC) :])
            if not 0 <= slot < count:
                raise ConfigError(f"learner {index} is not in {path} (it holds {count})")
            f.seek(len(head) + 8 * slot)
            start, end = struct.unpack("<2Q", f.read(16))
            f.seek(len(head) + 8 * (count + 1) + start)
            return f.read(end - start)

    def write_functions(self, functions: Mapping[str, bytes]) -> None:
        """Store the learners' functions, ``{sha256: pickle}`` (atomic; a file there is kept).

        A function's file is named by its pickle's digest, so a file of that name holds it
        already.
        """
        for digest, blob in functions.items():
            path = self.function_file(digest)
            if not path.exists():
                atomic_write(path, blob)

    def function_file(self, digest: str) -> Path:
        """The file of the stored function whose pickle has the sha256 ``digest``."""
        return self.functions_dir / f"{digest}{FUNCTION_SUFFIX}"

    def function_digests(self) -> set[str]:
        """The digests of the stored functions (none in a run made before functions/)."""
        return {
            path.name.removesuffix(FUNCTION_SUFFIX)
            for path in self.functions_dir.glob(f"*{FUNCTION_SUFFIX}")
        }

    def remove_functions(self, digests: Collection[str]) -> None:
        """Remove the files of the stored functions ``digests``."""
        for digest in digests:
            self.function_file(digest).unlink(missing_ok=True)

    def read_runner_kwargs(self) -> dict[str, Any]:
        """The extra Runner arguments of runner_kwargs.pickle ({} in a run made before it)."""
        pickled = _read_optional(self.runner_kwargs_file)
        return {} if pickled is None else pickle.loads(pickled)  # noqa: S301 - the run's own

    def read_initializers(self) -> bytes | None:
        """initializers.pickle's bytes (None in a run made before it), unpickled by the caller."""
        return _read_optional(self.initializers_file)

    def _pack(self, number: int) -> Path:
        return self.learners_dir / f"pack-{number:05d}.bin"

    def task_log(self, task_id: str) -> Path:
        """The worker's structlog JSON lines of one array task."""
        return self.logs_dir / f"{task_id}.log"

    def create(self, populate: Callable[[RunDir], object], *, replace: bool) -> None:
        """Build a whole run directory beside this one with ``populate``, then rename it here.

        Nothing is half-written: a failure leaves no run directory (or the old one, when
        ``replace``). The new directory has mode 0700 (mkdtemp).

        Parameters
        ----------
        populate
            Writes the run's files into the staging directory it is given.
        replace
            Whether an existing run directory here is replaced (removed after the rename).

        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.new-"))
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {self.path}: {e}") from e
        try:
            staging = RunDir(tmp)
            for sub in (staging.learners_dir, staging.logs_dir, staging.jobs_dir):
                sub.mkdir()
            populate(staging)
            if replace:
                old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
                self.path.rename(old)
                tmp.rename(self.path)
                shutil.rmtree(old)
            else:
                tmp.rename(self.path)
            fsync_dir(self.path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def exists(self) -> bool:
        """Whether this directory already holds a run (its run.json exists)."""
        return self.config_file.is_file()

    def read_config(self) -> RunConfig:
        """Read run.json; a missing or malformed file is a ConfigError naming the path."""
        try:
            raw = json.loads(self.config_file.read_text())
            raw["groups"] = [GroupConfig(**group) for group in raw["groups"]]
            return RunConfig(**raw)
        except FileNotFoundError:
            raise ConfigError(f"{self.path} is not a run directory (no run.json)") from None
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ConfigError(f"{self.config_file} is malformed: {e}") from e

    def write_config(self, config: RunConfig) -> None:
        """Write run.json atomically."""
        text = json.dumps(dataclasses.asdict(config), indent=2) + "\n"
        atomic_write(self.config_file, text.encode())


class RunLock:
    """``manager.lock`` of a run directory: held by the one process that manages the run.

    Two managers on one run would hand the same learner to two jobs. The lock (flock) is
    released by :meth:`release`, or by the kernel when the process dies.
    """

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (no-op if held already); ConfigError if another process holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.run_dir.path / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.run_dir.path} is managed already (by another RunManager or "
                "`adaptive-runner serve`): stop that one first, or only watch the run with "
                "adaptive_runner.Run(run_dir)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (no-op if not held)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # a run directory made before these files existed
        return None
