"""Interfaces between the facades (Process, Fs) and their backends, plus public value types.

Two backends implement each interface: the local one (``local.py``: real processes and the real
disk in this Python process) and the remote one (``remote.py``: calls over a ``Client``). Our
server (``server/``) wraps the local backends, so their behaviour follows the exec-server
protocol (PROTOCOL.md) closely: seq-numbered events, exit codes 128+N for signals, the same
error conditions. Paths at this level are absolute POSIX path strings; URIs never appear here.

This module imports only ``errors`` and the stdlib/attrs.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, Protocol, runtime_checkable

import attrs

from execsdk._deadline import UNSET, Timeoutish

__all__ = [
    "DEFAULT_ENV_POLICY",
    "DirEntry",
    "EnvPolicy",
    "EnvironmentInfo",
    "FileInfo",
    "FileMetadata",
    "FsBackend",
    "OutputChunk",
    "ProcessBackend",
    "ProcessEvents",
    "ProcessSpec",
    "ReadResult",
    "Stream",
    "WalkEntry",
    "WalkResult",
    "WriteStatus",
]

Stream = Literal["stdout", "stderr", "pty"]


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError("expected a sequence of strings, not a single string")
    return tuple(values)


WriteStatus = Literal["accepted", "unknownProcess", "stdinClosed", "starting"]


# --------------------------------------------------------------------------- public values


@attrs.frozen
class EnvironmentInfo:
    """What an environment is: OS, shell, default cwd, home and temp dirs, protocol generation.

    ``generation`` is ``"G1"`` (absolute-path servers such as codex 0.123), ``"G2"`` (``file://``
    URI servers such as codex 0.169 and ``execsdk serve``) or ``"local"``.
    """

    os: str
    shell: str
    cwd: str
    home: str
    temp_dir: str
    generation: str
    capabilities: frozenset[str] = frozenset()


@attrs.frozen
class OutputChunk:
    """One piece of a process's output, in server order. ``stream`` is stdout, stderr or pty."""

    stream: Stream
    data: bytes
    seq: int = 0


@attrs.frozen
class EnvPolicy:
    """How the child environment is built before ``env`` is laid on top (PROTOCOL.md §3.4).

    ``inherit``: start from the environment's own variables (``"all"``), a core subset
    (``"core"``) or nothing (``"none"``). Unless ``ignore_default_excludes``, names matching
    ``*KEY*``, ``*SECRET*``, ``*TOKEN*`` are dropped; then ``exclude`` globs are dropped,
    ``set`` is applied and, when non-empty, only ``include_only`` matches are kept.
    """

    inherit: Literal["all", "core", "none"] = "all"
    ignore_default_excludes: bool = True
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    set: Mapping[str, str] = attrs.field(factory=dict)
    include_only: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


DEFAULT_ENV_POLICY = EnvPolicy()
"""Inherit everything, default excludes off: how codex itself launches tools."""


@attrs.frozen
class ProcessSpec:
    """Everything a backend needs to start a process.

    ``env_policy=None`` means the child gets exactly ``env`` (the server default without a
    policy; ``replace_env=True`` in the facade). ``cwd`` is an absolute path or ``None`` for
    the environment's default cwd.
    """

    argv: tuple[str, ...] = attrs.field(converter=_str_tuple)
    cwd: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    env_policy: EnvPolicy | None = DEFAULT_ENV_POLICY
    tty: bool = False
    pipe_stdin: bool = False
    arg0: str | None = None


@attrs.frozen
class ReadResult:
    """Answer of :meth:`ProcessBackend.read` (``process/read``)."""

    chunks: tuple[OutputChunk, ...]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    failure: str | None = None


@attrs.frozen
class FileMetadata:
    """Raw metadata as the protocol gives it (``fs/getMetadata``); times in ms since epoch."""

    is_directory: bool
    is_file: bool
    is_symlink: bool
    size: int | None
    created_at_ms: int
    modified_at_ms: int


@attrs.frozen
class FileInfo:
    """Public ``stat()`` result: attributes, not methods.

    ``size`` is ``None`` where the server gives none (G1); ``created`` is ``None`` where the
    filesystem records no birth time. Times are timezone-aware UTC datetimes. ``mode`` is the
    permission bits (``stat.S_IMODE``: rwx for user, group and others plus setuid, setgid and
    sticky) of the file a link leads to, or ``None`` where the server cannot tell in the same
    call (codex servers).
    """

    is_file: bool
    is_dir: bool
    is_symlink: bool
    size: int | None
    modified: _dt.datetime | None
    created: _dt.datetime | None
    mode: int | None = None

    @classmethod
    def from_metadata(cls, meta: FileMetadata, mode: int | None = None) -> FileInfo:
        """Convert protocol metadata (plus the permission bits, when known) to the public
        shape."""

        def when(ms: int) -> _dt.datetime | None:
            if not ms:
                return None
            return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)

        return cls(
            is_file=meta.is_file,
            is_dir=meta.is_directory,
            is_symlink=meta.is_symlink,
            size=meta.size,
            modified=when(meta.modified_at_ms),
            created=when(meta.created_at_ms),
            mode=mode,
        )


@attrs.frozen
class DirEntry:
    """One directory entry. ``is_symlink`` is ``None`` where the backend cannot tell (remote)."""

    name: str
    is_file: bool
    is_dir: bool
    is_symlink: bool | None = None


@attrs.frozen
class WalkEntry:
    """One entry of ``fs/walk``: an absolute path and its kind ("file", "directory", ...)."""

    path: str
    kind: str


@attrs.frozen
class WalkResult:
    """Answer of ``fs/walk``."""

    entries: tuple[WalkEntry, ...]
    errors: tuple[str, ...]
    truncated: bool


# --------------------------------------------------------------------------- backend protocols


