"""The WebSocket transport of ``execsdk serve``: websockets' threaded sync server.

HTTP behaviour follows codex 0.169 (PROTOCOL.md §1): a request carrying an ``Origin`` header is
refused with 403 (browsers must not reach the server); ``GET /readyz`` answers 200; a plain
``GET /`` gets 400; other paths 404. With an authenticator configured (``auth.py``: a
capability token or HS256-signed JWTs) the upgrade needs ``Authorization: Bearer <token>``
(401 otherwise, with a fixed phrase as body). Messages up to 64 MiB are accepted, in frames of
up to 16 MiB; the server pings every 30 s. With ``root`` every path is confined to that
directory (``confine.py``).

websockets logs handshake headers and frame previews at DEBUG; its logger here is wrapped so
that the ``Authorization`` header and frame contents never reach the log.

Every connection runs on a websockets handler thread (renamed ``execsdk-serve-conn-<n>``) that
feeds :class:`~execsdk.server.connection.Connection`. Frames are read by
:class:`~execsdk.server.ws_receive.FastReceiveMixin` (plain data frames skip websockets'
parser, everything else goes through it); replies leave through the connection's
:class:`~execsdk.server.sessions.Outbox` writer thread, which hands over everything queued as one
batch: :class:`_BatchingConnection` frames it and writes it with one system call. Each socket
keeps little unsent data in the kernel (``TCP_NOTSENT_LOWAT``), so a slow client's backlog
waits in the outbox, where answers overtake it.
"""

from __future__ import annotations

import functools
import http
import itertools
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.sync.server import Server, ServerConnection, serve

from execsdk._local.processes import LocalProcessBackend
from execsdk.server.auth import Authenticator, CapabilityToken
from execsdk.server.confine import Confinement
from execsdk.server.connection import SERVING, Connection
from execsdk.server.outbox import Outbox
from execsdk.server.sessions import DEFAULT_SESSION_GRACE, SessionRegistry
from execsdk.server.ws_receive import FastReceiveMixin

__all__ = ["MAX_FRAME_SIZE", "MAX_MESSAGE_SIZE", "WsServer"]

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024
PING_INTERVAL = 30.0
PING_TIMEOUT = 60.0
_conn_ids = itertools.count(1)


def _plain(status: int, body: str = "") -> Response:
    headers = Headers()
    if body:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["Content-Length"] = str(len(body.encode()))
    phrase = http.HTTPStatus(status).phrase
    return Response(status, phrase, headers, body.encode())


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' logger with credentials and frame contents taken out.

    websockets logs each handshake header (``< Authorization: Bearer ...``) and a preview of
    each frame at DEBUG; here the header value becomes ``<redacted>`` and a frame becomes its
    type and size. Thread-safety: stateless; any thread.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if (
            msg in ("< %s: %s", "> %s: %s")
            and len(args) == 2
            and str(args[0]).lower() in _SECRET_HEADERS
        ):
            args = (args[0], "<redacted>")
        elif msg in ("< %s", "> %s") and len(args) == 1 and isinstance(args[0], Frame):
            frame = args[0]
            args = (f"{frame.opcode.name} [{len(frame.data)} bytes]",)
        self.logger.log(level, msg, *args, **kwargs)


_WS_LOGGER = _RedactingLogger(logging.getLogger("websockets.server"), {})


