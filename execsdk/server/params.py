"""Reading request params the way the codex exec-server does, with its error messages.

codex decodes params with serde, so a bad request is answered with serde's wording ("missing
field `argv`", "unknown variant `kill`, expected `interrupt`", "invalid type: number, expected a
string"). Clients and the conformance suite compare those messages, and cattrs words them
differently, so the server validates the raw JSON here instead. Struct specs list the fields in
codex's declaration order: serde reports the first bad value in the order the members arrive and
then the first missing field in declaration order; unknown members are ignored.

URIs and base64 are read with :mod:`execsdk._protocol.wire` (codex's rules and wording).

Pure functions and immutable specs: safe from any thread.
"""

from __future__ import annotations

import json
import posixpath
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from execsdk import errors
from execsdk._protocol.wire import b64decode_strict, parse_file_uri

__all__ = [
    "BOOL",
    "STR",
    "U64",
    "UNIT",
    "Base64",
    "Decoder",
    "Enum",
    "Field",
    "MapOf",
    "Opaque",
    "Optional",
    "PathUri",
    "SeqOf",
    "Struct",
    "Uuid",
    "decode",
    "describe",
    "parse_path_uri",
    "platform_name",
]

U64_MAX = (1 << 64) - 1


def _invalid(message: str) -> errors.InvalidParams:
    return errors.InvalidParams(-32602, message)


def describe(value: object) -> str:
    """serde's name for an unexpected JSON value ("string \\"x\\"", "number", "map", ...)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, (int, float)):
        # codex reads params through an intermediate value that words every number this way.
        return "number"
    if isinstance(value, str):
        return "string " + json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _type_error(value: object, expected: str) -> errors.InvalidParams:
    return _invalid(f"invalid type: {describe(value)}, expected {expected}")


def platform_name() -> str:
    """The OS name codex uses in messages and ``platformOs``: "linux", "macos", ..."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("win"):
        return "windows"
    return sys.platform


# --------------------------------------------------------------------------- decoders


class Decoder:
    """Turns one JSON value into a Python value or raises ``errors.InvalidParams``.

    Thread-safety: decoders are immutable once built; share them freely.
    """

    expected = "a value"

    def __call__(self, value: object) -> object:
        raise NotImplementedError


class _Str(Decoder):
    expected = "a string"

    def __call__(self, value: object) -> object:
        if not isinstance(value, str):
            raise _type_error(value, self.expected)
        return value


class _Bool(Decoder):
    expected = "a boolean"

    def __call__(self, value: object) -> object:
        if value is not True and value is not False:
            raise _type_error(value, self.expected)
        return value


class _U64(Decoder):
    expected = "u64"

    def __call__(self, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, self.expected)
        # Negative, fractional and too-large numbers (even 1.0) get codex's terse wording.
        if isinstance(value, float) or value < 0 or value > U64_MAX:
            raise _invalid("invalid number")
        return value


class _Unit(Decoder):
    """Params of a method that takes none: absent, ``null`` or ``{}``."""

    expected = "unit"

    def __call__(self, value: object) -> object:
        if value is None or value == {}:
            return None
        raise _type_error(value, self.expected)


STR: Decoder = _Str()
BOOL: Decoder = _Bool()
U64: Decoder = _U64()
UNIT: Decoder = _Unit()


class Optional(Decoder):
    """``Option<T>``: ``null`` is accepted and gives None."""

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner
        self.expected = inner.expected

    def __call__(self, value: object) -> object:
        return None if value is None else self.inner(value)


class SeqOf(Decoder):
    """A JSON array whose elements all decode with ``inner``."""

    expected = "a sequence"

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner

    def __call__(self, value: object) -> object:
        if not isinstance(value, list):
            raise _type_error(value, self.expected)
        return [self.inner(item) for item in value]


class MapOf(Decoder):
    """A JSON object with string keys whose values decode with ``inner``."""

    expected = "a map"

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner

    def __call__(self, value: object) -> object:
        if not isinstance(value, dict):
            raise _type_error(value, self.expected)
        return {key: self.inner(item) for key, item in value.items()}


class Enum(Decoder):
    """A unit-variant enum: ``"name"`` or serde's map form ``{"name": null}``.

    ``extensions``: variants of our own (PROTOCOL.md §7, used only by clients that saw the
    capability announced) that are accepted but left out of the error message, so a client
    that sends a wrong variant reads codex's words.
    """

    expected = "string or map"

    def __init__(self, *variants: str, extensions: Sequence[str] = ()) -> None:
        self.variants = variants
        self.accepted = frozenset((*variants, *extensions))

    def _expected_variants(self) -> str:
        names = [f"`{v}`" for v in self.variants]
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} or {names[1]}"
        return "one of " + ", ".join(names)

    def __call__(self, value: object) -> object:
        if isinstance(value, dict) and len(value) == 1:
            ((name, inner),) = value.items()
            if inner is not None:
                raise _type_error(inner, "unit")
            value = name
        if not isinstance(value, str):
            raise _type_error(value, self.expected)
        if value not in self.accepted:
            raise _invalid(f"unknown variant `{value}`, expected {self._expected_variants()}")
        return value


class Opaque(Decoder):
    """A struct we accept but do not interpret (only its JSON type is checked)."""

    def __init__(self, name: str) -> None:
        self.expected = f"struct {name}"

    def __call__(self, value: object) -> object:
        if not isinstance(value, dict):
            raise _type_error(value, self.expected)
        return value


