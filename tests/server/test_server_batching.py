"""``execsdk serve`` writes a batch of WebSocket messages with one socket write.

:meth:`execsdk.server.wsconn.WsConnection.send_texts` frames text messages itself (a server's
frames are plain RFC 6455, and no extension is negotiated) and writes the batch, behind any
frame the protocol queued, with one system call. These tests check, on a real TCP connection
to websocket-client: the frame bytes equal those websockets' Sans-I/O protocol makes, a batch
arrives as separate messages in order (next to pongs and a close handshake), each batch is one
write, a writer waiting for a client that does not read neither blocks the connection's reading
nor outlives a close, and a gone peer gives ``SendFailed`` with nothing logged as an error.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from websockets.protocol import State
from websockets.server import ServerProtocol

from execsdk.server import wsconn
from execsdk.server.wsconn import SendFailed, WsConnection, send_gathered, text_frame_header
from tests.waiting import blocked_in, eventually, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_frame_header_matches_websockets_own_framing(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    protocol = ServerProtocol(state=State.OPEN)
    protocol.send_text(payload)
    assert [text_frame_header(size) + payload] == protocol.data_to_send()


class _CountingSocket:
    """Wraps a socket and counts ``sendall``/``sendmsg`` calls (or fails them); the rest is
    delegated."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.fail = False
        self.writes = 0

    def sendall(self, data: Any) -> None:
        self.writes += 1
        if self.fail:
            raise BrokenPipeError(32, "Broken pipe")
        self._sock.sendall(data)

    def sendmsg(self, buffers: Any) -> int:
        self.writes += 1
        if self.fail:
            raise BrokenPipeError(32, "Broken pipe")
        return self._sock.sendmsg(buffers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Pair:
    """A :class:`WsConnection` on an accepted TCP socket, served by its own connection thread,
    and a websocket-client connected to it. Messages the connection delivers land in
    :attr:`messages`."""

    def __init__(self, **options: Any) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        clients: list[websocket.WebSocket] = []
        connecting = threading.Thread(
            target=lambda: clients.append(
                websocket.create_connection(
                    f"ws://127.0.0.1:{port}", suppress_origin=True, timeout=10
                )
            )
        )
        connecting.start()
        with listener:
            sock, _ = listener.accept()
        self.sock = _CountingSocket(sock)
        self.conn = WsConnection(
            self.sock,  # type: ignore[arg-type]
            name="test",
            logger=logging.getLogger("websockets.server"),
            max_message_size=1 << 20,
            max_frame_size=1 << 20,
            **options,
        )
        assert self.conn.handshake(lambda request: None, lambda: False)
        self.sock.writes = 0  # count the writes after the handshake answer
        connecting.join(10)
        self.client = clients[0]
        self.messages: queue.Queue[str | bytes] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name="execsdk-test-conn")
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.conn.run(lambda message: self.messages.put(message) is None)
        finally:
            self.conn.finish()

    def close(self) -> None:
        self.conn.close()
        self.client.close(timeout=1)
        self.client.shutdown()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture()
def pair() -> Iterator[_Pair]:
    p = _Pair()
    try:
        yield p
    finally:
        p.close()


def test_a_batch_arrives_as_separate_messages_in_order_with_one_write(pair: _Pair) -> None:
    messages = [b"", b"a", b'{"x":"\xc3\xa9"}', b"m" * 125, b"n" * 126, b"o" * 70_000]
    pair.conn.send_texts(list(messages))
    assert pair.sock.writes == 1
    pair.client.ping(b"between")  # the pong comes between two batches, as its own frame
    pongs: list[bytes] = []
    got: list[bytes] = []
    while len(got) < len(messages):
        opcode, data = pair.client.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG:
            pongs.append(data)
        else:
            assert opcode == websocket.ABNF.OPCODE_TEXT
            got.append(data)
    assert got == messages
    while not pongs:
        opcode, data = pair.client.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PONG
        pongs.append(data)
    assert pongs == [b"between"]
    pair.conn.send_texts([b"after the pong"])
    assert pair.client.recv() == "after the pong"
    assert pair.sock.writes == 2


def test_messages_from_the_client_reach_the_connection(pair: _Pair) -> None:
    pair.client.send("text")
    pair.client.send_binary(b"\x00binary")
    assert pair.messages.get(timeout=10) == b"text"  # ASCII text is handed over as bytes
    assert pair.messages.get(timeout=10) == b"\x00binary"
    pair.client.send("é")
    assert pair.messages.get(timeout=10) == "é"


