"""``execsdk serve`` reads client frames itself and keeps websockets' behaviour for the rest.

:mod:`execsdk.server.ws_receive` replaces websockets' receiving thread: plain data frames go
from one buffer straight to the message queue, control frames are fed whole to websockets'
protocol object, and anything unusual hands the stream over to websockets' parser for good.
These tests pin the websockets internals it uses and check each path on a real server over a
real socket, with frames built byte by byte: split across many writes, pings between requests,
fragments, invalid UTF-8, unmasked and oversized frames, a close, and frames sent in the same
write as the handshake request.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from execsdk.server import ws_receive
from execsdk.server.ws import WsServer

pytestmark = pytest.mark.timeout(60)

_TEXT, _BINARY, _CONT, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(
    payload: bytes, opcode: int = _TEXT, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    """One client frame (RFC 6455 §5.2), masked with a random key unless ``masked`` is False."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload[:64]))
    if length > 64:  # the rest through an integer XOR: fast enough for megabytes
        rest = payload[64:]
        pattern = (key[64 % 4 :] + key[: 64 % 4]) * (len(rest) // 4 + 1)
        mixed = int.from_bytes(rest, "big") ^ int.from_bytes(pattern[: len(rest)], "big")
        body += mixed.to_bytes(len(rest), "big")
    return header + key + body


def request(rid: int, method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"id": rid, "method": method, "params": params}).encode()


@pytest.fixture()
def server() -> Iterator[WsServer]:
    srv = WsServer("127.0.0.1", 0, session_grace=1.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown(timeout=5)


class _Peer:
    """A websocket-client connection that can also write raw bytes to the server."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(
            url, suppress_origin=True, skip_utf8_validation=True, timeout=20
        )
        self.ids = itertools.count(1)
        reply = self.call("initialize", {"clientName": "receive-test"})
        assert "sessionId" in reply["result"]
        self.ws.send(json.dumps({"method": "initialized", "params": {}}))

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = next(self.ids)
        self.ws.send(request(rid, method, params).decode())
        msg: dict[str, Any] = json.loads(self.ws.recv())
        assert msg["id"] == rid
        return msg

    def raw(self, data: bytes, *, pieces: int = 1, pause: float = 0.0) -> None:
        step = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), step):
            self.ws.sock.sendall(data[start : start + step])
            if pause:
                time.sleep(pause)

    def replies(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(self.ws.recv()) for _ in range(count)]

    def close_frame(self) -> tuple[int, str]:
        """Read until the server's close frame; its code and reason."""
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return struct.unpack("!H", data[:2])[0], data[2:].decode()


@pytest.fixture()
def peer(server: WsServer) -> Iterator[_Peer]:
    p = _Peer(server.url)
    try:
        yield p
    finally:
        p.ws.close(timeout=1)


def test_the_installed_websockets_has_every_hook_the_receive_loop_uses() -> None:
    assert ws_receive.FAST_RECEIVE, "websockets changed: execsdk serve fell back to its loop"


def test_data_frames_take_the_fast_path(server: WsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fed: list[bytes] = []
    real_feed = ws_receive.FastReceiveMixin._feed

    def feed(self: ws_receive.FastReceiveMixin, data: bytes) -> bool:
        fed.append(bytes(data))
        return real_feed(self, data)

    monkeypatch.setattr(ws_receive.FastReceiveMixin, "_feed", feed)
    p = _Peer(server.url)
    try:
        for _ in range(5):
            assert p.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]
    finally:
        p.ws.close(timeout=1)
    # websockets' parser saw the handshake request and the close frame, no request frame.
    assert fed and fed[0].startswith(b"GET / HTTP/1.1")
    assert not any(b"fs/getMetadata" in data or b"initialize" in data for data in fed[1:])


def test_frames_split_across_many_writes_arrive_whole_and_in_order(
    peer: _Peer, tmp_path: Any
) -> None:
    target = tmp_path / "f.bin"
    payload = os.urandom(300_000)
    data = base64.b64encode(payload).decode()
    stream = frame(
        request(100, "fs/writeFile", {"path": target.as_uri(), "dataBase64": data}), _TEXT
    )
    stream += b"".join(
        frame(request(101 + i, "fs/getMetadata", {"path": target.as_uri()}), _BINARY)
        for i in range(20)
    )
    # Odd-sized pieces with pauses: headers and payloads cut at every kind of boundary.
    peer.raw(stream, pieces=97, pause=0.001)
    replies = peer.replies(21)
    assert replies[0]["id"] == 100  # reads wait for the write before them, then run in any order
    assert sorted(r["id"] for r in replies) == list(range(100, 121))
    assert replies[0]["result"] == {}
    assert all(r["result"]["isFile"] for r in replies[1:])
    assert target.read_bytes() == payload


def test_a_header_sent_one_byte_at_a_time_is_read(peer: _Peer) -> None:
    message = frame(request(7, "fs/getMetadata", {"path": "file:///"}), _TEXT)
    peer.raw(message, pieces=len(message), pause=0.0005)
    assert peer.replies(1)[0]["id"] == 7


def test_a_ping_between_requests_gets_its_pong_and_requests_go_on(peer: _Peer) -> None:
    stream = (
        frame(request(1, "fs/getMetadata", {"path": "file:///"}))
        + frame(b"are you there", _PING)
        + frame(request(2, "fs/getMetadata", {"path": "file:///"}))
    )
    peer.raw(stream)
    seen: list[Any] = []
    while len(seen) < 3:
        opcode, data = peer.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG:
            seen.append(("pong", data))
        elif opcode == websocket.ABNF.OPCODE_TEXT:
            seen.append(json.loads(data)["id"])
    assert ("pong", b"are you there") in seen
    assert sorted(x for x in seen if isinstance(x, int)) == [1, 2]
    assert peer.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]


