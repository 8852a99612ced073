"""Messages carrying one large base64 member, parsed without passing it through the JSON parser.

A 1 MiB ``fs/readFile`` answer, ``fs/readBlock`` answer or ``fs/writeFile`` request is 1.4 MB
of JSON, nearly all of it one base64 string. The JSON parser scans that string and copies it
into a ``str``, and the base64 decoder then scans it again: about 0.3 ms per megabyte. Cutting
the string out of the message, parsing the small rest and decoding the cut in place takes
about 0.06 ms.

:func:`split_member` finds the cut only where the rest, parsed, must give the same message as
the whole: the member is looked for by its exact compact spelling (``"name":"``) near the
start; the rest names it once and holds no ``\\u`` escape (so no other spelling of the key
exists for the parser to merge); the cut ends at the next quote. Callers then check that the
parsed rest has the member where they expect it, as the empty string the cut left, and decode
the cut with a decoder that accepts only the base64 alphabet, so that it was a plain JSON
string with nothing to unescape. Any doubt: the caller parses the whole message instead.

Pure functions: safe from any thread.
"""

from __future__ import annotations

__all__ = ["BULK_FROM", "KEY_WITHIN", "member_text", "split_member"]

BULK_FROM = 16 * 1024
"""Messages from this size are worth cutting; below it the full parse costs less than looking."""

KEY_WITHIN = 4096
"""The member's key is looked for in the message's first bytes only (senders put it before
the text): a miss costs little that way."""


def split_member(raw: str | bytes, name: str) -> tuple[int, int, str | bytes] | None:
    """Where the text of string member ``name`` starts and ends in ``raw``, and ``raw`` without
    that text; None unless the rest names the member once and has no ``\\u`` escape."""
    needle, key = f'"{name}":"', f'"{name}"'
    if isinstance(raw, str):
        at = raw.find(needle, 0, KEY_WITHIN)
        end = raw.find('"', at + len(needle)) if at >= 0 else -1
        if end < 0 or "\\u" in raw[:at] or "\\u" in raw[end:]:
            return None
        seen = raw.count(key, 0, at) + raw.count(key, end)
        rest: str | bytes = raw[: at + len(needle)] + raw[end:]
    else:
        at = raw.find(needle.encode(), 0, KEY_WITHIN)
        end = raw.find(b'"', at + len(needle)) if at >= 0 else -1
        if end < 0 or b"\\u" in raw[:at] or b"\\u" in raw[end:]:
            return None
        seen = raw.count(key.encode(), 0, at) + raw.count(key.encode(), end)
        rest = raw[: at + len(needle)] + raw[end:]
    return (at + len(needle), end, rest) if seen == 0 else None


def member_text(raw: str | bytes, start: int, end: int) -> str | memoryview:
    """The cut ``raw[start:end]``: copied out of a ``str`` (decoders read ASCII ``str``), a
    view into ``bytes`` (no copy)."""
    return raw[start:end] if isinstance(raw, str) else memoryview(raw)[start:end]
