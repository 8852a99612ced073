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
held back and never count toward the marks: they go out ahead of the notifications still
queued (:class:`Outbox`), so a slow client's answers do not wait behind megabytes of output.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable

from execsdk import errors
from execsdk._local_process import LocalProcessBackend
from execsdk._protocol.jsonrpc import encode_notification
from execsdk.environment import Stream
from execsdk.server.params import b64encode_bytes

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_OUTBOX_LIMIT",
    "DEFAULT_OUTPUT_HIGH_WATER",
    "DEFAULT_OUTPUT_LOW_WATER",
    "DEFAULT_SESSION_GRACE",
    "Outbox",
    "SendBatch",
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

DEFAULT_BATCH_BYTES = 128 * 1024
"""Most bytes the writer hands to the transport in one call (one socket write). Batching saves
a system call and a wake-up of the reader per message (~11 KiB per ``process/output``); the cap
bounds what a reply queued meanwhile waits behind (the batch being written). 64 KiB to 512 KiB
measured the same throughput."""

_outbox_ids = itertools.count(1)

_STREAM_MEMBERS: dict[str, bytes] = {
    name: f',"stream":"{name}","chunk":"'.encode("ascii") for name in ("stdout", "stderr", "pty")
}

SendBatch = Callable[[list[bytes]], None]
"""Sends each message (UTF-8 JSON) as one transport message, in list order; raises when the
connection is gone."""


class Outbox:
    """The single writer of one connection: messages queue here, one thread sends them.

    Two lanes. Answers (:meth:`put_reply`) go out before notifications (:meth:`put`) that are
    still waiting, so a reply never waits behind megabytes of queued process output; within
    each lane the order is kept. A reply queued before a notification always leaves before it
    (the writer empties the reply lane first), so a handler that answers and then starts
    notifications (``http/request`` streaming) keeps its order. Notifications share one FIFO:
    ``process/exited`` and ``process/closed`` never overtake their process's output.

    The writer takes everything queued (up to ``batch_bytes``, at least one message) under one
    lock and hands it to ``send`` as one batch, which the transport writes with one system call.
    A request worker may send its answer itself (``put_reply(direct=True)``) when nothing is
    queued and nobody is sending; one thread at a time holds the sending turn, so ``send`` is
    never called twice at once and the order above holds.

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
        send: SendBatch,
        *,
        name: str | None = None,
        on_overflow: Callable[[], None] | None = None,
        limit: int = DEFAULT_OUTBOX_LIMIT,
        high_water: int = DEFAULT_OUTPUT_HIGH_WATER,
        low_water: int = DEFAULT_OUTPUT_LOW_WATER,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        if not 0 <= low_water <= high_water:
            raise ValueError(f"need 0 <= low_water <= high_water, got {low_water}, {high_water}")
        self._send = send
        self._on_overflow = on_overflow
        self._limit = limit
        self._high = high_water
        self._low = low_water
        self._batch_bytes = batch_bytes
        self._cond = threading.Condition()
        self._replies: collections.deque[bytes] = collections.deque()
        # (message, bytes counted as output): the writer subtracts what it takes off the queue
        self._events: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued_bytes = 0
        self._output_bytes = 0
        self._paused = False
        self._listener: Callable[[], None] | None = None
        self._closed = False
        self._broken = False
        self._busy = False  # a thread is inside send: the writer, or a direct put_reply
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
        """Bytes of all messages waiting to be sent."""
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

    def put(self, message: str | bytes, *, output: bool = False) -> bool:
        """Queue one notification (FIFO with the other notifications); False when dropped
        (closed, broken or overflowing).

        ``output``: the message carries process output and counts toward the water marks.
        """
        return self._put(message, output=output, reply=False)

    def put_reply(self, message: str | bytes, *, direct: bool = False) -> bool:
        """Queue one answer (or error answer): it leaves before any notification still waiting.
        False when dropped.

        ``direct``: when nothing is queued and nobody is sending, send it on the calling thread
        instead of waking the writer (a thread switch costs ~45 us on a busy VM, a quarter of a
        small request's round trip). Only for threads that may block while the client does not
        read (request workers), never the thread that reads the client's messages.
        """
        return self._put(message, output=False, reply=True, direct=direct)

    def _put(
        self, message: str | bytes, *, output: bool, reply: bool, direct: bool = False
    ) -> bool:
        data = message.encode("utf-8") if isinstance(message, str) else message
        size = len(data)
        overflow = False
        changed = False
        inline = False
        with self._cond:
            if self._closed or self._broken:
                return False
            if direct and not self._busy and not self._replies and not self._events:
                self._busy = inline = True  # this thread takes the sending turn
            elif self._queued_bytes + size > self._limit and (self._replies or self._events):
                self._broken = True
                self._clear()
                changed = self._set_paused(False)
                overflow = True
            else:
                if reply:
                    self._replies.append(data)
                else:
                    counted = size if output else 0
                    self._events.append((data, counted))
                    if counted:
                        self._output_bytes += counted
                        if self._output_bytes > self._high:
                            changed = self._set_paused(True)
                self._queued_bytes += size
                self._cond.notify()
        if inline:
            return self._send_direct(data)
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

    def _send_direct(self, data: bytes) -> bool:
        # This thread holds the sending turn (_busy); it hands it back, waking the writer if
        # something was queued meanwhile.
        try:
            self._send([data])
        except Exception as exc:
            self._send_failed(exc)
            return False
        with self._cond:
            self._busy = False
            self._cond.notify_all()
        return True

    def _send_failed(self, exc: Exception) -> None:
        # The connection is gone: drop everything queued and give the sending turn back.
        log.debug("%s: send failed (%s); dropping what is queued", self._thread.name, exc)
        with self._cond:
            self._broken = True
            self._clear()
            changed = self._set_paused(False)
            self._busy = False
            self._cond.notify_all()
        if changed:
            self._flow_changed()

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
        self._replies.clear()
        self._events.clear()
        self._queued_bytes = 0
        self._output_bytes = 0

    def _set_paused(self, paused: bool) -> bool:
        # With self._cond held; True when the state changed.
        if self._paused == paused:
            return False
        self._paused = paused
        return True

    def _take(self) -> list[bytes]:
        # With self._cond held and something queued: replies first, then notifications, up to
        # the batch size (at least one message).
        batch: list[bytes] = []
        size = 0
        cap = self._batch_bytes
        replies = self._replies
        while replies and (not batch or size + len(replies[0]) <= cap):
            data = replies.popleft()
            batch.append(data)
            size += len(data)
        events = self._events
        counted_total = 0
        while events and (not batch or size + len(events[0][0]) <= cap):
            data, counted = events.popleft()
            batch.append(data)
            size += len(data)
            counted_total += counted
        self._queued_bytes -= size
        if counted_total:
            self._output_bytes -= counted_total
        return batch

    def _main(self) -> None:
        while True:
            changed = False
            batch: list[bytes] = []
            with self._cond:
                # Wait for something to send and the sending turn; once closed with nothing
                # left (dropped, or drained), end even while a worker still sends.
                while True:
                    queued = bool(self._replies or self._events)
                    if (queued and not self._busy) or (self._closed and not queued):
                        break
                    self._cond.wait()
                if (self._replies or self._events) and not self._busy and not self._broken:
                    batch = self._take()
                    self._busy = True
                    if self._output_bytes <= self._low:
                        changed = self._set_paused(False)
                else:
                    changed = self._set_paused(False)
            if changed:
                self._flow_changed()
            if not batch:
                return
            try:
                self._send(batch)
            except Exception as exc:
                self._send_failed(exc)
                return
            with self._cond:
                self._busy = False


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
