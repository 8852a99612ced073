"""Conformance: lifecycle, framing errors, sessions (PROTOCOL.md §6 items 4-13, 32-34, 44, 45)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import RawConn, ServerHandle, unb64
from waiting import wait_until

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SESSION_ATTACHED = -32010


def _error(reply: dict[str, Any]) -> dict[str, Any]:
    assert "error" in reply, f"expected an error, got {reply!r}"
    err: dict[str, Any] = reply["error"]
    return err


def _alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# item 4
def test_method_before_initialize_is_invalid_request(raw: RawConn, tmp_path: Path) -> None:
    for method, params in (
        ("fs/readFile", {"path": (tmp_path / "x").as_uri()}),
        ("process/read", {"processId": "p"}),
        ("environment/status", {}),
    ):
        err = _error(raw.call(method, params))
        assert err["code"] == INVALID_REQUEST, (method, err)
        assert "must call initialize" in err["message"]
    # The connection is still usable afterwards.
    assert "sessionId" in raw.handshake()


# item 5
def test_method_after_initialize_before_initialized_is_invalid_request(
    raw: RawConn, tmp_path: Path
) -> None:
    assert "result" in raw.call("initialize", {"clientName": "c"})
    for method, params in (
        ("fs/readFile", {"path": (tmp_path / "x").as_uri()}),
        ("process/read", {"processId": "p"}),
    ):
        err = _error(raw.call(method, params))
        assert err["code"] == INVALID_REQUEST, (method, err)
        assert "must send initialized" in err["message"]
    raw.notify("initialized", {})
    assert raw.result("environment/status", {}) == {"status": "ready"}


# item 6
def test_second_initialize_is_invalid_request(raw: RawConn) -> None:
    assert "result" in raw.call("initialize", {"clientName": "c"})
    err = _error(raw.call("initialize", {"clientName": "c"}))  # before initialized
    assert err["code"] == INVALID_REQUEST
    assert "only be sent once" in err["message"]
    raw.notify("initialized", {})
    err = _error(raw.call("initialize", {"clientName": "c"}))  # after initialized
    assert err["code"] == INVALID_REQUEST
    assert "only be sent once" in err["message"]
    # A second `initialized` is ignored; the connection keeps working.
    raw.notify("initialized", {})
    assert raw.result("environment/status", {}) == {"status": "ready"}


# item 7
def test_initialize_without_client_name_is_invalid_params(raw: RawConn) -> None:
    err = _error(raw.call("initialize", {}))
    assert err["code"] == INVALID_PARAMS
    assert "clientName" in err["message"]


# item 8
def test_initialize_returns_session_id_and_environment_info(raw: RawConn) -> None:
    result = raw.handshake()
    assert set(result) >= {"sessionId", "environmentInfo"}
    assert isinstance(result["sessionId"], str) and result["sessionId"]
    info = result["environmentInfo"]
    assert info["platformOs"] == "linux"
    assert info["cwd"].startswith("file://")
    assert isinstance(info["capabilities"], dict)
    # The same object that environment/info returns.
    assert raw.result("environment/info", {}) == info


# item 8
def test_g1_initialize_returns_session_id_only(g1: ServerHandle) -> None:
    with RawConn(g1.url) as c:
        result = c.handshake()
    assert set(result) == {"sessionId"}


# item 9
def test_unknown_notification_closes_connection_silently(raw: RawConn) -> None:
    raw.handshake()
    raw.notify("no/such/notification", {})
    assert raw.closed(5)
    assert raw.stashed() == []


# item 9
@pytest.mark.parametrize(
    "response",
    [{"id": 1, "result": {}}, {"id": 1, "error": {"code": -32000, "message": "x"}}],
    ids=["result", "error"],
)
def test_client_response_object_closes_connection_silently(
    raw: RawConn, response: dict[str, Any]
) -> None:
    raw.handshake()
    raw.send(response)
    assert raw.closed(5)
    assert raw.stashed() == []


# item 10
def test_initialized_before_initialize_closes_connection(raw: RawConn) -> None:
    raw.notify("initialized", {})
    assert raw.closed(5)
    assert raw.stashed() == []


# item 11
def test_unparseable_json_is_invalid_request_with_id_minus_1(raw: RawConn) -> None:
    raw.send("{not json")
    reply = raw.recv(5)
    assert reply["id"] == -1
    assert reply["error"]["code"] == INVALID_REQUEST
    assert "failed to parse" in reply["error"]["message"]
    assert "sessionId" in raw.handshake()  # connection kept


# item 11
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '{"jsonrpc":"2.0","id":5,"id":6,"method":"initialize","params":{"clientName":"c"}}',
            "duplicate JSON object key `id` at line 1 column 28",
        ),
        (
            '{"id":5,"method":"initialize","params":{"clientName":"c","x":[{"a":1,\n "a" :2}]}}',
            "duplicate JSON object key `a` at line 2 column 5",
        ),
        (
            '{"id":5,"method":"initialize","params":{"clientName":"c","\\u00e9":1,"\u00e9":2}}',
            "duplicate JSON object key `\u00e9` at line 1 column 72",
        ),
        (  # the duplicate comes before the text breaks off
            '{"id":5,"method":"initialize","params":{"clientName":"c","clientName":"d"',
            "duplicate JSON object key `clientName` at line 1 column 69",
        ),
    ],
    ids=["top", "nested-spaced", "escaped", "truncated"],
)
def test_duplicate_keys_are_invalid_request_with_id_minus_1(
    raw: RawConn, text: str, problem: str
) -> None:
    raw.send(text)
    reply = raw.recv(5)
    assert reply["id"] == -1
    assert reply["error"]["code"] == INVALID_REQUEST
    assert reply["error"]["message"].startswith("failed to parse")
    assert reply["error"]["message"].endswith(f": {problem}")
    assert "sessionId" in raw.handshake()  # connection kept


# item 11
def test_batch_is_invalid_request_with_id_minus_1(raw: RawConn) -> None:
    raw.send([{"id": 1, "method": "initialize", "params": {"clientName": "c"}}])
    reply = raw.recv(5)
    assert reply["id"] == -1
    assert reply["error"]["code"] == INVALID_REQUEST
    assert "sessionId" in raw.handshake()  # connection kept


# item 11
@pytest.mark.parametrize("bad_id", [None, 1.5], ids=["null", "float"])
def test_null_or_float_id_is_invalid_request_with_id_minus_1(raw: RawConn, bad_id: Any) -> None:
    raw.send({"id": bad_id, "method": "initialize", "params": {"clientName": "c"}})
    reply = raw.recv(5)
    assert reply["id"] == -1
    assert reply["error"]["code"] == INVALID_REQUEST
    assert "sessionId" in raw.handshake()  # connection kept


# item 11
def test_g1_null_id_closes_connection(g1: ServerHandle) -> None:
    with RawConn(g1.url) as c:
        c.send({"id": None, "method": "initialize", "params": {"clientName": "c"}})
        assert c.closed(5)


# item 12
def test_unknown_method_is_method_not_found(conn: RawConn) -> None:
    err = _error(conn.call("nope/nope", {}))
    assert err["code"] == METHOD_NOT_FOUND
    assert "does not implement `nope/nope`" in err["message"]


# item 13
def test_unknown_members_are_ignored(conn: RawConn, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    conn.send(
        {
            "id": 41,
            "method": "fs/readFile",
            "params": {"path": (tmp_path / "f").as_uri(), "bogusParam": [1, 2]},
            "bogusTopLevel": {"x": 1},
        }
    )
    reply = conn.wait_reply(41)
    assert unb64(reply["result"]["dataBase64"]) == b"data"


# item 32
@pytest.mark.timeout(60)
def test_disconnect_detaches_and_resume_keeps_session(
    connect: Callable[[], RawConn], tmp_path: Path
) -> None:
    first = connect()
    session = first.handshake()["sessionId"]
    flag = tmp_path / "printed"
    script = "echo before; sleep 1.5; echo detached; touch printed; sleep 2.5; echo live; sleep 30"
    first.start_process("det", ["sh", "-c", script], tmp_path.as_uri())
    first.wait_notification("process/output", lambda p: p["processId"] == "det")
    first.close()
    # "detached" is printed while nobody is attached; the file tells when it was.
    wait_until(flag.exists, 10, '"detached" was not printed', interval=0.05)
    second = connect()
    assert second.handshake(resumeSessionId=session)["sessionId"] == session
    # Every retained chunk is readable, including the one printed while detached.
    read = second.result("process/read", {"processId": "det", "afterSeq": 0})
    text = b"".join(unb64(c["chunk"]) for c in read["chunks"])
    assert b"before" in text and b"detached" in text
    assert read["exited"] is False
    # Notifications resume live; the detached ones are not replayed.
    second.wait_notification("process/output", lambda p: b"live" in unb64(p["chunk"]), timeout=10)
    replayed = second.output("det")
    assert b"detached" not in replayed and b"before" not in replayed
    assert second.result("process/terminate", {"processId": "det"}) == {"running": True}


# item 33
@pytest.mark.timeout(150)
def test_session_expires_about_80s_after_disconnect(
    connect: Callable[[], RawConn], tmp_path: Path
) -> None:
    # Two sessions detach at the same moment: A is resumed at 65 s (must still exist), B is
    # tried at 88 s (must be gone, with its process killed).
    sessions: dict[str, str] = {}
    pids: dict[str, int] = {}
    for name in ("A", "B"):
        c = connect()
        sessions[name] = c.handshake()["sessionId"]
        c.start_process("sleeper", ["sh", "-c", "echo $$; exec sleep 300"], tmp_path.as_uri())
        c.wait_notification("process/output", lambda p: p["processId"] == "sleeper")
        pids[name] = int(c.output("sleeper").split()[0])
        c.close()
    detached = time.monotonic()
    assert _alive(pids["A"]) and _alive(pids["B"])

    # The time passing is the behaviour under test: codex's fixed grace period.
    time.sleep(max(0.0, detached + 65 - time.monotonic()))
    a = connect()
    assert a.handshake(resumeSessionId=sessions["A"])["sessionId"] == sessions["A"]
    assert _alive(pids["A"])

    time.sleep(max(0.0, detached + 88 - time.monotonic()))
    b = connect()
    err = _error(b.call("initialize", {"clientName": "c", "resumeSessionId": sessions["B"]}))
    assert err["code"] == INVALID_REQUEST
    assert "unknown session id" in err["message"]
    wait_until(
        lambda: not _alive(pids["B"]),
        5,
        "the expired session's process still runs",
        interval=0.1,
    )
    assert a.result("process/terminate", {"processId": "sleeper"}) == {"running": True}


# item 33
@pytest.mark.timeout(60)
def test_g1_session_expires_about_10s_after_disconnect(g1: ServerHandle) -> None:
    sessions = []
    for _ in range(2):
        with RawConn(g1.url) as c:
            sessions.append(c.handshake()["sessionId"])
    detached = time.monotonic()
    # The time passing is the behaviour under test: G1's fixed grace period.
    time.sleep(max(0.0, detached + 6 - time.monotonic()))
    with RawConn(g1.url) as c:
        assert c.handshake(resumeSessionId=sessions[0])["sessionId"] == sessions[0]
    time.sleep(max(0.0, detached + 13 - time.monotonic()))
    with RawConn(g1.url) as c:
        err = _error(c.call("initialize", {"clientName": "c", "resumeSessionId": sessions[1]}))
    assert err["code"] == INVALID_REQUEST
    assert "unknown session id" in err["message"]


# item 33
def test_resume_of_unknown_session_is_invalid_request(raw: RawConn) -> None:
    err = _error(
        raw.call(
            "initialize",
            {"clientName": "c", "resumeSessionId": "00000000-0000-0000-0000-000000000000"},
        )
    )
    assert err["code"] == INVALID_REQUEST
    assert re.search(r"unknown session id", err["message"])


# item 34
def test_resume_of_attached_session_is_rejected(
    conn: RawConn, connect: Callable[[], RawConn]
) -> None:
    assert conn.init_result is not None
    other = connect()
    err = _error(
        other.call(
            "initialize", {"clientName": "c", "resumeSessionId": conn.init_result["sessionId"]}
        )
    )
    assert err["code"] == SESSION_ATTACHED
    assert "already attached" in err["message"]
    # The original connection is unaffected.
    assert conn.result("environment/status", {}) == {"status": "ready"}


# item 34
def test_g1_resume_of_attached_session_is_invalid_request(
    g1conn: RawConn, g1: ServerHandle
) -> None:
    assert g1conn.init_result is not None
    with RawConn(g1.url) as other:
        err = _error(
            other.call(
                "initialize",
                {"clientName": "c", "resumeSessionId": g1conn.init_result["sessionId"]},
            )
        )
    assert err["code"] == INVALID_REQUEST
    assert "already attached" in err["message"]


# item 44
def test_environment_info_and_status_answer(conn: RawConn) -> None:
    info = conn.result("environment/info")
    assert {"shell", "executorVersion", "cwd", "userHomeDir", "platformOs", "tempDir"} <= set(info)
    assert info["userHomeDir"].startswith("file://")
    assert isinstance(info["capabilities"], dict)
    assert all(isinstance(v, bool) for v in info["capabilities"].values())
    assert conn.result("environment/status", {}) == {"status": "ready"}
    assert os.path.isabs(info["shell"]["path"])


# item 44
def test_g1_environment_methods_are_method_not_found(g1conn: RawConn) -> None:
    for method in ("environment/info", "environment/status"):
        assert _error(g1conn.call(method, {}))["code"] == METHOD_NOT_FOUND


# item 45
def test_resize_and_watch_are_not_implemented(conn: RawConn, tmp_path: Path) -> None:
    err = _error(conn.call("process/resize", {"processId": "p", "rows": 10, "cols": 10}))
    assert err["code"] == METHOD_NOT_FOUND
    assert "process/resize" in err["message"]
    err = _error(conn.call("fs/watch", {"path": tmp_path.as_uri()}))
    assert err["code"] == METHOD_NOT_FOUND
    assert "fs/watch" in err["message"]
