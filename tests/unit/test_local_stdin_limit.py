"""LocalProcessBackend's bounded stdin and clean spawn, with real child processes (Linux).

- Writes beyond ``STDIN_LIMIT`` wait for room, in order; a timeout, a cancelled scope, an
  exit and a terminate end the wait; ``close_stdin`` comes after the writes that wait.
- Children start with default signal dispositions and an empty mask (pipes and tty), and a
  failed spawn names the missing executable or cwd.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

import pytest

from execsdk import errors
from execsdk._local.childenv import CLEAN_SPAWN
from execsdk._local.processes import STDIN_LIMIT, LocalProcessBackend, PendingWrite
from execsdk._local.records import PollScope
from execsdk.backends import ProcessSpec, Stream
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]

MIB = 1 << 20
PATH = {"PATH": os.defpath}


class _Sink:
    """A ProcessEvents receiver keeping stdout and the exit code."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.code: int | None = None
        self.closed = threading.Event()

    def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
        self.out += data

    def on_exited(self, seq: int, exit_code: int) -> None:
        self.code = exit_code

    def on_closed(self, seq: int) -> None:
        self.closed.set()

    def on_lost(self, exc: BaseException) -> None:
        self.closed.set()


@pytest.fixture()
def backend() -> Iterator[LocalProcessBackend]:
    with LocalProcessBackend() as b:
        yield b


def _start(backend: LocalProcessBackend, pid: str, argv: list[str]) -> _Sink:
    sink = _Sink()
    backend.start(pid, ProcessSpec(argv=tuple(argv), env=PATH, pipe_stdin=True), sink)
    return sink


def _queued(backend: LocalProcessBackend, pid: str) -> int:
    proc = backend._require(pid)
    with proc.lock:
        return proc.stdin_queued


def test_a_write_beyond_the_limit_waits_and_can_time_out(backend: LocalProcessBackend) -> None:
    _start(backend, "s", ["sleep", "60"])
    for _ in range(STDIN_LIMIT // MIB):
        assert backend.write("s", b"x" * MIB, timeout=5) == "accepted"
    wait_until(lambda: _queued(backend, "s") < STDIN_LIMIT)  # the pipe took its share
    with pytest.raises(errors.RequestTimeout):
        backend.write("s", b"y" * MIB, timeout=0.3)
    assert _queued(backend, "s") <= STDIN_LIMIT
    assert backend.terminate("s")
    wait_until(lambda: _queued(backend, "s") == 0)  # freed with the process


def test_waiting_writes_are_delivered_in_order(backend: LocalProcessBackend) -> None:
    sink = _start(backend, "h", ["sh", "-c", "sleep 0.5; sha256sum"])
    pieces = [bytes([i]) * MIB for i in range(3 * STDIN_LIMIT // MIB)]
    for piece in pieces:
        assert backend.write("h", piece, timeout=30) == "accepted"
    backend.close_stdin("h")
    assert sink.closed.wait(30)
    assert sink.out.split()[0].decode() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_close_stdin_comes_after_the_writes_that_wait(backend: LocalProcessBackend) -> None:
    sink = _start(backend, "w", ["sh", "-c", "sleep 1; wc -c"])
    pending = []
    for _ in range(STDIN_LIMIT // MIB + 4):
        started = backend.start_write("w", b"z" * MIB)
        if isinstance(started, PendingWrite):
            pending.append(started)
    assert len(pending) >= 3
    results: list[str] = []
    waiters = [threading.Thread(target=lambda p=p: results.append(p.wait(30))) for p in pending]
    for thread in waiters:
        thread.start()
    backend.close_stdin("w")
    assert backend.write("w", b"late") == "stdinClosed"
    for thread in waiters:
        thread.join(30)
    assert results == ["accepted"] * len(pending)
    assert sink.closed.wait(30)
    assert int(sink.out.strip()) == (STDIN_LIMIT // MIB + 4) * MIB


def test_a_cancelled_wait_gives_up_its_place(backend: LocalProcessBackend) -> None:
    _start(backend, "c", ["sleep", "60"])
    while not isinstance(backend.start_write("c", b"x" * MIB), PendingWrite):
        pass
    first = backend.start_write("c", b"1" * MIB)
    second = backend.start_write("c", b"2" * MIB)
    assert isinstance(first, PendingWrite) and isinstance(second, PendingWrite)
    scope = PollScope()
    outcome: list[object] = []

    def wait_first() -> None:
        try:
            outcome.append(first.wait(None, scope=scope))
        except errors.ConnectionClosed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait_first)
    thread.start()
    scope.cancel()
    thread.join(10)
    assert isinstance(outcome[0], errors.ConnectionClosed)
    proc = backend._require("c")
    with proc.lock:
        assert len(proc.stdin_waiters) == 2  # the loop's pending write and `second`
    backend.terminate("c")
    assert second.wait(10) == "accepted"  # dropped with the exit, answered all the same


@pytest.mark.skipif(not CLEAN_SPAWN, reason="no posix_spawn with addchdir_np here")
@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_children_start_with_default_signals(backend: LocalProcessBackend, tty: bool) -> None:
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    try:
        sink = _Sink()
        argv = ("sh", "-c", "grep -E '^Sig(Blk|Ign):' /proc/self/status; kill -HUP $$")
        backend.start("t", ProcessSpec(argv=argv, env=PATH, tty=tty), sink)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGHUP, old)
    assert sink.closed.wait(10)
    assert sink.code == 128 + signal.SIGHUP
    masks = dict(line.split(":") for line in sink.out.decode().splitlines())
    assert int(masks["SigBlk"], 16) == 0 and int(masks["SigIgn"], 16) == 0


@pytest.mark.skipif(not CLEAN_SPAWN, reason="no posix_spawn with addchdir_np here")
def test_spawn_errors_name_the_missing_path(backend: LocalProcessBackend, tmp_path: object) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        backend.start("m", ProcessSpec(argv=("no-such-program-18",), env=PATH), _Sink())
    assert "no-such-program-18" in str(missing.value)
    gone = f"{tmp_path}/gone"
    with pytest.raises(FileNotFoundError) as no_cwd:
        backend.start("d", ProcessSpec(argv=("true",), env=PATH, cwd=gone), _Sink())
    assert gone in str(no_cwd.value)