class ProcessEvents(Protocol):
    """Receiver of one process's events, registered with :meth:`ProcessBackend.start`.

    Backends call these from their own I/O thread (the client's reader, the local I/O thread):
    implementations must be quick and must never block or raise. Every event carries the
    process's seq number: one counter from 1 shared by output, exited and closed. ``closed``
    is always the last event; ``exited`` may come before the last output.
    """

    def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
        """A chunk of output (at most 8 KiB)."""

    def on_exited(self, seq: int, exit_code: int) -> None:
        """The exit code is known (128+N for death by signal N)."""

    def on_closed(self, seq: int) -> None:
        """Every output chunk has been delivered; nothing follows."""

    def on_lost(self, exc: BaseException) -> None:
        """The backend can deliver nothing more (connection lost or closed)."""


@runtime_checkable
class ProcessBackend(Protocol):
    """Starts and controls processes. Thread-safety: every method may be called from any thread.

    Methods that may block take a keyword-only ``timeout`` (``UNSET`` = the backend default,
    ``None`` = no limit). A process id is chosen by the caller and unique in the backend.
    """

    @property
    def can_close_stdin(self) -> bool:
        """True when :meth:`close_stdin` works (local; servers announcing execsdk/closeStdin)."""

    @property
    def can_interrupt(self) -> bool:
        """True when :meth:`interrupt` works (local, G2)."""

    def start(
        self,
        process_id: str,
        spec: ProcessSpec,
        events: ProcessEvents,
        *,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Start a process. ``events`` is registered before the process can produce anything.

        Raises ``FileNotFoundError`` (an ``errors.RemoteOSError`` subclass) for a missing
        executable or cwd, ``errors.InvalidParams`` for an empty argv,
        ``errors.InvalidRequest`` for a duplicate id.
        """

    def write(self, process_id: str, data: bytes, *, timeout: Timeoutish = UNSET) -> WriteStatus:
        """Queue ``data`` for the process's stdin; returns the protocol's write status."""

    def close_stdin(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """Close the process's stdin so it sees EOF. Raises ``UnsupportedByServer`` if unable."""

    def interrupt(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """Send SIGINT to the process. Raises ``UnsupportedByServer`` if unable (G1)."""

    def terminate(self, process_id: str, *, timeout: Timeoutish = UNSET) -> bool:
        """SIGKILL the process group; True when the process was running."""

    def read(
        self,
        process_id: str,
        *,
        after_seq: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int | None = None,
        timeout: Timeoutish = UNSET,
    ) -> ReadResult:
        """Retained output after ``after_seq`` (exclusive) plus the exit state (``process/read``).

        Raises ``errors.ProcessNotFound`` for an unknown (or forgotten) process id.
        """

    def release(self, process_id: str) -> None:
        """Forget the events receiver of a process (after closed, or when the facade is done)."""


@runtime_checkable
class FsBackend(Protocol):
    """Filesystem primitives, one per protocol method. Paths are absolute POSIX strings.

    Errors: builtin-mapped ``errors.RemoteOSError`` subclasses (``FileNotFoundError`` ...);
    semantic refusals raise ``errors.InvalidRequest``. Methods that are absent (G1) raise
    ``errors.UnsupportedByServer``; ``features`` says which optional groups exist.
    Thread-safety: every method may be called from any thread.
    """

    @property
    def features(self) -> frozenset[str]:
        """Optional method groups offered: ``"canonicalize"``, ``"walk"``, ``"blocks"``."""

    def read_file(self, path: str, *, timeout: Timeoutish = UNSET) -> bytes:
        """Whole content of a file."""

    def write_file(self, path: str, data: bytes, *, timeout: Timeoutish = UNSET) -> None:
        """Create or truncate a file; the parent must exist."""

    def create_directory(
        self, path: str, *, recursive: bool = True, timeout: Timeoutish = UNSET
    ) -> None:
        """Create a directory (with parents when ``recursive``; an existing one is fine then)."""

    def get_metadata(self, path: str, *, timeout: Timeoutish = UNSET) -> FileMetadata:
        """Type, size and times; follows symlinks but flags ``is_symlink``."""

    def read_directory(self, path: str, *, timeout: Timeoutish = UNSET) -> list[DirEntry]:
        """Entries in arbitrary order; dangling symlinks omitted, links report the target type."""

    def remove(
        self,
        path: str,
        *,
        recursive: bool = True,
        force: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Remove a file, link or tree; a missing path is fine unless ``force`` is False."""

    def copy(
        self, source: str, destination: str, *, recursive: bool, timeout: Timeoutish = UNSET
    ) -> None:
        """Copy a file or (with ``recursive``) a tree; symlinks are copied as links."""

    def canonicalize(self, path: str, *, timeout: Timeoutish = UNSET) -> str:
        """The absolute path with symlinks resolved."""

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
        """Entries below ``path`` (server-side walk)."""

    def open(
        self,
        handle_id: str,
        path: str,
        *,
        mode: Literal["read", "replace"] = "read",
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Open a block handle chosen by the caller (``replace`` creates/truncates)."""

    def read_block(
        self, handle_id: str, offset: int, length: int, *, timeout: Timeoutish = UNSET
    ) -> tuple[bytes, bool]:
        """Up to ``length`` (1..1 MiB) bytes at ``offset`` and whether EOF was reached."""

    def write_block(
        self, handle_id: str, offset: int, data: bytes, *, timeout: Timeoutish = UNSET
    ) -> None:
        """Write ``data`` (1..1 MiB bytes) at ``offset``."""

    def close_handle(self, handle_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """Close a block handle."""


Submit = Callable[[Callable[[], object]], object]
"""Runs a callback on the environment's dispatcher thread (never a reader or I/O thread)."""
