"""RemoteEnvironment: the process and filesystem backends over a :class:`Client`.

This is the one place where wire types become public types and where server errors become
the builtin-mapped exceptions of ``errors`` (STYLE.md §4): structured codes first, then the
OS error number the server puts in its message (``"... (os error 2)"``); prose alone is never
trusted, and anything unrecognised stays the original ``ServerError``.
"""

from __future__ import annotations

import errno
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from execsdk._base import Environment
from execsdk._deadline import UNSET, Timeoutish
from execsdk._protocol import types as t
from execsdk._protocol.converter import b64decode as _b64decode
from execsdk.client import Client, Generation
from execsdk.environment import (
    DirEntry,
    EnvironmentInfo,
    FileMetadata,
    OutputChunk,
    ProcessEvents,
    ProcessSpec,
    ReadResult,
    WalkEntry,
    WalkResult,
    WriteStatus,
)
from execsdk.errors import (
    ConnectionClosed,
    InvalidRequest,
    NotFound,
    ProcessNotFound,
    ServerError,
    SessionLost,
    UnsupportedByServer,
    os_error,
)

__all__ = ["RemoteEnvironment", "RemoteFsBackend", "RemoteProcessBackend", "map_fs_errors"]

log = logging.getLogger(__name__)

_OS_ERROR = re.compile(r"^(?P<text>.*?)\s*\(os error (?P<errno>\d+)\)\s*$", re.S)
_UNKNOWN_PROCESS = "unknown process id"


@contextmanager
def map_fs_errors(method: str, path: str | None) -> Iterator[None]:
    """Turn a server error about ``path`` into the matching builtin-mapped exception."""
    try:
        yield
    except ServerError as exc:
        raise _fs_error(exc, method, path) from exc


def _fs_error(exc: ServerError, method: str, path: str | None) -> Exception:
    message = exc.message
    match = _OS_ERROR.match(message)
    if match:
        num = int(match.group("errno"))
        return os_error(num, match.group("text"), path, method=method, server_message=message)
    if isinstance(exc, NotFound) and "file handle" not in message:
        return os_error(
            errno.ENOENT, "No such file or directory", path, method=method, server_message=message
        )
    if isinstance(exc, InvalidRequest) and (
        "is not a file" in message or "requires recursive: true" in message
    ):
        return os_error(errno.EISDIR, "Is a directory", path, method=method, server_message=message)
    return exc


_OUTPUT, _EXITED, _CLOSED = 0, 1, 2


