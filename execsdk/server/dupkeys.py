"""Duplicate object keys, refused the way codex refuses them.

codex 0.169 answers a message that names a key twice in one JSON object, at any depth and in
any spelling (``"\\u00e9"`` and ``"é"`` are the same key), with a parse error: "duplicate JSON
object key `k` at line L column C", where C counts bytes up to the end of the second key and the
whitespace after it. orjson (like the stdlib) keeps the last value instead, so the server
checks:

- :func:`keys_unique` is the cheap test every parsed message takes. Each key of a JSON text is
  a string followed by optional whitespace and a colon, so the text has at least as many such
  places as keys; the parsed message has that many minus the duplicates. Equal counts prove
  there is none. More places (a spaced key, ``\\":`` inside a string) only mean "look closer".
- :func:`first_duplicate` looks closer: it walks the text and names the first duplicate in
  document order, or None (also when the text breaks before any duplicate: then its syntax
  error comes first, as in codex).

Pure functions: safe from any thread.
"""

from __future__ import annotations

import json
import re

__all__ = ["first_duplicate", "keys_unique"]

_KEY_END_TEXT = re.compile(r'"[ \t\n\r]*:')
_KEY_END_BYTES = re.compile(rb'"[ \t\n\r]*:')
_WS = re.compile(r"[ \t\n\r]*")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"not JSON: {name}")


# Keys and scalars (strings, numbers, literals) are read by the stdlib's decoder; NaN and
# Infinity are refused as serde refuses them.
_decode_at = json.JSONDecoder(parse_constant=_refuse_constant).raw_decode


def keys_unique(text: str | bytes, message: object) -> bool:
    """True when ``message``, parsed from ``text``, certainly had no duplicate key."""
    places = len(
        _KEY_END_TEXT.findall(text) if isinstance(text, str) else _KEY_END_BYTES.findall(text)
    )
    keys = 0
    stack: list[object] = [message]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            keys += len(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return places == keys


class _Duplicate(Exception):
    def __init__(self, key: str, end: int) -> None:
        super().__init__(key)
        self.key = key
        self.end = end


def first_duplicate(text: str | bytes) -> str | None:
    """codex's words for the first key named twice in one object of ``text``, or None when
    there is none before the end of the text or its first syntax error."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        _value(text, _skip(text, 0), 0)
    except _Duplicate as dup:
        line_start = text.rfind("\n", 0, dup.end) + 1
        line = text.count("\n", 0, dup.end) + 1
        column = len(text[line_start : dup.end].encode("utf-8", "surrogatepass"))
        return f"duplicate JSON object key `{dup.key}` at line {line} column {column}"
    except (ValueError, IndexError, RecursionError):
        return None
    return None


_MAX_DEPTH = 128  # serde_json's recursion limit


def _skip(text: str, at: int) -> int:
    match = _WS.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _value(text: str, at: int, depth: int) -> int:
    """Walk the value at ``at``; return where it ends. Raises :class:`_Duplicate`, or
    ``ValueError``/``IndexError`` for text that is not JSON."""
    first = text[at]
    if first == "{":
        return _object(text, at, depth + 1)
    if first == "[":
        if depth >= _MAX_DEPTH:
            raise ValueError("nested too deeply")
        at = _skip(text, at + 1)
        if text[at] == "]":
            return at + 1
        while True:
            at = _skip(text, _value(text, at, depth + 1))
            if text[at] == "]":
                return at + 1
            if text[at] != ",":
                raise ValueError("expected , or ]")
            at = _skip(text, at + 1)
    _, end = _decode_at(text, at)
    return end


def _object(text: str, at: int, depth: int) -> int:
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    at = _skip(text, at + 1)
    if text[at] == "}":
        return at + 1
    seen: set[str] = set()
    while True:
        if text[at] != '"':
            raise ValueError("expected a key")
        key, at = _decode_at(text, at)
        at = _skip(text, at)
        if key in seen:
            raise _Duplicate(key, at)
        seen.add(key)
        if text[at] != ":":
            raise ValueError("expected :")
        at = _skip(text, _value(text, _skip(text, at + 1), depth))
        if text[at] == "}":
            return at + 1
        if text[at] != ",":
            raise ValueError("expected , or }")
        at = _skip(text, at + 1)
