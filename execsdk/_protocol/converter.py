"""cattrs converters between the wire types (``types.py``) and JSON-ready Python values.

One hook factory serves every attrs class: snake_case fields become camelCase members (a
trailing ``_`` is stripped), and a field whose default is ``None`` is left out when it is
``None`` while every other field is always sent (the server needs ``tty`` even when false,
PROTOCOL.md §3.4). ``bytes`` is standard base64 with padding, decoded with validation.
:data:`~execsdk._protocol.types.WirePath` is a plain absolute path for G1 servers and a
percent-encoded ``file://`` URI for G2 servers (§3). Primitive fields are type-checked
(``"5"`` is not an int, ``1`` is not a bool), unknown members from the server are ignored
(unless ``strict``), and a mismatch is reported as :class:`~execsdk.errors.ProtocolError`
naming the failing field path in wire names, e.g. ``$.chunks[0].seq``.

Converters are built once per (generation, strict) and shared; once built (every method and
notification type is generated up front) they are only read, so they are safe to use from any
thread. Do not register hooks on a shared converter.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from execsdk._protocol import methods
from execsdk._protocol.jsonrpc import dumps
from execsdk._protocol.types import WirePath
from execsdk._protocol.wire import (
    Generation,
    b64decode,
    b64encode,
    decode_path,
    encode_path,
    json_type,
)
from execsdk.errors import ProtocolError

__all__ = [
    "make_converter",
    "structure_result",
    "unstructure_params",
    "wire_name",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_REPORTED_PROBLEMS = 5


# --------------------------------------------------------------------------- names


def wire_name(name: str) -> str:
    """The camelCase wire member for a snake_case field (``data_base64`` -> ``dataBase64``)."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --------------------------------------------------------------------------- strict primitives


def _structure_str(value: object, _: object) -> str:
    if value.__class__ is str:
        return value
    raise TypeError(f"expected a string, got {json_type(value)}")


def _structure_int(value: object, _: object) -> int:
    if value.__class__ is int:
        return value
    raise TypeError(f"expected an integer, got {json_type(value)}")


def _structure_float(value: object, _: object) -> float:
    if value.__class__ is float or value.__class__ is int:
        return value
    raise TypeError(f"expected a number, got {json_type(value)}")


def _structure_bool(value: object, _: object) -> bool:
    if value is True or value is False:
        return value
    raise TypeError(f"expected a boolean, got {json_type(value)}")


def _structure_bytes(value: object, _: object) -> bytes:
    return b64decode(value)


def _structure_any(value: object, _: object) -> object:
    return value


def _structure_capabilities(value: object, _: object) -> dict[str, bool]:
    # Capabilities are open-ended (§3.2): keep the boolean members, skip anything else, so a
    # future server announcing a structured capability does not break initialize.
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {json_type(value)}")
    return {k: v for k, v in value.items() if isinstance(k, str) and (v is True or v is False)}


def _origin(typ: Any) -> object:
    origin: object = get_origin(typ)
    return origin


def _literal_factory(typ: Any) -> Any:
    allowed = get_args(typ)
    shown = ", ".join(repr(a) for a in allowed)

    def structure_literal(value: object, _: object) -> object:
        for candidate in allowed:
            if value == candidate and value.__class__ is candidate.__class__:
                return candidate
        raise ValueError(f"expected one of {shown}, got {value!r}")

    return structure_literal


# --------------------------------------------------------------------------- converter


def _is_wire_class(typ: Any) -> bool:
    return isinstance(typ, type) and attrs.has(typ)


