"""Newline-delimited JSON over a child process's stdin/stdout.

Used for ``codex exec-server --listen stdio`` and for the embedded default server
(``python -m execsdk serve --listen stdio``): no port, no token, and a crash stays in the child.
The child runs in its own session so closing the transport can end its whole process group.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

from execsdk.errors import ConnectError

__all__ = ["StdioTransport"]

log = logging.getLogger(__name__)


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
        # Unbuffered pipes make readline() read one byte per system call: buffer the reads.
        self._stdout = io.BufferedReader(self._proc.stdout, buffer_size=1 << 16)  # type: ignore[type-var]
        self._send_lock = threading.Lock()
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
        data = (text.encode("utf-8") if isinstance(text, str) else text) + b"\n"
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("timed out waiting to send to the server's stdin")
        try:
            self._stdin.write(data)
        except ValueError as exc:  # write to a closed file
            raise BrokenPipeError("the server's stdin is closed") from exc
        finally:
            self._send_lock.release()

    def recv(self) -> str | bytes | None:
        try:
            line = self._stdout.readline()
        except (OSError, ValueError):
            if self._closing:
                return None
            raise
        if not line:
            return None
        return line

    def close(self, timeout: float | None = 5.0) -> None:
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
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

    def _kill_group(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.warning("server process %d did not die after SIGKILL", self._proc.pid)
