"""Processes in this Python process: the local :class:`~execsdk.backends.ProcessBackend`.

Used by ``LocalEnvironment`` and, through thin adapters, by our own server (``execsdk serve``),
so it behaves like the codex exec-server (PROTOCOL.md §3.4-3.9 and §4): one seq counter per
process shared by output, exited and closed; output chunks of at most 8 KiB; exit code 128+N
for death by signal N; the last 1 MiB of output retained for :meth:`LocalProcessBackend.read`;
records forgotten a while after ``closed``.

Linux/POSIX only. Every child runs in its own session and process group, so ``terminate``
and ``interrupt`` reach its background children too.
One I/O thread per backend (``execsdk-local-io-<n>``) multiplexes every pipe and pty with
``selectors`` and detects exits with ``os.pidfd_open`` (Linux >= 5.3); without pidfds a small
waiter thread per process (``execsdk-local-wait-<n>``) does the blocking wait instead. A
process's leader is left a zombie (its status read with ``WNOWAIT``) until the process is
closed, so its process group id cannot be reused while we may still signal it.

Output can be paused (:meth:`LocalProcessBackend.pause_output`): the I/O thread then stops
reading a process's pipes, so once the pipe (or pty) buffer is full the child blocks in
``write()``. That is how our server slows a process down for a client that reads slowly,
without ever blocking the I/O thread itself. Long-polling reads can be grouped in a
:class:`PollScope` and ended together (our server ends a connection's polls when it goes away).

Stdin is bounded: at most :data:`STDIN_LIMIT` bytes a child has not read yet are queued per
process; a write beyond it waits (:meth:`LocalProcessBackend.write`, or
:meth:`LocalProcessBackend.start_write` for a caller that waits elsewhere, like our server)
until the child reads, exits or closes its stdin.

Children start clean (``childenv.clean_spawn``): default signal dispositions, an empty signal
mask, a session of their own. With :func:`guard_children`, a small guardian process kills
every process group still registered when this process dies, however it dies.

Differences a caller may notice: ``interrupt`` sends SIGINT to the whole process group (codex
signals the process); argv[0] is looked up on the child's PATH (``os.defpath`` when it has
none: like codex, never on this process's PATH).
Every open process costs up to four file descriptors (stdout, stderr, stdin, pidfd); raise
``RLIMIT_NOFILE`` for thousands of concurrent processes.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import itertools
import logging
import os
import pwd
import selectors
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping

from execsdk import errors
from execsdk._deadline import UNSET, Timeoutish, resolve_timeout
from execsdk._local.childenv import CLEAN_SPAWN, build_child_env, clean_spawn
from execsdk._local.ioloop import IoLoop
from execsdk._local.records import Command, PollScope, ProcRecord
from execsdk.backends import (
    OutputChunk,
    ProcessEvents,
    ProcessSpec,
    ReadResult,
    Stream,
    WriteStatus,
)

__all__ = ["STDIN_LIMIT", "LocalProcessBackend", "PendingWrite", "guard_children"]

log = logging.getLogger(__name__)

_TTY_ROWS, _TTY_COLS = 24, 80

STDIN_LIMIT = 8 << 20
"""Bytes of stdin queued per process and not yet read by the child (8 MiB). A write that does
not fit waits for room; one write larger than the limit is taken whole when nothing is queued,
so the queue holds at most ``max(STDIN_LIMIT, one write)``."""

# ----------------------------------------------------------------------------- the guardian

GUARDIAN_MARK = "# execsdk-guardian"
"""First line of the guardian's program: it names the process in ``ps`` and lets tools (and
tests) tell it from the server's children."""

