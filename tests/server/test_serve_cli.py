"""``python -m execsdk serve`` as a real subprocess, spoken to in raw JSON.

WebSocket mode through ``tests/servers.py`` (``start_ours``), stdio mode through pipes.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import websocket

from tests.servers import RawConn, ServerHandle, b64, start_ours
from tests.waiting import eventually, pid_gone

pytestmark = pytest.mark.timeout(90)

SERVE = [sys.executable, "-m", "execsdk", "serve"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    with start_ours() as handle:
        yield handle


def _http_get(handle: ServerHandle, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    host, port = handle.host_port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _upgrade_headers(**extra: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **extra,
    }


def _pid_gone(pid: int, timeout: float = 10.0) -> bool:
    return eventually(lambda: pid_gone(pid), timeout, interval=0.05)


def _child_pid(conn: RawConn, process_id: str) -> int:
    note = conn.wait_notification("process/output", lambda p: p["processId"] == process_id)
    return int(base64.b64decode(note["params"]["chunk"]))


SLEEPER = ["sh", "-c", "echo $$; exec sleep 60"]


def _start_params(process_id: str, argv: list[str], cwd: Path, **extra: Any) -> dict[str, Any]:
    return {
        "processId": process_id,
        "argv": argv,
        "cwd": f"file://{cwd}",
        "env": {},
        "tty": False,
        **extra,
    }


# --------------------------------------------------------------------------- websocket mode


def test_first_stdout_line_is_the_bound_loopback_url(server: ServerHandle) -> None:
    assert server.stdout_lines[0] == server.url
    host, port = server.host_port
    assert host == "127.0.0.1" and port > 0


def test_handshake_answers_session_and_capabilities(server: ServerHandle) -> None:
    with RawConn(server.url) as conn:
        result = conn.handshake()
        caps = result["environmentInfo"]["capabilities"]
        assert caps["execsdk/concurrentRequests"] is True and caps["execsdk/closeStdin"] is True
        assert conn.result("environment/status") == {"status": "ready"}


def test_process_output_notifications_and_exit_code(server: ServerHandle, tmp_path: Path) -> None:
    with RawConn(server.url) as conn:
        conn.handshake()
        argv = ["sh", "-c", "echo hello; echo oops >&2; exit 7"]
        assert conn.result("process/start", _start_params("p", argv, tmp_path)) == {
            "processId": "p",
            "sandboxType": "none",
        }
        closed = conn.wait_notification("process/closed", lambda p: p["processId"] == "p")
        notes = conn.notifications()
        exited = next(n["params"] for n in notes if n["method"] == "process/exited")
        assert exited["exitCode"] == 7
        out = {
            n["params"]["stream"]: base64.b64decode(n["params"]["chunk"])
            for n in notes
            if n["method"] == "process/output"
        }
        assert out == {"stdout": b"hello\n", "stderr": b"oops\n"}
        assert closed["params"]["seq"] == 4


def test_interactive_process_with_close_stdin(server: ServerHandle, tmp_path: Path) -> None:
    with RawConn(server.url) as conn:
        conn.handshake()
        conn.result("process/start", _start_params("cat", ["cat"], tmp_path, pipeStdin=True))
        write = {"processId": "cat", "chunk": b64("ping\n"), "writeId": "w1"}
        assert conn.result("process/write", write) == {"status": "accepted"}
        assert conn.result("process/closeStdin", {"processId": "cat"}) == {}
        conn.wait_notification("process/closed", lambda p: p["processId"] == "cat")
        read = conn.result("process/read", {"processId": "cat"})
        assert b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"]) == b"ping\n"
        assert read["exitCode"] == 0
        after = conn.result("process/write", {**write, "writeId": "w2"})
        assert after["status"] in ("stdinClosed", "unknownProcess")


def test_fs_round_trip(server: ServerHandle, tmp_path: Path) -> None:
    base = f"file://{tmp_path}"
    with RawConn(server.url) as conn:
        conn.handshake()
        assert conn.result("fs/createDirectory", {"path": f"{base}/dir"}) == {}
        data = os.urandom(100_000)
        conn.result("fs/writeFile", {"path": f"{base}/dir/blob", "dataBase64": b64(data)})
        assert (tmp_path / "dir" / "blob").read_bytes() == data
        read = conn.result("fs/readFile", {"path": f"{base}/dir/blob"})
        assert base64.b64decode(read["dataBase64"]) == data
        assert conn.result("fs/getMetadata", {"path": f"{base}/dir/blob"})["size"] == 100_000
        conn.result("fs/copy", {"sourcePath": f"{base}/dir", "destinationPath": f"{base}/copy",
                                "recursive": True})  # fmt: skip
        assert (tmp_path / "copy" / "blob").read_bytes() == data
        conn.result("fs/remove", {"path": f"{base}/dir"})
        assert not (tmp_path / "dir").exists()
        missing = conn.call("fs/readFile", {"path": f"{base}/dir/blob"})
        assert missing["error"]["code"] == -32004


def test_origin_header_is_refused_with_403(server: ServerHandle) -> None:
    status, body = _http_get(server, "/", _upgrade_headers(Origin="http://evil.example"))
    assert (status, body) == (403, b"")
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.url, timeout=5)  # sends an Origin by default
    assert info.value.status_code == 403


def test_readyz_is_200_and_plain_get_is_400(server: ServerHandle) -> None:
    assert _http_get(server, "/readyz", {}) == (200, b"")
    status, _ = _http_get(server, "/", {})
    assert status == 400
    assert _http_get(server, "/elsewhere", {})[0] == 404


def test_token_auth_refuses_missing_or_wrong_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with start_ours(extra_args=["--ws-token-file", str(token_file)]) as handle:
        assert _http_get(handle, "/", _upgrade_headers())[0] == 401
        wrong = _upgrade_headers(Authorization="Bearer nope")
        assert _http_get(handle, "/", wrong) == (401, b"invalid websocket bearer token")
        assert _http_get(handle, "/readyz", {}) == (200, b"")
        with RawConn(handle.url, headers={"Authorization": "Bearer s3cret-token"}) as conn:
            assert "sessionId" in conn.handshake()


def test_non_loopback_listen_without_token_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*SERVE, "--listen", "ws://0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "without authentication" in lines[0]


def test_non_loopback_listen_with_token_is_allowed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken")
    popen = subprocess.Popen(
        [*SERVE, "--listen", "ws://0.0.0.0:0", "--ws-token-file", str(token_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline().decode().strip()
        assert line.startswith("ws://0.0.0.0:")
    finally:
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(timeout=20) == 0
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_shutdown_kills_children_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    handle = start_ours()
    try:
        with RawConn(handle.url) as conn:
            conn.handshake()
            conn.result("process/start", _start_params("s", SLEEPER, tmp_path))
            child = _child_pid(conn, "s")
            handle.popen.send_signal(sig)
            assert handle.popen.wait(timeout=20) == 0
        assert _pid_gone(child), "the child outlived the server"
    finally:
        handle.stop()


def test_session_grace_option_expires_sessions(tmp_path: Path) -> None:
    with start_ours(extra_args=["--session-grace", "0.5"]) as handle:
        conn = RawConn(handle.url)
        session_id = conn.handshake()["sessionId"]
        conn.result("process/start", _start_params("s", SLEEPER, tmp_path))
        child = _child_pid(conn, "s")
        conn.close()
        assert _pid_gone(child), "the expired session's process is still running"
        with RawConn(handle.url) as again:
            reply = again.call("initialize", {"clientName": "t", "resumeSessionId": session_id})
            assert reply["error"] == {"code": -32600, "message": f"unknown session id {session_id}"}


# --------------------------------------------------------------------------- stdio mode


class StdioServer:
    """``serve --listen stdio`` on pipes. Not thread-safe: one test thread."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen(
            [*SERVE, "--listen", "stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.stdin: IO[bytes] = self.popen.stdin
        self.stdout: IO[bytes] = self.popen.stdout
        self.lines: list[bytes] = []
        self.notes: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.stdin.write(json.dumps(msg).encode() + b"\n")
        self.stdin.flush()

    def recv(self) -> dict[str, Any]:
        line = self.stdout.readline()
        self.lines.append(line)
        assert line, "the server closed its stdout"
        msg: dict[str, Any] = json.loads(line)
        return msg

    def call(self, rid: int, method: str, params: Any = None) -> dict[str, Any]:
        self.send({"id": rid, "method": method, "params": params})
        while True:
            msg = self.recv()
            if msg.get("id") == rid:
                return msg
            self.notes.append(msg)

    def wait_note(self, method: str) -> dict[str, Any]:
        for note in self.notes:
            if note["method"] == method:
                return note
        while True:
            msg = self.recv()
            if msg.get("method") == method:
                return msg
            self.notes.append(msg)

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def stdio_server() -> Iterator[StdioServer]:
    srv = StdioServer()
    yield srv
    srv.kill()


def test_stdio_serves_a_session_and_prints_only_protocol(
    stdio_server: StdioServer, tmp_path: Path
) -> None:
    init = stdio_server.call(1, "initialize", {"clientName": "stdio-test"})
    assert "sessionId" in init["result"]
    stdio_server.send({"method": "initialized"})
    started = stdio_server.call(2, "process/start", _start_params("e", ["echo", "hi"], tmp_path))
    assert started["result"]["processId"] == "e"
    stdio_server.wait_note("process/closed")
    out = [n for n in stdio_server.notes if n["method"] == "process/output"]
    assert base64.b64decode(out[0]["params"]["chunk"]) == b"hi\n"
    stdio_server.stdin.write(b"{bad\n\n")
    stdio_server.stdin.flush()
    err = stdio_server.recv()
    assert err["id"] == -1
    assert err["error"]["message"].startswith(
        "failed to parse JSON-RPC message from exec-server stdio: "
    )
    stdio_server.stdin.close()
    assert stdio_server.popen.wait(timeout=20) == 0
    rest = stdio_server.stdout.read()
    for line in [*stdio_server.lines, *rest.splitlines()]:
        if line.strip():
            json.loads(line)  # every stdout line is a protocol message


def test_stdio_end_of_input_kills_the_sessions_processes(
    stdio_server: StdioServer, tmp_path: Path
) -> None:
    stdio_server.call(1, "initialize", {"clientName": "t"})
    stdio_server.send({"method": "initialized"})
    stdio_server.call(2, "process/start", _start_params("s", SLEEPER, tmp_path))
    note = stdio_server.wait_note("process/output")
    child = int(base64.b64decode(note["params"]["chunk"]))
    began = time.monotonic()
    stdio_server.stdin.close()
    assert stdio_server.popen.wait(timeout=20) == 0
    assert time.monotonic() - began < 10
    assert _pid_gone(child)


def test_stdio_sigterm_kills_the_sessions_processes(
    stdio_server: StdioServer, tmp_path: Path
) -> None:
    stdio_server.call(1, "initialize", {"clientName": "t"})
    stdio_server.send({"method": "initialized"})
    stdio_server.call(2, "process/start", _start_params("s", SLEEPER, tmp_path))
    child = int(base64.b64decode(stdio_server.wait_note("process/output")["params"]["chunk"]))
    stdio_server.popen.send_signal(signal.SIGTERM)
    assert stdio_server.popen.wait(timeout=20) == 0
    assert _pid_gone(child)


def test_bad_listen_value_is_a_usage_error() -> None:
    proc = subprocess.run(
        [*SERVE, "--listen", "http://127.0.0.1:0"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "expected ws://HOST:PORT" in proc.stderr


# --------------------------------------------------------------------------- in-process API


def test_ws_server_shutdown_closes_connections_and_kills_processes(tmp_path: Path) -> None:
    from execsdk.server.ws import WsServer

    server = WsServer("127.0.0.1", 0)
    server.start()
    try:
        conn = RawConn(server.url)
        conn.handshake()
        conn.result("process/start", _start_params("s", SLEEPER, tmp_path))
        child = _child_pid(conn, "s")
        names = {t.name for t in threading.enumerate()}
        assert any(n.startswith("execsdk-serve-conn-") for n in names)
        server.shutdown(timeout=5)
        assert conn.closed(5)
        assert _pid_gone(child)
        server.shutdown()  # idempotent
        conn.close()
    finally:
        server.shutdown()


def test_shutdown_from_a_request_worker_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from execsdk.server import method_table, params
    from execsdk.server.connection import Connection
    from execsdk.server.ws import WsServer

    server = WsServer("127.0.0.1", 0)

    def call_shutdown(conn: Connection, params: Any) -> object:
        server.shutdown()
        return {}

    method = method_table.Method("test/shutdown", params.UNIT, "test", "free", call_shutdown)
    monkeypatch.setitem(method_table.METHODS, "test/shutdown", method)
    server.start()
    try:
        with RawConn(server.url) as conn:
            conn.handshake()
            error = conn.call("test/shutdown")["error"]
            assert error["code"] == -32603
            assert "cannot run on a connection handler or request worker" in error["message"]
            assert conn.result("environment/status") == {"status": "ready"}
    finally:
        server.shutdown()
