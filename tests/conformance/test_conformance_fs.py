"""Conformance: filesystem methods (PROTOCOL.md §6 items 35-43)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import SPELLINGS, RawConn, b64, unb64

INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32004
BLOCK_MAX = 1024 * 1024


def _error(reply: dict[str, Any]) -> dict[str, Any]:
    assert "error" in reply, f"expected an error, got {reply!r}"
    err: dict[str, Any] = reply["error"]
    return err


def _code(conn: RawConn, method: str, params: dict[str, Any]) -> int:
    code: int = _error(conn.call(method, params))["code"]
    return code


# item 35
def test_read_file_missing_is_not_found_and_directory_is_invalid_request(
    conn: RawConn, tmp_path: Path
) -> None:
    err = _error(conn.call("fs/readFile", {"path": (tmp_path / "missing").as_uri()}))
    assert err["code"] == NOT_FOUND
    assert "os error 2" in err["message"]
    err = _error(conn.call("fs/readFile", {"path": tmp_path.as_uri()}))
    assert err["code"] == INVALID_REQUEST
    assert "is not a file" in err["message"]


# item 35
def test_g1_read_file_directory_is_internal_error(g1conn: RawConn, tmp_path: Path) -> None:
    err = _error(g1conn.call("fs/readFile", {"path": str(tmp_path)}))
    assert err["code"] == INTERNAL_ERROR
    assert "os error 21" in err["message"]


# item 36
def test_write_file_creates_truncates_and_needs_parent(conn: RawConn, tmp_path: Path) -> None:
    target = tmp_path / "w.bin"
    data = bytes(range(256)) * 3
    assert conn.result("fs/writeFile", {"path": target.as_uri(), "dataBase64": b64(data)}) == {}
    assert target.read_bytes() == data
    assert conn.result("fs/writeFile", {"path": target.as_uri(), "dataBase64": b64(b"ab")}) == {}
    assert target.read_bytes() == b"ab"
    nested = tmp_path / "no" / "such" / "f"
    err = _error(conn.call("fs/writeFile", {"path": nested.as_uri(), "dataBase64": b64(b"x")}))
    assert err["code"] == NOT_FOUND
    assert not (tmp_path / "no").exists()
    err = _error(conn.call("fs/writeFile", {"path": target.as_uri(), "dataBase64": "!!"}))
    assert err["code"] == INVALID_REQUEST
    assert "valid base64" in err["message"]
    assert target.read_bytes() == b"ab"
    err = _error(conn.call("fs/writeFile", {"path": tmp_path.as_uri(), "dataBase64": ""}))
    assert err["code"] == INTERNAL_ERROR


# items 36, 43
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_large_writes_land_and_bad_ones_are_worded_alike_in_any_spelling(
    conn: RawConn, tmp_path: Path, spelling: str
) -> None:
    # Large enough for execsdk serve's bulk parse (bulk.py); its fallbacks must not show.
    data, block = os.urandom(200_000), os.urandom(BLOCK_MAX)
    bad = "A/" * 20_000 + "!!"
    whole, blocks = tmp_path / "whole.bin", tmp_path / "blocks.bin"

    def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
        return conn.wait_reply(conn.request_spelled(method, params, spelling))

    assert (
        call("fs/writeFile", {"path": whole.as_uri(), "dataBase64": b64(data)}).get("result") == {}
    )
    assert whole.read_bytes() == data
    assert _error(call("fs/writeFile", {"path": whole.as_uri(), "dataBase64": bad})) == {
        "code": INVALID_REQUEST,
        "message": (
            "fs/writeFile requires valid base64 dataBase64: Invalid symbol 33, offset 40000."
        ),
    }
    assert whole.read_bytes() == data
    conn.result("fs/open", {"handleId": "b", "path": blocks.as_uri(), "mode": "replace"})
    assert (
        call("fs/writeBlock", {"handleId": "b", "offset": 0, "chunk": b64(block)})["result"] == {}
    )
    assert _error(call("fs/writeBlock", {"handleId": "b", "offset": 0, "chunk": bad})) == {
        "code": INVALID_PARAMS,
        "message": "Invalid symbol 33, offset 40000.",
    }
    conn.result("fs/close", {"handleId": "b"})
    assert blocks.read_bytes() == block


# item 37
def test_create_directory_defaults_recursive(conn: RawConn, tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    assert conn.result("fs/createDirectory", {"path": deep.as_uri()}) == {}
    assert deep.is_dir()
    assert conn.result("fs/createDirectory", {"path": deep.as_uri()}) == {}  # exists: fine
    err = _error(conn.call("fs/createDirectory", {"path": deep.as_uri(), "recursive": False}))
    assert err["code"] == INTERNAL_ERROR
    assert "os error 17" in err["message"]
    orphan = tmp_path / "x" / "y"
    assert _code(conn, "fs/createDirectory", {"path": orphan.as_uri(), "recursive": False}) == (
        NOT_FOUND
    )
    assert not orphan.parent.exists()


# item 38
def test_get_metadata_follows_links_and_flags_symlink(conn: RawConn, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    (tmp_path / "d").mkdir()
    (tmp_path / "lf").symlink_to(f)
    (tmp_path / "ld").symlink_to(tmp_path / "d")
    (tmp_path / "dangle").symlink_to(tmp_path / "nowhere")
    meta = conn.result("fs/getMetadata", {"path": f.as_uri()})
    assert (meta["isFile"], meta["isDirectory"], meta["isSymlink"], meta["size"]) == (
        True,
        False,
        False,
        5,
    )
    assert abs(meta["modifiedAtMs"] - f.stat().st_mtime * 1000) < 2000
    assert isinstance(meta["createdAtMs"], int)
    meta = conn.result("fs/getMetadata", {"path": (tmp_path / "lf").as_uri()})
    assert (meta["isFile"], meta["isSymlink"], meta["size"]) == (True, True, 5)
    meta = conn.result("fs/getMetadata", {"path": (tmp_path / "ld").as_uri()})
    assert (meta["isDirectory"], meta["isFile"], meta["isSymlink"]) == (True, False, True)
    assert _code(conn, "fs/getMetadata", {"path": (tmp_path / "dangle").as_uri()}) == NOT_FOUND
    assert _code(conn, "fs/getMetadata", {"path": (tmp_path / "nope").as_uri()}) == NOT_FOUND


# item 38
def test_g1_get_metadata_has_no_size(g1conn: RawConn, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    meta = g1conn.result("fs/getMetadata", {"path": str(tmp_path / "f")})
    assert meta["isFile"] is True
    assert "size" not in meta


# item 39
def test_read_directory_omits_dangling_links_and_reports_target_type(
    conn: RawConn, tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "d").mkdir()
    (tmp_path / "lf").symlink_to(tmp_path / "f")
    (tmp_path / "ld").symlink_to("d")
    (tmp_path / "dangle").symlink_to(tmp_path / "nowhere")
    entries = conn.result("fs/readDirectory", {"path": tmp_path.as_uri()})["entries"]
    got = {e["fileName"]: (e["isDirectory"], e["isFile"]) for e in entries}
    assert got == {
        "f": (False, True),
        "d": (True, False),
        "lf": (False, True),
        "ld": (True, False),
    }
    err = _error(conn.call("fs/readDirectory", {"path": (tmp_path / "f").as_uri()}))
    assert err["code"] == INTERNAL_ERROR
    assert "os error 20" in err["message"]
    assert _code(conn, "fs/readDirectory", {"path": (tmp_path / "nope").as_uri()}) == NOT_FOUND


# item 40
def test_remove_defaults_recursive_and_force(conn: RawConn, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "s").mkdir(parents=True)
    (tree / "s" / "f").write_bytes(b"x")
    err = _error(conn.call("fs/remove", {"path": tree.as_uri(), "recursive": False}))
    assert err["code"] == INTERNAL_ERROR
    assert "os error 39" in err["message"]
    assert tree.exists()
    assert conn.result("fs/remove", {"path": tree.as_uri()}) == {}
    assert not tree.exists()
    assert conn.result("fs/remove", {"path": tree.as_uri()}) == {}  # missing: fine by default
    assert _code(conn, "fs/remove", {"path": tree.as_uri(), "force": False}) == NOT_FOUND
    # A symlink is removed itself, not its target.
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "k").write_bytes(b"k")
    (tmp_path / "link").symlink_to(tmp_path / "keep")
    assert conn.result("fs/remove", {"path": (tmp_path / "link").as_uri()}) == {}
    assert not os.path.lexists(tmp_path / "link")
    assert (tmp_path / "keep" / "k").read_bytes() == b"k"


# item 41
def test_copy_requires_recursive_and_copies_links_as_links(conn: RawConn, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"data")
    (src / "inner").symlink_to("sub/f")
    (tmp_path / "file").write_bytes(b"top")
    (tmp_path / "toplink").symlink_to(tmp_path / "file")

    def copy(a: Path, b: Path, **extra: Any) -> dict[str, Any]:
        return conn.call(
            "fs/copy", {"sourcePath": a.as_uri(), "destinationPath": b.as_uri(), **extra}
        )

    err = _error(copy(tmp_path / "file", tmp_path / "c0"))
    assert err["code"] == INVALID_PARAMS
    assert "recursive" in err["message"]
    err = _error(copy(src, tmp_path / "c1", recursive=False))
    assert err["code"] == INVALID_REQUEST
    assert "recursive: true" in err["message"]
    assert not (tmp_path / "c1").exists()

    assert copy(src, tmp_path / "c2", recursive=True).get("result") == {}
    assert (tmp_path / "c2" / "sub" / "f").read_bytes() == b"data"
    assert os.readlink(tmp_path / "c2" / "inner") == "sub/f"

    assert "result" in copy(tmp_path / "toplink", tmp_path / "c3", recursive=False)
    assert os.readlink(tmp_path / "c3") == str(tmp_path / "file")

    assert "result" in copy(tmp_path / "file", tmp_path / "c4", recursive=False)
    assert (tmp_path / "c4").read_bytes() == b"top" and not (tmp_path / "c4").is_symlink()

    err = _error(copy(tmp_path / "file", src, recursive=False))
    assert err["code"] == INTERNAL_ERROR
    assert "os error 21" in err["message"]
    err = _error(copy(tmp_path / "missing", tmp_path / "c5", recursive=False))
    assert err["code"] == NOT_FOUND


# item 42
def test_dotdot_is_resolved_textually_before_symlinks(conn: RawConn, tmp_path: Path) -> None:
    a = tmp_path / "a"
    b_sub = tmp_path / "b" / "sub"
    b_sub.mkdir(parents=True)
    a.mkdir()
    (a / "x").write_bytes(b"from a")
    (tmp_path / "b" / "x").write_bytes(b"from b")
    (a / "link").symlink_to(b_sub)
    # POSIX would resolve a/link/.. to b; the server drops `link/..` textually, giving a/x.
    tricky = a / "link" / ".." / "x"
    assert tricky.read_bytes() == b"from b"  # the kernel's view, for contrast
    data = unb64(conn.result("fs/readFile", {"path": tricky.as_uri()})["dataBase64"])
    assert data == b"from a"
    meta = conn.result("fs/getMetadata", {"path": tricky.as_uri()})
    assert meta["size"] == len(b"from a")
    assert conn.result("fs/writeFile", {"path": tricky.as_uri(), "dataBase64": b64(b"new")}) == {}
    assert (a / "x").read_bytes() == b"new"
    assert (tmp_path / "b" / "x").read_bytes() == b"from b"


# item 43
def test_open_handles_ids_limits_and_block_lengths(conn: RawConn, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello world")
    uri = f.as_uri()
    err = _error(conn.call("fs/open", {"handleId": "x" * 33, "path": uri}))
    assert err["code"] == INVALID_REQUEST
    assert "32 bytes" in err["message"]
    assert conn.result("fs/open", {"handleId": "y" * 32, "path": uri}) == {"handleId": "y" * 32}
    assert conn.result("fs/open", {"handleId": "h", "path": uri}) == {"handleId": "h"}
    err = _error(conn.call("fs/open", {"handleId": "h", "path": uri}))
    assert err["code"] == INVALID_REQUEST
    assert "already exists" in err["message"]
    for length in (0, BLOCK_MAX + 1):
        err = _error(conn.call("fs/readBlock", {"handleId": "h", "offset": 0, "len": length}))
        assert err["code"] == INVALID_REQUEST, length
    block = conn.result("fs/readBlock", {"handleId": "h", "offset": 6, "len": BLOCK_MAX})
    assert unb64(block["chunk"]) == b"world" and block["eof"] is True
    block = conn.result("fs/readBlock", {"handleId": "h", "offset": 0, "len": 5})
    assert unb64(block["chunk"]) == b"hello" and block["eof"] is False
    err = _error(conn.call("fs/writeBlock", {"handleId": "h", "offset": 0, "chunk": b64(b"x")}))
    assert err["code"] == INTERNAL_ERROR  # a read handle is not writable
    assert _code(conn, "fs/open", {"handleId": "dir", "path": tmp_path.as_uri()}) == (
        INVALID_REQUEST
    )
    missing = (tmp_path / "missing").as_uri()
    assert _code(conn, "fs/open", {"handleId": "m", "path": missing}) == NOT_FOUND
    # 128 handles at most per connection ("h" and "y"*32 are already open).
    for i in range(126):
        assert "result" in conn.call("fs/open", {"handleId": f"n{i}", "path": uri}), i
    err = _error(conn.call("fs/open", {"handleId": "one-too-many", "path": uri}))
    assert err["code"] == INVALID_REQUEST
    assert "128" in err["message"]
    assert conn.result("fs/close", {"handleId": "n0"}) == {}
    assert conn.result("fs/open", {"handleId": "fits-again", "path": uri}) == {
        "handleId": "fits-again"
    }
    err = _error(conn.call("fs/readBlock", {"handleId": "n0", "offset": 0, "len": 1}))
    assert err["code"] == NOT_FOUND
    assert "unknown file handle" in err["message"]


# item 43
def test_write_handles_replace_and_zero_fill(conn: RawConn, tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_bytes(b"old contents")
    assert conn.result("fs/open", {"handleId": "w", "path": f.as_uri(), "mode": "replace"}) == {
        "handleId": "w"
    }
    assert f.read_bytes() == b""  # truncated at open time
    assert conn.result("fs/writeBlock", {"handleId": "w", "offset": 0, "chunk": b64(b"ab")}) == {}
    assert conn.result("fs/writeBlock", {"handleId": "w", "offset": 4, "chunk": b64(b"cd")}) == {}
    big = b64(b"z" * (BLOCK_MAX + 1))
    err = _error(conn.call("fs/writeBlock", {"handleId": "w", "offset": 0, "chunk": big}))
    assert err["code"] == INVALID_REQUEST
    err = _error(conn.call("fs/readBlock", {"handleId": "w", "offset": 0, "len": 1}))
    assert err["code"] == INTERNAL_ERROR  # a replace handle is not readable
    assert conn.result("fs/close", {"handleId": "w"}) == {}
    assert f.read_bytes() == b"ab\0\0cd"


# item 43
def test_open_handles_are_per_connection(connect: Callable[[], RawConn], tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    first = connect()
    session = first.handshake()["sessionId"]
    # A process keeps the session resumable on our server too (it drops empty sessions at
    # once: docs/server.md, deliberate differences).
    first.result(
        "process/start",
        {
            "processId": "keeper",
            "argv": ["sleep", "30"],
            "cwd": tmp_path.as_uri(),
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
        },
    )
    assert first.result("fs/open", {"handleId": "keep", "path": f.as_uri()}) == {"handleId": "keep"}
    first.close()
    second = connect()
    assert second.handshake(resumeSessionId=session)["sessionId"] == session
    err = _error(second.call("fs/readBlock", {"handleId": "keep", "offset": 0, "len": 1}))
    assert err["code"] == NOT_FOUND
    assert "unknown file handle `keep`" in err["message"]
    second.result("process/terminate", {"processId": "keeper"})
