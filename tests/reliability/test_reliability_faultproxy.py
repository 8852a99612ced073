"""The fault proxy itself, against a plain TCP echo server: each fault does what it says."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy
from tests.reliability.reliability_support import fd_count, wait_fds_at_most


class _Echo:
    """A TCP echo server on loopback; one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, name="echo-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="echo-conn", daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._acceptor.join(2)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(2)


@pytest.fixture
def echo() -> Iterator[_Echo]:
    server = _Echo()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def px(echo: _Echo) -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", echo.port)
    try:
        yield proxy
    finally:
        proxy.close()


def _client(px: FaultProxy) -> socket.socket:
    sock = socket.create_connection((px.host, px.port), timeout=5)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            break
        buf.extend(data)
    return bytes(buf)


def test_forwards_both_ways_and_counts_bytes(px: FaultProxy) -> None:
    with _client(px) as sock:
        payload = bytes(range(256)) * 4096
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload
    # Each counter moves after its forwarding write returns, so the echo can arrive first.
    assert px.wait_bytes("c2s", len(payload), timeout=2) == len(payload)
    assert px.wait_bytes("s2c", len(payload), timeout=2) == len(payload)


def test_cut_closes_both_sides(px: FaultProxy) -> None:
    with _client(px) as sock:
        sock.sendall(b"x")
        assert _recv_exactly(sock, 1) == b"x"
        assert px.cut() == 1
        sock.settimeout(2)
        assert sock.recv(10) == b""  # EOF, not a hang
    assert px.cuts == 1


def test_reset_cut_gives_connection_reset(px: FaultProxy) -> None:
    with _client(px) as sock:
        sock.sendall(b"x")
        assert _recv_exactly(sock, 1) == b"x"
        px.cut(reset=True)
        sock.settimeout(2)
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
            sock.sendall(b"y" * 100000)
            sock.recv(10)


def test_cut_after_forwards_exactly_the_mark(px: FaultProxy) -> None:
    with _client(px) as sock:
        px.cut_after(1000, "c2s")
        sock.sendall(b"a" * 5000)
        sock.settimeout(2)
        got = bytearray()
        while data := sock.recv(65536):
            got.extend(data)
    # The server saw exactly 1000 bytes; the echo of some of them may beat the cut.
    assert px.bytes_c2s == 1000
    assert bytes(got) == b"a" * len(got) and len(got) <= 1000
    assert px.cuts == 1


def test_stall_holds_data_until_resume(px: FaultProxy) -> None:
    with _client(px) as sock:
        px.stall("s2c")
        sock.sendall(b"hello")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert px.bytes_c2s == 5 and px.bytes_s2c == 0
        px.resume("s2c")
        sock.settimeout(2)
        assert _recv_exactly(sock, 5) == b"hello"


def test_stall_client_to_server_fills_the_senders_buffers(px: FaultProxy) -> None:
    with _client(px) as sock:
        px.stall("c2s")
        sock.settimeout(0.5)
        sent = 0
        with pytest.raises(TimeoutError):
            while True:
                sent += sock.send(b"z" * 65536)
        assert px.bytes_c2s == 0
        assert sent > 0


def test_delay_slows_each_piece(px: FaultProxy) -> None:
    with _client(px) as sock:
        px.set_delay(0.2, "c2s")
        start = time.monotonic()
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4) == b"ping"
        assert time.monotonic() - start >= 0.2


def test_fragment_forwards_small_pieces_intact(px: FaultProxy) -> None:
    with _client(px) as sock:
        px.set_fragment(3)
        payload = bytes(range(200))
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload


def test_refuse_closes_new_connections_at_once(px: FaultProxy) -> None:
    px.refuse(True)
    with _client(px) as sock:
        sock.settimeout(2)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    px.refuse(False)
    with _client(px) as sock:
        sock.sendall(b"ok")
        assert _recv_exactly(sock, 2) == b"ok"


def test_retarget_sends_new_connections_elsewhere(px: FaultProxy) -> None:
    other = _Echo()
    try:
        px.retarget("127.0.0.1", other.port)
        with _client(px) as sock:
            sock.sendall(b"1")
            assert _recv_exactly(sock, 1) == b"1"
        assert len(other.conns) == 1
    finally:
        other.close()


def test_close_ends_every_thread_and_socket(echo: _Echo) -> None:
    before = fd_count()
    proxy = FaultProxy("127.0.0.1", echo.port)
    socks = [_client(proxy) for _ in range(3)]
    for s in socks:
        s.sendall(b"x")
        assert _recv_exactly(s, 1) == b"x"
    proxy.stall()
    proxy.close()
    for s in socks:
        s.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("faultproxy-")]
    assert wait_fds_at_most(before) <= before
