"""What every ``execsdk serve`` method handler shares: answer shapes, errors, paths.

A handler is a thin adapter: ``handler(conn, params)`` converts the decoded params, calls the
local backends (the session's ``LocalProcessBackend``, the connection's ``LocalFsBackend``) and
returns the result as JSON-ready values (or a :class:`Reply` / :class:`RawResult`). Exceptions
become JSON-RPC errors in one place, :func:`error_for`. Pure functions: safe from any thread.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from execsdk import errors
from execsdk._protocol import refusals
from execsdk.server.params import PathUri

if TYPE_CHECKING:
    from execsdk.server.connection import Connection

__all__ = ["Held", "RawResult", "Reply", "error_for", "local_path", "refuse_sandbox"]

log = logging.getLogger(__name__)


@attrs.frozen
class Reply:
    """A handler's answer plus something to run once the answer is queued (stream starts)."""

    result: object
    after: Callable[[], None] | None = None


@attrs.frozen
class Held:
    """A handler's answer that must wait (``process/write`` over the stdin limit).

    The handler has already taken its place (its effect stays in arrival order); the
    connection then lets the requests behind it run and calls ``finish`` on a thread of its
    own, answering with what ``finish`` returns (or raises) once it does.
    """

    finish: Callable[[], object]


@attrs.frozen
class RawResult:
    """A result already encoded as JSON, in parts joined once into the answer: for answers that
    carry megabytes of base64 (``fs/readBlock``), no dict, no generic encoder, no ``str``
    round trip, one copy."""

    parts: tuple[bytes, ...]


def _os_message(code: int) -> str:
    # codex words OS errors like Rust's io::Error: "File exists (os error 17)".
    return refusals.os_error_message(code, os.strerror(code))


def error_for(exc: BaseException, family: str = "") -> tuple[int, str]:
    """The JSON-RPC ``(code, message)`` for an exception raised while serving a request.

    ``errors.ServerError`` keeps its code and message; OS errors read "Strerror (os error N)"
    with -32004 for a missing path in filesystem methods and -32603 otherwise (a missing
    executable or cwd in ``process/start`` is -32603, as codex answers); an unknown process
    id is -32600. Anything unexpected is logged and answered -32603.
    """
    if isinstance(exc, errors.ServerError):
        return exc.code, exc.message
    if isinstance(exc, errors.ProcessNotFound):
        return -32600, refusals.UNKNOWN_PROCESS.format(id=exc.process_id)
    if isinstance(exc, errors.RemoteOSError) and exc.server_message:
        # Worded where it was raised, in codex's words (a tty child's program lookup).
        missing = exc.errno == _errno.ENOENT and family == "filesystem"
        return (-32004 if missing else -32603), exc.server_message
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        message = _os_message(exc.errno)
        if exc.errno == _errno.ENOENT and family == "filesystem":
            return -32004, message
        return -32603, message
    if isinstance(exc, errors.ConnectionClosed):
        return -32603, "the session is closed"
    log.error("unexpected error while serving a %s request", family or "", exc_info=exc)
    return -32603, f"internal error: {exc}"


def refuse_sandbox(params: dict[str, Any]) -> None:
    """Refuse a request that asks for a sandbox (we have none to give)."""
    if params.get("sandbox") is not None:
        raise errors.InvalidRequest(
            -32600, "execsdk serve does not support sandboxed execution; send `sandbox: null`"
        )


def local_path(conn: Connection, uri: PathUri, *, follow_last: bool = True) -> str:
    """The local path a request names; with ``--root``, only if it resolves inside the root."""
    if conn.confine is None:
        return uri.require()
    return conn.confine.check_uri(uri, follow_last=follow_last)
