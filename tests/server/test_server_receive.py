"""``execsdk serve`` reads client frames itself and leaves the rest to websockets' Sans-I/O
protocol, with websockets' own checks and close codes.

:mod:`execsdk.server.wsconn` reads frames into one buffer: small plain data frames are unmasked
there, large ones and control frames are handed whole to the protocol object, and anything
unusual hands the stream over to the protocol for good. These tests check each path on a real
server over a real socket, with frames built byte by byte: split across many writes, pings
between requests, fragments, invalid UTF-8, unmasked and oversized frames, a close, frames sent
in the same write as the handshake request. They also check the opening handshake (refusals,
the open timeout), the keepalive, the close deadline and the server's threads.
"""

from __future__ import annotations

import base64
import functools
import http.client
import itertools
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from execsdk.server import ws as server_ws
from execsdk.server import wsconn
from execsdk.server.outbox import Outbox
from execsdk.server.ws import WsServer
from tests.waiting import eventually, wait_until

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
    pattern = (key * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(pattern, "big")).to_bytes(length, "big")
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

    def close(self) -> None:
        self.ws.close(timeout=1)
        self.ws.shutdown()  # close() leaves the socket open once a close frame was answered

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
        p.close()


# -- the receive paths ---------------------------------------------------------------------------


def test_small_frames_are_unmasked_here_and_large_ones_reach_the_protocol_whole(
    server: WsServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[bytes] = []
    real_feed = wsconn.WsConnection._feed

    def feed(self: wsconn.WsConnection, data: bytes | bytearray) -> None:
        fed.append(bytes(data))
        real_feed(self, data)

    monkeypatch.setattr(wsconn.WsConnection, "_feed", feed)
    p = _Peer(server.url)
    try:
        for _ in range(5):
            assert p.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]
        big = request(
            9, "fs/writeFile", {"path": (tmp_path / "f").as_uri(), "dataBase64": "QUJD" * 50_000}
        )
        sent = frame(big)
        p.raw(sent, pieces=7, pause=0.001)
        assert p.replies(1)[0] == {"id": 9, "result": {}}
    finally:
        p.close()
    assert (tmp_path / "f").read_bytes() == b"ABC" * 50_000
    # No small request went to the protocol; the large one went as exactly its frame, once.
    assert not any(b"initialize" in data or b"getMetadata" in data for data in fed)
    assert [data for data in fed if len(data) > 125] == [sent]


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


def test_frames_of_every_length_class_are_read(peer: _Peer, tmp_path: Any) -> None:
    # Around the 126/65536 length encodings, the unmask-here limit and the small buffer's size.
    target = tmp_path / "sizes.bin"
    rid = 200
    for size in (0, 1, 40, 1000, 1024, 1100, 65_000, 65_536, 70_000, 200_000):
        rid += 1
        text = base64.b64encode(os.urandom(size)).decode()
        body = request(rid, "fs/writeFile", {"path": target.as_uri(), "dataBase64": text})
        peer.raw(frame(body, _TEXT if rid % 2 else _BINARY))
        assert peer.replies(1)[0] == {"id": rid, "result": {}}
        assert target.read_bytes() == base64.b64decode(text)


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


def test_non_ascii_text_is_delivered_as_text(peer: _Peer, tmp_path: Any) -> None:
    target = tmp_path / "é ü.txt"
    params = {"path": f"file://{target}", "dataBase64": "aMOp"}  # a raw URI: G2 takes it
    body = json.dumps({"id": 8, "method": "fs/writeFile", "params": params}, ensure_ascii=False)
    assert not body.isascii()
    peer.raw(frame(body.encode()))
    assert peer.replies(1)[0] == {"id": 8, "result": {}}
    assert target.read_bytes() == "hé".encode()


def test_invalid_utf8_in_a_text_frame_closes_with_1007(peer: _Peer) -> None:
    body = b'{"id":3,"method":"fs/getMetadata","params":{"path":"/\xff"}}'
    peer.raw(frame(body, _TEXT))
    # websockets' words, as its own connections give them.
    assert peer.close_frame() == (1007, f"invalid start byte at position {body.index(255)}")


