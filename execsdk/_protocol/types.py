"""Wire types of the exec-server protocol (PROTOCOL.md §2-§3, §7), as frozen attrs classes.

One class per method's params and result and per notification, named after the method path:
``process/start`` -> :class:`ProcessStartParams` / :class:`ProcessStartResult`,
``process/output`` -> :class:`ProcessOutputNotification`. Fields are snake_case here and
camelCase on the wire (``converter.py`` does the renaming, base64 and path encoding).

Conventions the converter relies on:

- A field whose default is ``None`` is optional: it is left out of the message when ``None``.
  Every other field (required, or with a non-``None`` default) is always sent, so ``tty=False``
  and an empty ``envPolicy.exclude`` still reach the server.
- ``bytes`` fields are standard base64 on the wire.
- :data:`WirePath` fields hold an absolute POSIX path string in Python; on the wire they are a
  plain path for G1 servers and a ``file://`` URI for G2 servers.
- Fields only G2 servers send (``sandbox_type``, ``sandbox_denied``, ``size``) default to
  ``None`` so G1 answers structure too.

All classes are immutable values and safe to share between threads. This module imports only
attrs and the stdlib.
"""

from __future__ import annotations

from typing import Literal, NewType

import attrs

__all__ = [
    "EnvInherit",
    "EnvironmentConfigLayers",
    "EnvironmentConfigReadParams",
    "EnvironmentConfigReadResult",
    "EnvironmentInfoParams",
    "EnvironmentInfoResult",
    "EnvironmentStatusParams",
    "EnvironmentStatusResult",
    "FsCanonicalizeParams",
    "FsCanonicalizeResult",
    "FsCloseParams",
    "FsCloseResult",
    "FsCopyParams",
    "FsCopyResult",
    "FsCreateDirectoryParams",
    "FsCreateDirectoryResult",
    "FsDirectoryEntry",
    "FsGetMetadataParams",
    "FsGetMetadataResult",
    "FsOpenParams",
    "FsOpenResult",
    "FsReadBlockParams",
    "FsReadBlockResult",
    "FsReadDirectoryParams",
    "FsReadDirectoryResult",
    "FsReadFileParams",
    "FsReadFileResult",
    "FsRemoveParams",
    "FsRemoveResult",
    "FsSetModeParams",
    "FsSetModeResult",
    "FsStatParams",
    "FsStatResult",
    "FsWalkEntry",
    "FsWalkError",
    "FsWalkOptions",
    "FsWalkParams",
    "FsWalkResult",
    "FsWatchMissingParams",
    "FsWatchMissingResult",
    "FsWriteBlockParams",
    "FsWriteBlockResult",
    "FsWriteFileParams",
    "FsWriteFileResult",
    "HttpHeader",
    "HttpRequestBodyDeltaNotification",
    "HttpRequestParams",
    "HttpRequestResult",
    "InitializeParams",
    "InitializeResult",
    "OpenMode",
    "ProcessAckOutputParams",
    "ProcessAckOutputResult",
    "ProcessChunk",
    "ProcessCloseStdinParams",
    "ProcessCloseStdinResult",
    "ProcessClosedNotification",
    "ProcessExitedNotification",
    "ProcessKeepOutputParams",
    "ProcessKeepOutputResult",
    "ProcessOutputNotification",
    "ProcessReadParams",
    "ProcessReadResult",
    "ProcessSignal",
    "ProcessSignalParams",
    "ProcessSignalResult",
    "ProcessStartParams",
    "ProcessStartResult",
    "ProcessTerminateParams",
    "ProcessTerminateResult",
    "ProcessWriteParams",
    "ProcessWriteResult",
    "Stream",
    "WireEnvPolicy",
    "WireEnvironmentInfo",
    "WirePath",
    "WireShell",
    "WriteStatus",
]

WirePath = NewType("WirePath", str)
"""An absolute POSIX path; the converter writes it as a path (G1) or a ``file://`` URI (G2)."""

Stream = Literal["stdout", "stderr", "pty"]
WriteStatus = Literal["accepted", "unknownProcess", "stdinClosed", "starting"]
EnvInherit = Literal["all", "core", "none"]
ProcessSignal = Literal["interrupt"]
OpenMode = Literal["read", "replace", "createNew"]
"""``createNew``: our extension (§7, ``execsdk/exclusiveCreate``); codex refuses it."""


# --------------------------------------------------------------------------- initialize


@attrs.frozen(kw_only=True)
class InitializeParams:
    """``initialize`` params (§2): ``resume_session_id`` reattaches a detached session."""

    client_name: str
    resume_session_id: str | None = None


