"""Load: many connections and processes on our server, many threads on one codex client.

Every round must complete in full, and memory must come back: the resident size of this
process (the clients) and of the server, measured after each round, may not grow by more
than ``RSS_SLACK`` from round 2 to the last round (round 1 pays for warm-up: imports, thread
stacks, allocator arenas). On our server both samples wait until the sessions the rounds
detached have expired, so they compare the same state.

Against codex 0.169.0 the full size (8 threads x 1,000 calls, 10 rounds) runs by default
(~15 s). On our server the default run uses 50 connections x 4 processes (~10 s); the full size,
100 connections x 20 processes (2,000 processes a round, ~10 s a round), is marked slow.
"""

from __future__ import annotations

import gc
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import execsdk
from execsdk import errors
from execsdk.client import Client
from tests.reliability.conftest import OURS_GRACE, start_server
from tests.reliability.reliability_support import rss, server_tree, wait_children_at_most
from tests.servers import CODEX_G2, ServerHandle, require_binary, start_codex
from tests.waiting import wait_until

MiB = 2**20
RSS_SLACK = 20 * MiB
ROUNDS = 10


def _server_rss(server: ServerHandle) -> int:
    """RSS of the process that serves: ours is the pid itself, codex a native child."""
    procs = [psutil.Process(server.popen.pid), *server_tree(server.popen.pid)]
    serving = [p for p in procs if "exec-server" in " ".join(p.cmdline())]
    biggest = max(serving or procs, key=lambda p: p.memory_info().rss)
    return int(biggest.memory_info().rss)


def _rounds(
    one_round: Callable[[], None],
    server: ServerHandle,
    settle: Callable[[bool], None] | None = None,
) -> list[tuple[int, int, float]]:
    """Run ``ROUNDS`` rounds; returns (client RSS, server RSS, seconds) after each.

    ``settle(compared)`` runs before each sample: it waits until the server let go of what the
    round left behind and, before the two samples that are compared (after round 2 and after
    the last, ``compared`` True), also of the work still legitimately held (detached sessions
    waiting out their grace period), so both compare the same state.
    """
    samples = []
    for index in range(ROUNDS):
        start = time.monotonic()
        one_round()
        took = time.monotonic() - start
        gc.collect()
        if settle is not None:
            settle(index in (1, ROUNDS - 1))
        samples.append((rss(), _server_rss(server), took))
    return samples


def _sessions(server: ServerHandle, what: str) -> int:
    """How many sessions a verbose server of ours logged as ``what`` ("created", "detached",
    "expired")."""
    return len(re.findall(rf"session \S+ {what}\b", server.stderr_text()))


def _sessions_settled(server: ServerHandle, *, expired: bool) -> None:
    """Wait until every session the server created is detached, or (``expired``) gone."""
    what = "expired" if expired else "detached"
    wait_until(
        lambda: _sessions(server, what) == _sessions(server, "created"),
        OURS_GRACE + 30,
        lambda: f"{_sessions(server, what)} of {_sessions(server, 'created')} sessions {what}",
        interval=0.05,
    )


def _report(samples: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    return [(c // MiB, s // MiB, round(t, 2)) for c, s, t in samples]


def _assert_no_growth(samples: list[tuple[int, int, float]]) -> None:
    client_growth = samples[-1][0] - samples[1][0]
    server_growth = samples[-1][1] - samples[1][1]
    report = _report(samples)
    assert client_growth < RSS_SLACK, f"client RSS grew {client_growth / MiB:.1f} MiB: {report}"
    assert server_growth < RSS_SLACK, f"server RSS grew {server_growth / MiB:.1f} MiB: {report}"


# --------------------------------------------------------------------------- our server


@pytest.fixture(scope="module")
def ours() -> Iterator[ServerHandle]:
    handle = start_server("ours", verbose=True)  # it logs each session's end
    try:
        yield handle
    finally:
        handle.stop()


def _connections_round(url: str, connections: int, per_connection: int) -> None:
    """``connections`` clients at once, each running ``per_connection`` processes at once."""
    failures: list[BaseException] = []
    done = []
    lock = threading.Lock()
    barrier = threading.Barrier(connections)

    def worker(n: int) -> None:
        try:
            with execsdk.connect(url, timeout=60) as env:
                barrier.wait(60)
                procs = [
                    env.spawn(["sh", "-c", f"echo {n}-{i}; exit {i % 7}"])
                    for i in range(per_connection)
                ]
                for i, p in enumerate(procs):
                    out, err = p.communicate(timeout=60)
                    assert (out, err, p.returncode) == (f"{n}-{i}\n".encode(), b"", i % 7)
            with lock:
                done.append(n)
        except BaseException as exc:
            with lock:
                failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:3]
    assert sorted(done) == list(range(connections))


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("connections", "per_connection"),
    [(50, 4), pytest.param(100, 20, marks=pytest.mark.slow)],
    ids=["reduced", "full"],
)
def test_many_connections_with_many_processes_complete_without_leaking(
    ours: ServerHandle, connections: int, per_connection: int
) -> None:
    # Each round leaves its sessions detached for OURS_GRACE seconds (their processes ended);
    # compare samples taken once they have expired.
    samples = _rounds(
        lambda: _connections_round(ours.url, connections, per_connection),
        ours,
        lambda compared: _sessions_settled(ours, expired=compared),
    )
    _assert_no_growth(samples)
    # Every process was reaped and every session cleaned up.
    assert wait_children_at_most(ours.popen.pid, 0, timeout=10) == []
    print(f"\n{connections}x{per_connection} (client MiB, server MiB, s): {_report(samples)}")


# --------------------------------------------------------------------------- codex


@pytest.fixture(scope="module")
def codex() -> Iterator[ServerHandle]:
    require_binary(CODEX_G2)
    handle = start_codex(CODEX_G2)
    try:
        yield handle
    finally:
        handle.stop()


def _calls_round(client: Client, threads: int, calls: int, path: str) -> None:
    failures: list[BaseException] = []
    counts = [0] * threads

    def worker(n: int) -> None:
        try:
            for i in range(calls):
                kind = i % 4
                if kind == 0:
                    assert client.environment_status().status == "ready"
                elif kind == 1:
                    assert client.fs_get_metadata(path=path).is_file
                elif kind == 2:
                    assert client.fs_read_file(path=path).data_base64 == b"load test\n"
                else:
                    try:
                        client.process_read(process_id=f"nobody-{n}")
                    except errors.InvalidRequest:
                        pass
                    else:
                        raise AssertionError("process/read of an unknown id succeeded")
                counts[n] += 1
        except BaseException as exc:
            failures.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not failures, failures[:3]
    assert counts == [calls] * threads


@pytest.mark.timeout(240)
def test_many_threads_on_one_client_complete_without_leaking(
    codex: ServerHandle, tmp_path: Path
) -> None:
    threads, calls = 8, 1000  # full size: about 15 s in all
    path = str(tmp_path / f"load-{uuid.uuid4().hex[:6]}.txt")
    Path(path).write_bytes(b"load test\n")
    with Client.connect(codex.url, timeout=30) as client:
        samples = _rounds(lambda: _calls_round(client, threads, calls, path), codex)
    _assert_no_growth(samples)
    print(f"\n{threads}x{calls} (client MiB, server MiB, s): {_report(samples)}")
