"""Conformance: every refusal the client reads by its words, provoked on every server.

``execsdk/_protocol/refusals.py`` classifies error answers by code and, where codex gives only
words, by the templates PROTOCOL.md records (§2, §3.4, §3.6, §3.10, §3.16, §3.19, §5). Each case
here provokes one refusal on codex 0.169 and our server (``conn``) and on codex 0.123 where the
method exists (``g1conn``, tests named ``g1``), and asserts the real answer's code, that its words
fit the template, and exactly which classifications hold. A codex release that rewords a message
then fails here, instead of silently breaking session resume, ``process/start`` retries,
``ProcessNotFound`` or the mapping of filesystem errors to ``FileNotFoundError`` and friends.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from servers import RawConn, ServerHandle, b64, connections

from execsdk import errors
from execsdk._protocol import refusals

PREDICATES: dict[str, Callable[[BaseException], bool]] = {
    "unknown session": refusals.is_unknown_session,
    "session attached": refusals.is_session_attached,
    "duplicate process": refusals.is_duplicate_process,
    "unknown process": refusals.is_unknown_process,
    "unknown handle": refusals.is_unknown_handle,
    "not a file": refusals.is_not_a_file,
    "copy needs recursive": refusals.is_copy_needs_recursive,
}


class Ctx:
    """What a case needs: an initialized connection, more connections, the path form."""

    def __init__(
        self, conn: RawConn, connect: Callable[[], RawConn], path: Callable[[Path], str], tmp: Path
    ) -> None:
        self.conn = conn
        self.connect = connect
        self.path = path
        self.tmp = tmp
        self.process_id: str | None = None


class Expect(NamedTuple):
    code: int
    template: str
    holds: frozenset[str]  # the PREDICATES that must hold; every other one must not
    errno: int | None  # what refusal_errno must say


class Case(NamedTuple):
    name: str
    provoke: Callable[[Ctx], dict[str, Any]]
    g2: Expect  # codex 0.169 and ours
    g1: Expect | None  # codex 0.123; None where the method does not exist there


def _resume(ctx: Ctx, session_id: str) -> dict[str, Any]:
    return ctx.connect().call(
        "initialize", {"clientName": "refusals", "resumeSessionId": session_id}
    )


def _unknown_session(ctx: Ctx) -> dict[str, Any]:
    return _resume(ctx, "00000000-0000-0000-0000-000000000000")


def _attached_session(ctx: Ctx) -> dict[str, Any]:
    assert ctx.conn.init_result is not None
    return _resume(ctx, ctx.conn.init_result["sessionId"])


def _duplicate_process(ctx: Ctx) -> dict[str, Any]:
    ctx.process_id = f"dup {uuid.uuid4().hex[:8]}"  # a space: ids are free-form strings
    params = {
        "processId": ctx.process_id,
        "argv": ["true"],
        "cwd": ctx.path(ctx.tmp),
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        "tty": False,
    }
    assert "result" in ctx.conn.call("process/start", params)
    return ctx.conn.call("process/start", params)


def _unknown_process(ctx: Ctx) -> dict[str, Any]:
    return ctx.conn.call("process/read", {"processId": f"nope-{uuid.uuid4().hex[:8]}"})


def _read_directory_as_file(ctx: Ctx) -> dict[str, Any]:
    return ctx.conn.call("fs/readFile", {"path": ctx.path(ctx.tmp)})


def _open_directory(ctx: Ctx) -> dict[str, Any]:
    return ctx.conn.call("fs/open", {"handleId": "refusals-dir", "path": ctx.path(ctx.tmp)})


def _copy_directory_without_recursive(ctx: Ctx) -> dict[str, Any]:
    (ctx.tmp / "src").mkdir()
    params = {
        "sourcePath": ctx.path(ctx.tmp / "src"),
        "destinationPath": ctx.path(ctx.tmp / "dst"),
        "recursive": False,
    }
    return ctx.conn.call("fs/copy", params)


def _read_unknown_handle(ctx: Ctx) -> dict[str, Any]:
    return ctx.conn.call("fs/readBlock", {"handleId": "refusals-nope", "offset": 0, "len": 16})


def _write_unknown_handle(ctx: Ctx) -> dict[str, Any]:
    params = {"handleId": "refusals-nope", "offset": 0, "chunk": b64(b"x")}
    return ctx.conn.call("fs/writeBlock", params)


def _read_missing_file(ctx: Ctx) -> dict[str, Any]:
    return ctx.conn.call("fs/readFile", {"path": ctx.path(ctx.tmp / "missing")})


def _create_existing_directory(ctx: Ctx) -> dict[str, Any]:
    return ctx.conn.call("fs/createDirectory", {"path": ctx.path(ctx.tmp), "recursive": False})


def _list_a_file(ctx: Ctx) -> dict[str, Any]:
    (ctx.tmp / "file").write_bytes(b"x")
    return ctx.conn.call("fs/readDirectory", {"path": ctx.path(ctx.tmp / "file")})


_NONE: frozenset[str] = frozenset()
R = refusals

CASES = [
    Case(
        "unknown-session",
        _unknown_session,
        Expect(-32600, R.UNKNOWN_SESSION, frozenset({"unknown session"}), None),
        Expect(-32600, R.UNKNOWN_SESSION, frozenset({"unknown session"}), None),
    ),
    Case(
        "session-attached",
        _attached_session,
        Expect(-32010, R.SESSION_ATTACHED, frozenset({"session attached"}), None),
        Expect(-32600, R.SESSION_ATTACHED, frozenset({"session attached"}), None),
    ),
    Case(
        "process-exists",
        _duplicate_process,
        Expect(-32600, R.PROCESS_EXISTS, frozenset({"duplicate process"}), None),
        Expect(-32600, R.PROCESS_EXISTS, frozenset({"duplicate process"}), None),
    ),
    Case(
        "unknown-process",
        _unknown_process,
        Expect(-32600, R.UNKNOWN_PROCESS, frozenset({"unknown process"}), None),
        Expect(-32600, R.UNKNOWN_PROCESS, frozenset({"unknown process"}), None),
    ),
    Case(
        "read-file-of-a-directory",
        _read_directory_as_file,
        Expect(-32600, R.NOT_A_FILE, frozenset({"not a file"}), errno.EISDIR),
        Expect(-32603, R.OS_ERROR, _NONE, errno.EISDIR),  # G1: "Is a directory (os error 21)"
    ),
    Case(
        "open-a-directory",
        _open_directory,
        Expect(-32600, R.NOT_A_FILE, frozenset({"not a file"}), errno.EISDIR),
        None,
    ),
    Case(
        "copy-needs-recursive",
        _copy_directory_without_recursive,
        Expect(-32600, R.COPY_NEEDS_RECURSIVE, frozenset({"copy needs recursive"}), errno.EISDIR),
        Expect(-32600, R.COPY_NEEDS_RECURSIVE, frozenset({"copy needs recursive"}), errno.EISDIR),
    ),
    Case(
        "read-block-unknown-handle",
        _read_unknown_handle,
        Expect(-32004, R.UNKNOWN_HANDLE, frozenset({"unknown handle"}), None),
        None,
    ),
    Case(
        "write-block-unknown-handle",
        _write_unknown_handle,
        Expect(-32004, R.UNKNOWN_HANDLE, frozenset({"unknown handle"}), None),
        None,
    ),
    Case(
        "os-error-not-found",
        _read_missing_file,
        Expect(-32004, R.OS_ERROR, _NONE, errno.ENOENT),
        Expect(-32004, R.OS_ERROR, _NONE, errno.ENOENT),
    ),
    Case(
        "os-error-exists",
        _create_existing_directory,
        Expect(-32603, R.OS_ERROR, _NONE, errno.EEXIST),
        Expect(-32603, R.OS_ERROR, _NONE, errno.EEXIST),
    ),
    Case(
        "os-error-not-a-directory",
        _list_a_file,
        Expect(-32603, R.OS_ERROR, _NONE, errno.ENOTDIR),
        Expect(-32603, R.OS_ERROR, _NONE, errno.ENOTDIR),
    ),
]


@pytest.fixture
def g1connect(g1: ServerHandle) -> Iterator[Callable[[], RawConn]]:
    """Factory for extra raw (uninitialized) connections to the G1 server."""
    with connections(g1.url) as make:
        yield make


def _check(ctx: Ctx, case: Case, expect: Expect) -> None:
    reply = case.provoke(ctx)
    assert "error" in reply, f"{case.name}: expected a refusal, got {reply!r}"
    code, message = reply["error"]["code"], reply["error"]["message"]
    assert code == expect.code, (case.name, reply["error"])
    assert refusals.fits(expect.template, message), (
        f"{case.name}: {message!r} is no longer worded as {expect.template!r}"
    )
    exc = errors.server_error(code, message, method="conformance", request_id=1)
    holds = {name for name, check in PREDICATES.items() if check(exc)}
    assert holds == expect.holds, (case.name, message)
    assert refusals.refusal_errno(exc) == expect.errno, (case.name, message)
    if expect.template == refusals.OS_ERROR:
        assert refusals.os_errno(exc) == expect.errno
    if ctx.process_id is not None:
        assert refusals.is_duplicate_process(exc, ctx.process_id)
        assert not refusals.is_duplicate_process(exc, ctx.process_id + "x")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refusal_is_classified(
    case: Case, conn: RawConn, connect: Callable[[], RawConn], tmp_path: Path
) -> None:
    _check(Ctx(conn, connect, Path.as_uri, tmp_path), case, case.g2)


G1_CASES = [c for c in CASES if c.g1 is not None]


@pytest.mark.parametrize("case", G1_CASES, ids=[c.name for c in G1_CASES])
def test_g1_refusal_is_classified(
    case: Case, g1conn: RawConn, g1connect: Callable[[], RawConn], tmp_path: Path
) -> None:
    assert case.g1 is not None
    _check(Ctx(g1conn, g1connect, str, tmp_path), case, case.g1)
