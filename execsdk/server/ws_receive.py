"""The receiving side of ``execsdk serve``'s WebSocket connections, without websockets' parser.

websockets' sync connection reads 64 KiB per system call and runs every byte through its
Sans-I/O parser: a generator step per read, a copy into its stream buffer, another to cut the
frame out, a third to unmask it. A 1 MiB ``fs/writeBlock`` (1.4 MB of base64 JSON) costs some
twenty reads and four copies before the JSON parser sees it, on the thread that also competes
for the GIL with the request handlers.

:class:`FastReceiveMixin` replaces the connection's receiving thread (``recv_events``). Once the
opening handshake is done, it reads into one buffer that grows to hold the frame being read
(up to the 16 MiB frame limit; past :data:`KEEP_SIZE` only while that frame lasts), and a
plain data frame (FIN set, no RSV bits, masked, text or binary, within the size limits) goes
from that buffer through the C unmasking straight into the message queue: one copy.
Everything else keeps websockets' exact behaviour:

- a whole control frame (ping, pong, close) is fed, as bytes, to websockets' protocol object,
  which answers pings, matches pongs to keepalive pings and runs the closing handshake;
- any other frame (fragments, reserved bits, an unmasked or oversized frame, an unknown
  opcode), and every byte after it, goes to websockets' parser for good, so errors close the
  connection with websockets' own codes (1002, 1009) and fragmented messages are reassembled
  by it;
- text is still decoded, and checked as UTF-8 (close 1007), where it always was: in the
  connection's ``recv``.

The protocol object is fed whole frames only, so its parser always waits at a frame boundary
and can take over at any point. The handshake is read by websockets too; the fast path starts
only if the request ended exactly where the bytes read so far ended (a client that sent frames
before the server's answer stays on websockets' path).

This leans on websockets internals of :class:`websockets.sync.connection.Connection` (its
receive loop's attributes, listed in :data:`HOOKS`); ``tests/test_server_receive.py`` pins them
and the behaviour, and :data:`FAST_RECEIVE` is False, so websockets' own loop runs, when an
installed version lacks one.
"""

from __future__ import annotations

import selectors
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.connection import Connection
from websockets.sync.server import ServerConnection
from websockets.sync.utils import Deadline

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = ["FAST_RECEIVE", "HOOKS", "FastReceiveMixin"]

READ_SIZE = 64 * 1024
"""Bytes asked of the kernel per read while no large frame is pending (as websockets does); a
large frame's remaining bytes are asked for at once."""
KEEP_SIZE = 4 * 1024 * 1024
"""A buffer grown past this size for one large frame is given back once that frame is read;
smaller ones stay, for the next megabyte-sized block of a stream."""

_TEXT, _BINARY = 0x1, 0x2
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
_OPCODES = {_TEXT: Opcode.TEXT, _BINARY: Opcode.BINARY}
_REQUEST_END = b"\r\n\r\n"
_HANDSHAKE, _FAST, _STOCK = 0, 1, 2
_HANDSHAKE_LIMIT = 64 * 1024  # a longer request: leave it all to websockets, keep no copy

HOOKS = (
    "shutdown_watcher",
    "socket",
    "recv_flow_control",
    "protocol_mutex",
    "protocol",
    "send_data",
    "close_deadline",
    "close_timeout",
    "process_event",
    "recv_messages",
    "set_connection_exc",
    "close_socket",
    "request_rcvd",
)
"""Attributes of a websockets sync server connection that the receive loop uses."""


def _has_hooks() -> bool:
    methods = ("send_data", "process_event", "set_connection_exc", "close_socket")
    if not all(callable(getattr(ServerConnection, name, None)) for name in methods):
        return False
    # The others are instance attributes, set by the constructor: look for them in its code.
    names = set(Connection.__init__.__code__.co_names) | set(
        ServerConnection.__init__.__code__.co_names
    )
    return all(name in names or name in methods for name in HOOKS) and callable(
        getattr(Connection, "recv_events", None)
    )