@attrs.frozen(kw_only=True)
class WireShell:
    """The server's shell: a stable name and a path or command name (not a :data:`WirePath`)."""

    name: str
    path: str


@attrs.frozen(kw_only=True)
class WireEnvironmentInfo:
    """``environment/info`` result, also ``environmentInfo`` in the G2 ``initialize`` result.

    Only ``shell`` is required: other G2 servers may omit the rest. ``capabilities`` keeps only
    boolean members; our extensions (``execsdk/closeStdin`` ...) are announced here (§7).
    """

    shell: WireShell
    executor_version: str | None = None
    provider_id: str | None = None
    cwd: WirePath | None = None
    user_home_dir: WirePath | None = None
    platform_os: str | None = None
    prepend_path_dirs: list[WirePath] | None = None
    temporary_directories: list[WirePath] | None = None
    temp_dir: WirePath | None = None
    capabilities: dict[str, bool] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class InitializeResult:
    """``initialize`` result; ``environment_info`` is present on G2 only (generation detection)."""

    session_id: str
    environment_info: WireEnvironmentInfo | None = None


# --------------------------------------------------------------------------- environment


@attrs.frozen(kw_only=True)
class EnvironmentInfoParams:
    """``environment/info`` takes no params."""


EnvironmentInfoResult = WireEnvironmentInfo


@attrs.frozen(kw_only=True)
class EnvironmentStatusParams:
    """``environment/status`` takes no params."""


@attrs.frozen(kw_only=True)
class EnvironmentStatusResult:
    """``environment/status`` result; codex answers ``"ready"``."""

    status: str


@attrs.frozen(kw_only=True)
class EnvironmentConfigReadParams:
    """``environmentConfig/read`` params (§3.21), as the codex CLI sends them."""

    cwd: WirePath
    config_paths: list[list[str]]
    requirements_paths: list[list[str]]


@attrs.frozen(kw_only=True)
class EnvironmentConfigLayers:
    """A layered config as ``environmentConfig/read`` reports it; layer contents are opaque."""

    layers: list[object]
    cloud_insertion_index: int | None = None


@attrs.frozen(kw_only=True)
class EnvironmentConfigReadResult:
    """``environmentConfig/read`` result (§3.21)."""

    user_home_dir: WirePath | None = None
    codex_home_dir: WirePath | None = None
    hostname: str | None = None
    config: EnvironmentConfigLayers | None = None
    requirements: EnvironmentConfigLayers | None = None


# --------------------------------------------------------------------------- processes


@attrs.frozen(kw_only=True)
class WireEnvPolicy:
    """``process/start`` ``envPolicy`` (§3.4); the server requires all five members."""

    inherit: EnvInherit
    ignore_default_excludes: bool
    exclude: list[str]
    set: dict[str, str]
    include_only: list[str]


@attrs.frozen(kw_only=True)
class ProcessStartParams:
    """``process/start`` params (§3.4). ``env``, ``tty`` and the rest above are required."""

    process_id: str
    argv: list[str]
    cwd: WirePath
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool | None = None
    arg0: str | None = None
    env_policy: WireEnvPolicy | None = None
    metadata: dict[str, object] | None = None
    sandbox: object | None = None
    enforce_managed_network: bool | None = None
    managed_network: object | None = None


@attrs.frozen(kw_only=True)
class ProcessStartResult:
    """``process/start`` result; ``sandbox_type`` (``"none"``) is G2 only."""

    process_id: str
    sandbox_type: str | None = None


@attrs.frozen(kw_only=True)
class ProcessReadParams:
    """``process/read`` params (§3.6): ``after_seq`` is exclusive, ``wait_ms`` long-polls."""

    process_id: str
    after_seq: int | None = None
    max_bytes: int | None = None
    wait_ms: int | None = None


@attrs.frozen(kw_only=True)
class ProcessChunk:
    """One retained output chunk in a ``process/read`` result."""

    seq: int
    stream: Stream
    chunk: bytes


@attrs.frozen(kw_only=True)
class ProcessReadResult:
    """``process/read`` result (§3.6); ``exit_code`` and ``failure`` are sent even when null."""

    chunks: list[ProcessChunk]
    next_seq: int
    exited: bool
    exit_code: int | None
    closed: bool
    failure: str | None
    sandbox_denied: bool | None = None


@attrs.frozen(kw_only=True)
class ProcessWriteParams:
    """``process/write`` params (§3.5); G2 requires a fresh ``write_id`` per write."""

    process_id: str
    chunk: bytes
    write_id: str | None = None


@attrs.frozen(kw_only=True)
class ProcessWriteResult:
    """``process/write`` result."""

    status: WriteStatus


