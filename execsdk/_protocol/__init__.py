"""The pure protocol layer: wire types, the method table, converters and JSON-RPC envelopes.

No threads, no sockets, no I/O. Submodules: ``types`` (frozen attrs classes), ``methods``
(``METHODS``/``NOTIFICATIONS``), ``wire`` (the base64 codec and the path <-> URI mapping),
``converter`` (per-generation cattrs converters), ``jsonrpc`` (envelope encode/decode),
``bulk`` (cutting a large base64 member out of a message), ``redact`` (log previews) and
``refusals`` (the classifier of server error answers).
"""

from __future__ import annotations

from execsdk._protocol.converter import make_converter, structure_result, unstructure_params
from execsdk._protocol.jsonrpc import (
    ErrorObject,
    Message,
    Notification,
    Request,
    Response,
    decode_message,
    encode_error,
    encode_notification,
    encode_request,
    encode_response,
)
from execsdk._protocol.methods import INITIALIZED, METHODS, NOTIFICATIONS, MethodSpec

__all__ = [
    "INITIALIZED",
    "METHODS",
    "NOTIFICATIONS",
    "ErrorObject",
    "Message",
    "MethodSpec",
    "Notification",
    "Request",
    "Response",
    "decode_message",
    "encode_error",
    "encode_notification",
    "encode_request",
    "encode_response",
    "make_converter",
    "structure_result",
    "unstructure_params",
]
