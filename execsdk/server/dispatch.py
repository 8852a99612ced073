"""The protocol side of one connection to ``execsdk serve``: envelopes, lifecycle, method table.

A transport (``ws.py``, ``stdio.py``) hands every incoming message to
:meth:`Connection.handle` and calls :meth:`Connection.connection_lost` when it ends. The
connection validates params the way codex does (``params.py``), enforces the
``initialize``/``initialized`` lifecycle (PROTOCOL.md §2), and runs each method's handler: a
thin adapter that converts wire values, calls the local backends (``LocalProcessBackend`` of the
session, ``LocalFsBackend`` of the connection) and converts the answer back. Exceptions become
JSON-RPC errors in one place, :func:`error_for`.

Concurrency (PROTOCOL.md §7, ``execsdk/concurrentRequests``): ``initialize`` and the lifecycle
checks run inline, in arrival order. Every other request runs on a small per-connection pool of
worker threads (long-polling reads on a second, larger one), so a long-polling ``process/read``
does not hold up the requests behind it and answers may come in any order. Effects still happen
in arrival order: requests that change something (start, write, signal, terminate, fs writes,
handles...) form one chain and each waits for the previous one; reads wait for the changes sent
before them, but nobody waits for a read. So a client that pipelines ``process/start`` and
``process/write`` (fine with codex, which serves one request at a time) sees the same result.
"""

from __future__ import annotations

import errno as _errno
import itertools
import json
import logging
import os
import posixpath
import queue
import re
import stat
import threading
from collections.abc import Callable
from typing import Any, Literal

import attrs

from execsdk import errors
from execsdk._local_fs import LocalFsBackend
from execsdk._local_process import PollScope
from execsdk._protocol.jsonrpc import encode_error, encode_raw_response, encode_response, loads
from execsdk._protocol.redact import redacted
from execsdk.environment import EnvPolicy, ProcessSpec, WalkEntry
from execsdk.server import params as P
from execsdk.server.bulk import parse_bulk
from execsdk.server.confine import Confinement, real_path
from execsdk.server.dupkeys import first_duplicate, keys_unique
from execsdk.server.http_request import HttpRequester
from execsdk.server.info import environment_config, environment_info
from execsdk.server.params import (
    Field,
    PathUri,
    Struct,
    b64decode,
    b64encode,
    b64encode_bytes,
    path_to_uri,
)
from execsdk.server.session import Outbox, Session, SessionRegistry
from execsdk.server.watch import MissingWatcher

__all__ = ["METHODS", "SERVING", "Connection", "Method", "RawResult", "Reply", "error_for"]

log = logging.getLogger(__name__)

SERVING = threading.local()
"""``SERVING.active`` is True on connection handler and request worker threads (``ws.py``
refuses ``shutdown()`` there: it would wait for itself)."""

DEFAULT_WORKERS = 8
DEFAULT_POLLERS = 64
"""Long-polling ``process/read`` calls (``waitMs`` > 0) get threads of their own, so a client
waiting on many processes at once does not starve its other requests."""
DEFAULT_MAX_PENDING = 256
_MAX_WAIT_MS = 2**31  # longer long-polls overflow the lock timeout; ~24 days is plenty
_conn_ids = itertools.count(1)

Order = Literal["change", "read", "free"]


@attrs.frozen
class Reply:
    """A handler's answer plus something to run once the answer is queued (stream starts)."""

    result: object
    after: Callable[[], None] | None = None


@attrs.frozen
class RawResult:
    """A result already encoded as JSON, in parts joined once into the answer: for answers that
    carry megabytes of base64 (``fs/readBlock``), no dict, no generic encoder, no ``str``
    round trip, one copy."""

    parts: tuple[bytes, ...]


Handler = Callable[["Connection", dict[str, Any]], object]


@attrs.frozen
class Method:
    """One method: params decoder, lifecycle family (for messages), ordering class, handler."""

    name: str
    decoder: P.Decoder
    family: str
    order: Order
    handler: Handler