@attrs.frozen(kw_only=True)
class ProcessSignalParams:
    """``process/signal`` params (§3.7, G2); ``interrupt`` is the only signal."""

    process_id: str
    signal: ProcessSignal = "interrupt"


@attrs.frozen(kw_only=True)
class ProcessSignalResult:
    """``process/signal`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class ProcessTerminateParams:
    """``process/terminate`` params (§3.8)."""

    process_id: str


@attrs.frozen(kw_only=True)
class ProcessTerminateResult:
    """``process/terminate`` result: whether the process was still running."""

    running: bool


@attrs.frozen(kw_only=True)
class ProcessCloseStdinParams:
    """``process/closeStdin`` params: our extension (§7, capability ``execsdk/closeStdin``)."""

    process_id: str


@attrs.frozen(kw_only=True)
class ProcessCloseStdinResult:
    """``process/closeStdin`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class ProcessKeepOutputParams:
    """``process/keepOutput`` (no params): our extension (§7, ``execsdk/outputAck``)."""


@attrs.frozen(kw_only=True)
class ProcessKeepOutputResult:
    """``process/keepOutput``: processes started later keep output until acknowledged, and
    wait while ``window`` bytes of it are unacknowledged."""

    window: int


@attrs.frozen(kw_only=True)
class ProcessAckOutputParams:
    """``process/ackOutput``: the client holds every event of the process up to ``seq``."""

    process_id: str
    seq: int


@attrs.frozen(kw_only=True)
class ProcessAckOutputResult:
    """``process/ackOutput`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class ProcessOutputNotification:
    """``process/output`` (§3.9): one chunk of at most 8192 bytes."""

    process_id: str
    seq: int
    stream: Stream
    chunk: bytes


@attrs.frozen(kw_only=True)
class ProcessExitedNotification:
    """``process/exited`` (§3.9); may come before the last output chunks."""

    process_id: str
    seq: int
    exit_code: int
    sandbox_denied: bool | None = None


@attrs.frozen(kw_only=True)
class ProcessClosedNotification:
    """``process/closed`` (§3.9): the last event of a process."""

    process_id: str
    seq: int


# --------------------------------------------------------------------------- filesystem


@attrs.frozen(kw_only=True)
class FsReadFileParams:
    """``fs/readFile`` params (§3.10)."""

    path: WirePath
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsReadFileResult:
    """``fs/readFile`` result: the whole file."""

    data_base64: bytes


