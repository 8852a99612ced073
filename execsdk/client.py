"""Client: the public blocking exec-server client with one typed method per protocol method.

It wraps the private RPC core (``_rpc``), performs the ``initialize``/``initialized``
handshake, detects the protocol generation (G2 answers ``initialize`` with
``environmentInfo``), and converts between attrs types and the wire with one cattrs converter
per generation, so paths are plain strings whatever the server speaks.

With ``reconnect=`` (a :class:`Reconnect` policy, or ``True`` for the defaults) a dropped
connection is replaced by a new one that resumes the session (``_rpc/reconnect.py``). Here the
client says which calls may be repeated when they were in flight at the drop: reads and
metadata, ``process/write`` with its write id (G2 drops a repeated write id), and
``process/start`` (its process id is ours, so "already exists" on the repeat means the first
attempt went through). Block handles (``fs/open``) belong to one connection and are gone after
a reconnect: using one then raises ``ConnectionLost``.
"""

from __future__ import annotations

import enum
import logging
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from execsdk._callbacks import CallbackDispatcher
from execsdk._deadline import UNSET, Deadline, Timeoutish
from execsdk._protocol import refusals
from execsdk._protocol import types as t
from execsdk._protocol.converter import make_converter, structure_result, unstructure_params
from execsdk._protocol.methods import METHODS
from execsdk._protocol.wire import Base64Text, b64encode
from execsdk._rpc.bus import EventBus
from execsdk._rpc.endpoint import RpcClient
from execsdk._rpc.reconnect import Link, OnEnd, Opened, Reconnect
from execsdk._transport.base import Transport
from execsdk._transport.child import StdioTransport
from execsdk._transport.websocket import WebSocketTransport
from execsdk.errors import (
    ConnectError,
    ConnectionLost,
    InitializeTimeout,
    RequestTimeout,
    ServerError,
    SessionLost,
    UnsupportedByServer,
)

__all__ = ["Client", "Generation", "Reconnect", "ServerInfo"]

log = logging.getLogger(__name__)

R = TypeVar("R")


class Generation(str, enum.Enum):
    """Protocol generation: G1 (absolute paths, codex 0.123) or G2 (file:// URIs, 0.169+)."""

    G1 = "G1"
    G2 = "G2"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class ServerInfo:
    """What the handshake told us about the server."""

    session_id: str
    generation: Generation
    environment: t.WireEnvironmentInfo | None

    @property
    def capabilities(self) -> frozenset[str]:
        """Names of capabilities the server announced as true (G2; empty on G1)."""
        if self.environment is None:
            return frozenset()
        return frozenset(k for k, v in self.environment.capabilities.items() if v)


_RETRYABLE = frozenset(
    {
        "environment/info",
        "environment/status",
        "environmentConfig/read",
        "process/read",
        "process/terminate",
        "fs/readFile",
        "fs/getMetadata",
        "fs/readDirectory",
        "fs/canonicalize",
        "fs/walk",
    }
)
"""Methods a reconnecting client may repeat when they were in flight at a drop: running them
twice has the effect of running them once."""


def _policy(reconnect: Reconnect | bool | None) -> Reconnect | None:
    if reconnect is True:
        return Reconnect()
    if reconnect is False or reconnect is None:
        return None
    if not isinstance(reconnect, Reconnect):
        raise TypeError(f"reconnect must be a Reconnect policy or a bool, not {reconnect!r}")
    return reconnect