class Uuid(Decoder):
    """A UUID string (codex's ``threadId``), checked loosely with the uuid crate's wording."""

    expected = "a UUID string"

    def __call__(self, value: object) -> object:
        if not isinstance(value, str):
            raise _type_error(value, self.expected)
        text = value[9:] if value.startswith("urn:uuid:") else value
        for index, ch in enumerate(text, start=1):
            if ch not in "0123456789abcdefABCDEF-":
                raise _invalid(
                    "invalid character: expected an optional prefix of `urn:uuid:` followed by "
                    f"[0-9a-fA-F-], found `{ch}` at {index}"
                )
        digits = text.replace("-", "")
        if len(digits) != 32:
            raise _invalid(
                f"invalid length: expected length 32 for simple format, found {len(text)}"
            )
        return value


class Base64(Decoder):
    """Standard padded base64, decoded at validation time (an error is -32602)."""

    expected = "a string"

    def __call__(self, value: object) -> object:
        if not isinstance(value, str):
            raise _type_error(value, self.expected)
        try:
            return b64decode_strict(value)
        except ValueError as exc:
            raise _invalid(str(exc)) from None


@attrs.frozen
class PathUri:
    """A ``file://`` URI read from params.

    ``path`` is the absolute path, or None when the URI names a host other than localhost;
    then ``host_error`` is codex's complaint ("'file://h/x' is invalid on 'linux'"), which each
    method reports in its own way.
    """

    uri: str
    path: str | None
    host_error: str | None = None

    def require(self) -> str:
        """The path, or ``errors.InvalidRequest`` with the host complaint (fs methods)."""
        if self.path is None:
            raise errors.InvalidRequest(-32600, self.host_error or "invalid path URI")
        return self.path


class _Uri(Decoder):
    expected = "a string"

    def __call__(self, value: object) -> object:
        if not isinstance(value, str):
            raise _type_error(value, self.expected)
        return parse_path_uri(value)


URI: Decoder = _Uri()


@attrs.frozen
class Field:
    """One struct member: its wire name, decoder, and what a missing member means.

    ``required``: missing -> "missing field `name`". Otherwise a missing member gives
    ``default`` (``Optional`` decoders additionally accept ``null``).
    """

    name: str
    decoder: Decoder
    required: bool = True
    default: object = None


class Struct(Decoder):
    """A serde struct: a JSON object (or, positionally, an array) with named members."""

    def __init__(self, name: str, fields: Sequence[Field], size: int | None = None) -> None:
        self.name = name
        self.fields = tuple(fields)
        self.by_name = {f.name: f for f in self.fields}
        # codex's struct may have members we do not know; arrays are measured against it.
        self.size = size if size is not None else len(self.fields)
        self.expected = f"struct {name}"

    def __call__(self, value: object) -> object:
        if isinstance(value, list):
            return self._from_array(value)
        if not isinstance(value, dict):
            raise _type_error(value, self.expected)
        out: dict[str, object] = {}
        for key, item in value.items():
            spec = self.by_name.get(key)
            if spec is not None:
                out[key] = spec.decoder(item)
        for spec in self.fields:
            if spec.name not in out:
                if spec.required:
                    raise _invalid(f"missing field `{spec.name}`")
                out[spec.name] = spec.default
        return out

    def _from_array(self, value: list[object]) -> dict[str, object]:
        plural = "element" if self.size == 1 else "elements"
        if len(value) < self.size or len(value) < len(self.fields):
            what = f"struct {self.name} with {self.size} {plural}"
            raise _invalid(f"invalid length {len(value)}, expected {what}")
        if len(value) > self.size:
            raise _invalid(f"invalid length {len(value)}, expected fewer elements in array")
        return {
            spec.name: spec.decoder(item) for spec, item in zip(self.fields, value, strict=False)
        }


def decode(decoder: Decoder, params: object) -> Any:
    """Decode ``params`` (the raw JSON, None when absent) with ``decoder``."""
    return decoder(params)


# --------------------------------------------------------------------------- URIs


def parse_path_uri(value: str) -> PathUri:
    """Parse a G2 path URI as codex does (PROTOCOL.md §3, paths; ``wire.parse_file_uri``).

    Raises:
        errors.InvalidParams: not a URI ("invalid URI: relative URL without a base"), another
            scheme, a query or a fragment. A foreign host is reported through ``PathUri``.
    """
    try:
        parsed = parse_file_uri(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    if parsed.path is None:
        shown = parsed.drive or value
        return PathUri(
            uri=shown, path=None, host_error=f"'{shown}' is invalid on '{platform_name()}'"
        )
    if "\0" in parsed.path:
        raise _invalid(f"'{value}' is invalid on '{platform_name()}'")  # as codex, -32602
    return PathUri(uri=value, path=parsed.path)


def normalize_path(path: str) -> str:
    """``path`` with ``.``/``..`` resolved textually (used for paths we report back)."""
    return posixpath.normpath(path) if path else path


def plain_mapping(value: Mapping[str, object]) -> dict[str, str]:
    """A ``{str: str}`` dict (values already checked by a ``MapOf(STR)`` decoder)."""
    return {str(k): str(v) for k, v in value.items()}
