"""``execsdk serve`` writes a batch of WebSocket messages with one socket write.

:class:`execsdk.server.ws._BatchingConnection` goes below websockets' public ``send``: it frames
text messages itself and hooks ``send_context`` / ``send_data`` of websockets' sync connection.
These tests pin what it relies on, so a websockets upgrade that changes it fails here instead
of corrupting the stream: the hooks exist (else the server would fall back to plain ``send``),
the frame bytes equal websockets' own, a batch arrives as separate messages in order (next to
pings and a close handshake), each batch is one ``sendall``, and a closed peer gives
``ConnectionClosed`` with nothing logged as an error.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.server import Server, ServerConnection, serve

from execsdk.server import ws as server_ws
from execsdk.server.ws import _BatchingConnection, text_frame_header

pytestmark = pytest.mark.timeout(30)


def test_the_installed_websockets_has_every_hook_the_batching_connection_uses() -> None:
    assert server_ws._BATCHING, "websockets changed: execsdk serve fell back to one send each"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_frame_header_matches_websockets_own_framing(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame_header(size) + payload == expected


class _CountingSocket:
    """Wraps a socket and counts ``sendall``/``sendmsg`` calls (or fails them); the rest is
    delegated."""

    def __init__(self, sock: socket.socket, *, fail: bool = False) -> None:
        self._sock = sock
        self._fail = fail
        self.sendalls = 0

    def sendall(self, data: Any) -> None:
        self.sendalls += 1
        if self._fail:
            raise BrokenPipeError(32, "Broken pipe")
        self._sock.sendall(data)

    def sendmsg(self, buffers: Any) -> int:
        self.sendalls += 1
        if self._fail:
            raise BrokenPipeError(32, "Broken pipe")
        return self._sock.sendmsg(buffers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.fixture()
def batch_server() -> Iterator[tuple[Server, queue.Queue[Callable[[_BatchingConnection], None]]]]:
    """A bare websockets server on our connection class; the test hands it what to do."""
    jobs: queue.Queue[Callable[[_BatchingConnection], None]] = queue.Queue()

    def handler(conn: ServerConnection) -> None:
        assert isinstance(conn, _BatchingConnection)
        jobs.get(timeout=10)(conn)

    server = serve(handler, "127.0.0.1", 0, create_connection=_BatchingConnection, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, jobs
    finally:
        server.shutdown()
        thread.join(5)


def _url(server: Server) -> str:
    host, port = server.socket.getsockname()[:2]
    return f"ws://{host}:{port}"


def test_a_batch_arrives_as_separate_messages_in_order_with_one_write(
    batch_server: tuple[Server, queue.Queue[Callable[[_BatchingConnection], None]]],
) -> None:
    server, jobs = batch_server
    messages = [b"", b"a", b'{"x":"\xc3\xa9"}', b"m" * 125, b"n" * 126, b"o" * 70_000]
    writes: list[int] = []
    done = threading.Event()

    def job(conn: _BatchingConnection) -> None:
        counting = _CountingSocket(conn.socket)
        conn.socket = counting  # type: ignore[assignment]
        conn.send_texts(list(messages))
        writes.append(counting.sendalls)
        conn.ping()  # a control frame between two batches keeps its own frame
        conn.send_texts([b"after ping"])
        done.wait(10)
        conn.close()

    jobs.put(job)
    client = websocket.create_connection(_url(server), suppress_origin=True, timeout=10)
    try:
        got: list[bytes] = []
        while len(got) < len(messages) + 1:
            opcode, data = client.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PING:
                continue
            assert opcode == websocket.ABNF.OPCODE_TEXT
            got.append(data)
        assert got == [*messages, b"after ping"]
        assert writes == [1]
    finally:
        done.set()
        client.close()


def test_sending_to_a_closed_peer_raises_connection_closed_without_error_logs(
    batch_server: tuple[Server, queue.Queue[Callable[[_BatchingConnection], None]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, jobs = batch_server
    outcome: queue.Queue[BaseException | None] = queue.Queue()
    client_gone = threading.Event()

    def job(conn: _BatchingConnection) -> None:
        client_gone.wait(10)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                conn.send_texts([b"x" * 65536] * 4)
        except BaseException as exc:
            outcome.put(exc)
        else:
            outcome.put(None)

    jobs.put(job)
    client = websocket.create_connection(_url(server), suppress_origin=True, timeout=10)
    caplog.set_level(logging.DEBUG)
    sock = client.sock
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # abortive close (RST): the next writes fail
    client_gone.set()
    exc = outcome.get(timeout=15)
    assert isinstance(exc, ConnectionClosed), repr(exc)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_a_failing_write_raises_connection_closed_without_error_logs(
    batch_server: tuple[Server, queue.Queue[Callable[[_BatchingConnection], None]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The write fails while the connection is still open (the peer vanished mid-stream): the
    # error must take websockets' "error while sending" path, not its "internal error" one.
    server, jobs = batch_server
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def job(conn: _BatchingConnection) -> None:
        conn.socket = _CountingSocket(conn.socket, fail=True)  # type: ignore[assignment]
        try:
            conn.send_texts([b"lost"] * 3)
        except BaseException as exc:
            outcome.put(exc)
        else:
            outcome.put(None)

    caplog.set_level(logging.DEBUG)
    jobs.put(job)
    client = websocket.create_connection(_url(server), suppress_origin=True, timeout=10)
    try:
        exc = outcome.get(timeout=15)
    finally:
        client.close()
    assert isinstance(exc, ConnectionClosed), repr(exc)
    assert isinstance(exc.__cause__, BrokenPipeError)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


class _TrickleSocket:
    """Takes at most ``step`` bytes per ``sendmsg`` (as a full socket buffer would)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.got = bytearray()
        self.calls = 0

    def sendmsg(self, buffers: list[memoryview]) -> int:
        self.calls += 1
        assert len(buffers) <= server_ws._IOV_MAX
        data = b"".join(bytes(b) for b in buffers)[: self.step]
        self.got += data
        return len(data)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_gathered_writes_send_every_byte_in_order_across_partial_sends(step: int) -> None:
    parts = [bytes([i % 251]) * ((i * 7919) % 3000) for i in range(700)]  # some empty
    parts.append(bytes(range(256)) * 2000)
    if step == 1:
        parts = parts[:40]  # a byte per call: keep it short
    sock = _TrickleSocket(step)
    server_ws.send_gathered(sock, parts)  # type: ignore[arg-type]
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
        server_ws.send_gathered(left, parts)
        reader.join(10)
        assert bytes(received) == expected
