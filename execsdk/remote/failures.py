"""Server error answers about files and processes, turned into the builtin-mapped exceptions.

This is the one place where a remote backend turns a :class:`~execsdk.errors.ServerError` into
``FileNotFoundError`` and friends (STYLE.md §4): structured codes first, then the OS error
number the server puts in its message; anything unrecognised stays the original error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from execsdk._protocol import refusals
from execsdk.errors import ServerError, os_error

__all__ = ["map_fs_errors"]


@contextmanager
def map_fs_errors(method: str, path: str | None) -> Iterator[None]:
    """Turn a server error about ``path`` into the matching builtin-mapped exception."""
    try:
        yield
    except ServerError as exc:
        raise _fs_error(exc, method, path) from exc


def _fs_error(exc: ServerError, method: str, path: str | None) -> Exception:
    # What the refusal means is read in one place (_protocol/refusals.py); this only builds.
    number = refusals.refusal_errno(exc)
    if number is None:
        return exc
    text = refusals.os_strerror(exc) or os.strerror(number)
    return os_error(number, text, path, method=method, server_message=exc.message)
