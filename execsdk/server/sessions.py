"""Sessions of ``execsdk serve``: process state that outlives a connection.

A session owns one :class:`~execsdk._local.processes.LocalProcessBackend` (its processes), the
``writeId`` idempotency keys of ``process/write`` and the link to the connection it is attached
to. Closing a connection detaches its session; the processes keep running and a new connection
may resume it (``initialize`` with ``resumeSessionId``) within a grace period (80 s, as codex
0.169). After that the session expires and its processes are killed (PROTOCOL.md §2). A
session with no process (none running, none retained) holds nothing worth resuming: it is
dropped as soon as its connection's requests are done (:meth:`SessionRegistry.release_if_empty`),
so connect/close churn leaves nothing behind. Every grace period of a registry is timed by one
thread (``execsdk-serve-expiry``, started while a detached session waits, ended once none
does), not a thread per session.

Process events arrive on the backend's I/O thread. They are turned into ``process/*``
notifications and queued on the attached connection's outbox without ever blocking
that thread; while the session is detached they are dropped, as codex does (the client reads
what it missed with ``process/read``).

Back-pressure: a client that reads slower than its processes write slows those processes down,
as codex does, instead of being dropped. When more than ``DEFAULT_OUTPUT_HIGH_WATER`` bytes
of ``process/output`` notifications wait in a connection's outbox, the session pauses reading
its processes' output (:meth:`LocalProcessBackend.pause_output`), so their pipes fill and the
children block in ``write()``; below ``DEFAULT_OUTPUT_LOW_WATER`` reading resumes. Each
session has its own backend, so only the slow connection's processes wait. Replies are never
held back and never count toward the marks: they go out ahead of the notifications still
queued (:class:`~execsdk.server.outbox.Outbox`), so a slow client's answers do not wait behind
megabytes of output.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable

from execsdk import errors
from execsdk._local.processes import LocalProcessBackend
from execsdk._protocol import refusals
from execsdk._protocol.jsonrpc import encode_notification
from execsdk._protocol.wire import b64encode_bytes
from execsdk.backends import Stream
from execsdk.server.outbox import Outbox

__all__ = [
    "DEFAULT_SESSION_GRACE",
    "Session",
    "SessionRegistry",
]

log = logging.getLogger(__name__)

DEFAULT_SESSION_GRACE = 80.0
"""Seconds a detached session waits for a resume before its processes are killed (codex G2)."""


_STREAM_MEMBERS: dict[str, bytes] = {
    name: f',"stream":"{name}","chunk":"'.encode("ascii") for name in ("stdout", "stderr", "pty")
}


class _ProcessEvents:
    """``ProcessEvents`` receiver of one process: turns events into notifications.

    ``process/output`` is the hot path (one per 8 KiB of output), so its JSON is assembled as
    bytes from a prefix made once per process, the seq, and the base64 chunk: the same text
    :func:`encode_notification` would produce, without a dict, a ``str`` round trip or a
    generic encoder per chunk.

    Thread-safety: called on the backend's I/O thread; it encodes and queues, nothing more.
    """

    __slots__ = ("_output_prefix", "_process_id", "_session")

    def __init__(self, session: Session, process_id: str) -> None:
        self._session = session
        self._process_id = process_id
        self._output_prefix = (
            b'{"method":"process/output","params":{"processId":'
            + json.dumps(process_id).encode("ascii")
            + b',"seq":'
        )

    def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
        outbox = self._session.outbox
        if outbox is None:
            return  # detached: dropped, as codex does; process/read has the retained output
        message = b"".join(
            (
                self._output_prefix,
                str(seq).encode("ascii"),
                _STREAM_MEMBERS[stream],
                b64encode_bytes(data),
                b'"}}',
            )
        )
        outbox.put(message, output=True)

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
        # Grace periods: (due, tie-breaker, session) in a heap, timed by one thread. A resume
        # or an early drop does not touch the heap: _due no longer holds the entry's due time,
        # so the entry is skipped when it comes up.
        self._heap: list[tuple[float, int, Session]] = []
        self._due: dict[str, float] = {}
        self._ticket = itertools.count()
        self._wakeup = threading.Condition(self._lock)
        self._expiry_thread: threading.Thread | None = None
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
                    raise errors.InvalidRequest(
                        -32600, refusals.UNKNOWN_SESSION.format(id=resume_id)
                    )
                if session.attached:
                    raise errors.SessionAttached(
                        -32010, refusals.SESSION_ATTACHED.format(id=resume_id)
                    )
                self._cancel_expiry(resume_id)
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
                due = time.monotonic() + self.grace
                self._due[session.id] = due
                heapq.heappush(self._heap, (due, next(self._ticket), session))
                if self._expiry_thread is None:
                    self._expiry_thread = threading.Thread(
                        target=self._expiry_main, name="execsdk-serve-expiry", daemon=True
                    )
                    self._expiry_thread.start()
                elif self._heap[0][2] is session:
                    self._wakeup.notify()  # due before everything else waiting
        # Detached output is dropped, so nothing may stay paused for the gone connection.
        session.apply_flow()
        if closing:
            return
        log.info(
            "session %s detached; it expires in %.1fs without a resume", session.id, self.grace
        )

    def release_if_empty(self, session: Session) -> bool:
        """Drop ``session`` now if it is detached and has no process (running or retained):
        there is nothing to resume. True when dropped.

        Called once the connection's requests are done (a ``process/start`` still running
        would otherwise be refused by the closed backend, or killed if it won the race).
        """
        with self._lock:
            if (
                session.attached
                or session.closed
                or self._sessions.get(session.id) is not session
                or session.backend.process_ids()
            ):
                return False
            del self._sessions[session.id]
            self._cancel_expiry(session.id)
            session.closed = True
        log.info("session %s has no processes; dropped at once", session.id)
        self._close_session(session, 5.0)
        return True

    def _cancel_expiry(self, session_id: str) -> None:
        # With self._lock held. The heap entry stays (skipped when it comes up) unless nothing
        # else waits: then the heap is emptied and the expiry thread ends now, not at the entry's
        # due time.
        if self._due.pop(session_id, None) is not None and not self._due:
            self._heap.clear()
            self._wakeup.notify()

    def _expiry_main(self) -> None:
        """The expiry thread: wait for the earliest grace period, expire, repeat; end once
        nothing waits (a later detach starts a new thread)."""
        expired: list[Session] = []
        while True:
            for session in expired:
                self._expire(session)
            expired = []
            with self._lock:
                while not expired:
                    if self._closed or not self._heap:
                        self._expiry_thread = None
                        return
                    due, _, session = self._heap[0]
                    if self._due.get(session.id) != due:
                        heapq.heappop(self._heap)  # resumed, dropped or detached again since
                        continue
                    now = time.monotonic()
                    if due > now:
                        self._wakeup.wait(due - now)
                        continue
                    heapq.heappop(self._heap)
                    del self._due[session.id]
                    if self._sessions.get(session.id) is session and not session.attached:
                        del self._sessions[session.id]
                        session.closed = True
                        expired.append(session)

    def _expire(self, session: Session) -> None:
        """Kill an expired session's processes; without any, inline, else on a thread of its
        own, so that one slow kill does not hold up the other expiries."""
        log.info("session %s expired; killing its processes", session.id)
        if not session.backend.process_ids():
            self._close_session(session, 5.0)
            return
        threading.Thread(
            target=self._close_session,
            args=(session, 5.0),
            name=f"execsdk-serve-close-{session.id[:8]}",
            daemon=True,
        ).start()

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
            self._heap.clear()
            self._due.clear()
            expiry = self._expiry_thread
            self._wakeup.notify_all()
            for session in sessions:
                session.closed = True
        if expiry is not None and expiry is not threading.current_thread():
            expiry.join(timeout)
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
