"""The I/O thread of the local process backend: every pipe, pty and exit, multiplexed.

One thread per backend (``execsdk-local-io-<n>``) waits on a selector for output, writable stdin
pipes, pidfds (process exits) and a wake-up pipe that carries commands from other threads
(register a process, flush its stdin, a waiter thread's exit code, a flow change, stop). It
numbers events, retains output for ``process/read``, delivers events to receivers and forgets
closed records after their retention. :class:`IoLoop` is the half of
:class:`~execsdk._local.processes.LocalProcessBackend` that runs there; the backend's public
methods (other threads) reach it only through :meth:`IoLoop._post` and the records' locks.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import os
import selectors
import signal
import threading
import time

from execsdk import errors
from execsdk._local.records import MAX_CHUNK, Command, ProcRecord, Watch, exit_code
from execsdk.backends import (
    OutputChunk,
    ProcessEvents,
    Stream,
)

__all__ = ["IoLoop"]

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_READS_PER_WAKE = 8
_io_ids = itertools.count(1)
_wait_ids = itertools.count(1)


class IoLoop:
    """The I/O-thread half of the local process backend (a base class of it).

    Thread-safety: ``_post`` and ``_ensure_io_thread`` (with the backend lock held) from any
    thread; every other method runs on the I/O thread only.
    """

    # State shared with the backend's public half (set by its constructor).
    _lock: threading.Lock
    _procs: dict[str, ProcRecord]
    _output_paused: bool
    _retain_bytes: int
    _retain_after_close: float
    _thread: threading.Thread | None
    _sel: selectors.BaseSelector | None
    _wake_r: int
    _wake_w: int
    _post_lock: threading.Lock
    _commands: collections.deque[Command]
    _io_done: bool
    _waiters: set[threading.Thread]
    _forget_heap: list[tuple[float, int, ProcRecord]]
    _forget_ids: itertools.count[int]
    _stop_at: float | None

    def _ensure_io_thread(self) -> None:
        # Called with self._lock held.
        if self._thread is not None:
            return
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, Watch("wake", None))
        self._thread = threading.Thread(
            target=self._io_main, name=f"execsdk-local-io-{next(_io_ids)}", daemon=True
        )
        self._thread.start()

    def _post(self, command: Command) -> bool:
        with self._post_lock:
            if self._io_done or self._wake_w < 0:
                return False
            self._commands.append(command)
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the I/O thread is awake anyway
            return True

    def _deliver(self, proc: ProcRecord, receiver: ProcessEvents, what: str, *args: object) -> None:
        try:
            getattr(receiver, what)(*args)
        except Exception:
            log.exception("events receiver %s of process %r raised", what, proc.id)

    def _io_main(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while True:
                timeout = self._select_timeout()
                ready = sel.select(timeout)
                exits: list[ProcRecord] = []
                for key, _mask in ready:
                    watch: Watch = key.data
                    try:
                        if watch.kind == "out":
                            self._on_readable(key.fd, watch)
                        elif watch.kind == "stdin":
                            assert watch.proc is not None
                            self._flush(watch.proc)
                        elif watch.kind == "pidfd":
                            assert watch.proc is not None
                            exits.append(watch.proc)
                        else:
                            self._drain_wake()
                    except Exception:
                        log.exception("local I/O thread: handling fd %d failed", key.fd)
                # Pipes first, exits after: output already readable is numbered before exited.
                for proc in exits:
                    try:
                        self._on_pidfd(proc)
                    except Exception:
                        log.exception("local I/O thread: exit of %r failed", proc.id)
                self._run_commands()
                self._expire_records()
                if self._stop_at is not None and (
                    time.monotonic() >= self._stop_at or self._all_closed()
                ):
                    break
        except Exception:
            log.exception("local I/O thread crashed")
        finally:
            self._final_cleanup()

    def _select_timeout(self) -> float | None:
        now = time.monotonic()
        ends: list[float] = []
        if self._forget_heap:
            ends.append(self._forget_heap[0][0])
        if self._stop_at is not None:
            ends.append(self._stop_at)
        if not ends:
            return None
        return min(max(0.0, min(ends) - now), 3600.0)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_commands(self) -> None:
        while True:
            try:
                cmd = self._commands.popleft()
            except IndexError:
                return
            try:
                if cmd[0] == "register":
                    self._register(cmd[1])
                elif cmd[0] == "flush":
                    if cmd[1].registered:
                        self._flush(cmd[1])
                elif cmd[0] == "exit":
                    self._set_exited(cmd[1], cmd[2])
                elif cmd[0] == "flow":
                    self._sync_flow(cmd[1])
                else:
                    self._stop_at = cmd[1]
                    self._sync_flow(None)  # closing reads paused output too, so it can close
            except Exception:
                log.exception("local I/O thread: command %s failed", cmd[0])

    def _all_closed(self) -> bool:
        with self._lock:
            return all(p.closed for p in self._procs.values())

    # ----------------------------------------------------------------- I/O thread handlers

    def _register(self, proc: ProcRecord) -> None:
        sel = self._sel
        assert sel is not None
        self._sync_reading(proc)
        if proc.pidfd >= 0:
            sel.register(proc.pidfd, selectors.EVENT_READ, Watch("pidfd", proc))
        else:
            self._start_waiter(proc)
        proc.registered = True
        self._flush(proc)

    def _start_waiter(self, proc: ProcRecord) -> None:
        pid = proc.pid
        assert pid is not None

        def wait() -> None:
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                code = exit_code(info) if info is not None else -1
            except ChildProcessError:
                code = -1  # somebody else reaped it
            self._post(("exit", proc, code))
            self._waiters.discard(threading.current_thread())

        thread = threading.Thread(target=wait, name=f"execsdk-local-wait-{next(_wait_ids)}")
        thread.daemon = True
        self._waiters.add(thread)
        thread.start()

    def _held(self, proc: ProcRecord) -> bool:
        # Plain attribute reads: the flags are bools written under a lock by pause/resume, and
        # a resume always posts a "flow" command after writing, so a stale read is corrected.
        return (
            proc.output_paused or self._output_paused or proc.window_full
        ) and self._stop_at is None

    def _sync_reading(self, proc: ProcRecord) -> None:
        """Register or unregister the process's output fds as its pause state says."""
        sel = self._sel
        assert sel is not None
        held = self._held(proc)
        for fd, stream in proc.outputs.items():
            if held and fd in proc.reading:
                sel.unregister(fd)
                proc.reading.discard(fd)
            elif not held and fd not in proc.reading:
                sel.register(fd, selectors.EVENT_READ, Watch("out", proc, stream))
                proc.reading.add(fd)

    def _sync_flow(self, proc: ProcRecord | None) -> None:
        if proc is not None:
            procs = [proc]
        else:
            with self._lock:
                procs = list(self._procs.values())
        for p in procs:
            if p.registered:
                self._sync_reading(p)

    def _on_readable(self, fd: int, watch: Watch) -> None:
        proc = watch.proc
        stream = watch.stream
        assert proc is not None and stream is not None
        if self._held(proc):
            assert self._sel is not None
            self._sel.unregister(fd)
            proc.reading.discard(fd)
            return
        eof = False
        for _ in range(_READS_PER_WAKE):
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: pty whose slave side is closed everywhere
                    log.warning("reading output of %r failed: %s", proc.id, exc)
                eof = True
                break
            if not data:
                eof = True
                break
            # Delivered read by read: a receiver that pauses the output stops this burst.
            self._emit_output(proc, stream, data)
            if len(data) < _READ_SIZE or self._held(proc):
                break
        if eof:
            assert self._sel is not None
            self._sel.unregister(fd)
            proc.reading.discard(fd)
            os.close(fd)
            del proc.outputs[fd]
            self._maybe_closed(proc)

    def _emit_output(self, proc: ProcRecord, stream: Stream, data: bytes) -> None:
        out: list[OutputChunk] = []
        limit = self._retain_bytes
        with proc.lock:
            for i in range(0, len(data), MAX_CHUNK):
                proc.seq += 1
                chunk = OutputChunk(stream, data[i : i + MAX_CHUNK], proc.seq)
                proc.retain(chunk, limit)
                out.append(chunk)
            proc.cond.notify_all()
            receiver = proc.receiver
        if receiver is not None:
            for chunk in out:
                self._deliver(proc, receiver, "on_output", chunk.seq, chunk.stream, chunk.data)

    def _on_pidfd(self, proc: ProcRecord) -> None:
        pid = proc.pid
        assert pid is not None
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
            code = -1  # reaped behind our back: the status is lost
        else:
            if info is None:
                return  # not exited yet (spurious wake-up)
            code = exit_code(info)
        assert self._sel is not None
        self._sel.unregister(proc.pidfd)
        os.close(proc.pidfd)
        proc.pidfd = -1
        if info is None:
            with proc.lock:
                proc.forget_group()
                proc.reaped = True
        self._set_exited(proc, code)

    def _set_exited(self, proc: ProcRecord, code: int) -> None:
        with proc.lock:
            if proc.exited:
                return
            proc.seq += 1
            seq = proc.seq
            proc.exited = True
            proc.exit_code = code
            proc.cond.notify_all()
            receiver = proc.receiver
        self._close_stdin_fd(proc)
        if receiver is not None:
            self._deliver(proc, receiver, "on_exited", seq, code)
        self._maybe_closed(proc)

    def _maybe_closed(self, proc: ProcRecord) -> None:
        with proc.lock:
            if proc.closed or not proc.exited or proc.outputs:
                return
            proc.seq += 1
            seq = proc.seq
            proc.closed = True
            proc.closed_at = now = time.monotonic()
            proc.cond.notify_all()
            receiver = proc.receiver
        if receiver is not None:
            self._deliver(proc, receiver, "on_closed", seq)
        proc.reap(0.0)
        heapq.heappush(
            self._forget_heap, (now + self._retain_after_close, next(self._forget_ids), proc)
        )

    def _close_stdin_fd(self, proc: ProcRecord) -> None:
        with proc.lock:
            fd = proc.stdin_fd
            proc.stdin_fd = -1
            proc.stdin_gone = True
            proc.drop_stdin()  # frees the queued bytes; waiting writes answer at once
        registered = proc.write_registered
        proc.write_registered = False
        if fd < 0:
            return
        if registered and self._sel is not None:
            self._sel.unregister(fd)
        os.close(fd)

    def _flush(self, proc: ProcRecord) -> None:
        close = False
        with proc.lock:
            proc.flush_posted = False
            fd = proc.stdin_fd
            if fd < 0:
                proc.drop_stdin()
                return
            queue = proc.stdin_queue
            queued_before = proc.stdin_queued
            while queue:
                head = queue[0]
                try:
                    n = os.write(fd, memoryview(head)[proc.stdin_offset :])
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EPIPE:
                        log.warning("writing stdin of %r failed: %s", proc.id, exc)
                    close = True  # the child closed its stdin: drop what is queued, quietly
                    break
                proc.stdin_offset += n
                proc.stdin_queued -= n
                if proc.stdin_offset >= len(head):
                    queue.popleft()
                    proc.stdin_offset = 0
            if proc.stdin_waiters and proc.stdin_queued < queued_before:
                proc.cond.notify_all()  # room for the writes waiting (bounded stdin)
            if not queue and proc.stdin_close_requested:
                close = True
            want_write = bool(queue) and not close
        if close:
            self._close_stdin_fd(proc)
            return
        if want_write != proc.write_registered:  # write_registered: I/O thread only
            assert self._sel is not None
            if want_write:
                self._sel.register(fd, selectors.EVENT_WRITE, Watch("stdin", proc))
            else:
                self._sel.unregister(fd)
            proc.write_registered = want_write

    def _expire_records(self) -> None:
        if not self._forget_heap:
            return
        now = time.monotonic()
        while self._forget_heap and self._forget_heap[0][0] <= now:
            _, _, proc = heapq.heappop(self._forget_heap)
            with self._lock:
                if self._procs.get(proc.id) is proc:
                    del self._procs[proc.id]

    def _final_cleanup(self) -> None:
        with self._post_lock:
            self._io_done = True
            self._commands.clear()
        with self._lock:
            procs = list(self._procs.values())
        lost = errors.ConnectionClosed("local process backend closed")
        sel = self._sel
        for proc in procs:
            with proc.lock:
                unfinished = not proc.closed
                if unfinished:
                    proc.kill_group(signal.SIGKILL)
                receiver = proc.receiver if unfinished else None
                fds = list(proc.outputs)
                proc.outputs = {}
                pidfd, proc.pidfd = proc.pidfd, -1
                proc.cond.notify_all()
            self._close_stdin_fd(proc)
            for fd in [*fds, pidfd]:
                if fd < 0:
                    continue
                if sel is not None:
                    try:
                        sel.unregister(fd)
                    except (KeyError, ValueError):
                        pass
                os.close(fd)
            proc.reap(2.0)
            if receiver is not None:
                self._deliver(proc, receiver, "on_lost", lost)
        if sel is not None:
            sel.close()
        with self._post_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
