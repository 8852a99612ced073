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

Back-pressure: a client that reads slower than its processes write slows those processes down,
as codex does, instead of being dropped. When more than :data:`DEFAULT_OUTPUT_HIGH_WATER` bytes
of ``process/output`` notifications wait in a connection's outbox, the session pauses reading
its processes' output (:meth:`LocalProcessBackend.pause_output`), so their pipes fill and the
children block in ``write()``; below :data:`DEFAULT_OUTPUT_LOW_WATER` reading resumes. Each
session has its own backend, so only the slow connection's processes wait. Replies are never
held back and never count toward the marks.
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

__all__ = [
    "DEFAULT_OUTBOX_LIMIT",
    "DEFAULT_OUTPUT_HIGH_WATER",
    "DEFAULT_OUTPUT_LOW_WATER",
    "DEFAULT_SESSION_GRACE",
    "Outbox",
    "Session",
    "SessionRegistry",
]

log = logging.getLogger(__name__)

DEFAULT_SESSION_GRACE = 80.0
"""Seconds a detached session waits for a resume before its processes are killed (codex G2)."""

DEFAULT_OUTBOX_LIMIT = 256 * 1024 * 1024
"""Queued outgoing bytes after which a connection that does not read is dropped.

Process output cannot reach it (it pauses at the high-water mark); replies can, for a client
that keeps asking and never reads (e.g. large ``fs/readFile`` answers)."""

DEFAULT_OUTPUT_HIGH_WATER = 8 * 1024 * 1024
"""Queued ``process/output`` text (base64 JSON, ~1.37 x the raw bytes) above which the
connection's processes are paused: about 6 MiB of output, enough to keep a fast socket busy for
milliseconds while bounding what a slow client costs in memory."""

DEFAULT_OUTPUT_LOW_WATER = 2 * 1024 * 1024
"""Queued ``process/output`` text below which paused processes resume. The 2 MiB still queued
keep the socket busy while the I/O thread wakes and the children refill their pipes (tens of
microseconds), and the 6 MiB between the marks make pause/resume happen at most once per ~4 MiB
of output."""

_outbox_ids = itertools.count(1)


