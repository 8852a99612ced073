"""Server error answers about files and processes, turned into the builtin-mapped exceptions.

This is the one place where a remote backend turns a :class:`~execsdk.errors.ServerError` into
``FileNotFoundError`` and friends (STYLE.md §4): structured codes first, then the OS error
number the server puts in its message; anything unrecognised stays the original error.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from execsdk._deadline import UNSET, Deadline, Timeoutish
from execsdk._protocol import refusals
from execsdk.client import Client
from execsdk.errors import ExecSdkError, ServerError, os_error

__all__ = ["map_fs_errors", "map_spawn_errors"]

log = logging.getLogger(__name__)


@contextmanager
def map_fs_errors(method: str, path: str | None) -> Iterator[None]:
    """Turn a server error about ``path`` into the matching builtin-mapped exception."""
    try:
        yield
    except ServerError as exc:
        raise _fs_error(exc, method, path) from exc


@contextmanager
def map_spawn_errors(
    client: Client, executable: str | None, cwd: str, *, timeout: Timeoutish = UNSET
) -> Iterator[None]:
    """``process/start``: a server error becomes the builtin-mapped exception, naming the cwd
    when the cwd is what failed, else the executable.

    A missing cwd and a missing executable get the same answer from every server ("No such
    file or directory (os error 2)", and "Not a directory (os error 20)" for a file in the
    way: PROTOCOL.md §3.4), so after such a failure, and only then, one ``fs/getMetadata`` of
    the cwd tells them apart, within what is left of ``timeout``. When that check cannot
    answer, the error names the executable, as before.
    """
    deadline = None if timeout is UNSET else Deadline(timeout)
    try:
        yield
    except ServerError as exc:
        mapped = _fs_error(exc, "process/start", executable)
        if isinstance(mapped, (FileNotFoundError, NotADirectoryError)):
            left: Timeoutish = UNSET if deadline is None else deadline.left()
            mapped = _cwd_error(client, exc, cwd, left) or mapped
        raise mapped from exc


def _cwd_error(client: Client, exc: ServerError, cwd: str, timeout: Timeoutish) -> Exception | None:
    """The error of a cwd that is missing or not a directory, or None when it is one (or when
    the server cannot say)."""
    try:
        meta = client.fs_get_metadata(path=cwd, timeout=timeout)
    except ServerError as probe:
        number = refusals.refusal_errno(probe)
        if number not in (_errno.ENOENT, _errno.ENOTDIR):
            log.debug("could not check cwd %r after a failed process/start: %r", cwd, probe)
            return None
        text = refusals.os_strerror(probe) or os.strerror(number)
    except ExecSdkError as probe:
        log.debug("could not check cwd %r after a failed process/start: %r", cwd, probe)
        return None
    else:
        if meta.is_directory:
            return None
        number = _errno.ENOTDIR
        text = os.strerror(number)
    return os_error(number, text, cwd, method="process/start", server_message=exc.message)


def _fs_error(exc: ServerError, method: str, path: str | None) -> Exception:
    # What the refusal means is read in one place (_protocol/refusals.py); this only builds.
    number = refusals.refusal_errno(exc)
    if number is None:
        return exc
    text = refusals.os_strerror(exc) or os.strerror(number)
    return os_error(number, text, path, method=method, server_message=exc.message)
