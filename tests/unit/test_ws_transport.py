"""WebSocketTransport framing against a scripted server on a real socket: what the server sends
(pings, fragments, big frames, close) and what the client writes (masked, fragmented, combined),
and the send timeout against a server that stops reading (with the stdio transport's too)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execsdk._rpc.endpoint import RpcClient
from execsdk._transport.base import SendTimeout
from execsdk._transport.child import StdioTransport
from execsdk._transport.websocket import FRAME_LIMIT, WebSocketTransport
from execsdk._transport.writequeue import BlockingWriteQueue, WriteQueue
from execsdk.errors import ConnectionLost, RequestTimeout
from tests.waiting import blocked_in, wait_until

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


def test_a_c_masking_that_masks_wrongly_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets does not document its C masking: a version whose function answers wrongly (or
    raises) costs speed, never a corrupt frame."""
    import websockets.speedups

    import execsdk._transport.websocket as wsmod

    assert wsmod._checked_c_mask() is websockets.speedups.apply_mask
    monkeypatch.setattr(websockets.speedups, "apply_mask", lambda data, key: bytes(data))
    with caplog.at_level(logging.WARNING, logger=wsmod.__name__):
        assert wsmod._checked_c_mask() is None
    assert "does not mask as expected" in caplog.text

    def broken(data: object, key: object) -> bytes:
        raise TypeError("a new signature")

    monkeypatch.setattr(websockets.speedups, "apply_mask", broken)
    assert wsmod._checked_c_mask() is None


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


# --------------------------------------------------------------------------- send timeouts
#
# The server below completes the handshake and then stops reading until the test lets it:
# the kernel buffers fill (a few MiB on loopback), and a send must still keep its deadline.

BIG = 32 * 2**20


def _read_message(p: _Peer) -> tuple[int, bytes]:
    """One whole client message (fragments joined) as (opcode, payload)."""
    opcode, fin, data = p.frame()
    parts = [data]
    while not fin:
        _, fin, data = p.frame()
        parts.append(data)
    return opcode, b"".join(parts)


def _answering(resume: threading.Event, seen: list[tuple[str, int]]) -> Callable[[_Peer], None]:
    """A script that stops reading until ``resume``, then answers every request by id."""

    def script(p: _Peer) -> None:
        resume.wait(30)
        while True:
            opcode, data = _read_message(p)
            if opcode == 8:
                return
            msg = json.loads(data)
            seen.append((msg["method"], len(data)))
            answer = {"id": msg["id"], "result": {"size": len(data)}}
            p.send(_server_frame(1, json.dumps(answer).encode()))

    return script


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("execsdk-wsflush-")]


@pytest.mark.timeout(60)
def test_small_call_times_out_on_time_while_a_big_send_is_stuck(scripted: Scripted) -> None:
    resume = threading.Event()
    seen: list[tuple[str, int]] = []
    tr = scripted(_answering(resume, seen))
    rpc = RpcClient(tr, timeout=30)
    outcome: list[object] = []

    def big() -> None:
        try:
            outcome.append(rpc.call("fs/writeFile", {"dataBase64": "x" * BIG}, timeout=None))
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=big)
    writer.start()
    try:
        # The big request fills the socket buffers: its send waits for room.
        wait_until(lambda: blocked_in(writer, "wait_writable"), 10, "the big send never stalled")
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            rpc.call("environment/status", timeout=0.5)
        took = time.monotonic() - start
        assert 0.45 <= took < 1.2, took
        # Nothing was left half written by a caller that gave up: the link stays usable.
        assert rpc.is_open and writer.is_alive() and outcome == []
        resume.set()
        writer.join(30)
        assert outcome and isinstance(outcome[0], dict), outcome
        assert outcome[0]["size"] > BIG  # the big request arrived whole
        assert rpc.call("environment/status", timeout=5)["size"] < 200
        # The timed-out request still went out (after the big one); its late answer was dropped.
        assert [method for method, _ in seen] == [
            "fs/writeFile",
            "environment/status",
            "environment/status",
        ]
    finally:
        resume.set()
        rpc.close()
        writer.join(5)


@pytest.mark.timeout(60)
def test_call_half_sent_at_its_deadline_times_out_and_gives_the_link_up(
    scripted: Scripted,
) -> None:
    resume = threading.Event()
    tr = scripted(_answering(resume, []))
    rpc = RpcClient(tr, timeout=30)
    try:
        start = time.monotonic()
        with pytest.raises(RequestTimeout, match="stopped reading"):
            rpc.call("fs/writeFile", {"dataBase64": "x" * BIG}, timeout=0.5)
        assert time.monotonic() - start < 1.5
        assert not rpc.is_open
        with pytest.raises(ConnectionLost):
            rpc.call("environment/status", timeout=1)
    finally:
        resume.set()
        start = time.monotonic()
        rpc.close(timeout=2)
        assert time.monotonic() - start < 2.5
    for t in _flushers():
        t.join(5)
        assert not t.is_alive()


