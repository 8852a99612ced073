"""Whole messages written in order to one byte stream, each send bounded by its caller's timeout.

Shared by the WebSocket and the stdio transports. A message is never interleaved with another
and never abandoned halfway while the stream lives (half a WebSocket frame, or half a JSON line,
would corrupt everything after it).

:class:`WriteQueue`, for a stream that can be written without blocking (a TCP socket with
``MSG_DONTWAIT``, a pipe set non-blocking):

* a caller appends its message; when another thread holds the writer role, that thread writes
  it too and the caller returns at once (callers never sleep on a lock, and what they queued
  meanwhile goes out in one system call);
* otherwise the caller takes the role and writes, oldest message first, with non-blocking
  writes, waiting for room with ``poll`` but never past its own deadline;
* once its own message is out, it writes what others queued only while the stream takes it
  without waiting, and hands the rest to a flusher thread;
* at its deadline, its own message is withdrawn if not one byte of it went out
  (``SendTimeout(started=False)``); if part of it did, the rest stays at the head of the queue
  (``SendTimeout(started=True)``). Whatever is left is written by the flusher thread.

The flusher (``<name>-<n>``, a daemon, started only when needed) writes without a deadline and
ends when the queue is empty or the transport shuts the queue (``shut``, at close), after which
the transport breaks the stream so a write in progress fails.

:class:`BlockingWriteQueue`, for a stream that cannot be written without blocking (TLS: an
``SSLSocket`` takes no flags, and its non-blocking mode would be the reader's too): only the
flusher thread writes, with blocking writes; a caller waits for its own message up to its
deadline and gets the same ``SendTimeout`` when it passes.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import select
import threading
from collections.abc import Callable

from execsdk._deadline import Deadline
from execsdk._transport.base import SendTimeout

__all__ = ["BlockingWriteQueue", "WriteQueue", "wait_writable"]

log = logging.getLogger(__name__)

_flusher_ids = itertools.count(1)

_BATCH = 64
"""Messages handed to one system call at most (well under any IOV_MAX)."""
_JOIN_BELOW = 256 * 1024
"""Blocking mode: small messages are joined into one write up to this many bytes."""
_FLUSH_SLICE = 1.0
"""The flusher waits for room in slices this long, so it notices ``shut`` whatever the stream
does (a pipe whose descriptor another thread closed does not wake ``poll``)."""

WriteSome = Callable[[list[bytes | memoryview]], int]
"""Write what the stream takes now from these buffers, in order; 0 when it would block."""
WaitWritable = Callable[[float | None], bool]
"""Wait until the stream can take bytes (or reports an error); False at the timeout."""
WriteAll = Callable[[bytes], None]
"""Write everything, blocking as long as it takes."""


def wait_writable(fileno: int, timeout: float | None) -> bool:
    """``poll`` a descriptor for room to write; True also on an error or hang-up (the next
    write reports it). Raises ``OSError`` for a closed descriptor."""
    if fileno < 0:
        raise ConnectionResetError("the stream is closed")
    poller = select.poll()
    poller.register(fileno, select.POLLOUT)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(poller.poll(ms))


class _Message:
    """One queued message and how far it got. Changed only by the thread holding the writer
    role (blocking mode: under the queue's lock)."""

    __slots__ = ("data", "done", "sent", "started", "withdrawn")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = 0
        self.started = False
        self.done = False
        self.withdrawn = False


def _timeout_error(what: str, msg: _Message, deadline: Deadline, started: bool) -> SendTimeout:
    head = f"{what} did not take a {len(msg.data)}-byte message within {deadline.total}s"
    if started:
        return SendTimeout(
            f"{head}: part of it is written and the rest follows in the background",
            started=True,
        )
    return SendTimeout(f"{head}: nothing of it was written; it was withdrawn", started=False)


def _start_thread(target: Callable[[], None], thread_name: str) -> threading.Thread:
    thread = threading.Thread(
        target=target, name=f"{thread_name}-{next(_flusher_ids)}", daemon=True
    )
    thread.start()
    return thread


class WriteQueue:
    """The send side of a transport whose stream can be written without blocking.

    The queue itself takes no lock: appends and the head's removal are single deque operations,
    and everything else is done by the one thread holding the writer role (``_role``, taken
    with a non-blocking acquire and handed from a caller to the flusher thread as it is).

    Thread-safety: ``put`` from any number of threads at once; ``shut`` and ``join`` from any
    thread.
    """

    def __init__(
        self, what: str, thread_name: str, *, write_some: WriteSome, wait_writable: WaitWritable
    ) -> None:
        """``what`` names the stream in messages ("WebSocket to ws://...")."""
        self._what = what
        self._thread_name = thread_name
        self._write_some = write_some
        self._wait_writable = wait_writable
        self._pending: collections.deque[_Message] = collections.deque()
        self._role = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._error: BaseException | None = None
        self._shut = False

    def put(self, data: bytes, timeout: float | None, *, withdraw: bool = True) -> None:
        """Send ``data`` as one unit within ``timeout`` seconds (``None``: no limit).

        Returns when it was written, or when it is queued behind a message another thread is
        writing. Raises :class:`SendTimeout` at the deadline (see the module doc) and
        ``BrokenPipeError`` once the stream failed or was shut. With ``withdraw=False``
        (control frames) a message is never withdrawn and a timeout is not an error: what is
        left is written in the background.
        """
        if not data:
            return
        self._raise_if_broken()
        msg = _Message(data)
        pending = self._pending
        pending.append(msg)
        # Whoever holds the role looks at the queue again after letting go (_let_go), so a
        # message appended while the role was taken is always written by someone.
        if not self._role.acquire(blocking=False):
            return
        if len(pending) == 1 and self._error is None and not self._shut:
            # Ours alone, the usual case: one write, no bookkeeping (a failure is met again,
            # and handled, on the way below).
            try:
                n = self._write_some([data])
            except OSError:
                n = 0
            if n == len(data):
                msg.done = True
                pending.popleft()
                if not pending and not self._let_go(write=True):
                    return
            elif n > 0:
                msg.started = True
                msg.sent = n
        deadline = Deadline(None if timeout is None else max(0.0, timeout))
        self._write_as_caller(msg, deadline, withdraw)

    def _raise_if_broken(self) -> None:
        error = self._error
        if error is not None:
            raise BrokenPipeError(f"{self._what} is closed: {error}") from error
        if self._shut:
            raise BrokenPipeError(f"{self._what} is closed")

    # ------------------------------------------------------------------ holding the role

    def _write_as_caller(self, own: _Message, deadline: Deadline, withdraw: bool) -> None:
        """Write until our own message is out (or our deadline passes)."""
        try:
            while True:
                if self._error is not None or self._shut:
                    self._drop_all()
                    if own.done:
                        return
                    self._raise_if_broken()
                batch = self._batch()
                if not batch:
                    if self._let_go(write=True):
                        continue  # something was queued meanwhile and the role is ours again
                    return
                if own.done and deadline.expired():
                    self._start_flusher()  # others' messages are not worth our time past it
                    return
                try:
                    if self._write(batch):
                        if not self._pending and not self._let_go(write=True):
                            return  # all out: the common way out, without another round
                        continue
                    if own.done:
                        room = False
                    else:
                        left = deadline.left()
                        room = (left is None or left > 0) and self._wait_writable(left)
                except OSError as exc:
                    self._broke(exc)
                    raise BrokenPipeError(f"{self._what} is closed: {exc}") from exc
                if own.done:
                    self._start_flusher()  # the stream is full and ours is out
                    return
                if not room:
                    self._expire(own, deadline, withdraw)
                    return
        except OSError:  # SendTimeout and BrokenPipeError included
            raise  # the role was given back (or handed on) before these were raised
        except BaseException:
            # Interrupted (KeyboardInterrupt...) while writing: never leave the role taken
            # with nobody writing, or every later message would wait forever.
            self._start_flusher()
            raise

    def _expire(self, own: _Message, deadline: Deadline, withdraw: bool) -> None:
        """Our deadline passed with our message not (wholly) written: withdraw it if nothing of
        it went out, and leave the rest to the flusher."""
        started = own.started
        if withdraw and not started:
            own.withdrawn = True
        self._drop_withdrawn_head()
        if self._pending:
            self._start_flusher()
        else:
            self._let_go(write=False)
        if withdraw:
            raise _timeout_error(self._what, own, deadline, started)

    def _drop_withdrawn_head(self) -> None:
        pending = self._pending
        while pending and pending[0].withdrawn:
            pending.popleft()

    def _batch(self) -> list[_Message]:
        """The oldest messages, for one system call (withdrawn ones are skipped)."""
        self._drop_withdrawn_head()
        pending = self._pending
        batch = []
        # By index: other threads only append, so the first len() entries stay where they are.
        for i in range(min(len(pending), _BATCH)):
            msg = pending[i]
            if msg.withdrawn:
                break  # dropped once it reaches the head
            batch.append(msg)
        return batch

    def _write(self, batch: list[_Message]) -> bool:
        """One system call; True if the stream took something."""
        n = self._write_some(
            [m.data if not m.sent else memoryview(m.data)[m.sent :] for m in batch]
        )
        if n <= 0:
            return False
        for msg in batch:
            take = min(len(msg.data) - msg.sent, n)
            if take <= 0:
                break
            msg.started = True
            msg.sent += take
            n -= take
            if msg.sent == len(msg.data):
                msg.done = True
                self._pending.popleft()  # written in order: a finished message is the head
        return True

    def _let_go(self, *, write: bool) -> bool:
        """Give the role back. If a message was queued meanwhile and the role can be taken
        again, keep it: True to write it ourselves (``write``), else the flusher writes it."""
        while True:
            self._role.release()
            if not self._pending or not self._role.acquire(blocking=False):
                return False
            self._drop_withdrawn_head()
            if not self._pending:
                continue
            if write:
                return True
            self._start_flusher()
            return False

    def _start_flusher(self) -> None:
        """Hand the role, as it is, to a new flusher thread."""
        self._flusher = _start_thread(self._flush_main, self._thread_name)

    def _flush_main(self) -> None:
        try:
            while True:
                if self._error is not None or self._shut:
                    self._drop_all()
                    return
                batch = self._batch()
                if not batch:
                    if self._let_go(write=True):
                        continue
                    return
                if not self._write(batch):
                    self._wait_writable(_FLUSH_SLICE)
        except Exception as exc:
            log.debug("%s: writing in the background failed: %r", self._what, exc)
            self._broke(exc)

    def _broke(self, exc: BaseException) -> None:
        """The stream failed: nothing more can be written."""
        if self._error is None:
            self._error = exc
        self._drop_all()

    def _drop_all(self) -> None:
        """Failed or shut: forget what is queued and give the role back for good (a sender
        that takes it later sees the error and does the same)."""
        self._pending.clear()
        self._role.release()

    # ------------------------------------------------------------------ closing

    def shut(self) -> None:
        """Stop writing (the transport is closing): later ``put`` calls raise, the flusher
        ends after the write in progress, which the transport then breaks. Idempotent."""
        self._shut = True

    def join(self, timeout: float | None) -> bool:
        """Wait for the flusher thread to end (after ``shut``); True if none is left."""
        return _join(self._flusher, timeout)


def _join(thread: threading.Thread | None, timeout: float | None) -> bool:
    if thread is None or thread is threading.current_thread():
        return True
    thread.join(timeout)
    return not thread.is_alive()


class BlockingWriteQueue:
    """The send side of a transport whose stream only has blocking writes (TLS): a flusher
    thread writes, callers wait for their own message within their deadline.

    Thread-safety: ``put`` from any number of threads at once; ``shut`` and ``join`` from any
    thread.
    """

    def __init__(self, what: str, thread_name: str, *, write_all: WriteAll) -> None:
        self._what = what
        self._thread_name = thread_name
        self._write_all = write_all
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[_Message] = collections.deque()
        self._writing = False
        self._flusher: threading.Thread | None = None
        self._error: BaseException | None = None
        self._shut = False

    def put(self, data: bytes, timeout: float | None, *, withdraw: bool = True) -> None:
        """As :meth:`WriteQueue.put`, except that a normal return always means written."""
        if not data:
            return
        deadline = Deadline(None if timeout is None else max(0.0, timeout))
        msg = _Message(data)
        with self._cond:
            self._raise_if_broken()
            self._pending.append(msg)
            if not self._writing:
                self._writing = True
                self._flusher = _start_thread(self._flush_main, self._thread_name)
            while not msg.done:
                self._raise_if_broken()
                left = deadline.left()
                if left is not None and left <= 0:
                    if not withdraw:
                        return
                    if not msg.started:
                        self._pending.remove(msg)
                    raise _timeout_error(self._what, msg, deadline, msg.started)
                self._cond.wait(left)

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise BrokenPipeError(f"{self._what} is closed: {self._error}") from self._error
        if self._shut:
            raise BrokenPipeError(f"{self._what} is closed")

    def _flush_main(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._shut or not self._pending:
                        self._writing = False
                        self._cond.notify_all()
                        return
                    batch = [self._pending[0]]
                    size = len(batch[0].data)
                    for msg in itertools.islice(self._pending, 1, _BATCH):
                        if size + len(msg.data) > _JOIN_BELOW:
                            break
                        batch.append(msg)
                        size += len(msg.data)
                    for msg in batch:
                        msg.started = True  # from here on it is not withdrawn
                data = batch[0].data if len(batch) == 1 else b"".join(m.data for m in batch)
                self._write_all(data)
                with self._cond:
                    for msg in batch:
                        msg.sent = len(msg.data)
                        msg.done = True
                        self._pending.popleft()
                    self._cond.notify_all()
        except Exception as exc:
            log.debug("%s: writing in the background failed: %r", self._what, exc)
            with self._cond:
                if self._error is None:
                    self._error = exc
                self._pending.clear()
                self._writing = False
                self._cond.notify_all()

    def shut(self) -> None:
        """As :meth:`WriteQueue.shut`; callers still waiting get ``BrokenPipeError``."""
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    def join(self, timeout: float | None) -> bool:
        """Wait for the flusher thread to end (after ``shut``); True if none is left."""
        return _join(self._flusher, timeout)
