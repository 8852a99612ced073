"""The params of every method ``execsdk serve`` answers, as codex declares them.

Field order follows codex's structs (serde reports the first missing field in declaration
order); ``size`` is the member count of codex's struct where it has members we do not read.
Immutable: safe to share between threads.
"""

from __future__ import annotations

from execsdk.server import params as P
from execsdk.server.params import Field, Struct


class _AnyValue(P.Decoder):
    def __call__(self, value: object) -> object:
        return value


_SANDBOX = P.Optional(Struct("WireFileSystemSandboxContext", [Field("permissions", _AnyValue())]))


def _sandbox() -> Field:
    return Field("sandbox", _SANDBOX, required=False)


INITIALIZE = Struct(
    "InitializeParams",
    [Field("clientName", P.STR), Field("resumeSessionId", P.Optional(P.STR), required=False)],
    size=2,
)
_ENV_POLICY = Struct(
    "ExecEnvPolicy",
    [
        Field("inherit", P.Enum("core", "all", "none")),
        Field("ignoreDefaultExcludes", P.BOOL),
        Field("exclude", P.SeqOf(P.STR)),
        Field("set", P.MapOf(P.STR)),
        Field("includeOnly", P.SeqOf(P.STR)),
    ],
)
_METADATA = Struct(
    "ExecMetadata",
    [
        Field("threadId", P.Optional(P.Uuid()), required=False),
        Field("toolCallId", P.Optional(P.STR), required=False),
    ],
)
PROCESS_START = Struct(
    "WireExecParams",
    [
        Field("processId", P.STR),
        Field("argv", P.SeqOf(P.STR)),
        Field("cwd", P.URI),
        Field("env", P.MapOf(P.STR)),
        Field("tty", P.BOOL),
        Field("pipeStdin", P.BOOL, required=False, default=False),
        Field("arg0", P.Optional(P.STR), required=False),
        Field("envPolicy", P.Optional(_ENV_POLICY), required=False),
        _sandbox(),
        Field("enforceManagedNetwork", P.BOOL, required=False, default=False),
        Field(
            "managedNetwork",
            P.Optional(P.Opaque("ManagedNetworkSandboxContext")),
            required=False,
        ),
        Field("metadata", P.Optional(_METADATA), required=False),
    ],
    size=14,
)
PROCESS_READ = Struct(
    "ReadParams",
    [
        Field("processId", P.STR),
        Field("afterSeq", P.Optional(P.U64), required=False),
        Field("maxBytes", P.Optional(P.U64), required=False),
        Field("waitMs", P.Optional(P.U64), required=False),
    ],
)
PROCESS_WRITE = Struct(
    "WriteParams",
    [Field("processId", P.STR), Field("chunk", P.Base64()), Field("writeId", P.STR)],
)
PROCESS_SIGNAL = Struct(
    "SignalParams", [Field("processId", P.STR), Field("signal", P.Enum("interrupt"))]
)
PROCESS_TERMINATE = Struct("TerminateParams", [Field("processId", P.STR)])
PROCESS_CLOSE_STDIN = Struct("CloseStdinParams", [Field("processId", P.STR)])
PROCESS_ACK_OUTPUT = Struct("AckOutputParams", [Field("processId", P.STR), Field("seq", P.U64)])

FS_READ_FILE = Struct("WireFsReadFileParams", [Field("path", P.URI), _sandbox()], size=3)
FS_WRITE_FILE = Struct(
    "WireFsWriteFileParams",
    [Field("path", P.URI), Field("dataBase64", P.STR), _sandbox()],
    size=4,
)
FS_CREATE_DIRECTORY = Struct(
    "WireFsCreateDirectoryParams",
    [
        Field("path", P.URI),
        Field("recursive", P.Optional(P.BOOL), required=False),
        _sandbox(),
    ],
    size=4,
)
FS_GET_METADATA = Struct("WireFsGetMetadataParams", [Field("path", P.URI), _sandbox()], size=3)
FS_READ_DIRECTORY = Struct("WireFsReadDirectoryParams", [Field("path", P.URI), _sandbox()])
FS_REMOVE = Struct(
    "WireFsRemoveParams",
    [
        Field("path", P.URI),
        Field("recursive", P.Optional(P.BOOL), required=False),
        Field("force", P.Optional(P.BOOL), required=False),
        _sandbox(),
    ],
    size=5,
)
FS_COPY = Struct(
    "WireFsCopyParams",
    [
        Field("sourcePath", P.URI),
        Field("destinationPath", P.URI),
        Field("recursive", P.BOOL),
        _sandbox(),
    ],
)
FS_CANONICALIZE = Struct("WireFsCanonicalizeParams", [Field("path", P.URI), _sandbox()])
_WALK_OPTIONS = Struct(
    "FsWalkOptions",
    [
        Field("maxDepth", P.U64),
        Field("maxDirectories", P.U64),
        Field("maxEntries", P.U64),
        Field("followDirectorySymlinks", P.BOOL),
    ],
)
FS_WALK = Struct(
    "WireFsWalkParams", [Field("path", P.URI), Field("options", _WALK_OPTIONS), _sandbox()]
)
FS_OPEN = Struct(
    "WireFsOpenParams",
    [
        Field("handleId", P.STR),
        Field("path", P.URI),
        # "createNew": our extension (PROTOCOL.md §7, execsdk/exclusiveCreate), unnamed in errors.
        Field(
            "mode",
            P.Enum("read", "replace", extensions=("createNew",)),
            required=False,
            default="read",
        ),
        _sandbox(),
    ],
)
FS_READ_BLOCK = Struct(
    "FsReadBlockParams",
    [Field("handleId", P.STR), Field("offset", P.U64), Field("len", P.U64)],
)
FS_WRITE_BLOCK = Struct(
    "FsWriteBlockParams",
    [Field("handleId", P.STR), Field("offset", P.U64), Field("chunk", P.Base64())],
)
FS_CLOSE = Struct("FsCloseParams", [Field("handleId", P.STR)])
_HTTP_HEADER = Struct("HttpHeader", [Field("name", P.STR), Field("value", P.STR)])
HTTP_REQUEST = Struct(
    "HttpRequestParams",
    [
        Field("method", P.STR),
        Field("url", P.STR),
        Field("headers", P.SeqOf(_HTTP_HEADER), required=False, default=()),
        Field("bodyBase64", P.Optional(P.Base64()), required=False),
        Field("timeoutMs", P.Optional(P.U64), required=False),
        Field("requestId", P.STR),
        Field("streamResponse", P.BOOL, required=False, default=False),
    ],
    size=8,
)
FS_WATCH_MISSING = Struct(
    "FsWatchMissingParams",
    [
        Field("watchId", P.U64),
        Field("missing", P.SeqOf(P.URI)),
        Field("present", P.Optional(P.URI), required=False),
    ],
)
ENVIRONMENT_CONFIG_READ = Struct(
    "EnvironmentConfigReadParams",
    [
        Field("cwd", P.URI),
        Field("configPaths", P.SeqOf(P.SeqOf(P.STR))),
        Field("requirementsPaths", P.SeqOf(P.SeqOf(P.STR))),
    ],
)
