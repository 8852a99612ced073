"""The method table: every exec-server method and notification with its wire types.

Written by hand from PROTOCOL.md §3 and §7. ``generations`` says which server generations
implement a method (G1 = codex 0.123-style plain paths, G2 = codex 0.169-style URIs);
``capability`` names the ``environmentInfo.capabilities`` member a server must announce before
a client may call it (§7: announced, never assumed).

The tables are read-only after import and safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from execsdk._protocol import types as t

__all__ = [
    "ALL_GENERATIONS",
    "CAPABILITY_CLOSE_STDIN",
    "CAPABILITY_CONCURRENT_REQUESTS",
    "CAPABILITY_FILE_MODE",
    "G2_ONLY",
    "HTTP_REQUEST_BODY_DELTA",
    "INITIALIZE",
    "INITIALIZED",
    "METHODS",
    "NOTIFICATIONS",
    "NOTIFICATION_GENERATIONS",
    "PROCESS_CLOSED",
    "PROCESS_EXITED",
    "PROCESS_OUTPUT",
    "Generation",
    "MethodSpec",
]

Generation = Literal["G1", "G2"]

ALL_GENERATIONS: frozenset[Generation] = frozenset(("G1", "G2"))
G2_ONLY: frozenset[Generation] = frozenset(("G2",))

INITIALIZE = "initialize"
INITIALIZED = "initialized"
"""The client's notification after the ``initialize`` answer (§2); its params are ignored."""

PROCESS_OUTPUT = "process/output"
PROCESS_EXITED = "process/exited"
PROCESS_CLOSED = "process/closed"
HTTP_REQUEST_BODY_DELTA = "http/request/bodyDelta"

CAPABILITY_CLOSE_STDIN = "execsdk/closeStdin"
CAPABILITY_CONCURRENT_REQUESTS = "execsdk/concurrentRequests"
CAPABILITY_FILE_MODE = "execsdk/fileMode"
CAPABILITY_OUTPUT_ACK = "execsdk/outputAck"


@attrs.frozen
class MethodSpec:
    """One request method: its wire types and where it may be used. Immutable."""

    name: str
    params_type: type
    result_type: type
    generations: frozenset[Generation]
    capability: str | None = None

    def supported(self, generation: str, capabilities: Mapping[str, bool] | None = None) -> bool:
        """Whether a server of ``generation`` announcing ``capabilities`` offers this method."""
        if generation not in self.generations:
            return False
        if self.capability is None:
            return True
        return bool(capabilities and capabilities.get(self.capability) is True)


def _spec(
    name: str,
    params_type: type,
    result_type: type,
    generations: frozenset[Generation] = ALL_GENERATIONS,
    capability: str | None = None,
) -> tuple[str, MethodSpec]:
    return name, MethodSpec(name, params_type, result_type, generations, capability)


METHODS: dict[str, MethodSpec] = dict(
    (
        _spec(INITIALIZE, t.InitializeParams, t.InitializeResult),
        _spec("environment/info", t.EnvironmentInfoParams, t.EnvironmentInfoResult, G2_ONLY),
        _spec("environment/status", t.EnvironmentStatusParams, t.EnvironmentStatusResult, G2_ONLY),
        _spec("process/start", t.ProcessStartParams, t.ProcessStartResult),
        _spec("process/read", t.ProcessReadParams, t.ProcessReadResult),
        _spec("process/write", t.ProcessWriteParams, t.ProcessWriteResult),
        _spec("process/signal", t.ProcessSignalParams, t.ProcessSignalResult, G2_ONLY),
        _spec("process/terminate", t.ProcessTerminateParams, t.ProcessTerminateResult),
        _spec(
            "process/closeStdin",
            t.ProcessCloseStdinParams,
            t.ProcessCloseStdinResult,
            G2_ONLY,
            CAPABILITY_CLOSE_STDIN,
        ),
        _spec(
            "process/keepOutput",
            t.ProcessKeepOutputParams,
            t.ProcessKeepOutputResult,
            G2_ONLY,
            CAPABILITY_OUTPUT_ACK,
        ),
        _spec(
            "process/ackOutput",
            t.ProcessAckOutputParams,
            t.ProcessAckOutputResult,
            G2_ONLY,
            CAPABILITY_OUTPUT_ACK,
        ),
        _spec("fs/readFile", t.FsReadFileParams, t.FsReadFileResult),
        _spec("fs/writeFile", t.FsWriteFileParams, t.FsWriteFileResult),
        _spec("fs/createDirectory", t.FsCreateDirectoryParams, t.FsCreateDirectoryResult),
        _spec("fs/getMetadata", t.FsGetMetadataParams, t.FsGetMetadataResult),
        _spec("fs/readDirectory", t.FsReadDirectoryParams, t.FsReadDirectoryResult),
        _spec("fs/remove", t.FsRemoveParams, t.FsRemoveResult),
        _spec("fs/copy", t.FsCopyParams, t.FsCopyResult),
        _spec("fs/canonicalize", t.FsCanonicalizeParams, t.FsCanonicalizeResult, G2_ONLY),
        _spec("fs/walk", t.FsWalkParams, t.FsWalkResult, G2_ONLY),
        _spec("fs/open", t.FsOpenParams, t.FsOpenResult, G2_ONLY),
        _spec("fs/readBlock", t.FsReadBlockParams, t.FsReadBlockResult, G2_ONLY),
        _spec("fs/writeBlock", t.FsWriteBlockParams, t.FsWriteBlockResult, G2_ONLY),
        _spec("fs/close", t.FsCloseParams, t.FsCloseResult, G2_ONLY),
        _spec("fs/setMode", t.FsSetModeParams, t.FsSetModeResult, G2_ONLY, CAPABILITY_FILE_MODE),
        _spec("fs/stat", t.FsStatParams, t.FsStatResult, G2_ONLY, CAPABILITY_FILE_MODE),
        _spec("http/request", t.HttpRequestParams, t.HttpRequestResult, G2_ONLY),
        # codex announces these two through capabilities (§3.2, §3.21); other G2 servers may not
        # implement them, so a client must check.
        _spec(
            "fs/watchMissing",
            t.FsWatchMissingParams,
            t.FsWatchMissingResult,
            G2_ONLY,
            "fsWatchMissing",
        ),
        _spec(
            "environmentConfig/read",
            t.EnvironmentConfigReadParams,
            t.EnvironmentConfigReadResult,
            G2_ONLY,
            "environmentConfigRead",
        ),
    )
)
"""Request methods by name. ``initialized`` is a notification and is not listed here."""

NOTIFICATIONS: dict[str, type] = {
    PROCESS_OUTPUT: t.ProcessOutputNotification,
    PROCESS_EXITED: t.ProcessExitedNotification,
    PROCESS_CLOSED: t.ProcessClosedNotification,
    HTTP_REQUEST_BODY_DELTA: t.HttpRequestBodyDeltaNotification,
}
"""Server-to-client notifications by method name."""

NOTIFICATION_GENERATIONS: dict[str, frozenset[Generation]] = {
    PROCESS_OUTPUT: ALL_GENERATIONS,
    PROCESS_EXITED: ALL_GENERATIONS,
    PROCESS_CLOSED: ALL_GENERATIONS,
    HTTP_REQUEST_BODY_DELTA: G2_ONLY,
}
