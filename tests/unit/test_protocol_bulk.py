"""The client's bulk decode (``_protocol/bulk.py``, ``jsonrpc.decode_message``): a large
``fs/readFile``/``fs/readBlock`` answer gives the same message as the full parse, with its base64
member already decoded, or the full parse runs. The server's side is ``test_server_bulk.py``."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from execsdk._protocol import types as t
from execsdk._protocol.bulk import BULK_FROM, split_member
from execsdk._protocol.converter import make_converter, structure_result
from execsdk._protocol.jsonrpc import Notification, Response, decode_message, loads
from execsdk._protocol.wire import Base64Text, b64decode
from execsdk.errors import ProtocolError

DATA = os.urandom(3 * BULK_FROM)
BIG = base64.b64encode(DATA).decode()


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def lifted(msg: object, name: str) -> Base64Text | None:
    """The result member ``name`` when it was decoded ahead, else None."""
    assert isinstance(msg, Response)
    value = msg.result.get(name) if isinstance(msg.result, dict) else None
    return value if isinstance(value, Base64Text) else None


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    ("result", "name"),
    [
        ({"dataBase64": BIG}, "dataBase64"),
        ({"chunk": BIG, "eof": False}, "chunk"),
        ({"eof": True, "chunk": BIG}, "chunk"),
    ],
)
def test_large_answers_arrive_decoded_and_otherwise_equal(
    result: dict[str, Any], name: str, as_bytes: bool
) -> None:
    text = compact({"id": 3, "result": result})
    msg = decode_message(text.encode() if as_bytes else text)
    member = lifted(msg, name)
    assert member is not None and member == "" and member.data == DATA
    assert isinstance(msg, Response)
    full = loads(text)
    assert isinstance(full, dict)
    assert msg.id == 3 and {**msg.result, name: full["result"][name]} == full["result"]
    assert b64decode(member) == DATA


def test_decoded_members_structure_into_the_result_types() -> None:
    conv = make_converter("G2")
    msg = decode_message(compact({"id": 1, "result": {"chunk": BIG, "eof": True}}).encode())
    assert isinstance(msg, Response)
    block = structure_result(conv, msg.result, t.FsReadBlockResult, method="fs/readBlock")
    assert block == t.FsReadBlockResult(chunk=DATA, eof=True)
    msg = decode_message(compact({"id": 2, "result": {"dataBase64": BIG}}))
    assert isinstance(msg, Response)
    whole = structure_result(conv, msg.result, t.FsReadFileResult, method="fs/readFile")
    assert whole.data_base64 == DATA


@pytest.mark.parametrize(
    "text",
    [
        compact({"id": 1, "result": {"chunk": "QUJD", "eof": True}}),  # small
        json.dumps({"id": 1, "result": {"chunk": BIG}}),  # spaced
        '{"id":1,"result":{"chunk":"' + BIG[:-4] + '\\/AAA"}}',  # an escape in the text
        '{"id":1,"result":{"chunk":"' + BIG + '!"}}',  # not base64
        '{"id":1,"result":{"chunk":"' + BIG + '","chunk":"QUJD"}}',  # named twice
        '{"id":1,"result":{"\\u0063hunk":"QUJD","chunk":"' + BIG + '"}}',
        compact({"id": 1, "result": {"chunks": [{"chunk": BIG, "seq": 1}]}}),  # nested
        compact({"id": 1, "error": {"code": 1, "message": "x", "data": {"chunk": BIG}}}),
        compact({"method": "process/output", "params": {"chunk": BIG}}),  # a notification
        compact({"id": 1, "result": {"pad": "x" * 5000, "chunk": BIG}}),  # key far in
    ],
)
def test_anything_else_is_parsed_in_full(text: str) -> None:
    for raw in (text, text.encode()):
        msg = decode_message(raw)
        full = loads(raw)
        assert isinstance(full, dict)
        if isinstance(msg, Response):
            assert lifted(msg, "chunk") is None
            assert msg.result == full.get("result")
        else:
            assert isinstance(msg, Notification) and msg.params == full["params"]


def test_broken_large_answers_are_still_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        decode_message('{"id":1,"result":{"chunk":"' + BIG + '"}}}')
    with pytest.raises(ProtocolError):
        decode_message('{"id":1,"result":{"chunk":"' + BIG)
    # Not base64 after all: the member stays text and the converter says what is wrong.
    msg = decode_message('{"id":1,"result":{"chunk":"' + BIG + '!","eof":true}}')
    assert isinstance(msg, Response)
    with pytest.raises(ProtocolError, match="base64"):
        structure_result(make_converter("G2"), msg.result, t.FsReadBlockResult, method="m")


def test_split_member_cuts_only_a_lone_compact_member_near_the_start() -> None:
    text = '{"id":1,"result":{"chunk":"' + BIG + '"}}'
    found = split_member(text, "chunk")
    assert found is not None
    start, end, rest = found
    assert text[start:end] == BIG and rest == '{"id":1,"result":{"chunk":""}}'
    assert split_member(text.encode(), "chunk") == (start, end, rest.encode())
    assert split_member(text, "dataBase64") is None
    assert split_member(text.replace('"}}', '","x":"\\u0041"}}'), "chunk") is None
    assert split_member(" " * 5000 + text, "chunk") is None