_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)
_WRITABLE_POLL_MS = 1000  # how often a writer waiting for a silent peer checks the state


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, unfragmented text frame of ``length`` payload bytes.

    RFC 6455 §5.2: a server's frames are never masked; lengths below 126 fit the second byte,
    below 65536 a 16-bit extension, otherwise a 64-bit one.
    """
    if length < 126:
        return bytes((_FIN_TEXT, length))
    if length < 65536:
        return _HEADER_16.pack(_FIN_TEXT, 126, length)
    return _HEADER_64.pack(_FIN_TEXT, 127, length)


class _BatchingConnection(FastReceiveMixin, ServerConnection):
    """A websockets server connection that sends a batch of text messages in one socket write.

    websockets' public ``send`` takes one message, builds a ``Frame`` object, serialises it
    (two copies of the payload) and writes it with its own ``sendall``. For a stream of 8 KiB
    ``process/output`` notifications that costs more CPU than everything else the server does
    per chunk (and the client shares the machine's cores). :meth:`send_texts` instead takes the
    connection's send lock the way ``send`` does (``send_context``: the state must be OPEN;
    pings, pongs and close frames written by other threads keep their place), and
    :meth:`send_data`, which websockets calls under that lock to flush, writes the batch's
    frames plus whatever the protocol queued with one ``sendall``.

    Framing here is safe because a server's text frame is plain RFC 6455 (no mask) and the
    server negotiates no extension (``compression=None``); should one ever be negotiated, the
    frames go through the protocol object instead. This leans on websockets internals that a
    ``serve(create_connection=...)`` subclass may use: ``send_context``, ``send_data``,
    ``protocol``, ``socket``, ``close_deadline``. ``tests/test_server_batching.py`` pins them
    and the frame bytes; :data:`_BATCHING` falls back to plain ``send`` per message when an
    installed websockets lacks the hooks.

    Thread-safety: as :class:`ServerConnection`; :meth:`send_texts` from one thread at a time
    (the outbox's writer, or a worker sending its answer directly: the outbox takes turns).
    """

    _texts: list[bytes] | None = None  # handed from send_texts to send_data, under the lock
    _poller: select.poll | None = None  # one sending thread at a time (the outbox's turn)

    def send_texts(self, messages: list[bytes]) -> None:
        """Send each UTF-8 encoded message as one text frame, all in one socket write.

        First waits, without holding the send lock, until the kernel takes more data: the
        receiving side of websockets needs that lock too, so a writer blocked in ``sendall``
        for a client that does not read would stop the server from reading its requests.

        Raises:
            websockets.exceptions.ConnectionClosed: the connection is closed (as ``send``).
        """
        self._wait_writable()
        with self.send_context():
            protocol = self.protocol
            if protocol.extensions:
                for message in messages:
                    protocol.send_text(message)
            else:
                self._texts = messages  # written by send_data when send_context exits

    def _wait_writable(self) -> None:
        poller = self._poller
        if poller is None:
            try:
                fd = self.socket.fileno()
            except OSError:
                return
            if fd < 0:
                return  # closed: send_context reports it
            poller = self._poller = select.poll()
            poller.register(fd, select.POLLOUT)
        # With TCP_NOTSENT_LOWAT set, writable means little unsent data is left; an error or
        # hang-up also ends the wait (send_context then raises ConnectionClosed).
        while not poller.poll(_WRITABLE_POLL_MS):
            if self.protocol.state is not State.OPEN:
                return

    def send_data(self) -> None:
        """Write the pending batch and what the protocol queued, joined into one ``sendall``.

        Same contract as the base method (called with ``protocol_mutex`` held; an empty write
        from the protocol means "half-close"; writes are bounded by the close deadline once
        closing began).
        """
        parts: list[bytes] = []
        texts = self._texts
        if texts is not None:
            self._texts = None
            for message in texts:
                parts.append(text_frame_header(len(message)))
                parts.append(message)
        for data in self.protocol.data_to_send():
            if data:
                parts.append(data)
                continue
            self._write(parts)
            parts = []
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:  # socket already closed
                pass
        self._write(parts)

    def _write(self, parts: list[bytes]) -> None:
        if not parts:
            return
        deadline = getattr(self, "close_deadline", None)  # set once closing began
        if deadline is not None:
            self.socket.settimeout(deadline.timeout())
        if len(parts) == 1:
            self.socket.sendall(parts[0])
        elif sum(map(len, parts)) < _GATHER_FROM:
            self.socket.sendall(b"".join(parts))
        else:
            send_gathered(self.socket, parts)


_GATHER_FROM = 64 * 1024
"""Batches from this size are written straight from their parts (``sendmsg``) instead of being
joined first: a 1 MiB ``fs/readBlock`` answer is 1.4 MB that a join would copy once more."""
_IOV_MAX = 512  # buffers per sendmsg call, well below Linux's 1024


def send_gathered(sock: socket.socket, parts: list[bytes]) -> None:
    """Write every part, in order, like ``sendall(b"".join(parts))`` without the joined copy.

    Raises what ``sendmsg`` raises (``TimeoutError`` once a socket timeout runs out).
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


def _has_batching_hooks() -> bool:
    """True when the installed websockets has every hook :class:`_BatchingConnection` uses."""
    return hasattr(select, "poll") and all(
        callable(getattr(cls, name, None))
        for cls, name in (
            (ServerConnection, "send_context"),
            (ServerConnection, "send_data"),
            (ServerProtocol, "send_text"),
            (ServerProtocol, "data_to_send"),
        )
    )


_BATCHING = _has_batching_hooks()


def _batch_sender(ws: ServerConnection) -> Callable[[list[bytes]], None]:
    """The outbox's send function for ``ws``: one write per batch when possible."""
    if isinstance(ws, _BatchingConnection):
        return ws.send_texts

    def send_each(messages: list[bytes]) -> None:
        for message in messages:
            ws.send(message.decode("utf-8"))

    return send_each


UNSENT_LOW_WATER = 128 * 1024
"""``TCP_NOTSENT_LOWAT`` of every connection: at most this much data the peer has not taken
yet waits in the kernel's send buffer (which autotunes to 4 MiB). The rest of a slow client's
backlog stays in the outbox, where answers overtake notifications and the water marks see it.
Data in flight is not limited, so throughput over long links is not either."""


def _limit_unsent(ws: ServerConnection) -> None:
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux, macOS
    sock = getattr(ws, "socket", None)
    if option is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, UNSENT_LOW_WATER)
    except OSError as exc:
        log.debug("TCP_NOTSENT_LOWAT not set: %s", exc)


