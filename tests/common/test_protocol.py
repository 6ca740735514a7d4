"""Wire messages: exact schemas, size cap, hostile input rejected with ProtocolError."""

from __future__ import annotations

import json
import pickle

import pytest

from adaptive_runner.common.protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    Assignment,
    Claim,
    Counts,
    Done,
    ErrorReply,
    Fail,
    Heartbeat,
    Onward,
    Release,
    Reply,
    StageReached,
    Status,
    decode,
    decode_reply,
    encode_reply,
    encode_request,
)
from adaptive_runner.common.vocabulary import ReplyCode
from adaptive_runner.errors import ProtocolError

CLAIM = {
    "v": 1,
    "op": "claim",
    "task": "123_4",
    "host": "node1",
    "pid": 42,
    "group": 0,
    "array": "123",
}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "request_",
    [
        Claim("17[4].server", "node1", 42),
        Heartbeat("L3_4", 7, 100, 0.25, 99.5, 2**40),
        Heartbeat("L3_4", 7, 100, None, 0.0, 0),
        Done("1_0", 0, 10, None),
        StageReached("1_0", 0, 1, 25, 0.5),
        StageReached("1_0", 0, 0, 25, None),
        Release("1_0", 3, "SIGTERM"),
        Fail("1_0", 3, "Traceback (most recent call last):\n  ünïcode ✓"),
        Status(),
    ],
)
def test_round_trip(request_: object) -> None:
    assert decode(encode_request(request_)) == request_  # type: ignore[arg-type]


def test_non_finite_loss_travels_as_null() -> None:
    data = encode_request(Heartbeat("t", 0, 1, float("inf"), 1.0, 1))
    assert json.loads(data)["loss"] is None
    assert decode(data) == Heartbeat("t", 0, 1, None, 1.0, 1)


def test_integer_where_float_expected_is_accepted() -> None:
    message = {"v": 1, "op": "done", "task": "t", "learner": 0, "npoints": 3, "loss": 1}
    assert decode(raw(message)) == Done("t", 0, 3, 1.0)


