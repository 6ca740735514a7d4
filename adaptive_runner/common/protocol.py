"""The wire messages between workers and the database manager: versioned, validated JSON."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Final, NoReturn

from adaptive_runner.common.vocabulary import ReplyCode
from adaptive_runner.errors import ProtocolError

VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 64 * 1024
# sqlite stores signed 64-bit integers; a larger JSON integer must not reach a query.
_MAX_INT: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Claim:
    """A task asks for a learner (a repeated claim returns the same one)."""

    op: ClassVar[str] = "claim"
    task: str
    host: str
    pid: int
    group: int = 0  # the resource group the task's array was submitted for (always sent)
    array: str = ""  # the task's array: its claims show the array's tasks could start


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A task reports progress on the learner it holds; it also renews the task's lease."""

    op: ClassVar[str] = "heartbeat"
    task: str
    learner: int
    npoints: int
    loss: float | None
    cpu: float
    memory: int


@dataclass(frozen=True, slots=True)
class Done:
    """A task reached the goal of its learner and saved it."""

    op: ClassVar[str] = "done"
    task: str
    learner: int
    npoints: int
    loss: float | None


@dataclass(frozen=True, slots=True)
class StageReached:
    """A task's learner reached goal stage ``stage`` of a staged goal, not the last (unsaved)."""

    op: ClassVar[str] = "stage_reached"
    task: str
    learner: int
    stage: int
    npoints: int
    loss: float | None


@dataclass(frozen=True, slots=True)
class HandBack:
    """A task saved a learner that reached a stage, told to hand it back (``Onward`` False)."""

    op: ClassVar[str] = "hand_back"
    task: str
    learner: int
    npoints: int


@dataclass(frozen=True, slots=True)
class Release:
    """A task stops in an orderly way (SIGTERM, time limit): the learner waits for a new job."""

    op: ClassVar[str] = "release"
    task: str
    learner: int
    reason: str
    npoints: int = 0  # the learner's points at the stop: none added counts as no progress


@dataclass(frozen=True, slots=True)
class Fail:
    """A task's learner raised; ``error`` is the (truncated) traceback."""

    op: ClassVar[str] = "fail"
    task: str
    learner: int
    error: str


@dataclass(frozen=True, slots=True)
class Status:
    """Ask for the number of learners in each state."""

    op: ClassVar[str] = "status"


Request = Claim | Heartbeat | StageReached | HandBack | Done | Release | Fail | Status


@dataclass(frozen=True, slots=True)
class Assignment:
    """The reply to a claim that got a learner: its index, its data file, its goal stage."""

    ok: ClassVar[bool] = True
    learner: int
    fname: str
    stage: int = 0  # it works towards goal stage ``stage`` (0-based); 0 is not sent


@dataclass(frozen=True, slots=True)
class Onward:
    """The reply to a stage reached: whether the task goes on with the learner (``go_on``).

    False: learners of its group wait at an earlier stage; save it, hand it back (``HandBack``)
    and claim again.
    """

    ok: ClassVar[bool] = True
    go_on: bool


@dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a heartbeat, done, release or fail of a task that holds the learner."""

    ok: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Counts:
    """The reply to a status request: the number of learners in each state."""

    ok: ClassVar[bool] = True
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The reply to a request the manager did not do: what ``code`` says, and why for people."""

    ok: ClassVar[bool] = False
    code: ReplyCode
    error: str


Reply = Assignment | Onward | Ack | Counts | ErrorReply

_REQUEST_TYPES: Final[dict[str, type[Request]]] = {
    cls.op: cls for cls in (Claim, Heartbeat, StageReached, HandBack, Done, Release, Fail, Status)
}
# Per field name, the kind of value it holds: "str", "int", "float", "float?" (float or
# null), "bool", "code" (a ReplyCode) or "counts" (an object of ints).
_KINDS: Final = {
    "task": "str",
    "host": "str",
    "reason": "str",
    "error": "str",
    "pid": "int",
    "group": "int",
    "array": "str",
    "learner": "int",
    "npoints": "int",
    "memory": "int",
    "cpu": "float",
    "loss": "float?",
    "fname": "str",
    "stage": "int",
    "go_on": "bool",
    "code": "code",
    "counts": "counts",
}


def _schema(cls: type[Request | Reply]) -> dict[str, str]:
    return {f.name: _KINDS[f.name] for f in fields(cls)}


