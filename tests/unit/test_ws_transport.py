"""WebSocketTransport framing against a scripted server on a real socket: what the server sends
(pings, fragments, big frames, close) and what the client writes (masked, fragmented, combined)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execsdk._transport.websocket import FRAME_LIMIT, WebSocketTransport

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Scripted = Callable[[Callable[["_Peer"], None]], WebSocketTransport]


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


class _Peer:
    """The server side of one connection: reads the client's frames, unmasked."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.conn.recv(1 << 20)
            if not data:
                raise EOFError
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bool, bytes]:
        b0, b1 = self._need(2)
        assert b1 & 0x80, "client frames must be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        key = self._need(4)
        masked = self._need(n)
        data = _unmask(key, masked)
        return b0 & 0x0F, bool(b0 & 0x80), data

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)


def _unmask(key: bytes, data: bytes) -> bytes:
    pattern = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pattern, "big")).to_bytes(len(data), "big")


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """Start a one-connection server running ``script(peer)``; yield a connected transport."""
    threads: list[threading.Thread] = []
    transports: list[WebSocketTransport] = []
    listeners: list[socket.socket] = []

    def start(script: Callable[[_Peer], None]) -> WebSocketTransport:
        srv = socket.create_server(("127.0.0.1", 0))
        listeners.append(srv)

        def serve() -> None:
            conn, _ = srv.accept()
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            try:
                script(_Peer(conn))
            except (EOFError, OSError):
                pass
            finally:
                conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        transport = WebSocketTransport.connect(f"ws://127.0.0.1:{srv.getsockname()[1]}", timeout=5)
        transports.append(transport)
        return transport

    yield start
    for tr in transports:
        tr.close(timeout=1)
    for srv in listeners:
        srv.close()
    for t in threads:
        t.join(5)


@pytest.mark.timeout(20)
def test_many_small_frames_in_one_read_come_out_one_by_one(scripted: Scripted) -> None:
    msgs = [f'{{"n":{i}}}'.encode() for i in range(500)]
    tr = scripted(lambda p: (p.send(b"".join(_server_frame(1, m) for m in msgs)), p.frame()))
    assert [tr.recv() for _ in msgs] == msgs


@pytest.mark.timeout(20)
def test_fragmented_message_is_reassembled_around_a_ping(scripted: Scripted) -> None:
    pongs: list[bytes] = []

    def script(p: _Peer) -> None:
        p.send(_server_frame(1, b'{"a":', fin=False))
        p.send(_server_frame(9, b"hello"))
        p.send(_server_frame(0, b'"b"}', fin=True))
        opcode, fin, data = p.frame()
        assert opcode == 0xA and fin
        pongs.append(data)
        p.send(_server_frame(1, b"seen"))
        p.frame()

    tr = scripted(script)
    assert tr.recv() == b'{"a":"b"}'
    assert tr.recv() == b"seen"
    assert pongs == [b"hello"]


@pytest.mark.timeout(30)
def test_big_frame_arrives_whole(scripted: Scripted) -> None:
    payload = os.urandom(5 * 2**20)
    tr = scripted(lambda p: (p.send(_server_frame(2, payload)), p.frame()))
    assert tr.recv() == payload


@pytest.mark.timeout(30)
def test_big_frames_of_any_size_order_arrive_whole_and_stay_intact(scripted: Scripted) -> None:
    # Large payloads are read into one reused buffer; each message handed out must be its own
    # copy, whatever the size before it (larger, smaller, or past the size the buffer keeps).
    sizes = [1_400_000, 300_000, 2_000_000, 700_000, 6 * 2**20, 900_000]
    payloads = [os.urandom(n) for n in sizes]
    tr = scripted(
        lambda p: (p.send(b"".join(_server_frame(2, data) for data in payloads)), p.frame())
    )
    got = [tr.recv() for _ in payloads]
    assert [len(m or b"") for m in got] == sizes
    assert got == payloads


@pytest.mark.timeout(60)
def test_big_message_goes_out_in_masked_fragments(scripted: Scripted) -> None:
    text = "x" * (FRAME_LIMIT + 1000)
    got: list[tuple[int, bool, int]] = []
    body: list[bytes] = []

    def script(p: _Peer) -> None:
        while True:
            opcode, fin, data = p.frame()
            got.append((opcode, fin, len(data)))
            body.append(data)
            if fin:
                p.send(_server_frame(1, b"done"))
                p.frame()

    tr = scripted(script)
    tr.send(text)
    assert tr.recv() == b"done"
    assert got == [(1, False, FRAME_LIMIT), (0, True, 1000)]
    assert b"".join(body) == text.encode()


@pytest.mark.timeout(20)
def test_str_and_utf8_bytes_go_out_as_the_same_text_frame(scripted: Scripted) -> None:
    got: list[tuple[int, bool, bytes]] = []

    def script(p: _Peer) -> None:
        got.append(p.frame())
        got.append(p.frame())
        p.send(_server_frame(1, b"done"))
        p.frame()

    tr = scripted(script)
    tr.send('{"name":"\u00fc"}')
    tr.send('{"name":"\u00fc"}'.encode())
    assert tr.recv() == b"done"
    assert got == [(1, True, '{"name":"\u00fc"}'.encode())] * 2


