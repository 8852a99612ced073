"""Helpers shared by the reliability tests: resource counters, test programs, a fake server.

* ``fd_count`` / ``wait_fds_at_most``: open file descriptors of this test process;
* ``server_tree`` / ``zombies_of``: the processes below a server's pid, via psutil;
* ``crash`` / ``reap``: SIGKILL a server's own processes, then end the programs it orphaned;
* ``stream_script`` / ``expected_stream``: a paced program writing a recognisable byte stream
  (each 64 KiB block starts with its number, so a lost, repeated or reordered block shows);
* ``FakeServer``: a tiny WebSocket server on the ``websockets`` sync API whose per-connection
  behaviour is a plain function, for servers that misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import psutil
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from execsdk._local.processes import GUARDIAN_MARK
from tests.servers import ServerHandle
from tests.waiting import eventually

BLOCK = 64 * 1024


# --------------------------------------------------------------------------- resources


def fd_count(ignore: tuple[str, ...] = ()) -> int:
    """Open file descriptors of this process, leaving out those whose target starts with one
    of ``ignore`` (e.g. ``"anon_inode:[eventpoll]"``)."""
    if not ignore:
        return len(os.listdir("/proc/self/fd"))
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += not target.startswith(ignore)
    return n


def wait_fds_at_most(limit: int, timeout: float = 5.0, ignore: tuple[str, ...] = ()) -> int:
    """Wait until at most ``limit`` descriptors are open; returns the final count.

    Sockets closed by other threads (readers, proxy pumps) may take a moment to go.
    """
    eventually(lambda: fd_count(ignore) <= limit, timeout, interval=0.05)
    return fd_count(ignore)


@contextlib.contextmanager
def no_fd_leak(
    slack: int = 0, timeout: float = 5.0, ignore: tuple[str, ...] = ()
) -> Iterator[None]:
    """Assert the block leaves no more descriptors open than it found (+ ``slack``)."""
    before = fd_count(ignore)
    yield
    after = wait_fds_at_most(before + slack, timeout, ignore)
    if after > before + slack:
        raise AssertionError(
            f"file descriptors leaked: {before} before, {after} after: {describe_fds()}"
        )


def describe_fds() -> list[str]:
    """This process's descriptors, with local/remote ports and state for TCP sockets."""
    tcp: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.read().splitlines()[1:]:
                f = line.split()
                local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
                tcp[f[9]] = f"tcp {local}->{remote} st={f[3]}"
    out = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            target += " " + tcp.get(target[8:-1], "")
        out.append(f"{fd}={target}")
    return out


def server_tree(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid`` (recursive) except our server's guardian (it kills
    the server's children when the server dies); empty if ``pid`` is gone."""
    try:
        kids: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if not _is_guardian(p)]


def _is_guardian(proc: psutil.Process) -> bool:
    try:
        return any(arg.startswith(GUARDIAN_MARK) for arg in proc.cmdline())
    except psutil.Error:
        return False


def zombies_of(pid: int) -> list[psutil.Process]:
    """Zombie processes below ``pid``."""
    out = []
    for child in server_tree(pid):
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child)
    return out


def wait_no_zombies(pid: int, timeout: float = 5.0) -> list[psutil.Process]:
    """Wait until no zombie is left below ``pid``; returns the zombies still there.

    A server reaps a child just after reporting it closed, so a zombie may show for a moment.
    """
    eventually(lambda: not zombies_of(pid), timeout, interval=0.05)
    return zombies_of(pid)


def wait_children_at_most(pid: int, limit: int, timeout: float = 10.0) -> list[psutil.Process]:
    """Wait until at most ``limit`` processes are below ``pid``; returns what is left."""
    eventually(lambda: len(server_tree(pid)) <= limit, timeout, interval=0.1)
    return server_tree(pid)


def server_pids(server: ServerHandle) -> list[int]:
    """The server's own processes: the launched pid and, for codex, its native child."""
    pids = [server.popen.pid]
    for p in server_tree(server.popen.pid):
        with contextlib.suppress(psutil.Error):
            if "codex" in " ".join(p.cmdline()[:2]) and "exec-server" in p.cmdline():
                pids.append(p.pid)
    return pids


def crash(server: ServerHandle) -> list[psutil.Process]:
    """SIGKILL the server's own processes; returns the programs it had started (orphans)."""
    own = set(server_pids(server))
    orphans = [p for p in server_tree(server.popen.pid) if p.pid not in own]
    for pid in own:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.popen.wait(5)
    return orphans


def reap(orphans: list[psutil.Process]) -> None:
    for p in orphans:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(orphans, timeout=5)


def rss(pid: int | None = None) -> int:
    """Resident set size in bytes of ``pid`` (default: this process)."""
    return int(psutil.Process(pid).memory_info().rss)


# --------------------------------------------------------------------------- test programs