def test_a_pong_queued_while_a_batch_waits_goes_out_first() -> None:
    p = _Pair()
    try:
        # The writer holds the write lock (as while it waits for a slow client); the pong for
        # the client's ping cannot be written by the connection thread meanwhile...
        with p.conn._write_lock:
            p.client.ping(b"queued")
            assert eventually(lambda: bool(p.conn._unsent))
        # ... so the next batch writes it first, in the same write.
        writes = p.sock.writes
        p.conn.send_texts([b"batch"])
        assert p.sock.writes == writes + 1
        assert p.client.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"queued")
        assert p.client.recv() == "batch"
    finally:
        p.close()


def test_a_writer_waiting_for_a_client_that_does_not_read_blocks_neither_reading_nor_close(
    pair: _Pair,
) -> None:
    pair.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def write() -> None:
        try:
            while True:
                pair.conn.send_texts([b"x" * 65536] * 4)
        except BaseException as exc:
            outcome.put(exc)

    writer = threading.Thread(target=write, name="execsdk-test-writer")
    writer.start()
    # The client reads nothing: soon the writer waits for room in the socket.
    stalled = ("_wait_writable", "_write_parts", "send_gathered")  # poll, sendall, sendmsg
    wait_until(lambda: blocked_in(writer, *stalled), 10, "the writer never stalled")
    # Meanwhile the connection still reads and delivers what the client sends.
    for i in range(5):
        pair.client.send(f"request {i}")
        assert pair.messages.get(timeout=10) == f"request {i}".encode()
    # A close from another thread does not wait for the writer, and the writer gives up.
    start = time.monotonic()
    pair.conn.close(1008, "client does not read its messages")
    assert time.monotonic() - start < 0.5
    exc = outcome.get(timeout=10)
    assert isinstance(exc, SendFailed), repr(exc)
    writer.join(10)
    # The connection ends by the close deadline: the client never answered the close.
    pair.thread.join(10)
    assert not pair.thread.is_alive()


def test_sending_to_a_closed_peer_raises_send_failed_without_error_logs(
    pair: _Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sock = pair.client.sock
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # abortive close (RST): the next writes fail
    with pytest.raises(SendFailed):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pair.conn.send_texts([b"x" * 65536] * 4)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    pair.thread.join(10)
    assert not pair.thread.is_alive()  # the failed write ended the connection too


def test_a_failing_write_raises_send_failed_caused_by_it_without_error_logs(
    pair: _Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pair.sock.fail = True
    with pytest.raises(SendFailed) as info:
        pair.conn.send_texts([b"lost"] * 3)
    assert isinstance(info.value.__cause__, BrokenPipeError)
    with pytest.raises(SendFailed):  # and every later batch
        pair.conn.send_texts([b"later"])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_a_batch_after_the_close_raises_send_failed(pair: _Pair) -> None:
    pair.conn.close()
    with pytest.raises(SendFailed):
        pair.conn.send_texts([b"too late"])
    opcode, data = pair.client.recv_data(control_frame=True)
    assert (opcode, data[:2]) == (websocket.ABNF.OPCODE_CLOSE, b"\x03\xe8")


class _TrickleSocket:
    """Takes at most ``step`` bytes per ``sendmsg`` (as a full socket buffer would)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.got = bytearray()
        self.calls = 0

    def sendmsg(self, buffers: list[memoryview]) -> int:
        self.calls += 1
        assert len(buffers) <= wsconn._IOV_MAX
        taken = 0
        for buffer in buffers:
            chunk = bytes(buffer[: self.step - taken])
            self.got += chunk
            taken += len(chunk)
            if taken == self.step:
                break
        return taken


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_gathered_writes_send_every_byte_in_order_across_partial_sends(step: int) -> None:
    parts = [bytes([i % 251]) * ((i * 7919) % 3000) for i in range(700)]  # some empty
    parts.append(bytes(range(256)) * 2000)
    if step == 1:
        parts = parts[:40]  # a byte per call: keep it short
    sock = _TrickleSocket(step)
    send_gathered(sock, parts)  # type: ignore[arg-type]
    assert bytes(sock.got) == b"".join(parts)


def test_gathered_writes_through_a_real_socket_arrive_whole() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        parts = [b"h" * 10, bytes(range(256)) * 8192, b"t" * 3, b"x" * 300_000]
        expected = b"".join(parts)
        received = bytearray()

        def drain() -> None:
            while len(received) < len(expected):
                chunk = right.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)
                time.sleep(0.0005)  # a slow reader: the writer sees partial sends

        reader = threading.Thread(target=drain)
        reader.start()
        send_gathered(left, parts)
        reader.join(10)
        assert bytes(received) == expected