@pytest.mark.timeout(60)
def test_send_past_its_deadline_is_finished_in_the_background_and_the_stream_stays_valid(
    scripted: Scripted,
) -> None:
    resume = threading.Event()
    got: list[tuple[int, bytes]] = []

    def script(p: _Peer) -> None:
        resume.wait(30)
        got.append(_read_message(p))
        got.append(_read_message(p))
        p.send(_server_frame(1, b"done"))
        p.frame()

    tr = scripted(script)
    big = b"y" * BIG
    start = time.monotonic()
    with pytest.raises(SendTimeout) as info:
        tr.send(big, timeout=0.5)
    assert 0.45 <= time.monotonic() - start < 1.2
    assert info.value.started  # part of it is on the wire: the rest is not dropped
    flushers = _flushers()
    assert flushers, "the rest of the message is left to a flusher thread"
    # Queued behind the half-written message: returns at once, written by the flusher.
    start = time.monotonic()
    tr.send(b"after", timeout=0.5)
    assert time.monotonic() - start < 0.2
    resume.set()
    assert tr.recv() == b"done"
    assert got == [(1, big), (1, b"after")]
    for t in flushers:
        t.join(5)
        assert not t.is_alive(), "the flusher ends once the queue is empty"


@pytest.mark.timeout(60)
def test_message_not_started_at_its_deadline_is_withdrawn() -> None:
    # A Unix socket pair: a small message there goes in whole or not at all (on TCP the last
    # one may go in partly), so the message that meets a full socket never started.
    ours, theirs = socket.socketpair()
    tr = WebSocketTransport(
        types.SimpleNamespace(sock=ours, shutdown=ours.close),  # type: ignore[arg-type]
        "ws://pair",
    )
    peer = _Peer(theirs)
    try:
        sent = 0
        start = time.monotonic()
        with pytest.raises(SendTimeout) as info:
            while time.monotonic() - start < 20:
                tr.send(f"{sent:032d}", timeout=0.05)
                sent += 1
        assert not info.value.started
        assert "withdrawn" in str(info.value)
        assert sent > 10
        assert _flushers() == []  # nothing was left half written, nothing left to finish
        got: list[bytes] = []
        reader = threading.Thread(
            target=lambda: got.extend(_read_message(peer)[1] for _ in range(sent + 1))
        )
        reader.start()
        tr.send(b"after", timeout=10)
        reader.join(10)
        assert got == [f"{i:032d}".encode() for i in range(sent)] + [b"after"]
    finally:
        tr.close(timeout=0)
        theirs.close()


@pytest.mark.timeout(30)
def test_ping_is_answered_without_blocking_the_reader_while_the_socket_is_full(
    scripted: Scripted,
) -> None:
    resume = threading.Event()
    got: list[tuple[int, bytes]] = []

    def script(p: _Peer) -> None:
        p.send(_server_frame(9, b"are you there"))
        resume.wait(30)
        got.append(_read_message(p))
        got.append(_read_message(p))  # the pong, after the rest of the big message
        p.send(_server_frame(1, b"done"))
        p.frame()

    tr = scripted(script)
    with pytest.raises(SendTimeout):
        tr.send(b"z" * BIG, timeout=0.3)
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.append(tr.recv()))
    reader.start()
    # The reader takes the ping, queues its pong behind the big message and waits for more.
    wait_until(lambda: blocked_in(reader, "_fill"), 10, "the reader never got to wait again")
    resume.set()
    reader.join(10)
    assert received == [b"done"]
    assert got == [(1, b"z" * BIG), (0xA, b"are you there")]


# --------------------------------------------------------------------------- stdio transport
# The same send contract on the child-process transport (a child that never reads its stdin),
# and its line buffer, which must tell whether a whole line is waiting without blocking.


