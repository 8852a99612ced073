"""Log previews of JSON-RPC messages with the secrets taken out.

Both ends log frames at DEBUG (STYLE.md: truncated to 200 characters); neither may show file
contents, process input or output, environment values or HTTP headers, which can carry
credentials. Pure functions: safe from any thread.
"""

from __future__ import annotations

import json

__all__ = ["PREVIEW_CHARS", "SECRET_MEMBERS", "redacted"]

SECRET_MEMBERS = frozenset(
    {"dataBase64", "chunk", "bodyBase64", "deltaBase64", "env", "set", "headers"}
)
"""Members whose values are file contents, process I/O, environment values or HTTP headers:
never shown, only their size."""

PREVIEW_CHARS = 200


def _redact(value: object) -> object:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if key in SECRET_MEMBERS and item is not None:
                size = len(item) if isinstance(item, (str, list, dict)) else 1
                out[key] = f"<{size} redacted>"
            else:
                out[key] = _redact(item)
        return out
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def redacted(message: object) -> str:
    """A one-line preview of a decoded message: secret members replaced by their sizes,
    then cut to ``PREVIEW_CHARS`` characters."""
    text = json.dumps(_redact(message), ensure_ascii=False, default=repr)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."
