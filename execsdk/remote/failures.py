"""Server error answers about files and processes, turned into the builtin-mapped exceptions.

This is the one place where a remote backend turns a :class:`~execsdk.errors.ServerError` into
``FileNotFoundError`` and friends (STYLE.md §4): structured codes first, then the OS error
number the server puts in its message; anything unrecognised stays the original error.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager

from execsdk.errors import (
    InvalidRequest,
    NotFound,
    ServerError,
    os_error,
)

__all__ = ["map_fs_errors"]

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
