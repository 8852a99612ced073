"""Reading one incoming message as codex does: JSON syntax, duplicate keys, ids, bulk members.

Errors are worded as serde_json words them (codex quotes serde): clients and the conformance
suite compare the texts. A large ``fs/writeFile``, ``fs/writeBlock`` or ``process/write`` is
parsed without passing its base64 text through the JSON parser (:func:`parse_bulk`): the
member is cut out and the rest parsed by :func:`~execsdk._protocol.jsonrpc.parse_decoded`
(``_protocol/bulk.py`` says when that is safe); here the member must sit in ``params`` of a
request of the method it belongs to, with no key named twice, and decode as strictly as codex
decodes. Otherwise the full parse runs, which also words every error (0.08 ms against 0.29 ms
per 1 MiB request). Pure functions: safe from any thread.
"""

from __future__ import annotations

import json
import re
from typing import Any

from execsdk._protocol.bulk import BULK_FROM
from execsdk._protocol.jsonrpc import (
    loads,
    parse_decoded,
)
from execsdk._protocol.wire import (
    try_b64decode_strict,
)
from execsdk.server import params as P
from execsdk.server.dupkeys import first_duplicate, keys_unique

__all__ = ["error_object_problem", "parse", "parse_bulk", "valid_id"]

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
