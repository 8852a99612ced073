"""The WebSocket transport of ``execsdk serve``: our listening socket, accept thread and
connection threads around websockets' Sans-I/O protocol (``wsconn.py``).

HTTP behaviour follows codex 0.169 (PROTOCOL.md §1): a request carrying an ``Origin`` header is
refused with 403 (browsers must not reach the server); ``GET /readyz`` answers 200; a plain
``GET /`` gets 400; other paths 404. With an authenticator configured (``auth.py``: a
capability token or HS256-signed JWTs) the upgrade needs ``Authorization: Bearer <token>``
(401 otherwise, with a fixed phrase as body). Messages up to 64 MiB are accepted, in frames of
up to 16 MiB; the server pings every 30 s and closes a connection whose pong does not come
within 60 s of the ping reaching the peer (a reader that is merely behind, its TCP window
closed, is kept: ``wsconn.py``); a closing handshake gets 1 s. With ``root`` every path is
confined to that directory (``confine.py``).

websockets logs handshake headers and frame previews at DEBUG; its logger here is wrapped so
that the ``Authorization`` header and frame contents never reach the log.

Threads: the accept thread (``execsdk-serve-accept`` after :meth:`WsServer.start`, or the
caller of :meth:`WsServer.serve_forever`) accepts sockets and starts one daemon thread per
socket, ``execsdk-serve-conn-<n>``, which runs the handshake, then reads frames and hands each
message to :class:`~execsdk.server.connection.Connection` (see :class:`~.wsconn.WsConnection`).
Replies leave through the connection's :class:`~execsdk.server.outbox.Outbox` writer thread (or
a request worker), which hands over everything queued as one batch, written with one system
call. Each socket keeps little unsent data in the kernel (``TCP_NOTSENT_LOWAT``), so a slow
client's backlog waits in the outbox, where answers overtake it. :meth:`WsServer.shutdown`
joins the accept thread and the connection threads.
"""

from __future__ import annotations

import functools
import http
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame
from websockets.http11 import Request, Response

from execsdk._deadline import Deadline
from execsdk._local.processes import LocalProcessBackend
from execsdk.server.auth import Authenticator, CapabilityToken
from execsdk.server.confine import Confinement
from execsdk.server.connection import SERVING, Connection
from execsdk.server.outbox import Outbox
from execsdk.server.sessions import DEFAULT_SESSION_GRACE, SessionRegistry
from execsdk.server.wsconn import WsConnection

__all__ = ["MAX_FRAME_SIZE", "MAX_MESSAGE_SIZE", "WsServer"]

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024
OPEN_TIMEOUT = 10.0
PING_INTERVAL = 30.0
PING_TIMEOUT = 60.0
CLOSE_TIMEOUT = 1.0
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


UNSENT_LOW_WATER = 128 * 1024
"""``TCP_NOTSENT_LOWAT`` of every connection: at most this much data the peer has not taken
yet waits in the kernel's send buffer (which autotunes to 4 MiB). The rest of a slow client's
backlog stays in the outbox, where answers overtake notifications and the water marks see it.
Data in flight is not limited, so throughput over long links is not either."""