@pytest.mark.timeout(20)
def test_close_frame_from_the_server_is_echoed_and_ends_recv(scripted: Scripted) -> None:
    echoed: list[tuple[int, bytes]] = []
    seen = threading.Event()

    def script(p: _Peer) -> None:
        p.send(_server_frame(8, struct.pack("!H", 1001)))
        opcode, _, data = p.frame()
        echoed.append((opcode, data))
        seen.set()

    tr = scripted(script)
    assert tr.recv() is None
    assert seen.wait(5)
    assert echoed == [(8, struct.pack("!H", 1001))]


@pytest.mark.timeout(20)
def test_connection_cut_without_close_frame_raises(scripted: Scripted) -> None:
    tr = scripted(lambda p: None)
    with pytest.raises(ConnectionError):
        tr.recv()


@pytest.mark.timeout(20)
def test_masked_server_frame_is_a_protocol_violation(scripted: Scripted) -> None:
    tr = scripted(lambda p: (p.send(bytes((0x81, 0x80 | 1)) + b"abcd" + b"x"), p.frame()))
    with pytest.raises(ConnectionAbortedError, match="masked"):
        tr.recv()


@pytest.mark.timeout(60)
def test_concurrent_senders_frames_stay_whole_and_all_arrive(scripted: Scripted) -> None:
    seen: list[bytes] = []
    total = 8 * 200

    def script(p: _Peer) -> None:
        while len(seen) < total:
            opcode, fin, data = p.frame()
            assert opcode == 1 and fin
            seen.append(data)
        p.send(_server_frame(1, b"ok"))
        p.frame()

    tr = scripted(script)

    def sender(k: int) -> None:
        for i in range(200):
            tr.send(f"{k}:{i}:" + "y" * (i * 37 % 5000))

    pool = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert tr.recv() == b"ok"
    assert sorted(seen) == sorted(
        f"{k}:{i}:{'y' * (i * 37 % 5000)}".encode() for k in range(8) for i in range(200)
    )


@pytest.mark.timeout(20)
def test_buffered_false_for_partial_header_true_for_whole_frame(
    scripted: Scripted,
) -> None:
    gate = threading.Event()
    frame = _server_frame(1, b"z" * 300)  # 126-style length: 4 header bytes

    def script(p: _Peer) -> None:
        p.send(_server_frame(1, b"first") + frame[:3])
        gate.wait(5)
        p.send(frame[3:] + frame)
        p.frame()

    tr = scripted(script)
    assert tr.recv() == b"first"
    assert tr.buffered() is False  # 3 of 4 header bytes are buffered
    gate.set()
    assert tr.recv() == b"z" * 300
    assert tr.buffered() is True
    assert tr.recv() == b"z" * 300
    assert tr.buffered() is False


@pytest.mark.parametrize("size", [0, 1, 5, 4095, 4096, 16 * 1024 + 3, 1_400_001])
def test_c_masking_and_python_masking_agree(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C path (websockets' apply_mask) and the big-integer fallback give the same bytes,
    for a bytes payload and for a memoryview slice of one (fragments are slices)."""
    import execsdk._transport.websocket as wsmod

    data = os.urandom(size + 3)
    key = os.urandom(4)
    expected = _unmask(key, data[3:])  # XOR is its own inverse
    with_c = b"".join(wsmod._masked_parts(key, memoryview(data)[3:]))
    assert wsmod._c_mask is not None or size < wsmod._C_MASK_FROM  # the fast extra is installed
    monkeypatch.setattr(wsmod, "_c_mask", None)
    monkeypatch.setattr(wsmod, "_c_mask_tried", True)
    without_c = b"".join(wsmod._masked_parts(key, memoryview(data)[3:]))
    assert with_c == expected
    assert without_c == expected


class _TricklingSocket:
    """Hands out a fixed byte string in pieces of chosen sizes, as TCP may; then EOF."""

    family = socket.AF_UNIX

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._at = 0
        self._sizes = sizes or [1]
        self._turn = 0

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        want = self._sizes[self._turn % len(self._sizes)]
        self._turn += 1
        n = min(want, nbytes or len(buffer), len(self._data) - self._at)
        buffer[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n


def _transport_over(data: bytes, sizes: list[int]) -> WebSocketTransport:
    import types

    fake = types.SimpleNamespace(sock=_TricklingSocket(data, sizes))
    transport = WebSocketTransport(fake, "ws://trickle")  # type: ignore[arg-type]
    transport._closing = True  # end of data reads as a clean end, not a reset
    return transport


@given(
    payloads=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.integers(min_value=0, max_value=700_000).map(lambda n: b"x" * n),
        ),
        max_size=12,
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=600_000), min_size=1, max_size=8),
)
@settings(max_examples=60, deadline=None)
def test_frames_split_anywhere_come_out_whole_and_in_order(
    payloads: list[bytes], sizes: list[int]
) -> None:
    """Whatever the read sizes (1 byte to more than a buffer), every message comes out once,
    whole and in order: small frames cut from the buffer, big ones read straight into place."""
    wire = b"".join(_server_frame(2, p) for p in payloads)
    transport = _transport_over(wire, sizes)
    got = []
    while (msg := transport.recv()) is not None:
        got.append(bytes(msg))
    assert got == payloads
