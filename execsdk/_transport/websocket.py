"""WebSocket transport: websocket-client for the handshake, our own framing afterwards.

Quirks handled here (PROTOCOL.md §1): codex 0.169 refuses any handshake that carries an
``Origin`` header, so it is suppressed; a single frame above 16 MiB drops the connection, so
large messages go out as continuation frames.

Why the frames are ours (docs/performance.md): websocket-client reads a frame with at least
three ``recv`` calls (2 header bytes, the length, the payload, each at most 16 KiB) and decodes
every text frame to ``str``. Each of those calls releases the GIL, so a stream of 8 KiB output
notifications turned into a thread ping-pong. Here the reader pulls up to 256 KiB per system
call, cuts every complete frame out of that buffer, and hands the payload on as ``bytes``
(the JSON parser takes bytes). Sends are *combined* and *bounded* (``writequeue.py``): a caller
that finds the socket busy queues its message and returns; the thread already sending writes
everything queued in one system call, so concurrent callers never sleep on a send lock; writes
are non-blocking (``MSG_DONTWAIT``, so the socket itself stays blocking for the reader) and wait
for room only until the writing caller's deadline, after which a flusher thread
(``execsdk-wsflush-<n>``) finishes what is queued. TCP_NODELAY is set and TCP_QUICKACK re-armed
after every read, so neither Nagle's algorithm nor delayed ACKs hold small replies back
(without them a request/notification exchange stalls ~40 ms on loopback).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

import websocket

from execsdk._deadline import Deadline
from execsdk._transport.writequeue import BlockingWriteQueue, WriteQueue, wait_writable
from execsdk._wsframes import frame_header, xor_mask
from execsdk.errors import ConnectError, ConnectTimeout

__all__ = ["FRAME_LIMIT", "MAX_MESSAGE", "WebSocketTransport"]

log = logging.getLogger(__name__)

FRAME_LIMIT = 8 * 2**20
"""Largest single frame we send; bigger messages are fragmented (the server's cap is 16 MiB)."""

MAX_MESSAGE = 2**30
"""Largest message we accept (a 512 MiB ``fs/readFile`` answer is ~700 MB of JSON)."""

_READ_SIZE = 256 * 1024
"""Bytes asked of the socket per read; frames bigger than this are read straight into place."""
_KEEP_LARGE = 4 * 2**20
"""Frames are read straight into place in one buffer that is kept for the next one up to this
size: a fresh 1.4 MB buffer per ``fs/readBlock`` answer cost zero-filling and a page fault per
4 KiB page (1.8 -> 1.2 ms of client CPU per MiB read, 540 -> 780 MB/s)."""

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


_MASK_CHUNK = 16 * 1024
"""Masking works on big integers; past ~16 KiB they fall out of the CPU cache and it slows."""


_C_MASK_FROM = 4096
"""Payloads from this size up are masked in C when ``websockets`` is installed (the ``fast``
extra): its ``speedups.apply_mask`` runs ~70x faster than the big-integer XOR (0.07 ms against
5.3 ms per 1.4 MB block). Smaller ones never trigger the import (~40 ms, once)."""

_c_mask: Callable[[bytes | memoryview, bytes], bytes] | None = None
_c_mask_tried = False


def _load_c_mask() -> Callable[[bytes | memoryview, bytes], bytes] | None:
    global _c_mask, _c_mask_tried
    if not _c_mask_tried:
        _c_mask = _checked_c_mask()
        _c_mask_tried = True
    return _c_mask


def _checked_c_mask() -> Callable[[bytes | memoryview, bytes], bytes] | None:
    """websockets' C masking, if importable and it still masks as RFC 6455 says.

    websockets does not document ``speedups.apply_mask``: it is checked against the Python
    masking once, on a sample of every length class, so a changed or missing function costs
    speed, never correctness.
    """
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # no websockets, or a build without its C extension
        return None
    key = b"\x9a\x03\xf1\x5c"
    sample = bytes(range(256)) * 41  # 10,496 bytes: not a multiple of 4 or of 8
    try:
        ok = all(
            apply_mask(memoryview(sample)[:n], key) == xor_mask(key, sample[:n])
            for n in (0, 1, 7, 4096, len(sample))
        )
    except Exception:
        ok = False
    if not ok:
        log.warning("websockets.speedups.apply_mask does not mask as expected; not using it")
    return apply_mask if ok else None


def _masked_parts(key: bytes, data: bytes | memoryview) -> list[bytes]:
    """``data`` XOR the 4-byte ``key`` repeated (RFC 6455 §5.3), as pieces to join.

    In C when available (see ``_C_MASK_FROM``). Otherwise: Python has no vector XOR; one
    big-integer XOR per 16 KiB piece (with the key pattern converted once per frame) runs
    ~2.5x faster than one over the whole payload.
    """
    n = len(data)
    if n >= _C_MASK_FROM:
        c_mask = _c_mask if _c_mask_tried else _load_c_mask()
        if c_mask is not None:
            return [c_mask(data, key)]
    if n <= _MASK_CHUNK:
        return [xor_mask(key, data)] if n else []
    view = memoryview(data)
    pattern = int.from_bytes(key * (_MASK_CHUNK // 4), "little")
    from_bytes = int.from_bytes
    full = n - n % _MASK_CHUNK
    parts = [
        (from_bytes(view[i : i + _MASK_CHUNK], "little") ^ pattern).to_bytes(_MASK_CHUNK, "little")
        for i in range(0, full, _MASK_CHUNK)
    ]
    if full < n:
        parts.append(xor_mask(key, view[full:]))
    return parts


class _MaskKeys:
    """Fresh masking keys from the OS's CSPRNG, fetched 1 KiB at a time (one system call per
    256 frames instead of one per frame). Thread-safety: any thread (one lock)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the batch (after fork: a child must not reuse its parent's keys)."""
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def __call__(self) -> bytes:
        with self._lock:
            at = self._at
            if at >= len(self._pool):
                self._pool = os.urandom(1024)
                at = 0
            self._at = at + 4
            return self._pool[at : at + 4]


_mask_key = _MaskKeys()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mask_key.reset)


def _frame(first: int, payload: bytes | memoryview) -> bytes:
    """One client frame: ``first`` is FIN|opcode; the payload is masked with a fresh key."""
    key = _mask_key()
    head = frame_header(first, len(payload), masked=True)
    return b"".join((head, key, *_masked_parts(key, payload)))


def _message_frames(data: bytes, opcode: int) -> bytes:
    """A whole message as wire bytes: one frame, or continuation frames of FRAME_LIMIT."""
    if len(data) <= FRAME_LIMIT:
        return _frame(_FIN | opcode, data)
    view = memoryview(data)
    parts = []
    for start in range(0, len(data), FRAME_LIMIT):
        last = start + FRAME_LIMIT >= len(data)
        op = opcode if start == 0 else _OP_CONT
        parts.append(_frame((_FIN if last else 0) | op, view[start : start + FRAME_LIMIT]))
    return b"".join(parts)


class _ProtocolViolation(ConnectionAbortedError):
    """The server broke the WebSocket framing rules; the link cannot be trusted."""


class WebSocketTransport:
    """A connected WebSocket. Thread-safety: as :class:`execsdk._transport.base.Transport`."""

    def __init__(self, ws: websocket.WebSocket, url: str) -> None:
        self._ws = ws
        sock = ws.sock
        if sock is None:
            raise ConnectError(f"the WebSocket to {url} has no socket", url=url)
        self._sock: socket.socket = sock
        self._url = url
        self._out: WriteQueue | BlockingWriteQueue
        if _DONTWAIT is not None and not isinstance(sock, ssl.SSLSocket):
            self._out = WriteQueue(
                f"WebSocket to {url}",
                "execsdk-wsflush",
                write_some=self._write_some,
                wait_writable=self._wait_writable,
            )
        else:
            # TLS (or no MSG_DONTWAIT): only the flusher thread writes, with blocking writes.
            self._out = BlockingWriteQueue(
                f"WebSocket to {url}", "execsdk-wsflush", write_all=sock.sendall
            )
        self._close_lock = threading.Lock()
        self._closing = False
        self._eof = threading.Event()
        # Reader state (reader thread only).
        # Unread bytes are buf[_pos:_end]; reads land right after them, so a frame's payload
        # is copied once, when it is cut out (bytes from a memoryview slice).
        self._buf = bytearray(2 * _READ_SIZE + 64)
        self._view = memoryview(self._buf)
        self._pos = 0
        self._end = 0
        self._large: bytearray | None = None  # where large payloads are read, reused
        self._quickack = _QUICKACK is not None and sock.family in (
            socket.AF_INET,
            socket.AF_INET6,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WebSocketTransport:
        """Open a WebSocket to ``url`` within ``timeout`` seconds.

        Raises ``ConnectTimeout`` when no connection is made in time, ``ConnectError`` (with
        the fix in its message) for refusals such as HTTP 401/403 or a closed port.
        """
        if not url.startswith(("ws://", "wss://")):
            raise ConnectError(
                f"unsupported URL {url!r}: use ws://host:port or wss://host:port", url=url
            )
        headers = [f"Authorization: Bearer {token}"] if token else []
        kwargs: dict[str, Any] = {}
        if ssl_context is not None:
            kwargs["sslopt"] = {"context": ssl_context}
        try:
            ws = websocket.create_connection(
                url,
                timeout=timeout,
                header=headers,
                suppress_origin=True,
                skip_utf8_validation=True,
                enable_multithread=True,
                sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                **kwargs,
            )
        except websocket.WebSocketBadStatusException as exc:
            status = getattr(exc, "status_code", None)
            if status == 401:
                hint = "pass token=... (or set EXECSDK_TOKEN) with the server's token"
            elif status == 403:
                hint = "the server refused the handshake (an Origin header or a policy)"
            else:
                hint = "is this an exec-server URL?"
            raise ConnectError(
                f"server at {url} refused the handshake (HTTP {status}): {hint}", url=url
            ) from exc
        except (TimeoutError, websocket.WebSocketTimeoutException) as exc:
            raise ConnectTimeout(
                f"no WebSocket connection to {url} within {timeout}s: is the server running "
                "and reachable? (raise connect_timeout for a slow network)",
                url=url,
            ) from exc
        except ConnectionRefusedError as exc:
            raise ConnectError(
                f"connection to {url} refused: no server listens there; start one with "
                "`execsdk serve` or `codex exec-server --listen ws://127.0.0.1:PORT`",
                url=url,
            ) from exc
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectError(f"could not connect to {url}: {exc}", url=url) from exc
        ws.settimeout(None)
        return cls(ws, url)

    @property
    def description(self) -> str:
        return self._url

    # ------------------------------------------------------------------ sending

    def send(self, text: str | bytes, *, timeout: float | None = None) -> None:
        """Send one text message within ``timeout`` seconds (the contract is
        :meth:`Transport.send`'s).

        A caller that finds another thread writing queues its message and returns at once;
        that thread (or the flusher) writes it. A caller that writes waits for room only until
        its deadline: then it withdraws its message if nothing of it went out, or leaves the
        rest to the flusher thread (``SendTimeout.started``); the stream stays valid either way.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        self._out.put(_message_frames(data, _OP_TEXT), timeout)

    def _write_some(self, views: list[bytes | memoryview]) -> int:
        # Per call, not the socket's mode: a non-blocking socket would make the reader's
        # recv_into fail with EAGAIN instead of waiting.
        assert _DONTWAIT is not None
        try:
            if len(views) == 1:
                return self._sock.send(views[0], _DONTWAIT)
            return self._sock.sendmsg(views, (), _DONTWAIT)
        except BlockingIOError:
            return 0

    def _wait_writable(self, timeout: float | None) -> bool:
        return wait_writable(self._sock.fileno(), timeout)

    # ------------------------------------------------------------------ receiving

    def _fill(self) -> bool:
        """Read more bytes after the unread ones; False at end of stream."""
        pos, end = self._pos, self._end
        if pos == end:
            pos = end = 0
        elif len(self._buf) - end < _READ_SIZE:
            # Too little room at the tail: move the unread part (less than one frame of at
            # most _READ_SIZE, or it would have been read straight into place) to the front.
            # Through a copy: the two ranges may overlap, and bytearray slice assignment
            # copies with memcpy, which does not allow that.
            self._buf[: end - pos] = self._view[pos:end].tobytes()
            pos, end = 0, end - pos
        self._pos, self._end = pos, end
        try:
            n = self._sock.recv_into(self._view[end:], len(self._buf) - end)
        except OSError:
            self._eof.set()
            if self._closing:
                return False
            raise
        if not n:
            self._eof.set()
            return False
        if self._quickack:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
            except OSError:
                self._quickack = False
        self._end = end + n
        return True

    def _read_exact(self, first: bytes | memoryview, n: int) -> bytes:
        """A big payload: what is buffered (``first``) plus the rest read straight into place."""
        into = self._large
        if into is None or len(into) < n:
            into = bytearray(n)
            if n <= _KEEP_LARGE:
                self._large = into
        view = memoryview(into)
        view[: len(first)] = first
        got = len(first)
        while got < n:
            try:
                k = self._sock.recv_into(view[got:], min(n - got, 16 * 2**20))
            except OSError:
                self._eof.set()
                if self._closing:
                    raise EOFError("connection closed during a frame") from None
                raise
            if k == 0:
                self._eof.set()
                raise EOFError("connection closed during a frame")
            got += k
        data = view[:n].tobytes()
        view.release()
        return data

    def _next_frame(self) -> tuple[int, bytes] | None:
        """The next frame as (first byte, payload); None at end of stream."""
        while True:
            buf = self._buf
            pos = self._pos
            avail = self._end - pos
            if avail >= 2:
                first = buf[pos]
                second = buf[pos + 1]
                if second & 0x80:
                    raise _ProtocolViolation(f"{self._url} sent a masked frame")
                if first & 0x70:
                    raise _ProtocolViolation(f"{self._url} set reserved frame bits")
                n = second & 0x7F
                head = 2
                if n == 126:
                    head = 4
                    if avail >= 4:
                        n = (buf[pos + 2] << 8) | buf[pos + 3]
                elif n == 127:
                    head = 10
                    if avail >= 10:
                        n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                if avail >= head:
                    if n > MAX_MESSAGE:
                        raise _ProtocolViolation(f"{self._url} sent a frame of {n} bytes")
                    end = pos + head + n
                    if end <= self._end:
                        self._pos = end
                        return first, self._view[pos + head : end].tobytes()
                    if n > _READ_SIZE:
                        start, stop = pos + head, self._end
                        self._pos = self._end = 0
                        return first, self._read_exact(self._view[start:stop], n)
            if not self._fill():
                return None

    def buffered(self) -> bool:
        """True when a whole frame is already buffered, so ``recv`` will not wait for the
        network (reader thread only; the RPC reader batches work until this turns False)."""
        buf = self._buf
        pos = self._pos
        avail = self._end - pos
        if avail < 2:
            return False
        n = buf[pos + 1] & 0x7F
        if n < 126:
            return avail >= 2 + n
        if n == 126:
            return avail >= 4 and avail >= 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
        return avail >= 10 and avail >= 10 + int.from_bytes(buf[pos + 2 : pos + 10], "big")

    def recv(self) -> str | bytes | None:
        """The next message's payload as bytes (text frames are not decoded: the JSON parser
        takes UTF-8 bytes); None once the server closed the connection."""
        parts: list[bytes] | None = None
        size = 0
        while True:
            try:
                frame = self._next_frame()
            except EOFError:
                if self._closing:
                    return None
                raise
            if frame is None:
                if self._closing:
                    return None
                raise ConnectionResetError(
                    f"{self._url} closed the connection without a close frame"
                )
            first, payload = frame
            opcode = first & 0x0F
            if opcode >= _OP_CLOSE:
                if not first & _FIN or len(payload) > 125:
                    raise _ProtocolViolation(f"{self._url} sent a bad control frame")
                if opcode == _OP_PING:
                    self._control(_OP_PONG, payload)
                elif opcode == _OP_CLOSE:
                    self._on_close_frame(payload)
                    return None
                elif opcode != _OP_PONG:
                    raise _ProtocolViolation(f"{self._url} sent unknown opcode {opcode}")
                continue
            if opcode == _OP_CONT:
                if parts is None:
                    raise _ProtocolViolation(f"{self._url} sent a stray continuation frame")
                parts.append(payload)
                size += len(payload)
            elif opcode in (_OP_TEXT, _OP_BINARY):
                if parts is not None:
                    raise _ProtocolViolation(f"{self._url} interleaved two messages")
                if first & _FIN:
                    return payload
                parts = [payload]
                size = len(payload)
                continue
            else:
                raise _ProtocolViolation(f"{self._url} sent unknown opcode {opcode}")
            if size > MAX_MESSAGE:
                raise _ProtocolViolation(f"{self._url} sent a message over {MAX_MESSAGE} bytes")
            if first & _FIN:
                return b"".join(parts)

    def _control(self, opcode: int, payload: bytes, timeout: float = 0.0) -> None:
        """Send a control frame without blocking the reader: what the socket does not take
        now is written by the flusher thread (never withdrawn)."""
        try:
            self._out.put(_frame(_FIN | opcode, payload), timeout, withdraw=False)
        except OSError as exc:
            log.debug("sending a control frame on %s failed: %r", self._url, exc)

    def _on_close_frame(self, payload: bytes) -> None:
        """The server closes: echo its close frame (RFC 6455 §5.5.1) unless we started it."""
        self._eof.set()
        if not self._closing:
            code = payload[:2] if len(payload) >= 2 else struct.pack("!H", 1000)
            self._control(_OP_CLOSE, code)

    # ------------------------------------------------------------------ closing

    def close(self, timeout: float | None = 5.0) -> None:
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        grace = Deadline(0.5 if timeout is None else min(max(timeout, 0.0), 0.5))
        self._control(_OP_CLOSE, struct.pack("!H", 1000), grace.left() or 0.0)
        # Let the reader see the close echo; then cut the socket so a blocked recv always ends
        # (and a write in progress fails, which ends the flusher thread).
        if not self._eof.is_set():
            self._eof.wait(grace.left())
        self._out.shut()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # websocket-client's close() returns early once it saw the peer's close frame, which
        # would leak the socket; shutdown() always closes it.
        self._ws.shutdown()  # type: ignore[no-untyped-call]
        if not self._out.join(1.0 if timeout is None else min(timeout, 1.0)):
            log.debug("the flusher thread of %s is still writing after close()", self._url)
