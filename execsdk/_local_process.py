"""Processes in this Python process: the local :class:`~execsdk.environment.ProcessBackend`.

Used by ``LocalEnvironment`` and, through thin adapters, by our own server (``execsdk serve``),
so it behaves like the codex exec-server (PROTOCOL.md §3.4-3.9 and §4): one seq counter per
process shared by output, exited and closed; output chunks of at most 8 KiB; exit code 128+N
for death by signal N; the last 1 MiB of output retained for :meth:`LocalProcessBackend.read`;
records forgotten a while after ``closed``.

Linux/POSIX only. Every child runs in its own session and process group
(``start_new_session``), so ``terminate`` and ``interrupt`` reach its background children too.
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

Differences a caller may notice: ``interrupt`` sends SIGINT to the whole process group (codex
signals the process); ``write`` never blocks, so bytes a child does not read queue up in memory;
argv[0] is looked up on the child's PATH (``os.defpath`` when it has none: like codex, never on
this process's PATH).
Every open process costs up to four file descriptors (stdout, stderr, stdin, pidfd); raise
``RLIMIT_NOFILE`` for thousands of concurrent processes.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import functools
import heapq
import itertools
import logging
import os
import re
import selectors
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from execsdk import errors
from execsdk._deadline import UNSET, Timeoutish, resolve_timeout
from execsdk.environment import (
    EnvPolicy,
    OutputChunk,
    ProcessEvents,
    ProcessSpec,
    ReadResult,
    Stream,
    WriteStatus,
)

__all__ = [
    "CORE_ENV_VARS",
    "DEFAULT_ENV_EXCLUDES",
    "MAX_CHUNK",
    "LocalProcessBackend",
    "PollScope",
    "build_child_env",
]

log = logging.getLogger(__name__)

MAX_CHUNK = 8192
"""Largest output chunk delivered as one event (PROTOCOL.md §1.5)."""

CORE_ENV_VARS: tuple[str, ...] = (
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TEMP",
    "TMP",
    "TMPDIR",
    "USER",
)
"""Names kept by ``inherit="core"``: the set codex 0.169 keeps on Linux (probed; it does not
keep TERM, USERNAME, LANGUAGE or LC_MESSAGES)."""

DEFAULT_ENV_EXCLUDES: tuple[str, ...] = ("*KEY*", "*SECRET*", "*TOKEN*")
"""Dropped (case-insensitively) unless ``ignore_default_excludes``."""

_READ_SIZE = 65536
_READS_PER_WAKE = 8
_TTY_ROWS, _TTY_COLS = 24, 80
_io_ids = itertools.count(1)
_wait_ids = itertools.count(1)


# --------------------------------------------------------------------------- environment


@functools.lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    # codex matches env names with `*` and `?` only (no [classes]) and ignores case, for the
    # default excludes and for exclude/includeOnly alike (probed against 0.169).
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(_glob(p).fullmatch(name) is not None for p in patterns)


def build_child_env(
    spec_env: Mapping[str, str], policy: EnvPolicy | None, base_env: Mapping[str, str]
) -> dict[str, str]:
    """The child's environment per PROTOCOL.md §3.4 (shared by the local backend and our server).

    ``policy=None``: exactly ``spec_env``. Otherwise start from ``base_env`` (``"all"``), its
    :data:`CORE_ENV_VARS` (``"core"``) or nothing (``"none"``); unless
    ``ignore_default_excludes`` drop :data:`DEFAULT_ENV_EXCLUDES`; drop ``exclude`` matches;
    apply ``set``; keep only ``include_only`` matches when it is non-empty; overlay
    ``spec_env``. Globs know ``*`` and ``?`` and ignore case, as codex does.

    Raises:
        errors.InvalidParams: ``policy.inherit`` is not all, core or none.
    """
    if policy is None:
        return dict(spec_env)
    if policy.inherit == "all":
        env = dict(base_env)
    elif policy.inherit == "core":
        env = {k: base_env[k] for k in CORE_ENV_VARS if k in base_env}
    elif policy.inherit == "none":
        env = {}
    else:
        raise errors.InvalidParams(
            -32602, f"unknown variant `{policy.inherit}`, expected one of `core`, `all`, `none`"
        )
    if not policy.ignore_default_excludes:
        env = {k: v for k, v in env.items() if not _matches_any(k, DEFAULT_ENV_EXCLUDES)}
    if policy.exclude:
        env = {k: v for k, v in env.items() if not _matches_any(k, policy.exclude)}
    env.update(policy.set)
    if policy.include_only:
        env = {k: v for k, v in env.items() if _matches_any(k, policy.include_only)}
    env.update(spec_env)
    return env


# --------------------------------------------------------------------------- records


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


def _exit_code(info: os.waitid_result) -> int:
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


class _Proc:
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

    def retain(self, chunk: OutputChunk, limit: int) -> None:
        self.chunks.append(chunk)
        self.retained_bytes += len(chunk.data)
        while self.retained_bytes > limit and self.chunks:
            self.retained_bytes -= len(self.chunks.popleft().data)

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


_Kind = Literal["out", "stdin", "pidfd", "wake"]


class _Watch:
    """Selector payload: which process and role a registered fd has. Thread-safety: immutable."""

    __slots__ = ("kind", "proc", "stream")

    def __init__(self, kind: _Kind, proc: _Proc | None, stream: Stream | None = None) -> None:
        self.kind = kind
        self.proc = proc
        self.stream = stream


_Command = (
    tuple[Literal["register"], _Proc]
    | tuple[Literal["flush"], _Proc]
    | tuple[Literal["exit"], _Proc, int]
    | tuple[Literal["flow"], _Proc | None]
    | tuple[Literal["stop"], float]
)


# --------------------------------------------------------------------------- backend


class LocalProcessBackend:
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
        self._procs: dict[str, _Proc] = {}
        self._closing = False
        self._output_paused = False  # pause_output(None); written under _lock
        self._use_pidfd = hasattr(os, "pidfd_open")
        self._thread: threading.Thread | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._post_lock = threading.Lock()  # guards _commands, _io_done, the wake fd
        self._commands: collections.deque[_Command] = collections.deque()
        self._io_done = False
        self._waiters: set[threading.Thread] = set()
        # I/O thread only:
        self._forget_heap: list[tuple[float, int, _Proc]] = []
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

    # ----------------------------------------------------------------- lookups

    def _expired(self, proc: _Proc, now: float | None = None) -> bool:
        closed_at = proc.closed_at
        if closed_at is None:
            return False
        return (time.monotonic() if now is None else now) - closed_at >= self._retain_after_close

    def _lookup(self, process_id: str) -> _Proc | None:
        with self._lock:
            proc = self._procs.get(process_id)
            if proc is not None and self._expired(proc):
                del self._procs[process_id]
                return None
            return proc

    def _require(self, process_id: str) -> _Proc:
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
        cwd = spec.cwd if spec.cwd is not None else self._default_cwd
        proc = _Proc(process_id, events, spec)
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
                self._kill_group(proc, signal.SIGKILL)
        if not self._post(("register", proc)):
            # The I/O thread is already gone: nobody else will reap this child.
            self._abandon(proc)
            raise errors.ConnectionClosed("local process backend is closed")

    def _abandon(self, proc: _Proc) -> None:
        with proc.lock:
            self._kill_group(proc, signal.SIGKILL)
            fds = [*proc.outputs, proc.stdin_fd, proc.pidfd]
            proc.outputs, proc.stdin_fd, proc.pidfd = {}, -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        self._reap(proc, 2.0)
        with self._lock:
            if self._procs.get(proc.id) is proc:
                del self._procs[proc.id]

    def _spawn(self, proc: _Proc, spec: ProcessSpec, env: dict[str, str], cwd: str) -> None:
        parent_fds: list[int] = []
        child_fds: list[int] = []
        stdin: int
        preexec = _child_setup(spec.tty, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
        try:
            if spec.tty:
                master, slave = os.openpty()
                parent_fds.append(master)
                child_fds.append(slave)
                winsize = struct.pack("HHHH", _TTY_ROWS, _TTY_COLS, 0, 0)
                fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
                stdin = stdout = stderr = slave
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
        pidfd = -1
        if self._use_pidfd:
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    self._use_pidfd = False
                log.debug("pidfd_open(%d) failed (%s); using a waiter thread", popen.pid, exc)
        with proc.lock:
            proc.popen = popen
            proc.pid = popen.pid
            proc.outputs = outputs
            proc.stdin_fd = stdin_fd
            proc.pidfd = pidfd
        log.debug("started process %r pid %d argv %r", proc.id, popen.pid, spec.argv[:1])

    # ----------------------------------------------------------------- stdin

    def write(self, process_id: str, data: bytes, *, timeout: Timeoutish = UNSET) -> WriteStatus:
        """Queue ``data`` for the process's stdin; never blocks (``timeout`` is unused).

        Returns ``"unknownProcess"`` for an unknown id, ``"stdinClosed"`` when the process has
        no stdin (neither ``pipe_stdin`` nor ``tty``) or :meth:`close_stdin` was called, else
        ``"accepted"`` (the data is dropped when the process already exited or closed its stdin).
        """
        proc = self._lookup(process_id)
        if proc is None:
            return "unknownProcess"
        with proc.lock:
            if not proc.has_stdin or proc.stdin_closed:
                return "stdinClosed"
            if not data or proc.exited or proc.stdin_gone:
                return "accepted"
            proc.stdin_queue.append(bytes(data))
            post = not proc.flush_posted
            proc.flush_posted = True
        if post:
            self._post(("flush", proc))
        return "accepted"

    def close_stdin(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """After the queued bytes, close the stdin pipe (EOF); with a tty, send ``^D`` instead.

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
            if proc.tty:
                proc.stdin_queue.append(b"\x04")
            else:
                proc.stdin_close_requested = True
            post = not proc.flush_posted
            proc.flush_posted = True
        if post:
            self._post(("flush", proc))

    # ----------------------------------------------------------------- signals

    def _kill_group(self, proc: _Proc, sig: int) -> None:
        # The leader stays a zombie until closed, so its pid is still our process group id.
        pid = proc.pid
        if pid is None or proc.reaped:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:  # a setuid child: its group is not ours to signal
            log.warning("cannot signal process group %d of %r: %s", pid, proc.id, exc)

    def interrupt(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """Send SIGINT to the process group (codex signals the process; ``cat`` exits 130 either
        way, and background children get it too here). Unknown ids are ignored."""
        proc = self._lookup(process_id)
        if proc is None:
            return
        with proc.lock:
            if not proc.closed:
                self._kill_group(proc, signal.SIGINT)

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
            self._kill_group(proc, signal.SIGKILL)
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
                        self._kill_group(proc, signal.SIGKILL)
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

    # ----------------------------------------------------------------- I/O thread plumbing

    def _ensure_io_thread(self) -> None:
        # Called with self._lock held.
        if self._thread is not None:
            return
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _Watch("wake", None))
        self._thread = threading.Thread(
            target=self._io_main, name=f"execsdk-local-io-{next(_io_ids)}", daemon=True
        )
        self._thread.start()

    def _post(self, command: _Command) -> bool:
        with self._post_lock:
            if self._io_done or self._wake_w < 0:
                return False
            self._commands.append(command)
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the I/O thread is awake anyway
            return True

    def _deliver(self, proc: _Proc, receiver: ProcessEvents, what: str, *args: object) -> None:
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
                exits: list[_Proc] = []
                for key, _mask in ready:
                    watch: _Watch = key.data
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

    def _register(self, proc: _Proc) -> None:
        sel = self._sel
        assert sel is not None
        self._sync_reading(proc)
        if proc.pidfd >= 0:
            sel.register(proc.pidfd, selectors.EVENT_READ, _Watch("pidfd", proc))
        else:
            self._start_waiter(proc)
        proc.registered = True
        self._flush(proc)

    def _start_waiter(self, proc: _Proc) -> None:
        pid = proc.pid
        assert pid is not None

        def wait() -> None:
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                code = _exit_code(info) if info is not None else -1
            except ChildProcessError:
                code = -1  # somebody else reaped it
            self._post(("exit", proc, code))
            self._waiters.discard(threading.current_thread())

        thread = threading.Thread(target=wait, name=f"execsdk-local-wait-{next(_wait_ids)}")
        thread.daemon = True
        self._waiters.add(thread)
        thread.start()

    def _held(self, proc: _Proc) -> bool:
        # Plain attribute reads: the flags are bools written under a lock by pause/resume, and
        # a resume always posts a "flow" command after writing, so a stale read is corrected.
        return (proc.output_paused or self._output_paused) and self._stop_at is None

    def _sync_reading(self, proc: _Proc) -> None:
        """Register or unregister the process's output fds as its pause state says."""
        sel = self._sel
        assert sel is not None
        held = self._held(proc)
        for fd, stream in proc.outputs.items():
            if held and fd in proc.reading:
                sel.unregister(fd)
                proc.reading.discard(fd)
            elif not held and fd not in proc.reading:
                sel.register(fd, selectors.EVENT_READ, _Watch("out", proc, stream))
                proc.reading.add(fd)

    def _sync_flow(self, proc: _Proc | None) -> None:
        if proc is not None:
            procs = [proc]
        else:
            with self._lock:
                procs = list(self._procs.values())
        for p in procs:
            if p.registered:
                self._sync_reading(p)

    def _on_readable(self, fd: int, watch: _Watch) -> None:
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

    def _emit_output(self, proc: _Proc, stream: Stream, data: bytes) -> None:
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

    def _on_pidfd(self, proc: _Proc) -> None:
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
            code = _exit_code(info)
        assert self._sel is not None
        self._sel.unregister(proc.pidfd)
        os.close(proc.pidfd)
        proc.pidfd = -1
        if info is None:
            proc.reaped = True
        self._set_exited(proc, code)

    def _set_exited(self, proc: _Proc, code: int) -> None:
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

    def _maybe_closed(self, proc: _Proc) -> None:
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
        self._reap(proc, 0.0)
        heapq.heappush(
            self._forget_heap, (now + self._retain_after_close, next(self._forget_ids), proc)
        )

    def _reap(self, proc: _Proc, timeout: float) -> None:
        # Under proc.lock, so no killpg() can race the pid being freed.
        with proc.lock:
            popen = proc.popen
            if popen is None or proc.reaped:
                return
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("process %r (pid %d) could not be reaped", proc.id, popen.pid)
                return
            proc.reaped = True

    def _close_stdin_fd(self, proc: _Proc) -> None:
        with proc.lock:
            fd = proc.stdin_fd
            proc.stdin_fd = -1
            proc.stdin_gone = True
            proc.stdin_queue.clear()
            proc.stdin_offset = 0
        registered = proc.write_registered
        proc.write_registered = False
        if fd < 0:
            return
        if registered and self._sel is not None:
            self._sel.unregister(fd)
        os.close(fd)

    def _flush(self, proc: _Proc) -> None:
        close = False
        with proc.lock:
            proc.flush_posted = False
            fd = proc.stdin_fd
            if fd < 0:
                proc.stdin_queue.clear()
                return
            queue = proc.stdin_queue
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
                if proc.stdin_offset >= len(head):
                    queue.popleft()
                    proc.stdin_offset = 0
            if not queue and proc.stdin_close_requested:
                close = True
            want_write = bool(queue) and not close
        if close:
            self._close_stdin_fd(proc)
            return
        if want_write != proc.write_registered:  # write_registered: I/O thread only
            assert self._sel is not None
            if want_write:
                self._sel.register(fd, selectors.EVENT_WRITE, _Watch("stdin", proc))
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
                    self._kill_group(proc, signal.SIGKILL)
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
            self._reap(proc, 2.0)
            if receiver is not None:
                self._deliver(proc, receiver, "on_lost", lost)
        if sel is not None:
            sel.close()
        with self._post_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