def stream_script(total: int, rate: float | None = None) -> list[str]:
    """argv of a program writing ``expected_stream(total)`` to stdout, then exiting 7.

    ``rate`` (bytes per second) paces it, so a client keeps up and a short disconnect costs
    less than the server's 1 MiB of retained output.
    """
    code = (
        "import struct, sys, time\n"
        f"total, rate, block = {total}, {rate!r}, {BLOCK}\n"
        "out = sys.stdout.buffer\n"
        "start = time.monotonic()\n"
        "sent = 0\n"
        "i = 0\n"
        "while sent < total:\n"
        "    n = min(block, total - sent)\n"
        "    head = struct.pack('>Q', i)\n"
        "    out.write((head + bytes([i % 251]) * (block - 8))[:n])\n"
        "    out.flush()\n"
        "    sent += n\n"
        "    i += 1\n"
        "    if rate:\n"
        "        ahead = sent / rate - (time.monotonic() - start)\n"
        "        if ahead > 0:\n"
        "            time.sleep(ahead)\n"
        "sys.exit(7)\n"
    )
    return ["python3", "-c", code]


def expected_stream(total: int) -> bytes:
    """What ``stream_script(total)`` writes."""
    parts = []
    sent = 0
    i = 0
    while sent < total:
        n = min(BLOCK, total - sent)
        parts.append((struct.pack(">Q", i) + bytes([i % 251]) * (BLOCK - 8))[:n])
        sent += n
        i += 1
    return b"".join(parts)


def describe_mismatch(got: bytes, want: bytes) -> str:
    """A short account of where two streams differ (for assertion messages)."""
    if got == want:
        return "equal"
    first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if first is None:
        first = min(len(got), len(want))
    block = first // BLOCK
    return (
        f"got {len(got)} bytes, want {len(want)}; first difference at byte {first} "
        f"(block {block}); sha256 got {hashlib.sha256(got).hexdigest()[:12]} "
        f"want {hashlib.sha256(want).hexdigest()[:12]}"
    )


# --------------------------------------------------------------------------- fake server

FAKE_ENV_INFO: dict[str, Any] = {
    "shell": {"name": "bash", "path": "/bin/bash"},
    "executorVersion": "fake",
    "cwd": "file:///tmp",
    "userHomeDir": "file:///root",
    "platformOs": "linux",
    "tempDir": "file:///tmp",
    "capabilities": {},
}


class FakeConn:
    """One connection to :class:`FakeServer`, driven by the test's behaviour function.

    Thread-safety: used only by its handler thread.
    """

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    def recv(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """The next message, decoded (``TimeoutError`` after ``timeout``)."""
        raw = self.ws.recv(timeout)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def recv_request(self, method: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next request (notifications are skipped), optionally checking its method."""
        while True:
            msg = self.recv(timeout)
            if "id" in msg:
                if method is not None and msg.get("method") != method:
                    raise AssertionError(f"expected {method}, got {msg!r}")
                return msg

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def reply(self, request: dict[str, Any], result: Any) -> None:
        self.send({"id": request["id"], "result": result})

    def error(self, request: dict[str, Any], code: int, message: str) -> None:
        self.send({"id": request["id"], "error": {"code": code, "message": message}})

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the TCP socket, bypassing WebSocket framing."""
        self.ws.socket.sendall(data)

    def abort(self) -> None:
        """Close the TCP connection without a closing handshake."""
        with contextlib.suppress(OSError):
            self.ws.socket.shutdown(socket.SHUT_RDWR)

    def handshake(self, session_id: str = "fake-session") -> dict[str, Any]:
        """Answer ``initialize`` like a G2 server and wait for ``initialized``."""
        init = self.recv_request("initialize")
        self.reply(init, {"sessionId": session_id, "environmentInfo": FAKE_ENV_INFO})
        note = self.recv()
        if note.get("method") != "initialized":
            raise AssertionError(f"expected initialized, got {note!r}")
        return init

    def idle(self, timeout: float = 30.0) -> None:
        """Read and drop messages until the client goes away or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                self.ws.recv(left)
            except (TimeoutError, ConnectionClosed):
                return


Behaviour = Callable[[FakeConn], None]


class FakeServer:
    """A WebSocket server whose every connection runs ``behaviour(conn)`` on its own thread.

    Errors raised by the behaviour are kept in :attr:`errors` (a test can assert it is empty).
    Thread-safety: construct and close from the test thread.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self.errors: list[BaseException] = []
        self.connections = 0
        self._server: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            max_size=None,
            compression=None,
            ping_interval=None,
            close_timeout=1.0,
        )
        self.port: int = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fakeserver-accept", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            self._behaviour(FakeConn(ws))
        except ConnectionClosed:
            pass
        except BaseException as exc:  # kept for the test to inspect
            print(f"fake server behaviour failed: {exc!r}", file=sys.stderr)
            self.errors.append(exc)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def ws_frame_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """An unmasked server-to-client WebSocket frame header announcing ``length`` bytes."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes([first, length])
    if length < 1 << 16:
        return bytes([first, 126]) + struct.pack(">H", length)
    return bytes([first, 127]) + struct.pack(">Q", length)