class _Receivers:
    """processId -> ProcessEvents, fed from the client's reader thread.

    Process events are held until the reader has caught up with the network (the bus's idle
    hook) and then delivered in arrival order, so a consumer blocked in ``output()`` is woken
    once per burst of chunks that arrived together rather than once per chunk (a modest
    saving, see docs/performance.md).

    With a reconnecting client the receivers survive a drop: after the session is resumed
    each live process is told to re-read what it may have missed (``on_resync``: notifications
    sent while disconnected are not replayed, PROTOCOL.md §2); when the session is lost each
    fails with ``SessionLost``.

    Thread-safety: registration from any thread; dispatch on the reader thread.
    """

    def __init__(self, client: Client) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, ProcessEvents] = {}
        self._ended: BaseException | None = None
        self._held: list[tuple[int, dict[str, Any]]] = []
        bus = client.events
        bus.add_handler("process/output", self._on_output)
        bus.add_handler("process/exited", self._on_exited)
        bus.add_handler("process/closed", self._on_closed)
        bus.add_idle_handler(self._deliver)
        bus.add_close_handler(self._on_end)
        client.add_reconnect_handler(self._on_reconnected)

    def add(self, process_id: str, events: ProcessEvents) -> None:
        with self._lock:
            if self._ended is not None:
                raise self._ended
            self._by_id[process_id] = events

    def remove(self, process_id: str, events: ProcessEvents | None = None) -> None:
        with self._lock:
            if events is None or self._by_id.get(process_id) is events:
                self._by_id.pop(process_id, None)

    def _on_output(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._held.append((_OUTPUT, params))

    def _on_exited(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._held.append((_EXITED, params))

    def _on_closed(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._held.append((_CLOSED, params))

    def _deliver(self) -> None:
        """Hand every held event to its process, in arrival order."""
        if not self._held:
            return
        with self._lock:
            held, self._held = self._held, []
        by_id = self._by_id
        for kind, params in held:
            events = by_id.get(params.get("processId"))  # type: ignore[arg-type]
            if events is None:
                continue
            try:
                if kind == _OUTPUT:
                    events.on_output(params["seq"], params["stream"], _b64decode(params["chunk"]))
                elif kind == _EXITED:
                    events.on_exited(params["seq"], params["exitCode"])
                else:
                    events.on_closed(params["seq"])
            except Exception:
                log.exception("dropping a malformed process notification %r", params)

    def _on_reconnected(self, lost: SessionLost | None) -> None:
        """After a reconnect (reconnecting thread): resync every live process, or fail them
        all when their session is gone."""
        with self._lock:
            receivers = list(self._by_id.values())
            if lost is not None:
                self._by_id = {}
        for events in receivers:
            try:
                if lost is not None:
                    events.on_lost(lost)
                else:
                    resync = getattr(events, "on_resync", None)
                    if resync is not None:
                        resync()
            except Exception:
                log.exception("process receiver failed after a reconnect")

    def _on_end(self, cause: BaseException | None) -> None:
        self._deliver()
        with self._lock:
            self._ended = cause or ConnectionClosed("the client was closed")
            receivers, self._by_id = list(self._by_id.values()), {}
        for events in receivers:
            try:
                events.on_lost(self._ended)
            except Exception:
                log.exception("process receiver failed on connection end")


class RemoteProcessBackend:
    """ProcessBackend over ``process/*``. Thread-safety: every method from any thread."""

    def __init__(self, client: Client, default_cwd: str) -> None:
        self._client = client
        self._default_cwd = default_cwd
        self._receivers = _Receivers(client)

    @property
    def can_close_stdin(self) -> bool:
        return self._client.supports("process/closeStdin")

    @property
    def can_interrupt(self) -> bool:
        return self._client.supports("process/signal")

    def start(
        self,
        process_id: str,
        spec: ProcessSpec,
        events: ProcessEvents,
        *,
        timeout: Timeoutish = UNSET,
    ) -> None:
        policy = spec.env_policy
        wire_policy = (
            None
            if policy is None
            else t.WireEnvPolicy(
                inherit=policy.inherit,
                ignore_default_excludes=policy.ignore_default_excludes,
                exclude=list(policy.exclude),
                set=dict(policy.set),
                include_only=list(policy.include_only),
            )
        )
        # Output may arrive before the start answer (PROTOCOL.md §4.3): register first.
        self._receivers.add(process_id, events)
        try:
            with map_fs_errors("process/start", spec.argv[0] if spec.argv else None):
                self._client.process_start(
                    process_id=process_id,
                    argv=spec.argv,
                    cwd=spec.cwd or self._default_cwd,
                    env=spec.env,
                    tty=spec.tty,
                    pipe_stdin=spec.pipe_stdin or None,
                    arg0=spec.arg0,
                    env_policy=wire_policy,
                    timeout=timeout,
                )
        except BaseException:
            self._receivers.remove(process_id, events)
            raise

    def write(self, process_id: str, data: bytes, *, timeout: Timeoutish = UNSET) -> WriteStatus:
        result = self._client.process_write(
            process_id=process_id, chunk=data, write_id=uuid.uuid4().hex, timeout=timeout
        )
        return result.status

    def close_stdin(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        self._client.process_close_stdin(process_id=process_id, timeout=timeout)

    def interrupt(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        if not self.can_interrupt:
            raise UnsupportedByServer(
                "interrupt (process/signal)",
                self._client.generation.value,
                "use terminate() to stop the process",
            )
        self._client.process_signal(process_id=process_id, timeout=timeout)

    def terminate(self, process_id: str, *, timeout: Timeoutish = UNSET) -> bool:
        return self._client.process_terminate(process_id=process_id, timeout=timeout).running

    def read(
        self,
        process_id: str,
        *,
        after_seq: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int | None = None,
        timeout: Timeoutish = UNSET,
    ) -> ReadResult:
        try:
            res = self._client.process_read(
                process_id=process_id,
                after_seq=after_seq,
                max_bytes=max_bytes,
                wait_ms=wait_ms,
                timeout=timeout,
            )
        except InvalidRequest as exc:
            if _UNKNOWN_PROCESS in exc.message:
                raise ProcessNotFound(exc.message, process_id=process_id) from exc
            raise
        return ReadResult(
            chunks=tuple(OutputChunk(c.stream, c.chunk, c.seq) for c in res.chunks),
            next_seq=res.next_seq,
            exited=res.exited,
            exit_code=res.exit_code,
            closed=res.closed,
            failure=res.failure,
        )

    def release(self, process_id: str) -> None:
        self._receivers.remove(process_id)


class RemoteFsBackend:
    """FsBackend over ``fs/*``. Thread-safety: every method from any thread."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def features(self) -> frozenset[str]:
        if self._client.generation is Generation.G2:
            return frozenset({"canonicalize", "walk", "blocks"})
        return frozenset()

    def read_file(self, path: str, *, timeout: Timeoutish = UNSET) -> bytes:
        with map_fs_errors("fs/readFile", path):
            return self._client.fs_read_file(path=path, timeout=timeout).data_base64

    def write_file(self, path: str, data: bytes, *, timeout: Timeoutish = UNSET) -> None:
        with map_fs_errors("fs/writeFile", path):
            self._client.fs_write_file(path=path, data_base64=data, timeout=timeout)

    def create_directory(
        self, path: str, *, recursive: bool = True, timeout: Timeoutish = UNSET
    ) -> None:
        with map_fs_errors("fs/createDirectory", path):
            self._client.fs_create_directory(path=path, recursive=recursive, timeout=timeout)

    def get_metadata(self, path: str, *, timeout: Timeoutish = UNSET) -> FileMetadata:
        with map_fs_errors("fs/getMetadata", path):
            m = self._client.fs_get_metadata(path=path, timeout=timeout)
        return FileMetadata(
            is_directory=m.is_directory,
            is_file=m.is_file,
            is_symlink=m.is_symlink,
            size=m.size,
            created_at_ms=m.created_at_ms,
            modified_at_ms=m.modified_at_ms,
        )

    def read_directory(self, path: str, *, timeout: Timeoutish = UNSET) -> list[DirEntry]:
        with map_fs_errors("fs/readDirectory", path):
            res = self._client.fs_read_directory(path=path, timeout=timeout)
        return [DirEntry(e.file_name, e.is_file, e.is_directory, None) for e in res.entries]

    def remove(
        self,
        path: str,
        *,
        recursive: bool = True,
        force: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        with map_fs_errors("fs/remove", path):
            self._client.fs_remove(path=path, recursive=recursive, force=force, timeout=timeout)

    def copy(
        self, source: str, destination: str, *, recursive: bool, timeout: Timeoutish = UNSET
    ) -> None:
        with map_fs_errors("fs/copy", source):
            self._client.fs_copy(
                source_path=source,
                destination_path=destination,
                recursive=recursive,
                timeout=timeout,
            )

    def canonicalize(self, path: str, *, timeout: Timeoutish = UNSET) -> str:
        with map_fs_errors("fs/canonicalize", path):
            return str(self._client.fs_canonicalize(path=path, timeout=timeout).path)

    def walk(
        self,
        path: str,
        *,
        max_depth: int,
        max_directories: int,
        max_entries: int,
        follow_directory_symlinks: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> WalkResult:
        with map_fs_errors("fs/walk", path):
            res = self._client.fs_walk(
                path=path,
                max_depth=max_depth,
                max_directories=max_directories,
                max_entries=max_entries,
                follow_directory_symlinks=follow_directory_symlinks,
                timeout=timeout,
            )
        return WalkResult(
            entries=tuple(WalkEntry(str(e.path), e.kind) for e in res.entries),
            errors=tuple(f"{e.path}: {e.message}" for e in res.errors),
            truncated=res.truncated,
        )

    def open(
        self,
        handle_id: str,
        path: str,
        *,
        mode: Literal["read", "replace"] = "read",
        timeout: Timeoutish = UNSET,
    ) -> None:
        with map_fs_errors("fs/open", path):
            self._client.fs_open(handle_id=handle_id, path=path, mode=mode, timeout=timeout)

    def read_block(
        self, handle_id: str, offset: int, length: int, *, timeout: Timeoutish = UNSET
    ) -> tuple[bytes, bool]:
        with map_fs_errors("fs/readBlock", None):
            res = self._client.fs_read_block(
                handle_id=handle_id, offset=offset, len=length, timeout=timeout
            )
        return res.chunk, res.eof

    def write_block(
        self, handle_id: str, offset: int, data: bytes, *, timeout: Timeoutish = UNSET
    ) -> None:
        with map_fs_errors("fs/writeBlock", None):
            self._client.fs_write_block(
                handle_id=handle_id, offset=offset, chunk=data, timeout=timeout
            )

    def close_handle(self, handle_id: str, *, timeout: Timeoutish = UNSET) -> None:
        with map_fs_errors("fs/close", None):
            self._client.fs_close(handle_id=handle_id, timeout=timeout)


def _g1_probe(client: Client, timeout: float | None) -> dict[str, str]:
    """G1 has no environment/info: ask a short-lived process once, at connect."""
    script = (
        'printf "%s\\n" "$(readlink /proc/$PPID/cwd 2>/dev/null || echo "${PWD:-/}")" '
        '"${HOME:-/}" "${TMPDIR:-/tmp}" "${SHELL:-/bin/sh}" "$(uname -s)"'
    )
    out = bytearray()
    done = threading.Event()

    class _Collect:
        def on_output(self, seq: int, stream: str, data: bytes) -> None:
            if stream != "stderr":
                out.extend(data)

        def on_exited(self, seq: int, exit_code: int) -> None:
            pass

        def on_closed(self, seq: int) -> None:
            done.set()

        def on_lost(self, exc: BaseException) -> None:
            done.set()

    backend = RemoteProcessBackend(client, "/")
    pid = f"execsdk-probe-{uuid.uuid4().hex[:8]}"
    from execsdk.environment import DEFAULT_ENV_POLICY

    backend.start(
        pid,
        ProcessSpec(argv=("/bin/sh", "-c", script), cwd="/", env_policy=DEFAULT_ENV_POLICY),
        _Collect(),
        timeout=timeout,
    )
    done.wait(timeout)
    backend.release(pid)
    lines = out.decode("utf-8", "replace").splitlines()
    keys = ["cwd", "home", "temp_dir", "shell", "os"]
    values = dict(zip(keys, lines, strict=False))
    return {
        "cwd": values.get("cwd") or "/",
        "home": values.get("home") or "/",
        "temp_dir": values.get("temp_dir") or "/tmp",
        "shell": values.get("shell") or "/bin/sh",
        "os": (values.get("os") or "linux").lower(),
    }


def environment_info_of(client: Client, *, timeout: float | None = 10.0) -> EnvironmentInfo:
    """Build the public EnvironmentInfo from the handshake (G2) or a probe process (G1)."""
    info = client.server_info
    env = info.environment
    if env is not None:
        return EnvironmentInfo(
            os=env.platform_os or "linux",
            shell=env.shell.path,
            cwd=str(env.cwd or "/"),
            home=str(env.user_home_dir or "/"),
            temp_dir=str(env.temp_dir or "/tmp"),
            generation=info.generation.value,
            capabilities=info.capabilities,
        )
    probed = _g1_probe(client, timeout)
    return EnvironmentInfo(
        os=probed["os"],
        shell=probed["shell"],
        cwd=probed["cwd"],
        home=probed["home"],
        temp_dir=probed["temp_dir"],
        generation=info.generation.value,
        capabilities=frozenset(),
    )


class RemoteEnvironment(Environment):
    """An Environment on an exec-server, owning (or borrowing) its :class:`Client`.

    Thread-safety: safe to share between threads, like the client.
    """

    def __init__(
        self,
        client: Client,
        *,
        owns_client: bool = True,
        timeout: float | None = 30.0,
        output_budget: int = 64 * 2**20,
    ) -> None:
        self.client = client
        self._owns_client = owns_client
        info = environment_info_of(client, timeout=timeout)
        super().__init__(
            processes=RemoteProcessBackend(client, info.cwd),
            fs_backend=RemoteFsBackend(client),
            info=info,
            dispatcher=client.dispatcher,
            timeout=timeout,
            output_budget=output_budget,
        )

    @property
    def url(self) -> str:
        """The server's URL (or stdio command)."""
        return self.client.url

    @property
    def session_id(self) -> str:
        """The server session id (for ``resumeSessionId``)."""
        return self.client.server_info.session_id

    def close(self) -> None:
        """Close the client if this environment owns it. Idempotent."""
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        state = "" if self.client.is_open else " closed"
        return (
            f"<RemoteEnvironment {self.url} {self.info.generation} "
            f"session={self.session_id}{state}>"
        )