FAST_RECEIVE = _has_hooks()


class _Buffer:
    """One receive buffer: unread bytes at ``[pos, end)``, reads land after them.

    Thread-safety: the connection's receiving thread only.
    """

    __slots__ = ("buf", "end", "pos", "view")

    def __init__(self) -> None:
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.end = 0

    def room(self, need: int) -> memoryview:
        """A view where the next read lands, with space for ``need`` bytes counted from the
        read position (unread ones included): the tail moves to the front, the buffer grows."""
        pos, end = self.pos, self.end
        if len(self.buf) - pos < need or (pos and end - pos < READ_SIZE // 8):
            unread = end - pos
            if pos:
                # Through a copy: the source and the destination may overlap.
                self.buf[:unread] = bytes(self.view[pos:end])
                self.pos, self.end = 0, unread
            if len(self.buf) < need:
                self.view.release()
                self.buf.extend(bytes(need - len(self.buf)))
                self.view = memoryview(self.buf)
        return self.view[self.end :]

    def skip(self, count: int) -> None:
        """Mark the next ``count`` unread bytes as read."""
        self.pos += count
        if self.pos == self.end:
            self.pos = self.end = 0
            if len(self.buf) > KEEP_SIZE:
                self.view.release()
                self.buf = bytearray(READ_SIZE)
                self.view = memoryview(self.buf)

    def take(self, count: int) -> bytes:
        """The next ``count`` unread bytes, as a copy."""
        data = bytes(self.view[self.pos : self.pos + count])
        self.skip(count)
        return data

    def take_all(self) -> bytes:
        return self.take(self.end - self.pos)


class FastReceiveMixin:
    """``recv_events`` for a websockets :class:`ServerConnection` subclass (see the module).

    Put it before ``ServerConnection`` in the bases. Thread-safety: ``recv_events`` runs on the
    connection's own receiving thread, as in websockets.
    """

    # Provided by websockets' ServerConnection (HOOKS); typed loosely on purpose.
    socket: Any
    protocol: Any
    protocol_mutex: Any
    recv_flow_control: Any
    recv_messages: Any
    shutdown_watcher: Any
    close_deadline: Any
    close_timeout: Any
    request_rcvd: Any

    def recv_events(self) -> None:
        if not FAST_RECEIVE:
            super().recv_events()  # type: ignore[misc]
            return
        try:
            self._receive_loop()
        finally:
            # As ServerConnection.recv_events: a connection closed during the handshake must
            # not leave the handshake waiting for the request.
            self.request_rcvd.set()

    # -- the loop --------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        conn: Any = self
        poller = selectors.DefaultSelector()
        try:
            poller.register(self.shutdown_watcher, selectors.EVENT_READ)
            try:
                poller.register(self.socket, selectors.EVENT_READ, data="socket")
            except (OSError, ValueError):
                return  # close_socket() already ran
            mode = _HANDSHAKE
            handshake = bytearray()
            buffer = _Buffer()
            need = 0  # bytes of the pending frame, counted from the read position
            while True:
                try:
                    with self.recv_flow_control:  # the message queue is full: wait
                        pass
                    for key, _ in poller.select():
                        if key.data == "socket":
                            break
                    else:
                        break  # the shutdown watcher: the socket is being closed
                    if mode == _HANDSHAKE:
                        mode = self._after_handshake(handshake, mode)
                    if mode == _FAST:
                        view = buffer.room(max(need, READ_SIZE))
                        count = self.socket.recv_into(view)
                        view.release()
                        data = b""
                    else:
                        data = self.socket.recv(READ_SIZE)
                        count = len(data)
                except Exception as exc:
                    with self.protocol_mutex:
                        conn.set_connection_exc(exc)
                    break
                if count == 0:
                    break
                if mode != _FAST:
                    if mode == _HANDSHAKE:
                        handshake += data
                    if not self._feed(data):
                        break
                    continue
                buffer.end += count
                need, stop = self._read_frames(buffer)
                if need < 0:
                    mode = _STOCK  # the rest went to websockets' parser
                if stop:
                    break
            with self.protocol_mutex:
                self.protocol.receive_eof()
                events = self.protocol.events_received()
                conn.send_data()
            for event in events:
                conn.process_event(event)
        except Exception as exc:
            # A safety net, as in websockets: never expected to run.
            conn.logger.error("unexpected internal error", exc_info=True)
            with self.protocol_mutex:
                conn.set_connection_exc(exc)
        finally:
            conn.close_socket()
            poller.close()
            self.shutdown_watcher.close()

    def _after_handshake(self, handshake: bytearray, mode: int) -> int:
        """The mode once the handshake may be over: fast when websockets' parser holds no byte
        beyond the request, else websockets' parser for good; still handshake while CONNECTING."""
        with self.protocol_mutex:
            state = self.protocol.state
            pending = getattr(getattr(self.protocol, "reader", None), "buffer", b"?")
        if state is State.CONNECTING and len(handshake) <= _HANDSHAKE_LIMIT:
            return mode
        # The request's blank line is the first one and the last bytes read.
        request_end = handshake.find(_REQUEST_END) + len(_REQUEST_END)
        if state is State.OPEN and not pending and request_end == len(handshake):
            return _FAST
        return _STOCK

    def _feed(self, data: bytes) -> bool:
        """Hand ``data`` to websockets' protocol and process what it made of it, as websockets'
        own loop does. False when the connection is done (a write failed)."""
        conn: Any = self
        with self.protocol_mutex:
            self.protocol.receive_data(data)
            events = self.protocol.events_received()
            try:
                conn.send_data()
            except Exception as exc:
                conn.set_connection_exc(exc)
                return False
            if self.protocol.close_expected() and self.close_deadline is None:
                self.close_deadline = Deadline(self.close_timeout)
        for event in events:
            conn.process_event(event)
        return True

    def _read_frames(self, buffer: _Buffer) -> tuple[int, bool]:
        """Deliver every whole frame in ``buffer``.

        Returns ``(need, stop)``: ``need`` is the size of the incomplete frame at the read
        position (0 when its header is not complete yet, -1 when the stream went to
        websockets' parser); ``stop`` ends the loop.
        """
        protocol = self.protocol
        limit = min(
            size
            for size in (protocol.max_message_size, protocol.max_fragment_size, 2**63)
            if size is not None
        )
        buf = buffer.buf
        while True:
            pos = buffer.pos
            have = buffer.end - pos
            if have < 2:
                return 0, False
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            header = 6  # two bytes plus the mask key
            if length == 126:
                header = 8
                if have < 4:
                    return 0, False
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                header = 14
                if have < 10:
                    return 0, False
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            opcode = b0 & 0x0F
            # FIN set, no RSV bit, masked: the frame is whole and plain.
            plain = (b0 & 0xF0) == 0x80 and b1 & 0x80 and protocol.state is State.OPEN
            if plain and opcode in _OPCODES and length <= limit:
                size = header + length
                if have < size:
                    return size, False
                mask = bytes(buffer.view[pos + header - 4 : pos + header])
                payload = apply_mask(buffer.view[pos + header : pos + size], mask)
                buffer.skip(size)
                frame = Frame(_OPCODES[opcode], payload)
                if protocol.debug:
                    protocol.logger.debug("< %s", frame)
                try:
                    self.recv_messages.put(frame)
                except EOFError:
                    return 0, True  # the message queue is closed: the connection is going
                continue
            if plain and opcode in (_CLOSE, _PING, _PONG) and length <= 125:
                size = header + length
                if have < size:
                    return size, False
                if not self._feed(buffer.take(size)):
                    return 0, True
                continue
            # Anything else, and all that follows, is websockets' to parse.
            return -1, not self._feed(buffer.take_all())