# --------------------------------------------------------------------------- errors


def _os_message(code: int) -> str:
    # codex words OS errors like Rust's io::Error: "File exists (os error 17)".
    return f"{os.strerror(code)} (os error {code})"


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
        return -32600, f"unknown process id {exc.process_id}"
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        message = _os_message(exc.errno)
        if exc.errno == _errno.ENOENT and family == "filesystem":
            return -32004, message
        return -32603, message
    if isinstance(exc, errors.ConnectionClosed):
        return -32603, "the session is closed"
    log.error("unexpected error while serving a %s request", family or "", exc_info=exc)
    return -32603, f"internal error: {exc}"


def _refuse_sandbox(params: dict[str, Any]) -> None:
    if params.get("sandbox") is not None:
        raise errors.InvalidRequest(
            -32600, "execsdk serve does not support sandboxed execution; send `sandbox: null`"
        )


def _path(conn: Connection, uri: PathUri, *, follow_last: bool = True) -> str:
    """The local path a request names; with ``--root``, only if it resolves inside the root."""
    if conn.confine is None:
        return uri.require()
    return conn.confine.check_uri(uri, follow_last=follow_last)


# --------------------------------------------------------------------------- params


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
        Field("mode", P.Enum("read", "replace"), required=False, default="read"),
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


# --------------------------------------------------------------------------- handlers


def _environment_info(conn: Connection, p: Any) -> object:
    return environment_info(cwd=conn.root)


def _environment_status(conn: Connection, p: Any) -> object:
    return {"status": "ready"}


def _environment_config_read(conn: Connection, p: dict[str, Any]) -> object:
    cwd: PathUri = p["cwd"]
    if cwd.path is None:
        raise errors.InvalidParams(-32602, cwd.host_error or "invalid cwd URI")
    paths = [*p["configPaths"], *p["requirementsPaths"]]
    if any(not path for path in paths):
        raise errors.InvalidParams(-32602, "TOML paths must contain at least one key segment")
    if not paths:
        raise errors.InvalidParams(-32602, "at least one config or requirements path is required")
    return environment_config()


def _process_start(conn: Connection, p: dict[str, Any]) -> object:
    cwd: PathUri = p["cwd"]
    if conn.confine is not None:
        # The checked, normalised path: the kernel would resolve a ".." after a symlink
        # physically, so the process gets the path that was checked.
        cwd_path = conn.confine.check_uri(cwd)
    elif cwd.path is None:
        raise errors.InvalidParams(
            -32602, f"cwd URI `{cwd.uri}` is not valid on this exec-server host: {cwd.host_error}"
        )
    else:
        cwd_path = cwd.path
    _refuse_sandbox(p)
    if p["enforceManagedNetwork"]:
        raise errors.InvalidRequest(
            -32600,
            "execsdk serve cannot enforce a managed network; send `enforceManagedNetwork: false`",
        )
    raw_policy = p["envPolicy"]
    policy = None
    if raw_policy is not None:
        policy = EnvPolicy(
            inherit=raw_policy["inherit"],
            ignore_default_excludes=raw_policy["ignoreDefaultExcludes"],
            exclude=tuple(raw_policy["exclude"]),
            set=dict(raw_policy["set"]),
            include_only=tuple(raw_policy["includeOnly"]),
        )
    spec = ProcessSpec(
        argv=tuple(p["argv"]),
        cwd=cwd_path,
        env=dict(p["env"]),
        env_policy=policy,
        tty=p["tty"],
        pipe_stdin=p["pipeStdin"],
        arg0=p["arg0"],
    )
    session = conn.session
    process_id: str = p["processId"]
    session.backend.start(process_id, spec, session.events_for(process_id))
    session.forget_write_ids(process_id)
    return {"processId": process_id, "sandboxType": "none"}


