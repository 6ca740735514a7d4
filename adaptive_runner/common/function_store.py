"""Big learner functions, stored once in the run directory and referred to by name.

A learner's function that closes over a big array (50 MB of data, a model) would otherwise be
copied into every learner's pickle, and a pool executor would send it with every point.

**Writing** (the run manager, :class:`LearnerPickles`): each learner is cloudpickled with a
reference in place of each of its functions whose own pickle is at least
``MIN_STORED_BYTES``; the function's pickle goes once into ``functions/<sha256>.pickle``,
whatever number of learners share it. A function is one of the callables a learner holds
(and the learners it wraps: BalancingLearner, DataSaver); adaptive's learners pickle theirs
themselves into a byte string (``__getstate__``), so such a byte string, when it is the pickle
of one of these callables, is stored the same way. adaptive's default learner state (LearnerND:
a pickle of its whole ``__dict__``) is pickled as its dict, so its function is found too.

**Reading** (the worker, ``Run``, :class:`StoredFunctions`): a learner's pickle is unpickled
with the references resolved: each function file is read once per :class:`StoredFunctions`,
and every learner it loads that names the file gets the same function object.

**Pool processes** (the worker's executors, :class:`StoredCall`): the learner's function is
sent to a pool as a small pickle that names the stored functions, and each pool process reads
them from the run directory once (:func:`stored_call`), not with every point.

Pickles are read only from the run directory (mode 0700, written by the run's owner).
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import pickle
import re
from contextvars import ContextVar
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import cloudpickle

from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MIN_STORED_BYTES = 1 << 20  # smaller functions stay inside their learner's pickle
_DIGEST = re.compile(r"[0-9a-f]{64}")
# adaptive's BaseLearner pickles its whole __dict__ into one byte string (LearnerND uses it).
_BASE_LEARNER_STATE = ("adaptive.learner.base_learner", "BaseLearner.__getstate__")


class _Stood(StrEnum):
    """What a reference stands for in a learner's pickle."""

    OBJECT = "object"  # the function itself
    PICKLE = "pickle"  # its pickle: a byte string that its learner unpickles itself


def _reference(stood: _Stood, digest: str) -> str:
    return f"{stood}:{digest}"


def _parse(reference: object) -> tuple[_Stood, str]:
    stood, _, digest = str(reference).partition(":")
    if stood not in _Stood.__members__.values() or not _DIGEST.fullmatch(digest):
        raise pickle.UnpicklingError(f"not a stored function's reference: {reference!r}")
    return _Stood(stood), digest


# -- writing ----------------------------------------------------------------------------------


class LearnerPickles:
    """Pickles learners with their big functions stored apart, each once (see the module)."""

    def __init__(self) -> None:
        # id -> (the callable, kept alive so the id stays its own; its digest, pickle size)
        self._sizes: dict[int, tuple[Any, str, int]] = {}
        self.functions: dict[str, bytes] = {}  # digest -> the pickle to store

    def dumps(self, learner: Any) -> bytes:
        """``learner`` cloudpickled, naming its stored functions (added to ``functions``)."""
        buffer = io.BytesIO()
        _LearnerPickler(buffer, self, list(_callables(learner))).dump(learner)
        return buffer.getvalue()

    def object_reference(self, function: Any) -> str | None:
        """The reference for ``function`` met in a learner's pickle; None: pickle it inline."""
        _, digest, size = self._measure(function)
        if size < MIN_STORED_BYTES:
            return None
        if digest not in self.functions:
            self.functions[digest] = cloudpickle.dumps(function)
        return _reference(_Stood.OBJECT, digest)

    def pickle_reference(self, blob: bytes, candidates: list[Any]) -> str | None:
        """The reference for ``blob`` when it is the pickle of one of ``candidates``."""
        digest = hashlib.sha256(blob).hexdigest()
        if digest not in self.functions:
            if not any(self._measure(c)[1:] == (digest, len(blob)) for c in candidates):
                return None
            self.functions[digest] = blob
        return _reference(_Stood.PICKLE, digest)

    def _measure(self, function: Any) -> tuple[Any, str, int]:
        """``function``'s digest and pickle size, pickled once per object (held meanwhile).

        ``cloudpickle.dumps`` as adaptive's learners call it, so their byte strings match.
        """
        known = self._sizes.get(id(function))
        if known is None:
            try:
                blob = cloudpickle.dumps(function)
            except Exception:  # noqa: BLE001 - its learner's own pickle says whether it can be
                known = (function, "", 0)  # not on its own: left inside its learner's pickle
            else:
                known = (function, hashlib.sha256(blob).hexdigest(), len(blob))
            self._sizes[id(function)] = known
        return known


