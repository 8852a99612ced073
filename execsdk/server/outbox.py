"""The single writer of one ``execsdk serve`` connection: two lanes, batches, back-pressure.

Answers go out before queued notifications; notifications keep their order; the writer hands
everything queued to the transport as one batch (one socket write). Process output queued here
is counted against water marks, which the session uses to pause and resume its processes. The
writer thread runs only while there is something to send: it starts when a message is queued
and ends after :data:`WRITER_LINGER` seconds with nothing to send, so an idle connection keeps
no writer thread.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_OUTBOX_LIMIT",
    "DEFAULT_OUTPUT_HIGH_WATER",
    "DEFAULT_OUTPUT_LOW_WATER",
    "WRITER_LINGER",
    "Outbox",
    "SendBatch",
]

log = logging.getLogger(__name__)

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

WRITER_LINGER = 2.0
"""Seconds the writer thread waits for more to send before it ends (the next message starts
it again, ~0.1 ms)."""

_outbox_ids = itertools.count(1)

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
        linger: float = WRITER_LINGER,
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
        self._name = name or f"execsdk-serve-writer-{next(_outbox_ids)}"
        self._linger = linger
        self._thread: threading.Thread | None = None  # the writer while it runs; under _cond

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
            log.exception("%s: flow listener failed", self._name)

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
                if self._thread is None:
                    self._start_writer()
                else:
                    self._cond.notify()
        if inline:
            return self._send_direct(data)
        if changed:
            self._flow_changed()
        if overflow:
            log.warning(
                "%s: more than %d bytes wait to be sent; the client does not read, dropping it",
                self._name,
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
        log.debug("%s: send failed (%s); dropping what is queued", self._name, exc)
        with self._cond:
            self._broken = True
            self._clear()
            changed = self._set_paused(False)
            self._busy = False
            self._cond.notify_all()
        if changed:
            self._flow_changed()

    @property
    def writing(self) -> bool:
        """True while the writer thread runs."""
        return self._thread is not None

    def _start_writer(self) -> None:
        # With self._cond held and something queued.
        thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread = thread
        thread.start()  # under the lock: close() never joins an unstarted thread

    def close(self, *, drain: bool = False, timeout: float | None = 5.0) -> None:
        """Stop the writer (after sending what is queued when ``drain``). Idempotent."""
        changed = False
        with self._cond:
            self._closed = True
            if not drain:
                self._clear()
                changed = self._set_paused(False)
            self._cond.notify_all()
            thread = self._thread
        if changed:
            self._flow_changed()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s still sending after %ss", self._name, timeout)

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
                # left (dropped, or drained), end even while a worker still sends. With nothing
                # queued for `linger` seconds, end too: the next message starts a new writer.
                idle_since: float | None = None
                while True:
                    queued = bool(self._replies or self._events)
                    if (queued and not self._busy) or (self._closed and not queued):
                        break
                    if queued:
                        idle_since = None
                        self._cond.wait()
                        continue
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= self._linger:
                        self._thread = None
                        return
                    self._cond.wait(self._linger - (now - idle_since))
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