def _process_read(conn: Connection, p: dict[str, Any]) -> object:
    wait_ms = p["waitMs"]
    result = conn.session.backend.read(
        p["processId"],
        after_seq=p["afterSeq"],
        max_bytes=p["maxBytes"],
        wait_ms=None if wait_ms is None else min(wait_ms, _MAX_WAIT_MS),
        timeout=None,
        scope=conn.polls,
    )
    return {
        "chunks": [
            {"seq": c.seq, "stream": c.stream, "chunk": b64encode(c.data)} for c in result.chunks
        ],
        "nextSeq": result.next_seq,
        "exited": result.exited,
        "exitCode": result.exit_code,
        "closed": result.closed,
        "failure": result.failure,
        "sandboxDenied": False,
    }


def _process_write(conn: Connection, p: dict[str, Any]) -> object:
    session = conn.session
    process_id: str = p["processId"]
    write_id: str = p["writeId"]
    # A repeated writeId is an idempotent retry: answered accepted, bytes not delivered again.
    if session.write_id_used(process_id, write_id):
        return {"status": "accepted"}
    status = session.backend.write(process_id, p["chunk"])
    if status == "accepted":
        session.remember_write_id(process_id, write_id)
    return {"status": status}


def _process_signal(conn: Connection, p: dict[str, Any]) -> object:
    conn.session.backend.interrupt(p["processId"])
    return {}


def _process_terminate(conn: Connection, p: dict[str, Any]) -> object:
    return {"running": conn.session.backend.terminate(p["processId"])}


def _process_close_stdin(conn: Connection, p: dict[str, Any]) -> object:
    conn.session.backend.close_stdin(p["processId"])
    return {}


