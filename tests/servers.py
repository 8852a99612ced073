"""Start real exec-servers (codex or ours) and talk raw JSON-RPC to them.

Importable by tests and benchmarks alike; it defines no pytest fixtures. Every server runs in
its own session so that `ServerHandle.stop` can end the whole process group (the codex npm
wrapper starts a native child that would otherwise survive).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import websocket

REPO = Path(__file__).resolve().parents[1]

CODEX_G2 = "0.169.0"
CODEX_G1 = "0.123.0"


def _env_override_name(version: str) -> str:
    return "EXECSDK_CODEX_" + version.replace(".", "_")


def codex_binary(version: str) -> Path | None:
    """Path of the codex CLI for `version`, or None when it is not installed.

    The env var ``EXECSDK_CODEX_<version with _ for .>`` overrides the default location
    ``.cache/codex-<version>/node_modules/.bin/codex``.
    """
    override = os.environ.get(_env_override_name(version))
    if override:
        path = Path(override)
        return path if path.exists() else None
    path = REPO / ".cache" / f"codex-{version}" / "node_modules" / ".bin" / "codex"
    return path if path.exists() else None


def _ci_requires_codex() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true" or os.environ.get("EXECSDK_REQUIRE_CODEX") == "1"
    )


def require_binary(version: str) -> Path:
    """Return the codex binary for `version`; skip the test if absent (fail under CI)."""
    import pytest

    path = codex_binary(version)
    if path is not None:
        return path
    msg = (
        f"codex {version} is not installed; run "
        f"`npm install --prefix .cache/codex-{version} @openai/codex@{version}` "
        f"(or point {_env_override_name(version)} at a codex binary)"
    )
    if _ci_requires_codex():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)
    raise AssertionError("unreachable")  # pragma: no cover


class ServerHandle:
    """A running exec-server process group. Thread-safe: `stop` may be called from any thread."""

    def __init__(self, name: str, url: str, popen: subprocess.Popen[bytes], generation: str):
        self.name = name
        self.url = url
        self.popen = popen
        self.generation = generation
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._drainers: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"ServerHandle({self.name!r}, {self.url!r}, pid={self.popen.pid})"

    @property
    def host_port(self) -> tuple[str, int]:
        """(host, port) of the listening socket, parsed from the URL."""
        rest = self.url.split("://", 1)[1].rstrip("/")
        host, port = rest.rsplit(":", 1)
        return host, int(port)

    def _drain(self, stream: IO[bytes], sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                if len(sink) < 10_000:
                    sink.append(line)
        with contextlib.suppress(OSError):
            stream.close()

    def _start_drainers(self, first_stdout: str) -> None:
        self.stdout_lines.append(first_stdout)
        assert self.popen.stdout is not None and self.popen.stderr is not None
        for stream, sink, label in (
            (self.popen.stdout, self.stdout_lines, "out"),
            (self.popen.stderr, self.stderr_lines, "err"),
        ):
            t = threading.Thread(
                target=self._drain,
                args=(stream, sink),
                name=f"drain-{self.name}-{label}-{self.popen.pid}",
                daemon=True,
            )
            t.start()
            self._drainers.append(t)

    def stderr_text(self) -> str:
        """Everything the server printed on stderr so far."""
        with self._lock:
            return "\n".join(self.stderr_lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5) -> None:
        """End the whole process group: SIGTERM, then SIGKILL after `timeout`. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        _kill_group(self.popen, timeout)
        for t in self._drainers:
            t.join(timeout=2)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _kill_group(popen: subprocess.Popen[bytes], timeout: float) -> None:
    pgid = popen.pid  # start_new_session=True makes the child its own group leader
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while native children linger in the group: always finish them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=timeout)