def test_invalid_utf8_in_a_large_text_frame_closes_with_1007(peer: _Peer) -> None:
    body = b'{"id":3,"method":"fs/writeFile","params":{"path":"/x","dataBase64":"' + b"A" * 5000
    peer.raw(frame(body + b'\xc3"}}', _TEXT))
    code, reason = peer.close_frame()
    assert code == 1007 and reason.startswith("invalid continuation byte")


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


def test_an_unknown_opcode_closes_with_1002(peer: _Peer) -> None:
    peer.raw(frame(b"what", 0x3))
    assert peer.close_frame()[0] == 1002


def test_a_control_frame_over_125_bytes_closes_with_1002(peer: _Peer) -> None:
    peer.raw(frame(b"p" * 126, _PING))
    assert peer.close_frame()[0] == 1002


def test_a_frame_over_the_frame_limit_closes_with_1009(peer: _Peer) -> None:
    # Only the header: the server refuses the length before any payload arrives.
    length = 16 * 1024 * 1024 + 1
    peer.raw(struct.pack("!BBQ", 0x81, 0x80 | 127, length) + os.urandom(4))
    assert peer.close_frame()[0] == 1009


def test_a_fragmented_message_over_the_message_limit_closes_with_1009(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Smaller limits than 64 MiB / 16 MiB, the same rule: four whole fragments fill the
    # message; the next fragment's header goes past it.
    monkeypatch.setattr(server_ws, "MAX_MESSAGE_SIZE", 4 * 100_000)
    monkeypatch.setattr(server_ws, "MAX_FRAME_SIZE", 100_000)
    srv = WsServer("127.0.0.1", 0)
    srv.start()
    try:
        p = _Peer(srv.url)
        p.raw(frame(b"x" * 100_001))  # one frame over the frame limit
        assert p.close_frame()[0] == 1009
        p.close()
        p = _Peer(srv.url)
        piece = b"a" * 100_000
        p.raw(frame(piece, _TEXT, fin=False))
        for _ in range(3):
            p.raw(frame(piece, _CONT, fin=False))
        p.raw(struct.pack("!BB", 0x80, 0x80 | 10) + os.urandom(4))
        assert p.close_frame()[0] == 1009
        p.close()
    finally:
        srv.shutdown(timeout=5)


def test_a_close_from_the_client_is_answered(peer: _Peer) -> None:
    peer.raw(frame(struct.pack("!H", 1000) + b"bye", _CLOSE))
    assert peer.close_frame() == (1000, "bye")
    # The server closes the TCP connection after the closing handshake.
    peer.ws.sock.settimeout(5)
    assert peer.ws.sock.recv(1) == b""


def test_frames_sent_with_the_handshake_request_are_answered(server: WsServer) -> None:
    stream = (
        _handshake_request(server)
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


def _handshake_request(server: WsServer, **extra: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Host": f"{server.host}:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **extra,
    }
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"GET / HTTP/1.1\r\n{lines}\r\n".encode()


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
    # Large frames are read into a buffer of their own size, kept for the next large frame
    # unless it grew past KEEP_SIZE (here 6 MB of JSON).
    handed: list[tuple[int, int]] = []  # frame size, size of the kept buffer afterwards
    real_take = wsconn._Buffer.take_exact

    def take_exact(self: wsconn._Buffer) -> bytearray:
        data = real_take(self)
        handed.append((len(data), len(self._big)))
        assert not self.is_exact and len(self.buf) == wsconn.READ_SIZE
        return data

    monkeypatch.setattr(wsconn._Buffer, "take_exact", take_exact)
    target = tmp_path / "big.bin"
    payloads = [os.urandom(4_500_000), os.urandom(1_000_000), os.urandom(1_000_001)]
    frames = [
        frame(
            request(
                60 + i,
                "fs/writeFile",
                {"path": target.as_uri(), "dataBase64": base64.b64encode(data).decode()},
            )
        )
        for i, data in enumerate(payloads)
    ]
    for i, data in enumerate(payloads):
        peer.raw(frames[i] + frame(request(70 + i, "fs/getMetadata", {"path": target.as_uri()})))
        replies = peer.replies(2)
        assert [r["id"] for r in replies] == [60 + i, 70 + i]
        assert replies[1]["result"]["size"] == len(data)
        assert target.read_bytes() == data
    assert peer.call("fs/getMetadata", {"path": "file:///"})["result"]["isDirectory"]
    sizes = [len(f) for f in frames]
    assert [size for size, _ in handed] == sizes
    assert sizes[0] > wsconn.KEEP_SIZE
    assert [kept for _, kept in handed] == [0, sizes[1], sizes[2]]


# -- the opening handshake -----------------------------------------------------------------------


def _http(server: WsServer, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


_UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def _answer(server: WsServer, data: bytes) -> bytes:
    """Everything the server writes back to ``data`` until it closes the connection."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_http_answers_without_upgrade(server: WsServer) -> None:
    ready = _http(server, "/readyz", {})
    assert (ready.status, ready.getheader("Content-Length")) == (200, "0")
    assert _http(server, "/elsewhere", _UPGRADE).status == 404
    origin = _http(server, "/", {**_UPGRADE, "Origin": "http://127.0.0.1"})
    assert (origin.status, origin.getheader("Content-Length")) == (403, "0")
    plain = _answer(server, f"GET / HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
    head, _, body = plain.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body == b"Connection header did not include 'upgrade'"
    for answer in (ready, origin):
        assert answer.getheader("Server") is None


def test_the_upgrade_answer_has_no_server_header(server: WsServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(_handshake_request(server))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nserver:" not in head.lower()
    assert b"Sec-WebSocket-Accept: " in head


def test_authentication_refusal_is_401_with_the_reason_as_text() -> None:
    srv = WsServer("127.0.0.1", 0, token="right-token")
    srv.start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = _http(srv, "/", {**_UPGRADE, **headers})
            assert answer.status == 401
            assert answer.getheader("Content-Type") == "text/plain; charset=utf-8"
        ok = websocket.create_connection(
            srv.url, suppress_origin=True, header=["Authorization: Bearer right-token"], timeout=10
        )
        ok.close()
    finally:
        srv.shutdown(timeout=5)


def test_a_request_that_is_not_http_gets_the_connection_closed(server: WsServer) -> None:
    assert _answer(server, b"\x16\x03\x01 not http at all\r\n\r\n") == b""
    # The server still serves others.
    assert _http(server, "/readyz", {}).status == 200


def test_a_client_that_sends_no_request_is_dropped_after_the_open_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_ws, "OPEN_TIMEOUT", 0.5)
    srv = WsServer("127.0.0.1", 0)
    srv.start()
    try:
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\n")  # never finished
            assert sock.recv(100) == b""
            assert 0.3 < time.monotonic() - start < 5
    finally:
        srv.shutdown(timeout=5)


# -- keepalive, closing, threads ----------------------------------------------------------------


def _raw_open(server: WsServer) -> socket.socket:
    """A raw socket past the handshake (no client library answers anything for the test)."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(_handshake_request(server))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head
    return sock


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(length)


def test_keepalive_pings_are_answered_and_a_silent_client_is_closed_with_1011(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_ws, "PING_INTERVAL", 0.3)
    monkeypatch.setattr(server_ws, "PING_TIMEOUT", 0.6)
    srv = WsServer("127.0.0.1", 0)
    srv.start()
    try:
        # websocket-client answers pings while it reads: the connection stays up.
        ws = websocket.create_connection(srv.url, suppress_origin=True, timeout=10)
        pings = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                opcode, _ = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                break
            if opcode == websocket.ABNF.OPCODE_PING:
                pings += 1
            assert opcode != websocket.ABNF.OPCODE_CLOSE
        assert pings >= 3
        ws.settimeout(10)
        ws.send(request(1, "initialize", {"clientName": "keepalive"}).decode())
        assert "sessionId" in json.loads(ws.recv())["result"]
        ws.close()
        # A raw client that never answers gets one ping, then close 1011 after PING_TIMEOUT.
        with _raw_open(srv) as sock:
            start = time.monotonic()
            assert _read_frame(sock)[0] == _PING
            opcode, data = _read_frame(sock)
            waited = time.monotonic() - start
            assert opcode == _CLOSE
            assert struct.unpack("!H", data[:2])[0] == 1011
            assert data[2:] == b"keepalive ping timeout"
            assert 0.7 < waited < 5
    finally:
        srv.shutdown(timeout=5)


def test_a_peer_that_never_finishes_closing_is_dropped_after_the_close_timeout(
    server: WsServer,
) -> None:
    with _raw_open(server) as sock:
        # A JSON-RPC response from the client ends the connection: the server closes (1000).
        sock.sendall(frame(b'{"id":1,"result":{}}'))
        opcode, data = _read_frame(sock)
        start = time.monotonic()
        assert (opcode, struct.unpack("!H", data[:2])[0]) == (_CLOSE, 1000)
        # The client never echoes the close: the server drops the TCP connection anyway.
        with pytest.raises((EOFError, ConnectionResetError)):
            _read_frame(sock)
        assert time.monotonic() - start < 5


def test_a_client_that_does_not_read_does_not_stop_its_requests(
    server: WsServer, tmp_path: Any
) -> None:
    with _raw_open(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.sendall(frame(request(1, "initialize", {"clientName": "slow"})))
        session_id = json.loads(_read_frame(sock)[1])["result"]["sessionId"]
        sock.sendall(frame(json.dumps({"method": "initialized", "params": {}}).encode()))
        start = {
            "processId": "loud",
            "argv": ["head", "-c", str(64 * 1024 * 1024), "/dev/zero"],
            "cwd": tmp_path.as_uri(),
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "tty": False,
        }
        sock.sendall(frame(request(2, "process/start", start)))
        # Megabytes of output pile up until the server pauses the process: it cannot write more.
        session = server.registry.get(session_id)
        assert session is not None
        wait_until(lambda: session.output_paused, 20, "the server never paused the process")
        for i in range(5):
            target = tmp_path / f"written-{i}"
            params = {"path": target.as_uri(), "dataBase64": "aGk="}
            sock.sendall(frame(request(10 + i, "fs/writeFile", params)))
            assert eventually(target.exists), f"request {i} not served while the client is slow"


def test_shutdown_closes_open_connections_with_1001_and_ends_every_thread() -> None:
    before = set(threading.enumerate())
    srv = WsServer("127.0.0.1", 0)
    srv.start()
    p = _Peer(srv.url)
    try:
        with _raw_open(srv) as idle:  # a second connection, open but never initialized
            started = set(threading.enumerate()) - before
            assert {t.name for t in started} >= {"execsdk-serve-accept"}
            assert any(t.name.startswith("execsdk-serve-conn-") for t in started)
            names = sorted(t.name for t in started)
            assert all(name.startswith("execsdk-") for name in names), names
            srv.shutdown(timeout=5)
            assert p.close_frame()[0] == 1001
            opcode, data = _read_frame(idle)
            assert (opcode, struct.unpack("!H", data[:2])[0]) == (_CLOSE, 1001)
    finally:
        p.close()
        srv.shutdown()  # idempotent
    assert eventually(lambda: not any(t.is_alive() for t in started)), [
        t.name for t in started if t.is_alive()
    ]
    with pytest.raises(OSError):
        socket.create_connection((srv.host, srv.port), timeout=2)


def test_the_connection_thread_is_named_and_refuses_shutdown(server: WsServer) -> None:
    names: list[str] = []
    errors: list[str] = []

    def spy(request_obj: Any) -> None:
        names.append(threading.current_thread().name)
        try:
            server.shutdown()
        except RuntimeError as exc:
            errors.append(str(exc))

    real = server._process_request

    def process_request(request_obj: Any) -> Any:
        spy(request_obj)
        return real(request_obj)

    server._process_request = process_request  # type: ignore[method-assign]
    assert _http(server, "/readyz", {}).status == 200
    assert len(names) == 1 and names[0].startswith("execsdk-serve-conn-")
    assert errors and "cannot run on a connection handler" in errors[0]


def test_a_client_that_never_reads_is_closed_with_1008(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(server_ws, "Outbox", functools.partial(Outbox, limit=2 * 1024 * 1024))
    srv = WsServer("127.0.0.1", 0)
    srv.start()
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(700_000))
        with _raw_open(srv) as sock:
            sock.sendall(frame(request(1, "initialize", {"clientName": "never-reads"})))
            sock.sendall(frame(json.dumps({"method": "initialized", "params": {}}).encode()))
            for i in range(60):  # 56 MB of answers: far more than the socket buffers hold
                sock.sendall(frame(request(10 + i, "fs/readFile", {"path": big.as_uri()})))
            while True:
                opcode, data = _read_frame(sock)
                if opcode == _CLOSE:
                    break
            assert struct.unpack("!H", data[:2])[0] == 1008
            assert data[2:] == b"client does not read its messages"
    finally:
        srv.shutdown(timeout=5)
