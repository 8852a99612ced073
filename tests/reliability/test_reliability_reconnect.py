"""Reconnect and resume (``execsdk.connect(url, reconnect=...)``) against real servers.

A fault proxy breaks the link in the middle of real work; the environment reconnects with
``resumeSessionId``, re-reads what its processes missed with ``process/read`` and carries on:
output arrives whole, exactly once and in order, with the exit code. Where the session cannot
come back (server restarted, grace period over, server gone for longer than ``max_wait``) every
live process fails with ``SessionLost`` and nothing hangs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

import execsdk
from execsdk import errors
from execsdk._rpc.bus import Gap
from execsdk.client import Client, Reconnect
from tests.faultproxy import FaultProxy
from tests.reliability.conftest import G2_KINDS, OURS_GRACE, start_server
from tests.reliability.reliability_support import (
    crash,
    describe_mismatch,
    expected_stream,
    no_fd_leak,
    reap,
    server_tree,
    stream_script,
)
from tests.servers import ServerHandle
from tests.waiting import log_rpc_frames, logged_requests, wait_until, waiting_in

MiB = 2**20
STREAM = 64 * MiB
# Paced so the client keeps up and a reconnect (a few ms on loopback) costs far less than
# the 1 MiB a server retains per process: the test is about the protocol, not the budget.
RATE = 16 * MiB

FAST = Reconnect(max_wait=20.0, backoff=0.05, max_backoff=0.5)


def _no_eviction_warnings(caplog: pytest.LogCaptureFixture) -> None:
    evicted = [r.getMessage() for r in caplog.records if "gone from the server" in r.getMessage()]
    assert evicted == []


def _sent_methods(caplog: pytest.LogCaptureFixture, skip: int = 0) -> set[str]:
    """Methods of the requests the client has registered and is writing (or wrote), leaving
    out the first ``skip``: a request is logged after it is pending, just before it is sent."""
    return {str(r["method"]) for r in logged_requests(caplog)[skip:]}


def _running_on(server: ServerHandle, marker: str) -> list[psutil.Process]:
    """Processes below the server whose command line holds ``marker``, zombies left out."""
    found = []
    for p in server_tree(server.popen.pid):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def _consume(
    proc: execsdk.Process, cuts: list[int], proxy: FaultProxy, reset: bool = False
) -> bytes:
    """Collect the whole output, cutting the link each time it passes a mark in ``cuts``."""
    got = bytearray()
    marks = sorted(cuts)
    for chunk in proc.output(timeout=120):
        got += chunk.data
        while marks and len(got) >= marks[0]:
            marks.pop(0)
            proxy.cut(reset=reset)
    return bytes(got)


# --------------------------------------------------------------------------- resume


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_stream_across_two_drops_arrives_exactly_once(
    g2_server: ServerHandle, proxy: FaultProxy, reset: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        session = env.session_id
        proc = env.spawn(stream_script(STREAM, RATE))
        got = _consume(proc, [16 * MiB, 40 * MiB], proxy, reset)
        assert got == expected_stream(STREAM), describe_mismatch(got, expected_stream(STREAM))
        assert proc.wait(timeout=10) == 7
        assert proxy.cuts == 2 and proxy.accepted >= 3
        assert env.session_id == session
        assert env.run(["echo", "still here"]).stdout == b"still here\n"
    _no_eviction_warnings(caplog)


@pytest.mark.timeout(120)
def test_many_processes_across_a_drop_each_arrive_exactly_once(
    g2_server: ServerHandle, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    size = 4 * MiB
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        procs = [env.spawn(stream_script(size, 2 * MiB)) for _ in range(5)]
        results: dict[int, bytes] = {}

        def drain(i: int) -> None:
            results[i] = b"".join(c.data for c in procs[i].output(timeout=60))

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        # Cut once 4 MiB of the ~27 MiB of notifications went through, and again once the
        # client reconnected and 4 MiB more came: both drops land in the middle of the output.
        proxy.wait_bytes("s2c", proxy.bytes_s2c + 4 * MiB)
        links = proxy.accepted
        proxy.cut()
        proxy.wait_links(links + 1)
        proxy.wait_bytes("s2c", proxy.bytes_s2c + 4 * MiB)
        proxy.cut()
        for t in threads:
            t.join(60)
        want = expected_stream(size)
        for i in range(5):
            assert results[i] == want, describe_mismatch(results[i], want)
            assert procs[i].wait(timeout=5) == 7
    _no_eviction_warnings(caplog)


@pytest.mark.timeout(60)
def test_process_that_ends_while_disconnected_reports_output_and_exit_code(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    marker = f"ends-{uuid.uuid4().hex[:8]}"
    script = f"sleep 0.5; echo done; echo err >&2; exit 5 # {marker}"
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        proxy.refuse(True)
        proc = env.spawn(["sh", "-c", script])
        proxy.cut()
        # The program runs to its end while nobody is connected.
        wait_until(lambda: not _running_on(g2_server, marker), 10, "the program did not end")
        assert proxy.open_links == 0
        proxy.refuse(False)
        out, err = proc.communicate(timeout=30)
        assert (out, err, proc.returncode) == (b"done\n", b"err\n", 5)


@pytest.mark.timeout(60)
def test_keepalive_declares_a_silent_link_lost_and_reconnects(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    policy = Reconnect(max_wait=20, backoff=0.05, keepalive=0.2, keepalive_timeout=1.0)
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=policy) as env:
        proc = env.spawn(["sh", "-c", "sleep 2; echo after the silence"])
        proxy.stall("s2c")
        start = time.monotonic()
        proxy.wait_links(2, timeout=5)  # the client gave up on the silent link
        detected = time.monotonic() - start
        proxy.resume("s2c")
        assert 0.5 <= detected < 3.0  # waited for the silence, then gave the link up
        out, _ = proc.communicate(timeout=30)
        assert out == b"after the silence\n"
        assert proc.returncode == 0


# --------------------------------------------------------------------------- calls


@pytest.mark.timeout(60)
def test_call_made_while_reconnecting_waits_for_the_new_link(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        proxy.refuse(True)
        proxy.cut()
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(env.fs.exists("/")))
        t.start()
        wait_until(lambda: waiting_in(t, "_usable"), 5, "the call is not waiting for a link")
        proxy.wait_links(proxy.accepted + 1)  # another attempt was refused meanwhile
        assert t.is_alive() and result == []  # still waiting
        proxy.refuse(False)
        t.join(10)
        assert result == [True]


@pytest.mark.timeout(60)
def test_call_timeout_while_reconnecting_raises_connection_lost(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        proxy.refuse(True)
        proxy.cut()
        start = time.monotonic()
        with pytest.raises(errors.ConnectionLost) as info:
            env.fs.exists("/", timeout=0.5)
        assert not isinstance(info.value, errors.SessionLost)
        assert time.monotonic() - start < 1.5
        proxy.refuse(False)
        assert env.fs.exists("/", timeout=10)


@pytest.mark.timeout(60)
def test_in_flight_read_is_retried_and_in_flight_change_is_not(
    g2_server: ServerHandle, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    log_rpc_frames(caplog)
    path = f"/tmp/execsdk-rel-{uuid.uuid4().hex[:8]}"
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        env.fs.write_bytes(path, b"content")
        outcomes: dict[str, object] = {}

        def run(name: str, fn: object) -> None:
            try:
                outcomes[name] = fn()  # type: ignore[operator]
            except BaseException as exc:
                outcomes[name] = exc

        proxy.stall("c2s")  # the requests leave the client but never reach the server
        earlier = len(logged_requests(caplog))
        threads = [
            threading.Thread(target=run, args=("read", lambda: env.fs.read_bytes(path))),
            threading.Thread(target=run, args=("stat", lambda: env.fs.stat(path).size)),
            threading.Thread(target=run, args=("remove", lambda: env.client.fs_remove(path=path))),
        ]
        for t in threads:
            t.start()
        # One request each is in flight (read_bytes begins with fs/getMetadata).
        wait_until(
            lambda: len(logged_requests(caplog)) - earlier == 3,
            10,
            lambda: f"sent only {_sent_methods(caplog, earlier)}",
        )
        assert "fs/remove" in _sent_methods(caplog, earlier)
        proxy.cut()
        proxy.resume("c2s")
        for t in threads:
            t.join(20)
        assert outcomes["read"] == b"content"
        assert outcomes["stat"] == 7
        assert isinstance(outcomes["remove"], errors.ConnectionLost), outcomes
        assert env.fs.read_bytes(path) == b"content"  # the remove never ran
        env.fs.remove(path)


@pytest.mark.timeout(60)
def test_in_flight_write_with_a_write_id_is_delivered_once(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        proc = env.spawn(["head", "-c", "6"], stdin=True)
        proxy.stall("s2c")  # the write reaches the server; its answer is held back
        before = proxy.bytes_c2s
        sent = proxy.received("s2c")
        wrote: list[object] = []

        def write() -> None:
            try:
                wrote.append(proc.write(b"abc"))
            except BaseException as exc:
                wrote.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        proxy.wait_bytes("c2s", before + 50, timeout=5)
        # The server wrote the bytes and answered; the stalled proxy holds the answer back.
        wait_until(lambda: proxy.received("s2c") > sent, 5, "the server did not answer the write")
        proxy.cut()
        proxy.resume("s2c")
        writer.join(20)
        assert wrote == [3]  # repeated on the new connection, not failed
        proc.write(b"def")
        out, _ = proc.communicate(timeout=20)
        assert out == b"abcdef"


@pytest.mark.timeout(60)
def test_block_write_interrupted_by_a_drop_fails_cleanly_then_works(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    data = bytes(range(256)) * (16 * MiB // 256)
    path = f"/tmp/execsdk-rel-{uuid.uuid4().hex[:8]}"
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env:
        proxy.cut_after(8 * MiB, "c2s")
        with pytest.raises(errors.ConnectionLost):
            env.fs.write_bytes(path, data)
        env.fs.write_bytes(path, data)
        assert env.fs.read_bytes(path) == data
        env.fs.remove(path)


# --------------------------------------------------------------------------- session lost


@pytest.fixture(params=G2_KINDS)
def own_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    handle = start_server(str(request.param))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.timeout(90)
def test_server_restart_fails_live_processes_with_session_lost(own_server: ServerHandle) -> None:
    kind = own_server.name  # "ours" or "codex-<version>"
    restarted: ServerHandle | None = None
    orphans = []
    with no_fd_leak(), FaultProxy.for_url(own_server.url) as proxy:
        env = execsdk.connect(proxy.url, timeout=30, reconnect=FAST)
        try:
            old_session = env.session_id
            procs = [env.spawn(["sleep", "60"]) for _ in range(3)]
            orphans = crash(own_server)
            restarted = start_server(kind)
            proxy.retarget(*restarted.host_port)
            start = time.monotonic()
            for p in procs:
                with pytest.raises(errors.SessionLost):
                    p.wait(timeout=30)
            assert time.monotonic() - start < 10
            # The environment goes on with a fresh session on the restarted server.
            assert env.run(["echo", "fresh"]).stdout == b"fresh\n"
            assert env.session_id != old_session
        finally:
            env.close()
            reap(orphans)
            if restarted is not None:
                restarted.stop()


@pytest.mark.timeout(60)
def test_grace_period_over_fails_live_processes_with_session_lost() -> None:
    server = start_server("ours", verbose=True)  # grace: OURS_GRACE seconds
    try:
        with (
            no_fd_leak(),
            FaultProxy.for_url(server.url) as proxy,
            execsdk.connect(proxy.url, timeout=30, reconnect=FAST) as env,
        ):
            proc = env.spawn(["sleep", "60"])
            session = env.session_id
            proxy.refuse(True)
            proxy.cut()
            wait_until(
                lambda: f"session {session} expired" in server.stderr_text(),
                OURS_GRACE + 10,
                "the server did not let the session expire",
                interval=0.05,
            )
            proxy.refuse(False)
            with pytest.raises(errors.SessionLost):
                proc.wait(timeout=20)
            assert env.run(["echo", "ok"]).stdout == b"ok\n"
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_server_gone_longer_than_max_wait_fails_everything_with_session_lost(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    policy = Reconnect(max_wait=1.5, backoff=0.05, max_backoff=0.2)
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=30, reconnect=policy)
        try:
            proc = env.spawn(["sleep", "30"])
            proxy.refuse(True)
            start = time.monotonic()
            proxy.cut()
            with pytest.raises(errors.SessionLost):
                proc.wait(timeout=20)
            assert 1.0 <= time.monotonic() - start < 4.0
            with pytest.raises(errors.SessionLost):
                env.fs.exists("/")
        finally:
            start = time.monotonic()
            env.close()
            assert time.monotonic() - start < 3.0


@pytest.mark.timeout(30)
def test_close_while_reconnecting_is_prompt(g2_server: ServerHandle, proxy: FaultProxy) -> None:
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=30, reconnect=FAST)
        proc = env.spawn(["sleep", "30"])
        proxy.refuse(True)
        links = proxy.accepted
        proxy.cut()
        proxy.wait_links(links + 1)  # reconnecting: an attempt was refused
        start = time.monotonic()
        env.close()
        assert time.monotonic() - start < 2.0
        with pytest.raises(errors.ConnectionClosed):
            env.fs.exists("/")
        with pytest.raises((errors.ConnectionClosed, errors.ConnectionLost)):
            proc.wait(timeout=5)


@pytest.mark.timeout(60)
def test_without_retries_an_in_flight_read_fails_with_connection_lost(
    g2_server: ServerHandle, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    log_rpc_frames(caplog)
    policy = Reconnect(max_wait=20, backoff=0.05, retry_idempotent=False)
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=policy) as env:
        outcome: list[object] = []

        def read() -> None:
            try:
                outcome.append(env.client.environment_status())
            except BaseException as exc:
                outcome.append(exc)

        proxy.stall("c2s")
        earlier = len(logged_requests(caplog))
        t = threading.Thread(target=read)
        t.start()
        wait_until(
            lambda: "environment/status" in _sent_methods(caplog, earlier),
            10,
            "the read was not sent",
        )
        proxy.cut()
        proxy.resume("c2s")
        t.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], errors.ConnectionLost), outcome
        assert env.client.environment_status().status == "ready"  # the link itself came back


@pytest.mark.timeout(60)
def test_client_subscriptions_and_handlers_survive_a_reconnect(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    """The Client keeps one event bus across connections: a subscription made before the drop
    receives notifications sent after it, and reconnect handlers hear about the resume."""
    with no_fd_leak(), Client.connect(proxy.url, timeout=30, reconnect=FAST) as client:
        heard: list[object] = []
        client.add_reconnect_handler(heard.append)
        with client.events.subscription(methods={"process/closed"}) as sub:
            pid = f"sub-{uuid.uuid4().hex[:8]}"
            client.process_start(process_id=pid, argv=["sleep", "1"], cwd="/tmp", env={})
            proxy.cut()
            event = sub.get(timeout=10)
        assert not isinstance(event, Gap) and event.params["processId"] == pid
        assert heard == [None]  # resumed, not lost
        assert client.is_open


# --------------------------------------------------------------------------- API


def test_reconnect_policy_refuses_negative_values() -> None:
    for field in ("max_wait", "backoff", "max_backoff", "keepalive", "keepalive_timeout"):
        with pytest.raises(ValueError, match=field):
            Reconnect(**{field: -1.0})  # type: ignore[arg-type]


def test_reconnect_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECSDK_URL", raising=False)
    with pytest.raises(ValueError, match="URL"):
        execsdk.connect(None, reconnect=True)


def test_client_on_a_bare_transport_cannot_reconnect() -> None:
    from execsdk._transport.memory import memory_pair

    ours, theirs = memory_pair()
    with pytest.raises(ValueError, match="reconnect"):
        Client(ours, reconnect=True)
    theirs.close()
