"""How bytes and paths are spelled on the wire: the one base64 codec and the one path <-> URI map.

Client and server both use this module; where they must differ, the difference is named here:

- **base64** (PROTOCOL.md §3: standard alphabet, with padding). :func:`b64encode` writes it.
  :func:`b64decode` reads what a server sends (alphabet only; the client's answers and
  notifications). :func:`b64decode_strict` reads what a client sends exactly as strictly as
  codex does, with the Rust base64 crate's error messages (PROTOCOL.md §3.5, §3.11), which the
  conformance suite compares; :func:`try_b64decode_strict` is its fast path.
  :class:`Base64Text` carries bytes already decoded by the bulk parser (``bulk.py``) through
  the checks that expect a string; every decoder here returns its bytes as they are.
- **paths** (PROTOCOL.md §3, paths). :func:`path_to_uri` writes a ``file://`` URI byte-identical
  to codex's own. :func:`uri_to_path` is its exact inverse (a client reading a server's URIs).
  :func:`parse_file_uri` reads a URI the way codex reads a client's: the URL standard's
  file-scheme rules (controls trimmed, ``\\`` as ``/``, ``.``/``..`` resolved textually), with
  codex's refusals. :func:`encode_path`/:func:`decode_path` pick the form of a generation:
  plain absolute paths (G1) or URIs (G2).

Pure functions: safe from any thread. pybase64 is used when installed (the ``fast`` extra).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
import urllib.parse
from collections.abc import Callable
from typing import Literal

import attrs

__all__ = [
    "Base64Text",
    "Generation",
    "ParsedUri",
    "b64decode",
    "b64decode_alphabet",
    "b64decode_strict",
    "b64encode",
    "b64encode_bytes",
    "decode_path",
    "encode_path",
    "json_type",
    "parse_file_uri",
    "path_to_uri",
    "try_b64decode_strict",
    "uri_to_path",
]

Generation = Literal["G1", "G2"]


def json_type(value: object) -> str:
    """How a JSON value's type is named in our messages ("a string", "null", ...)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --------------------------------------------------------------------------- base64

_encode_impl: Callable[[bytes], bytes]
b64decode_alphabet: Callable[[str | bytes | memoryview], bytes]
"""Decode standard padded base64, refusing (``ValueError``) any character outside its alphabet:
pybase64 when installed, else the stdlib's strict mode."""
try:
    import pybase64

    def _encode_impl(data: bytes) -> bytes:
        return bytes(pybase64.b64encode(data))

    def b64decode_alphabet(text: str | bytes | memoryview) -> bytes:
        return pybase64.b64decode(text, validate=True)

except ImportError:  # pragma: no cover - pybase64 comes with the fast extra
    _encode_impl = base64.b64encode
    if sys.version_info >= (3, 11):
        # base64.b64decode(validate=True) checks the text with a regex first, which costs as
        # much as decoding; binascii's strict mode validates while it decodes.
        def b64decode_alphabet(text: str | bytes | memoryview) -> bytes:
            return binascii.a2b_base64(text, strict_mode=True)

    else:

        def b64decode_alphabet(text: str | bytes | memoryview) -> bytes:
            return base64.b64decode(text, validate=True)


class Base64Text(str):
    """A base64 member decoded before the message was checked.

    To every check it is the empty string the cut left; the decoders of this module return
    :attr:`data` for it instead of decoding.
    """

    data: bytes

    def __new__(cls, data: bytes) -> Base64Text:
        self = super().__new__(cls, "")
        self.data = data
        return self


def b64encode(data: bytes) -> str:
    """Standard padded base64, as text."""
    return _encode_impl(data).decode("ascii")


def b64encode_bytes(data: bytes) -> bytes:
    """Standard padded base64 as ASCII bytes (for messages built as bytes, no ``str`` step)."""
    return _encode_impl(data)


def b64decode(text: object) -> bytes:
    """Decode base64 a server sent; ``TypeError`` for a non-string, ``ValueError`` for a
    character outside the alphabet or a bad length."""
    if text.__class__ is not str:
        if text.__class__ is Base64Text:
            return text.data
        raise TypeError(f"expected a base64 string, got {json_type(text)}")
    try:
        return b64decode_alphabet(text)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError(f"invalid base64 ({exc})") from None


_B64_SYMBOLS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_ALPHABET = frozenset(_B64_SYMBOLS)
_B64_VALUE = {c: i for i, c in enumerate(_B64_SYMBOLS)}
_PAD = ord("=")


