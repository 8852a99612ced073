"""``Client.call()`` and the raw event bus hand user code faithful JSON at every size.

Answers from 16 KiB up are parsed with their base64 member cut out and decoded in place
(``_protocol/bulk.py``); the raw paths must still show the base64 text the server sent, so that
``len``, stdlib ``base64.b64decode`` and ``json.dumps`` all see the real thing.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execsdk._protocol.wire import Base64Text
from execsdk._rpc.bus import Gap
from execsdk.client import Client, Generation, _plain_json
from tests.conftest import ServerPool

SIZES = {"64KiB": 64 * 1024, "1MiB": 1024 * 1024}
BLOCK_LIMIT = 1024 * 1024  # fs/readBlock len: 1 .. 1 MiB (PROTOCOL.md §3.19)


@pytest.fixture(params=["codex-0.169.0", "codex-0.123.0", "ours"])
def client(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Client]:
    server = server_pool.get(request.param)
    with Client.connect(server.url, timeout=60.0) as c:
        yield c


@pytest.fixture
def g2_client(client: Client) -> Client:
    if client.generation is not Generation.G2:
        pytest.skip("fs/open and fs/readBlock are G2 only")
    return client


def _wire_path(client: Client, path: Path) -> str:
    return path.as_uri() if client.generation is Generation.G2 else str(path)


def _random_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / f"random-{size}.bin"
    path.write_bytes(data)
    return path, data


def _assert_plain_json(value: Any) -> None:
    """Only JSON's own types, and no str subclass anywhere (a Base64Text would be one)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)


def _assert_faithful(result: dict[str, Any], member: str, expected: bytes) -> None:
    text = result[member]
    _assert_plain_json(result)
    assert len(text) == 4 * ((len(expected) + 2) // 3)
    assert base64.b64decode(text, validate=True) == expected
    again = json.loads(json.dumps(result))
    assert again == result
    assert base64.b64decode(again[member]) == expected


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_raw_read_file_returns_real_base64_text(client: Client, tmp_path: Path, size: int) -> None:
    path, data = _random_file(tmp_path, size)

    result = client.call("fs/readFile", {"path": _wire_path(client, path)})

    _assert_faithful(result, "dataBase64", data)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_raw_read_block_returns_real_base64_text(
    g2_client: Client, tmp_path: Path, size: int
) -> None:
    path, data = _random_file(tmp_path, size)
    handle = uuid.uuid4().hex
    g2_client.call("fs/open", {"handleId": handle, "path": path.as_uri()})
    try:
        result = g2_client.call(
            "fs/readBlock", {"handleId": handle, "offset": 0, "len": min(size, BLOCK_LIMIT)}
        )
        tail = g2_client.call(
            "fs/readBlock", {"handleId": handle, "offset": size, "len": BLOCK_LIMIT}
        )
    finally:
        g2_client.call("fs/close", {"handleId": handle})

    _assert_faithful(result, "chunk", data)
    assert tail["chunk"] == "" and tail["eof"] is True


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_typed_read_file_still_returns_the_bytes(client: Client, tmp_path: Path, size: int) -> None:
    path, data = _random_file(tmp_path, size)

    assert client.fs_read_file(path=str(path)).data_base64 == data


def test_raw_process_output_notifications_are_real_base64_text(
    g2_client: Client, tmp_path: Path
) -> None:
    path, data = _random_file(tmp_path, 256 * 1024)
    process_id = f"raw-{uuid.uuid4().hex[:8]}"
    stdout = bytearray()
    with g2_client.events.subscription(
        methods={"process/output", "process/closed"}, maxsize=100_000
    ) as sub:
        g2_client.call(
            "process/start",
            {
                "processId": process_id,
                "argv": ["cat", str(path)],
                "cwd": tmp_path.as_uri(),
                "env": {"PATH": "/usr/bin:/bin"},
                "tty": False,
            },
        )
        while True:
            event = sub.get(timeout=30)
            assert not isinstance(event, Gap), "the subscription overflowed"
            params = event.params
            if params.get("processId") != process_id:
                continue
            if event.method == "process/closed":
                break
            _assert_plain_json(params)
            if params["stream"] == "stdout":
                stdout += base64.b64decode(params["chunk"], validate=True)
    assert bytes(stdout) == data


def test_plain_json_rewrites_pre_decoded_members_anywhere() -> None:
    raw = {
        "dataBase64": Base64Text(b"\x00\x01hello"),
        "nested": [{"chunk": Base64Text(b"abc")}, Base64Text(b""), "text", 5],
        "untouched": {"a": None, "b": [True, 1.5]},
    }

    plain = _plain_json(raw)

    assert plain == {
        "dataBase64": base64.b64encode(b"\x00\x01hello").decode(),
        "nested": [{"chunk": "YWJj"}, "", "text", 5],
        "untouched": {"a": None, "b": [True, 1.5]},
    }
    _assert_plain_json(plain)
    assert _plain_json(Base64Text(b"xyz")) == "eHl6"