class Outbox:
    """The single writer of one connection: messages queue here, one thread sends them in order.

    :meth:`put` never blocks, so the backend's I/O thread and the request workers can hand over
    messages freely. Messages queued with ``output=True`` (process output) are counted apart:
    when more than ``high_water`` bytes of them wait, :attr:`output_paused` turns True, and
    False again once the writer brought them below ``low_water``; on each change the flow
    listener (:meth:`set_flow_listener`) is called so the producer can pause or resume. If more
    than ``limit`` bytes pile up in all (a client that never reads) the connection is given up:
    ``on_overflow`` is called once and later messages are dropped.

    Thread-safety: every method may be called from any thread; the flow listener runs on the
    thread that changed the state (never under the outbox's lock) and must not block.
    """

    def __init__(
        self,
        send: Callable[[str], None],
        *,
        name: str | None = None,
        on_overflow: Callable[[], None] | None = None,
        limit: int = DEFAULT_OUTBOX_LIMIT,
        high_water: int = DEFAULT_OUTPUT_HIGH_WATER,
        low_water: int = DEFAULT_OUTPUT_LOW_WATER,
    ) -> None:
        if not 0 <= low_water <= high_water:
            raise ValueError(f"need 0 <= low_water <= high_water, got {low_water}, {high_water}")
        self._send = send
        self._on_overflow = on_overflow
        self._limit = limit
        self._high = high_water
        self._low = low_water
        self._cond = threading.Condition()
        # (text, bytes counted as output): the writer subtracts what it takes off the queue
        self._queue: collections.deque[tuple[str, int]] = collections.deque()
        self._queued_bytes = 0
        self._output_bytes = 0
        self._paused = False
        self._listener: Callable[[], None] | None = None
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

    @property
    def output_paused(self) -> bool:
        """True while too much process output waits (between crossing the high-water mark and
        draining below the low-water mark); always False once closed or broken."""
        return self._paused

    @property
    def queued_bytes(self) -> int:
        """Characters of all messages waiting to be sent."""
        return self._queued_bytes

    def set_flow_listener(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener()`` whenever :attr:`output_paused` changes (it reads the property).

        The listener may be called late or more than once for one change, from any thread, so
        it must apply the *current* state (level, not edge) and serialise itself.
        """
        self._listener = listener

    def _flow_changed(self) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            listener()
        except Exception:
            log.exception("%s: flow listener failed", self._thread.name)

    def put(self, text: str, *, output: bool = False) -> bool:
        """Queue one message; False when it was dropped (closed, broken or overflowing).

        ``output``: the message carries process output and counts toward the water marks.
        """
        overflow = False
        changed = False
        with self._cond:
            if self._closed or self._broken:
                return False
            if self._queued_bytes + len(text) > self._limit and self._queue:
                self._broken = True
                self._clear()
                changed = self._set_paused(False)
                overflow = True
            else:
                counted = len(text) if output else 0
                self._queue.append((text, counted))
                self._queued_bytes += len(text)
                if counted:
                    self._output_bytes += counted
                    if self._output_bytes > self._high:
                        changed = self._set_paused(True)
                self._cond.notify()
        if changed:
            self._flow_changed()
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
        changed = False
        with self._cond:
            self._closed = True
            if not drain:
                self._clear()
                changed = self._set_paused(False)
            self._cond.notify_all()
        if changed:
            self._flow_changed()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s still sending after %ss", self._thread.name, timeout)

    def _clear(self) -> None:
        # With self._cond held.
        self._queue.clear()
        self._queued_bytes = 0
        self._output_bytes = 0

    def _set_paused(self, paused: bool) -> bool:
        # With self._cond held; True when the state changed.
        if self._paused == paused:
            return False
        self._paused = paused
        return True

    def _main(self) -> None:
        while True:
            changed = False
            text: str | None = None
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    changed = self._set_paused(False)
                else:
                    text, counted = self._queue.popleft()
                    self._queued_bytes -= len(text)
                    if counted:
                        self._output_bytes -= counted
                        if self._output_bytes <= self._low:
                            changed = self._set_paused(False)
            if changed:
                self._flow_changed()
            if text is None:
                return
            try:
                self._send(text)
            except Exception as exc:
                log.debug("%s: send failed (%s); dropping what is queued", self._thread.name, exc)
                with self._cond:
                    self._broken = True
                    self._clear()
                    changed = self._set_paused(False)
                if changed:
                    self._flow_changed()
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
        outbox.put(encode_notification("process/output", params), output=True)

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
        self._flow_lock = threading.Lock()
        self._output_paused = False  # what was last applied to the backend; under _flow_lock
        self.detached_at: float | None = None
        self.closed = False

    @property
    def outbox(self) -> Outbox | None:
        """Where notifications go now; None while detached."""
        return self._outbox

    @property
    def attached(self) -> bool:
        return self._owner is not None

    @property
    def output_paused(self) -> bool:
        """True while the session's processes are paused for a slow connection."""
        return self._output_paused

    def apply_flow(self) -> None:
        """Pause or resume the processes' output to match the attached outbox (back-pressure).

        Level-triggered and serialised: whoever calls last applies the current state, so calls
        racing from the writer thread, the I/O thread and attach/detach cannot leave the
        processes paused for an outbox that drained. A detached session is never paused (its
        notifications are dropped anyway, and the processes must keep running). Never blocks
        for long: pausing sets a flag, resuming posts a command to the backend's I/O thread.
        """
        with self._flow_lock:
            outbox = self._outbox
            paused = outbox is not None and outbox.output_paused and not self.closed
            if paused == self._output_paused:
                return
            self._output_paused = paused
            try:
                if paused:
                    self.backend.pause_output()
                else:
                    self.backend.resume_output()
            except Exception:
                log.exception(
                    "session %s: %s output failed", self.id, "pausing" if paused else "resuming"
                )
            log.debug("session %s: output %s", self.id, "paused" if paused else "resumed")

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
            if session._owner is not owner or session.closed:
                return
            session._outbox = outbox
        outbox.set_flow_listener(session.apply_flow)
        session.apply_flow()

    def detach(self, session: Session, owner: object) -> None:
        """``owner``'s connection is gone: keep the session for ``grace`` seconds."""
        with self._lock:
            if session._owner is not owner or session.closed:
                return
            session._detach()
            closing = self._closed
            if not closing:
                timer = threading.Timer(self.grace, self._expire, args=(session.id, session))
                timer.name = f"execsdk-serve-expiry-{session.id[:8]}"
                timer.daemon = True
                self._timers[session.id] = timer
                timer.start()
        # Detached output is dropped, so nothing may stay paused for the gone connection.
        session.apply_flow()
        if closing:
            return
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
