"""One WebSocket connection of ``execsdk serve``: our socket code around websockets' Sans-I/O
protocol object.

Only websockets' documented API is used. :class:`websockets.server.ServerProtocol` parses the
handshake request and builds the answer, and it handles every frame not handled here (control
frames, fragments, anything unusual) with its own checks and close codes (1002 protocol error,
1009 too big); a text message that is not UTF-8 is closed with 1007 here, with the reason
websockets' own connections give.

Receiving. After the handshake, frame headers are read here (RFC 6455 §5.2), from one small
buffer. A plain data frame (FIN set, no RSV bit, masked, text or binary, within the frame limit,
while the connection is open) of up to :data:`UNMASK_HERE_UP_TO` bytes is unmasked here with an
integer XOR and delivered. A larger one is read into a buffer of its own size (kept for the next
large frame, up to :data:`KEEP_SIZE`) and handed, whole, to the protocol object, whose C
unmasking beats any XOR Python can do ~50x (the 1.4 MB of a 1 MiB block: 0.03 ms against
1.8 ms). websockets does not document that C function, so it is reached through the documented
``receive_data`` only, at the cost of two copies inside the protocol. Control frames are handed
over whole too: the protocol answers pings and runs the closing handshake. Any other frame, and
every byte after it, goes to the protocol for good (it also reassembles fragmented messages).
The protocol is fed whole frames only, so its parser always waits at a frame boundary and can
take over at any point. The handshake request is fed up to its blank line only, so frames a
client sends right behind it stay in our buffer.

Sending. :meth:`WsConnection.send_texts` frames a batch of text messages itself (a server's
frames are unmasked and no extension is ever negotiated) and writes it, behind whatever the
protocol queued (a pong), with one system call, once the socket takes more data: with
``TCP_NOTSENT_LOWAT`` set that means little unsent data is left, so a slow client's backlog waits
in the outbox. Frames the protocol makes (pongs, keepalive pings, close frames) are written
without blocking, by the thread that made them, by the writer after its batch, or by the
connection thread once the socket is writable again: the connection thread never blocks on a
client that does not read.

Threads. The connection thread runs :meth:`~WsConnection.handshake`, :meth:`~WsConnection.run`
and :meth:`~WsConnection.finish`: it owns the socket's read side, the timers (the handshake
deadline, a keepalive ping every 30 s and its 60 s pong deadline, the close deadline) and the
socket's end. The pong deadline counts from the moment the ping reached the peer: a ping stuck
behind data the peer has not taken (here or unacknowledged in the kernel) is not counted, so a
slow reader is slowed by back-pressure, not cut; a peer whose TCP acknowledges nothing any more
is still closed (:meth:`WsConnection._check_pong`). The thread holding the outbox's sending
turn calls :meth:`~WsConnection.send_texts`; any thread may call :meth:`~WsConnection.close`.
Two locks: one around the protocol object (held briefly, never across I/O), one around socket
writes. Descriptors: the socket and one ``eventfd`` that wakes the connection thread. POSIX
only (``select.poll``, ``MSG_DONTWAIT``), like the rest of ``execsdk serve``.
"""

from __future__ import annotations

import fcntl
import http
import logging
import math
import os
import select
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from execsdk._wsframes import frame_header, xor_mask

__all__ = [
    "FIRST_READ_SIZE",
    "KEEP_SIZE",
    "READ_SIZE",
    "UNMASK_HERE_UP_TO",
    "SendFailed",
    "WsConnection",
    "send_gathered",
    "text_frame_header",
]

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
"""Bytes asked of the kernel per read while no large frame is pending; a large frame's remaining
bytes are asked for at once."""
FIRST_READ_SIZE = 4 * 1024
"""Size of the small buffer until a read fills it or a larger frame comes (then
:data:`READ_SIZE`): a connection that only sends small requests costs 4 KiB here, not 64."""
KEEP_SIZE = 4 * 1024 * 1024
"""A buffer grown past this size for one large frame is given back once that frame is read;
smaller ones stay, for the next megabyte-sized block of a stream."""
UNMASK_HERE_UP_TO = 1024
"""Data frames up to this many payload bytes are unmasked here (an integer XOR: 0.8 us for a
small request, against 3 us through the protocol); larger ones go through the protocol's C
unmasking (4 us for 4 KiB, 0.09 ms for 1.4 MB, where the XOR takes 8 us and 1.8 ms)."""