_SCHEMAS: Final = {op: _schema(cls) for op, cls in _REQUEST_TYPES.items()}
_REPLY_SCHEMAS: Final[dict[type[Reply], dict[str, str]]] = {
    cls: _schema(cls) for cls in (Assignment, Onward, Ack, Counts, ErrorReply)
}
# A field with a default is sent only when it has another value: a reply that needs no new
# field keeps the bytes earlier versions send and read.
_OPTIONAL: Final = {
    cls: {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    for cls in _REPLY_SCHEMAS
}
# A reply is told by its ``ok`` and its keys (with or without its optional fields): they
# differ for every type.
_REPLY_TYPES: Final = {
    (cls.ok, frozenset(keys)): cls
    for cls, schema in _REPLY_SCHEMAS.items()
    for keys in (schema.keys(), schema.keys() - _OPTIONAL[cls].keys())
}
_REPLY_CODES: Final = frozenset(ReplyCode)


def _reject_constant(name: str) -> NoReturn:
    raise ProtocolError(f"{name} is not allowed: send non-finite numbers as null")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ProtocolError("duplicate keys in a JSON object")
    return result


# Made once: json.loads with these options would build a decoder for every message.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def _dumps(obj: dict[str, Any]) -> bytes:
    """Compact JSON (what every version sends); a non-finite float raises ValueError."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


_ACK: Final = _dumps({"ok": Ack.ok})  # every heartbeat's reply: made once


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"{what} of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES} limit")
    try:
        text = data.decode("utf-8")
        obj = _DECODER.decode(text)
    except UnicodeDecodeError as e:
        raise ProtocolError(f"{what} is not UTF-8: {e}") from None
    except ValueError as e:  # not JSON, or an integer of more than 4300 digits
        raise ProtocolError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, not {type(obj).__name__}")
    return obj


_EXACT: Final = {"str": str, "bool": bool}  # the kinds whose values are one Python type


def _check_field(op: str, name: str, kind: str, value: Any) -> Any:
    """Return ``value`` if it has exactly the kind the schema wants (bool is not int).

    ``op`` names the message in the error: a request's op, or a reply's type.
    """
    if type(value) is _EXACT.get(kind):
        return value
    if kind == "code" and type(value) is str and value in _REPLY_CODES:
        return ReplyCode(value)
    if kind == "counts" and type(value) is dict:
        return {key: _check_field(op, f"{name}[{key!r}]", "int", n) for key, n in value.items()}
    if kind == "int" and type(value) is int and 0 <= value <= _MAX_INT:
        return value
    if kind in ("float", "float?"):
        if kind == "float?" and value is None:
            return None
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
    raise ProtocolError(f"{op}: field {name!r} must be {kind}, got {json.dumps(value)[:80]}")


def decode(data: bytes) -> Request:
    """Parse and validate one request; anything unexpected raises ProtocolError.

    Enforced: at most 64 KiB, UTF-8, a JSON object, ``"v": 1``, a known ``op``, exactly the
    keys of that op, exact types (``true`` is not an integer, integers are non-negative and
    fit in 64 bits, floats are finite), no duplicate keys.
    """
    obj = _parse_json(data, "request")
    version = obj.pop("v", None)
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r}; this server speaks 1")
    op = obj.pop("op", None)
    if type(op) is not str or op not in _SCHEMAS:
        raise ProtocolError(f"unknown op {op!r}; expected one of {sorted(_SCHEMAS)}")
    schema = _SCHEMAS[op]
    if obj.keys() != schema.keys():
        missing = sorted(schema.keys() - obj.keys())
        extra = sorted(obj.keys() - schema.keys())
        raise ProtocolError(f"{op}: missing keys {missing}, unexpected keys {extra}")
    values = {name: _check_field(op, name, kind, obj[name]) for name, kind in schema.items()}
    return _REQUEST_TYPES[op](**values)


def encode_request(request: Request) -> bytes:
    """Serialize a request; a non-finite loss travels as null."""
    obj: dict[str, Any] = {"v": VERSION, "op": request.op}
    for f in fields(request):
        value = getattr(request, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        obj[f.name] = value
    return _dumps(obj)


def encode_reply(reply: Reply) -> bytes:
    """Serialize a reply: ``{"ok": true|false, **its fields}``, in the fields' order.

    These bytes are the protocol: workers and managers of other versions read them. An
    optional field at its default is left out (``Assignment.stage`` 0).
    """
    if type(reply) is Ack:
        return _ACK
    optional = _OPTIONAL[type(reply)]
    values = {f.name: getattr(reply, f.name) for f in fields(reply)}
    sent = {k: v for k, v in values.items() if k not in optional or v != optional[k]}
    return _dumps({"ok": reply.ok} | sent)


def decode_reply(data: bytes) -> Reply:
    """Parse and validate one reply; anything unexpected raises ProtocolError.

    Enforced as for requests: at most 64 KiB, UTF-8, a JSON object, no duplicate keys, exact
    types; and a boolean ``ok`` with exactly the keys of one reply type (an error reply's
    ``code`` one of :class:`ReplyCode`). Nothing in a reply is ever unpickled.
    """
    obj = _parse_json(data, "reply")
    ok = obj.pop("ok", None)
    if type(ok) is not bool:
        raise ProtocolError(f"reply has no boolean 'ok': {data[:200]!r}")
    cls = _REPLY_TYPES.get((ok, frozenset(obj)))
    if cls is None:
        expected = sorted(sorted(keys) for (ok_, keys) in _REPLY_TYPES if ok_ == ok)
        raise ProtocolError(
            f"reply with ok={json.dumps(ok)} and keys {sorted(obj)}: expected the keys of one "
            f"of {expected}"
        )
    label = f"{cls.__name__} reply"
    schema = _REPLY_SCHEMAS[cls]
    values = {name: _check_field(label, name, schema[name], value) for name, value in obj.items()}
    return cls(**values)