def _canonical_tail(raw: bytes, decoded: bytes) -> bool:
    # The alphabet decoders accept non-zero trailing bits ("aG==" -> b"h"); codex refuses.
    # ``raw`` may be just the input's last four bytes.
    if not raw or not raw.endswith(b"="):
        return True
    tail = len(decoded) % 3
    return _encode_impl(decoded[len(decoded) - tail :])[-4:] == raw[-4:] if tail else True


def _padded_quad(quad: bytes) -> bool:
    # The last four symbols end in at most two "=" (the stdlib's strict modes take "aGVs====").
    return not quad or (
        quad[0] != _PAD and quad[1] != _PAD and (quad[2] != _PAD or quad[3] == _PAD)
    )


def try_b64decode_strict(encoded: bytes | memoryview | str) -> bytes | None:
    """Decode ASCII base64 that codex would accept; None for anything it might refuse (the
    caller then takes :func:`b64decode_strict`, which words the error)."""
    try:
        decoded = b64decode_alphabet(encoded)
    except (binascii.Error, ValueError):
        return None
    tail = encoded[-4:]
    tail_bytes = tail.encode("ascii") if isinstance(tail, str) else bytes(tail)
    if len(encoded) % 4 or not _padded_quad(tail_bytes):
        return None
    return decoded if _canonical_tail(tail_bytes, decoded) else None


def b64decode_strict(text: str) -> bytes:
    """Decode standard padded base64 exactly as strictly as codex.

    Raises:
        ValueError: with the Rust base64 crate's message ("Invalid symbol 33, offset 0.",
            "Invalid padding", "Invalid input length: 5", "Invalid last symbol 71, offset 1.").
    """
    if type(text) is Base64Text:
        return text.data
    # Both decoders read an ASCII str in place: no encoded copy of a megabyte-sized chunk.
    decoded = try_b64decode_strict(text) if text.isascii() else None
    if decoded is not None:
        return decoded
    raw = text.encode("utf-8", "surrogatepass")
    _explain_b64_error(raw)
    # Every input the crate refuses is explained above; anything else decodes leniently.
    return base64.b64decode(raw)


def _explain_b64_error(raw: bytes) -> None:
    """Raise the crate's error for ``raw``, mirroring its decode order; return if valid."""
    n = len(raw)
    rem = n % 4
    if rem == 1:
        last = raw[-1]
        if last != _PAD and last not in _B64_ALPHABET:
            raise ValueError(f"Invalid symbol {last}, offset {n - 1}.")
    # Complete quads before the last one are decoded first; any '=' there is an invalid byte.
    body_len = n - 4 if rem == 0 and n else n - rem
    for i in range(body_len):
        if raw[i] not in _B64_ALPHABET:
            raise ValueError(f"Invalid symbol {raw[i]}, offset {i}.")
    morsels: list[int] = []
    padding = 0
    first_pad = 0
    last_symbol = 0
    for j, b in enumerate(raw[body_len:]):
        if b == _PAD:
            if j < 2:
                raise ValueError(f"Invalid symbol {b}, offset {body_len + j}.")
            if padding == 0:
                first_pad = j
            padding += 1
            continue
        if padding:
            raise ValueError(f"Invalid symbol {_PAD}, offset {body_len + first_pad}.")
        if b not in _B64_ALPHABET:
            raise ValueError(f"Invalid symbol {b}, offset {body_len + j}.")
        last_symbol = b
        morsels.append(_B64_VALUE[b])
    if n and len(morsels) < 2:
        raise ValueError(f"Invalid input length: {body_len + len(morsels)}")
    if (padding + len(morsels)) % 4:
        raise ValueError("Invalid padding")
    if morsels:
        bits = 0
        for m in (*morsels, 0, 0, 0, 0)[:4]:
            bits = (bits << 6) | m
        keep = len(morsels) * 6 // 8
        mask = (1 << (24 - keep * 8)) - 1
        if bits & mask:
            raise ValueError(
                f"Invalid last symbol {last_symbol}, offset {body_len + len(morsels) - 1}."
            )


# --------------------------------------------------------------------------- paths and URIs

_FILE_SCHEME = "file://"
# What codex (the URL standard's path percent-encode set) leaves unescaped besides letters,
# digits and "_.-~"; measured against codex 0.169 with every printable ASCII character in a
# name. Percent-encoded: controls, space, '"#%<>?\`{}', DEL and non-ASCII (as UTF-8).
_URI_SAFE = "/!$&'()*+,:;=@[]^|"


def _require_absolute(path: object) -> str:
    if not isinstance(path, str):
        raise TypeError(f"expected a path string, got {json_type(path)}")
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute: {path!r}")
    return path


