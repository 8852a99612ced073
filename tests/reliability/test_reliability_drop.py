"""Connection drops without reconnect: every waiter gets a typed error, nothing hangs or leaks.

Each test puts a :class:`~tests.faultproxy.FaultProxy` between a plain (non-reconnecting)
environment and a real server (ours and codex 0.169.0), breaks the link in one way, and checks
the error type, how long it took, that ``close()`` is bounded, that no file descriptor or
``execsdk-*`` thread outlives the test, and that the server is left without zombies and still
serves a new connection.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import execsdk
from execsdk import errors
from tests.faultproxy import FaultProxy
from tests.reliability.reliability_support import (
    no_fd_leak,
    server_tree,
    stream_script,
    wait_no_zombies,
)
from tests.servers import ServerHandle
from tests.waiting import eventually, wait_until, waiting_in

MiB = 2**20


def _marked(argv: list[str], marker: str) -> list[str]:
    """Append ``# marker`` to a ``python3 -c`` program so it can be found on the server."""
    return [*argv[:-1], argv[-1] + f"# {marker}\n"]


def _carrying(server: ServerHandle, marker: str) -> list[str]:
    """Processes below the server whose command line holds ``marker`` ("pid status")."""
    found = []
    for p in server_tree(server.popen.pid):
        try:
            if marker in " ".join(p.cmdline()):
                found.append(f"{p.pid} {p.status()}")
        except Exception:
            continue
    return found


def _wait_gone(server: ServerHandle, marker: str, timeout: float) -> list[str]:
    """Wait until no process below the server carries ``marker``; returns the survivors."""
    eventually(lambda: not _carrying(server, marker), timeout, interval=0.1)
    return _carrying(server, marker)


def _assert_server_healthy(server: ServerHandle) -> None:
    """The server still runs, has no zombie children and serves a new connection."""
    assert server.alive(), server.stderr_text()[-2000:]
    assert wait_no_zombies(server.popen.pid) == []
    with execsdk.connect(server.url, timeout=10) as env:
        assert env.run(["echo", "alive"]).stdout == b"alive\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_drop_mid_stream_fails_output_with_connection_lost(
    g2_server: ServerHandle, proxy: FaultProxy, reset: bool
) -> None:
    marker = f"drop-{uuid.uuid4().hex[:8]}"
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=10)
        try:
            proc = env.spawn(_marked(stream_script(64 * MiB), marker))
            got = 0
            cut_at = None
            with pytest.raises(errors.ConnectionLost) as info:
                for chunk in proc.output(timeout=30):
                    got += len(chunk.data)
                    if cut_at is None and got >= 16 * MiB:
                        proxy.cut(reset=reset)
                        cut_at = time.monotonic()
            assert cut_at is not None, "the stream ended before the cut"
            assert time.monotonic() - cut_at < 5.0
            assert not isinstance(info.value, errors.SessionLost)
            assert 16 * MiB <= got < 64 * MiB
            # The exit code is not known and waiting for it fails the same way, at once.
            start = time.monotonic()
            with pytest.raises(errors.ConnectionLost):
                proc.wait(timeout=10)
            with pytest.raises(errors.ConnectionLost):
                env.fs.exists("/")
            assert time.monotonic() - start < 1.0
        finally:
            start = time.monotonic()
            env.close()
            assert time.monotonic() - start < 6.0
    # The program stops on its own (codex) or when the session expires (ours).
    assert _wait_gone(g2_server, marker, timeout=30) == []
    _assert_server_healthy(g2_server)


@pytest.mark.timeout(60)
def test_drop_during_large_write_raises_connection_lost(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    data = bytes(range(256)) * (40 * MiB // 256)
    target = f"/tmp/execsdk-rel-{uuid.uuid4().hex[:8]}.bin"
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=30)
        try:
            proxy.cut_after(20 * MiB, "c2s")
            start = time.monotonic()
            with pytest.raises(errors.ConnectionLost):
                env.fs.write_bytes(target, data)
            assert time.monotonic() - start < 15.0
            assert proxy.cuts == 1
        finally:
            env.close()
    # Whatever reached the server must not break it; a fresh connection can write the file.
    with execsdk.connect(g2_server.url, timeout=30) as env:
        env.fs.write_bytes(target, data)
        assert env.fs.stat(target).size == len(data)
        env.fs.remove(target)
    _assert_server_healthy(g2_server)


@pytest.mark.timeout(60)
def test_waiters_of_every_kind_fail_together_on_a_drop(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    """Calls in flight, process waits and output readers all end within a second."""
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=30)
        try:
            procs = [env.spawn(["sleep", "30"]) for _ in range(5)]
            outcomes: list[BaseException | None] = []
            lock = threading.Lock()

            def waiter(fn: object) -> None:
                try:
                    fn()  # type: ignore[operator]
                    result: BaseException | None = None
                except BaseException as exc:
                    result = exc
                with lock:
                    outcomes.append(result)

            jobs = [lambda p=p: p.wait(timeout=20) for p in procs]
            jobs += [lambda p=p: list(p.output(timeout=20)) for p in procs]
            threads = [threading.Thread(target=waiter, args=(j,)) for j in jobs]
            for t in threads:
                t.start()
            wait_until(
                lambda: all(waiting_in(t, "_wait_until") for t in threads),
                10,
                "not every waiter is waiting for its process",
            )
            proxy.cut()
            start = time.monotonic()
            for t in threads:
                t.join(5)
            assert time.monotonic() - start < 2.0
            assert len(outcomes) == len(jobs)
            assert all(isinstance(o, errors.ConnectionLost) for o in outcomes), outcomes
        finally:
            env.close()
    _assert_server_healthy(g2_server)


@pytest.mark.timeout(60)
def test_stalled_server_times_out_calls_and_close_is_bounded(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    """A server that stops reading: calls end with RequestTimeout, close() keeps its deadline."""
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=30)
        try:
            assert env.fs.exists("/")
            proxy.stall("c2s")
            start = time.monotonic()
            with pytest.raises(errors.RequestTimeout):
                env.fs.exists("/", timeout=1.0)
            assert 0.9 <= time.monotonic() - start < 3.0
            # Several at once, from several threads: each keeps its own deadline.
            failures: list[BaseException] = []

            def call() -> None:
                try:
                    env.client.environment_status(timeout=1.0)
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=call) for _ in range(8)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
            assert time.monotonic() - start < 3.0
            assert len(failures) == 8
            assert all(isinstance(f, errors.RequestTimeout) for f in failures)
        finally:
            start = time.monotonic()
            env.close()
            assert time.monotonic() - start < 6.5
            # The proxy's own sockets stay open while it holds the client's FIN back.
            proxy.resume()
    _assert_server_healthy(g2_server)