class _LearnerPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, with the learner's big functions (or their pickles) as references."""

    def __init__(self, file: io.BytesIO, pickles: LearnerPickles, candidates: list[Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._pickles = pickles
        self._candidates = candidates
        self._ids = {id(c) for c in candidates}

    def persistent_id(self, obj: Any) -> str | None:
        """A reference for a big function of the learner, or for a byte string pickling one."""
        if id(obj) in self._ids:
            return self._pickles.object_reference(obj)
        if type(obj) is bytes and len(obj) >= MIN_STORED_BYTES:
            return self._pickles.pickle_reference(obj, self._candidates)
        return None

    def reducer_override(self, obj: Any) -> Any:
        """Pickle adaptive's default learner state as its ``__dict__``: its function shows."""
        getstate = getattr(type(obj), "__getstate__", None)
        where = (getattr(getstate, "__module__", None), getattr(getstate, "__qualname__", None))
        if where == _BASE_LEARNER_STATE:
            newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # NEWOBJ, PEP 307
            return newobj, (type(obj),), obj.__dict__, None, None, set_dict_state
        return super().reducer_override(obj)


def set_dict_state(obj: Any, state: dict[str, Any]) -> None:
    """Give ``obj`` its ``__dict__`` back: what BaseLearner.__setstate__ does with its pickle."""
    obj.__dict__ = state


def _callables(learner: Any) -> Iterator[Any]:
    """The callables ``learner`` holds, and those of the learners it wraps, the wrapped first.

    Wrapped learners first: a BalancingLearner's own function bundles its learners' functions,
    so theirs are matched before it would be pickled whole.
    """
    attributes = list(getattr(learner, "__dict__", {}).values())
    for value in attributes:
        many = isinstance(value, list | tuple) and bool(value) and _is_learner(value[0])
        for inner in value if many else (value,):
            if _is_learner(inner):
                yield from _callables(inner)
    for value in attributes:
        if callable(value) and not isinstance(value, type) and not _is_learner(value):
            yield value


def _is_learner(obj: object) -> bool:
    return callable(getattr(obj, "ask", None)) and callable(getattr(obj, "tell", None))


# -- reading ----------------------------------------------------------------------------------

# The functions of the StoredFunctions loading a learner now, for the byte strings that stand
# for a function's pickle (a learner unpickles those itself, inside its own __setstate__).
_LOADING: ContextVar[dict[str, Any]] = ContextVar("_LOADING")


class StoredFunctions:
    """Unpickles a run's learners, reading each stored function once (see the module)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._functions: dict[str, Any] = {}  # digest -> the function
        self._used: set[str] = set()  # the digests the last loads() named

    def learner(self, index: int) -> Any:
        """Learner ``index`` of the run, unpickled (its functions' modules must import)."""
        return self.loads(self.run_dir.read_learner(index))

    def loads(self, blob: bytes) -> Any:
        """Unpickle ``blob`` (a learner's pickle from this run, or a :class:`StoredCall`'s)."""
        self._used = set()
        token = _LOADING.set(self._functions)
        try:
            return _Unpickler(io.BytesIO(blob), self).load()
        finally:
            _LOADING.reset(token)

    def function(self, digest: str) -> Any:
        """The stored function ``digest``, read from its file the first time."""
        self._used.add(digest)
        if digest not in self._functions:
            path = self.run_dir.function_file(digest)
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                raise ConfigError(
                    f"{path} is missing (a learner's function): start the RunManager again "
                    "with the same learners to write it"
                ) from None
            self._functions[digest] = pickle.loads(blob)  # noqa: S301 - the run's own pickle
        return self._functions[digest]

    def keep_last(self) -> None:
        """Forget the functions the last :meth:`loads` did not name (a task's next learner)."""
        self._functions = {d: f for d, f in self._functions.items() if d in self._used}

    def call(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` as a pool should get it.

        A :class:`StoredCall` when it holds stored functions (it is then sent as a small
        pickle naming them), else ``function`` itself.
        """
        if not self._functions:
            return function
        ids = {id(f): digest for digest, f in self._functions.items()}
        buffer = io.BytesIO()
        pickler = _ReferencePickler(buffer, ids)
        pickler.dump(function)
        if not pickler.referred:
            return function
        return StoredCall(function, str(self.run_dir.path), buffer.getvalue())


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, functions: StoredFunctions) -> None:
        super().__init__(file)
        self._functions = functions

    def persistent_load(self, pid: Any) -> Any:
        stood, digest = _parse(pid)
        function = self._functions.function(digest)
        if stood == _Stood.OBJECT:
            return function
        # The learner unpickles this itself: give it a pickle of the one loaded function.
        return pickle.dumps(_Loading(digest), protocol=pickle.HIGHEST_PROTOCOL)


class _Loading:
    """Pickles as the lookup of a stored function being loaded (see ``_Unpickler``)."""

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        return loading_function, (self.digest,)


def loading_function(digest: str) -> Any:
    """The stored function ``digest`` of the learner being unpickled now."""
    try:
        return _LOADING.get()[digest]
    except LookupError:
        raise pickle.UnpicklingError(
            f"the stored function {digest} is unpickled only while its learner is"
        ) from None


class _ReferencePickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, with the stored functions it meets as references."""

    def __init__(self, file: io.BytesIO, ids: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._ids = ids
        self.referred = False

    def persistent_id(self, obj: Any) -> str | None:
        digest = self._ids.get(id(obj))
        if digest is None:
            return None
        self.referred = True
        return _reference(_Stood.OBJECT, digest)


# -- pool processes ---------------------------------------------------------------------------


class StoredCall:
    """A learner's function on its way to a pool process.

    Pickled, it is only a small pickle naming the stored functions it holds, which that
    process reads once (:func:`stored_call`).
    """

    def __init__(self, function: Callable[..., Any], run_dir: str, blob: bytes) -> None:
        self.function = function
        self.run_dir = run_dir
        self.blob = blob

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function (in this process, when an executor does not pickle it)."""
        return self.function(*args, **kwargs)

    def __reduce__(self) -> tuple[Callable[[str, bytes], Any], tuple[str, bytes]]:
        return stored_call, (self.run_dir, self.blob)


class _PoolProcess:
    """Global state of a pool process: the function it calls for its points now.

    With the small pickle that named it, and the stored functions it holds. One at a time:
    a pool serves one learner at a time, and the next learner's functions replace the last.
    """

    def __init__(self) -> None:
        self.blob: bytes | None = None
        self.function: Callable[..., Any] | None = None
        self.functions: StoredFunctions | None = None

    def call(self, run_dir: str, blob: bytes) -> Callable[..., Any]:
        """The function ``blob`` names, unpickled the first time (see :func:`stored_call`)."""
        if self.function is None or self.blob != blob:
            functions = self.functions
            if functions is None or str(functions.run_dir.path) != run_dir:
                functions = self.functions = StoredFunctions(RunDir(run_dir))
            self.function, self.blob = functions.loads(blob), blob
            functions.keep_last()
        return self.function


_POOL = _PoolProcess()


def stored_call(run_dir: str, blob: bytes) -> Callable[..., Any]:
    """The function a :class:`StoredCall` stands for, unpickled once per pool process."""
    return _POOL.call(run_dir, blob)
