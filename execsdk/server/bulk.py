"""Requests carrying a large base64 member, parsed without passing it through the JSON parser.

``fs/writeFile``, ``fs/writeBlock`` and ``process/write`` of 1 MiB are 1.4 MB of JSON, nearly
all of it the member ``dataBase64`` or ``chunk``. :func:`parse_bulk` cuts it out with
:mod:`execsdk._protocol.bulk` (which says when that is safe), parses the rest, checks that the
member sits in ``params`` of a request of the method it belongs to, and decodes the cut as
strictly as codex does. The result is the full parse's, with the member already decoded; or
None, and the caller parses in full (which also words every error).

Measured: 0.08 ms against 0.29 ms (parse, then decode) per 1 MiB request.

Pure functions: safe from any thread.
"""

from __future__ import annotations

from typing import Any

from execsdk._protocol.bulk import BULK_FROM, Base64Text, member_text, split_member
from execsdk._protocol.jsonrpc import loads
from execsdk.server.dupkeys import keys_unique
from execsdk.server.params import strict_b64decode

__all__ = ["parse_bulk"]

_MEMBERS = {"process/write": "chunk", "fs/writeBlock": "chunk", "fs/writeFile": "dataBase64"}
_NAMES = tuple(dict.fromkeys(_MEMBERS.values()))


def parse_bulk(raw: str | bytes) -> dict[str, Any] | None:
    """The request ``raw`` with its base64 member already decoded (a
    :class:`~execsdk._protocol.bulk.Base64Text`), or None when the full parse must run."""
    if len(raw) < BULK_FROM:
        return None
    for name in _NAMES:
        found = split_member(raw, name)
        if found is not None:
            return _cut(raw, name, *found)
    return None


def _cut(
    raw: str | bytes, name: str, start: int, end: int, rest: str | bytes
) -> dict[str, Any] | None:
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
        or not keys_unique(rest, msg)  # a duplicate key is the full parse's to report
    ):
        return None
    data = strict_b64decode(member_text(raw, start, end))
    if data is None:
        return None
    params[name] = Base64Text(data)
    return msg
