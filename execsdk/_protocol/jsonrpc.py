"""JSON-RPC 2.0 envelopes as the exec-server speaks them (PROTOCOL.md §1.1).

Servers omit the ``"jsonrpc"`` member, so it is never required on input. Client requests carry
it (harmless); server answers and notifications leave it out, as codex does. Batches are not
part of the protocol. Ids are integers or strings and are echoed unchanged.

Pure functions over immutable values: safe from any thread. orjson is used when importable.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs

from execsdk._protocol.bulk import BULK_FROM, member_text, split_member
from execsdk._protocol.wire import Base64Text, b64decode_alphabet
from execsdk.errors import ProtocolError

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency; json is the fallback
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "SESSION_ATTACHED",
    "UNKNOWN_REQUEST_ID",
    "ErrorObject",
    "Message",
    "Notification",
    "Request",
    "RequestId",
    "Response",
    "decode_message",
    "dumps",
    "dumps_bytes",
    "encode_error",
    "encode_notification",
    "encode_raw_response",
    "encode_request",
    "encode_response",
    "loads",
    "parse_decoded",
]

# codex answers unparseable JSON, batches and bad ids with -32600, not the standard -32700.
PARSE_ERROR = -32600
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32004
SESSION_ATTACHED = -32010
UNKNOWN_REQUEST_ID = -1
"""The id codex puts on an error answer when the request's own id could not be read."""

RequestId = int | str

_PREVIEW_CHARS = 400


# --------------------------------------------------------------------------- json


def dumps(obj: object) -> str:
    """Compact JSON text (UTF-8 kept as is)."""
    if _orjson is not None:
        return _orjson.dumps(obj).decode("utf-8")
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_bytes(obj: object) -> bytes:
    """Compact JSON as UTF-8 bytes: what a transport sends, without a ``str`` round trip."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(text: str | bytes) -> object:
    """Parse JSON text; raises ``ValueError`` on bad input."""
    if _orjson is not None:
        return _orjson.loads(text)
    return json.loads(text)


# --------------------------------------------------------------------------- messages


@attrs.frozen
class ErrorObject:
    """The ``error`` member of an answer. Immutable."""

    code: int
    message: str
    data: object = None


@attrs.frozen
class Request:
    """A call that expects an answer; ``params`` is the decoded JSON (None when absent)."""

    id: RequestId
    method: str
    params: object = None


@attrs.frozen
class Notification:
    """A message without an id; ``params`` is the decoded JSON (None when absent)."""

    method: str
    params: object = None


@attrs.frozen
class Response:
    """An answer: exactly one of ``result`` (any JSON, may be None) and ``error`` is meaningful.

    ``id`` is None only on an error answer to a message whose id could not be read.
    """

    id: RequestId | None
    result: object = None
    error: ErrorObject | None = None


Message = Request | Notification | Response


# --------------------------------------------------------------------------- encode


def encode_request(request_id: RequestId, method: str, params: object) -> bytes:
    """A client request as UTF-8 JSON; ``params`` must already be JSON-ready (``None`` leaves
    it out). Bytes, because that is what transports send: a 1 MiB write is 1.4 MB of text,
    and a ``str`` round trip would copy it twice more."""
    msg: dict[str, object] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return dumps_bytes(msg)


def encode_notification(method: str, params: object) -> bytes:
    """A notification (``initialized`` from a client, ``process/output`` from a server), as
    UTF-8 JSON."""
    msg: dict[str, object] = {"method": method}
    if params is not None:
        msg["params"] = params
    return dumps_bytes(msg)


def encode_response(request_id: RequestId, result: object) -> bytes:
    """A server's success answer, as UTF-8 bytes (servers queue bytes for their transport)."""
    return dumps_bytes({"id": request_id, "result": result})


def encode_raw_response(request_id: RequestId, *result_json: bytes) -> bytes:
    """A success answer around a result that is already JSON, given in parts (big results
    built as bytes are joined once, here)."""
    return b"".join((b'{"id":', dumps_bytes(request_id), b',"result":', *result_json, b"}"))