Deliver = Callable[[str | bytes], bool]
"""Takes one message: ``bytes`` from a binary frame or an ASCII text frame (the same JSON either
way), ``str`` from any other text frame. False ends the stream."""
ProcessRequest = Callable[[Request], Response | None]
"""Answers the handshake request itself (a ``Response``) or lets it upgrade (None)."""

_TEXT, _BINARY = 0x1, 0x2
_CONTROL = frozenset((0x8, 0x9, 0xA))  # close, ping, pong
_OPCODES = {_TEXT: Opcode.TEXT, _BINARY: Opcode.BINARY}
_REQUEST_END = b"\r\n\r\n"
_STOCK_READ = 256 * 1024  # bytes per read once the protocol parses everything
_WRITABLE_POLL_MS = 1000  # how often a writer waiting for a silent peer checks the state
_END_WAIT = 5.0  # seconds the socket's end waits for a writer to let go of it
_WAKE = (1).to_bytes(8, sys.byteorder)  # an eventfd takes 8 bytes; a pipe any
_POLLIN = select.POLLIN | select.POLLHUP | select.POLLERR  # readable, or a read will tell why


class SendFailed(ConnectionError):
    """The connection is closing or closed: nothing more can be sent on it."""


# -- framing of what we send -------------------------------------------------------------------

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


def text_frame_header(length: int) -> bytes:
    """The header of an unfragmented text frame of ``length`` payload bytes (a server's frames
    are never masked, RFC 6455 §5.1)."""
    return frame_header(_FIN_TEXT, length, masked=False)


_GATHER_FROM = 64 * 1024
"""Batches from this size are written straight from their parts (``sendmsg``) instead of being
joined first: a 1 MiB ``fs/readBlock`` answer is 1.4 MB that a join would copy once more."""
_IOV_MAX = 512  # buffers per sendmsg call, well below Linux's 1024


def send_gathered(sock: socket.socket, parts: list[bytes]) -> None:
    """Write every part, in order, like ``sendall(b"".join(parts))`` without the joined copy.

    Raises what ``sendmsg`` raises.
    """
    views = [memoryview(part) for part in parts if part]
    first = 0
    while first < len(views):
        sent = sock.sendmsg(views[first : first + _IOV_MAX])
        while sent:  # drop what went out; the kernel may have taken part of one buffer
            head = views[first]
            if sent >= len(head):
                sent -= len(head)
                first += 1
            else:
                views[first] = head[sent:]
                sent = 0


def _write_parts(sock: socket.socket, parts: list[bytes]) -> None:
    """One blocking write of all ``parts`` (joined when small, gathered when large)."""
    if len(parts) == 1:
        sock.sendall(parts[0])
    elif sum(map(len, parts)) < _GATHER_FROM:
        sock.sendall(b"".join(parts))
    else:
        send_gathered(sock, parts)


# -- keepalive and wake-ups --------------------------------------------------------------------

_STUCK_RECHECK = 5.0
"""Seconds between checks of a late pong whose ping waits behind data the peer has not taken."""
_TIOCOUTQ = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ on Linux sockets
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None


def _unacked_bytes(sock: socket.socket) -> int:
    """Bytes in the kernel's send buffer the peer has not acknowledged (0 when unknown)."""
    if _TIOCOUTQ is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # closed, or not a socket that knows
        return 0
    return int(struct.unpack("i", raw)[0])


def _peer_tcp_silent(sock: socket.socket, seconds: float) -> bool:
    """True when the peer's TCP acknowledged nothing for ``seconds`` while ours retransmitted
    or probed its closed window at least twice without an answer (Linux ``TCP_INFO``).

    A live peer answers window probes even when its application reads nothing (each answer
    resets the kernel's count of unanswered probes), so a slow reader never looks silent;
    a dead host or a cut link does. Elsewhere this is never True: the kernel's own
    retransmission timeout (``tcp_retries2``, ~15 min) ends such a connection.
    """
    if _TCP_INFO is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except (OSError, ValueError):
        return False
    if len(info) < 60:
        return False
    retransmits, probes = info[2], info[3]
    last_ack_recv_ms = int.from_bytes(info[56:60], sys.byteorder)
    return last_ack_recv_ms >= seconds * 1000 and max(retransmits, probes) >= 2