_GUARDIAN = rf"""{GUARDIAN_MARK}
import os, signal
for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
groups, rest = set(), b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    except OSError:
        data = b""
    if not data:
        break
    *lines, rest = (rest + data).split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class _Guardian:
    """A child process that outlives us just long enough to kill our children.

    It reads ``+PGID``/``-PGID`` lines from a pipe whose only writer is this process, and on
    EOF (this process exited, crashed or was SIGKILLed) SIGKILLs every group still registered.
    It runs in its own session and ignores the usual terminating signals, so a signal to our
    process group or terminal does not take it first. A group is unregistered just before its
    leader is reaped, so a recycled pid is never signalled. Thread-safety: any thread (each
    line is one ``write()`` of fewer than PIPE_BUF bytes).
    """

    def __init__(self) -> None:
        read_end, self._fd = os.pipe()
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARDIAN],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(self._fd)
            raise
        finally:
            os.close(read_end)
        os.set_blocking(self._fd, False)
        self._warned = False

    @property
    def pid(self) -> int:
        return self._popen.pid

    def _send(self, line: bytes) -> None:
        try:
            os.write(self._fd, line)
        except OSError as exc:  # gone (EPIPE) or stopped with a full pipe (EAGAIN)
            if not self._warned:
                self._warned = True
                log.warning("the child guardian (pid %d) is not reading: %s", self.pid, exc)

    def register(self, pgid: int) -> None:
        self._send(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)


_guardian: _Guardian | None = None
_guardian_lock = threading.Lock()


def guard_children() -> int:
    """From now on, children of every :class:`LocalProcessBackend` of this process die with it.

    Starts the guardian process once (idempotent) and returns its pid. ``execsdk serve`` calls
    it at start; a library user of the local backend may too. Processes started before are not
    covered, nor a descendant that left its process group (``setsid``, ``setpgid``), nor one
    whose group leader was already reaped.

    Raises:
        OSError: the guardian could not be started.
    """
    global _guardian
    with _guardian_lock:
        if _guardian is None:
            _guardian = _Guardian()
        return _guardian.pid


def _pty_env(env: Mapping[str, str]) -> dict[str, str]:
    """A tty child's environment: codex's pty spawner adds ``SHELL`` (the user's login shell)
    when the child's environment has none; still sorted by name."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    full = {**env, "SHELL": shell or "/bin/sh"}
    return dict(sorted(full.items(), key=lambda item: os.fsencode(item[0])))


def _rust_debug(text: str) -> str:
    """``text`` quoted as Rust's ``{:?}`` quotes a string (codex quotes PATH so)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    out = [
        escapes.get(ch) or (f"\\u{{{ord(ch):x}}}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
        for ch in text
    ]
    return '"' + "".join(out) + '"'


def _pty_program(name: str, env: Mapping[str, str], cwd: str) -> str:
    """The program a tty child runs, found as codex's pty spawner finds it: ``arg0`` (else
    ``argv[0]``) itself when it holds a slash, else the first executable file of that name on
    the child's PATH; no PATH at all is an error, even where execvp would use a default.

    Raises:
        FileNotFoundError: (``errors.RemoteFileNotFoundError``) not found, with codex's words
            as ``server_message``.
    """
    if "/" in name:
        return name
    path = env.get("PATH")
    if path is None:
        raise _not_found(name, f"Unable to spawn {name} because:\nUnable to resolve the PATH")
    for folder in path.split(os.pathsep):
        if not folder:
            continue
        candidate = os.path.join(folder, name)
        checked = os.path.join(cwd, candidate)  # a relative PATH entry counts from the cwd
        try:
            if os.path.isfile(checked) and os.access(checked, os.X_OK):
                return candidate
        except ValueError:  # a NUL byte: no such file
            break
    raise _not_found(
        name,
        f"Unable to spawn {name} because:\nNo viable candidates found in PATH {_rust_debug(path)}",
    )


def _not_found(name: str, words: str) -> errors.RemoteOSError:
    # FileNotFoundError for local callers; codex's words for the server's answer (-32603).
    return errors.os_error(errno.ENOENT, os.strerror(errno.ENOENT), name, server_message=words)


def _child_setup(tty: bool, default_sigint: bool) -> Callable[[], None] | None:
    """A ``preexec_fn`` when one is needed (it rules out vfork, so only then), else None."""
    if not tty and not default_sigint:
        return None

    def setup() -> None:
        # Runs in the child between fork and exec, after setsid() and after fds 0-2 were set.
        if default_sigint:
            # Ignored signals stay ignored across exec; a server started with SIGINT ignored
            # (`cmd &` in a script) would otherwise hand that on and interrupt() would fail.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if tty:
            # Make the pty slave the new session's controlling terminal (^C, /dev/tty).
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return setup


class PendingWrite:
    """A stdin write waiting for room under :data:`STDIN_LIMIT`, in line behind earlier ones.

    Returned by :meth:`LocalProcessBackend.start_write`; :meth:`wait` must be called once (it
    also takes the write out of line when it gives up). Thread-safety: one waiting thread.
    """

    def __init__(
        self, backend: LocalProcessBackend, proc: ProcRecord, data: bytes, token: object
    ) -> None:
        self._backend = backend
        self._proc = proc
        self._data = data
        self._token = token

    @property
    def size(self) -> int:
        return len(self._data)

    def wait(self, timeout: float | None = None, scope: PollScope | None = None) -> WriteStatus:
        """Wait for room, queue the data, return ``"accepted"``; also ``"accepted"`` (the data
        dropped, as for any write after that) when the process exits or closes its stdin first.

        Raises:
            errors.RequestTimeout: ``timeout`` seconds passed (nothing was queued).
            errors.ConnectionClosed: ``scope`` was cancelled (our server: the connection
                ended) or the backend closed; nothing was queued.
        """
        proc, backend = self._proc, self._backend
        end = None if timeout is None else time.monotonic() + timeout
        post = False
        with proc.cond:
            if scope is not None:
                scope._enter(proc.cond)
            try:
                while True:
                    if proc.exited or proc.stdin_gone:
                        self._leave_line()
                        return "accepted"
                    if (scope is not None and scope.cancelled) or backend._io_done:
                        self._leave_line()
                        raise errors.ConnectionClosed("the write was abandoned: connection closed")
                    if proc.stdin_waiters[0] is self._token and proc.stdin_room(
                        len(self._data), STDIN_LIMIT
                    ):
                        proc.stdin_waiters.popleft()
                        proc.queue_stdin(self._data)
                        self._data = b""
                        self._after_last()
                        post = not proc.flush_posted
                        proc.flush_posted = True
                        break
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        self._leave_line()
                        raise errors.RequestTimeout(
                            "process/write", timeout, "the child does not read its stdin"
                        )
                    proc.cond.wait(left)
            finally:
                if scope is not None:
                    scope._leave(proc.cond)
        if post:
            backend._post(("flush", proc))
        return "accepted"

    def _leave_line(self) -> None:
        # Under proc.lock: give up our place; the next write in line may now fit.
        proc = self._proc
        try:
            proc.stdin_waiters.remove(self._token)
        except ValueError:
            return
        self._data = b""
        if self._after_last():
            proc.flush_posted = True
            self._backend._post(("flush", proc))  # never blocks (a wake-up pipe write)

    def _after_last(self) -> bool:
        # Under proc.lock: wake the next in line; the last one requests a pending EOF.
        proc = self._proc
        proc.cond.notify_all()
        if proc.stdin_waiters or not proc.eof_after_waiters:
            return False
        proc.eof_after_waiters = False
        if proc.exited or proc.stdin_gone:
            return False
        proc.request_eof()
        return True


class LocalProcessBackend(IoLoop):
    """Runs processes here and reports their output as seq-numbered events (Linux/POSIX).

    Thread-safety: every public method may be called from any thread; receivers are called
    only from this backend's I/O thread, one event at a time, in seq order.

    Args:
        retain_bytes: output kept per process for :meth:`read` (oldest chunks evicted).
        retain_after_close: seconds a closed process stays readable before it is forgotten.
        default_cwd: used when ``spec.cwd`` is None (default: ``os.getcwd()`` now).
        base_env: what ``inherit="all"``/``"core"`` start from (default: ``os.environ`` now).
    """

    def __init__(
        self,
        *,
        retain_bytes: int = 1_048_576,
        retain_after_close: float = 80.0,
        default_cwd: str | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self._retain_bytes = retain_bytes
        self._retain_after_close = retain_after_close
        self._default_cwd = default_cwd if default_cwd is not None else os.getcwd()
        self._base_env: dict[str, str] = dict(os.environ if base_env is None else base_env)
        self._lock = threading.Lock()  # guards _procs, _closing, thread start
        self._procs: dict[str, ProcRecord] = {}
        self._closing = False
        self._output_paused = False  # pause_output(None); written under _lock
        self._ack_window = 0  # keep_unacked_output(); read when a process starts
        self._use_pidfd = hasattr(os, "pidfd_open")
        self._thread: threading.Thread | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._post_lock = threading.Lock()  # guards _commands, _io_done, the wake fd
        self._commands: collections.deque[Command] = collections.deque()
        self._io_done = False
        self._waiters: set[threading.Thread] = set()
        # I/O thread only:
        self._forget_heap: list[tuple[float, int, ProcRecord]] = []
        self._forget_ids = itertools.count()
        self._stop_at: float | None = None

    # ----------------------------------------------------------------- protocol properties

    @property
    def can_close_stdin(self) -> bool:
        """Always True: stdin pipes can be closed locally."""
        return True

    @property
    def can_interrupt(self) -> bool:
        """Always True: SIGINT is sent to the process group."""
        return True

    def __repr__(self) -> str:
        with self._lock:
            procs = list(self._procs.values())
            closing = self._closing
        now = time.monotonic()
        kept = [p for p in procs if not self._expired(p, now)]
        running = sum(1 for p in kept if not p.exited)
        state = " closed" if closing else ""
        return (
            f"<LocalProcessBackend processes={len(kept)} running={running} "
            f"cwd={self._default_cwd!r}{state}>"
        )

    # ----------------------------------------------------------------- lookups

    def _expired(self, proc: ProcRecord, now: float | None = None) -> bool:
        closed_at = proc.closed_at
        if closed_at is None:
            return False
        return (time.monotonic() if now is None else now) - closed_at >= self._retain_after_close

    def _lookup(self, process_id: str) -> ProcRecord | None:
        with self._lock:
            proc = self._procs.get(process_id)
            if proc is not None and self._expired(proc):
                del self._procs[process_id]
                return None
            return proc

    def _require(self, process_id: str) -> ProcRecord:
        proc = self._lookup(process_id)
        if proc is None:
            raise errors.ProcessNotFound(f"unknown process id {process_id}", process_id=process_id)
        return proc

    def running_count(self) -> int:
        """Processes started and not yet exited."""
        with self._lock:
            procs = list(self._procs.values())
        return sum(1 for p in procs if not p.exited)

    def process_ids(self) -> list[str]:
        """Ids of every live or still retained process."""
        with self._lock:
            now = time.monotonic()
            return [pid for pid, p in self._procs.items() if not self._expired(p, now)]

    def pid(self, process_id: str) -> int | None:
        """OS pid (also the process group id) of a process; None while it is starting.

        Raises:
            errors.ProcessNotFound: unknown or forgotten id.
        """
        return self._require(process_id).pid

    # ----------------------------------------------------------------- start

    def start(
        self,
        process_id: str,
        spec: ProcessSpec,
        events: ProcessEvents,
        *,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Start a process; ``events`` is registered before the child can produce anything.

        ``timeout`` is accepted for the protocol's sake; spawning does not wait on the child.

        Raises:
            errors.InvalidParams: empty argv or a bad env policy.
            errors.InvalidRequest: ``process_id`` is live or still retained.
            FileNotFoundError: (``errors.RemoteFileNotFoundError``) missing executable or cwd;
                other spawn failures raise the ``errors.RemoteOSError`` for their errno.
            errors.ConnectionClosed: the backend was closed.
        """
        if not spec.argv:
            raise errors.InvalidParams(-32602, "argv must not be empty")
        env = build_child_env(spec.env, spec.env_policy, self._base_env)
        if spec.tty and "SHELL" not in env:
            env = _pty_env(env)
        cwd = spec.cwd if spec.cwd is not None else self._default_cwd
        proc = ProcRecord(process_id, events, spec)
        proc.ack_window = self._ack_window
        with self._lock:
            if self._closing:
                raise errors.ConnectionClosed("local process backend is closed")
            existing = self._procs.get(process_id)
            if existing is not None and not self._expired(existing):
                raise errors.InvalidRequest(-32600, f"process {process_id} already exists")
            self._procs[process_id] = proc  # reserve the id while spawning, without the lock
            self._ensure_io_thread()
        try:
            self._spawn(proc, spec, env, cwd)
        except BaseException:
            with self._lock:
                if self._procs.get(process_id) is proc:
                    del self._procs[process_id]
            raise
        with self._lock:
            closing = self._closing
        if closing:
            with proc.lock:  # close() ran while we spawned and may have missed our pid
                proc.kill_group(signal.SIGKILL)
        if not self._post(("register", proc)):
            # The I/O thread is already gone: nobody else will reap this child.
            self._abandon(proc)
            raise errors.ConnectionClosed("local process backend is closed")

    def _abandon(self, proc: ProcRecord) -> None:
        with proc.lock:
            proc.kill_group(signal.SIGKILL)
            fds = [*proc.outputs, proc.stdin_fd, proc.pidfd]
            proc.outputs, proc.stdin_fd, proc.pidfd = {}, -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        proc.reap(2.0)
        with self._lock:
            if self._procs.get(proc.id) is proc:
                del self._procs[proc.id]

    # ----------------------------------------------------------------- stdin

    def write(self, process_id: str, data: bytes, *, timeout: Timeoutish = UNSET) -> WriteStatus:
        """Queue ``data`` for the process's stdin, waiting while :data:`STDIN_LIMIT` bytes are
        queued and unread (``timeout``: how long at most; default no limit).

        Returns ``"unknownProcess"`` for an unknown id, ``"stdinClosed"`` when the process has
        no stdin (neither ``pipe_stdin`` nor ``tty``) or :meth:`close_stdin` was called, else
        ``"accepted"`` (the data is dropped when the process already exited or closed its stdin,
        also while the write waited).

        Raises:
            errors.RequestTimeout: no room within ``timeout`` (nothing was queued).
            errors.ConnectionClosed: the backend was closed while the write waited.
        """
        started = self.start_write(process_id, data)
        if isinstance(started, PendingWrite):
            return started.wait(resolve_timeout(timeout, None))
        return started

    def start_write(self, process_id: str, data: bytes) -> WriteStatus | PendingWrite:
        """Like :meth:`write` but never blocks: the status, or a :class:`PendingWrite` holding
        this write's place in line (writes are queued in the order they were started) when it
        must wait for room. On this backend's I/O thread (a receiver) nothing ever waits."""
        proc = self._lookup(process_id)
        if proc is None:
            return "unknownProcess"
        with proc.lock:
            if not proc.has_stdin or proc.stdin_closed:
                return "stdinClosed"
            if not data or proc.exited or proc.stdin_gone:
                return "accepted"
            data = bytes(data)
            if (
                proc.stdin_waiters or not proc.stdin_room(len(data), STDIN_LIMIT)
            ) and threading.current_thread() is not self._thread:
                token = object()
                proc.stdin_waiters.append(token)
                return PendingWrite(self, proc, data, token)
            proc.queue_stdin(data)
            post = not proc.flush_posted
            proc.flush_posted = True
        if post:
            self._post(("flush", proc))
        return "accepted"

    def close_stdin(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """After the queued bytes (and the writes still waiting for room), close the stdin pipe
        (EOF); with a tty, send ``^D`` instead.

        Later writes answer ``"stdinClosed"``. An unknown id is ignored, like ``process/signal``.
        """
        proc = self._lookup(process_id)
        if proc is None:
            return
        with proc.lock:
            if not proc.has_stdin or proc.stdin_closed:
                return
            proc.stdin_closed = True
            if proc.exited or proc.stdin_gone:
                return
            if proc.stdin_waiters:
                proc.eof_after_waiters = True  # the last waiting write requests it
                return
            proc.request_eof()
            post = not proc.flush_posted
            proc.flush_posted = True
        if post:
            self._post(("flush", proc))

    # ----------------------------------------------------------------- signals

    def interrupt(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """Send SIGINT to the process group (codex signals the process; ``cat`` exits 130 either
        way, and background children get it too here). Unknown ids are ignored."""
        proc = self._lookup(process_id)
        if proc is None:
            return
        with proc.lock:
            if not proc.closed:
                proc.kill_group(signal.SIGINT)

    def terminate(self, process_id: str, *, timeout: Timeoutish = UNSET) -> bool:
        """SIGKILL the whole process group (exit code 137); True if the process had not exited.

        A process that exited but is not closed (a background child holds its output open) is
        killed too, which lets it close. Unknown ids answer False.
        """
        proc = self._lookup(process_id)
        if proc is None:
            return False
        with proc.lock:
            if proc.closed or proc.pid is None:
                return False
            running = not proc.exited
            if running:
                try:  # the exit may be known to the kernel but not yet to the I/O thread
                    done = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    running = done is None
                except ChildProcessError:
                    running = False
            proc.kill_group(signal.SIGKILL)
            return running

    # ----------------------------------------------------------------- read / receivers

    def read(
        self,
        process_id: str,
        *,
        after_seq: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int | None = None,
        timeout: Timeoutish = UNSET,
        scope: PollScope | None = None,
    ) -> ReadResult:
        """Retained chunks with seq > ``after_seq`` plus the exit state (``process/read``).

        ``after_seq=None`` reads from the oldest retained chunk. ``max_bytes`` is a soft cap
        (at least one chunk when any exists). ``wait_ms`` long-polls until an event after
        ``after_seq`` exists or the process is closed; ``timeout`` (if given) shortens that wait,
        and so does cancelling ``scope`` (the wait ends at once; the reply is what is there).
        ``next_seq`` is one past the latest event, or one past the last returned chunk when
        ``max_bytes`` cut the reply short.

        Raises:
            errors.ProcessNotFound: unknown or forgotten id (immediately, even with ``wait_ms``).
        """
        proc = self._require(process_id)
        wait = max(0.0, (wait_ms or 0) / 1000.0)
        limit = resolve_timeout(timeout, None)
        if limit is not None:
            wait = min(wait, limit)
        after = after_seq if after_seq is not None else 0
        with proc.cond:
            if wait > 0 and (scope is None or not scope.cancelled):
                end = time.monotonic() + wait
                if scope is not None:
                    scope._enter(proc.cond)
                try:
                    while proc.seq <= after and not proc.closed and not self._io_done:
                        if scope is not None and scope.cancelled:
                            break
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        proc.cond.wait(left)
                finally:
                    if scope is not None:
                        scope._leave(proc.cond)
            start = 0 if after_seq is None else proc.first_index_after(after_seq)
            picked: list[OutputChunk] = []
            total = 0
            truncated = False
            for i in range(start, len(proc.chunks)):
                chunk = proc.chunks[i]
                if max_bytes is not None and picked and total + len(chunk.data) > max_bytes:
                    truncated = True
                    break
                picked.append(chunk)
                total += len(chunk.data)
            next_seq = picked[-1].seq + 1 if truncated else proc.seq + 1
            return ReadResult(
                chunks=tuple(picked),
                next_seq=next_seq,
                exited=proc.exited,
                exit_code=proc.exit_code,
                closed=proc.closed,
                failure=None,
            )

    def release(self, process_id: str) -> None:
        """Stop delivering events to the process's receiver; the record stays readable.

        An event whose delivery already began on the I/O thread may still complete.
        """
        proc = self._lookup(process_id)
        if proc is not None:
            with proc.lock:
                proc.receiver = None

    def set_receiver(self, process_id: str, events: ProcessEvents | None) -> None:
        """Deliver the process's future events to ``events`` (session resume); no replay.

        Raises:
            errors.ProcessNotFound: unknown or forgotten id.
        """
        proc = self._require(process_id)
        with proc.lock:
            proc.receiver = events

    # ----------------------------------------------------------------- flow control

    def pause_output(self, process_id: str | None = None) -> None:
        """Stop reading a process's stdout/stderr/pty, or (``None``) every process's, including
        processes started later, until :meth:`resume_output` with the same argument.

        The child blocks in ``write()`` once its pipe or pty buffer is full. Its exit is still
        reported (``exited`` may then come before the output still waiting in the pipe, as
        PROTOCOL.md §4.2 allows); ``closed`` comes only after all output was read and delivered.
        Takes effect before the I/O thread's next read, so at most one read (64 KiB per
        stream) may still be delivered. A process paused by id stays paused while the whole
        backend is resumed, and the other way round. :meth:`close` reads everything regardless.
        Never blocks; idempotent.

        Raises:
            errors.ProcessNotFound: unknown or forgotten id.
        """
        # Pausing needs no command: the I/O thread checks the flag before every read and drops
        # a paused fd from its selector the next time it finds it readable.
        if process_id is None:
            with self._lock:
                self._output_paused = True
            return
        proc = self._require(process_id)
        with proc.lock:
            proc.output_paused = True

    def resume_output(self, process_id: str | None = None) -> None:
        """Undo :meth:`pause_output` with the same argument; reading resumes at once.

        Never blocks (the I/O thread is woken); idempotent.

        Raises:
            errors.ProcessNotFound: unknown or forgotten id.
        """
        if process_id is None:
            with self._lock:
                was = self._output_paused
                self._output_paused = False
            if was:
                self._post(("flow", None))
            return
        proc = self._require(process_id)
        with proc.lock:
            was = proc.output_paused
            proc.output_paused = False
        if was:
            self._post(("flow", proc))

    def keep_unacked_output(self, window: int) -> None:
        """Processes started from now on keep every output chunk until :meth:`acknowledge`
        covers it, and their output is not read while ``window`` bytes are unacknowledged.

        This is how ``execsdk serve`` loses nothing across a reconnect (capability
        ``execsdk/outputAck``): what a dropped connection did not deliver is still retained
        when the client resumes, and a process whose client is away waits in ``write()``
        instead of outrunning it. Memory per process stays below the retention limit plus
        ``window`` plus one read.
        """
        if window <= 0:
            raise ValueError(f"the window must be > 0 bytes, not {window!r}")
        with self._lock:
            self._ack_window = window

    def acknowledge(self, process_id: str, seq: int) -> None:
        """The client holds every event of ``process_id`` up to ``seq``: release those chunks
        and resume reading a process that was waiting for it. Unknown ids are ignored."""
        proc = self._lookup(process_id)
        if proc is None:
            return
        with proc.lock:
            resume = proc.acknowledge(seq, self._retain_bytes)
        if resume:
            self._post(("flow", proc))

    def output_paused(self, process_id: str | None = None) -> bool:
        """True while :meth:`pause_output` holds this process (or, for ``None``, the backend).

        A process is read only when neither it nor the whole backend is paused.

        Raises:
            errors.ProcessNotFound: unknown or forgotten id.
        """
        if process_id is None:
            return self._output_paused
        return self._require(process_id).output_paused

    # ----------------------------------------------------------------- close

    def close(self, timeout: float = 5.0) -> None:
        """Kill every process group that is not closed, reap them, stop the I/O thread.

        Waits up to ``timeout`` seconds for the killed processes to report exited and closed
        (their receivers get those events); receivers of processes still open then get
        ``on_lost``. Idempotent; safe from any thread, including a receiver.
        """
        with self._lock:
            first = not self._closing
            self._closing = True
            procs = list(self._procs.values())
            thread = self._thread
        if first:
            for proc in procs:
                with proc.lock:
                    if not proc.closed:
                        proc.kill_group(signal.SIGKILL)
            self._post(("stop", time.monotonic() + max(0.0, timeout)))
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout + 1.0)
        if thread.is_alive():
            log.warning("%s did not stop within %.1fs", thread.name, timeout)
        for waiter in list(self._waiters):
            waiter.join(0.5)

    def __enter__(self) -> LocalProcessBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spawn(self, proc: ProcRecord, spec: ProcessSpec, env: dict[str, str], cwd: str) -> None:
        program = None
        if spec.tty:
            program = _pty_program(spec.argv[0] if spec.arg0 is None else spec.arg0, env, cwd)
        parent_fds: list[int] = []
        child_fds: list[int] = []
        stdin: int
        tty_path: str | None = None
        try:
            if spec.tty:
                master, slave = os.openpty()
                parent_fds.append(master)
                child_fds.append(slave)
                winsize = struct.pack("HHHH", _TTY_ROWS, _TTY_COLS, 0, 0)
                fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
                stdin = stdout = stderr = slave
                if CLEAN_SPAWN:
                    tty_path = os.ttyname(slave)
                stdin_fd = os.dup(master)  # own fd for writing, so reads and writes close apart
                parent_fds.append(stdin_fd)
                outputs: dict[int, Stream] = {master: "pty"}
            else:
                out_r, out_w = os.pipe()
                parent_fds.append(out_r)
                child_fds.append(out_w)
                err_r, err_w = os.pipe()
                parent_fds.append(err_r)
                child_fds.append(err_w)
                stdout, stderr = out_w, err_w
                outputs = {out_r: "stdout", err_r: "stderr"}
                if spec.pipe_stdin:
                    in_r, stdin_fd = os.pipe()
                    parent_fds.append(stdin_fd)
                    child_fds.append(in_r)
                    stdin = in_r
                else:
                    stdin, stdin_fd = subprocess.DEVNULL, -1
            argv = list(spec.argv)
            executable = argv[0]  # looked up on the child's PATH by Popen (env is the child's)
            if spec.arg0 is not None:
                argv[0] = spec.arg0
            if program is not None:
                executable = program
            popen: subprocess.Popen[bytes] | None = None
            if CLEAN_SPAWN:
                pid = clean_spawn(
                    argv,
                    executable=executable,
                    env=env,
                    cwd=cwd,
                    stdio=(-1 if stdin == subprocess.DEVNULL else stdin, stdout, stderr),
                    tty_path=tty_path,
                )
            else:
                # Without libc's posix_spawn: ignored signals other than SIGINT stay ignored.
                preexec = _child_setup(spec.tty, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
                popen = subprocess.Popen(
                    argv,
                    executable=executable,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
                pid = popen.pid
        except OSError as exc:
            for fd in parent_fds + child_fds:
                os.close(fd)
            code = exc.errno if exc.errno is not None else errno.EIO
            filename = exc.filename if isinstance(exc.filename, str) else None
            raise errors.os_error(code, exc.strerror or os.strerror(code), filename) from None
        except (ValueError, TypeError) as exc:  # NUL bytes in argv/env/cwd and the like
            for fd in parent_fds + child_fds:
                os.close(fd)
            raise errors.InvalidParams(-32602, str(exc)) from exc
        except BaseException:
            for fd in parent_fds + child_fds:
                os.close(fd)
            raise
        for fd in child_fds:
            os.close(fd)
        for fd in outputs:
            os.set_blocking(fd, False)
        if stdin_fd >= 0:
            os.set_blocking(stdin_fd, False)
        guardian = _guardian
        if guardian is not None:
            guardian.register(pid)
        pidfd = -1
        if self._use_pidfd:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    self._use_pidfd = False
                log.debug("pidfd_open(%d) failed (%s); using a waiter thread", pid, exc)
        with proc.lock:
            proc.popen = popen
            proc.pid = pid
            proc.outputs = outputs
            proc.stdin_fd = stdin_fd
            proc.pidfd = pidfd
            if guardian is not None:
                proc.on_reaped = guardian.unregister
        log.debug("started process %r pid %d argv %r", proc.id, pid, spec.argv[:1])
