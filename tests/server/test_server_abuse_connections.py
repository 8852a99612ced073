"""``execsdk serve`` under connection-level abuse (issue 18).

- Frame headers announcing 16 MiB cost what was received, not what was announced, and the memory
  is back after the connections close (RSS of a real ``execsdk serve`` process).
- Connect/close churn leaves no thread per session behind: sessions without processes are
  dropped when their connection closes, and one thread times every grace period. An idle
  connection keeps one thread: its writer and its workers end when there is nothing to do.
- A reader that stalls longer than the keepalive's ping interval plus its pong timeout keeps its
  connection and gets every byte once it reads again.
- A peer whose TCP is dead (its traffic blackholed: the loopback of a private network namespace
  taken down) is still detected by the keepalive.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.idle_connections import (
    announce_header,
    masked_frame,
    open_raw,
    open_session,
    server_stats,
)
from execsdk.backends import ProcessSpec
from execsdk.server import wsconn
from execsdk.server.outbox import Outbox
from execsdk.server.sessions import SessionRegistry
from execsdk.server.workers import Workers
from execsdk.server.ws import WsServer
from tests.servers import ServerHandle, start_ours
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

MiB = 1024 * 1024
_PING, _PONG, _CLOSE = 0x9, 0xA, 0x8


@pytest.fixture()
def ours() -> Iterator[ServerHandle]:
    handle = start_ours()
    try:
        yield handle
    finally:
        handle.stop()


def _rss_mib(handle: ServerHandle) -> float:
    return server_stats(handle.popen.pid)["rss_kib"] / 1024


def _settled_rss(handle: ServerHandle, seconds: float = 1.0) -> float:
    """RSS once two samples ``seconds`` apart agree within 1 MiB (10 s at most)."""
    last = _rss_mib(handle)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = _rss_mib(handle)
        if abs(now - last) < 1.0:
            return now
        last = now
    return last


def test_announced_frame_sizes_do_not_allocate_and_memory_returns(ours: ServerHandle) -> None:
    host, port = ours.host_port
    open_session(host, port).close()  # the server's first connection warms its imports
    before = _settled_rss(ours)
    socks = []
    try:
        for _ in range(60):
            sock = open_raw(host, port)
            # A binary frame header announcing 16 MiB (the frame limit), then 2 bytes.
            sock.sendall(announce_header(16 * MiB - 14) + b"ab")
            socks.append(sock)
        during = _settled_rss(ours)
        # The server still serves while the 60 frames wait.
        open_session(host, port).close()
    finally:
        for sock in socks:
            sock.close()
    grown = during - before
    # Before issue 18: +1,064 MiB (a zero-filled buffer per announced frame).
    assert grown < 100, f"RSS grew by {grown:.0f} MiB for 60 announced 16 MiB frames"
    wait_until(lambda: server_stats(ours.popen.pid)["threads"] <= 4, 10, "connections not closed")
    after = _settled_rss(ours)
    assert after - before < 40, f"{after - before:.0f} MiB still held after the connections closed"


def test_a_large_frame_buffer_grows_with_what_arrives() -> None:
    # Unit view of the same rule: the buffer of a frame announced as 16 MiB holds what came.
    buffer = wsconn._Buffer()
    header = announce_header(16 * MiB)
    view = buffer.room(0)
    view[: len(header) + 2] = header + b"ab"
    view.release()
    buffer.end += len(header) + 2
    buffer.exact(len(header) + 16 * MiB)
    assert buffer.allocated <= 2 * wsconn.READ_SIZE + len(header) + 2
    # Filling it doubles it, never past the frame.
    for _ in range(12):
        view = buffer.room(0)
        count = len(view)
        view.release()
        buffer.end += count
    assert len(buffer.buf) <= 2 * buffer.end
    assert len(buffer.buf) <= len(header) + 16 * MiB


def test_idle_buffers_are_given_back_at_the_keepalive() -> None:
    buffer = wsconn._Buffer()
    assert buffer.allocated == wsconn.FIRST_READ_SIZE
    size = 2 * MiB
    header = announce_header(size)
    frame = header + bytes(size)
    view = buffer.room(0)
    view[: len(header)] = header
    view.release()
    buffer.end += len(header)
    buffer.exact(len(frame))
    while buffer.end < len(frame):
        view = buffer.room(0)
        count = len(view)
        view.release()
        buffer.end += count
    assert len(buffer.take_exact()) == len(frame)
    assert buffer.allocated == wsconn.READ_SIZE + len(frame)  # kept for the next large frame
    buffer.release_idle()  # a large frame came during this interval: kept
    assert buffer.allocated == wsconn.READ_SIZE + len(frame)
    buffer.release_idle()  # none during the next one: both buffers back to their least
    assert buffer.allocated == wsconn.FIRST_READ_SIZE


def test_the_writer_and_the_workers_run_only_while_there_is_work() -> None:
    sent: list[list[bytes]] = []
    outbox = Outbox(sent.append, name="execsdk-serve-writer-test", linger=0.2)
    workers = Workers("execsdk-serve-worker-test", 4, idle_exit=0.2)
    try:
        assert not outbox.writing and workers.threads == 0
        assert outbox.put(b"n1")
        assert outbox.writing
        wait_until(lambda: not outbox.writing, 5, "the writer outlived its linger")
        assert outbox.put(b"n2")  # a new writer
        wait_until(lambda: sent == [[b"n1"], [b"n2"]], 5, "the second writer sent nothing")
        done = threading.Event()
        assert workers.submit(done.set)
        assert done.wait(5) and workers.threads == 1
        wait_until(lambda: workers.threads == 0, 5, "the idle worker did not end")
        again = threading.Event()
        assert workers.submit(again.set)
        assert again.wait(5)
    finally:
        outbox.close()
        workers.close()


def test_connect_close_churn_keeps_the_thread_count_bounded(ours: ServerHandle) -> None:
    host, port = ours.host_port
    pid = ours.popen.pid
    base = server_stats(pid)["threads"]
    stop = threading.Event()
    peak = [base]
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                open_session(host, port, request=False).close()
        except BaseException as exc:
            errors.append(exc)

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server_stats(pid)["threads"])
            time.sleep(0.05)

    threads = [threading.Thread(target=churn) for _ in range(4)] + [threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    # Before issue 18: one expiry thread per closed session, alive for the 80 s grace period.
    assert peak[0] < 50, f"{peak[0]} server threads during churn"
    wait_until(
        lambda: server_stats(pid)["threads"] <= base + 1,
        10,
        "threads did not drop back after the churn",
    )


def test_sessions_without_processes_are_dropped_and_one_thread_times_the_rest(
    tmp_path: Path,
) -> None:
    registry = SessionRegistry(grace=30.0)
    owners = [object() for _ in range(3)]
    sessions = [registry.attach(None, owner) for owner in owners]
    try:
        # An empty session is dropped at once: nothing to resume.
        registry.detach(sessions[0], owners[0])
        assert registry.release_if_empty(sessions[0])
        assert registry.get(sessions[0].id) is None
        # Sessions with a process wait for their grace period, all timed by one thread.
        spec = ProcessSpec(argv=("sleep", "30"), cwd=str(tmp_path))
        for session in sessions[1:]:
            session.backend.start("p", spec, session.events_for("p"))
        registry.detach(sessions[1], owners[1])
        registry.detach(sessions[2], owners[2])
        assert not registry.release_if_empty(sessions[1])
        assert not registry.release_if_empty(sessions[2])
        expiry = [t for t in threading.enumerate() if t.name.startswith("execsdk-serve-expiry")]
        assert [t.name for t in expiry] == ["execsdk-serve-expiry"]
        # Resumes cancel the expiries; the thread ends once nothing waits.
        assert registry.attach(sessions[1].id, owners[1]) is sessions[1]
        assert registry.attach(sessions[2].id, owners[2]) is sessions[2]
        wait_until(lambda: not expiry[0].is_alive(), 5, "the expiry thread did not end")
        assert sessions[1].backend.process_ids() == ["p"]
    finally:
        registry.close(2)


def test_expiry_kills_in_due_order_with_one_thread() -> None:
    registry = SessionRegistry(grace=0.3)
    try:
        owners = [object() for _ in range(20)]
        sessions = [registry.attach(None, owner) for owner in owners]
        for session, owner in zip(sessions, owners, strict=True):
            registry.detach(session, owner)
        names = [t.name for t in threading.enumerate() if t.name.startswith("execsdk-serve-exp")]
        assert names == ["execsdk-serve-expiry"]
        wait_until(lambda: len(registry) == 0, 5, "detached sessions did not expire")
        assert all(session.closed for session in sessions)
        wait_until(
            lambda: not any(t.name == "execsdk-serve-expiry" for t in threading.enumerate()),
            5,
            "the expiry thread outlived the sessions",
        )
    finally:
        registry.close(2)


# -- keepalive ----------------------------------------------------------------------------------


def _recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = sock.recv(min(n - len(data), 1 << 20))
            if not chunk:
                raise EOFError("the server closed the connection")
            data += chunk
        return bytes(data)

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    return first & 0x0F, exactly(length)


def _request(rid: int, method: str, params: dict[str, Any]) -> bytes:
    return masked_frame(json.dumps({"id": rid, "method": method, "params": params}).encode())


def test_a_reader_that_stalls_past_the_pong_timeout_keeps_its_connection(tmp_path: Path) -> None:
    total = 24 * MiB
    srv = WsServer("127.0.0.1", 0, ping_interval=0.3, ping_timeout=0.8)
    srv.start()
    try:
        sock = open_raw(srv.host, srv.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(30)
        sock.sendall(_request(1, "initialize", {"clientName": "stalls"}))
        session_id = json.loads(_recv_frame(sock)[1])["result"]["sessionId"]
        sock.sendall(masked_frame(b'{"method":"initialized","params":{}}'))
        start = {
            "processId": "loud",
            "argv": ["head", "-c", str(total), "/dev/zero"],
            "cwd": tmp_path.as_uri(),
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "tty": False,
        }
        sock.sendall(_request(2, "process/start", start))
        session = srv.registry.get(session_id)
        assert session is not None
        wait_until(lambda: session.output_paused, 20, "the server never paused the process")
        # Stalled for 3 s: ten ping intervals, several pong timeouts.
        time.sleep(3.0)
        assert len(srv._live) == 1, "the stalled reader's connection was closed"
        # Read again: every byte comes, in order, and pings are answered from now on.
        got = 0
        next_seq = None
        pings = 0
        while True:
            opcode, data = _recv_frame(sock)
            if opcode == _PING:
                pings += 1
                sock.sendall(masked_frame(data, _PONG))
                continue
            assert opcode != _CLOSE, f"closed: {data[:2].hex()} {data[2:]!r}"
            message = json.loads(data)
            if message.get("method") == "process/output":
                params = message["params"]
                if next_seq is not None:
                    assert params["seq"] == next_seq
                next_seq = params["seq"] + 1
                got += len(base64.b64decode(params["chunk"]))
            elif message.get("method") == "process/closed":
                break
        assert got == total
        assert pings >= 1  # the keepalive went on, queued behind the output
        sock.sendall(_request(3, "environment/status", {}))
        while True:
            opcode, data = _recv_frame(sock)
            if opcode == _PING:
                sock.sendall(masked_frame(data, _PONG))
            elif opcode != _CLOSE and json.loads(data).get("id") == 3:
                break
        sock.close()
    finally:
        srv.shutdown(timeout=5)


def test_a_ping_stuck_behind_unsent_data_is_not_counted_but_a_silent_tcp_peer_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The decision itself, with the socket's state faked: stuck and acknowledged -> kept;
    # stuck and the peer's TCP silent -> closed 1011; not stuck -> closed 1011 as before.
    srv = WsServer("127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.4)
    srv.start()
    try:
        state = {"unacked": 1000, "silent": False}
        monkeypatch.setattr(wsconn, "_unacked_bytes", lambda sock: state["unacked"])
        monkeypatch.setattr(wsconn, "_peer_tcp_silent", lambda sock, seconds: state["silent"])
        sock = open_raw(srv.host, srv.port)
        sock.settimeout(10)
        assert _recv_frame(sock)[0] == _PING  # never answered
        time.sleep(1.5)  # more than three pong timeouts
        assert len(srv._live) == 1
        state["silent"] = True
        start = time.monotonic()
        opcode, data = _recv_frame(sock)
        assert (opcode, int.from_bytes(data[:2], "big")) == (_CLOSE, 1011)
        assert time.monotonic() - start < 7  # the next check, at most min(timeout, 5 s) away
        sock.close()
        # Not stuck: the pong clock ran from the ping, as before.
        state.update(unacked=0, silent=False)
        sock = open_raw(srv.host, srv.port)
        sock.settimeout(10)
        start = time.monotonic()
        assert _recv_frame(sock)[0] == _PING
        opcode, data = _recv_frame(sock)
        assert (opcode, int.from_bytes(data[:2], "big")) == (_CLOSE, 1011)
        assert time.monotonic() - start < 3
        sock.close()
    finally:
        srv.shutdown(timeout=5)


_BLACKHOLE_PROBE = textwrap.dedent(
    """
    import json, socket, subprocess, sys, time
    sys.path[:0] = [{repo!r}]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from benchmarks.idle_connections import masked_frame, open_raw, open_session
    from execsdk.server.ws import WsServer

    stall = {stall!r}
    srv = WsServer("127.0.0.1", 0, ping_interval=0.3, ping_timeout=1.0)
    srv.start()
    try:
        if stall:
            # A reader that stopped reading a loud process: its TCP window is closed.
            sock = open_raw(srv.host, srv.port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            for message in (
                {{"id": 1, "method": "initialize", "params": {{"clientName": "c"}}}},
                {{"method": "initialized", "params": {{}}}},
                {{"id": 2, "method": "process/start", "params": {{
                    "processId": "loud", "argv": ["head", "-c", "67108864", "/dev/zero"],
                    "cwd": "file:///", "env": {{"PATH": "/usr/bin:/bin"}}, "tty": False}}}},
            ):
                sock.sendall(masked_frame(json.dumps(message).encode()))
            time.sleep(stall)
        else:
            sock = open_session(srv.host, srv.port, request=True)
            time.sleep(0.2)
        assert len(srv._live) == 1, "closed before the link died"
        # The peer's TCP goes silent: nothing on the loopback reaches anyone any more.
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        start = time.monotonic()
        while srv._live and time.monotonic() - start < 60:
            time.sleep(0.1)
        print(json.dumps({{"closed": not srv._live, "after": time.monotonic() - start}}))
    finally:
        srv.shutdown(timeout=5)
    """
)


@pytest.mark.parametrize("stall", [0.0, 2.0], ids=["idle", "window-closed"])
def test_a_peer_whose_tcp_is_dead_is_detected(stall: float) -> None:
    # Real blackholing: server and client share the loopback of a private network namespace,
    # which is taken down once the connection is up (no netem/netfilter needed).
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare and ip (iproute2) to blackhole a private loopback")
    repo = str(Path(__file__).resolve().parents[2])
    probe = _BLACKHOLE_PROBE.format(repo=repo, stall=stall)
    try:
        proc = subprocess.run(
            [unshare, "-n", sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the probe hung: {exc.stderr!r}")
    if proc.returncode != 0 and (
        "Operation not permitted" in proc.stderr or "unshare failed" in proc.stderr
    ):
        pytest.skip(f"no private network namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["closed"], "the dead peer's connection was never closed"
    # Idle: ping after 0.3 s, no ACK for 1 s with retransmissions unanswered, 1 s close
    # deadline. Window closed: two window probes unanswered (their backoff is a few seconds).
    assert result["after"] < 30, result
