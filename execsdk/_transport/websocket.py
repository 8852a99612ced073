"""WebSocket transport on websocket-client.

Quirks handled here (PROTOCOL.md §1): codex 0.169 refuses any handshake that carries an
``Origin`` header, so it is suppressed; a single frame above 16 MiB drops the connection, so
large messages go out as continuation frames; TCP_NODELAY avoids Nagle stalls on small calls.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any

import websocket

from execsdk.errors import ConnectError, ConnectTimeout

__all__ = ["FRAME_LIMIT", "WebSocketTransport"]

log = logging.getLogger(__name__)

FRAME_LIMIT = 8 * 2**20
"""Largest single frame we send; bigger messages are fragmented (the server's cap is 16 MiB)."""


class WebSocketTransport:
    """A connected WebSocket. Thread-safety: as :class:`execsdk._transport.base.Transport`."""

    def __init__(self, ws: websocket.WebSocket, url: str) -> None:
        self._ws = ws
        self._url = url
        self._send_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closing = False
        self._eof = threading.Event()
        self._reading = False

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

    def send(self, text: str, *, timeout: float | None = None) -> None:
        data = text.encode("utf-8")
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("timed out waiting to send on the WebSocket")
        try:
            if len(data) <= FRAME_LIMIT:
                self._ws.send(data, websocket.ABNF.OPCODE_TEXT)
                return
            # Fragment: the server accepts messages up to 64 MiB but frames only up to 16 MiB.
            opcode = websocket.ABNF.OPCODE_TEXT
            view = memoryview(data)
            for start in range(0, len(data), FRAME_LIMIT):
                piece = view[start : start + FRAME_LIMIT]
                fin = 1 if start + FRAME_LIMIT >= len(data) else 0
                self._ws.send_frame(websocket.ABNF.create_frame(bytes(piece), opcode, fin))
                opcode = websocket.ABNF.OPCODE_CONT
        except websocket.WebSocketConnectionClosedException as exc:
            raise BrokenPipeError(f"WebSocket to {self._url} is closed") from exc
        finally:
            self._send_lock.release()

    def recv(self) -> str | bytes | None:
        self._reading = True
        try:
            msg = self._ws.recv()
        except websocket.WebSocketConnectionClosedException:
            self._eof.set()
            if self._closing:
                return None
            raise
        except OSError:
            self._eof.set()
            if self._closing:
                return None
            raise
        finally:
            self._reading = False
        if msg == "" or msg == b"":
            # websocket-client returns "" for a close frame (it has already echoed it).
            self._eof.set()
            return None
        return msg

    def close(self, timeout: float | None = 5.0) -> None:
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        try:
            if self._send_lock.acquire(timeout=1.0 if timeout is None else min(timeout, 1.0)):
                try:
                    self._ws.send_close()
                finally:
                    self._send_lock.release()
        except (OSError, websocket.WebSocketException) as exc:
            log.debug("sending the close frame to %s failed: %r", self._url, exc)
        # Let the reader see the close echo; then cut the socket so a blocked recv always ends.
        if not self._eof.is_set():
            self._eof.wait(0.5 if timeout is None else min(timeout, 0.5))
        sock = self._ws.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # websocket-client's close() returns early once it saw the peer's close frame, which
        # would leak the socket; shutdown() always closes it.
        self._ws.shutdown()  # type: ignore[no-untyped-call]
