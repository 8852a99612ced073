"""The server process is killed (SIGKILL) under a live client, then started again.

Without reconnect, every waiter fails with ``ConnectionLost`` at once; the old session is gone
on the restarted server (resume is refused with "unknown session id"), and a fresh connection
works. The programs the dead server had started are cleaned up by the test (a SIGKILLed server
cannot), and the restarted server leaves no zombies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psutil
import pytest

import execsdk
from execsdk import errors
from execsdk.client import Client
from tests.faultproxy import FaultProxy
from tests.reliability.conftest import G2_KINDS, start_server
from tests.reliability.reliability_support import crash, no_fd_leak, reap, wait_no_zombies
from tests.servers import ServerHandle
from tests.waiting import wait_until, waiting_in


@pytest.fixture(params=G2_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str) -> Iterator[ServerHandle]:
    handle = start_server(kind)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.timeout(90)
def test_server_killed_fails_every_waiter_and_restart_refuses_the_old_session(
    kind: str, server: ServerHandle
) -> None:
    with no_fd_leak(), FaultProxy.for_url(server.url) as proxy:
        env = execsdk.connect(proxy.url, timeout=30)
        restarted: ServerHandle | None = None
        orphans: list[psutil.Process] = []
        try:
            old_session = env.session_id
            procs = [env.spawn(["sleep", "60"]) for _ in range(3)]
            outcomes: list[BaseException | None] = []
            lock = threading.Lock()

            def waiter(fn: object) -> None:
                try:
                    fn()  # type: ignore[operator]
                    got: BaseException | None = None
                except BaseException as exc:
                    got = exc
                with lock:
                    outcomes.append(got)

            jobs = [lambda p=p: p.wait(timeout=30) for p in procs]
            jobs += [lambda p=p: p.communicate(timeout=30) for p in procs[:1]]
            threads = [threading.Thread(target=waiter, args=(j,)) for j in jobs]
            for t in threads:
                t.start()
            wait_until(
                lambda: all(waiting_in(t, "_wait_until") for t in threads),
                10,
                "not every waiter is waiting for its process",
            )
            start = time.monotonic()
            orphans = crash(server)
            assert len(orphans) >= 3  # the three sleeps outlive a SIGKILLed server
            for t in threads:
                t.join(5)
            assert time.monotonic() - start < 2.0
            assert len(outcomes) == len(jobs)
            assert all(isinstance(o, errors.ConnectionLost) for o in outcomes), outcomes
            with pytest.raises(errors.ConnectionLost):
                env.fs.exists("/")

            restarted = start_server(kind)
            proxy.retarget(*restarted.host_port)
            with pytest.raises(errors.InvalidRequest, match="unknown session id"):
                Client.connect(proxy.url, resume_session_id=old_session, timeout=10)
            with execsdk.connect(proxy.url, timeout=10) as fresh:
                assert fresh.session_id != old_session
                assert fresh.run(["echo", "back"]).stdout == b"back\n"
            assert wait_no_zombies(restarted.popen.pid) == []
        finally:
            env.close()
            reap(orphans)
            if restarted is not None:
                restarted.stop()
