"""Client: the public blocking exec-server client with one typed method per protocol method.

It wraps the private RPC core (``_rpc``), performs the ``initialize``/``initialized``
handshake, detects the protocol generation (G2 answers ``initialize`` with
``environmentInfo``), and converts between attrs types and the wire with one cattrs converter
per generation, so paths are plain strings whatever the server speaks.
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from execsdk._deadline import UNSET, Timeoutish
from execsdk._dispatch import CallbackDispatcher
from execsdk._protocol import types as t
from execsdk._protocol.converter import make_converter, structure_result, unstructure_params
from execsdk._protocol.methods import METHODS
from execsdk._rpc.bus import EventBus
from execsdk._rpc.client import RpcClient
from execsdk._transport.base import Transport
from execsdk._transport.stdio import StdioTransport
from execsdk._transport.websocket import WebSocketTransport
from execsdk.errors import (
    ConnectError,
    ConnectionLost,
    InitializeTimeout,
    RequestTimeout,
    UnsupportedByServer,
)

__all__ = ["Client", "Generation", "ServerInfo"]

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
    ) -> None:
        self._rpc = RpcClient(
            transport, timeout=timeout, max_in_flight=max_in_flight, dispatcher=None
        )
        try:
            self.server_info = self._handshake(client_name, resume_session_id, initialize_timeout)
        except BaseException:
            self._rpc.close(timeout=1.0)
            raise
        self._conv = make_converter("G2" if self.server_info.generation is Generation.G2 else "G1")

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
    ) -> Client:
        """Open a WebSocket to ``url`` and perform the handshake.

        ``timeout`` is the default for every later call (``None``: no limit).
        Raises ``ConnectError``/``ConnectTimeout``/``InitializeTimeout``.
        """
        transport = WebSocketTransport.connect(
            url, token=token, timeout=connect_timeout, ssl_context=ssl_context
        )
        return cls(
            transport,
            client_name=client_name,
            timeout=timeout,
            initialize_timeout=initialize_timeout,
            resume_session_id=resume_session_id,
            max_in_flight=max_in_flight,
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

    def _handshake(
        self, client_name: str, resume: str | None, initialize_timeout: float | None
    ) -> ServerInfo:
        params = unstructure_params(
            make_converter("G2"),
            t.InitializeParams(client_name=client_name, resume_session_id=resume),
        )
        try:
            raw = self._rpc.call("initialize", params, timeout=initialize_timeout)
        except RequestTimeout as exc:
            raise InitializeTimeout(
                f"{self._rpc.description} accepted the connection but did not answer "
                f"initialize within {initialize_timeout}s: is it an exec-server?",
                url=self._rpc.description,
            ) from exc
        except ConnectionLost as exc:
            raise ConnectError(
                f"{self._rpc.description} closed the connection during the handshake",
                url=self._rpc.description,
            ) from exc
        generation: Literal["G1", "G2"] = (
            "G2" if isinstance(raw, dict) and "environmentInfo" in raw else "G1"
        )
        result = structure_result(
            make_converter(generation), raw, t.InitializeResult, method="initialize"
        )
        self._rpc.notify("initialized", {}, timeout=initialize_timeout)
        return ServerInfo(
            session_id=result.session_id,
            generation=Generation(generation),
            environment=result.environment_info,
        )

    # ------------------------------------------------------------------ plumbing

    @property
    def events(self) -> EventBus:
        """The event bus of server notifications (process output, exit, close, ...)."""
        return self._rpc.bus

    @property
    def dispatcher(self) -> CallbackDispatcher:
        """The thread that runs user callbacks for this client."""
        return self._rpc.dispatcher

    @property
    def generation(self) -> Generation:
        """Shortcut for ``server_info.generation``."""
        return self.server_info.generation

    @property
    def url(self) -> str:
        """The server URL (or the stdio command)."""
        return self._rpc.description

    @property
    def is_open(self) -> bool:
        """True until the client is closed or the connection lost."""
        return self._rpc.is_open

    @property
    def rpc(self) -> RpcClient:
        """The underlying RPC core (advanced use)."""
        return self._rpc

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
        """Send any request and return the raw result (for methods not modelled here)."""
        return self._rpc.call(method, params, timeout=timeout)

    def _typed(self, method: str, params: Any, result: type[R], timeout: Timeoutish) -> R:
        self._require(method)
        raw = self._rpc.call(method, unstructure_params(self._conv, params), timeout=timeout)
        return structure_result(self._conv, raw, result, method=method)

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the connection; idempotent. Pending calls fail with ``ConnectionClosed``."""
        self._rpc.close(timeout)

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
        """``process/start``. Register for its events on ``events`` *before* calling this."""
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
        return self._typed("process/start", params, t.ProcessStartResult, timeout)

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
        """``process/write``. G2 needs a fresh ``write_id`` per write (an idempotency key)."""
        params = t.ProcessWriteParams(process_id=process_id, chunk=chunk, write_id=write_id)
        return self._typed("process/write", params, t.ProcessWriteResult, timeout)

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
        return self._typed("fs/open", params, t.FsOpenResult, timeout)

    def fs_read_block(
        self, *, handle_id: str, offset: int, len: int, timeout: Timeoutish = UNSET
    ) -> t.FsReadBlockResult:
        """``fs/readBlock`` (G2): up to ``len`` (1 .. 1 MiB) bytes at ``offset``."""
        params = t.FsReadBlockParams(handle_id=handle_id, offset=offset, len=len)
        return self._typed("fs/readBlock", params, t.FsReadBlockResult, timeout)

    def fs_write_block(
        self, *, handle_id: str, offset: int, chunk: bytes, timeout: Timeoutish = UNSET
    ) -> t.FsWriteBlockResult:
        """``fs/writeBlock`` (G2): at most 1 MiB at ``offset``."""
        params = t.FsWriteBlockParams(handle_id=handle_id, offset=offset, chunk=chunk)
        return self._typed("fs/writeBlock", params, t.FsWriteBlockResult, timeout)

    def fs_close(self, *, handle_id: str, timeout: Timeoutish = UNSET) -> t.FsCloseResult:
        """``fs/close`` (G2)."""
        params = t.FsCloseParams(handle_id=handle_id)
        return self._typed("fs/close", params, t.FsCloseResult, timeout)

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
