"""The method table of ``execsdk serve``: name -> params spec, family, ordering, handler.

``family`` words lifecycle errors as codex does ("... before using filesystem methods");
``order`` says how a request waits for others (``change``: after every earlier change;
``read``: after earlier changes; ``free``: waits for nothing; see ``connection.py``).
Read-only after import: safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs

from execsdk.server import params as P
from execsdk.server.env_methods import (
    environment_config_read,
    environment_info,
    environment_status,
    http_request,
)
from execsdk.server.fs_methods import (
    FS_SET_MODE,
    FS_STAT,
    fs_canonicalize,
    fs_close,
    fs_copy,
    fs_create_directory,
    fs_get_metadata,
    fs_open,
    fs_read_block,
    fs_read_directory,
    fs_read_file,
    fs_remove,
    fs_set_mode,
    fs_stat,
    fs_walk,
    fs_watch_missing,
    fs_write_block,
    fs_write_file,
)
from execsdk.server.process_methods import (
    process_ack_output,
    process_close_stdin,
    process_keep_output,
    process_read,
    process_signal,
    process_start,
    process_terminate,
    process_write,
)
from execsdk.server.specs import (
    ENVIRONMENT_CONFIG_READ,
    FS_CANONICALIZE,
    FS_CLOSE,
    FS_COPY,
    FS_CREATE_DIRECTORY,
    FS_GET_METADATA,
    FS_OPEN,
    FS_READ_BLOCK,
    FS_READ_DIRECTORY,
    FS_READ_FILE,
    FS_REMOVE,
    FS_WALK,
    FS_WATCH_MISSING,
    FS_WRITE_BLOCK,
    FS_WRITE_FILE,
    HTTP_REQUEST,
    PROCESS_ACK_OUTPUT,
    PROCESS_CLOSE_STDIN,
    PROCESS_READ,
    PROCESS_SIGNAL,
    PROCESS_START,
    PROCESS_TERMINATE,
    PROCESS_WRITE,
)

if TYPE_CHECKING:
    from execsdk.server.connection import Connection

__all__ = ["METHODS", "Handler", "Method", "Order"]

Order = Literal["change", "read", "free"]

Handler = Callable[["Connection", dict[str, Any]], object]


@attrs.frozen
class Method:
    """One method: params decoder, lifecycle family (for messages), ordering class, handler."""

    name: str
    decoder: P.Decoder
    family: str
    order: Order
    handler: Handler


def _method(
    name: str, decoder: P.Decoder, family: str, order: Order, handler: Handler
) -> tuple[str, Method]:
    return name, Method(name, decoder, family, order, handler)


_EXEC, _FS = "exec", "filesystem"

METHODS: dict[str, Method] = dict(
    (
        _method("environment/info", P.UNIT, "environment info", "free", environment_info),
        _method("environment/status", P.UNIT, "environment status", "free", environment_status),
        _method(
            "environmentConfig/read",
            ENVIRONMENT_CONFIG_READ,
            "environment config",
            "free",
            environment_config_read,
        ),
        _method("process/start", PROCESS_START, _EXEC, "change", process_start),
        _method("process/read", PROCESS_READ, _EXEC, "read", process_read),
        _method("process/write", PROCESS_WRITE, _EXEC, "change", process_write),
        _method("process/signal", PROCESS_SIGNAL, _EXEC, "change", process_signal),
        _method("process/terminate", PROCESS_TERMINATE, _EXEC, "change", process_terminate),
        _method("process/closeStdin", PROCESS_CLOSE_STDIN, _EXEC, "change", process_close_stdin),
        _method("process/keepOutput", P.UNIT, _EXEC, "change", process_keep_output),
        _method("process/ackOutput", PROCESS_ACK_OUTPUT, _EXEC, "free", process_ack_output),
        _method("fs/readFile", FS_READ_FILE, _FS, "read", fs_read_file),
        _method("fs/writeFile", FS_WRITE_FILE, _FS, "change", fs_write_file),
        _method("fs/createDirectory", FS_CREATE_DIRECTORY, _FS, "change", fs_create_directory),
        _method("fs/getMetadata", FS_GET_METADATA, _FS, "read", fs_get_metadata),
        _method("fs/readDirectory", FS_READ_DIRECTORY, _FS, "read", fs_read_directory),
        _method("fs/remove", FS_REMOVE, _FS, "change", fs_remove),
        _method("fs/copy", FS_COPY, _FS, "change", fs_copy),
        _method("fs/canonicalize", FS_CANONICALIZE, _FS, "read", fs_canonicalize),
        _method("fs/walk", FS_WALK, _FS, "read", fs_walk),
        _method("fs/open", FS_OPEN, _FS, "change", fs_open),
        _method("fs/readBlock", FS_READ_BLOCK, _FS, "read", fs_read_block),
        _method("fs/writeBlock", FS_WRITE_BLOCK, _FS, "change", fs_write_block),
        _method("fs/close", FS_CLOSE, _FS, "change", fs_close),
        _method("fs/watchMissing", FS_WATCH_MISSING, _FS, "change", fs_watch_missing),
        _method("fs/setMode", FS_SET_MODE, _FS, "change", fs_set_mode),
        _method("fs/stat", FS_STAT, _FS, "read", fs_stat),
        _method("http/request", HTTP_REQUEST, "http", "free", http_request),
    )
)
"""Every method ``execsdk serve`` answers (``initialize`` is handled by the connection)."""
