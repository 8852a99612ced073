"""Conformance: the ``execsdk/fileMode`` extension (PROTOCOL.md §7) on the wire.

codex (0.169 and 0.123) announces no such capability and answers neither method; our server
announces it, answers ``fs/setMode`` and ``fs/stat``, and leaves every codex method's answer as
codex gives it (``fs/getMetadata`` has no ``mode``, asked or not).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from servers import RawConn

CAPABILITY = "execsdk/fileMode"
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
NOT_FOUND = -32004


def _ours(conn: RawConn) -> bool:
    return str(conn.init_result["environmentInfo"]["executorVersion"]).startswith("execsdk-")


def _error(reply: dict[str, Any]) -> dict[str, Any]:
    assert "error" in reply, f"expected an error, got {reply!r}"
    err: dict[str, Any] = reply["error"]
    return err


def test_only_our_server_announces_file_mode(conn: RawConn) -> None:
    capabilities = conn.init_result["environmentInfo"]["capabilities"]
    if _ours(conn):
        assert capabilities[CAPABILITY] is True
    else:
        assert CAPABILITY not in capabilities
    # environment/info says the same as the handshake.
    assert conn.result("environment/info", {})["capabilities"] == capabilities


def test_codex_answers_neither_method(conn: RawConn, tmp_path: Path) -> None:
    if _ours(conn):
        pytest.skip("codex only")
    target = tmp_path / "f"
    target.write_bytes(b"x")
    os.chmod(target, 0o644)
    for method, params in (
        ("fs/setMode", {"path": target.as_uri(), "mode": 0o600}),
        ("fs/stat", {"path": target.as_uri()}),
    ):
        err = _error(conn.call(method, params))
        assert err["code"] == METHOD_NOT_FOUND
        assert err["message"] == f"exec-server stub does not implement `{method}` yet"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_g1_codex_announces_nothing_and_answers_neither_method(
    g1conn: RawConn, tmp_path: Path
) -> None:
    assert "environmentInfo" not in g1conn.init_result
    for method in ("fs/setMode", "fs/stat"):
        err = _error(g1conn.call(method, {"path": str(tmp_path), "mode": 0o700}))
        assert err["code"] == METHOD_NOT_FOUND


def test_get_metadata_keeps_codex_shape_even_when_asked_for_a_mode(
    conn: RawConn, tmp_path: Path
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"abc")
    plain = conn.result("fs/getMetadata", {"path": target.as_uri()})
    asked = conn.result("fs/getMetadata", {"path": target.as_uri(), "mode": True})
    keys = {"isDirectory", "isFile", "isSymlink", "size", "createdAtMs", "modifiedAtMs"}
    assert set(plain) == keys
    assert set(asked) == keys


def test_set_mode_then_stat(conn: RawConn, tmp_path: Path) -> None:
    if not _ours(conn):
        pytest.skip("our server's extension")
    target = tmp_path / "f"
    target.write_bytes(b"abc")
    for mode in (0o600, 0o755, 0o4711, 0o2640, 0o1777, 0, 0o7777):
        assert conn.result("fs/setMode", {"path": target.as_uri(), "mode": mode}) == {}
        assert stat.S_IMODE(target.stat().st_mode) == mode
        result = conn.result("fs/stat", {"path": target.as_uri()})
        metadata = conn.result("fs/getMetadata", {"path": target.as_uri()})
        assert result == {**metadata, "mode": mode}
    os.chmod(tmp_path, 0o710)
    assert conn.result("fs/stat", {"path": tmp_path.as_uri()})["mode"] == 0o710
    assert conn.result("fs/stat", {"path": tmp_path.as_uri()})["isDirectory"] is True


def test_set_mode_and_stat_follow_links(conn: RawConn, tmp_path: Path) -> None:
    if not _ours(conn):
        pytest.skip("our server's extension")
    target = tmp_path / "target"
    target.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert conn.result("fs/setMode", {"path": link.as_uri(), "mode": 0o640}) == {}
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    result = conn.result("fs/stat", {"path": link.as_uri()})
    assert result["isSymlink"] is True and result["isFile"] is True
    assert result["mode"] == 0o640


def test_set_mode_and_stat_errors(conn: RawConn, tmp_path: Path) -> None:
    if not _ours(conn):
        pytest.skip("our server's extension")
    target = tmp_path / "f"
    target.write_bytes(b"x")
    os.chmod(target, 0o644)
    uri = target.as_uri()
    missing = (tmp_path / "missing").as_uri()
    err = _error(conn.call("fs/setMode", {"path": missing, "mode": 0o600}))
    assert err["code"] == NOT_FOUND and "os error 2" in err["message"]
    err = _error(conn.call("fs/stat", {"path": missing}))
    assert err["code"] == NOT_FOUND and "os error 2" in err["message"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"path": uri, "mode": 0o10000}, "invalid mode 4096"),
        ({"path": uri, "mode": -1}, "invalid number"),
        ({"path": uri, "mode": 1.5}, "invalid number"),
        ({"path": uri, "mode": "755"}, 'invalid type: string "755", expected u64'),
        ({"path": uri}, "missing field `mode`"),
        ({"mode": 0o600}, "missing field `path`"),
        ({"path": str(target), "mode": 0o600}, "relative URL without a base"),
    ]
    for params, message in cases:
        err = _error(conn.call("fs/setMode", params))
        assert err["code"] == INVALID_PARAMS, params
        assert message in err["message"], (params, err)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    err = _error(conn.call("fs/stat", {"path": str(target)}))
    assert err["code"] == INVALID_PARAMS
    err = _error(conn.call("fs/setMode", {"path": "file://elsewhere/x", "mode": 0o600}))
    assert err["code"] == INVALID_REQUEST