def test_a_fragmented_message_is_reassembled_and_later_messages_still_work(
    peer: _Peer,
) -> None:
    assert peer.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]
    body = request(50, "fs/getMetadata", {"path": "file:///"})
    stream = (
        frame(body[:10], _TEXT, fin=False)
        + frame(b"pong payload", _PONG)
        + frame(body[10:20], _CONT, fin=False)
        + frame(body[20:], _CONT)
    )
    peer.raw(stream)
    assert peer.replies(1)[0]["id"] == 50
    for _ in range(3):
        assert peer.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]


def test_invalid_utf8_in_a_text_frame_closes_with_1007(peer: _Peer) -> None:
    peer.raw(frame(b'{"id":3,"method":"fs/getMetadata","params":{"path":"/\xff"}}', _TEXT))
    assert peer.close_frame()[0] == 1007


def test_invalid_utf8_in_a_binary_frame_is_a_parse_error_answer(peer: _Peer) -> None:
    peer.raw(frame(b'{"id":3,"method":"fs/getMetadata","params":{"path":"/\xff"}}', _BINARY))
    reply = peer.replies(1)[0]
    assert reply["id"] == -1 and reply["error"]["code"] == -32600
    assert peer.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]


def test_an_unmasked_frame_closes_with_1002(peer: _Peer) -> None:
    peer.raw(frame(request(4, "fs/getMetadata", {"path": "file:///"}), masked=False))
    assert peer.close_frame()[0] == 1002


def test_a_frame_with_a_reserved_bit_closes_with_1002(peer: _Peer) -> None:
    peer.raw(frame(request(4, "fs/getMetadata", {"path": "file:///"}), rsv=0b100))
    assert peer.close_frame()[0] == 1002


def test_a_frame_over_the_frame_limit_closes_with_1009(peer: _Peer) -> None:
    # Only the header: the server refuses the length before any payload arrives.
    length = 16 * 1024 * 1024 + 1
    peer.raw(struct.pack("!BBQ", 0x81, 0x80 | 127, length) + os.urandom(4))
    assert peer.close_frame()[0] == 1009


def test_a_close_from_the_client_is_answered(peer: _Peer) -> None:
    peer.raw(frame(struct.pack("!H", 1000) + b"bye", _CLOSE))
    assert peer.close_frame() == (1000, "bye")


def test_frames_sent_with_the_handshake_request_are_answered(server: WsServer) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        f"GET / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    stream = (
        handshake
        + frame(request(1, "initialize", {"clientName": "pipelined"}))
        + frame(json.dumps({"method": "initialized", "params": {}}).encode())
        + frame(request(2, "fs/getMetadata", {"path": "file:///"}))
    )
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(stream)
        with sock.makefile("rb") as reader:
            status = reader.readline()
            assert b" 101 " in status
            while reader.readline() not in (b"\r\n", b""):
                pass
            messages = [_read_server_frame(reader) for _ in range(2)]
    assert [m["id"] for m in messages] == [1, 2]
    assert messages[1]["result"]["isDirectory"]


def _read_server_frame(reader: Any) -> dict[str, Any]:
    first, second = reader.read(2)
    assert first == 0x81, f"expected a whole text frame, got {first:#x}"
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", reader.read(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", reader.read(8))[0]
    message: dict[str, Any] = json.loads(reader.read(length))
    return message


def test_a_frame_bigger_than_the_kept_buffer_is_read_and_the_next_ones_too(
    peer: _Peer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 6 MB of JSON: the buffer grows past KEEP_SIZE for it, then goes back to its small size.
    sizes: list[tuple[int, int]] = []  # buffer size before and after each frame is read
    real_skip = ws_receive._Buffer.skip

    def skip(self: ws_receive._Buffer, count: int) -> None:
        before = len(self.buf)
        real_skip(self, count)
        sizes.append((before, len(self.buf)))

    monkeypatch.setattr(ws_receive._Buffer, "skip", skip)
    target = tmp_path / "big.bin"
    payload = os.urandom(4_500_000)
    body = request(
        60,
        "fs/writeFile",
        {"path": target.as_uri(), "dataBase64": base64.b64encode(payload).decode()},
    )
    assert len(body) > ws_receive.KEEP_SIZE
    peer.raw(frame(body) + frame(request(61, "fs/getMetadata", {"path": target.as_uri()})))
    replies = peer.replies(2)
    assert [r["id"] for r in replies] == [60, 61]
    assert replies[1]["result"]["size"] == len(payload)
    assert target.read_bytes() == payload
    assert peer.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]
    assert max(before for before, _ in sizes) > ws_receive.KEEP_SIZE
    assert sizes[-1][1] == ws_receive.READ_SIZE