def path_to_uri(path: str) -> str:
    """``/tmp/a b#1`` -> ``file:///tmp/a%20b%231``, byte-identical to codex's own URIs.

    Lone surrogates (undecodable bytes from ``os.fsdecode``) are encoded as the raw bytes they
    stand for; any other surrogate is not text and raises ``ValueError``.
    """
    path = _require_absolute(path)
    return _FILE_SCHEME + urllib.parse.quote(path, safe=_URI_SAFE, errors="surrogateescape")


def _local_host(host: str) -> bool:
    return urllib.parse.unquote(host).lower() in ("", "localhost")


def uri_to_path(uri: object) -> str:
    """The POSIX path of a ``file://`` URI as servers send it, percent-encoded or raw: the
    inverse of :func:`path_to_uri` (nothing is trimmed or resolved)."""
    if not isinstance(uri, str):
        raise TypeError(f"expected a file:// URI string, got {json_type(uri)}")
    if not uri.startswith(_FILE_SCHEME):
        raise ValueError(f"expected a file:// URI, got {uri!r}")
    rest = uri[len(_FILE_SCHEME) :]
    if not rest.startswith("/"):
        host, sep, tail = rest.partition("/")
        if not _local_host(host) or not sep:
            raise ValueError(f"file URI names another host: {uri!r}")
        rest = "/" + tail
    return urllib.parse.unquote(rest, errors="surrogateescape")


@attrs.frozen
class ParsedUri:
    """A path URI as a server reads it: ``path`` is absolute, or None when the URI names a host
    other than localhost (``host`` then says which) or a Windows drive (``drive`` is then the
    URI as codex prints it when it refuses it: ``file:///C:/x``)."""

    path: str | None
    host: str = ""
    drive: str | None = None


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4: "." and ".." are resolved textually; "//" is kept, unlike normpath.
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg in (".", "%2e", "%2E"):
            if last:
                out.append("")
        elif seg.lower() in ("..", ".%2e", "%2e.", "%2e%2e"):
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_DRIVE_HOST = re.compile(r"[A-Za-z][:|]")
_DRIVE_PATH = re.compile(r"/([A-Za-z])(:|%3[Aa])(?=/|$)")


def parse_file_uri(value: str) -> ParsedUri:
    """Read a path URI as codex reads one from a client (PROTOCOL.md §3, paths; §6 item 42).

    Raises:
        ValueError: with codex's message: not a URI ("invalid URI: relative URL without a
            base"), another scheme, a query or a fragment.
    """
    # The URL standard strips leading/trailing C0 controls and spaces and drops tabs/newlines.
    text = value.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")
    split = urllib.parse.urlsplit(text, allow_fragments=True)
    scheme = split.scheme.lower()
    if not scheme or ":" not in text:
        raise ValueError("invalid URI: relative URL without a base")
    if scheme != "file":
        raise ValueError(f"unsupported path URI scheme `{scheme}`")
    if "?" in text:
        raise ValueError("query parameters are not allowed in path URIs")
    if "#" in text:
        raise ValueError("fragments are not allowed in path URIs")
    rest = text[len(split.scheme) + 1 :].replace("\\", "/")
    host = ""
    if rest.startswith("//"):
        rest = rest[2:]
        slash = rest.find("/")
        host, rest = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if _DRIVE_HOST.fullmatch(host):
        # The URL standard reads `file://c:/x` as the path /c:/x.
        host, rest = "", f"/{host[0]}:{rest}"
    elif "@" in host or (":" in host and not host.startswith("[")):
        raise ValueError("invalid URI: invalid international domain name")  # userinfo, port
    if not _local_host(host):
        return ParsedUri(None, urllib.parse.unquote(host).lower())
    if not rest.startswith("/"):
        rest = "/" + rest
    drive = _DRIVE_PATH.match(rest)
    if drive is not None:
        # codex (0.169) refuses a Windows drive on a POSIX host rather than take /c:/x as a
        # path; it prints the URI with the letter in capitals.
        return ParsedUri(None, drive=f"file:///{drive.group(1).upper()}{rest[2:]}")
    raw = urllib.parse.unquote_to_bytes(_remove_dot_segments(rest))
    return ParsedUri(os.fsdecode(raw))


def encode_path(generation: Generation, path: str) -> str:
    """The wire form of an absolute path: itself (G1) or a ``file://`` URI (G2)."""
    if generation == "G2":
        return path_to_uri(path)
    return _require_absolute(path)


def decode_path(generation: Generation, value: object) -> str:
    """The absolute path for a wire value: a plain path (G1) or a ``file://`` URI (G2)."""
    if generation == "G2":
        return _require_absolute(uri_to_path(value))
    return _require_absolute(value)
