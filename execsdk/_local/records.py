"""What the local process backend keeps per process, and the long-poll scopes of its reads.

Thread-safety is stated per class; the fds in a record belong to the backend's I/O thread once
the process is registered there.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Literal

from execsdk.backends import (
    OutputChunk,
    ProcessEvents,
    ProcessSpec,
    Stream,
)

__all__ = ["MAX_CHUNK", "Command", "PollScope", "ProcRecord", "Watch", "exit_code"]

log = logging.getLogger(__name__)

MAX_CHUNK = 8192
"""Largest output chunk delivered as one event (PROTOCOL.md §1.5)."""


def exit_code(info: os.waitid_result) -> int:
    """The exit code of a ``waitid`` result: the status, or 128+N for death by signal N."""
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return 128 + info.si_status  # CLD_KILLED / CLD_DUMPED: si_status is the signal


class PollScope:
    """A group of long-polling :meth:`LocalProcessBackend.read` calls that can be ended at once.

    Our server gives each connection one scope: when the connection goes away,
    :meth:`cancel` wakes every ``process/read`` still waiting for it (they return what is there
    now), so the worker threads are free at once instead of when ``waitMs`` runs out. Reads
    started after :meth:`cancel` do not wait at all.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conds: dict[threading.Condition, int] = {}  # waiting reads per condition
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """End every wait in this scope, now and later. Idempotent."""
        with self._lock:
            self._cancelled = True
            conds = list(self._conds)
        for cond in conds:
            with cond:
                cond.notify_all()

    def _enter(self, cond: threading.Condition) -> None:
        # With cond held. Registered under our lock, so a cancel() either sees this condition
        # or has set the flag before the caller checks it.
        with self._lock:
            self._conds[cond] = self._conds.get(cond, 0) + 1

    def _leave(self, cond: threading.Condition) -> None:
        with self._lock:
            left = self._conds[cond] - 1
            if left:
                self._conds[cond] = left
            else:
                del self._conds[cond]


