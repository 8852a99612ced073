"""The execsdk exception tree.

Everything execsdk raises derives from :class:`ExecSdkError`. Errors are grouped by what a
caller can do about them, and each also inherits the builtin a stdlib user would expect::

    ExecSdkError
    |-- ConnectError (ConnectionError)          open or handshake failed
    |   |-- ConnectTimeout (TimeoutError)
    |   `-- InitializeTimeout (TimeoutError)
    |-- ConnectionLost (ConnectionError)        the link dropped while open
    |   `-- SessionLost                         reconnected, but the session is gone
    |-- ConnectionClosed                        used after close() or in a forked child
    |-- RequestTimeout (TimeoutError)
    |-- ProtocolError                           malformed envelope or schema mismatch
    |-- UnsupportedByServer                     absent in this server generation
    |-- ServerError                             a JSON-RPC error answer
    |   |-- InvalidRequest (-32600)  MethodNotFound (-32601)  InvalidParams (-32602)
    |   `-- InternalError (-32603)   NotFound (-32004)        SessionAttached (-32010)
    |-- ProcessError
    |   |-- ProcessNotFound  StdinClosed (BrokenPipeError)
    |   |-- CalledProcessError (subprocess.CalledProcessError)
    |   `-- TimeoutExpired (subprocess.TimeoutExpired, TimeoutError)
    `-- RemoteOSError (OSError)                 filesystem failure, mapped by errno
        `-- RemoteFileNotFoundError, RemoteFileExistsError, RemoteIsADirectoryError,
            RemoteNotADirectoryError, RemotePermissionError

This module imports only the stdlib, so every other module may import it.
"""

from __future__ import annotations

import errno as _errno
import subprocess
from typing import Any, TypeVar

__all__ = [
    "CalledProcessError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionLost",
    "ExecSdkError",
    "InitializeTimeout",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "MethodNotFound",
    "NotFound",
    "OutputLost",
    "ProcessError",
    "ProcessNotFound",
    "ProtocolError",
    "RemoteFileExistsError",
    "RemoteFileNotFoundError",
    "RemoteIsADirectoryError",
    "RemoteNotADirectoryError",
    "RemoteOSError",
    "RemotePermissionError",
    "RequestTimeout",
    "ServerError",
    "SessionAttached",
    "SessionLost",
    "StdinClosed",
    "TimeoutExpired",
    "UnsupportedByServer",
    "fresh",
    "os_error",
    "server_error",
]

_TRUNCATE = 200


def _truncate(text: str, limit: int = _TRUNCATE) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class ExecSdkError(Exception):
    """Root of every exception execsdk raises."""


