"""Requests carrying a large base64 member, parsed without passing it through the JSON parser.

``fs/writeFile``, ``fs/writeBlock`` and ``process/write`` of 1 MiB are 1.4 MB of JSON, nearly
all of it the member ``dataBase64`` or ``chunk``. :func:`parse_bulk` has it cut out and the
rest parsed by :func:`~execsdk._protocol.jsonrpc.parse_decoded` (``_protocol/bulk.py`` says when
that is safe); here it checks that the member sits in ``params`` of a request of the method it
belongs to, with no key named twice, and decodes the cut as strictly as codex does. The result
is the full parse's, with the member already decoded; or None, and the caller parses in full
(which also words every error).

Measured: 0.08 ms against 0.29 ms (parse, then decode) per 1 MiB request.

Pure functions: safe from any thread.
"""

from __future__ import annotations

from typing import Any

from execsdk._protocol.bulk import BULK_FROM
from execsdk._protocol.jsonrpc import parse_decoded
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
    msg = parse_decoded(raw, _NAMES, _params_of, strict_b64decode)
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
