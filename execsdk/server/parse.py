"""Reading one incoming message as codex does: JSON syntax, duplicate keys, ids, bulk members.

Errors are worded as serde_json words them (codex quotes serde): clients and the conformance
suite compare the texts. A large ``fs/writeFile``, ``fs/writeBlock`` or ``process/write`` is
parsed without passing its base64 text through the JSON parser (:func:`parse_bulk`): the
member is cut out and the rest parsed by :func:`~execsdk._protocol.jsonrpc.parse_decoded`
(``_protocol/bulk.py`` says when that is safe); here the member must sit in ``params`` of a
request of the method it belongs to, with no key named twice, and decode as strictly as codex
decodes. Otherwise the full parse runs, which also words every error (0.08 ms against 0.29 ms
per 1 MiB request).

Before either parse, :func:`limit_problem` refuses what codex 0.169 refuses before building
anything: more than :data:`MAX_VALUES` JSON values in one message, or a container nested
deeper than :data:`MAX_DEPTH` (PROTOCOL.md §1.5). Counting characters bounds both for almost
every message at C speed; only a message that may break a limit is scanned, by regular
expressions that run in linear time whatever the text (a string token always ends, at its
closing quote or at the end of the text), so an absurd message costs a fraction of what
parsing it would. Pure functions: safe from any thread.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from execsdk._protocol.bulk import BULK_FROM, split_member
from execsdk._protocol.jsonrpc import (
    loads,
    parse_decoded,
)
from execsdk._protocol.wire import (
    try_b64decode_strict,
)
from execsdk.server import params as P
from execsdk.server.dupkeys import first_duplicate, keys_unique

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "error_object_problem",
    "limit_problem",
    "parse",
    "parse_bulk",
    "valid_id",
]

_VALID_ID_MIN, _VALID_ID_MAX = -(2**63), 2**63 - 1
_JSON_MESSAGES = (
    (re.compile(r"^Expecting property name enclosed in double quotes"), "key must be a string"),
    (re.compile(r"^Extra data"), "trailing characters"),
    (re.compile(r"^Expecting ',' delimiter"), "expected `,` or `}`"),
    (re.compile(r"^Expecting ':' delimiter"), "expected `:`"),
    (re.compile(r"^Invalid control character"), "control character (\\u0000-\\u001F) found"),
)


def valid_id(value: object) -> bool:
    if isinstance(value, str):
        return True
    return type(value) is int and _VALID_ID_MIN <= value <= _VALID_ID_MAX


def error_object_problem(msg: dict[str, Any]) -> str | None:
    """Why an error response from the client is malformed (serde's words), or None."""
    error = msg["error"]
    if not isinstance(error, dict):
        return f"invalid type: {P.describe(error)}, expected struct JSONRPCErrorError"
    code, message = error.get("code"), error.get("message")
    if "code" not in error:
        return "missing field `code`"
    if type(code) is not int:
        return f"invalid type: {P.describe(code)}, expected i64"
    if "message" not in error:
        return "missing field `message`"
    if not isinstance(message, str):
        return f"invalid type: {P.describe(message)}, expected a string"
    if "id" not in msg:
        return "missing field `id`"
    if not valid_id(msg["id"]):
        return "data did not match any variant of untagged enum RequestId"
    return None


def _open_container(doc: str) -> str | None:
    """The innermost JSON container still open at the end of ``doc`` ("object"/"list")."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in doc:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("an object" if ch == "{" else "a list")
        elif ch in "}]" and stack:
            stack.pop()
    if in_string:
        return "a string"
    return stack[-1] if stack else None


def _json_error_text(exc: json.JSONDecodeError) -> str:
    """serde_json-like wording for a syntax error (best effort: codex quotes serde)."""
    doc, pos = exc.doc, exc.pos
    where = f"at line {exc.lineno} column {exc.colno}"
    rest = doc[pos:].rstrip()
    if not doc.strip():
        return "EOF while parsing a value at line 1 column 0"
    unterminated = exc.msg.startswith("Unterminated string")
    if (
        unterminated
        or pos >= len(doc.rstrip())
        or (rest and any(w.startswith(rest) for w in _LITERALS))
    ):
        # Ran out of input: serde names what it was parsing and points at the last character.
        lines = doc.rstrip().split("\n")
        what = "a string" if unterminated else _open_container(doc) if rest == "" else None
        return f"EOF while parsing {what or 'a value'} at line {len(lines)} column {len(lines[-1])}"
    before = doc[:pos].rstrip()
    if before.endswith(",") and doc[pos] in "}]":
        return f"trailing comma {where}"
    if exc.msg.startswith("Expecting value"):
        return f"expected value {where}"
    for pattern, text in _JSON_MESSAGES:
        if pattern.match(exc.msg):
            return f"{text} {where}"
    return f"{exc.msg} {where}"


_LITERALS = ("null", "true", "false")
_LONE_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")


def parse(raw: str | bytes) -> object:
    """Decode one message; raises ``ValueError`` with a serde-like description."""
    problem = limit_problem(raw)
    if problem is not None:
        raise ValueError(problem)
    try:
        msg, parsed = loads(raw), True
    except ValueError:
        msg, parsed = None, False
    if not parsed or not keys_unique(raw, msg):
        # A key named twice before any syntax error is what serde reports.
        duplicate = first_duplicate(raw)
        if duplicate is not None:
            raise ValueError(duplicate)
    if parsed:
        return msg
    # orjson's messages differ from serde's (which codex quotes): the stdlib parser locates
    # the error and it is worded here. Input the stdlib accepts but serde does not (NaN, lone
    # surrogates) is still refused.
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid unicode code point at line 1 column {exc.start + 1}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(_json_error_text(exc)) from None
    except RecursionError:
        raise ValueError("recursion limit exceeded") from None
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate is not None:
        line = text.count("\n", 0, surrogate.end()) + 1
        column = surrogate.end() - (text.rfind("\n", 0, surrogate.end()) + 1) + 1
        raise ValueError(f"unexpected end of hex escape at line {line} column {column}")
    raise ValueError("expected value at line 1 column 1")


# --------------------------------------------------------------------------- bulk members

_MEMBERS = {"process/write": "chunk", "fs/writeBlock": "chunk", "fs/writeFile": "dataBase64"}
_NAMES = tuple(dict.fromkeys(_MEMBERS.values()))


def parse_bulk(raw: str | bytes) -> dict[str, Any] | None:
    """The request ``raw`` with its base64 member already decoded (a
    :class:`~execsdk._protocol.wire.Base64Text`), or None when the full parse must run."""
    if len(raw) < BULK_FROM:
        return None
    for name in _NAMES:
        found = split_member(raw, name)
        if found is not None:
            # The cut member is one string: the rest breaks a limit exactly when the whole
            # does. Then the full parse words the refusal with the whole text's positions.
            if limit_problem(found[2]) is not None:
                return None
            break
    msg = parse_decoded(raw, _NAMES, _params_of, try_b64decode_strict)
    return msg if isinstance(msg, dict) else None


def _params_of(msg: object, name: str, rest: str | bytes) -> object:
    """The params of a request of a method whose member ``name`` is base64, unless a key is
    named twice (that is the full parse's to report)."""
    if not isinstance(msg, dict) or "id" not in msg:
        return None
    method = msg.get("method")
    if not isinstance(method, str) or _MEMBERS.get(method) != name:
        return None
    return msg.get("params") if keys_unique(rest, msg) else None


# --------------------------------------------------------------------------- limits

MAX_VALUES = 262_144
"""codex 0.169 refuses a message holding more JSON values than this (every object, array,
string, number and literal counts; keys do not): "JSON-RPC message exceeds the limit of 262144
JSON values at line L column C", where C ends just before the first value too many (the
whitespace before it included)."""

MAX_DEPTH = 127
"""Containers nested deeper are refused as serde_json refuses them: "recursion limit exceeded
at line L column C", C at the opening bracket of the 128th."""

_STEP = 16_384  # values skipped per C-level step: the GIL is free between steps


_WS = r"[ \t\n\r]"
_STRING = r'"(?:[^"\\]++|\\[\s\S]?)*+(?:"|\Z)'
"""A string token: it ends at its closing quote or at the end of the text, so no scan starts
twice inside one string and every pattern below runs in linear time."""
_VALUE_TEXT = re.compile(
    rf"(?:{_STRING}{_WS}*+:{_WS}*+)?+"
    rf"(?P<value>{_STRING}|[\[{{]|[^ \t\n\r\"\[\]{{}},:]++)"
)
"""One match per value (an object member's key and colon go with its value)."""
_TOKEN_TEXT = re.compile(rf"{_STRING}|[\[\]{{}}]")
_VALUE_BYTES = re.compile(_VALUE_TEXT.pattern.encode())
_TOKEN_BYTES = re.compile(_TOKEN_TEXT.pattern.encode())


def _position(raw: str | bytes, offset: int) -> tuple[int, int]:
    """serde_json's line and column of ``offset`` bytes consumed (columns count bytes)."""
    if isinstance(raw, str):
        start = raw.rfind("\n", 0, offset) + 1
        column = len(raw[start:offset].encode("utf-8", "surrogatepass"))
        return raw.count("\n", 0, offset) + 1, column
    start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - start


def _too_many_values(raw: str | bytes) -> int | None:
    """Where codex stops counting, or None when ``raw`` holds at most MAX_VALUES values."""
    pattern = _VALUE_TEXT if isinstance(raw, str) else _VALUE_BYTES
    found = pattern.finditer(raw)  # type: ignore[arg-type]
    left = MAX_VALUES
    while left > _STEP:
        if next(itertools.islice(found, _STEP - 1, None), None) is None:
            return None
        left -= _STEP
    match: Any = next(itertools.islice(found, left, None), None)
    if match is None:
        return None
    return int(match.start("value"))


def _too_deep(raw: str | bytes) -> int | None:
    """The offset of the first container nested deeper than MAX_DEPTH, or None."""
    pattern = _TOKEN_TEXT if isinstance(raw, str) else _TOKEN_BYTES
    depth = 0
    matches: Any = pattern.finditer(raw)  # type: ignore[arg-type]
    for tokens, match in enumerate(matches):
        token = match.group()
        if token in ("[", "{", b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return int(match.start())
        elif token in ("]", "}", b"]", b"}"):
            depth -= 1
        elif tokens > 2 * MAX_VALUES:
            return None  # past the values codex counts (keys are strings too): that limit first
    return None


def limit_problem(raw: str | bytes) -> str | None:
    """codex's words when ``raw`` holds too many values or nests too deeply, else None."""
    size = len(raw)
    if size <= MAX_DEPTH:
        return None
    if isinstance(raw, str):
        opens = raw.count("[") + raw.count("{")
        places = size > 2 * MAX_VALUES and raw.count("[") + raw.count(",") + raw.count(":")
    else:
        opens = raw.count(b"[") + raw.count(b"{")
        places = size > 2 * MAX_VALUES and raw.count(b"[") + raw.count(b",") + raw.count(b":")
    # Every value but the first follows a `[`, `,` or `:`; every container opens with a bracket.
    many = _too_many_values(raw) if places and places >= MAX_VALUES else None
    deep = _too_deep(raw) if opens > MAX_DEPTH else None
    if deep is not None and (many is None or deep < many):
        line, column = _position(raw, deep)
        return f"recursion limit exceeded at line {line} column {column + 1}"
    if many is not None:
        line, column = _position(raw, many)
        return (
            f"JSON-RPC message exceeds the limit of {MAX_VALUES} JSON values "
            f"at line {line} column {column}"
        )
    return None