def _wake_fds() -> tuple[int, int]:
    """The read and write ends that wake the connection thread: one eventfd where there is
    one (one descriptor), else a non-blocking pipe."""
    eventfd = getattr(os, "eventfd", None)
    if eventfd is not None:
        fd: int = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


# -- receiving ---------------------------------------------------------------------------------


class _Buffer:
    """The receive buffer: unread bytes at ``[pos, end)`` of ``buf``, reads land after them.

    ``buf`` is a small buffer (:data:`FIRST_READ_SIZE`, grown to :data:`READ_SIZE` once a
    read fills it or a larger frame comes) shared by consecutive frames, or, while a
    frame larger than that is read, a buffer of its own that grows with the bytes received
    (doubling, up to the frame's size, never to the size a header merely announces) and is
    handed whole to the protocol once it holds the frame (a ``bytearray`` it copies, so no copy
    of ours). So a frame costs at most twice what was received of it. That buffer is kept for
    the next large frame (resizing it zero-fills only the difference) unless it grew past
    :data:`KEEP_SIZE`, and dropped once the connection went a keepalive interval without a
    large frame (:meth:`release_idle`, which also shrinks an empty small buffer back).
    Thread-safety: the connection thread only.
    """

    __slots__ = ("_big", "_big_used", "_small", "_target", "buf", "end", "pos", "view")

    def __init__(self) -> None:
        self._small = bytearray(FIRST_READ_SIZE)
        self._big = bytearray()
        self._big_used = False  # a large frame since the last release_idle()
        self._target = 0  # size of the large frame being read
        self.buf = self._small
        self.view = memoryview(self.buf)
        self.pos = 0
        self.end = 0

    def unread(self) -> int:
        return self.end - self.pos

    def room(self, need: int) -> memoryview:
        """A view where the next read lands (the caller releases it before the buffer is used
        again). The unread tail moves to the front when the frame being read (``need`` bytes)
        would not fit behind the read position, or when little is left to move. A large
        frame's buffer grows here, once full, by what was received so far."""
        pos, end = self.pos, self.end
        if self.is_exact:
            if end == len(self.buf) < self._target:
                grown = min(self._target, max(2 * end, end + READ_SIZE))
                self.view.release()
                self.buf.extend(bytes(grown - end))
                self.view = memoryview(self.buf)
            return self.view[end:]
        if pos and (len(self.buf) - pos < need or end - pos < READ_SIZE // 8):
            unread = end - pos
            # Through a copy: the source and the destination may overlap.
            self.buf[:unread] = bytes(self.view[pos:end])
            self.pos, self.end = 0, unread
        if len(self.buf) < READ_SIZE and (need > len(self.buf) or self.end == len(self.buf)):
            self._grow_small()
        return self.view[self.end :]

    def _grow_small(self) -> None:
        self.view.release()
        self._small.extend(bytes(READ_SIZE - len(self._small)))
        self._use(self._small, self.end, self.pos)

    def fits(self, size: int) -> bool:
        """True when a frame of ``size`` bytes fits the small buffer (after :meth:`room` moved
        it to the front and grew it)."""
        return size <= READ_SIZE

    def exact(self, size: int) -> None:
        """Read the frame of ``size`` bytes at the read position into a buffer of its own,
        which starts with the bytes already here (or the kept buffer's size, at most
        ``size``) and grows as more arrive."""
        if len(self._small) < READ_SIZE:  # a busy connection: the next frames get room too
            self._grow_small()
        big = self._big  # no view of it exists now: it may be resized
        unread = self.end - self.pos
        start = min(size, max(len(big), unread + READ_SIZE))
        if len(big) > start:
            del big[start:]
        elif len(big) < start:
            big.extend(bytes(start - len(big)))
        big[:unread] = self.view[self.pos : self.end]
        self.view.release()
        self._target = size
        self._big_used = True
        self._use(big, unread)

    def take_exact(self) -> bytearray:
        """The full frame buffer; reading goes back to the small buffer. Valid until the next
        :meth:`exact`."""
        big = self.buf
        self._small_again()
        return big

    def _small_again(self) -> None:
        if len(self._big) > KEEP_SIZE:
            self._big = bytearray()
        self._target = 0
        self.view.release()
        self._use(self._small, 0)

    def _use(self, buf: bytearray, end: int, pos: int = 0) -> None:
        self.buf = buf
        self.view = memoryview(buf)
        self.pos, self.end = pos, end

    @property
    def is_exact(self) -> bool:
        return self.buf is not self._small

    def release_idle(self) -> None:
        """Unless a large frame came since the last call, drop the kept large-frame buffer and
        shrink the small buffer back to :data:`FIRST_READ_SIZE` if it holds nothing."""
        used, self._big_used = self._big_used, False
        if used or self.is_exact:
            return
        self._big = bytearray()
        if self.end == 0 and len(self._small) > FIRST_READ_SIZE:
            self.view.release()
            del self._small[FIRST_READ_SIZE:]
            self._use(self._small, 0)

    @property
    def allocated(self) -> int:
        """Bytes held by the buffers (the small one, the large one)."""
        return len(self._small) + len(self._big)

    def load(self, data: bytes) -> None:
        """Append ``data`` (bytes read before the buffer took over; at most a read's worth)."""
        if len(data) > len(self.buf) - self.end:  # never more than one read: just in case
            self.view.release()
            self._small.extend(bytes(len(data)))
            self._use(self._small, self.end)
        self.view[self.end : self.end + len(data)] = data
        self.end += len(data)

    def skip(self, count: int) -> None:
        """Mark the next ``count`` unread bytes as read."""
        self.pos += count
        if self.pos == self.end:
            self.pos = self.end = 0
            if self.is_exact:
                self._small_again()

    def take(self, count: int) -> bytes:
        """The next ``count`` unread bytes, as a copy."""
        data = bytes(self.view[self.pos : self.pos + count])
        self.skip(count)
        return data


class WsConnection:
    """One accepted socket, from the handshake request to the closed socket (see the module).

    Thread-safety: :meth:`handshake`, :meth:`run` and :meth:`finish` on the connection thread
    only; :meth:`send_texts` from one thread at a time (the outbox's sending turn);
    :meth:`close` from any thread.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        name: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        max_message_size: int,
        max_frame_size: int,
        open_timeout: float = 10.0,
        ping_interval: float = 30.0,
        ping_timeout: float = 60.0,
        close_timeout: float = 1.0,
    ) -> None:
        self.sock = sock
        self.name = name
        self.protocol = ServerProtocol(max_size=(max_message_size, max_frame_size), logger=logger)
        self._logger = logger
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._frame_limit = min(max_message_size, max_frame_size)
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._fd = sock.fileno()
        # Around the protocol object, _unsent and _close_at; never held across I/O.
        self._proto_lock = threading.Lock()
        # Around socket writes (and the socket's close); the connection thread only tries it.
        # Whoever lets go of it writes what the protocol queued meanwhile (_flush): a thread
        # that found it taken left its frames to the holder.
        self._write_lock = threading.Lock()
        self._unsent: list[bytes] = []  # what the protocol made, not written yet (b"": SHUT_WR)
        self._close_at: float | None = None  # the closing handshake must be over by then
        self._want_out = False  # a non-blocking write was cut short: wait until writable
        self._broken = False  # the socket was shut down: nothing more is read or written
        self._sock_closed = False
        self._send_exc: BaseException | None = None  # the first failed write
        self._send_poller: select.poll | None = None  # the sending turn's, lazily
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = _wake_fds()
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._poller.register(self._fd, _POLLIN)
        self._polling_out = False
        self._buffer = _Buffer()
        self._need = 0  # bytes of the frame at the read position, once its header is known
        self._stock = False  # every byte goes to the protocol from now on
        self._fragments: list[bytes] = []
        self._fragments_text = False
        self._deliver: Deliver | None = None
        self._stopped = False  # deliver returned False: stop reading messages
        self._failed = False  # we failed the connection: later messages are dropped
        self._ping: bytes | None = None  # payload of the keepalive ping waiting for its pong
        self._ping_sent = 0.0
        # The pong is due ping_timeout after the ping reached the peer's TCP (the last moment
        # it was seen stuck behind unsent data); checked again at _pong_check.
        self._pong_from = 0.0
        self._pong_check = math.inf
        self._next_ping = math.inf
        self._opened = False  # the handshake succeeded
        self._ended = False

    # -- opening handshake (connection thread) -------------------------------------------------

    def handshake(self, process_request: ProcessRequest, refusing: Callable[[], bool]) -> bool:
        """Read the request, answer it, and tell whether the WebSocket connection is open.

        ``process_request`` may answer the request itself; while ``refusing()`` is True (the
        server is shutting down) an upgrade becomes a 503, and a client that sends nothing is
        dropped as soon as :meth:`close` wakes this thread. Gives up (False, nothing sent) when
        no whole request arrives within the open timeout, as websockets does.
        """
        deadline = time.monotonic() + self._open_timeout
        head = bytearray()
        fed = 0
        request: Request | None = None
        while request is None:
            left = deadline - time.monotonic()
            if left <= 0:
                log.debug("conn %s: no handshake request in %.0f s", self.name, self._open_timeout)
                return False
            if not self._wait(left):
                if refusing():
                    return False  # shutting down, and this client has nothing to say
                continue
            try:
                data = self.sock.recv(READ_SIZE)
            except OSError as exc:
                log.debug("conn %s: reading the handshake failed: %s", self.name, exc)
                return False
            if not data:
                return False
            head += data
            # Only up to the request's blank line: frames behind it stay ours.
            end = head.find(_REQUEST_END, max(0, fed - len(_REQUEST_END) + 1))
            upto = len(head) if end < 0 else end + len(_REQUEST_END)
            with self._proto_lock:
                self.protocol.receive_data(bytes(head[fed:upto]))
                events = self.protocol.events_received()
                self._collect()
            fed = upto
            request = next((e for e in events if isinstance(e, Request)), None)
            if request is None and (self.protocol.handshake_exc is not None or self._unsent):
                # Not a valid request: the protocol answered (414, 431) or just ends it.
                self._write_handshake(deadline)
                return False
        response = self._response(request, process_request, refusing)
        with self._proto_lock:
            self.protocol.send_response(response)
            self._collect()
        if not self._write_handshake(deadline) or self.protocol.state is not State.OPEN:
            return False
        if fed < len(head):
            self._buffer.load(bytes(head[fed:]))
        self._opened = True
        self._next_ping = time.monotonic() + self._ping_interval
        return True

    def _response(
        self, request: Request, process_request: ProcessRequest, refusing: Callable[[], bool]
    ) -> Response:
        try:
            response = process_request(request)
        except Exception:
            log.exception("conn %s: processing the handshake request failed", self.name)
            response = self.protocol.reject(
                http.HTTPStatus.INTERNAL_SERVER_ERROR,
                "Failed to open a WebSocket connection.\nSee server log for more information.\n",
            )
        if response is None:
            with self._proto_lock:
                response = self.protocol.accept(request)
        if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS and refusing():
            response = self.protocol.reject(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n"
            )
        return response

    def _write_handshake(self, deadline: float) -> bool:
        """Write the protocol's answer, blocking until the open deadline at most."""
        with self._write_lock:
            with self._proto_lock:
                chunks, self._unsent = self._unsent, []
            try:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
                for chunk in chunks:
                    if chunk:
                        self.sock.sendall(chunk)
                    else:
                        self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                log.debug("conn %s: writing the handshake answer failed: %s", self.name, exc)
                return False
            finally:
                try:
                    self.sock.settimeout(None)
                except OSError:
                    pass
        if self._unsent:
            self._flush()  # a close() meanwhile (shutdown) found the write lock taken
        return True

    # -- messages (connection thread) ----------------------------------------------------------

    def run(self, deliver: Deliver) -> None:
        """Hand each incoming message to ``deliver`` until the connection is closed (the peer
        closed, it failed, or the close deadline passed) or ``deliver`` returns False.

        Exceptions of ``deliver`` propagate; call :meth:`finish` afterwards in every case.
        """
        self._deliver = deliver
        try:
            if self._buffer.unread():
                self._need = self._scan()  # frames that came with the handshake request
            self._pump()
        finally:
            self._deliver = None

    def finish(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close with ``code`` if still open, wait for the closing handshake until the close
        deadline, and close the socket. Messages that still arrive are dropped. Idempotent."""
        if self._ended:
            return
        try:
            if self._opened:
                self._deliver = None
                self._stopped = False
                self.close(code, reason)
                # Only the client's close is awaited now: the protocol reads everything.
                unread = self._buffer.unread()
                self._stock = True
                if unread and not self._broken and self.protocol.state is not State.CLOSED:
                    self._feed(self._buffer.take(unread))
                self._pump()
        finally:
            self._end()

    def _pump(self) -> None:
        """Read and dispatch until closed, aborted or stopped; run the timers in between."""
        while not self._stopped and not self._broken:
            if self.protocol.state is State.CLOSED:
                return
            wait = self._timers()
            if self._broken:
                return
            want_out = self._want_out
            if want_out != self._polling_out:
                self._poller.modify(self._fd, _POLLIN | (select.POLLOUT if want_out else 0))
                self._polling_out = want_out
            ready = self._poller.poll(-1 if wait == math.inf else int(wait * 1000) + 1)
            readable = False
            for fd, events in ready:
                if fd == self._wake_r:
                    self._drain_wake()
                    continue
                if events & select.POLLOUT and self._want_out:
                    self._want_out = False
                    self._flush()
                if events & _POLLIN:
                    readable = True
            if readable:
                self._read()

    def _read(self) -> None:
        try:
            if self._stock:
                data = self.sock.recv(_STOCK_READ)
                count = len(data)
            else:
                view = self._buffer.room(self._need)
                try:
                    count = self.sock.recv_into(view)
                finally:
                    view.release()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("conn %s: receive failed: %s", self.name, exc)
            count = 0
        if count == 0:
            with self._proto_lock:
                self.protocol.receive_eof()  # the state is CLOSED from here on
                self._collect()
            self._flush()
            return
        if self._stock:
            self._feed(data)
        else:
            self._buffer.end += count
            self._need = self._scan()

    def _scan(self) -> int:
        """Deliver every whole frame in the buffer; the size of the incomplete frame at the
        read position (0 while its header is incomplete, or once the protocol took over)."""
        buffer = self._buffer
        limit = self._frame_limit
        while not self._stopped:
            buf = buffer.buf  # looked up again each time: skip() may replace it
            pos = buffer.pos
            have = buffer.end - pos
            if have < 2:
                return 0
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            header = 6  # two bytes plus the mask key
            if length == 126:
                header = 8
                if have < 4:
                    return 0
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                header = 14
                if have < 10:
                    return 0
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            opcode = b0 & 0x0F
            # FIN set, no RSV bit, masked, and the connection open: a plain whole frame.
            plain = (b0 & 0xF0) == 0x80 and b1 & 0x80 and self.protocol.state is State.OPEN
            if plain and ((opcode in _OPCODES and length <= limit) or opcode in _CONTROL):
                if opcode in _CONTROL and length > 125:
                    plain = False  # a control frame that long is the protocol's to refuse
                else:
                    size = header + length
                    if have < size:
                        if not buffer.is_exact and not buffer.fits(size):
                            buffer.exact(size)
                        return size
                    if buffer.is_exact:  # a large frame, read into its own buffer
                        self._feed(buffer.take_exact())
                        continue
                    if opcode in _CONTROL or length > UNMASK_HERE_UP_TO:
                        self._feed(buffer.take(size))
                        continue
                    key = bytes(buf[pos + header - 4 : pos + header])
                    payload = xor_mask(key, buffer.view[pos + header : pos + size])
                    buffer.skip(size)
                    if self._debug:
                        self._logger.debug("< %s", Frame(_OPCODES[opcode], payload))
                    self._message(opcode == _TEXT, payload)
                    continue
            # Anything else, and all that follows, is the protocol's to parse.
            self._stock = True
            self._feed(buffer.take(have))
            return 0
        return 0

    def _feed(self, data: bytes | bytearray) -> None:
        """Hand ``data`` (whole frames, or everything once unusual) to the protocol; write what
        it answers and process the frames it made of it."""
        with self._proto_lock:
            self.protocol.receive_data(data)
            events = self.protocol.events_received()
            self._collect()
        self._flush()
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)

    def _frame(self, frame: Frame) -> None:
        data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode is Opcode.TEXT, data)
            else:
                self._fragments = [data]
                self._fragments_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            # The protocol checked the order and the message size.
            self._fragments.append(data)
            if frame.fin:
                message = b"".join(self._fragments)
                self._fragments = []
                self._message(self._fragments_text, message)
        elif opcode is Opcode.PONG:
            self._pong(data)
        # Pings were answered and close frames handled by the protocol.

    def _message(self, text: bool, payload: bytes) -> None:
        if self._deliver is None or self._stopped or self._failed:
            return
        message: str | bytes = payload
        # ASCII is valid UTF-8 and reads the same as bytes, which the connection parses as it
        # parses binary frames and stdio lines: a 1.4 MB request skips a str copy (0.1-0.2 ms).
        if text and not payload.isascii():
            try:
                message = payload.decode()
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        if not self._deliver(message):
            self._stopped = True

    # -- timers (connection thread) ------------------------------------------------------------

    def _timers(self) -> float:
        """Run what is due; seconds until the next timer (``math.inf``: none)."""
        now = time.monotonic()
        if self.protocol.state is State.OPEN:
            if self._ping is None and now >= self._next_ping:
                self._send_ping(now)
            elif self._ping is not None and now >= self._pong_check:
                self._check_pong(now)
        wait = math.inf
        close_at = self._close_at
        if close_at is not None:
            if now >= close_at:
                # A peer that never completes the closing handshake (or never reads it) would
                # pin the session forever.
                log.info("conn %s: peer never finished closing; dropping it", self.name)
                self._abort()
                return 0.0
            wait = close_at - now
        if self.protocol.state is State.OPEN:
            due = self._next_ping if self._ping is None else self._pong_check
            wait = min(wait, max(0.0, due - now))
        return wait

    def _send_ping(self, now: float) -> None:
        data = os.urandom(4)
        with self._proto_lock:
            if self.protocol.state is not State.OPEN:
                return
            self.protocol.send_ping(data)
            self._collect()
        self._ping, self._ping_sent = data, now
        self._pong_from = now
        self._pong_check = now + self._ping_timeout
        self._buffer.release_idle()  # no large frame for a keepalive interval: give it back
        log.debug("conn %s: keepalive ping", self.name)
        self._flush()

    def _check_pong(self, now: float) -> None:
        """The pong is late: fail the connection, unless the peer is merely behind.

        A ping queued behind data the peer has not taken yet (in our queue or in the kernel's
        send buffer, unacknowledged) has not reached it: a reader that is behind, its TCP window
        closed, is slowed by back-pressure, not cut. The pong clock restarts from the last
        moment the ping was seen stuck. Only a peer whose TCP stopped acknowledging anything
        (:func:`_peer_tcp_silent`: no ACK for ``ping_timeout``, retransmissions or window probes
        unanswered) is given up while stuck.
        """
        if self._stuck():
            if _peer_tcp_silent(self.sock, self._ping_timeout):
                log.info(
                    "conn %s: the peer acknowledged nothing for %.0f s; closing",
                    self.name,
                    self._ping_timeout,
                )
                self._ping = None
                self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return
            self._pong_from = now
            self._pong_check = now + min(self._ping_timeout, _STUCK_RECHECK)
            return
        if now < self._pong_from + self._ping_timeout:
            self._pong_check = self._pong_from + self._ping_timeout
            return
        log.info("conn %s: no pong within %.0f s; closing", self.name, self._ping_timeout)
        self._ping = None
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def _stuck(self) -> bool:
        """True while data of ours waits for the peer: queued here, or in the kernel's send
        buffer and not acknowledged yet."""
        if self._unsent or self._want_out:
            return True
        return _unacked_bytes(self.sock) > 0

    def _pong(self, data: bytes) -> None:
        if self._ping is not None and data == self._ping:
            # Every ping_interval from the last ping, or at once after a late pong.
            self._next_ping = max(self._ping_sent + self._ping_interval, time.monotonic())
            self._ping = None

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (close frame, then half-close) and drop later messages."""
        self._failed = True
        with self._proto_lock:
            if self.protocol.state is State.OPEN:
                self.protocol.fail(code, reason)
                self._collect()
        self._flush()

    # -- closing (any thread) ------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake if the connection is open; never blocks.

        The connection thread drops the connection if the peer has not finished closing within
        the close timeout. During the opening handshake this only wakes that thread.
        """
        with self._proto_lock:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._collect()
        self._flush()
        self._wake()

    def _collect(self) -> None:
        # With _proto_lock held, after every call that may make the protocol write something.
        out = self.protocol.data_to_send()
        if out:
            self._unsent.extend(out)
        if self._close_at is None and self.protocol.close_expected():
            self._close_at = time.monotonic() + self._close_timeout

    def _abort(self) -> None:
        """Shut the socket down: reads see the end, a blocked writer returns at once."""
        self._broken = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected any more, or already closed
            pass
        self._wake()

    def _end(self) -> None:
        """The connection thread's last step: the socket is shut down and closed."""
        if self._ended:
            return
        self._ended = True
        with self._proto_lock:
            self.protocol.receive_eof()  # idempotent; the state is CLOSED from here on
            self.protocol.data_to_send()
            self._unsent.clear()
        self._abort()
        # Closed only while no writer uses it, so a write never lands on a reused descriptor.
        got = self._write_lock.acquire(timeout=_END_WAIT)
        try:
            self._sock_closed = True
            self.sock.close()
        finally:
            if got:
                self._write_lock.release()
        if not got:
            log.warning(
                "conn %s: a writer held the socket %.0fs after its end", self.name, _END_WAIT
            )
        with self._wake_lock:
            os.close(self._wake_r)
            if self._wake_w != self._wake_r:
                os.close(self._wake_w)
            self._wake_w = -1

    # -- waking the connection thread ----------------------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, _WAKE)
            except OSError:  # the pipe is full: a wake-up is pending anyway
                pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:  # empty (BlockingIOError)
            pass

    def _wait(self, timeout: float) -> bool:
        """Wait for the socket to be readable or a wake-up; True when readable."""
        readable = False
        for fd, events in self._poller.poll(int(timeout * 1000) + 1):
            if fd == self._wake_r:
                self._drain_wake()
            elif events & _POLLIN:
                readable = True
        return readable

    # -- writing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the protocol made, without blocking. Any thread.

        If another thread is writing, that thread writes it once it is done; what the socket
        does not take now is written by the connection thread once it is writable.
        """
        while self._unsent and not self._broken:
            if not self._write_lock.acquire(blocking=False):
                return
            try:
                done = self._send_unsent()
            finally:
                self._write_lock.release()
            if not done:
                self._want_out = True
                self._wake()
                return

    def _send_unsent(self) -> bool:
        # With _write_lock held. False when the socket did not take everything.
        with self._proto_lock:
            chunks, self._unsent = self._unsent, []
        if self._sock_closed:
            return True
        for i, chunk in enumerate(chunks):
            if not chunk:
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:  # already shut down or closed
                    pass
                continue
            try:
                sent = self.sock.send(chunk, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._write_failed(exc)
                return True
            if sent < len(chunk):
                with self._proto_lock:
                    self._unsent[:0] = [chunk[sent:], *chunks[i + 1 :]]
                return False
        return True

    def _write_failed(self, exc: BaseException) -> None:
        # With _write_lock held: the peer is gone; so is the connection.
        if self._send_exc is None:
            self._send_exc = exc
        log.debug("conn %s: send failed: %s", self.name, exc)
        self._abort()

    def send_texts(self, messages: list[bytes]) -> None:
        """Send each UTF-8 encoded message as one text frame, all in one socket write.

        Waits first until the socket takes more data, holding only the write lock, which the
        connection thread never waits for.

        Raises:
            SendFailed: the connection is closing or closed, or the write failed (its cause).
        """
        try:
            with self._write_lock:
                self._wait_writable()
                with self._proto_lock:
                    usable = self.protocol.state is State.OPEN and not (
                        self._broken or self._sock_closed or self._stopped
                    )
                    if usable:
                        # A pong or ping the protocol queued goes first. While the connection
                        # is open the protocol queues no half-close (b"").
                        parts, self._unsent = self._unsent, []
                if not usable:
                    raise SendFailed(f"conn {self.name} is closed") from self._send_exc
                for message in messages:
                    parts.append(text_frame_header(len(message)))
                    parts.append(message)
                try:
                    _write_parts(self.sock, parts)
                except OSError as exc:
                    self._write_failed(exc)
                    raise SendFailed(f"conn {self.name}: send failed: {exc}") from exc
        finally:
            if self._unsent:
                self._flush()  # queued while this thread wrote

    def _wait_writable(self) -> None:
        # With _write_lock held, so the socket stays open meanwhile.
        poller = self._send_poller
        if poller is None:
            if self._sock_closed:
                return
            poller = self._send_poller = select.poll()
            poller.register(self._fd, select.POLLOUT)
        # With TCP_NOTSENT_LOWAT set, writable means little unsent data is left; an error or a
        # hang-up also ends the wait.
        while not poller.poll(_WRITABLE_POLL_MS):
            if self._broken or self._stopped or self.protocol.state is not State.OPEN:
                return