def _tune_socket(sock: socket.socket) -> None:
    """TCP_NODELAY (replies are small and must not wait) and TCP_NOTSENT_LOWAT."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("TCP_NODELAY not set: %s", exc)
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux, macOS
    if option is None:
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
    the server's own connection and worker threads (it would wait for itself).
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
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
    ) -> None:
        """Bind the socket.

        Args:
            token: shorthand for ``auth=CapabilityToken(token)``.
            auth: who may connect (``execsdk.server.auth``); None lets everyone in.
            root: confine every path of every request to this directory (it must exist);
                processes start there by default.
            ping_interval, ping_timeout: keepalive (default :data:`PING_INTERVAL`,
                :data:`PING_TIMEOUT`): a ping every ``ping_interval`` seconds, and the pong due
                ``ping_timeout`` seconds after the ping reached the peer.

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
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._lock = threading.Lock()
        self._shut_down = False
        self._thread: threading.Thread | None = None
        self._conn_threads: set[threading.Thread] = set()
        self._live: set[WsConnection] = set()
        self._accepting = 0  # accept loops running (serve_forever calls)
        self._listener = socket.create_server((host, port))
        self._listener.setblocking(False)  # accept() after a select() that raced never blocks
        # Wakes the accept loop's select() on shutdown.
        self._waker, self._wakee = socket.socketpair()
        sockname = self._listener.getsockname()
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def url(self) -> str:
        """``ws://host:port`` of the bound socket."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    # -- HTTP stage --------------------------------------------------------------------------

    def _process_request(self, request: Request) -> Response | None:
        """The answer to a request that must not upgrade, or None to upgrade it."""
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

    def _refusing(self) -> bool:
        return self._shut_down

    # -- accepting ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections on this thread until :meth:`shutdown` (from another thread)."""
        selector = selectors.DefaultSelector()
        with self._lock:
            if self._shut_down:
                selector.close()
                return
            self._accepting += 1
        try:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wakee, selectors.EVENT_READ)
            while True:
                selector.select()
                if self._shut_down:
                    return
                try:
                    sock, address = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another accept loop took it, or the client left
                except OSError as exc:
                    if self._shut_down:
                        return
                    # Out of descriptors, say: try again soon instead of spinning.
                    log.warning("accepting a connection failed: %s", exc)
                    time.sleep(0.1)
                    continue
                self._open(sock, address)
        finally:
            selector.close()
            with self._lock:
                self._accepting -= 1
                last = self._shut_down and not self._accepting
            if last:
                self._close_waker()

    def _close_waker(self) -> None:
        self._waker.close()
        self._wakee.close()

    def _open(self, sock: socket.socket, address: Any) -> None:
        """Start the thread of a freshly accepted socket."""
        number = next(_conn_ids)
        try:
            sock.setblocking(True)
            _tune_socket(sock)
            ws = WsConnection(
                sock,
                name=str(number),
                logger=_WS_LOGGER,
                max_message_size=MAX_MESSAGE_SIZE,
                max_frame_size=MAX_FRAME_SIZE,
                open_timeout=OPEN_TIMEOUT,
                ping_interval=PING_INTERVAL if self._ping_interval is None else self._ping_interval,
                ping_timeout=PING_TIMEOUT if self._ping_timeout is None else self._ping_timeout,
                close_timeout=CLOSE_TIMEOUT,
            )
        except OSError as exc:
            log.warning("conn %d: cannot set up the connection: %s", number, exc)
            sock.close()
            return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(ws, number, address),
            name=f"execsdk-serve-conn-{number}",
            daemon=True,
        )
        with self._lock:  # started under the lock: shutdown() never joins an unstarted thread
            refused = self._shut_down
            if not refused:
                self._conn_threads.add(thread)
                self._live.add(ws)
                thread.start()
        if refused:
            ws.finish()

    # -- connections -------------------------------------------------------------------------

    def _serve_connection(self, ws: WsConnection, number: int, address: Any) -> None:
        """The connection thread: handshake, messages, closing handshake, socket's end."""
        SERVING.active = True
        try:
            if not ws.handshake(self._process_request, self._refusing):
                return
            peer = _peer(address)
            log.info("conn %d: connected from %s", number, peer)

            def overflow() -> None:
                ws.close(CloseCode.POLICY_VIOLATION, "client does not read its messages")

            outbox = Outbox(
                ws.send_texts, name=f"execsdk-serve-writer-{number}", on_overflow=overflow
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
                ws.run(conn.handle)
            except Exception:
                log.exception("conn %d: receive loop failed", number)
            finally:
                conn.connection_lost()
        except Exception:
            log.exception("conn %d: failed", number)
        finally:
            ws.finish()  # close 1000 when we end it, the closing handshake, the socket's end
            if ws.protocol.close_code is not None or ws.protocol.close_reason:
                log.debug(
                    "conn %d: closed (code %s, reason %r)",
                    number,
                    ws.protocol.close_code,
                    ws.protocol.close_reason,
                )
            with self._lock:
                self._live.discard(ws)
                self._conn_threads.discard(threading.current_thread())

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Accept connections on a background thread (``execsdk-serve-accept``)."""
        with self._lock:
            if self._thread is not None or self._shut_down:
                return
            self._thread = threading.Thread(
                target=self.serve_forever, name="execsdk-serve-accept", daemon=True
            )
            self._thread.start()
        log.info("listening on %s", self.url)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, kill every session's processes. Idempotent.

        Open connections are closed with 1001 (going away); those still in their opening
        handshake are refused (503) or dropped. Waits at most about ``timeout`` seconds for
        connection threads, then the same again for the processes to die.

        Raises:
            RuntimeError: called from one of this server's connection or worker threads.
        """
        if getattr(SERVING, "active", False):
            raise RuntimeError(
                "WsServer.shutdown() cannot run on a connection handler or request worker "
                "thread (it waits for them); call it from another thread"
            )
        with self._lock:
            first = not self._shut_down
            self._shut_down = True
            live = list(self._live)
            threads = list(self._conn_threads)
        if first:
            deadline = Deadline(timeout)
            with self._lock:
                idle = not self._accepting
            if idle:
                self._close_waker()
            else:
                try:
                    self._waker.send(b"x")
                except OSError:  # the accept loop ended meanwhile and closed it
                    pass
            try:
                self._listener.close()
                for ws in live:
                    ws.close(CloseCode.GOING_AWAY)
                for conn_thread in threads:
                    conn_thread.join(deadline.left())
                if any(conn_thread.is_alive() for conn_thread in threads):
                    log.warning("connections still open %.1fs after shutdown began", timeout)
            finally:
                self.registry.close(timeout)  # whatever failed above, the processes die
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> WsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