def _spawn(
    name: str,
    argv: Sequence[str],
    generation: str,
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    timeout: float,
) -> ServerHandle:
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    assert popen.stdout is not None and popen.stderr is not None
    first: queue.Queue[bytes] = queue.Queue()
    stdout = popen.stdout

    def read_first() -> None:
        first.put(stdout.readline())

    reader = threading.Thread(target=read_first, name=f"first-line-{name}", daemon=True)
    reader.start()
    line = b""
    with contextlib.suppress(queue.Empty):
        line = first.get(timeout=timeout)
    text = line.decode("utf-8", "replace").strip()
    found = re.search(r"wss?://\S+", text)
    url = found.group(0) if found else text
    if found is None:
        _kill_group(popen, 2)
        err = b""
        with contextlib.suppress(Exception):
            err = popen.stderr.read()
        for pipe in (popen.stdout, popen.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        raise RuntimeError(
            f"{name} did not print its URL within {timeout}s (argv={list(argv)!r}, "
            f"exit={popen.returncode}, first stdout line={text!r}); "
            f"stderr:\n{err.decode('utf-8', 'replace')}"
        )
    reader.join(timeout=1)
    handle = ServerHandle(name, url, popen, generation)
    handle._start_drainers(url)
    return handle


def start_codex(
    version: str,
    *,
    extra_args: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
) -> ServerHandle:
    """Start `codex exec-server` of `version` on a free loopback port."""
    binary = codex_binary(version)
    if binary is None:
        raise FileNotFoundError(f"codex {version} is not installed")
    generation = "G1" if version == CODEX_G1 else "G2"
    argv = [str(binary), "exec-server", "--listen", "ws://127.0.0.1:0", *extra_args]
    return _spawn(f"codex-{version}", argv, generation, cwd=cwd, env=env, timeout=timeout)


def start_ours(
    *,
    extra_args: Sequence[str] = (),
    transport: str = "ws",
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
) -> ServerHandle:
    """Start `python -m execsdk serve` on a free loopback port (only ws is supported here)."""
    if transport != "ws":
        raise ValueError(f"start_ours supports transport='ws' only, not {transport!r}")
    argv = [
        sys.executable,
        "-m",
        "execsdk",
        "serve",
        "--listen",
        "ws://127.0.0.1:0",
        *extra_args,
    ]
    return _spawn("ours", argv, "G2", cwd=cwd, env=env, timeout=timeout)


# Variables planted in a server's environment by `start_kind`, so that envPolicy tests can see
# what is inherited and what the default excludes (*KEY*, *SECRET*, *TOKEN*) drop.
PLANTED_ENV = {
    "EXECSDK_CONF_PLAIN": "plain",
    "EXECSDK_CONF_API_KEY": "k",
    "EXECSDK_CONF_SECRET_X": "s",
    "EXECSDK_CONF_MYTOKEN": "t",
    "EXECSDK_CONF_DROPME": "d",
}


def start_kind(kind: str, extra_args: Sequence[str] = (), *, require: bool = True) -> ServerHandle:
    """Start a server of `kind` ("codex-<version>" or "ours") with PLANTED_ENV added.

    With `require` (the default; needs pytest) a missing codex binary skips or fails the test.
    """
    env = dict(os.environ)
    env.update(PLANTED_ENV)
    if kind == "ours":
        return start_ours(extra_args=extra_args, env=env)
    version = kind.removeprefix("codex-")
    if require:
        require_binary(version)
    return start_codex(version, extra_args=extra_args, env=env)


class ConnectionClosed(Exception):
    """The server closed the connection while a reply was awaited."""


class RawConn:
    """A bare JSON-RPC client over one WebSocket. Not thread-safe: one test thread only."""

    def __init__(
        self,
        url: str,
        *,
        headers: Sequence[str] | Mapping[str, str] | None = None,
        timeout: float = 10,
    ) -> None:
        hdrs: list[str] = []
        if isinstance(headers, Mapping):
            hdrs = [f"{k}: {v}" for k, v in headers.items()]
        elif headers is not None:
            hdrs = list(headers)
        self.url = url
        self.timeout = timeout
        self.ws = websocket.create_connection(
            url, suppress_origin=True, header=hdrs, timeout=timeout
        )
        self._ids = itertools.count(1)
        self._notifications: list[dict[str, Any]] = []
        self._replies: dict[Any, dict[str, Any]] = {}
        self.close_frame: bytes | None = None
        self.init_result: dict[str, Any] | None = None

    # -- sending -------------------------------------------------------------------------------

    def send(self, obj: Any) -> None:
        """Send a dict (JSON-encoded) or a str as one text message."""
        text = obj if isinstance(obj, str) else json.dumps(obj)
        self.ws.send(text)

    def send_binary(self, data: bytes | Any) -> None:
        """Send bytes, or a dict JSON-encoded, as one binary message."""
        payload = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.ws.send_binary(payload)

    def request(self, method: str, params: Any = None, *, binary: bool = False) -> int:
        """Send a request with a fresh id and return that id (no waiting)."""
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        if binary:
            self.send_binary(msg)
        else:
            self.send(msg)
        return rid

    def request_spelled(self, method: str, params: Any, spelling: str) -> int:
        """Send a request written as :data:`SPELLINGS` names; return its id (no waiting)."""
        rid = next(self._ids)
        msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        compact = json.dumps(msg, separators=(",", ":"))
        if spelling == "compact":
            self.send(compact)
        elif spelling == "spaced":
            self.send(json.dumps(msg, indent=1))
        elif spelling == "escaped":
            self.send(compact.replace("/", "\\/"))
        elif spelling == "binary":
            self.send_binary(compact.encode())
        else:
            raise ValueError(f"unknown spelling {spelling!r}; one of {SPELLINGS}")
        return rid

    def notify(self, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    # -- receiving -----------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """Next message from the server, decoded. Raises TimeoutError or ConnectionClosed."""
        self.ws.settimeout(self.timeout if timeout is None else timeout)
        try:
            opcode, frame = self.ws.recv_data_frame()
        except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
            raise TimeoutError("no message from the server in time") from exc
        except (websocket.WebSocketException, ConnectionError, OSError) as exc:
            raise ConnectionClosed(str(exc)) from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.close_frame = bytes(frame.data)
            raise ConnectionClosed("server sent a close frame")
        data = frame.data
        msg: dict[str, Any] = json.loads(data)
        return msg

    def wait_reply(self, rid: Any, timeout: float | None = None) -> dict[str, Any]:
        """The reply envelope for id `rid`; notifications that arrive meanwhile are stashed."""
        if rid in self._replies:
            return self._replies.pop(rid)
        limit = self.timeout if timeout is None else timeout
        end = time.monotonic() + limit
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to id {rid!r} within {limit}s")
            msg = self.recv(left)
            if "method" in msg and "id" not in msg:
                self._notifications.append(msg)
            elif msg.get("id") == rid:
                return msg
            else:
                self._replies[msg.get("id")] = msg

    def call(self, method: str, params: Any = None, timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the whole reply envelope (result or error)."""
        return self.wait_reply(self.request(method, params), timeout)

    def result(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """Like `call`, but return `result` and fail loudly on an error reply."""
        reply = self.call(method, params, timeout)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']!r}")
        return reply["result"]

    def notifications(self) -> list[dict[str, Any]]:
        """Notifications stashed so far (the list itself, in arrival order)."""
        return self._notifications

    def stashed(self) -> list[dict[str, Any]]:
        """Every message received but not yet claimed: notifications and stray replies."""
        return [*self._notifications, *self._replies.values()]

    def pump(self, duration: float) -> None:
        """Read for `duration` seconds, stashing everything that arrives."""
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            try:
                msg = self.recv(left)
            except TimeoutError:
                return
            if "id" in msg:
                self._replies[msg.get("id")] = msg
            else:
                self._notifications.append(msg)

    def wait_notification(
        self, method: str, pred: Any = None, timeout: float = 10
    ) -> dict[str, Any]:
        """First stashed or arriving notification `method` whose params satisfy `pred`."""
        end = time.monotonic() + timeout
        seen = 0
        while True:
            for note in self._notifications[seen:]:
                if note.get("method") == method and (pred is None or pred(note.get("params"))):
                    return note
            seen = len(self._notifications)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} notification within {timeout}s")
            try:
                msg = self.recv(left)
            except TimeoutError:
                continue
            if "id" in msg:
                self._replies[msg.get("id")] = msg
            else:
                self._notifications.append(msg)

    def handshake(self, client_name: str = "conformance", **params: Any) -> dict[str, Any]:
        """`initialize` then `initialized`; returns the initialize result."""
        reply = self.call("initialize", {"clientName": client_name, **params})
        if "error" in reply:
            raise AssertionError(f"initialize failed: {reply['error']!r}")
        self.notify("initialized", {})
        result: dict[str, Any] = reply["result"]
        self.init_result = result
        return result

    def closed(self, timeout: float = 5) -> bool:
        """True if the server closes the connection within `timeout` (messages are stashed)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                msg = self.recv(left)
            except TimeoutError:
                return False
            except ConnectionClosed:
                return True
            if "id" in msg:
                self._replies[msg.get("id")] = msg
            else:
                self._notifications.append(msg)
        return False

    # -- processes -----------------------------------------------------------------------------

    def start_process(
        self,
        process_id: str,
        argv: Sequence[str],
        cwd: str,
        *,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """`process/start` (cwd is sent as given); returns the result, fails on an error."""
        params: dict[str, Any] = {
            "processId": process_id,
            "argv": list(argv),
            "cwd": cwd,
            "env": dict(env) if env is not None else {"PATH": os.environ.get("PATH", "")},
            "tty": tty,
            **extra,
        }
        result: dict[str, Any] = self.result("process/start", params)
        return result

    def events(self, process_id: str) -> list[dict[str, Any]]:
        """Stashed process/* notifications for `process_id`, in arrival order."""
        return [
            n
            for n in self._notifications
            if str(n.get("method", "")).startswith("process/")
            and (n.get("params") or {}).get("processId") == process_id
        ]

    def wait_closed(self, process_id: str, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait for `process/closed` of `process_id`; return all its events so far."""
        self.wait_notification(
            "process/closed", lambda p: p.get("processId") == process_id, timeout=timeout
        )
        return self.events(process_id)

    def output(self, process_id: str, stream: str | None = None) -> bytes:
        """Concatenated output of `process_id` from stashed notifications, ordered by seq."""
        chunks = sorted(
            (n["params"] for n in self.events(process_id) if n["method"] == "process/output"),
            key=lambda p: int(p["seq"]),
        )
        return b"".join(
            unb64(p["chunk"]) for p in chunks if stream is None or p["stream"] == stream
        )

    def exit_code(self, process_id: str) -> Any:
        """exitCode from the stashed `process/exited` of `process_id` (KeyError if none)."""
        for n in self.events(process_id):
            if n["method"] == "process/exited":
                return n["params"]["exitCode"]
        raise KeyError(process_id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        # close() returns early, socket still open, when the peer's close frame was already
        # read (a ResourceWarning later); shutdown() closes the socket whatever happened.
        with contextlib.suppress(Exception):
            self.ws.shutdown()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


SPELLINGS = ("compact", "spaced", "escaped", "binary")
"""Ways :meth:`RawConn.request_spelled` writes one request: compact JSON, indented JSON,
compact with every ``/`` escaped as ``\\/``, compact in a binary frame. The same request in
any of them must get the same answer."""


@contextlib.contextmanager
def connections(url: str) -> Iterator[Callable[[], RawConn]]:
    """A factory of raw (uninitialized) connections to ``url``; all closed on leaving."""
    made: list[RawConn] = []

    def make() -> RawConn:
        c = RawConn(url)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


def b64(data: bytes | str) -> str:
    """Standard padded base64 of `data` (str is UTF-8 encoded)."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