@pytest.mark.timeout(60)
def test_stalled_answers_time_out_and_late_ones_are_dropped(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30) as env:
        proxy.stall("s2c")
        with pytest.raises(errors.RequestTimeout):
            env.client.environment_status(timeout=0.5)
        proxy.resume("s2c")
        # The late answer to the timed-out call arrives now and is dropped; the link works.
        assert env.client.environment_status(timeout=5).status == "ready"
        assert env.run(["echo", "after"]).stdout == b"after\n"


@pytest.mark.timeout(60)
def test_fragmented_and_delayed_link_still_works(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30) as env:
        proxy.set_fragment(7, "c2s")
        proxy.set_fragment(13, "s2c")
        proxy.set_delay(0.001, "c2s")
        result = env.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
        proxy.set_delay(0.0)
        path = f"/tmp/execsdk-rel-{uuid.uuid4().hex[:8]}"
        env.fs.write_bytes(path, bytes(range(256)) * 64)
        assert env.fs.read_bytes(path) == bytes(range(256)) * 64
        env.fs.remove(path)


@pytest.mark.timeout(30)
def test_connect_to_a_refusing_endpoint_raises_connect_error(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    proxy.refuse(True)
    start = time.monotonic()
    with no_fd_leak(), pytest.raises(errors.ConnectError):
        execsdk.connect(proxy.url, timeout=5, connect_timeout=5)
    assert time.monotonic() - start < 3.0


@pytest.mark.timeout(30)
def test_connect_to_a_silent_endpoint_raises_connect_timeout(
    g2_server: ServerHandle, proxy: FaultProxy
) -> None:
    proxy.stall("s2c")
    with no_fd_leak():
        start = time.monotonic()
        with pytest.raises(errors.ConnectTimeout):
            execsdk.connect(proxy.url, connect_timeout=1.0)
        assert time.monotonic() - start < 3.0
        proxy.resume()  # let the proxy see the client's FIN and close its own sockets


@pytest.mark.timeout(60)
@pytest.mark.parametrize("one_message", [False, True], ids=["blocks", "writefile"])
def test_send_blocked_by_a_stalled_server_times_out(
    g2_server: ServerHandle, proxy: FaultProxy, one_message: bool
) -> None:
    """A large write into a server that stopped reading fills the socket buffers: the call must
    still end with RequestTimeout at its deadline, and close() must stay bounded. A request
    stuck half-written cannot be taken back, so the client gives the link up (ConnectionLost
    for everything after it)."""
    data = b"x" * (32 * MiB)
    path = f"/tmp/execsdk-rel-{uuid.uuid4().hex[:8]}"
    with no_fd_leak():
        env = execsdk.connect(proxy.url, timeout=30)
        outcome: list[BaseException | None] = []
        try:
            proxy.stall("c2s")

            def write() -> None:
                try:
                    if one_message:
                        env.client.fs_write_file(path=path, data_base64=data, timeout=2.0)
                    else:
                        env.fs.write_bytes(path, data, timeout=2.0)
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            writer = threading.Thread(target=write)
            start = time.monotonic()
            writer.start()
            writer.join(6.0)
            took = time.monotonic() - start
            assert not writer.is_alive(), "write_bytes(timeout=2) still blocked after 6 s"
            assert took < 4.0
            assert len(outcome) == 1 and isinstance(outcome[0], errors.RequestTimeout), outcome
            if one_message:
                assert not env.client.is_open
                with pytest.raises(errors.ConnectionLost):
                    env.fs.exists("/")
        finally:
            start = time.monotonic()
            env.close()
            closed_in = time.monotonic() - start
            proxy.resume()
            writer.join(5)
        assert closed_in < 6.5
    _assert_server_healthy(g2_server)
