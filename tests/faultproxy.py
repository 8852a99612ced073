"""A small TCP proxy that injects faults between a client and a server, for reliability tests.

``FaultProxy`` listens on a loopback port and forwards every accepted connection to a target
address over real sockets, one thread per direction. While traffic flows, a test can:

* ``cut()``: close both sides of every open link at once (FIN, or RST with ``reset=True``);
* ``cut_after(n, direction)``: cut every link once ``n`` more bytes went that way;
* ``stall(direction)`` / ``resume(direction)``: stop forwarding one or both directions (the
  proxy stops reading, so the sender's kernel buffers fill up as with a hung peer);
* ``set_delay(seconds, direction)``: sleep before forwarding each piece;
* ``set_fragment(size, direction)``: forward in pieces of at most ``size`` bytes;
* ``refuse(True)``: accept new connections and close them at once (a server that is down);
* ``retarget(host, port)``: send new connections elsewhere (a server restarted on a new port);
* read byte counters per direction (``bytes_c2s``, ``bytes_s2c``) and wait on them;
* ``received(direction)``: bytes that reached the proxy, forwarded or not (a stalled
  direction holds them back), to see a peer send something the other side does not get.

Directions are named from the client's side: ``"c2s"`` (client to server), ``"s2c"`` (server to
client) or ``"both"``. Threads are named ``faultproxy-*`` and all end in :meth:`close`.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import itertools
import logging
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["Direction", "FaultProxy"]

log = logging.getLogger(__name__)

Direction = Literal["c2s", "s2c", "both"]
_DIRS = ("c2s", "s2c")
_ids = itertools.count(1)


def _dirs(direction: Direction) -> tuple[str, ...]:
    if direction == "both":
        return _DIRS
    if direction not in _DIRS:
        raise ValueError(f"direction must be 'c2s', 's2c' or 'both', not {direction!r}")
    return (direction,)


class _Link:
    """One proxied connection: the client socket, the server socket and their two pumps."""

    def __init__(self, number: int, client: socket.socket, server: socket.socket) -> None:
        self.number = number
        self.client = client
        self.server = server
        self.dead = False
        self.threads: list[threading.Thread] = []
        self.finished = 0
        self.in_hand = {d: 0 for d in _DIRS}  # read by a pump, not yet forwarded

    def kill(self, *, reset: bool) -> None:
        """Close both sides; blocked pumps wake up (shutdown interrupts a blocked recv)."""
        self.dead = True
        for sock in (self.client, self.server):
            how = socket.SHUT_RDWR
            if reset:
                # Linger 0 makes the final close() send RST; SHUT_RD wakes the pumps without
                # sending the FIN that SHUT_WR would.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                how = socket.SHUT_RD
            with contextlib.suppress(OSError):
                sock.shutdown(how)


class FaultProxy:
    """Forwards loopback TCP connections to a target, with faults injected on demand.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        self._cond = threading.Condition()
        self._target = (target_host, target_port)
        self._stalled = {d: False for d in _DIRS}
        self._delay = {d: 0.0 for d in _DIRS}
        self._fragment = {d: 0 for d in _DIRS}
        self._cut_at: dict[str, int | None] = {d: None for d in _DIRS}
        self._counts = {d: 0 for d in _DIRS}
        self._refusing = False
        self._links: list[_Link] = []
        self._all_threads: list[threading.Thread] = []
        self._closed = False
        self.accepted = 0
        """Connections accepted so far (refused ones included)."""
        self.cuts = 0
        """Links closed by :meth:`cut` or a ``cut_after`` trigger."""
        self._id = next(_ids)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()[:2]
        self._acceptor = threading.Thread(
            target=self._accept_main, name=f"faultproxy-{self._id}-accept", daemon=True
        )
        self._acceptor.start()

    @classmethod
    def for_url(cls, url: str) -> FaultProxy:
        """A proxy in front of the ``ws://host:port`` server at ``url``."""
        split = urlsplit(url)
        if split.hostname is None or split.port is None:
            raise ValueError(f"need ws://host:port, not {url!r}")
        return cls(split.hostname, split.port)

    @property
    def url(self) -> str:
        """``ws://host:port`` of the proxy (connect clients here)."""
        return f"ws://{self.host}:{self.port}"

    # ------------------------------------------------------------------ counters

    @property
    def bytes_c2s(self) -> int:
        """Bytes forwarded from clients to the server, over all links."""
        return self._counts["c2s"]

    @property
    def bytes_s2c(self) -> int:
        """Bytes forwarded from the server to clients, over all links."""
        return self._counts["s2c"]

    @property
    def open_links(self) -> int:
        """Links currently open."""
        with self._cond:
            return sum(1 for link in self._links if not link.dead)

    def received(self, direction: Literal["c2s", "s2c"]) -> int:
        """Bytes that reached the proxy going ``direction``: those forwarded, plus, on the open
        links, those read by a pump that a stall holds and those still in the receive buffers.

        Never more than was sent: a piece moving on while this counts is missed, not doubled.
        """
        with self._cond:  # forwarded and in hand change together under the lock
            live = [link for link in self._links if not link.dead]
            total = self._counts[direction] + sum(link.in_hand[direction] for link in live)
        for link in live:
            sock = link.client if direction == "c2s" else link.server
            buf = array.array("i", [0])
            with contextlib.suppress(OSError, ValueError):
                fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
                total += buf[0]
        return total

    def wait_bytes(self, direction: Literal["c2s", "s2c"], n: int, timeout: float = 30.0) -> int:
        """Block until at least ``n`` bytes went ``direction`` in total; returns the count.

        Raises ``TimeoutError`` when that does not happen within ``timeout``.
        """
        end = time.monotonic() + timeout
        with self._cond:
            while self._counts[direction] < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"only {self._counts[direction]} of {n} bytes went {direction} "
                        f"within {timeout}s"
                    )
                self._cond.wait(left)
            return self._counts[direction]

    def wait_links(self, n: int, timeout: float = 10.0) -> None:
        """Block until ``n`` links were accepted in total (``TimeoutError`` otherwise)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.accepted < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"only {self.accepted} of {n} connections within {timeout}s")
                self._cond.wait(left)

    # ------------------------------------------------------------------ faults

    def cut(self, *, reset: bool = False) -> int:
        """Close both sides of every open link (RST instead of FIN with ``reset``).

        New connections are still accepted afterwards. Returns how many links were cut.
        """
        with self._cond:
            links = [link for link in self._links if not link.dead]
            self.cuts += len(links)  # first: a client may react to the kill at once
            for link in links:
                link.kill(reset=reset)
            self._cond.notify_all()
        return len(links)

    def cut_after(self, n: int, direction: Literal["c2s", "s2c"] = "s2c") -> None:
        """Cut every link once ``n`` more bytes have gone ``direction`` (exactly: the piece
        that crosses the mark is forwarded only up to it)."""
        with self._cond:
            self._cut_at[direction] = self._counts[direction] + n

    def stall(self, direction: Direction = "both") -> None:
        """Stop forwarding (and reading) ``direction`` until :meth:`resume`."""
        with self._cond:
            for d in _dirs(direction):
                self._stalled[d] = True

    def resume(self, direction: Direction = "both") -> None:
        """Undo :meth:`stall`."""
        with self._cond:
            for d in _dirs(direction):
                self._stalled[d] = False
            self._cond.notify_all()

    def set_delay(self, seconds: float, direction: Direction = "both") -> None:
        """Sleep ``seconds`` before forwarding each piece going ``direction`` (0: off)."""
        with self._cond:
            for d in _dirs(direction):
                self._delay[d] = seconds

    def set_fragment(self, size: int, direction: Direction = "both") -> None:
        """Forward in pieces of at most ``size`` bytes (0: off), each sent on its own."""
        if size < 0:
            raise ValueError("size must be >= 0")
        with self._cond:
            for d in _dirs(direction):
                self._fragment[d] = size

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are closed as soon as they are accepted."""
        with self._cond:
            self._refusing = on

    def retarget(self, host: str, port: int) -> None:
        """Forward new connections to ``(host, port)``; open links are untouched."""
        with self._cond:
            self._target = (host, port)

    def heal(self) -> None:
        """Turn every fault off (stall, delay, fragment, refuse, pending cut triggers)."""
        with self._cond:
            for d in _DIRS:
                self._stalled[d] = False
                self._delay[d] = 0.0
                self._fragment[d] = 0
                self._cut_at[d] = None
            self._refusing = False
            self._cond.notify_all()

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every link and join every thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for d in _DIRS:
                self._stalled[d] = False
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
        end = time.monotonic() + timeout
        self._acceptor.join(max(0.0, end - time.monotonic()))
        with self._cond:
            threads = list(self._all_threads)
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive or self._acceptor.is_alive():
            raise RuntimeError(f"fault proxy threads still running after close: {alive}")

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self.url} -> {self._target[0]}:{self._target[1]} "
            f"c2s={self.bytes_c2s} s2c={self.bytes_s2c} links={self.open_links}>"
        )

    # ------------------------------------------------------------------ threads

    def _accept_main(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._cond:
                self.accepted += 1
                self._cond.notify_all()
                refusing, target, closed = self._refusing, self._target, self._closed
            if refusing or closed:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            try:
                server = socket.create_connection(target, timeout=5.0)
            except OSError as exc:
                log.debug("faultproxy: cannot reach %s:%s: %s", *target, exc)
                with contextlib.suppress(OSError):
                    client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start_link(client, server)

    def _start_link(self, client: socket.socket, server: socket.socket) -> None:
        with self._cond:
            link = _Link(self.accepted, client, server)
            if self._closed:
                link.kill(reset=False)
            self._links.append(link)
            for direction, src, dst in (("c2s", client, server), ("s2c", server, client)):
                thread = threading.Thread(
                    target=self._pump,
                    args=(link, direction, src, dst),
                    name=f"faultproxy-{self._id}-{link.number}-{direction}",
                    daemon=True,
                )
                link.threads.append(thread)
                self._all_threads.append(thread)
            for thread in link.threads:
                thread.start()

    def _pump(self, link: _Link, direction: str, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not link.dead:
                with self._cond:
                    while self._stalled[direction] and not link.dead:
                        self._cond.wait()
                if link.dead:
                    return
                try:
                    data = src.recv(1 << 16)
                except OSError:
                    self._kill(link)  # a broken side ends the whole link
                    return
                if not data:
                    if not link.dead:
                        # Half-close: pass the FIN on, keep the other direction flowing.
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    return
                with self._cond:
                    link.in_hand[direction] = len(data)
                for piece in self._pieces(direction, data):
                    with self._cond:
                        while self._stalled[direction] and not link.dead:
                            self._cond.wait()
                        delay = self._delay[direction]
                    if link.dead:
                        return
                    if delay:
                        time.sleep(delay)  # the delay fault itself
                    size = len(piece)
                    piece, trigger = self._take(direction, piece)
                    if piece:
                        try:
                            dst.sendall(piece)
                        except OSError:
                            self._kill(link)
                            return
                    with self._cond:
                        link.in_hand[direction] -= size
                        self._counts[direction] += len(piece)
                        self._cond.notify_all()
                    if trigger:
                        self.cut()
                        return
        finally:
            with self._cond:
                link.in_hand[direction] = 0
            self._finish(link)

    def _pieces(self, direction: str, data: bytes) -> Iterator[bytes]:
        size = self._fragment[direction]
        if size <= 0 or len(data) <= size:
            yield data
            return
        view = memoryview(data)
        for start in range(0, len(data), size):
            yield bytes(view[start : start + size])

    def _take(self, direction: str, piece: bytes) -> tuple[bytes, bool]:
        """The part of ``piece`` to forward, and whether a ``cut_after`` mark was reached."""
        with self._cond:
            mark = self._cut_at[direction]
            if mark is None:
                return piece, False
            room = mark - self._counts[direction]
            if len(piece) < room:
                return piece, False
            self._cut_at[direction] = None
            return piece[: max(0, room)], True

    def _kill(self, link: _Link) -> None:
        with self._cond:
            link.kill(reset=False)
            self._cond.notify_all()

    def _finish(self, link: _Link) -> None:
        with self._cond:
            link.finished += 1
            done = link.finished == 2
            if done:
                link.dead = True
                self._links.remove(link)
        if done:
            for sock in (link.client, link.server):
                with contextlib.suppress(OSError):
                    sock.close()