def _build(generation: Generation, strict: bool) -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=strict)

    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(bytes, _structure_bytes)
    conv.register_unstructure_hook(bytes, b64encode)
    conv.register_structure_hook_func(lambda typ: typ is object, _structure_any)

    # cattrs accepts any iterable for a list (a string becomes a list of characters) and any
    # mapping-like value for a dict; the wire has exactly JSON arrays and objects.
    def list_factory(typ: Any) -> Any:
        inner = list_structure_factory(typ, conv)

        def structure_list(value: object, typ: Any) -> Any:
            if value.__class__ is not list:
                raise TypeError(f"expected an array, got {json_type(value)}")
            return inner(value, typ)

        return structure_list

    def dict_factory(typ: Any) -> Any:
        inner = mapping_structure_factory(typ, conv)

        def structure_dict(value: object, typ: Any) -> Any:
            if value.__class__ is not dict:
                raise TypeError(f"expected an object, got {json_type(value)}")
            return inner(value, typ)

        return structure_dict

    conv.register_structure_hook_factory(lambda typ: _origin(typ) is list, list_factory)
    conv.register_structure_hook_factory(lambda typ: _origin(typ) is dict, dict_factory)
    conv.register_structure_hook_factory(lambda typ: _origin(typ) is Literal, _literal_factory)
    # Registered after the generic dict factory, so it is tried first.
    conv.register_structure_hook_func(lambda typ: typ == dict[str, bool], _structure_capabilities)

    def structure_path(value: object, _: object) -> str:
        return decode_path(generation, value)

    def unstructure_path(value: str) -> str:
        return encode_path(generation, value)

    conv.register_structure_hook(WirePath, structure_path)
    conv.register_unstructure_hook(WirePath, unstructure_path)

    def structure_factory(cls: Any) -> Any:
        overrides: dict[str, Any] = {
            a.name: override(rename=wire_name(a.name)) for a in attrs.fields(cls)
        }
        return make_dict_structure_fn(
            cls,
            conv,
            _cattrs_forbid_extra_keys=strict,
            _cattrs_detailed_validation=True,
            **overrides,
        )

    def unstructure_factory(cls: Any) -> Any:
        # Omission is per field: only fields defaulting to None are optional on the wire.
        overrides: dict[str, Any] = {
            a.name: override(rename=wire_name(a.name), omit_if_default=a.default is None)
            for a in attrs.fields(cls)
        }
        return make_dict_unstructure_fn(cls, conv, **overrides)

    conv.register_structure_hook_factory(_is_wire_class, structure_factory)
    conv.register_unstructure_hook_factory(_is_wire_class, unstructure_factory)

    # Generate every hook now: the first process/output must not pay for code generation, and a
    # fully built converter is only read afterwards.
    wire_types: list[type] = list(methods.NOTIFICATIONS.values())
    for spec in methods.METHODS.values():
        wire_types += (spec.params_type, spec.result_type)
    for typ in wire_types:
        conv.get_structure_hook(typ)
        conv.get_unstructure_hook(typ)
    log.debug("built %s converter (strict=%s)", generation, strict)
    return conv


_build_cached = functools.cache(_build)


def make_converter(generation: Generation, *, strict: bool = False) -> cattrs.Converter:
    """The shared converter for a server generation (``"G1"`` or ``"G2"``).

    ``strict=True`` rejects unknown members (for tests); the default ignores them, as the
    protocol asks of clients.
    """
    if generation not in ("G1", "G2"):
        raise ValueError(f"unknown protocol generation {generation!r}; expected 'G1' or 'G2'")
    return _build_cached(generation, bool(strict))


# --------------------------------------------------------------------------- helpers


def unstructure_params(conv: cattrs.Converter, obj: object) -> dict[str, object]:
    """Turn a wire object (params, or a result on the server side) into a JSON-ready dict.

    Raises:
        ValueError: a path is not absolute.
    """
    data = conv.unstructure(obj)
    if not isinstance(data, dict):
        raise TypeError(f"{type(obj).__name__} is not a wire class")
    return data


def _has_required_fields(cls: type) -> bool:
    return any(a.default is attrs.NOTHING for a in attrs.fields(cls))


def _preview(data: object) -> str:
    try:
        return dumps(data)
    except Exception:
        return repr(data)


def _problems(exc: BaseException, path: str) -> list[tuple[str, str]]:
    if isinstance(exc, ClassValidationError):
        with_notes, others = exc.group_exceptions()
        found: list[tuple[str, str]] = []
        for sub, note in with_notes:
            found += _problems(sub, f"{path}.{wire_name(note.name)}")
        for sub in others:
            found += _problems(sub, path)
        return found
    if isinstance(exc, IterableValidationError):
        items, others = exc.group_exceptions()
        found = []
        for sub, inote in items:
            found += _problems(sub, f"{path}[{inote.index!r}]")
        for sub in others:
            found += _problems(sub, path)
        return found
    if isinstance(exc, ForbiddenExtraKeysError):
        return [(path, f"unexpected members {sorted(exc.extra_fields)}")]
    if isinstance(exc, KeyError):
        return [(path, "missing field" + (f" `{exc.args[0]}`" if exc.args else ""))]
    return [(path, str(exc) or type(exc).__name__)]


def structure_result(conv: cattrs.Converter, data: object, cls: type[T], *, method: str) -> T:
    """Build ``cls`` from decoded JSON (a result, a notification's or a request's params).

    Raises:
        ProtocolError: ``data`` does not match ``cls``; ``field_path`` names the first failing
            member in wire names (``$.chunks[0].seq``), the message lists up to five problems.
    """
    if data.__class__ is not dict:
        if data is None and not _has_required_fields(cls):
            data = {}
        else:
            raise ProtocolError(
                f"expected an object for {cls.__name__}, got {json_type(data)}",
                method=method,
                field_path="$",
                payload=_preview(data),
            )
    try:
        return conv.structure(data, cls)
    except Exception as exc:
        problems = _problems(exc, "$") or [("$", str(exc))]
        shown = "; ".join(f"{p}: {m}" for p, m in problems[:_MAX_REPORTED_PROBLEMS])
        if len(problems) > _MAX_REPORTED_PROBLEMS:
            shown += f"; and {len(problems) - _MAX_REPORTED_PROBLEMS} more"
        raise ProtocolError(
            f"invalid {cls.__name__} ({shown})",
            method=method,
            field_path=problems[0][0],
            payload=_preview(data),
        ) from exc
