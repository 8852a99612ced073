"""Requests carrying a large base64 member, parsed without passing it through the JSON parser.

A 1 MiB ``fs/writeFile``, ``fs/writeBlock`` or ``process/write`` is 1.4 MB of JSON, nearly all
of it one base64 string. The JSON parser scans that string and copies it into a ``str``, then
the base64 decoder scans it again: about 0.33 ms per megabyte, a sixth of such a request's time
on loopback. :func:`parse_bulk` cuts the string out of the message bytes, parses the small rest,
and decodes the cut in place: about 0.06 ms.

The result is the full parse's, or None (the caller then parses in full, which also words
every error). The cut is taken only when nothing else could have been meant:

- the member is found by its exact compact spelling (``"chunk":"``) for a method whose member
  of that name is base64, and the method is checked after parsing the rest;
- the rest names the member once and holds no ``\\u`` escape, so no other spelling of the key
  (which the parser would merge as a duplicate) is present;
- after parsing, the member sits in ``params`` and is the empty string left by the cut;
- the cut decodes as base64 codex accepts, so it was a plain JSON string made of the base64
  alphabet only: no escape, no quote, no control character.

Pure functions: safe from any thread.
"""

from __future__ import annotations

from typing import Any

from execsdk._protocol.jsonrpc import loads
from execsdk.server.params import DecodedBase64, strict_b64decode

__all__ = ["BULK_FROM", "parse_bulk"]

BULK_FROM = 16 * 1024
"""Messages from this size are tried; below it the full parse costs less than the checks."""

_MEMBERS = {"process/write": "chunk", "fs/writeBlock": "chunk", "fs/writeFile": "dataBase64"}
_KEY_WITHIN = 4096
"""The member's key is looked for in the message's first bytes only (where clients put it,
before the text): a miss costs little that way."""
_NAMES = tuple(dict.fromkeys(_MEMBERS.values()))


def parse_bulk(raw: str | bytes) -> dict[str, Any] | None:
    """The message ``raw`` with its base64 member already decoded (a
    :class:`~execsdk.server.params.DecodedBase64`), or None when the full parse must run."""
    if len(raw) < BULK_FROM:
        return None
    for name in _NAMES:
        found = _locate(raw, name)
        if found is not None:
            return _cut(raw, name, *found)
    return None


def _locate(raw: str | bytes, name: str) -> tuple[int, int, str | bytes] | None:
    """Where the text of string member ``name`` starts and ends, and the rest of ``raw`` (all
    but that text), if the rest names the member once and has no ``\\u`` escape."""
    needle, key = f'"{name}":"', f'"{name}"'
    if isinstance(raw, str):
        at = raw.find(needle, 0, _KEY_WITHIN)
        end = raw.find('"', at + len(needle)) if at >= 0 else -1
        if end < 0 or "\\u" in raw[:at] or "\\u" in raw[end:]:
            return None
        seen = raw.count(key, 0, at) + raw.count(key, end)
        rest: str | bytes = raw[: at + len(needle)] + raw[end:]
    else:
        at = raw.find(needle.encode(), 0, _KEY_WITHIN)
        end = raw.find(b'"', at + len(needle)) if at >= 0 else -1
        if end < 0 or b"\\u" in raw[:at] or b"\\u" in raw[end:]:
            return None
        seen = raw.count(key.encode(), 0, at) + raw.count(key.encode(), end)
        rest = raw[: at + len(needle)] + raw[end:]
    return (at + len(needle), end, rest) if seen == 0 else None


def _cut(
    raw: str | bytes, name: str, start: int, end: int, rest: str | bytes
) -> dict[str, Any] | None:
    """:func:`parse_bulk` once the member's text is found at ``[start, end)``."""
    try:
        msg = loads(rest)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or "id" not in msg:
        return None
    method, params = msg.get("method"), msg.get("params")
    if (
        not isinstance(method, str)
        or _MEMBERS.get(method) != name
        or not isinstance(params, dict)
        or params.get(name) != ""
    ):
        return None
    # A str's text is copied out (the decoder reads an ASCII str); bytes are read in place.
    data = strict_b64decode(raw[start:end] if isinstance(raw, str) else memoryview(raw)[start:end])
    if data is None:
        return None
    params[name] = DecodedBase64(data)
    return msg
