"""Output across reconnects: nothing disappears without the caller being told.

Codex keeps only the last 1 MiB of each process's output while no client reads it, so a long
enough outage loses output there: the delivering calls hand over every byte before the gap and
then raise ``OutputLost``. Our server announces ``execsdk/outputAck``: it keeps output until
the client acknowledged it and holds a process that gets too far ahead, so there nothing is
lost at all, whatever the outage. Both run through the fault proxy at full speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

import execsdk
from execsdk import errors
from execsdk.client import Reconnect
from tests.faultproxy import FaultProxy
from tests.reliability.conftest import G2_KINDS
from tests.reliability.reliability_support import (
    BLOCK,
    describe_mismatch,
    expected_stream,
    no_fd_leak,
    stream_script,
)
from tests.servers import ServerHandle, start_kind

MiB = 2**20
POLICY = Reconnect(max_wait=40.0, backoff=0.05, max_backoff=0.5)


@pytest.fixture(scope="module", params=G2_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """Ours with a grace period longer than the outages here; codex as it ships (~80 s)."""
    extra = ["--session-grace", "60"] if request.param == "ours" else []
    handle = start_kind(request.param, extra)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def proxy(server: ServerHandle) -> Iterator[FaultProxy]:
    px = FaultProxy.for_url(server.url)
    try:
        yield px
    finally:
        px.close()


def _read_all(
    proc: execsdk.Process, on_bytes: Callable[[int], None] | None = None
) -> tuple[bytes, list[bytes], int]:
    """Every chunk the process delivers, as (bytes before the first gap, the pieces between
    gaps, the number of gaps)."""
    pieces: list[bytearray] = [bytearray()]
    received = 0
    gaps = 0
    while True:
        try:
            for chunk in proc.output(timeout=120):
                pieces[-1] += chunk.data
                received += len(chunk.data)
                if on_bytes is not None:
                    on_bytes(received)
            return bytes(pieces[0]), [bytes(p) for p in pieces[1:]], gaps
        except errors.OutputLost as lost:
            assert lost.process_id == proc.id
            assert lost.chunks > 0 and lost.first_seq <= lost.last_seq
            assert lost.streams == ("stdout", "stderr")
            gaps += 1
            pieces.append(bytearray())


def _check_pieces(before: bytes, after: list[bytes], want: bytes) -> None:
    """Before the first gap: an exact prefix. After each gap: whole blocks of the stream, in
    order, each one exactly as written (every block carries its own index)."""
    assert want.startswith(before), describe_mismatch(before, want[: len(before)])
    for piece in after:
        if not piece:
            continue
        # A gap may fall inside a block: find where the piece continues the stream.
        start = want.find(piece[: 4 * BLOCK] if len(piece) >= 4 * BLOCK else piece)
        assert start >= 0, "output after a gap is not part of what the program wrote"
        assert want[start : start + len(piece)] == piece


@pytest.mark.timeout(180)
def test_full_speed_stream_cut_every_4_mib(server: ServerHandle, proxy: FaultProxy) -> None:
    ours = server.name == "ours"
    size = 64 * MiB
    want = expected_stream(size)
    marks = list(range(4 * MiB, size, 4 * MiB))

    def cut_at(received: int) -> None:
        while marks and received >= marks[0]:
            marks.pop(0)
            proxy.cut()

    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=POLICY) as env:
        proc = env.spawn(stream_script(size))
        before, after, gaps = _read_all(proc, cut_at)
        assert proc.wait(timeout=30) == 7
        assert proxy.cuts >= (8 if ours else 1)
        if ours:
            assert gaps == 0 and after == []
            assert before == want, describe_mismatch(before, want)
            assert proc.output_lost is None
        else:
            # Codex: whatever it could not keep is reported, never silently skipped.
            _check_pieces(before, after, want)
            delivered = len(before) + sum(len(p) for p in after)
            if delivered < size:
                assert gaps >= 1 and proc.output_lost is not None
                assert proc.output_lost.chunks * 8192 >= size - delivered - 8192 * gaps
            else:
                assert gaps == 0 and before == want


@pytest.mark.timeout(180)
def test_ten_second_outage_while_the_process_writes(
    server: ServerHandle, proxy: FaultProxy
) -> None:
    ours = server.name == "ours"
    size = 24 * MiB
    want = expected_stream(size)
    # The program starts writing after 1 s, while nobody is connected (for 10 s).
    script = ["sh", "-c", 'sleep 1; exec "$@"', "sh", *stream_script(size)]
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=POLICY) as env:
        proc = env.spawn(script)
        proxy.refuse(True)
        proxy.cut()
        time.sleep(10)
        proxy.refuse(False)
        before, after, gaps = _read_all(proc)
        assert proc.wait(timeout=30) == 7
        if ours:
            assert gaps == 0 and before == want, describe_mismatch(before, want)
            assert proc.output_lost is None
        else:
            # 24 MiB written while codex kept 1 MiB: most of it is gone, and said so.
            assert gaps == 1 and proc.output_lost is not None
            assert proc.output_lost.chunks * 8192 >= size - 2 * MiB
            _check_pieces(before, after, want)
            assert len(after[0]) <= 2 * MiB


@pytest.mark.timeout(180)
def test_run_raises_output_lost_with_everything_received(
    server: ServerHandle, proxy: FaultProxy
) -> None:
    ours = server.name == "ours"
    size = 8 * MiB
    want = expected_stream(size)
    script = ["sh", "-c", 'sleep 1; exec "$@"', "sh", *stream_script(size)]
    with no_fd_leak(), execsdk.connect(proxy.url, timeout=30, reconnect=POLICY) as env:
        proxy.refuse(True)
        outcome: dict[str, object] = {}

        def outage() -> None:
            time.sleep(0.5)
            proxy.cut()
            time.sleep(6)
            proxy.refuse(False)

        t = threading.Thread(target=outage)
        t.start()
        try:
            outcome["result"] = env.run(script)
        except errors.OutputLost as exc:
            outcome["lost"] = exc
        t.join()
        if ours:
            result = outcome["result"]
            assert isinstance(result, execsdk.CompletedProcess)
            assert result.returncode == 7 and result.stdout == want
        else:
            exc = outcome["lost"]
            assert isinstance(exc, errors.OutputLost) and exc.chunks > 0
            completed = exc.completed
            assert isinstance(completed, execsdk.CompletedProcess)
            assert completed.returncode == 7
            assert 0 < len(completed.stdout) < size
            assert want.endswith(completed.stdout[-MiB // 2 :])


@pytest.fixture(scope="module")
def ours() -> Iterator[ServerHandle]:
    handle = start_kind("ours", ["--session-grace", "60"])
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.timeout(120)
def test_our_server_holds_a_process_instead_of_buffering_without_bound(
    ours: ServerHandle,
) -> None:
    size = 256 * MiB
    script = ["sh", "-c", 'sleep 1; exec "$@"', "sh", *stream_script(size)]
    server_proc = psutil.Process(ours.popen.pid)
    with (
        FaultProxy.for_url(ours.url) as proxy,
        no_fd_leak(),
        execsdk.connect(proxy.url, timeout=30, reconnect=POLICY) as env,
    ):
        proc = env.spawn(script)
        rss_before = server_proc.memory_info().rss
        proxy.refuse(True)
        proxy.cut()
        time.sleep(6)  # at full speed 256 MiB would be written in well under this
        rss_during = server_proc.memory_info().rss
        assert proc.poll() is None  # still running: held, not finished
        proxy.refuse(False)
        got = 0
        for chunk in proc.output(timeout=120):
            got += len(chunk.data)
        assert got == size
        assert proc.wait(timeout=30) == 7
    # Held at the window (8 MiB) plus the 1 MiB kept for readers, not 256 MiB.
    assert rss_during - rss_before < 64 * MiB, (rss_before, rss_during)