class ProcRecord:
    """State of one process.

    Thread-safety: ``lock`` guards everything another thread may read or change; the fds are
    opened by ``start`` and afterwards used and closed only by the I/O thread.
    """

    def __init__(self, process_id: str, events: ProcessEvents, spec: ProcessSpec) -> None:
        self.id = process_id
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.receiver: ProcessEvents | None = events
        self.tty = spec.tty
        self.has_stdin = spec.tty or spec.pipe_stdin
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        # events and retention
        self.seq = 0
        self.chunks: collections.deque[OutputChunk] = collections.deque()
        self.retained_bytes = 0
        # Output kept until acknowledged (LocalProcessBackend.keep_unacked_output): with a
        # window, chunks after ``acked_seq`` are never evicted, and reading stops while
        # ``unacked_bytes`` reaches the window. Guarded by ``lock``.
        self.ack_window = 0
        self.acked_seq = 0
        self.unacked_bytes = 0
        self.exited = False
        self.exit_code: int | None = None
        self.closed = False
        self.closed_at: float | None = None
        self.reaped = False
        self.output_paused = False  # pause_output(id): written under lock, read by the I/O thread
        # output side (I/O thread only after registration)
        self.outputs: dict[int, Stream] = {}
        self.reading: set[int] = set()  # output fds registered in the selector
        self.pidfd = -1
        self.registered = False
        # stdin side
        self.stdin_fd = -1
        self.stdin_queue: collections.deque[bytes] = collections.deque()
        self.stdin_offset = 0
        self.stdin_close_requested = False  # close the pipe once the queue is written
        self.stdin_closed = False  # close_stdin() was called: later writes -> stdinClosed
        self.stdin_gone = False  # pipe closed (exit, EPIPE): later writes are dropped
        self.flush_posted = False
        self.write_registered = False
        # Bounded stdin (LocalProcessBackend.write): bytes queued and not yet written, and the
        # writes waiting for room, oldest first. Guarded by ``lock``; ``cond`` is notified
        # when the queue shrinks or stdin goes away.
        self.stdin_queued = 0
        self.stdin_waiters: collections.deque[object] = collections.deque()
        self.eof_after_waiters = False  # close_stdin() came while writes were waiting
        self.on_reaped: Callable[[int], None] | None = None  # told the pid before it is reaped

    def retain(self, chunk: OutputChunk, limit: int) -> None:
        """Keep ``chunk`` for ``process/read``; evict the oldest beyond ``limit`` bytes, but
        never a chunk that is still unacknowledged (with an ack window). Under ``lock``."""
        self.chunks.append(chunk)
        self.retained_bytes += len(chunk.data)
        if self.ack_window:
            self.unacked_bytes += len(chunk.data)
        self.evict(limit)

    def evict(self, limit: int) -> None:
        """Drop the oldest chunks beyond ``limit`` bytes that may go. Under ``lock``."""
        chunks = self.chunks
        window = self.ack_window
        while self.retained_bytes > limit and chunks:
            if window and chunks[0].seq > self.acked_seq:
                return
            self.retained_bytes -= len(chunks.popleft().data)

    def acknowledge(self, seq: int, limit: int) -> bool:
        """The client holds every event up to ``seq``: its chunks may be evicted. True when
        this took the process below its window (reading may resume). Under ``lock``."""
        if not self.ack_window or seq <= self.acked_seq:
            return False
        was_full = self.unacked_bytes >= self.ack_window
        start = self.first_index_after(self.acked_seq)
        end = self.first_index_after(seq)
        for i in range(start, end):
            self.unacked_bytes -= len(self.chunks[i].data)
        self.acked_seq = seq
        self.evict(limit)
        return was_full and self.unacked_bytes < self.ack_window

    @property
    def window_full(self) -> bool:
        """Reading must wait for an acknowledgement (plain reads; see ``ack_window``)."""
        return bool(self.ack_window) and self.unacked_bytes >= self.ack_window

    def first_index_after(self, after_seq: int) -> int:
        chunks = self.chunks
        lo, hi = 0, len(chunks)
        while lo < hi:
            mid = (lo + hi) // 2
            if chunks[mid].seq <= after_seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def kill_group(self, sig: int) -> None:
        """Signal the whole process group (the caller holds ``lock``, or the group is ours)."""
        # The leader stays a zombie until closed, so its pid is still our process group id.
        pid = self.pid
        if pid is None or self.reaped:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:  # a setuid child: its group is not ours to signal
            log.warning("cannot signal process group %d of %r: %s", pid, self.id, exc)

    def reap(self, timeout: float) -> None:
        """Collect the leader's exit status (the pid is free for reuse afterwards)."""
        # Under self.lock, so no killpg() can race the pid being freed.
        with self.lock:
            pid = self.pid
            if pid is None or self.reaped:
                return
            self.forget_group()
            popen = self.popen
            if popen is not None:
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("process %r (pid %d) could not be reaped", self.id, pid)
                    return
                self.reaped = True
                return
            end = time.monotonic() + timeout
            while True:
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid  # reaped by somebody else
                if done:
                    self.reaped = True
                    return
                if time.monotonic() >= end:
                    log.warning("process %r (pid %d) could not be reaped", self.id, pid)
                    return
                time.sleep(0.005)

    def forget_group(self) -> None:
        """Unregister the process group from the guardian: the leader is about to be reaped
        (or was, by somebody else), after which its pid may be reused. Under ``lock``."""
        callback, self.on_reaped = self.on_reaped, None
        if callback is not None and self.pid is not None:
            callback(self.pid)

    # -- bounded stdin (under ``lock``) ---------------------------------------------------

    def stdin_room(self, size: int, limit: int) -> bool:
        """``size`` more bytes fit under ``limit`` (an empty queue takes any one write)."""
        return self.stdin_queued == 0 or self.stdin_queued + size <= limit

    def queue_stdin(self, data: bytes) -> None:
        self.stdin_queue.append(data)
        self.stdin_queued += len(data)

    def request_eof(self) -> None:
        """Close stdin once everything queued is written (``^D`` on a tty)."""
        if self.tty:
            self.queue_stdin(b"\x04")
        else:
            self.stdin_close_requested = True

    def drop_stdin(self) -> None:
        """Forget what is queued (stdin is gone) and wake the writes waiting for room."""
        self.stdin_queue.clear()
        self.stdin_offset = 0
        self.stdin_queued = 0
        if self.stdin_waiters:
            self.cond.notify_all()


Kind = Literal["out", "stdin", "pidfd", "wake"]


class Watch:
    """Selector payload: which process and role a registered fd has. Thread-safety: immutable."""

    __slots__ = ("kind", "proc", "stream")

    def __init__(self, kind: Kind, proc: ProcRecord | None, stream: Stream | None = None) -> None:
        self.kind = kind
        self.proc = proc
        self.stream = stream


Command = (
    tuple[Literal["register"], ProcRecord]
    | tuple[Literal["flush"], ProcRecord]
    | tuple[Literal["exit"], ProcRecord, int]
    | tuple[Literal["flow"], ProcRecord | None]
    | tuple[Literal["stop"], float]
)