def test_size_cap() -> None:
    padding = MAX_MESSAGE_BYTES - len(raw(CLAIM | {"host": ""}))
    big = CLAIM | {"host": "x" * padding}
    assert decode(raw(big)) == Claim("123_4", "x" * padding, 42, 0, "123")
    with pytest.raises(ProtocolError, match="exceeds the 65536 limit"):
        decode(raw(CLAIM | {"host": "x" * (padding + 1)}))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (pickle.dumps(CLAIM), "not UTF-8|not valid JSON"),
        (pickle.dumps(CLAIM, protocol=0), "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"claim"', "must be a JSON object, not str"),
        (b"[" * 20000 + b"]" * 20000, "nested too deeply"),
        (raw(CLAIM | {"v": 2}), "version 2"),
        (raw(CLAIM | {"v": True}), "version True"),
        (raw({k: v for k, v in CLAIM.items() if k != "v"}), "version None"),
        (raw(CLAIM | {"op": "start"}), "unknown op 'start'"),
        (raw(CLAIM | {"op": 1}), "unknown op 1"),
        (raw(CLAIM | {"extra": 1}), r"unexpected keys \['extra'\]"),
        (raw({k: v for k, v in CLAIM.items() if k != "pid"}), r"missing keys \['pid'\]"),
        (raw(CLAIM | {"pid": True}), "'pid' must be int, got true"),
        (raw(CLAIM | {"pid": 1.0}), "'pid' must be int"),
        (raw(CLAIM | {"pid": "1"}), "'pid' must be int"),
        (raw(CLAIM | {"pid": -1}), "'pid' must be int"),
        (raw(CLAIM | {"pid": 2**63}), "'pid' must be int"),
        (raw(CLAIM | {"pid": None}), "'pid' must be int"),
        (raw(CLAIM | {"task": 5}), "'task' must be str"),
        (raw(CLAIM | {"task": ["a"]}), "'task' must be str"),
        (
            raw({"v": 1, "op": "stage_reached", "task": "t", "learner": 0, "stage": -1}),
            r"missing keys \['loss', 'npoints'\]",
        ),
        (b'{"v":1,"op":"claim","task":"t","host":"h","pid":' + b"9" * 5000 + b"}", "valid JSON"),
        (b'{"v":1,"op":"claim","v":1,"task":"t","host":"h","pid":1}', "duplicate keys"),
        (
            b'{"v":1,"op":"done","task":"t","learner":0,"npoints":1,"loss":NaN}',
            "NaN is not allowed",
        ),
        (
            b'{"v":1,"op":"done","task":"t","learner":0,"npoints":1,"loss":-Infinity}',
            "-Infinity is not allowed",
        ),
        (b'{"v":1,"op":"done","task":"t","learner":0,"npoints":1,"loss":1e400}', "'loss' must"),
        (raw({"v": 1, "op": "done", "task": "t", "learner": 0, "npoints": 1}), "missing keys"),
        (raw({"v": 1, "op": "status", "task": "t"}), r"unexpected keys \['task'\]"),
    ],
)
def test_hostile_input(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode(data)


# What the manager sent before replies were typed (``encode_reply(**fields)`` and
# ``encode_error(code, error)``), byte for byte: workers and managers of either version
# read each other's replies after an upgrade, so these bytes never change.
WIRE_REPLIES: list[tuple[Reply, bytes]] = [
    (Ack(), b'{"ok":true}'),
    (Assignment(3, "data/0.pickle"), b'{"ok":true,"learner":3,"fname":"data/0.pickle"}'),
    (Assignment(0, 'd/é "x".p'), b'{"ok":true,"learner":0,"fname":"d/\\u00e9 \\"x\\".p"}'),
    # A staged goal's stage: sent when not 0, so a plain run's claims keep their bytes.
    (Assignment(3, "a", 2), b'{"ok":true,"learner":3,"fname":"a","stage":2}'),
    (Onward(go_on=True), b'{"ok":true,"go_on":true}'),
    (Onward(go_on=False), b'{"ok":true,"go_on":false}'),
    (
        Counts({"waiting": 2, "running": 1, "done": 0}),
        b'{"ok":true,"counts":{"waiting":2,"running":1,"done":0}}',
    ),
    (Counts({}), b'{"ok":true,"counts":{}}'),
    (
        ErrorReply(ReplyCode.NO_WORK, "no learner is waiting"),
        b'{"ok":false,"code":"no_work","error":"no learner is waiting"}',
    ),
    (
        ErrorReply(ReplyCode.NOT_OWNER, "task t does not hold learner 0"),
        b'{"ok":false,"code":"not_owner","error":"task t does not hold learner 0"}',
    ),
    (
        ErrorReply(ReplyCode.UNKNOWN_TASK, "array '7'"),
        b'{"ok":false,"code":"unknown_task","error":"array \'7\'"}',
    ),
    (
        ErrorReply(ReplyCode.BAD_REQUEST, 'unknown op "x"\n✓'),
        b'{"ok":false,"code":"bad_request","error":"unknown op \\"x\\"\\n\\u2713"}',
    ),
    (
        ErrorReply(ReplyCode.INTERNAL, "ValueError: boom"),
        b'{"ok":false,"code":"internal","error":"ValueError: boom"}',
    ),
]


@pytest.mark.parametrize(("reply", "wire"), WIRE_REPLIES)
def test_replies_keep_their_bytes_and_read_back(reply: Reply, wire: bytes) -> None:
    assert encode_reply(reply) == wire
    assert decode_reply(wire) == reply


def test_every_reply_code_is_on_the_wire_list() -> None:
    codes = {reply.code for reply, _ in WIRE_REPLIES if isinstance(reply, ErrorReply)}
    assert codes == set(ReplyCode)


def test_a_decoded_error_reply_carries_a_reply_code() -> None:
    reply = decode_reply(b'{"ok":false,"code":"not_owner","error":"gone"}')
    assert isinstance(reply, ErrorReply)
    assert type(reply.code) is ReplyCode
    assert reply.code is ReplyCode.NOT_OWNER


def test_reply_key_order_and_spacing_are_not_checked() -> None:
    """Only the content counts when reading: JSON from any encoder is accepted."""
    data = b'{ "fname": "a",\n "learner": 3, "ok": true }'
    assert decode_reply(data) == Assignment(3, "a")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (pickle.dumps({"ok": True}), "not UTF-8|not valid JSON"),
        (b"[true]", "must be a JSON object, not list"),
        (b'{"ok":true}' + b" " * MAX_MESSAGE_BYTES, "exceeds the 65536 limit"),
        (b'{"ok":true,"ok":true}', "duplicate keys"),
        (b'{"learner":3,"fname":"a"}', "boolean 'ok'"),
        (b'{"ok":1}', "boolean 'ok'"),
        (b'{"ok":"true"}', "boolean 'ok'"),
        (b'{"ok":false}', "keys"),
        (b'{"ok":false,"code":"no_work"}', "keys"),
        (b'{"ok":false,"code":"no_work","error":"e","extra":1}', r"\['code', 'error', 'extra'\]"),
        (b'{"ok":true,"go_on":1}', "'go_on' must be bool, got 1"),
        (b'{"ok":true,"learner":3,"fname":"a","stage":true}', "'stage' must be int, got true"),
        (b'{"ok":false,"code":"gone","error":"e"}', "'code' must be code"),
        (b'{"ok":false,"code":1,"error":"e"}', "'code' must be code"),
        (b'{"ok":false,"code":"no_work","error":null}', "'error' must be str"),
        (b'{"ok":true,"learner":3}', "keys"),
        (b'{"ok":true,"learner":3,"fname":"a","extra":0}', "keys"),
        (b'{"ok":true,"code":"no_work","error":"e"}', "keys"),
        (b'{"ok":false,"learner":3,"fname":"a"}', "keys"),
        (b'{"ok":true,"learner":true,"fname":"a"}', "'learner' must be int"),
        (b'{"ok":true,"learner":-1,"fname":"a"}', "'learner' must be int"),
        (b'{"ok":true,"learner":1.0,"fname":"a"}', "'learner' must be int"),
        (b'{"ok":true,"learner":3,"fname":3}', "'fname' must be str"),
        (b'{"ok":true,"counts":[]}', "'counts' must be counts"),
        (b'{"ok":true,"counts":{"done":"1"}}', r"counts\['done'\]. must be int"),
        (b'{"ok":true,"counts":{"done":NaN}}', "NaN is not allowed"),
        (b'{"ok":true,"counts":{"done":1,"done":2}}', "duplicate keys"),
    ],
)
def test_malformed_replies(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_reply(data)
