"""``execsdk serve``'s bulk parse (server/parse.py): the same message as the full parse, or None.

Every case is checked against the full parse, so the shortcut can only ever be absent, never
different. The conformance suite checks the same over real sockets against codex.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from execsdk._protocol.bulk import BULK_FROM
from execsdk._protocol.wire import Base64Text, b64decode_strict
from execsdk.server.parse import parse as _parse
from execsdk.server.parse import parse_bulk

BIG = base64.b64encode(os.urandom(3 * BULK_FROM)).decode()
METHODS = [("process/write", "chunk"), ("fs/writeBlock", "chunk"), ("fs/writeFile", "dataBase64")]


def message(method: str, params: dict[str, Any], **top: Any) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": method, "params": params, **top},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def check(raw: str | bytes, *, taken: bool) -> None:
    """parse_bulk(raw) is None (``taken`` False) or the full parse with the member decoded."""
    got = parse_bulk(raw)
    if not taken:
        assert got is None
        return
    assert got is not None
    full = _parse(raw)
    assert isinstance(full, dict)
    name = next(n for n, v in got["params"].items() if isinstance(v, Base64Text))
    member = got["params"][name]
    assert member == ""  # what validators see
    assert b64decode_strict(member) == base64.b64decode(full["params"][name], validate=True)
    assert {**got, "params": {**got["params"], name: full["params"][name]}} == full


@pytest.mark.parametrize(("method", "name"), METHODS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_large_members_are_taken_in_any_member_order(
    method: str, name: str, as_bytes: bool
) -> None:
    for params in (
        {"processId": "p", name: BIG, "writeId": "w", "path": "file:///tmp/x", "offset": 0},
        {name: BIG, "handleId": "h"},
        {"path": "file:///tmp/\u00fcber", name: BIG},  # unescaped non-ASCII is fine
    ):
        text = message(method, params)
        check(text.encode() if as_bytes else text, taken=True)


@pytest.mark.parametrize(
    ("tail", "valid"),
    [
        ("", True), ("aGVsbG8=", True), ("aGVsbA==", True), ("=", False), ("a", False),
        ("aG", False), ("aGVsbA=", False), ("aGVsbG8==", False), ("aG=s", False),
        ("aG==", False), ("aGV=", False), ("a===", False), ("YQ==YQ==", False),
        ("aGVs\u00e9", False), ("aGVsbG8-", False), ("Zm9=", False), ("AA\\nA", False),
        ("AAA\\/", False), ("\\u0041AAA", False), ("\\t", False),
    ],
)  # fmt: skip
def test_only_text_codex_accepts_is_taken(tail: str, valid: bool) -> None:
    # Written by hand so JSON escapes stay in the text; an escape is never taken, even where
    # it spells valid base64: the full parse decodes it.
    text = '{"id":1,"method":"fs/writeFile","params":{"dataBase64":"' + BIG + tail + '"}}'
    check(text, taken=valid)
    check(text.encode(), taken=valid)


@pytest.mark.parametrize(
    "text",
    [
        # too small to be worth it
        message("fs/writeFile", {"dataBase64": "QUJD"}),
        # spaced, not compact: the key is not found
        json.dumps({"id": 1, "method": "fs/writeFile", "params": {"dataBase64": BIG}}),
        # the member of another method, or of none
        message("fs/writeFile", {"chunk": BIG}),
        message("process/write", {"dataBase64": BIG}),
        json.dumps({"id": 1, "params": {"chunk": BIG}}, separators=(",", ":")),
        message("fs/unknown", {"chunk": BIG}),
        # a notification (no id), a response, an array
        json.dumps({"method": "process/write", "params": {"chunk": BIG}}, separators=(",", ":")),
        json.dumps({"id": 1, "result": {"chunk": BIG}}, separators=(",", ":")),
        json.dumps([{"chunk": BIG}], separators=(",", ":")),
        # not where params are read
        message("process/write", {"x": {"chunk": BIG}}),
        message("process/write", {}, chunk=BIG),
        message("process/write", {"processId": "chunk", "x": BIG}),
        # named twice, plainly or with an escape; the full parse keeps the last one
        message("process/write", {"chunk": BIG, "w": {"chunk": "QUJD"}}),
        '{"id":1,"method":"process/write","params":{"chunk":"' + BIG + '","chunk":"QUJD"}}',
        '{"id":1,"method":"process/write","params":{"chunk":"' + BIG + '","\\u0063hunk":""}}',
        '{"id":1,"method":"process/write","params":{"\\u0063hunk":"QUJD","chunk":"' + BIG + '"}}',
        # the found key is part of another key: a"chunk
        '{"id":1,"method":"process/write","params":{"a\\"chunk":"' + BIG + '"}}',
        # the key after the first 4 KiB
        message("process/write", {"pad": "x" * 5000, "chunk": BIG}),
        # broken JSON: unterminated, trailing garbage, wrong params type
        '{"id":1,"method":"process/write","params":{"chunk":"' + BIG,
        '{"id":1,"method":"process/write","params":{"chunk":"' + BIG + '"}}x',
        '{"id":1,"method":["process/write"],"params":{"chunk":"' + BIG + '"}}',
    ],
)
def test_anything_else_falls_back_to_the_full_parse(text: str) -> None:
    check(text, taken=False)
    check(text.encode(), taken=False)


def test_the_full_parse_answers_what_the_bulk_parse_leaves() -> None:
    # The fallbacks above stay answerable: plain JSON parses; a key named twice (in any
    # spelling) and broken text are refused with codex's words.
    spaced = json.dumps({"id": 1, "method": "process/write", "params": {"chunk": BIG}})
    parsed = _parse(spaced)
    assert isinstance(parsed, dict) and parsed["params"]["chunk"] == BIG
    twice = (
        '{"id":1,"method":"process/write","params":{"\\u0063hunk":"QUJD","chunk":"' + BIG + '"}}'
    )
    with pytest.raises(ValueError) as info:
        _parse(twice)
    assert str(info.value) == "duplicate JSON object key `chunk` at line 1 column 70"
    with pytest.raises(ValueError, match=r"^EOF while parsing"):
        _parse('{"id":1,"method":"process/write","params":{"chunk":"' + BIG)
