"""Waiting for something a test can observe, instead of sleeping and hoping it happened.

* ``wait_until(predicate)``: poll until the predicate holds and return its value, or fail with
  an ``AssertionError`` naming what did not happen;
* ``eventually(predicate)``: the same, returning False instead of failing (for helpers that
  report what is left over);
* ``waiting_in(thread, function)``: the thread is blocked in a ``threading`` wait (a
  ``Condition``, an ``Event``, a ``queue.Queue``) that it reached through ``function``;
* ``blocked_in(thread, *functions)``: the thread is inside a system call (``poll``, ``recv``...)
  made directly by one of ``functions``;
* ``pid_gone(pid)``: no process ``pid`` exists any more (a zombie still exists);
* ``logged_requests(caplog)``: the requests an ``RpcClient`` logged at DEBUG as it sent them
  (it logs a request after registering it as pending, just before writing it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

RPC_LOGGER = "execsdk._rpc.endpoint"


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    message: str | Callable[[], str] = "",
    *,
    interval: float = 0.01,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises ``AssertionError`` with ``message`` (a string, or a function called at the end to
    describe the state) when it is still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"not within {timeout:g}s: {what or predicate}")
        time.sleep(interval)  # the polling interval: the predicate is checked again after it


def eventually(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> bool:
    """True as soon as ``predicate()`` is truthy, False if it is still falsy after ``timeout``."""
    try:
        wait_until(predicate, timeout, interval=interval)
    except AssertionError:
        return False
    return True


def waiting_in(thread: threading.Thread, function: str) -> bool:
    """True while ``thread`` is blocked in a ``threading`` wait called, directly or through
    other calls, from a function named ``function``."""
    if thread.ident is None:
        return False
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return False
    code = frame.f_code
    if code.co_filename != threading.__file__ or code.co_name != "wait":
        return False
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def blocked_in(thread: threading.Thread, *functions: str) -> bool:
    """True while ``thread``'s innermost Python frame is one of ``functions``: it is inside a
    call into C made from there (a ``poll`` waiting for room to write, a ``recv`` waiting for
    bytes)."""
    if thread.ident is None:
        return False
    frame = sys._current_frames().get(thread.ident)
    return frame is not None and frame.f_code.co_name in functions


def pid_gone(pid: int) -> bool:
    """True once no process ``pid`` exists (an unreaped zombie still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def logged_requests(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The requests RpcClients logged as sent so far (needs DEBUG on :data:`RPC_LOGGER`), in
    order: each a dict with ``id`` and ``method`` (and ``params`` unless the preview was cut).
    """
    sent = []
    for record in list(caplog.records):
        args = record.args
        if record.name != RPC_LOGGER or not isinstance(args, tuple) or len(args) != 3:
            continue
        if args[1] != "->":
            continue
        preview = str(args[2])
        try:
            message = json.loads(preview)
        except ValueError:  # cut after PREVIEW_CHARS: id and method come first
            found = _REQUEST_HEAD.match(preview)
            message = {"id": int(found[1]), "method": found[2]} if found else {}
        if "id" in message:
            sent.append(message)
    return sent


_REQUEST_HEAD = re.compile(r'\{"id": (\d+), "method": "([^"]*)"')


def log_rpc_frames(caplog: pytest.LogCaptureFixture) -> None:
    """Make RpcClients log every frame at DEBUG into ``caplog`` (for :func:`logged_requests`)."""
    caplog.set_level(logging.DEBUG, logger=RPC_LOGGER)