def _least(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _plain_json(value: Any) -> Any:
    """``value`` with every pre-decoded base64 member (:class:`Base64Text`, left by the
    reader's bulk parse of large answers) written back as base64 text, in place.

    The bulk parse sets such a member only in the result of an answer, where the typed
    methods decode it without a second pass; raw callers get the text the server sent.
    """
    if type(value) is Base64Text:
        return b64encode(value.data)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if type(item) is Base64Text:
                    node[key] = b64encode(item.data)
                elif isinstance(item, (dict, list)):
                    stack.append(item)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                if type(item) is Base64Text:
                    node[i] = b64encode(item.data)
                elif isinstance(item, (dict, list)):
                    stack.append(item)
    return value


def _handshake(
    rpc: RpcClient, client_name: str, resume: str | None, initialize_timeout: float | None
) -> ServerInfo:
    """``initialize`` (with ``resumeSessionId`` when resuming) and ``initialized``."""
    params = unstructure_params(
        make_converter("G2"),
        t.InitializeParams(client_name=client_name, resume_session_id=resume),
    )
    try:
        raw = rpc.call("initialize", params, timeout=initialize_timeout)
    except RequestTimeout as exc:
        raise InitializeTimeout(
            f"{rpc.description} accepted the connection but did not answer "
            f"initialize within {initialize_timeout}s: is it an exec-server?",
            url=rpc.description,
        ) from exc
    except ConnectionLost as exc:
        raise ConnectError(
            f"{rpc.description} closed the connection during the handshake",
            url=rpc.description,
        ) from exc
    generation: Literal["G1", "G2"] = (
        "G2" if isinstance(raw, dict) and "environmentInfo" in raw else "G1"
    )
    result = structure_result(
        make_converter(generation), raw, t.InitializeResult, method="initialize"
    )
    rpc.notify("initialized", {}, timeout=initialize_timeout)
    return ServerInfo(
        session_id=result.session_id,
        generation=Generation(generation),
        environment=result.environment_info,
    )


class Client:
    """A connection to one exec-server, after the handshake.

    Thread-safety: any number of threads may share one client; every method is thread-safe.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        client_name: str = "execsdk",
        timeout: float | None = None,
        initialize_timeout: float | None = 10.0,
        resume_session_id: str | None = None,
        max_in_flight: int = 128,
        reconnect: Reconnect | bool | None = None,
        reopen: Callable[[float | None], Transport] | None = None,
        connect_timeout: float | None = 10.0,
    ) -> None:
        """Perform the handshake on ``transport``.

        ``reconnect`` needs ``reopen(timeout)``, which opens a new transport to the same
        server (:meth:`connect` supplies it); ``connect_timeout`` bounds that.
        """
        policy = _policy(reconnect)
        if policy is not None and reopen is None:
            transport.close(timeout=0)
            raise ValueError(
                "reconnect needs a way to open a new connection: use "
                "Client.connect(url, reconnect=...)"
            )
        self._client_name = client_name
        self._initialize_timeout = initialize_timeout
        self._connect_timeout = connect_timeout
        self._max_in_flight = max_in_flight
        self._reopen = reopen
        self._first: Transport | None = transport
        self._handles: dict[str, int] = {}
        self._handlers_lock = threading.Lock()
        self._reconnect_handlers: tuple[Callable[[SessionLost | None], None], ...] = ()
        self._dispatcher = CallbackDispatcher()
        self._bus = EventBus(self._dispatcher)
        self._rpc_timeout = timeout
        try:
            self._link = Link(
                self._open,
                policy=policy,
                bus=self._bus,
                dispatcher=self._dispatcher,
                timeout=timeout,
                resume_session_id=resume_session_id,
                on_connected=self._connected,
            )
        except BaseException:
            if self._first is not None:
                self._first.close(timeout=0)
            self._dispatcher.close(1.0)
            raise
        info: ServerInfo = self._link.first_payload
        self.server_info = info
        self._conv = make_converter("G2" if info.generation is Generation.G2 else "G1")

    def _open(self, resume: str | None, limit: float | None, on_end: OnEnd) -> Opened:
        """The link's opener: a transport (the first one given, later ``reopen``), an
        RpcClient on the shared bus, and the handshake, all within ``limit`` seconds."""
        deadline = Deadline(limit)
        transport, self._first = self._first, None
        if transport is None:
            assert self._reopen is not None
            transport = self._reopen(_least(self._connect_timeout, deadline.left()))
        rpc = RpcClient(
            transport,
            timeout=self._rpc_timeout,
            max_in_flight=self._max_in_flight,
            dispatcher=self._dispatcher,
            bus=self._bus,
            on_end=on_end,
        )
        try:
            info = _handshake(
                rpc, self._client_name, resume, _least(self._initialize_timeout, deadline.left())
            )
        except BaseException:
            rpc.close(timeout=1.0)
            raise
        return Opened(rpc, info.session_id, info)

    def _connected(self, opened: Opened, lost: SessionLost | None) -> None:
        """After a reconnect (supervisor thread): new server info, then the handlers."""
        info: ServerInfo = opened.payload
        if info.generation is not self.server_info.generation:
            self._conv = make_converter("G2" if info.generation is Generation.G2 else "G1")
        self.server_info = info
        with self._handlers_lock:
            handlers = self._reconnect_handlers
        for handler in handlers:
            try:
                handler(lost)
            except Exception:
                log.exception("reconnect handler %r failed", handler)

    def add_reconnect_handler(self, handler: Callable[[SessionLost | None], None]) -> None:
        """Run ``handler(lost)`` after every reconnect, on the reconnecting thread.

        ``lost`` is None when the session was resumed (notifications sent meanwhile are not
        replayed: read what you missed with ``process/read``), or a :class:`SessionLost` when
        the server no longer knew the session and a new one took its place.
        """
        with self._handlers_lock:
            self._reconnect_handlers = (*self._reconnect_handlers, handler)

    # ------------------------------------------------------------------ construction

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        client_name: str = "execsdk",
        connect_timeout: float | None = 10.0,
        initialize_timeout: float | None = 10.0,
        timeout: float | None = None,
        resume_session_id: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_in_flight: int = 128,
        reconnect: Reconnect | bool | None = None,
    ) -> Client:
        """Open a WebSocket to ``url`` and perform the handshake.

        ``timeout`` is the default for every later call (``None``: no limit). ``reconnect``
        (a :class:`Reconnect` policy, or ``True`` for its defaults) makes the client reconnect
        and resume its session after the connection drops.
        Raises ``ConnectError``/``ConnectTimeout``/``InitializeTimeout``.
        """

        def reopen(limit: float | None) -> Transport:
            return WebSocketTransport.connect(
                url, token=token, timeout=limit, ssl_context=ssl_context
            )

        transport = reopen(connect_timeout)
        return cls(
            transport,
            client_name=client_name,
            timeout=timeout,
            initialize_timeout=initialize_timeout,
            resume_session_id=resume_session_id,
            max_in_flight=max_in_flight,
            reconnect=reconnect,
            reopen=reopen,
            connect_timeout=connect_timeout,
        )

    @classmethod
    def over_stdio(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        client_name: str = "execsdk",
        initialize_timeout: float | None = 10.0,
        timeout: float | None = None,
        max_in_flight: int = 128,
    ) -> Client:
        """Start ``argv`` (e.g. ``["codex", "exec-server", "--listen", "stdio"]``) and talk
        newline-delimited JSON over its stdin/stdout. Closing the client ends the child."""
        transport = StdioTransport(argv, env=env, cwd=cwd)
        return cls(
            transport,
            client_name=client_name,
            timeout=timeout,
            initialize_timeout=initialize_timeout,
            max_in_flight=max_in_flight,
        )

    # ------------------------------------------------------------------ plumbing

    @property
    def events(self) -> EventBus:
        """The event bus of server notifications (process output, exit, close, ...).

        It outlives reconnects: handlers and subscriptions stay in place.
        """
        return self._bus

    @property
    def dispatcher(self) -> CallbackDispatcher:
        """The thread that runs user callbacks for this client."""
        return self._dispatcher

    @property
    def generation(self) -> Generation:
        """Shortcut for ``server_info.generation``."""
        return self.server_info.generation

    @property
    def url(self) -> str:
        """The server URL (or the stdio command)."""
        return self._link.description

    @property
    def is_open(self) -> bool:
        """True while connected: False once closed or lost, and while reconnecting."""
        return self._link.is_open

    @property
    def reconnect(self) -> Reconnect | None:
        """The reconnect policy (None: a drop ends the client)."""
        return self._link.policy

    @property
    def rpc(self) -> RpcClient:
        """The underlying RPC core of the current connection (advanced use).

        Its results are as the reader left them: a large base64 member of an answer is
        already decoded (an empty ``str`` subclass holding the bytes); :meth:`call` returns
        plain JSON instead.
        """
        return self._link.rpc

    def supports(self, method: str) -> bool:
        """True when the server offers ``method`` in its generation (and capability)."""
        spec = METHODS.get(method)
        if spec is None:
            return True
        if self.server_info.generation.value not in spec.generations:
            return False
        return spec.capability is None or spec.capability in self.server_info.capabilities

    def _require(self, method: str) -> None:
        if not self.supports(method):
            spec = METHODS[method]
            hint = f"needs the {spec.capability!r} capability" if spec.capability else ""
            raise UnsupportedByServer(method, self.server_info.generation.value, hint)

    def call(self, method: str, params: Any = None, *, timeout: Timeoutish = UNSET) -> Any:
        """Send any request and return the raw result (for methods not modelled here).

        The result is plain JSON (dicts, lists, str, numbers, bools, None) exactly as the
        server sent it, at every size: base64 members such as ``dataBase64`` are base64 text.
        While a reconnect is under way it waits for it; a call in flight at a drop is not
        repeated (``ConnectionLost``).
        """
        return _plain_json(self._link.call(method, params, timeout=timeout))

    def _typed(
        self,
        method: str,
        params: Any,
        result: type[R],
        timeout: Timeoutish,
        *,
        retry: bool | None = None,
        on_retried_error: Callable[[ServerError], Any] | None = None,
    ) -> R:
        self._require(method)
        raw = self._link.call(
            method,
            unstructure_params(self._conv, params),
            timeout=timeout,
            retry=method in _RETRYABLE if retry is None else retry,
            session_bound=method.startswith("process/"),
            on_retried_error=on_retried_error,
        )
        return structure_result(self._conv, raw, result, method=method)

    def _check_handle(self, handle_id: str) -> bool:
        """False when ``handle_id`` was opened on a connection that has since been replaced."""
        opened_on = self._handles.get(handle_id)
        return opened_on is None or opened_on == self._link.generation

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the connection (and stop reconnecting); idempotent. Pending calls fail with
        ``ConnectionClosed``; threads are joined within ``timeout``."""
        self._link.close(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        info = self.server_info
        return f"<Client {self.url} {info.generation.value} session={info.session_id} {state}>"

    # ------------------------------------------------------------------ environment

    def environment_info(self, *, timeout: Timeoutish = UNSET) -> t.WireEnvironmentInfo:
        """``environment/info`` (G2)."""
        return self._typed(
            "environment/info", t.EnvironmentInfoParams(), t.WireEnvironmentInfo, timeout
        )

    def environment_status(self, *, timeout: Timeoutish = UNSET) -> t.EnvironmentStatusResult:
        """``environment/status`` (G2)."""
        return self._typed(
            "environment/status", t.EnvironmentStatusParams(), t.EnvironmentStatusResult, timeout
        )

    def environment_config_read(
        self,
        *,
        cwd: str,
        config_paths: Sequence[Sequence[str]] = (),
        requirements_paths: Sequence[Sequence[str]] = (),
        timeout: Timeoutish = UNSET,
    ) -> t.EnvironmentConfigReadResult:
        """``environmentConfig/read`` (G2)."""
        params = t.EnvironmentConfigReadParams(
            cwd=t.WirePath(cwd),
            config_paths=[list(p) for p in config_paths],
            requirements_paths=[list(p) for p in requirements_paths],
        )
        return self._typed("environmentConfig/read", params, t.EnvironmentConfigReadResult, timeout)

    # ------------------------------------------------------------------ processes

    def process_start(
        self,
        *,
        process_id: str,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        tty: bool = False,
        pipe_stdin: bool | None = None,
        arg0: str | None = None,
        env_policy: t.WireEnvPolicy | None = None,
        metadata: dict[str, object] | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.ProcessStartResult:
        """``process/start``. Register for its events on ``events`` *before* calling this.

        Repeated after a reconnect when it was in flight: the process id is the caller's, so
        "already exists" then means the first attempt started it.
        """
        params = t.ProcessStartParams(
            process_id=process_id,
            argv=list(argv),
            cwd=t.WirePath(cwd),
            env=dict(env),
            tty=tty,
            pipe_stdin=pipe_stdin,
            arg0=arg0,
            env_policy=env_policy,
            metadata=metadata,
        )

        def started_already(exc: ServerError) -> Any:
            if refusals.is_duplicate_process(exc, process_id):
                return {"processId": process_id}
            raise exc

        return self._typed(
            "process/start",
            params,
            t.ProcessStartResult,
            timeout,
            retry=True,
            on_retried_error=started_already,
        )

    def process_read(
        self,
        *,
        process_id: str,
        after_seq: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.ProcessReadResult:
        """``process/read``: retained output after ``after_seq`` and the exit state."""
        params = t.ProcessReadParams(
            process_id=process_id, after_seq=after_seq, max_bytes=max_bytes, wait_ms=wait_ms
        )
        return self._typed("process/read", params, t.ProcessReadResult, timeout)

    def process_write(
        self,
        *,
        process_id: str,
        chunk: bytes,
        write_id: str | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.ProcessWriteResult:
        """``process/write``. G2 needs a fresh ``write_id`` per write (an idempotency key); with
        one, a write in flight at a drop is repeated after the reconnect (G2 servers drop a
        repeated write id). G1 ignores write ids, so there it is not repeated."""
        params = t.ProcessWriteParams(process_id=process_id, chunk=chunk, write_id=write_id)
        retry = write_id is not None and self.server_info.generation is Generation.G2
        return self._typed("process/write", params, t.ProcessWriteResult, timeout, retry=retry)

    def process_signal(
        self, *, process_id: str, signal: t.ProcessSignal = "interrupt", timeout: Timeoutish = UNSET
    ) -> t.ProcessSignalResult:
        """``process/signal`` (G2; only ``interrupt``)."""
        params = t.ProcessSignalParams(process_id=process_id, signal=signal)
        return self._typed("process/signal", params, t.ProcessSignalResult, timeout)

    def process_terminate(
        self, *, process_id: str, timeout: Timeoutish = UNSET
    ) -> t.ProcessTerminateResult:
        """``process/terminate``: SIGKILL of the process group."""
        params = t.ProcessTerminateParams(process_id=process_id)
        return self._typed("process/terminate", params, t.ProcessTerminateResult, timeout)

    def process_close_stdin(
        self, *, process_id: str, timeout: Timeoutish = UNSET
    ) -> t.ProcessCloseStdinResult:
        """``process/closeStdin`` (execsdk extension; needs ``execsdk/closeStdin``)."""
        params = t.ProcessCloseStdinParams(process_id=process_id)
        return self._typed("process/closeStdin", params, t.ProcessCloseStdinResult, timeout)

    def process_keep_output(self, *, timeout: Timeoutish = UNSET) -> t.ProcessKeepOutputResult:
        """``process/keepOutput`` (execsdk extension; needs ``execsdk/outputAck``)."""
        params = t.ProcessKeepOutputParams()
        return self._typed("process/keepOutput", params, t.ProcessKeepOutputResult, timeout)

    def process_ack_output(
        self, *, process_id: str, seq: int, timeout: Timeoutish = UNSET
    ) -> t.ProcessAckOutputResult:
        """``process/ackOutput`` (execsdk extension; needs ``execsdk/outputAck``)."""
        params = t.ProcessAckOutputParams(process_id=process_id, seq=seq)
        return self._typed("process/ackOutput", params, t.ProcessAckOutputResult, timeout)

    # ------------------------------------------------------------------ filesystem

    def fs_read_file(self, *, path: str, timeout: Timeoutish = UNSET) -> t.FsReadFileResult:
        """``fs/readFile``: the whole file."""
        params = t.FsReadFileParams(path=t.WirePath(path))
        return self._typed("fs/readFile", params, t.FsReadFileResult, timeout)

    def fs_write_file(
        self, *, path: str, data_base64: bytes, timeout: Timeoutish = UNSET
    ) -> t.FsWriteFileResult:
        """``fs/writeFile`` (``data_base64`` is raw bytes here; encoding is automatic)."""
        params = t.FsWriteFileParams(path=t.WirePath(path), data_base64=data_base64)
        return self._typed("fs/writeFile", params, t.FsWriteFileResult, timeout)

    def fs_create_directory(
        self, *, path: str, recursive: bool | None = None, timeout: Timeoutish = UNSET
    ) -> t.FsCreateDirectoryResult:
        """``fs/createDirectory`` (server default: recursive)."""
        params = t.FsCreateDirectoryParams(path=t.WirePath(path), recursive=recursive)
        return self._typed("fs/createDirectory", params, t.FsCreateDirectoryResult, timeout)

    def fs_get_metadata(self, *, path: str, timeout: Timeoutish = UNSET) -> t.FsGetMetadataResult:
        """``fs/getMetadata``."""
        params = t.FsGetMetadataParams(path=t.WirePath(path))
        return self._typed("fs/getMetadata", params, t.FsGetMetadataResult, timeout)

    def fs_read_directory(
        self, *, path: str, timeout: Timeoutish = UNSET
    ) -> t.FsReadDirectoryResult:
        """``fs/readDirectory`` (unsorted)."""
        params = t.FsReadDirectoryParams(path=t.WirePath(path))
        return self._typed("fs/readDirectory", params, t.FsReadDirectoryResult, timeout)

    def fs_remove(
        self,
        *,
        path: str,
        recursive: bool | None = None,
        force: bool | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.FsRemoveResult:
        """``fs/remove`` (server defaults: recursive, force)."""
        params = t.FsRemoveParams(path=t.WirePath(path), recursive=recursive, force=force)
        return self._typed("fs/remove", params, t.FsRemoveResult, timeout)

    def fs_copy(
        self,
        *,
        source_path: str,
        destination_path: str,
        recursive: bool,
        timeout: Timeoutish = UNSET,
    ) -> t.FsCopyResult:
        """``fs/copy``."""
        params = t.FsCopyParams(
            source_path=t.WirePath(source_path),
            destination_path=t.WirePath(destination_path),
            recursive=recursive,
        )
        return self._typed("fs/copy", params, t.FsCopyResult, timeout)

    def fs_canonicalize(self, *, path: str, timeout: Timeoutish = UNSET) -> t.FsCanonicalizeResult:
        """``fs/canonicalize`` (G2)."""
        params = t.FsCanonicalizeParams(path=t.WirePath(path))
        return self._typed("fs/canonicalize", params, t.FsCanonicalizeResult, timeout)

    def fs_walk(
        self,
        *,
        path: str,
        max_depth: int,
        max_directories: int,
        max_entries: int,
        follow_directory_symlinks: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> t.FsWalkResult:
        """``fs/walk`` (G2)."""
        params = t.FsWalkParams(
            path=t.WirePath(path),
            options=t.FsWalkOptions(
                max_depth=max_depth,
                max_directories=max_directories,
                max_entries=max_entries,
                follow_directory_symlinks=follow_directory_symlinks,
            ),
        )
        return self._typed("fs/walk", params, t.FsWalkResult, timeout)

    def fs_open(
        self,
        *,
        handle_id: str,
        path: str,
        mode: t.OpenMode | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.FsOpenResult:
        """``fs/open`` (G2): a block handle named by the caller."""
        params = t.FsOpenParams(handle_id=handle_id, path=t.WirePath(path), mode=mode)
        generation = self._link.generation
        result = self._typed("fs/open", params, t.FsOpenResult, timeout)
        if self._link.policy is not None:
            self._handles[handle_id] = generation
        return result

    def fs_read_block(
        self, *, handle_id: str, offset: int, len: int, timeout: Timeoutish = UNSET
    ) -> t.FsReadBlockResult:
        """``fs/readBlock`` (G2): up to ``len`` (1 .. 1 MiB) bytes at ``offset``."""
        self._stale_handle("fs/readBlock", handle_id)
        params = t.FsReadBlockParams(handle_id=handle_id, offset=offset, len=len)
        return self._typed("fs/readBlock", params, t.FsReadBlockResult, timeout)

    def fs_write_block(
        self, *, handle_id: str, offset: int, chunk: bytes, timeout: Timeoutish = UNSET
    ) -> t.FsWriteBlockResult:
        """``fs/writeBlock`` (G2): at most 1 MiB at ``offset``."""
        self._stale_handle("fs/writeBlock", handle_id)
        params = t.FsWriteBlockParams(handle_id=handle_id, offset=offset, chunk=chunk)
        return self._typed("fs/writeBlock", params, t.FsWriteBlockResult, timeout)

    def fs_close(self, *, handle_id: str, timeout: Timeoutish = UNSET) -> t.FsCloseResult:
        """``fs/close`` (G2). A handle of a connection that was replaced is already gone: no-op."""
        if not self._check_handle(handle_id):
            self._handles.pop(handle_id, None)
            return t.FsCloseResult()
        params = t.FsCloseParams(handle_id=handle_id)
        result = self._typed("fs/close", params, t.FsCloseResult, timeout)
        self._handles.pop(handle_id, None)
        return result

    def _stale_handle(self, method: str, handle_id: str) -> None:
        if not self._check_handle(handle_id):
            raise ConnectionLost(
                f"{method}: file handle {handle_id!r} was opened on a connection to {self.url} "
                "that was lost (handles do not survive a reconnect); open the file again"
            )

    def fs_watch_missing(
        self,
        *,
        watch_id: int,
        missing: Sequence[str],
        present: Sequence[str] | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.FsWatchMissingResult:
        """``fs/watchMissing`` (G2)."""
        params = t.FsWatchMissingParams(
            watch_id=watch_id,
            missing=[t.WirePath(p) for p in missing],
            present=None if present is None else [t.WirePath(p) for p in present],
        )
        return self._typed("fs/watchMissing", params, t.FsWatchMissingResult, timeout)

    def fs_set_mode(
        self, *, path: str, mode: int, timeout: Timeoutish = UNSET
    ) -> t.FsSetModeResult:
        """``fs/setMode`` (execsdk extension; needs ``execsdk/fileMode``): permission bits."""
        params = t.FsSetModeParams(path=t.WirePath(path), mode=mode)
        # Setting the same bits twice is harmless: safe to repeat after a reconnect.
        return self._typed("fs/setMode", params, t.FsSetModeResult, timeout, retry=True)

    def fs_stat(self, *, path: str, timeout: Timeoutish = UNSET) -> t.FsStatResult:
        """``fs/stat`` (execsdk extension; needs ``execsdk/fileMode``): ``fs/getMetadata``
        plus the permission bits."""
        params = t.FsStatParams(path=t.WirePath(path))
        return self._typed("fs/stat", params, t.FsStatResult, timeout, retry=True)

    def http_request(
        self,
        *,
        method: str,
        url: str,
        request_id: str,
        headers: Sequence[tuple[str, str]] = (),
        body_base64: bytes | None = None,
        timeout_ms: int | None = None,
        stream_response: bool | None = None,
        timeout: Timeoutish = UNSET,
    ) -> t.HttpRequestResult:
        """``http/request`` (G2): an HTTP request made by the server."""
        params = t.HttpRequestParams(
            method=method,
            url=url,
            request_id=request_id,
            headers=[t.HttpHeader(name=n, value=v) for n, v in headers] or None,
            body_base64=body_base64,
            timeout_ms=timeout_ms,
            stream_response=stream_response,
        )
        return self._typed("http/request", params, t.HttpRequestResult, timeout)