class ConnectError(ExecSdkError, ConnectionError):
    """Opening the transport or the protocol handshake failed."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ConnectTimeout(ConnectError, TimeoutError):
    """No transport connection within ``connect_timeout``."""


class InitializeTimeout(ConnectError, TimeoutError):
    """Connected, but the server did not answer ``initialize`` within ``initialize_timeout``."""


class ConnectionLost(ExecSdkError, ConnectionError):
    """The connection dropped while it was open; ``__cause__`` is the underlying error."""


class SessionLost(ConnectionLost):
    """The connection came back, but the server no longer knows the session."""


class ConnectionClosed(ExecSdkError):
    """The client was closed (or this is a forked child); create a new client."""


class RequestTimeout(ExecSdkError, TimeoutError):
    """A call got no answer in time. The client stays usable; a late answer is dropped."""

    def __init__(self, method: str, timeout: float | None, detail: str = "") -> None:
        what = f"{method}: no answer within {timeout}s"
        super().__init__(f"{what} ({detail})" if detail else what)
        self.method = method
        self.timeout = timeout


class ProtocolError(ExecSdkError):
    """The peer sent something that is not valid JSON-RPC or not the expected shape."""

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        field_path: str | None = None,
        payload: str | None = None,
    ) -> None:
        parts = [message]
        if method:
            parts.append(f"method {method}")
        if field_path:
            parts.append(f"at {field_path}")
        if payload is not None:
            parts.append(f"payload {_truncate(payload)!r}")
        super().__init__("; ".join(parts))
        self.method = method
        self.field_path = field_path
        self.payload = None if payload is None else _truncate(payload)


class UnsupportedByServer(ExecSdkError):
    """The server generation does not offer this method or feature."""

    def __init__(self, feature: str, generation: str | None = None, hint: str = "") -> None:
        msg = f"{feature} is not supported by this server"
        if generation:
            msg += f" (generation {generation})"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)
        self.feature = feature
        self.generation = generation


class ServerError(ExecSdkError):
    """The server answered a request with a JSON-RPC error."""

    code: int = 0

    def __init__(
        self,
        code: int,
        message: str,
        *,
        method: str | None = None,
        request_id: int | str | None = None,
        data: Any = None,
    ) -> None:
        where = f"{method}: " if method else ""
        super().__init__(f"{where}server error {code}: {message}")
        self.code = code
        self.message = message
        self.method = method
        self.request_id = request_id
        self.data = data


class InvalidRequest(ServerError):
    """JSON-RPC -32600: the server refused the request in this state or with these values."""

    code = -32600


class MethodNotFound(ServerError):
    """JSON-RPC -32601: the server does not implement the method."""

    code = -32601


class InvalidParams(ServerError):
    """JSON-RPC -32602: missing or mistyped parameters."""

    code = -32602


class InternalError(ServerError):
    """JSON-RPC -32603: an OS error or internal failure on the server."""

    code = -32603


class NotFound(ServerError):
    """Exec-server -32004: the path, file handle or resource does not exist."""

    code = -32004


class SessionAttached(ServerError):
    """Exec-server -32010: the session to resume is attached to another connection."""

    code = -32010


_BY_CODE: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        NotFound,
        SessionAttached,
    )
}


def server_error(
    code: int,
    message: str,
    *,
    method: str | None = None,
    request_id: int | str | None = None,
    data: Any = None,
) -> ServerError:
    """Build the most specific :class:`ServerError` subclass for ``code``."""
    cls = _BY_CODE.get(code, ServerError)
    return cls(code, message, method=method, request_id=request_id, data=data)


class ProcessError(ExecSdkError):
    """A failure tied to one process."""

    def __init__(self, message: str, *, process_id: str | None = None) -> None:
        super().__init__(message)
        self.process_id = process_id


class ProcessNotFound(ProcessError):
    """The server does not know this process id (never started, or forgotten after close)."""


class StdinClosed(ProcessError, BrokenPipeError):
    """The process's stdin is closed or was never opened (spawn with ``stdin=True``)."""


