"""The public Client against real servers: codex 0.169.0 (G2), codex 0.123.0 (G1) and ours."""

from __future__ import annotations

import base64
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execsdk import errors
from execsdk.client import Client, Generation
from tests.conftest import ServerPool
from tests.servers import codex_binary, require_binary, start_codex
from tests.waiting import RPC_LOGGER, log_rpc_frames, logged_requests, wait_until

KINDS = ("codex-0.169.0", "codex-0.123.0", "ours")


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Client]:
    server = server_pool.get(request.param)
    c = Client.connect(server.url, timeout=30.0)
    try:
        yield c
    finally:
        c.close()


def _wait_closed(c: Client, process_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll process/read until the process is closed (no long-poll: codex serialises calls)."""

    def closed() -> dict[str, Any] | None:
        res = c.process_read(process_id=process_id)
        return {"exit_code": res.exit_code, "chunks": res.chunks} if res.closed else None

    return wait_until(closed, timeout, f"{process_id} did not close", interval=0.02)


def test_handshake_detects_the_generation(client: Client) -> None:
    info = client.server_info
    assert info.session_id
    if info.generation is Generation.G2:
        assert info.environment is not None
        assert info.environment.shell.path.startswith("/")
        assert str(info.environment.cwd).startswith("/")
    else:
        assert info.environment is None
        assert info.capabilities == frozenset()


def test_every_typed_method_once(client: Client, tmp_path: Path) -> None:
    g2 = client.generation is Generation.G2
    d = str(tmp_path / "dir ü #1")
    client.fs_create_directory(path=d)
    f = f"{d}/a.bin"
    client.fs_write_file(path=f, data_base64=b"\x00hello\xff")
    assert client.fs_read_file(path=f).data_base64 == b"\x00hello\xff"
    meta = client.fs_get_metadata(path=f)
    assert meta.is_file and not meta.is_directory
    assert (meta.size == 7) if g2 else (meta.size is None)
    names = [e.file_name for e in client.fs_read_directory(path=d).entries]
    assert names == ["a.bin"]
    client.fs_copy(source_path=f, destination_path=f"{d}/b.bin", recursive=False)
    client.fs_remove(path=f"{d}/b.bin")
    with pytest.raises(errors.NotFound):
        client.fs_get_metadata(path=f"{d}/b.bin")

    pid = f"t-{uuid.uuid4().hex[:8]}"
    started = client.process_start(
        process_id=pid, argv=["sh", "-c", "echo out; echo err >&2"], cwd=d, env={}
    )
    assert started.process_id == pid
    done = _wait_closed(client, pid)
    assert done["exit_code"] == 0
    assert b"".join(c.chunk for c in done["chunks"] if c.stream == "stdout") == b"out\n"
    cat = f"c-{uuid.uuid4().hex[:8]}"
    client.process_start(process_id=cat, argv=["cat"], cwd=d, env={}, pipe_stdin=True)
    status = client.process_write(process_id=cat, chunk=b"x\n", write_id="w1").status
    assert status == "accepted"
    assert client.process_terminate(process_id=cat).running is True

    if g2:
        assert client.environment_status().status == "ready"
        assert client.environment_info().shell.path
        assert client.fs_canonicalize(path=f"{d}/../{Path(d).name}/a.bin").path == f
        walk = client.fs_walk(path=d, max_depth=2, max_directories=10, max_entries=10)
        assert [e.path for e in walk.entries] == [f]
        client.fs_open(handle_id="h1", path=f)
        block = client.fs_read_block(handle_id="h1", offset=1, len=5)
        assert block.chunk == b"hello"
        client.fs_close(handle_id="h1")
        client.fs_open(handle_id="h2", path=f"{d}/w.bin", mode="replace")
        client.fs_write_block(handle_id="h2", offset=0, chunk=b"block")
        client.fs_close(handle_id="h2")
        assert client.fs_read_file(path=f"{d}/w.bin").data_base64 == b"block"
        sleeper = f"s-{uuid.uuid4().hex[:8]}"
        client.process_start(process_id=sleeper, argv=["sleep", "30"], cwd=d, env={})
        client.process_signal(process_id=sleeper)
        assert _wait_closed(client, sleeper)["exit_code"] == 130
        assert client.fs_watch_missing(watch_id=1, missing=[f"{d}/nope"]).watching is True
        cfg = client.environment_config_read(cwd=d, config_paths=[["mcp_servers"]])
        assert cfg.user_home_dir is not None
    else:
        for call in (
            lambda: client.environment_info(),
            lambda: client.environment_status(),
            lambda: client.fs_canonicalize(path=f),
            lambda: client.fs_walk(path=d, max_depth=1, max_directories=1, max_entries=1),
            lambda: client.fs_open(handle_id="h", path=f),
            lambda: client.process_signal(process_id=pid),
        ):
            with pytest.raises(errors.UnsupportedByServer, match="G1"):
                call()


def test_close_stdin_only_where_announced(client: Client) -> None:
    announced = "execsdk/closeStdin" in client.server_info.capabilities
    assert client.supports("process/closeStdin") is announced
    if not announced:
        with pytest.raises(errors.UnsupportedByServer, match="closeStdin"):
            client.process_close_stdin(process_id="x")


def test_raw_call_returns_the_raw_result(client: Client, tmp_path: Path) -> None:
    path = str(tmp_path)
    if client.generation is Generation.G2:
        path = tmp_path.as_uri()
    raw = client.call("fs/getMetadata", {"path": path})
    assert raw["isDirectory"] is True


def test_unknown_method_raises_method_not_found(client: Client) -> None:
    with pytest.raises(errors.MethodNotFound) as info:
        client.call("nope/nope", {})
    assert info.value.code == -32601


def test_32_threads_by_200_mixed_calls_are_matched(client: Client, tmp_path: Path) -> None:
    for i in range(32):
        (tmp_path / f"f{i}").write_bytes(str(i).encode() * (i + 1))
    failures: list[str] = []

    def worker(i: int) -> None:
        path = str(tmp_path / f"f{i}")
        for n in range(200):
            try:
                if n % 2:
                    data = client.fs_read_file(path=path).data_base64
                    ok = data == str(i).encode() * (i + 1)
                else:
                    meta = client.fs_get_metadata(path=path)
                    ok = meta.is_file and meta.size in (None, len(str(i)) * (i + 1))
                if not ok:
                    failures.append(f"thread {i} call {n} got another caller's answer")
            except Exception as exc:
                failures.append(f"thread {i} call {n}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []


def test_2000_pipelined_calls_complete_under_the_cap(server_pool: ServerPool) -> None:
    server = server_pool.get("codex-0.169.0")
    with Client.connect(server.url, timeout=60.0, max_in_flight=128) as c:
        done = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(125):
                c.fs_get_metadata(path="/")
                with lock:
                    done.append(1)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(done) == 2000


def test_timed_out_call_then_late_answer_is_dropped_and_client_keeps_working(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    log_rpc_frames(caplog)
    pid = f"s-{uuid.uuid4().hex[:8]}"
    client.process_start(process_id=pid, argv=["sleep", "5"], cwd="/", env={})
    with pytest.raises(errors.RequestTimeout) as info:
        client.process_read(process_id=pid, after_seq=10**6, wait_ms=800, timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    timed_out = [r["id"] for r in logged_requests(caplog) if r["method"] == "process/read"]
    assert len(timed_out) == 1

    def dropped() -> list[object]:
        return [
            r.args[0]
            for r in list(caplog.records)
            if r.name == RPC_LOGGER
            and isinstance(r.args, tuple)
            and str(r.msg).startswith("reply for unknown or expired id")
        ]

    # The late answer arrives when the server's 800 ms long poll ends; the reader drops it.
    assert wait_until(dropped, 10, "the late answer was not dropped") == timed_out
    assert client.fs_get_metadata(path="/").is_directory
    assert client.rpc.reader_thread.is_alive()
    assert dropped() == timed_out  # the next call got its own answer, nothing else was dropped
    client.process_terminate(process_id=pid)


@pytest.mark.parametrize("kind", ["codex-0.169.0", "ours"])
def test_server_killed_mid_call_fails_every_waiter_fast(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.servers import start_kind

    log_rpc_frames(caplog)
    server = start_kind(kind)
    c = Client.connect(server.url, timeout=30.0)
    try:
        _kill_server_during_calls(server, c, caplog)
    finally:
        c.close()
        server.stop()


def _kill_server_during_calls(server: Any, c: Client, caplog: pytest.LogCaptureFixture) -> None:
    c.process_start(process_id="s", argv=["sleep", "30"], cwd="/", env={})
    errors_seen: list[BaseException] = []

    def waiter() -> None:
        try:
            c.process_read(process_id="s", after_seq=10**6, wait_ms=20000)
        except BaseException as exc:
            errors_seen.append(exc)

    def reads_sent() -> int:
        return sum(r["method"] == "process/read" for r in logged_requests(caplog))

    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for t in threads:
        t.start()
    # A call is logged once it is pending, just before it is written: all 20 are in flight.
    wait_until(lambda: reads_sent() == 20, 10, lambda: f"{reads_sent()} of 20 reads sent")
    killed_at = time.monotonic()
    server.stop(timeout=1)
    for t in threads:
        t.join(5)
    elapsed = time.monotonic() - killed_at
    assert len(errors_seen) == 20
    assert all(isinstance(e, errors.ConnectionLost) for e in errors_seen)
    assert elapsed < 3.0  # 2 s after the kill, plus the kill itself
    assert not c.rpc.reader_thread.is_alive() or c.rpc.wait_closed(2)


def test_bad_token_is_refused_with_a_hint(tmp_path: Path) -> None:
    require_binary("0.169.0")
    token_file = tmp_path / "token"
    token_file.write_text("right-token\n")
    server = start_codex(
        "0.169.0", extra_args=["--ws-auth", "capability-token", "--ws-token-file", str(token_file)]
    )
    try:
        with pytest.raises(errors.ConnectError, match=r"401.*token"):
            Client.connect(server.url, token="wrong-token", connect_timeout=5)
        with Client.connect(server.url, token="right-token", connect_timeout=5) as c:
            assert c.server_info.generation is Generation.G2
    finally:
        server.stop()


def test_wrong_port_is_a_connect_error_naming_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(errors.ConnectError, match="refused"):
        Client.connect(f"ws://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - start < 2.5


def test_silent_tcp_peer_gives_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(errors.ConnectTimeout) as info:
            Client.connect(f"ws://127.0.0.1:{port}", connect_timeout=0.5)
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - start < 2.0


def test_server_that_never_answers_initialize_gives_initialize_timeout() -> None:
    from websockets.sync.server import ServerConnection, serve

    def handler(conn: ServerConnection) -> None:
        for _ in conn:
            pass  # read and never answer

    with serve(handler, "127.0.0.1", 0) as server:
        port = server.socket.getsockname()[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        start = time.monotonic()
        with pytest.raises(errors.InitializeTimeout) as info:
            Client.connect(f"ws://127.0.0.1:{port}", initialize_timeout=0.5)
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - start < 2.0
        server.shutdown()
    thread.join(5)


def test_stdio_transport_against_codex() -> None:
    binary = require_binary("0.169.0")
    with Client.over_stdio([str(binary), "exec-server", "--listen", "stdio"]) as c:
        assert c.server_info.generation is Generation.G2
        data = base64.b64encode(b"x").decode()
        assert data == "eA=="
        assert c.fs_get_metadata(path="/").is_directory


def test_message_above_frame_limit_is_fragmented(client: Client, tmp_path: Path) -> None:
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB -> ~27 MB of base64, > 16 MiB frame
    path = str(tmp_path / "big.bin")
    client.fs_write_file(path=path, data_base64=payload, timeout=120)
    assert Path(path).read_bytes() == payload


def test_codex_binaries_are_installed_under_ci() -> None:
    import os

    if os.environ.get("CI") == "true":
        assert codex_binary("0.169.0") is not None and codex_binary("0.123.0") is not None
