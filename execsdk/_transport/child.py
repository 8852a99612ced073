"""Newline-delimited JSON over a child process's stdin/stdout.

Used for ``codex exec-server --listen stdio`` and for the embedded default server
(``python -m execsdk serve --listen stdio``): no port, no token, and a crash stays in the child.
The child runs in its own session so closing the transport can end its whole process group.

Sends are bounded like the WebSocket's (``writequeue.py``): our end of the stdin pipe is set
non-blocking (it is our own open file; the child's end is a different one), so a child that
stops reading makes a send wait only until its deadline, and a flusher thread
(``execsdk-stdinflush-<n>``) finishes a line that was partly written. Replies are read through
our own buffer rather than a ``BufferedReader``, so :meth:`StdioTransport.buffered` can tell
whether a whole line is already there without a read that could block.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

from execsdk._transport.writequeue import BlockingWriteQueue, WriteQueue, wait_writable
from execsdk.errors import ConnectError

__all__ = ["StdioTransport"]

log = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_READ_MAX = 16 * 2**20
"""Reads grow with the line being assembled (a 90 MB ``fs/readFile`` answer is one line)."""


class StdioTransport:
    """A child process speaking newline-delimited JSON. Thread-safety: as ``Transport``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stderr: int | None = None,
    ) -> None:
        self._argv = list(argv)
        try:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
                bufsize=0,
            )
        except OSError as exc:
            raise ConnectError(
                f"could not start the server command {self._argv[0]!r}: {exc}",
                url=self.description,
            ) from exc
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        # Unread reply bytes; the first ``_scanned`` of them hold no newline (reader only).
        self._rbuf = bytearray()
        self._scanned = 0
        nonblocking = hasattr(os, "writev") and hasattr(select, "poll")
        if nonblocking:
            try:
                os.set_blocking(self._stdin.fileno(), False)
            except OSError:  # then blocking writes, by the flusher thread only
                nonblocking = False
        self._out: WriteQueue | BlockingWriteQueue
        if nonblocking:
            self._out = WriteQueue(
                "the server's stdin",
                "execsdk-stdinflush",
                write_some=self._write_some,
                wait_writable=self._wait_writable,
            )
        else:
            self._out = BlockingWriteQueue(
                "the server's stdin", "execsdk-stdinflush", write_all=self._write_all
            )
        self._close_lock = threading.Lock()
        self._closing = False

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self._proc.pid

    @property
    def description(self) -> str:
        return "stdio:" + " ".join(self._argv)

    def send(self, text: str | bytes, *, timeout: float | None = None) -> None:
        """Write one line within ``timeout`` seconds (the contract is :meth:`Transport.send`'s):
        a child that stops reading fills the pipe, and then the line waits in the queue, is
        withdrawn, or is finished by the flusher thread, as for the WebSocket."""
        data = (text.encode("utf-8") if isinstance(text, str) else text) + b"\n"
        self._out.put(data, timeout)

    def _write_some(self, views: list[bytes | memoryview]) -> int:
        try:
            return os.writev(self._stdin_fd(), views)
        except BlockingIOError:
            return 0

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._stdin_fd(), view) :]

    def _wait_writable(self, timeout: float | None) -> bool:
        return wait_writable(self._stdin_fd(), timeout)

    def _stdin_fd(self) -> int:
        try:
            return self._stdin.fileno()
        except ValueError:  # closed by close()
            raise BrokenPipeError("the server's stdin is closed") from None

    def recv(self) -> str | bytes | None:
        """The next line (with its newline; a last line without one at the end of stream);
        None at the end of stream."""
        buf = self._rbuf
        while True:
            nl = buf.find(b"\n", self._scanned)
            if nl >= 0:
                with memoryview(buf) as view:
                    line = view[: nl + 1].tobytes()
                del buf[: nl + 1]  # cheap: a bytearray drops its head without moving the rest
                self._scanned = 0
                return line
            self._scanned = len(buf)
            size = min(max(_READ_SIZE, len(buf)), _READ_MAX)
            try:
                chunk = self._stdout.read(size)
            except (OSError, ValueError):
                if self._closing:
                    return None
                raise
            if not chunk:
                if buf:
                    line = bytes(buf)
                    buf.clear()
                    self._scanned = 0
                    return line
                return None
            buf += chunk

    def buffered(self) -> bool:
        """True when a whole line is already read, so ``recv`` will not wait (reader only)."""
        nl = self._rbuf.find(b"\n", self._scanned)
        if nl < 0:
            self._scanned = len(self._rbuf)
            return False
        return True

    def close(self, timeout: float | None = 5.0) -> None:
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        self._out.shut()
        try:
            self._stdin.close()  # the server ends its session when its stdin closes
        except OSError:
            pass
        try:
            self._proc.wait(timeout=2.0 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            log.warning("server %s did not exit after stdin closed; killing it", self.description)
        self._kill_group()
        try:
            self._stdout.close()
        except OSError:
            pass
        if not self._out.join(1.0):
            log.debug("the flusher thread of %s is still running after close()", self.description)

    def _kill_group(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.warning("server process %d did not die after SIGKILL", self._proc.pid)