class CalledProcessError(ProcessError, subprocess.CalledProcessError):
    """``run(check=True)`` saw a non-zero exit; carries ``returncode``, ``stdout``, ``stderr``."""

    def __init__(
        self,
        returncode: int,
        cmd: Any,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
        *,
        process_id: str | None = None,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.process_id = process_id

    def __str__(self) -> str:
        return subprocess.CalledProcessError.__str__(self)


class TimeoutExpired(ProcessError, subprocess.TimeoutExpired, TimeoutError):
    """A process did not finish in time; carries the output collected so far."""

    def __init__(
        self,
        cmd: Any,
        timeout: float,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
        *,
        process_id: str | None = None,
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.process_id = process_id

    def __str__(self) -> str:
        return subprocess.TimeoutExpired.__str__(self)


class OutputLost(ProcessError):
    """Output of a process was lost and cannot be recovered (a server that keeps only the
    last part of it, read after a reconnect).

    Raised by the calls that deliver output once they have delivered everything before the
    gap; a later call goes on after it. ``chunks`` is how many output chunks are known lost (at
    least that many), between seqs ``first_seq`` and ``last_seq``; ``streams`` names the
    streams they may have belonged to (the server does not say which). ``stdout``/``stderr``
    hold what :meth:`~execsdk.Process.communicate` collected so far; ``completed`` is the
    :class:`subprocess.CompletedProcess` of ``run()`` (everything received, before and after
    the gap).
    """

    def __init__(
        self,
        message: str,
        *,
        process_id: str | None = None,
        chunks: int = 0,
        first_seq: int = 0,
        last_seq: int = 0,
        streams: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, process_id=process_id)
        self.chunks = chunks
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.streams = streams
        self.stdout: bytes | str | None = None
        self.stderr: bytes | str | None = None
        self.completed: Any = None


class RemoteOSError(ExecSdkError, OSError):
    """A filesystem operation failed; ``errno``/``strerror``/``filename`` as in :class:`OSError`."""

    def __init__(
        self,
        errno: int | None,
        strerror: str,
        filename: str | None = None,
        *,
        method: str | None = None,
        server_message: str | None = None,
    ) -> None:
        OSError.__init__(self, errno, strerror, filename)
        self.method = method
        self.server_message = server_message

    def __str__(self) -> str:
        text = f"[Errno {self.errno}] {self.strerror}" if self.errno else str(self.strerror)
        if self.filename is not None:
            text += f": {self.filename!r}"
        if self.method:
            text = f"{self.method}: {text}"
        if self.server_message and self.server_message not in text:
            text += f" (server message: {self.server_message})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_os_error,
            (
                type(self),
                self.errno,
                self.strerror,
                self.filename,
                self.method,
                self.server_message,
            ),
        )


def _rebuild_os_error(
    cls: type[RemoteOSError],
    errno: int | None,
    strerror: str,
    filename: str | None,
    method: str | None,
    server_message: str | None,
) -> RemoteOSError:
    return cls(errno, strerror, filename, method=method, server_message=server_message)


class RemoteFileNotFoundError(RemoteOSError, FileNotFoundError):
    """The path does not exist."""


class RemoteFileExistsError(RemoteOSError, FileExistsError):
    """The path already exists."""


class RemoteIsADirectoryError(RemoteOSError, IsADirectoryError):
    """The path is a directory where a file was expected."""


class RemoteNotADirectoryError(RemoteOSError, NotADirectoryError):
    """A path component is not a directory."""


class RemotePermissionError(RemoteOSError, PermissionError):
    """The server was not allowed to do it."""


_BY_ERRNO: dict[int, type[RemoteOSError]] = {
    _errno.ENOENT: RemoteFileNotFoundError,
    _errno.EEXIST: RemoteFileExistsError,
    _errno.EISDIR: RemoteIsADirectoryError,
    _errno.ENOTDIR: RemoteNotADirectoryError,
    _errno.EACCES: RemotePermissionError,
    _errno.EPERM: RemotePermissionError,
}


def os_error(
    errno: int | None,
    strerror: str,
    filename: str | None = None,
    *,
    method: str | None = None,
    server_message: str | None = None,
) -> RemoteOSError:
    """Build the :class:`RemoteOSError` subclass that matches ``errno``."""
    cls = _BY_ERRNO.get(errno or 0, RemoteOSError)
    return cls(errno, strerror, filename, method=method, server_message=server_message)


E = TypeVar("E", bound=BaseException)


def fresh(exc: E, *, chain: bool = False) -> E:
    """A new exception equal to ``exc``, for one more raise of an error stored once.

    Raising one shared instance from many threads piles every raise's frames onto its single
    ``__traceback__`` (and races on it), so each waiter raises its own copy. The copy has the
    same class, ``args``, attributes (``code``, ``process_id``, ``returncode``...), OS error
    fields and notes, and no traceback or context of its own. ``__init__`` is not run again:
    many classes here take other arguments than the ``args`` they store (``ServerError``,
    ``RequestTimeout``, ``CalledProcessError``...).

    ``chain=False`` keeps the cause: the copy's ``__cause__`` is ``exc.__cause__`` (the copy
    stands in for the stored error). ``chain=True`` makes ``exc`` itself the cause (the stored
    error is what happened; the copy says it reached this waiter).

    An exception whose class cannot be created without its ``__init__`` (a foreign ``__new__``)
    is returned unchanged.
    """
    cls = type(exc)
    try:
        new = cls.__new__(cls, *exc.args)
        new.args = exc.args
        if isinstance(exc, OSError):
            # OSError keeps these outside ``args`` (``filename`` is never in it), and a class
            # with its own __init__ fills them there, which was skipped. Unset ones stay unset:
            # an explicit None would show in str() as "[Errno None] None".
            for name in ("errno", "strerror", "filename", "filename2"):
                value = getattr(exc, name)
                if value is not None:
                    setattr(new, name, value)
        new.__dict__.update(exc.__dict__)
    except Exception:
        return exc
    notes = exc.__dict__.get("__notes__")
    if isinstance(notes, list):
        new.__dict__["__notes__"] = list(notes)  # add_note on one must not show on the other
    if chain:
        new.__cause__ = exc
    else:
        new.__cause__ = exc.__cause__
        new.__suppress_context__ = exc.__suppress_context__
    return new
