"""Duplicate object keys (server/dupkeys.py): refused with codex's words and position.

The first table was answered by codex 0.169.0 (the conformance suite sends a few of these to
both servers over real sockets); the rest pins the cheap test against the exact walk.
"""

# ruff: noqa: E501  (messages quoted verbatim, one case per line)

from __future__ import annotations

import base64
import json
import os

import pytest

from execsdk.server.dupkeys import first_duplicate, keys_unique
from execsdk.server.parse import parse as _parse
from execsdk.server.parse import parse_bulk

CODEX_ANSWERS = [
    ('{"jsonrpc":"2.0","id":5,"id":6,"method":"fs/getMetadata","params":{"path":"file:///tmp"}}', "`id` at line 1 column 28"),
    ('{"jsonrpc":"2.0","id":5,"method":"fs/getMetadata","params":{"path":"file:///tmp","x":{"a":1,"a":2}}}', "`a` at line 1 column 95"),
    ('{"jsonrpc":"2.0","id":5,"method":"fs/getMetadata","params":{"path":"file:///tmp","x":[{"a":1,"a":2}]}}', "`a` at line 1 column 96"),
    ('{"jsonrpc":"2.0","id":5,"method":"fs/getMetadata","params":{"path":"file:///tmp", "path" :"file:///tmp"}}', "`path` at line 1 column 89"),
    ('{"jsonrpc":"2.0","id":5,"method":"nope/nope","params":{"a":1,"a":1}}', "`a` at line 1 column 64"),
    ('{"jsonrpc":"2.0","id":5,"method":"fs/getMetadata","params":{"path":"file:///tmp"},"params":{"path":"file:///"}}', "`params` at line 1 column 90"),
    ('{"jsonrpc":"2.0","id":5,"method":"fs/getMetadata","params":{"path":"file:///tmp","\\u00e9":1,"\u00e9":2}}', "`\u00e9` at line 1 column 96"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "where"), CODEX_ANSWERS)
def test_duplicates_are_refused_with_codex_words(text: str, where: str) -> None:
    for raw in (text, text.encode()):
        with pytest.raises(ValueError) as info:
            _parse(raw)
        assert str(info.value) == f"duplicate JSON object key {where}"


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}',  # the same key in different objects
        '{ "a" : 1 ,\n "b" :\t2 }',  # spaced
        '{"a":"x\\":y","b":"\\" :"}',  # strings that look like keys
        '{"\\u00e9":1,"e":2}',
        "{}",
        "[]",
        '"just a string"',
    ],
)
def test_unique_keys_parse_as_before(text: str) -> None:
    assert _parse(text) == json.loads(text)
    assert first_duplicate(text) is None


def test_the_cheap_test_is_exact_on_compact_text_and_cautious_elsewhere() -> None:
    assert keys_unique('{"a":1,"b":{"c":[{"d":2}]}}', json.loads('{"a":1,"b":{"c":[{"d":2}]}}'))
    assert keys_unique(b'{ "a" : 1 }', {"a": 1})
    # Text that looks like a key inside a string: not proven unique, the walk then decides.
    assert not keys_unique('{"a":"x\\":y"}', {"a": 'x":y'})
    # A duplicate always fails it: the parsed message has one key fewer than the text.
    assert not keys_unique('{"a":1,"a":2}', {"a": 2})


def test_a_syntax_error_before_the_duplicate_is_reported_instead() -> None:
    with pytest.raises(ValueError) as info:
        _parse('{"a":1,,"a":2}')
    assert not str(info.value).startswith("duplicate")
    assert first_duplicate('{"a":nan,"a":2}') is None  # serde stops at nan first


def test_a_duplicate_before_the_text_breaks_off_is_reported() -> None:
    with pytest.raises(ValueError) as info:
        _parse('{"a":1,\n  "a":2')
    assert str(info.value) == "duplicate JSON object key `a` at line 2 column 5"


def test_deep_nesting_does_not_break_the_walk() -> None:
    assert first_duplicate("[" * 5000 + "]" * 5000) is None
    assert first_duplicate('{"a":' * 200 + "1" + "}" * 200) is None


def test_a_large_write_with_a_duplicate_skips_the_bulk_parse_and_is_refused() -> None:
    chunk = base64.b64encode(os.urandom(64 * 1024)).decode()
    text = (
        '{"id":1,"method":"fs/writeFile","params":{"path":"file:///tmp/a","path":"file:///tmp/b",'
        f'"dataBase64":"{chunk}"}}}}'
    )
    assert parse_bulk(text) is None
    with pytest.raises(ValueError) as info:
        _parse(text)
    assert str(info.value) == "duplicate JSON object key `path` at line 1 column 71"
