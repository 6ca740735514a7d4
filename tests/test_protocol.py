"""Wire messages: exact schemas, size cap, hostile input rejected with ProtocolError."""

from __future__ import annotations

import json
import pickle

import pytest

from adaptive_runner.errors import ProtocolError
from adaptive_runner.protocol import (
    MAX_MESSAGE_BYTES,
    Claim,
    Done,
    Fail,
    Heartbeat,
    Release,
    Status,
    decode,
    decode_reply,
    encode_error,
    encode_reply,
    encode_request,
)
from adaptive_runner.vocabulary import ReplyCode

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


def test_replies() -> None:
    assert decode_reply(encode_reply(learner=3, fname="a")) == {
        "ok": True,
        "learner": 3,
        "fname": "a",
    }
    assert decode_reply(encode_error(ReplyCode.NO_WORK, "none left")) == {
        "ok": False,
        "code": "no_work",
        "error": "none left",
    }
    with pytest.raises(ProtocolError, match="boolean 'ok'"):
        decode_reply(b'{"learner": 3}')
    with pytest.raises(ProtocolError, match="without string 'code'"):
        decode_reply(b'{"ok": false}')