@pytest.mark.timeout(30)
def test_stdio_send_to_a_child_that_stops_reading_keeps_its_deadline() -> None:
    tr = StdioTransport([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = time.monotonic()
        with pytest.raises(SendTimeout) as info:
            tr.send(b"x" * 2**20, timeout=0.5)  # far more than a pipe holds
        assert 0.45 <= time.monotonic() - start < 1.2
        assert info.value.started
        start = time.monotonic()
        tr.send(b"{}", timeout=0.5)  # queued behind the rest, which the flusher owns
        assert time.monotonic() - start < 0.2
        flushers = [t for t in threading.enumerate() if t.name.startswith("execsdk-stdinflush-")]
        assert flushers
    finally:
        start = time.monotonic()
        tr.close(timeout=1)
        assert time.monotonic() - start < 3
    for t in flushers:
        t.join(5)
        assert not t.is_alive()


@pytest.mark.timeout(30)
def test_stdio_lines_come_out_whole_and_buffered_tells_without_blocking() -> None:
    code = (
        "import sys, time; sys.stdout.write('a\\nbb\\npart'); sys.stdout.flush();"
        "time.sleep(0.5); sys.stdout.write('ial\\n' + 'z' * 300000 + '\\nend'); sys.stdout.flush()"
    )
    tr = StdioTransport([sys.executable, "-c", code])
    try:
        assert tr.recv() == b"a\n"
        assert tr.buffered() is True
        assert tr.recv() == b"bb\n"
        assert tr.buffered() is False  # "part" has no newline yet; asking did not block
        assert tr.recv() == b"partial\n"
        assert tr.recv() == b"z" * 300000 + b"\n"
        assert tr.recv() == b"end"  # the last line without a newline, at the end of stream
        assert tr.recv() is None
    finally:
        tr.close(timeout=1)


# --------------------------------------------------------------------------- the write queue
# The send side both transports share, over scripted streams.


@pytest.mark.timeout(60)
def test_write_queue_keeps_messages_whole_and_in_order_under_partial_writes() -> None:
    import random

    written = bytearray()
    lock = threading.Lock()
    rng = random.Random(7)

    def write_some(views: list[memoryview]) -> int:
        with lock:  # the stream takes any amount, sometimes nothing (it is "full")
            room = rng.choice([0, 1, 3, 50, 4096, 1 << 20])
            n = 0
            for view in views:
                take = min(len(view), room - n)
                written.extend(view[:take])
                n += take
                if n == room:
                    break
            return n

    queue = WriteQueue(
        "scripted", "execsdk-wsflush", write_some=write_some, wait_writable=lambda t: True
    )

    def sender(k: int) -> None:
        for i in range(300):
            body = f"{k}:{i}:".encode() + b"y" * (i * 37 % 3000)
            queue.put(len(body).to_bytes(4, "big") + body, None)

    pool = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    wait_until(lambda: not _flushers(), 10, "a flusher thread outlived its queue")
    messages: list[bytes] = []
    at = 0
    while at < len(written):
        size = int.from_bytes(written[at : at + 4], "big")
        messages.append(bytes(written[at + 4 : at + 4 + size]))
        at += 4 + size
    assert at == len(written)
    for k in range(8):
        mine = [m for m in messages if m.startswith(f"{k}:".encode())]
        assert mine == [f"{k}:{i}:".encode() + b"y" * (i * 37 % 3000) for i in range(300)]


@pytest.mark.timeout(30)
def test_write_queue_blocking_mode_withdraws_unstarted_and_finishes_started() -> None:
    # The TLS path: only the flusher thread writes, with blocking writes.
    release = threading.Event()
    written: list[bytes] = []

    def write_all(data: bytes) -> None:
        release.wait(10)  # a peer that stopped reading
        written.append(bytes(data))

    queue = BlockingWriteQueue("scripted", "execsdk-wsflush", write_all=write_all)
    start = time.monotonic()
    with pytest.raises(SendTimeout) as first:
        queue.put(b"A" * 1000, 0.2)
    assert first.value.started  # being written: it will go out whole
    with pytest.raises(SendTimeout) as second:
        queue.put(b"B" * 10, 0.2)
    assert not second.value.started  # never started: withdrawn
    assert time.monotonic() - start < 1.0
    later = threading.Thread(target=queue.put, args=(b"C" * 10, None))
    later.start()
    release.set()
    later.join(5)
    assert not later.is_alive()
    assert b"".join(written) == b"A" * 1000 + b"C" * 10


@pytest.mark.timeout(30)
def test_write_queue_failure_is_raised_to_the_writer_and_to_later_senders() -> None:
    def write_some(views: list[memoryview]) -> int:
        raise ConnectionResetError("peer reset")

    queue = WriteQueue(
        "scripted", "execsdk-wsflush", write_some=write_some, wait_writable=lambda t: True
    )
    with pytest.raises(BrokenPipeError, match="peer reset"):
        queue.put(b"x", 1.0)
    with pytest.raises(BrokenPipeError, match="closed"):
        queue.put(b"y", 1.0)