@attrs.frozen(kw_only=True)
class FsWriteFileParams:
    """``fs/writeFile`` params (§3.11): creates or truncates; the parent must exist."""

    path: WirePath
    data_base64: bytes
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsWriteFileResult:
    """``fs/writeFile`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsCreateDirectoryParams:
    """``fs/createDirectory`` params (§3.12); the server defaults ``recursive`` to true."""

    path: WirePath
    recursive: bool | None = None
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsCreateDirectoryResult:
    """``fs/createDirectory`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsGetMetadataParams:
    """``fs/getMetadata`` params (§3.13)."""

    path: WirePath
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsGetMetadataResult:
    """``fs/getMetadata`` result; ``size`` is G2 only."""

    is_directory: bool
    is_file: bool
    is_symlink: bool
    created_at_ms: int
    modified_at_ms: int
    size: int | None = None


@attrs.frozen(kw_only=True)
class FsReadDirectoryParams:
    """``fs/readDirectory`` params (§3.14)."""

    path: WirePath
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsDirectoryEntry:
    """One ``fs/readDirectory`` entry; ``file_name`` is a bare name, not a path."""

    file_name: str
    is_directory: bool
    is_file: bool


@attrs.frozen(kw_only=True)
class FsReadDirectoryResult:
    """``fs/readDirectory`` result, unsorted."""

    entries: list[FsDirectoryEntry]


@attrs.frozen(kw_only=True)
class FsRemoveParams:
    """``fs/remove`` params (§3.15); the server defaults ``recursive`` and ``force`` to true."""

    path: WirePath
    recursive: bool | None = None
    force: bool | None = None
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsRemoveResult:
    """``fs/remove`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsCopyParams:
    """``fs/copy`` params (§3.16); ``recursive`` is required by the server."""

    source_path: WirePath
    destination_path: WirePath
    recursive: bool
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsCopyResult:
    """``fs/copy`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsCanonicalizeParams:
    """``fs/canonicalize`` params (§3.17, G2)."""

    path: WirePath
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsCanonicalizeResult:
    """``fs/canonicalize`` result: the path with symlinks resolved."""

    path: WirePath


@attrs.frozen(kw_only=True)
class FsWalkOptions:
    """``fs/walk`` limits (§3.18); the server requires all four."""

    max_depth: int
    max_directories: int
    max_entries: int
    follow_directory_symlinks: bool


@attrs.frozen(kw_only=True)
class FsWalkParams:
    """``fs/walk`` params (§3.18, G2)."""

    path: WirePath
    options: FsWalkOptions
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsWalkEntry:
    """One ``fs/walk`` entry; ``kind`` is ``"file"``, ``"directory"`` or another server word."""

    path: WirePath
    kind: str


@attrs.frozen(kw_only=True)
class FsWalkError:
    """A descendant ``fs/walk`` could not inspect."""

    path: WirePath | None = None
    message: str | None = None


@attrs.frozen(kw_only=True)
class FsWalkResult:
    """``fs/walk`` result; ``truncated`` is true when a limit cut the walk short."""

    entries: list[FsWalkEntry]
    errors: list[FsWalkError]
    truncated: bool


@attrs.frozen(kw_only=True)
class FsOpenParams:
    """``fs/open`` params (§3.19, G2): ``handle_id`` is client-chosen, at most 32 bytes."""

    handle_id: str
    path: WirePath
    mode: OpenMode | None = None
    sandbox: object | None = None


@attrs.frozen(kw_only=True)
class FsOpenResult:
    """``fs/open`` result."""

    handle_id: str


@attrs.frozen(kw_only=True)
class FsReadBlockParams:
    """``fs/readBlock`` params; ``len`` is 1 ... 1048576."""

    handle_id: str
    offset: int
    len: int


@attrs.frozen(kw_only=True)
class FsReadBlockResult:
    """``fs/readBlock`` result."""

    chunk: bytes
    eof: bool


@attrs.frozen(kw_only=True)
class FsWriteBlockParams:
    """``fs/writeBlock`` params; ``chunk`` is at most 1 MiB."""

    handle_id: str
    offset: int
    chunk: bytes


@attrs.frozen(kw_only=True)
class FsWriteBlockResult:
    """``fs/writeBlock`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsCloseParams:
    """``fs/close`` params."""

    handle_id: str


@attrs.frozen(kw_only=True)
class FsCloseResult:
    """``fs/close`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsWatchMissingParams:
    """``fs/watchMissing`` params (§3.21, G2)."""

    watch_id: int
    missing: list[WirePath]
    present: list[WirePath] | None = None


@attrs.frozen(kw_only=True)
class FsWatchMissingResult:
    """``fs/watchMissing`` result."""

    watching: bool


@attrs.frozen(kw_only=True)
class FsSetModeParams:
    """``fs/setMode`` params: our extension (§7, capability ``execsdk/fileMode``). ``mode`` is
    the permission bits (0 ... 0o7777); a link's target is changed."""

    path: WirePath
    mode: int


@attrs.frozen(kw_only=True)
class FsSetModeResult:
    """``fs/setMode`` answers ``{}``."""


@attrs.frozen(kw_only=True)
class FsStatParams:
    """``fs/stat`` params: our extension (§7, capability ``execsdk/fileMode``)."""

    path: WirePath


@attrs.frozen(kw_only=True)
class FsStatResult:
    """``fs/stat`` result: ``fs/getMetadata``'s members plus ``mode``, the permission bits of
    the file a link leads to (``stat.S_IMODE``)."""

    is_directory: bool
    is_file: bool
    is_symlink: bool
    created_at_ms: int
    modified_at_ms: int
    mode: int
    size: int | None = None


# --------------------------------------------------------------------------- http


@attrs.frozen(kw_only=True)
class HttpHeader:
    """One HTTP header; repeated names are kept in order."""

    name: str
    value: str


@attrs.frozen(kw_only=True)
class HttpRequestParams:
    """``http/request`` params (§3.20, G2); ``request_id`` keys the body-delta notifications."""

    method: str
    url: str
    request_id: str
    headers: list[HttpHeader] | None = None
    body_base64: bytes | None = None
    timeout_ms: int | None = None
    stream_response: bool | None = None


@attrs.frozen(kw_only=True)
class HttpRequestResult:
    """``http/request`` result; the body is empty when ``stream_response`` was set."""

    status: int
    headers: list[HttpHeader]
    body_base64: bytes


@attrs.frozen(kw_only=True)
class HttpRequestBodyDeltaNotification:
    """``http/request/bodyDelta``: one streamed body frame; ``error`` only on the last one."""

    request_id: str
    seq: int
    delta_base64: bytes
    done: bool = False
    error: str | None = None