def _backend_factory(confine: Confinement | None) -> Callable[[], LocalProcessBackend]:
    """Process backends whose default cwd is the ``--root`` directory (if any)."""
    if confine is None:
        return LocalProcessBackend
    return functools.partial(LocalProcessBackend, default_cwd=confine.root)


def _peer(address: Any) -> str:
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class WsServer:
    """``execsdk serve`` on a WebSocket port.

    The socket is bound by the constructor (``port=0`` picks a free one; see :attr:`url`);
    :meth:`start` serves from a background thread, :meth:`shutdown` ends everything.

    Thread-safety: :meth:`start` once from any thread; :meth:`shutdown` from any thread except
    the server's own handler and worker threads (it would wait for itself).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        auth: Authenticator | None = None,
        root: str | None = None,
        session_grace: float = DEFAULT_SESSION_GRACE,
        registry: SessionRegistry | None = None,
        workers: int | None = None,
    ) -> None:
        """Bind the socket.

        Args:
            token: shorthand for ``auth=CapabilityToken(token)``.
            auth: who may connect (``execsdk.server.auth``); None lets everyone in.
            root: confine every path of every request to this directory (it must exist);
                processes start there by default.

        Raises:
            OSError: the address cannot be bound, or ``root`` is not a directory.
            ValueError: both ``token`` and ``auth`` given.
        """
        if token is not None:
            if auth is not None:
                raise ValueError("give token or auth, not both")
            auth = CapabilityToken(token)
        self._auth = auth
        self.confine = Confinement(root) if root is not None else None
        if registry is None:
            registry = SessionRegistry(
                grace=session_grace, backend_factory=_backend_factory(self.confine)
            )
        self.registry = registry
        self._workers = workers
        self._lock = threading.Lock()
        self._shut_down = False
        self._thread: threading.Thread | None = None
        self._server: Server = serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            server_header=None,
            max_size=(MAX_MESSAGE_SIZE, MAX_FRAME_SIZE),
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            close_timeout=1.0,
            logger=_WS_LOGGER,
            create_connection=_BatchingConnection if _BATCHING else None,
        )
        sockname = self._server.socket.getsockname()
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def url(self) -> str:
        """``ws://host:port`` of the bound socket."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    # -- HTTP stage --------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        if "Origin" in headers:
            log.info("refused a request with an Origin header (%s)", headers.get_all("Origin"))
            return _plain(403)
        path = request.path.split("?", 1)[0]
        if path == "/readyz":
            return _plain(200)
        if path != "/":
            return _plain(404)
        connection_tokens = [
            t.strip().lower() for v in headers.get_all("Connection") for t in v.split(",")
        ]
        if "upgrade" not in connection_tokens:
            return _plain(400, "Connection header did not include 'upgrade'")
        if self._auth is not None:
            values = headers.get_all("Authorization")
            refusal = self._auth.refusal(values[0] if values else None)
            if refusal is not None:
                log.info("refused an unauthenticated upgrade: %s", refusal)
                return _plain(401, refusal)
        return None

    # -- connections -------------------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        number = next(_conn_ids)
        threading.current_thread().name = f"execsdk-serve-conn-{number}"
        SERVING.active = True
        peer = _peer(ws.remote_address)
        log.info("conn %d: connected from %s", number, peer)

        _limit_unsent(ws)

        def overflow() -> None:
            ws.close(1008, "client does not read its messages")

        outbox = Outbox(
            _batch_sender(ws), name=f"execsdk-serve-writer-{number}", on_overflow=overflow
        )
        extra: dict[str, Any] = {} if self._workers is None else {"workers": self._workers}
        conn = Connection(
            self.registry,
            outbox,
            parse_error_prefix=(
                f"failed to parse websocket JSON-RPC message from exec-server websocket {peer}"
            ),
            name=str(number),
            confine=self.confine,
            **extra,
        )
        try:
            while True:
                try:
                    message = ws.recv(timeout=5.0)
                except TimeoutError:
                    # After we failed the connection (e.g. close 1009 for an oversized message)
                    # websockets waits for the peer's FIN with no limit; a silent peer would pin
                    # the session forever, so give up on a connection stuck in CLOSING.
                    if ws.protocol.state is State.CLOSING:
                        log.info("conn %d: peer never finished closing; dropping it", number)
                        break
                    continue
                if not conn.handle(message):
                    break
        except ConnectionClosed as exc:
            log.debug("conn %d: closed (%s)", number, exc)
        except Exception:
            log.exception("conn %d: receive loop failed", number)
        finally:
            conn.connection_lost()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Accept connections on a background thread (``execsdk-serve-accept``)."""
        with self._lock:
            if self._thread is not None or self._shut_down:
                return
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="execsdk-serve-accept", daemon=True
            )
            self._thread.start()
        log.info("listening on %s", self.url)

    def serve_forever(self) -> None:
        """Accept connections on this thread until :meth:`shutdown` (from another thread)."""
        self._server.serve_forever()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, kill every session's processes. Idempotent.

        Waits at most about ``timeout`` seconds for connection threads, then the same again
        for the processes to die.

        Raises:
            RuntimeError: called from one of this server's handler or worker threads.
        """
        if getattr(SERVING, "active", False):
            raise RuntimeError(
                "WsServer.shutdown() cannot run on a connection handler or request worker "
                "thread (it waits for them); call it from another thread"
            )
        with self._lock:
            first = not self._shut_down
            self._shut_down = True
        if first:
            closer = threading.Thread(
                target=self._server.shutdown, name="execsdk-serve-shutdown", daemon=True
            )
            closer.start()
            closer.join(timeout)
            if closer.is_alive():
                log.warning("connections still open %.1fs after shutdown began", timeout)
            self.registry.close(timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> WsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
