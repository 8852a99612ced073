"""Sessions of ``execsdk serve``: process state that outlives a connection.

A session owns one :class:`~execsdk._local_process.LocalProcessBackend` (its processes), the
``writeId`` idempotency keys of ``process/write`` and the link to the connection it is attached
to. Closing a connection detaches its session; the processes keep running and a new connection
may resume it (``initialize`` with ``resumeSessionId``) within a grace period (80 s, as codex
0.169). After that the session expires and its processes are killed (PROTOCOL.md §2).

Process events arrive on the backend's I/O thread. They are turned into ``process/*``
notifications and queued on the attached connection's :class:`Outbox` without ever blocking
that thread; while the session is detached they are dropped, as codex does (the client reads
what it missed with ``process/read``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable

from execsdk import errors
from execsdk._local_process import LocalProcessBackend
from execsdk._protocol.jsonrpc import encode_notification
from execsdk.environment import Stream
from execsdk.server.params import b64encode

__all__ = ["DEFAULT_SESSION_GRACE", "Outbox", "Session", "SessionRegistry"]

log = logging.getLogger(__name__)

DEFAULT_SESSION_GRACE = 80.0
"""Seconds a detached session waits for a resume before its processes are killed (codex G2)."""

DEFAULT_OUTBOX_LIMIT = 256 * 1024 * 1024
"""Queued outgoing bytes after which a connection that does not read is dropped."""

_outbox_ids = itertools.count(1)


class Outbox:
    """The single writer of one connection: messages queue here, one thread sends them in order.

    :meth:`put` never blocks, so the backend's I/O thread and the request workers can hand over
    messages freely. If more than ``limit`` bytes pile up (the client stopped reading) the
    connection is given up: ``on_overflow`` is called once and later messages are dropped.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        send: Callable[[str], None],
        *,
        name: str | None = None,
        on_overflow: Callable[[], None] | None = None,
        limit: int = DEFAULT_OUTBOX_LIMIT,
    ) -> None:
        self._send = send
        self._on_overflow = on_overflow
        self._limit = limit
        self._cond = threading.Condition()
        self._queue: collections.deque[str] = collections.deque()
        self._queued_bytes = 0
        self._closed = False
        self._broken = False
        self._thread = threading.Thread(
            target=self._main, name=name or f"execsdk-serve-writer-{next(_outbox_ids)}", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        """True once closed or broken: :meth:`put` drops everything."""
        return self._closed or self._broken

    def put(self, text: str) -> bool:
        """Queue one message; False when it was dropped (closed, broken or overflowing)."""
        overflow = False
        with self._cond:
            if self._closed or self._broken:
                return False
            if self._queued_bytes + len(text) > self._limit and self._queue:
                self._broken = True
                self._queue.clear()
                self._queued_bytes = 0
                overflow = True
            else:
                self._queue.append(text)
                self._queued_bytes += len(text)
                self._cond.notify()
        if overflow:
            log.warning(
                "%s: more than %d bytes wait to be sent; the client does not read, dropping it",
                self._thread.name,
                self._limit,
            )
            if self._on_overflow is not None:
                try:
                    self._on_overflow()
                except Exception:
                    log.exception("closing an overflowing connection failed")
            return False
        return True

    def close(self, *, drain: bool = False, timeout: float | None = 5.0) -> None:
        """Stop the writer (after sending what is queued when ``drain``). Idempotent."""
        with self._cond:
            self._closed = True
            if not drain:
                self._queue.clear()
                self._queued_bytes = 0
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s still sending after %ss", self._thread.name, timeout)

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                text = self._queue.popleft()
                self._queued_bytes -= len(text)
            try:
                self._send(text)
            except Exception as exc:
                log.debug("%s: send failed (%s); dropping what is queued", self._thread.name, exc)
                with self._cond:
                    self._broken = True
                    self._queue.clear()
                    self._queued_bytes = 0
                return


class _ProcessEvents:
    """``ProcessEvents`` receiver of one process: turns events into notifications.

    Thread-safety: called on the backend's I/O thread; it encodes and queues, nothing more.
    """

    __slots__ = ("_process_id", "_session")

    def __init__(self, session: Session, process_id: str) -> None:
        self._session = session
        self._process_id = process_id

    def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
        outbox = self._session.outbox
        if outbox is None:
            return  # detached: dropped, as codex does; process/read has the retained output
        params = {
            "processId": self._process_id,
            "seq": seq,
            "stream": stream,
            "chunk": b64encode(data),
        }
        outbox.put(encode_notification("process/output", params))

    def on_exited(self, seq: int, exit_code: int) -> None:
        outbox = self._session.outbox
        if outbox is None:
            return
        params = {
            "processId": self._process_id,
            "seq": seq,
            "exitCode": exit_code,
            "sandboxDenied": False,
        }
        outbox.put(encode_notification("process/exited", params))

    def on_closed(self, seq: int) -> None:
        outbox = self._session.outbox
        if outbox is None:
            return
        params = {"processId": self._process_id, "seq": seq}
        outbox.put(encode_notification("process/closed", params))

    def on_lost(self, exc: BaseException) -> None:
        log.debug("process %r of session %s lost: %s", self._process_id, self._session.id, exc)


class Session:
    """One client session: its processes and the connection it is attached to (if any).

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, session_id: str, backend: LocalProcessBackend) -> None:
        self.id = session_id
        self.backend = backend
        self._lock = threading.Lock()
        self._outbox: Outbox | None = None
        self._owner: object | None = None
        self._write_ids: dict[str, set[str]] = {}
        self.detached_at: float | None = None
        self.closed = False

    @property
    def outbox(self) -> Outbox | None:
        """Where notifications go now; None while detached."""
        return self._outbox

    @property
    def attached(self) -> bool:
        return self._owner is not None

    def events_for(self, process_id: str) -> _ProcessEvents:
        """The events receiver to register with ``backend.start`` for ``process_id``."""
        return _ProcessEvents(self, process_id)

    # -- process/write idempotency (PROTOCOL.md §3.5) ---------------------------------------

    def write_id_used(self, process_id: str, write_id: str) -> bool:
        """True when ``write_id`` was already accepted for this process."""
        with self._lock:
            return write_id in self._write_ids.get(process_id, ())

    def remember_write_id(self, process_id: str, write_id: str) -> None:
        with self._lock:
            self._write_ids.setdefault(process_id, set()).add(write_id)

    def forget_write_ids(self, process_id: str) -> None:
        """A new process took this id (the old one was forgotten): its keys start afresh."""
        with self._lock:
            self._write_ids.pop(process_id, None)

    # -- attachment (registry only) ----------------------------------------------------------

    def _attach(self, owner: object) -> None:
        self._owner = owner
        self._outbox = None
        self.detached_at = None

    def _detach(self) -> None:
        self._owner = None
        self._outbox = None
        self.detached_at = time.monotonic()


class SessionRegistry:
    """All sessions of one server, shared by its connections.

    ``grace`` is how long a detached session waits for a resume. ``backend_factory`` makes
    each session's process backend (tests may shorten its retention).

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        *,
        grace: float = DEFAULT_SESSION_GRACE,
        backend_factory: Callable[[], LocalProcessBackend] = LocalProcessBackend,
    ) -> None:
        self.grace = grace
        self._backend_factory = backend_factory
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def attach(self, resume_id: str | None, owner: object) -> Session:
        """A new session for ``owner``, or the detached session ``resume_id``.

        The session is reserved for ``owner`` but gets no notifications until
        :meth:`connect` (so none can overtake the ``initialize`` answer).

        Raises:
            errors.InvalidRequest: unknown or expired ``resume_id``, or the server is closing.
            errors.SessionAttached: the session is attached to another connection (-32010).
        """
        with self._lock:
            if self._closed:
                raise errors.InvalidRequest(-32600, "exec-server is shutting down")
            if resume_id is not None:
                session = self._sessions.get(resume_id)
                if session is None or session.closed:
                    raise errors.InvalidRequest(-32600, f"unknown session id {resume_id}")
                if session.attached:
                    raise errors.SessionAttached(
                        -32010, f"session {resume_id} is already attached to another connection"
                    )
                timer = self._timers.pop(resume_id, None)
                if timer is not None:
                    timer.cancel()
                session._attach(owner)
                log.info("session %s resumed", resume_id)
                return session
            session = Session(str(uuid.uuid4()), self._backend_factory())
            session._attach(owner)
            self._sessions[session.id] = session
        log.info("session %s created", session.id)
        return session

    def connect(self, session: Session, owner: object, outbox: Outbox) -> None:
        """Start sending ``session``'s notifications to ``owner``'s ``outbox``."""
        with self._lock:
            if session._owner is owner and not session.closed:
                session._outbox = outbox

    def detach(self, session: Session, owner: object) -> None:
        """``owner``'s connection is gone: keep the session for ``grace`` seconds."""
        with self._lock:
            if session._owner is not owner or session.closed:
                return
            session._detach()
            if self._closed:
                return
            timer = threading.Timer(self.grace, self._expire, args=(session.id, session))
            timer.name = f"execsdk-serve-expiry-{session.id[:8]}"
            timer.daemon = True
            self._timers[session.id] = timer
            timer.start()
        log.info(
            "session %s detached; it expires in %.1fs without a resume", session.id, self.grace
        )

    def _expire(self, session_id: str, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session_id) is not session or session.attached:
                return
            del self._sessions[session_id]
            self._timers.pop(session_id, None)
            session.closed = True
        log.info("session %s expired; killing its processes", session_id)
        self._close_session(session, 5.0)

    @staticmethod
    def _close_session(session: Session, timeout: float) -> None:
        try:
            session.backend.close(timeout)
        except Exception:
            log.exception("closing the processes of session %s failed", session.id)

    def close(self, timeout: float = 5.0) -> None:
        """Kill every session's processes (server shutdown). Idempotent."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
            timers = list(self._timers.values())
            self._timers.clear()
            for session in sessions:
                session.closed = True
        for timer in timers:
            timer.cancel()
        if not sessions:
            return
        threads = [
            threading.Thread(
                target=self._close_session,
                args=(session, timeout),
                name=f"execsdk-serve-close-{session.id[:8]}",
                daemon=True,
            )
            for session in sessions
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 2.0)