def encode_error(
    request_id: RequestId | None, code: int, message: str, data: object = None
) -> bytes:
    """A server's error answer, as UTF-8 bytes; ``data`` is left out when None."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return dumps_bytes({"id": request_id, "error": error})


# --------------------------------------------------------------------------- decode


def _preview(text: str | bytes) -> str:
    head = text[:_PREVIEW_CHARS]
    if isinstance(head, bytes):
        return head.decode("utf-8", errors="replace")
    return head


def _is_id(value: object) -> bool:
    return value.__class__ is int or value.__class__ is str


def parse_decoded(
    text: str | bytes,
    names: tuple[str, ...],
    holder: Callable[[object, str, str | bytes], object],
    decode: Callable[[str | memoryview], bytes | None],
) -> object:
    """``text`` parsed with one large base64 string member already decoded (a
    :class:`~execsdk._protocol.wire.Base64Text`, see ``bulk.py``), or None: parse in full.

    ``names``: the members to look for (the first found is cut). ``holder(parsed, name,
    rest)``: the dict of the parsed rest that must hold the member, or None to refuse.
    ``decode``: the bytes, or None (or ``ValueError``) for text it will not take.
    """
    for name in names:
        found = split_member(text, name)
        if found is not None:
            break
    else:
        return None
    start, end, rest = found
    try:
        obj = loads(rest)
    except (ValueError, RecursionError):
        return None
    where = holder(obj, name, rest)
    if not isinstance(where, dict) or where.get(name) != "":
        return None
    try:
        data = decode(member_text(text, start, end))
    except ValueError:
        return None
    if data is None:
        return None
    where[name] = Base64Text(data)
    return obj


_BULK_RESULTS = ("chunk", "dataBase64")  # fs/readBlock, fs/readFile


def _result_of(obj: object, name: str, rest: str | bytes) -> object:
    """The result of a successful answer (where a bulk member may sit)."""
    return obj.get("result") if isinstance(obj, dict) and "error" not in obj else None


def decode_message(text: str | bytes) -> Message:
    """Parse one message into a :class:`Request`, :class:`Notification` or :class:`Response`.

    Raises:
        ProtocolError: not JSON, a batch array, or an object of no known shape. The payload
            in the error is truncated.
    """
    obj = (
        parse_decoded(text, _BULK_RESULTS, _result_of, b64decode_alphabet)
        if len(text) >= BULK_FROM
        else None
    )
    if obj is None:
        try:
            obj = loads(text)
        except ValueError as exc:
            raise ProtocolError(f"invalid JSON ({exc})", payload=_preview(text)) from None
    if not isinstance(obj, dict):
        what = "batch messages are not supported" if isinstance(obj, list) else "not an object"
        raise ProtocolError(f"invalid JSON-RPC message: {what}", payload=_preview(text))
    method = obj.get("method")
    if method is not None:
        if method.__class__ is not str:
            raise ProtocolError(
                "invalid JSON-RPC message: method is not a string", payload=_preview(text)
            )
        if "id" not in obj:
            return Notification(method, obj.get("params"))
        req_id = obj["id"]
        if not _is_id(req_id):
            raise ProtocolError(
                "invalid JSON-RPC request: id must be an integer or a string",
                payload=_preview(text),
            )
        return Request(req_id, method, obj.get("params"))
    if "id" not in obj:
        raise ProtocolError(
            "invalid JSON-RPC message: neither a request, a notification nor a response",
            payload=_preview(text),
        )
    resp_id = obj["id"]
    has_result = "result" in obj
    error = obj.get("error")
    if error is None:
        if not has_result:
            raise ProtocolError(
                "invalid JSON-RPC response: no result and no error", payload=_preview(text)
            )
        if not _is_id(resp_id):
            raise ProtocolError(
                "invalid JSON-RPC response: id must be an integer or a string",
                payload=_preview(text),
            )
        return Response(resp_id, obj["result"])
    if has_result:
        raise ProtocolError(
            "invalid JSON-RPC response: both result and error", payload=_preview(text)
        )
    if resp_id is not None and not _is_id(resp_id):
        raise ProtocolError(
            "invalid JSON-RPC response: id must be an integer, a string or null",
            payload=_preview(text),
        )
    if (
        error.__class__ is not dict
        or error.get("code").__class__ is not int
        or error.get("message").__class__ is not str
    ):
        raise ProtocolError(
            "invalid JSON-RPC error: needs an integer code and a string message",
            payload=_preview(text),
        )
    return Response(resp_id, None, ErrorObject(error["code"], error["message"], error.get("data")))