def _fs_read_file(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    return {"dataBase64": b64encode(conn.fs.read_file(_path(conn, p["path"])))}


def _fs_write_file(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    path = _path(conn, p["path"])
    try:
        data = b64decode(p["dataBase64"])
    except ValueError as exc:
        raise errors.InvalidRequest(
            -32600, f"fs/writeFile requires valid base64 dataBase64: {exc}"
        ) from None
    conn.fs.write_file(path, data)
    return {}


def _fs_create_directory(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    recursive = True if p["recursive"] is None else p["recursive"]
    conn.fs.create_directory(_path(conn, p["path"]), recursive=recursive)
    return {}


def _fs_get_metadata(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    meta = conn.fs.get_metadata(_path(conn, p["path"]))
    return {
        "isDirectory": meta.is_directory,
        "isFile": meta.is_file,
        "isSymlink": meta.is_symlink,
        "size": meta.size,
        "createdAtMs": meta.created_at_ms,
        "modifiedAtMs": meta.modified_at_ms,
    }


def _fs_read_directory(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    path = _path(conn, p["path"])
    entries = conn.fs.read_directory(path)
    confine = conn.confine
    if confine is not None:
        # A link that leads out of the root is left out, as codex leaves out dangling links:
        # through this server it leads nowhere (and its target's type is not ours to tell).
        entries = [
            e for e in entries if not e.is_symlink or confine.inside(posixpath.join(path, e.name))
        ]
    return {
        "entries": [
            {"fileName": e.name, "isDirectory": e.is_dir, "isFile": e.is_file} for e in entries
        ]
    }


def _fs_remove(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    conn.fs.remove(
        _path(conn, p["path"], follow_last=False),
        recursive=True if p["recursive"] is None else p["recursive"],
        force=True if p["force"] is None else p["force"],
    )
    return {}


def _fs_copy(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    # The source is read without following a final link (links are copied as links).
    source = _path(conn, p["sourcePath"], follow_last=False)
    destination = _path(conn, p["destinationPath"])
    if conn.confine is not None and p["recursive"]:
        _check_copy_targets(conn.confine, source, destination)
    conn.fs.copy(source, destination, recursive=p["recursive"])
    return {}


def _fs_canonicalize(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    return {"path": path_to_uri(conn.fs.canonicalize(_path(conn, p["path"])))}


def _fs_walk(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    options = p["options"]
    result = conn.fs.walk(
        _path(conn, p["path"]),
        max_depth=options["maxDepth"],
        max_directories=options["maxDirectories"],
        max_entries=options["maxEntries"],
        follow_directory_symlinks=options["followDirectorySymlinks"],
    )
    entries = result.entries
    if conn.confine is not None and options["followDirectorySymlinks"]:
        # Only a followed directory link can lead a walk out of the root.
        entries = tuple(_entries_inside(conn.confine, entries))
    return {
        "entries": [{"path": path_to_uri(e.path), "kind": e.kind} for e in entries],
        "errors": list(result.errors),
        "truncated": result.truncated,
    }


def _entries_inside(confine: Confinement, entries: tuple[WalkEntry, ...]) -> list[WalkEntry]:
    """The walk entries whose real location is inside the root (one lstat per entry)."""
    real_dirs: dict[str, str | None] = {}

    def real_dir(directory: str) -> str | None:
        if directory not in real_dirs:
            try:
                real = real_path(directory)
            except OSError:
                real = None
            real_dirs[directory] = real if real is not None and confine.contains(real) else None
        return real_dirs[directory]

    kept = []
    for entry in entries:
        if real_dir(posixpath.dirname(entry.path)) is None:
            continue
        # A directory entry may be a followed link; its children are judged through it.
        if entry.kind == "directory" and real_dir(entry.path) is None:
            continue
        kept.append(entry)
    return kept


def _check_copy_targets(confine: Confinement, source: str, destination: str) -> None:
    """Refuse a directory copy that would write through a link out of the root.

    The copy merges into an existing destination tree, following links it meets there, so
    every destination path the copy will write must resolve inside the root.
    """
    try:
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            return
    except OSError:
        return  # the backend reports the missing source
    for directory, dirnames, filenames in os.walk(source):
        rel = posixpath.relpath(directory, source)
        target_dir = destination if rel == "." else posixpath.join(destination, rel)
        for name in (*dirnames, *filenames):
            target = posixpath.join(target_dir, name)
            if os.path.lexists(target):
                confine.check(target)


def _fs_open(conn: Connection, p: dict[str, Any]) -> object:
    _refuse_sandbox(p)
    conn.fs.open(p["handleId"], _path(conn, p["path"]), mode=p["mode"])
    return {"handleId": p["handleId"]}


def _fs_read_block(conn: Connection, p: dict[str, Any]) -> object:
    data, eof = conn.fs.read_block(p["handleId"], p["offset"], p["len"])
    # {"chunk": ..., "eof": ...} as bytes: base64 is plain ASCII, nothing to escape.
    tail = b'","eof":true}' if eof else b'","eof":false}'
    return RawResult((b'{"chunk":"', b64encode_bytes(data), tail))


def _fs_write_block(conn: Connection, p: dict[str, Any]) -> object:
    conn.fs.write_block(p["handleId"], p["offset"], p["chunk"])
    return {}


def _fs_close(conn: Connection, p: dict[str, Any]) -> object:
    conn.fs.close_handle(p["handleId"])
    return {}


def _fs_watch_missing(conn: Connection, p: dict[str, Any]) -> object:
    missing = [uri.path for uri in p["missing"]]
    present_uri: PathUri | None = p["present"]
    present: str | bool | None = None
    if present_uri is not None:
        present = present_uri.path if present_uri.path is not None else False
    confine = conn.confine
    if confine is not None:
        # Paths outside the root are left out of the watch (they never "appear"); a watched
        # `present` path outside the root cannot be watched at all.
        missing = [m for m in missing if m is not None and confine.inside(m)]
        if isinstance(present, str) and not confine.inside(present):
            present = False
    return {"watching": conn.watcher.watch(p["watchId"], missing, present)}


def _http_request(conn: Connection, p: dict[str, Any]) -> object:
    result, start = conn.http.request(p)
    return Reply(result, start)


def _method(
    name: str, decoder: P.Decoder, family: str, order: Order, handler: Handler
) -> tuple[str, Method]:
    return name, Method(name, decoder, family, order, handler)


_EXEC, _FS = "exec", "filesystem"

METHODS: dict[str, Method] = dict(
    (
        _method("environment/info", P.UNIT, "environment info", "free", _environment_info),
        _method("environment/status", P.UNIT, "environment status", "free", _environment_status),
        _method(
            "environmentConfig/read",
            ENVIRONMENT_CONFIG_READ,
            "environment config",
            "free",
            _environment_config_read,
        ),
        _method("process/start", PROCESS_START, _EXEC, "change", _process_start),
        _method("process/read", PROCESS_READ, _EXEC, "read", _process_read),
        _method("process/write", PROCESS_WRITE, _EXEC, "change", _process_write),
        _method("process/signal", PROCESS_SIGNAL, _EXEC, "change", _process_signal),
        _method("process/terminate", PROCESS_TERMINATE, _EXEC, "change", _process_terminate),
        _method("process/closeStdin", PROCESS_CLOSE_STDIN, _EXEC, "change", _process_close_stdin),
        _method("fs/readFile", FS_READ_FILE, _FS, "read", _fs_read_file),
        _method("fs/writeFile", FS_WRITE_FILE, _FS, "change", _fs_write_file),
        _method("fs/createDirectory", FS_CREATE_DIRECTORY, _FS, "change", _fs_create_directory),
        _method("fs/getMetadata", FS_GET_METADATA, _FS, "read", _fs_get_metadata),
        _method("fs/readDirectory", FS_READ_DIRECTORY, _FS, "read", _fs_read_directory),
        _method("fs/remove", FS_REMOVE, _FS, "change", _fs_remove),
        _method("fs/copy", FS_COPY, _FS, "change", _fs_copy),
        _method("fs/canonicalize", FS_CANONICALIZE, _FS, "read", _fs_canonicalize),
        _method("fs/walk", FS_WALK, _FS, "read", _fs_walk),
        _method("fs/open", FS_OPEN, _FS, "change", _fs_open),
        _method("fs/readBlock", FS_READ_BLOCK, _FS, "read", _fs_read_block),
        _method("fs/writeBlock", FS_WRITE_BLOCK, _FS, "change", _fs_write_block),
        _method("fs/close", FS_CLOSE, _FS, "change", _fs_close),
        _method("fs/watchMissing", FS_WATCH_MISSING, _FS, "change", _fs_watch_missing),
        _method("http/request", HTTP_REQUEST, "http", "free", _http_request),
    )
)
"""Every method ``execsdk serve`` answers (``initialize`` is handled by the connection)."""


# --------------------------------------------------------------------------- envelopes

_VALID_ID_MIN, _VALID_ID_MAX = -(2**63), 2**63 - 1
_JSON_MESSAGES = (
    (re.compile(r"^Expecting property name enclosed in double quotes"), "key must be a string"),
    (re.compile(r"^Extra data"), "trailing characters"),
    (re.compile(r"^Expecting ',' delimiter"), "expected `,` or `}`"),
    (re.compile(r"^Expecting ':' delimiter"), "expected `:`"),
    (re.compile(r"^Invalid control character"), "control character (\\u0000-\\u001F) found"),
)


def _valid_id(value: object) -> bool:
    if isinstance(value, str):
        return True
    return type(value) is int and _VALID_ID_MIN <= value <= _VALID_ID_MAX


def _error_object_problem(msg: dict[str, Any]) -> str | None:
    """Why an error response from the client is malformed (serde's words), or None."""
    error = msg["error"]
    if not isinstance(error, dict):
        return f"invalid type: {P.describe(error)}, expected struct JSONRPCErrorError"
    code, message = error.get("code"), error.get("message")
    if "code" not in error:
        return "missing field `code`"
    if type(code) is not int:
        return f"invalid type: {P.describe(code)}, expected i64"
    if "message" not in error:
        return "missing field `message`"
    if not isinstance(message, str):
        return f"invalid type: {P.describe(message)}, expected a string"
    if "id" not in msg:
        return "missing field `id`"
    if not _valid_id(msg["id"]):
        return "data did not match any variant of untagged enum RequestId"
    return None


def _open_container(doc: str) -> str | None:
    """The innermost JSON container still open at the end of ``doc`` ("object"/"list")."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in doc:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("an object" if ch == "{" else "a list")
        elif ch in "}]" and stack:
            stack.pop()
    if in_string:
        return "a string"
    return stack[-1] if stack else None


def _json_error_text(exc: json.JSONDecodeError) -> str:
    """serde_json-like wording for a syntax error (best effort: codex quotes serde)."""
    doc, pos = exc.doc, exc.pos
    where = f"at line {exc.lineno} column {exc.colno}"
    rest = doc[pos:].rstrip()
    if not doc.strip():
        return "EOF while parsing a value at line 1 column 0"
    unterminated = exc.msg.startswith("Unterminated string")
    if (
        unterminated
        or pos >= len(doc.rstrip())
        or (rest and any(w.startswith(rest) for w in _LITERALS))
    ):
        # Ran out of input: serde names what it was parsing and points at the last character.
        lines = doc.rstrip().split("\n")
        what = "a string" if unterminated else _open_container(doc) if rest == "" else None
        return f"EOF while parsing {what or 'a value'} at line {len(lines)} column {len(lines[-1])}"
    before = doc[:pos].rstrip()
    if before.endswith(",") and doc[pos] in "}]":
        return f"trailing comma {where}"
    if exc.msg.startswith("Expecting value"):
        return f"expected value {where}"
    for pattern, text in _JSON_MESSAGES:
        if pattern.match(exc.msg):
            return f"{text} {where}"
    return f"{exc.msg} {where}"


_LITERALS = ("null", "true", "false")
_LONE_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")


def _parse(raw: str | bytes) -> object:
    """Decode one message; raises ``ValueError`` with a serde-like description."""
    try:
        msg, parsed = loads(raw), True
    except ValueError:
        msg, parsed = None, False
    if not parsed or not keys_unique(raw, msg):
        # A key named twice before any syntax error is what serde reports.
        duplicate = first_duplicate(raw)
        if duplicate is not None:
            raise ValueError(duplicate)
    if parsed:
        return msg
    # orjson's messages differ from serde's (which codex quotes): the stdlib parser locates
    # the error and it is worded here. Input the stdlib accepts but serde does not (NaN, lone
    # surrogates) is still refused.
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid unicode code point at line 1 column {exc.start + 1}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(_json_error_text(exc)) from None
    except RecursionError:
        raise ValueError("recursion limit exceeded") from None
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate is not None:
        line = text.count("\n", 0, surrogate.end()) + 1
        column = surrogate.end() - (text.rfind("\n", 0, surrogate.end()) + 1) + 1
        raise ValueError(f"unexpected end of hex escape at line {line} column {column}")
    raise ValueError("expected value at line 1 column 1")


# --------------------------------------------------------------------------- workers


class _Workers:
    """A small pool of named daemon threads, started on demand. Thread-safety: any thread."""

    _STOP = object()

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._queue.put(fn)
            if self._idle <= 0 and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._main,
                    name=f"{self._name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1  # an idle worker (or the next one free) is spoken for
        return True

    def _main(self) -> None:
        SERVING.active = True
        while True:
            fn = self._queue.get()
            if fn is self._STOP:
                return
            try:
                fn()  # type: ignore[operator]
            except Exception:
                log.exception("request worker task failed")
            with self._lock:
                self._idle += 1

    def close(self, timeout: float = 1.0) -> None:
        """Stop the workers once their current tasks end; join them for ``timeout`` at most."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(self._STOP)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(timeout)


# --------------------------------------------------------------------------- connection


class Connection:
    """The protocol state of one client connection.

    ``handle`` is called by the transport's receive loop only (one thread); ``connection_lost``
    once at the end. Handlers run on the worker pool; everything they share is thread-safe.
    """

    def __init__(
        self,
        registry: SessionRegistry,
        outbox: Outbox,
        *,
        parse_error_prefix: str,
        workers: int = DEFAULT_WORKERS,
        pollers: int = DEFAULT_POLLERS,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str | None = None,
        confine: Confinement | None = None,
    ) -> None:
        self.name = name or str(next(_conn_ids))
        self.confine = confine
        self._registry = registry
        self._outbox = outbox
        self._parse_error_prefix = parse_error_prefix
        self.fs = LocalFsBackend()
        self.watcher = MissingWatcher(outbox.put)
        self.http = HttpRequester(outbox.put)
        self._session: Session | None = None
        self._init_requested = False
        self._initialized = False
        self._tail: threading.Event | None = None
        self._workers = _Workers(f"execsdk-serve-worker-{self.name}", workers)
        self._pollers = _Workers(f"execsdk-serve-poll-{self.name}", pollers)
        self._slots = threading.BoundedSemaphore(max_pending)
        self.polls = PollScope()
        """Every long-polling ``process/read`` of this connection: they end when it does."""
        self._lost = False

    @property
    def session(self) -> Session:
        """The attached session (handlers run only after ``initialize`` succeeded)."""
        assert self._session is not None
        return self._session

    @property
    def root(self) -> str | None:
        """The ``--root`` directory (real path), or None when paths are not confined."""
        return None if self.confine is None else self.confine.root

    @property
    def session_id(self) -> str | None:
        return None if self._session is None else self._session.id

    # -- receive side -----------------------------------------------------------------------

    def handle(self, raw: str | bytes) -> bool:
        """Process one incoming message. Returns False when the connection must be closed."""
        if self._lost:
            return False
        try:
            msg = parse_bulk(raw) or _parse(raw)
        except ValueError as exc:
            log.debug("conn %s <- unparseable message of %d characters", self.name, len(raw))
            self._parse_error(str(exc))
            return True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %s <- %s", self.name, redacted(msg))
        if not isinstance(msg, dict):
            self._parse_error("expected a JSON-RPC object")
            return True
        if "method" in msg:
            method = msg["method"]
            if not isinstance(method, str):
                self._parse_error(f"invalid type: {P.describe(method)}, expected a string")
                return True
            if "id" not in msg:
                return self._notification(method)
            request_id = msg["id"]
            if not _valid_id(request_id):
                self._parse_error("data did not match any variant of untagged enum RequestId")
                return True
            self._request(request_id, method, msg.get("params"))
            return True
        if "result" in msg:
            if "id" not in msg:
                self._parse_error("missing field `id`")
                return True
            if not _valid_id(msg["id"]):
                self._parse_error("data did not match any variant of untagged enum RequestId")
                return True
            log.info("conn %s: the client sent a response; closing the connection", self.name)
            return False
        if "error" in msg:
            problem = _error_object_problem(msg)
            if problem is not None:
                self._parse_error(problem)
                return True
            log.info("conn %s: the client sent an error response; closing", self.name)
            return False
        self._parse_error("missing field `error`")
        return True

    def _parse_error(self, detail: str) -> None:
        self._outbox.put_reply(encode_error(-1, -32600, f"{self._parse_error_prefix}: {detail}"))

    def _notification(self, method: str) -> bool:
        if method == "initialized":
            if not self._init_requested:
                log.info("conn %s: `initialized` before `initialize`; closing", self.name)
                return False
            self._initialized = True  # a repeated `initialized` is harmless
            return True
        log.info("conn %s: unknown notification %r; closing the connection", self.name, method)
        return False

    def _request(self, request_id: int | str, method: str, params: object) -> None:
        if method == "initialize":
            self._initialize(request_id, params)
            return
        entry = METHODS.get(method)
        if entry is None:
            self._error(request_id, -32601, f"exec-server stub does not implement `{method}` yet")
            return
        try:
            decoded = entry.decoder(params)
        except errors.ServerError as exc:
            self._error(request_id, exc.code, exc.message)
            return
        if not self._init_requested:
            self._error(
                request_id,
                -32600,
                f"client must call initialize before using {entry.family} methods",
            )
            return
        if not self._initialized:
            self._error(
                request_id,
                -32600,
                f"client must send initialized before using {entry.family} methods",
            )
            return
        before = None if entry.order == "free" else self._tail
        done: threading.Event | None = None
        if entry.order == "change":
            done = threading.Event()
            self._tail = done
        self._slots.acquire()  # too many requests in flight: stop reading (back pressure)

        def run() -> None:
            try:
                if before is not None:
                    before.wait()
                self._run(request_id, entry, decoded)
            finally:
                if done is not None:
                    done.set()
                self._slots.release()

        long_poll = (
            entry.name == "process/read" and isinstance(decoded, dict) and bool(decoded["waitMs"])
        )
        pool = self._pollers if long_poll else self._workers
        if not pool.submit(run):
            if done is not None:
                done.set()
            self._slots.release()

    def _run(self, request_id: int | str, entry: Method, params: Any) -> None:
        try:
            result = entry.handler(self, params)
        except Exception as exc:
            code, message = error_for(exc, entry.family)
            self._error(request_id, code, message)
            return
        # Handlers run on request workers, which may send their answer themselves.
        if isinstance(result, RawResult):
            self._outbox.put_reply(encode_raw_response(request_id, *result.parts), direct=True)
        elif isinstance(result, Reply):
            self._outbox.put_reply(encode_response(request_id, result.result), direct=True)
            if result.after is not None:
                result.after()
        else:
            self._outbox.put_reply(encode_response(request_id, result), direct=True)

    def _initialize(self, request_id: int | str, params: object) -> None:
        try:
            decoded = INITIALIZE(params)
        except errors.ServerError as exc:
            self._error(request_id, exc.code, exc.message)
            return
        assert isinstance(decoded, dict)
        if self._init_requested:
            self._error(request_id, -32600, "initialize may only be sent once per connection")
            return
        self._init_requested = True
        try:
            session = self._registry.attach(decoded["resumeSessionId"], self)
        except errors.ServerError as exc:
            self._init_requested = False
            self._error(request_id, exc.code, exc.message)
            return
        self._session = session
        log.info(
            "conn %s: initialize from %r -> session %s",
            self.name,
            decoded["clientName"],
            session.id,
        )
        self._outbox.put_reply(
            encode_response(
                request_id,
                {"sessionId": session.id, "environmentInfo": environment_info(cwd=self.root)},
            )
        )
        # Connected only now, so no process notification overtakes the initialize answer.
        self._registry.connect(session, self, self._outbox)

    def _error(self, request_id: int | str, code: int, message: str) -> None:
        self._outbox.put_reply(encode_error(request_id, code, message))

    # -- end ----------------------------------------------------------------------------------

    def connection_lost(self, *, drain: bool = False) -> None:
        """The transport ended: detach the session, drop per-connection state. Idempotent.

        ``drain``: still send the answers already queued (stdio, where the output outlives
        the input); otherwise they are dropped with the connection.
        """
        if self._lost:
            return
        self._lost = True
        self.polls.cancel()  # waiting reads answer now, so their workers are free at once
        self.watcher.close()
        self.http.close()
        if self._session is not None:
            self._registry.detach(self._session, self)
        self._workers.close(timeout=0.5)
        self._pollers.close(timeout=0.1)
        self.fs.close()
        self._outbox.close(drain=drain)
        log.info("conn %s closed (session %s)", self.name, self.session_id)
