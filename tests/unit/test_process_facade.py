"""Unit tests of the Process facade's ordering, buffering and callback logic.

A small hand-written ProcessBackend plays the server: the tests push events into the Process
the way a backend's I/O thread would (out of order, duplicated, with gaps, exited before the
last output, lost) and check what consumers and callbacks see. Environment-level behaviour
(argv, cwd, env policy, stdin staging) runs against the real local backend where it matters.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from execsdk import errors
from execsdk._callbacks import CallbackDispatcher
from execsdk._deadline import UNSET, Timeoutish
from execsdk._local.processes import LocalProcessBackend
from execsdk._outbuffer import OutputBuffer
from execsdk.backends import (
    DEFAULT_ENV_POLICY,
    EnvironmentInfo,
    EnvPolicy,
    OutputChunk,
    ProcessEvents,
    ProcessSpec,
    ReadResult,
    Stream,
    WriteStatus,
)
from execsdk.environment import Environment
from execsdk.process import WRITE_PIECE, Process
from tests.waiting import wait_until, waiting_in

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- the fake backend

_Ev = tuple[str, int, object]  # kind ("out", "exit", "closed"), seq, payload


class FakeBackend:
    """Plays a server for one or more processes; the test decides which events reach the
    receiver. ``log`` is the server's full truth, used to answer ``read``."""

    def __init__(self, *, can_close_stdin: bool = True, can_interrupt: bool = True) -> None:
        self._can_close_stdin = can_close_stdin
        self._can_interrupt = can_interrupt
        self.receivers: dict[str, ProcessEvents] = {}
        self.specs: dict[str, ProcessSpec] = {}
        self.log: dict[str, list[_Ev]] = {}
        self.reads: list[tuple[str, int | None, str]] = []  # id, after_seq, thread name
        self.writes: list[bytes] = []
        self.write_status: WriteStatus = "accepted"
        self.calls: list[str] = []
        self.released: list[str] = []
        self.on_start: Callable[[str, ProcessEvents], None] | None = None
        self.evicted_below = 0  # read() pretends chunks below this seq were evicted

    @property
    def can_close_stdin(self) -> bool:
        return self._can_close_stdin

    @property
    def can_interrupt(self) -> bool:
        return self._can_interrupt

    def start(
        self,
        process_id: str,
        spec: ProcessSpec,
        events: ProcessEvents,
        *,
        timeout: Timeoutish = UNSET,
    ) -> None:
        self.receivers[process_id] = events
        self.specs[process_id] = spec
        self.log.setdefault(process_id, [])
        if self.on_start is not None:
            self.on_start(process_id, events)

    def write(self, process_id: str, data: bytes, *, timeout: Timeoutish = UNSET) -> WriteStatus:
        self.writes.append(data)
        return self.write_status

    def close_stdin(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        if not self._can_close_stdin:
            raise errors.UnsupportedByServer("close_stdin")
        self.calls.append("close_stdin")

    def interrupt(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        if not self._can_interrupt:
            raise errors.UnsupportedByServer("interrupt (process/signal)", "G1")
        self.calls.append("interrupt")

    def terminate(self, process_id: str, *, timeout: Timeoutish = UNSET) -> bool:
        self.calls.append("terminate")
        return True

    def read(
        self,
        process_id: str,
        *,
        after_seq: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int | None = None,
        timeout: Timeoutish = UNSET,
    ) -> ReadResult:
        self.reads.append((process_id, after_seq, threading.current_thread().name))
        if process_id not in self.log:
            raise errors.ProcessNotFound(f"unknown process id {process_id}")
        events = self.log[process_id]
        after = after_seq or 0
        chunks = tuple(
            OutputChunk(payload[0], payload[1], seq)  # type: ignore[index]
            for kind, seq, payload in events
            if kind == "out" and seq > after and seq >= self.evicted_below
        )
        exits = [payload for kind, _, payload in events if kind == "exit"]
        closed = any(kind == "closed" for kind, _, _ in events)
        last = max((seq for _, seq, _ in events), default=0)
        return ReadResult(
            chunks=chunks,
            next_seq=last + 1,
            exited=bool(exits),
            exit_code=exits[0] if exits else None,  # type: ignore[arg-type]
            closed=closed,
        )

    def release(self, process_id: str) -> None:
        self.released.append(process_id)

    # -- test helpers

    def script(self, process_id: str, events: list[_Ev]) -> None:
        """Record the server's truth for ``read``."""
        self.log[process_id] = sorted(events, key=lambda e: e[1])

    def deliver(self, process_id: str, events: list[_Ev]) -> None:
        """Push events into the receiver, in the given order, from the calling thread."""
        rec = self.receivers[process_id]
        for kind, seq, payload in events:
            if kind == "out":
                stream, data = cast("tuple[Stream, bytes]", payload)
                rec.on_output(seq, stream, data)
            elif kind == "exit":
                rec.on_exited(seq, cast(int, payload))
            else:
                rec.on_closed(seq)

    def deliver_from_thread(self, process_id: str, events: list[_Ev]) -> str:
        """Deliver on a separate "reader" thread and return that thread's name."""
        t = threading.Thread(
            target=self.deliver, args=(process_id, events), name="fake-reader", daemon=True
        )
        t.start()
        t.join(5)
        assert not t.is_alive()
        return t.name


def out(seq: int, data: bytes, stream: Stream = "stdout") -> _Ev:
    return ("out", seq, (stream, data))


def exited(seq: int, code: int) -> _Ev:
    return ("exit", seq, code)


def closed(seq: int) -> _Ev:
    return ("closed", seq, None)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def dispatcher() -> Iterator[CallbackDispatcher]:
    d = CallbackDispatcher()
    yield d
    d.close()


def make(
    backend: FakeBackend,
    argv: list[str] | None = None,
    *,
    tty: bool = False,
    stdin: bool = False,
    **kwargs: object,
) -> Process:
    spec = ProcessSpec(argv or ["prog"], cwd="/", tty=tty, pipe_stdin=stdin)
    proc = Process(backend, spec, default_timeout=5.0, **kwargs)  # type: ignore[arg-type]
    return proc.start()


# --------------------------------------------------------------------------- ordering


def test_out_of_order_events_are_applied_in_seq_order(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver_from_thread(
        proc.id, [out(3, b"c"), out(1, b"a"), closed(5), exited(4, 0), out(2, b"b")]
    )
    assert proc.communicate(timeout=5) == (b"abc", b"")
    assert backend.reads == []


def test_duplicate_events_are_dropped(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver_from_thread(
        proc.id,
        [
            *(out(1, b"a"), out(1, b"a"), out(3, b"c"), out(2, b"b"), out(3, b"c")),
            *(out(2, b"b"), exited(4, 0), exited(4, 0), closed(5), closed(5)),
        ],
    )
    chunks = list(proc.output(timeout=5))
    assert [(c.seq, c.data) for c in chunks] == [(1, b"a"), (2, b"b"), (3, b"c")]


def test_gap_is_filled_by_read_on_the_consumer_thread_after_close(backend: FakeBackend) -> None:
    proc = make(backend)
    truth = [out(1, b"a"), out(2, b"b"), out(3, b"c"), out(4, b"d"), exited(5, 3), closed(6)]
    backend.script(proc.id, truth)
    reader = backend.deliver_from_thread(proc.id, [e for e in truth if e[1] != 3])
    assert proc.communicate(timeout=5) == (b"abcd", b"")
    assert proc.returncode == 3
    assert backend.reads, "the gap at seq 3 must be filled with read()"
    assert backend.reads[0][:2] == (proc.id, 2)
    assert all(name != reader for _, _, name in backend.reads)
    assert backend.reads[0][2] == threading.current_thread().name


def test_gap_without_close_is_filled_once_it_stays_open(backend: FakeBackend) -> None:
    proc = make(backend)
    proc._gap_wait = 0.05
    truth = [out(1, b"a"), out(2, b"b"), out(3, b"c"), out(4, b"d")]
    backend.script(proc.id, truth)
    backend.deliver(proc.id, [out(1, b"a"), out(3, b"c"), out(4, b"d")])
    seen: list[bytes] = []
    it = proc.output(timeout=5)
    for _ in range(4):
        seen.append(next(it).data)
    assert seen == [b"a", b"b", b"c", b"d"]
    assert backend.reads and backend.reads[0][1] == 1
    backend.deliver(proc.id, [exited(5, 0), closed(6)])
    assert list(it) == []


def test_exit_code_is_known_before_the_last_output(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver(proc.id, [out(1, b"first "), exited(2, 7)])
    assert proc.wait(timeout=1) == 7
    assert proc.poll() == 7
    with pytest.raises(errors.TimeoutExpired) as info:
        proc.communicate(timeout=0.1)
    assert info.value.output == b"first "
    backend.deliver(proc.id, [out(3, b"last"), closed(4)])
    assert proc.communicate(timeout=5) == (b"first last", b"")


def test_gap_holding_the_exit_event_is_filled_for_wait(backend: FakeBackend) -> None:
    proc = make(backend)
    proc._gap_wait = 0.05
    backend.script(proc.id, [out(1, b"x"), exited(2, 5), closed(3)])
    backend.deliver(proc.id, [out(1, b"x"), closed(3)])
    assert proc.wait(timeout=5) == 5
    assert proc.communicate(timeout=5) == (b"x", b"")


def test_resync_rereads_events_lost_without_a_visible_gap(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.script(proc.id, [out(1, b"a"), out(2, b"b"), exited(3, 9), closed(4)])
    backend.deliver(proc.id, [out(1, b"a")])  # the rest was lost, e.g. across a reconnect
    proc._events.on_resync()
    assert proc.wait(timeout=5) == 9
    assert proc.communicate(timeout=5) == (b"ab", b"")
    assert backend.reads[0][1] == 1


def test_events_before_start_returns_are_kept(backend: FakeBackend) -> None:
    def early(process_id: str, events: ProcessEvents) -> None:
        events.on_output(1, "stdout", b"early")
        events.on_exited(2, 0)
        events.on_closed(3)

    backend.on_start = early
    proc = make(backend)
    assert proc.communicate(timeout=5) == (b"early", b"")


def test_evicted_output_raises_output_lost_after_what_came_before(
    backend: FakeBackend,
) -> None:
    proc = make(backend)
    truth = [out(i, bytes([96 + i])) for i in range(1, 9)] + [exited(9, 0), closed(10)]
    backend.script(proc.id, truth)
    backend.evicted_below = 5  # the server kept only seq 5..8
    backend.deliver(proc.id, [out(1, b"a"), closed(10)])
    with pytest.raises(errors.OutputLost) as info:
        proc.communicate(timeout=5)
    lost = info.value
    assert (lost.stdout, lost.stderr) == (b"a", b"")
    assert (lost.chunks, lost.first_seq, lost.last_seq) == (3, 2, 4)
    assert lost.streams == ("stdout", "stderr")
    assert lost.process_id == proc.id
    assert "3 output chunk(s)" in str(lost)
    # A second call goes on after the gap; the loss stays visible on the process.
    assert proc.communicate(timeout=5) == (b"efgh", b"")
    assert proc.returncode == 0
    assert proc.output_lost is not None and proc.output_lost.chunks == 3
    assert "3 output chunk(s) lost" in repr(proc)


def test_exit_event_in_the_evicted_range_is_not_counted_as_output(
    backend: FakeBackend,
) -> None:
    proc = make(backend)
    # The exit took seq 3, among chunks the server evicted (1..4); it kept 5 and 6.
    truth = [out(1, b"a"), out(2, b"b"), exited(3, 0), out(4, b"d")]
    truth += [out(5, b"e"), out(6, b"f"), closed(7)]
    backend.script(proc.id, truth)
    backend.evicted_below = 5
    backend.deliver(proc.id, [out(1, b"a"), closed(7)])
    chunks: list[bytes] = []
    with pytest.raises(errors.OutputLost) as info:
        for chunk in proc.output(timeout=5):
            chunks.append(chunk.data)
    assert chunks == [b"a"]
    assert info.value.chunks == 2  # seq 2 and 4; seq 3 was the exit
    assert [c.data for c in proc.output(timeout=5)] == [b"e", b"f"]


def test_exit_after_the_retained_chunks_leaves_the_whole_range_lost(
    backend: FakeBackend,
) -> None:
    proc = make(backend)
    truth = [out(i, b"x") for i in range(1, 7)] + [exited(7, 0), closed(8)]
    backend.script(proc.id, truth)
    backend.evicted_below = 4
    backend.deliver(proc.id, [out(1, b"x"), closed(8)])
    with pytest.raises(errors.OutputLost) as info:
        proc.communicate(timeout=5)
    assert info.value.chunks == 2  # seq 2 and 3


def test_a_resync_that_finds_everything_raises_nothing(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.script(proc.id, [out(1, b"a"), out(2, b"b"), exited(3, 0), closed(4)])
    backend.deliver(proc.id, [out(1, b"a")])
    proc._events.on_resync()
    assert proc.communicate(timeout=5) == (b"ab", b"")
    assert proc.output_lost is None


def test_iter_lines_yields_the_text_before_a_gap_then_raises(backend: FakeBackend) -> None:
    proc = make(backend)
    truth = [out(1, b"one\ntw"), out(2, b"lost\n"), out(3, b"three\n"), closed(4)]
    backend.script(proc.id, truth)
    backend.evicted_below = 3
    backend.deliver(proc.id, [out(1, b"one\ntw"), closed(4)])
    lines: list[str] = []
    with pytest.raises(errors.OutputLost):
        for line in proc.iter_lines(timeout=5):
            lines.append(line)
    assert lines == ["one", "tw"]
    assert list(proc.iter_lines(timeout=5)) == ["three"]


def _interleaved() -> list[_Ev]:
    """stdout and stderr lines taking turns, then the close."""
    return [
        out(1, b"o1\n"),
        out(2, b"e1\n", "stderr"),
        out(3, b"o2\n"),
        out(4, b"e2\n", "stderr"),
        out(5, b"o3\n"),
        closed(6),
    ]


def test_iter_lines_keeps_the_other_stream_for_later_readers(backend: FakeBackend) -> None:
    proc = make(backend)
    events = _interleaved()
    backend.script(proc.id, events)
    backend.deliver(proc.id, events)
    assert list(proc.iter_lines("stdout", timeout=5)) == ["o1", "o2", "o3"]
    assert list(proc.iter_lines("stderr", timeout=5)) == ["e1", "e2"]


def test_a_stopped_one_stream_reader_leaves_every_chunk_in_order(backend: FakeBackend) -> None:
    proc = make(backend)
    events = _interleaved()
    backend.script(proc.id, events)
    backend.deliver(proc.id, events)
    lines = proc.iter_lines("stdout", timeout=5)
    assert next(lines) == "o1"
    lines.close()  # stops after the first line: o2 and o3 are put back
    assert [c.seq for c in proc.output(timeout=5)] == [2, 3, 4, 5]


def test_unknown_process_on_fill_drains_what_is_held(backend: FakeBackend) -> None:
    proc = make(backend)
    del backend.log[proc.id]
    backend.deliver(proc.id, [out(1, b"a"), exited(3, 0), closed(4)])
    # Seq 2 is neither the exit (3) nor the close (4): output nobody can read any more.
    with pytest.raises(errors.OutputLost) as info:
        proc.communicate(timeout=5)
    assert info.value.stdout == b"a"
    assert info.value.chunks == 1
    assert proc.communicate(timeout=5) == (b"", b"")


# --------------------------------------------------------------------------- lost


def test_on_lost_wakes_a_waiter_with_a_fresh_chained_error(backend: FakeBackend) -> None:
    proc = make(backend)
    cause = errors.ConnectionLost("link dropped")
    caught: list[BaseException] = []

    def waiter() -> None:
        try:
            proc.wait()
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: waiting_in(t, "_wait_until"), 5, "wait() is not waiting")
    proc._events.on_lost(cause)
    t.join(5)
    assert not t.is_alive()
    assert len(caught) == 1
    assert isinstance(caught[0], errors.ConnectionLost)
    assert caught[0] is not cause and caught[0].__cause__ is cause


def test_output_before_loss_is_still_yielded(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver(proc.id, [out(1, b"kept")])
    proc._events.on_lost(errors.ConnectionClosed("closed"))
    it = proc.output(timeout=5)
    assert next(it).data == b"kept"
    with pytest.raises(errors.ConnectionClosed):
        next(it)


def test_loss_after_close_is_ignored(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver(proc.id, [out(1, b"x"), exited(2, 0), closed(3)])
    proc._events.on_lost(errors.ConnectionLost("late"))
    assert proc.communicate(timeout=1) == (b"x", b"")
    assert proc.wait(timeout=1) == 0


# --------------------------------------------------------------------------- buffering


def test_tiny_budget_spills_to_disk_byte_exact(backend: FakeBackend) -> None:
    rng = random.Random(7)
    data = rng.randbytes(5_000_000)
    proc = make(backend, output_budget=64 * 1024)
    seq = 0
    events: list[_Ev] = []
    for i in range(0, len(data), 8192):
        seq += 1
        events.append(out(seq, data[i : i + 8192], "stdout" if seq % 3 else "stderr"))
    events += [exited(seq + 1, 0), closed(seq + 2)]
    backend.deliver_from_thread(proc.id, events)
    buf = proc._buffer
    assert buf.spill_file is not None
    assert buf.memory_bytes <= 64 * 1024
    assert buf.spilled_total > 4_900_000
    stdout, stderr = proc.communicate(timeout=10)
    expected_out = b"".join(e[2][1] for e in events if e[0] == "out" and e[2][0] == "stdout")  # type: ignore[index]
    expected_err = b"".join(e[2][1] for e in events if e[0] == "out" and e[2][0] == "stderr")  # type: ignore[index]
    assert stdout == expected_out and stderr == expected_err
    assert len(stdout) + len(stderr) == len(data)
    assert buf.spilled_bytes == 0 and buf.memory_bytes == 0


def test_output_buffer_keeps_order_across_memory_and_disk() -> None:
    rng = random.Random(3)
    buf = OutputBuffer(10_000)
    expected: list[OutputChunk] = []
    got: list[OutputChunk] = []
    seq = 0
    for _ in range(2000):
        if rng.random() < 0.6:
            seq += 1
            chunk = OutputChunk(
                rng.choice(["stdout", "stderr", "pty"]), rng.randbytes(rng.randrange(0, 3000)), seq
            )
            buf.append(chunk)
            expected.append(chunk)
        else:
            taken = buf.pop(rng.randrange(1, 8000))
            if taken and rng.random() < 0.2:
                buf.push_front(taken[1:])  # a consumer that stopped early
                taken = taken[:1]
            got.extend(taken)
        assert buf.memory_bytes <= 10_000 + 3000 * 3
    while buf:
        got.extend(buf.pop())
    assert got == expected
    assert buf.spilled_total > 0
    buf.clear()


def test_output_buffer_falls_back_to_memory_when_the_disk_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    buf = OutputBuffer(100)
    chunks = [OutputChunk("stdout", bytes([i]) * 60, i) for i in range(1, 11)]
    for chunk in chunks[:5]:
        buf.append(chunk)
    assert buf.spilled_bytes > 0

    def disk_full(chunk: OutputChunk) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(buf, "_spill", disk_full)
    for chunk in chunks[5:]:
        buf.append(chunk)
    assert buf.spill_file is None and buf.spilled_bytes == 0
    got: list[OutputChunk] = []
    while buf:
        got.extend(buf.pop())
    assert got == chunks
    assert "keeping all output in memory" in caplog.text


def test_abandoned_output_iterator_loses_nothing(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver(proc.id, [out(i, b"%d," % i) for i in range(1, 11)])
    for chunk in proc.output(timeout=1):
        assert chunk.data == b"1,"
        break
    backend.deliver(proc.id, [exited(11, 0), closed(12)])
    assert proc.communicate(timeout=1)[0] == b"".join(b"%d," % i for i in range(2, 11))


# --------------------------------------------------------------------------- lines


def test_iter_lines_joins_utf8_characters_split_across_chunks(backend: FakeBackend) -> None:
    proc = make(backend)
    text = "héllo wörld\n€uro 日本\nlast"
    raw = text.encode()
    pieces = [raw[i : i + 1] for i in range(len(raw))]  # every byte its own chunk
    events = [out(i + 1, p) for i, p in enumerate(pieces)]
    events.insert(3, ("out", 1000, ("stderr", b"noise\n")))  # renumbered below
    numbered = [(k, i + 1, p) for i, (k, _, p) in enumerate(events)]
    n = len(numbered)
    backend.deliver(proc.id, [*numbered, exited(n + 1, 0), closed(n + 2)])
    assert list(proc.iter_lines(timeout=5)) == ["héllo wörld", "€uro 日本", "last"]


def test_iter_lines_keepends_and_stderr(backend: FakeBackend) -> None:
    proc = make(backend)
    backend.deliver(
        proc.id,
        [
            *(out(1, b"o1\n"), out(2, b"e1\ne", "stderr"), out(3, b"2\n", "stderr")),
            *(exited(4, 0), closed(5)),
        ],
    )
    assert list(proc.iter_lines("stderr", keepends=True, timeout=5)) == ["e1\n", "e2\n"]


def test_iter_lines_on_a_tty_reads_pty_and_drops_cr(backend: FakeBackend) -> None:
    proc = make(backend, tty=True)
    backend.deliver(
        proc.id,
        [
            *(out(1, b"one\r", "pty"), out(2, b"\ntwo\r\nthr", "pty")),
            *(out(3, b"ee\r\n", "pty"), exited(4, 0), closed(5)),
        ],
    )
    assert list(proc.iter_lines(timeout=5)) == ["one", "two", "three"]


# --------------------------------------------------------------------------- callbacks


def test_callbacks_run_on_the_dispatcher_thread_in_order(
    backend: FakeBackend, dispatcher: CallbackDispatcher
) -> None:
    seen: list[tuple[str, object, str]] = []
    done = threading.Event()

    def on_output(chunk: OutputChunk) -> None:
        seen.append(("out", chunk.data, threading.current_thread().name))

    def on_exit(code: int) -> None:
        seen.append(("exit", code, threading.current_thread().name))
        done.set()

    proc = make(backend, dispatcher=dispatcher, on_output=on_output, on_exit=on_exit)
    order = [out(2, b"b"), exited(3, 4), out(1, b"a"), out(5, b"d"), out(4, b"c"), closed(6)]
    reader = backend.deliver_from_thread(proc.id, order)
    assert done.wait(5)
    assert [(k, v) for k, v, _ in seen] == [
        ("out", b"a"),
        ("out", b"b"),
        ("out", b"c"),
        ("out", b"d"),
        ("exit", 4),
    ]
    assert {name for _, _, name in seen} == {dispatcher.thread.name}  # type: ignore[union-attr]
    assert reader not in {name for _, _, name in seen}
    # Chunks went to the callback only.
    assert proc.communicate(timeout=1) == (b"", b"")


def test_callback_gap_is_filled_on_the_dispatcher_without_a_consumer(
    backend: FakeBackend, dispatcher: CallbackDispatcher
) -> None:
    got: list[bytes] = []
    done = threading.Event()
    proc = make(
        backend,
        dispatcher=dispatcher,
        on_output=lambda c: got.append(c.data),
        on_exit=lambda code: done.set(),
    )
    truth = [out(1, b"a"), out(2, b"b"), out(3, b"c"), exited(4, 0), closed(5)]
    backend.script(proc.id, truth)
    reader = backend.deliver_from_thread(proc.id, [e for e in truth if e[1] != 2])
    assert done.wait(5)
    assert got == [b"a", b"b", b"c"]
    assert backend.reads and all(name != reader for _, _, name in backend.reads)
    assert proc.id in backend.released


# --------------------------------------------------------------------------- control


def test_wait_timeout_raises_and_the_process_stays_usable(backend: FakeBackend) -> None:
    proc = make(backend, ["sleep", "5"])
    started = time.monotonic()
    with pytest.raises(errors.TimeoutExpired) as info:
        proc.wait(timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 2
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, subprocess.TimeoutExpired)
    assert proc.poll() is None
    assert repr(proc) == f"<Process {proc.id!r} ['sleep', '5'] running>"
    backend.deliver(proc.id, [out(1, b"z"), exited(2, 0), closed(3)])
    assert proc.wait(timeout=1) == 0
    assert repr(proc) == f"<Process {proc.id!r} ['sleep', '5'] exited 0>"


def test_write_maps_statuses_and_splits_large_data(backend: FakeBackend) -> None:
    proc = make(backend, stdin=True)
    data = b"x" * (2 * WRITE_PIECE + 10)
    assert proc.write(data) == len(data)
    assert [len(w) for w in backend.writes] == [WRITE_PIECE, WRITE_PIECE, 10]
    backend.write_status = "stdinClosed"
    with pytest.raises(errors.StdinClosed) as closed_info:
        proc.write(b"more")
    assert isinstance(closed_info.value, BrokenPipeError)
    backend.write_status = "unknownProcess"
    with pytest.raises(errors.ProcessNotFound):
        proc.write(b"more")


def test_communicate_input_needs_close_stdin() -> None:
    backend = FakeBackend(can_close_stdin=False)
    proc = make(backend, stdin=True)
    with pytest.raises(errors.UnsupportedByServer, match=r"run\(args, input=\.\.\.\)"):
        proc.communicate(b"data", timeout=1)
    assert backend.writes == []


def test_communicate_input_writes_then_closes_stdin(backend: FakeBackend) -> None:
    proc = make(backend, stdin=True)
    backend.deliver(proc.id, [out(1, b"echo")])
    later = [exited(2, 0), closed(3)]
    threading.Timer(0.1, backend.deliver, args=(proc.id, later)).start()
    assert proc.communicate(b"in", timeout=5) == (b"echo", b"")
    assert backend.writes == [b"in"]
    assert backend.calls == ["close_stdin"]


def test_interrupt_propagates_unsupported_by_server() -> None:
    backend = FakeBackend(can_interrupt=False)
    proc = make(backend)
    with pytest.raises(errors.UnsupportedByServer):
        proc.interrupt()


def test_terminate_and_kill_both_use_backend_terminate(backend: FakeBackend) -> None:
    proc = make(backend)
    proc.terminate()
    proc.kill()
    assert backend.calls == ["terminate", "terminate"]
    backend.deliver(proc.id, [exited(1, 137), closed(2)])
    assert proc.wait(timeout=1) == 137
    proc.kill()  # closed: nothing left to kill
    assert backend.calls == ["terminate", "terminate"]


def test_leaving_the_context_kills_and_releases(backend: FakeBackend) -> None:
    def kill_then_report(proc: Process) -> None:
        backend.deliver(proc.id, [exited(1, 137), closed(2)])

    with make(backend) as proc:
        pass_through = proc
        backend.on_start = None
        threading.Timer(0.1, kill_then_report, args=(proc,)).start()
    assert backend.calls[0] == "terminate"
    assert pass_through.returncode == 137
    assert backend.released == [pass_through.id]


def test_process_ids_are_random_hex(backend: FakeBackend) -> None:
    ids = {make(backend).id for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"p-[0-9a-f]{8}", i) for i in ids)


# --------------------------------------------------------------------------- Environment


def _info(tmp: str = "/tmp", shell: str = "/bin/bash") -> EnvironmentInfo:
    return EnvironmentInfo(
        os="linux", shell=shell, cwd="/srv/app", home="/root", temp_dir=tmp, generation="G2"
    )


def _fake_env(backend: FakeBackend, dispatcher: CallbackDispatcher) -> Environment:
    return Environment(
        processes=backend,
        fs_backend=None,  # type: ignore[arg-type]
        info=_info(),
        dispatcher=dispatcher,
        timeout=5.0,
    )


def test_spawn_builds_spec_from_subprocess_arguments(
    backend: FakeBackend, dispatcher: CallbackDispatcher
) -> None:
    env = _fake_env(backend, dispatcher)
    p1 = env.spawn("echo $HOME", shell=True, cwd="sub/dir", env={"A": "1"})
    s1 = backend.specs[p1.id]
    assert s1.argv == ("/bin/bash", "-c", "echo $HOME")
    assert s1.cwd == "/srv/app/sub/dir"
    assert s1.env == {"A": "1"} and s1.env_policy == DEFAULT_ENV_POLICY
    p2 = env.spawn(["ls", Path("x")], cwd=Path("/abs"), replace_env=True, env={"B": "2"})
    s2 = backend.specs[p2.id]
    assert s2.argv == ("ls", "x") and s2.cwd == "/abs"
    assert s2.env == {"B": "2"} and s2.env_policy is None
    policy = EnvPolicy(inherit="core")
    p3 = env.spawn(["true"], env_policy=policy, stdin=True, tty=True)
    s3 = backend.specs[p3.id]
    assert s3.env_policy is policy and s3.pipe_stdin and s3.tty and s3.cwd == "/srv/app"
    with pytest.raises(ValueError):
        env.spawn(["true"], env_policy=policy, replace_env=True)


@pytest.fixture
def local_backend() -> Iterator[LocalProcessBackend]:
    b = LocalProcessBackend()
    yield b
    b.close()


class _NoCloseStdin(LocalProcessBackend):
    """The real local backend, pretending (like codex servers) it cannot close stdin."""

    @property
    def can_close_stdin(self) -> bool:
        return False


def test_run_input_is_staged_in_a_temp_file_when_stdin_cannot_close(
    tmp_path: Path, dispatcher: CallbackDispatcher
) -> None:
    from execsdk._local.disk import LocalFsBackend

    backend = _NoCloseStdin()
    fs_backend = LocalFsBackend()
    try:
        env = Environment(
            processes=backend,
            fs_backend=fs_backend,
            info=_info(tmp=str(tmp_path)),
            dispatcher=dispatcher,
        )
        data = os.urandom(300_000) + b'it\'s "quoted" $HOME `x`\n'
        result = env.run(["cat"], input=data, cwd="/")
        assert result.returncode == 0
        assert result.stdout == data
        assert list(tmp_path.iterdir()) == []  # the staged file is gone
        text = env.run(["sh", "-c", 'read a; echo "[$a]"'], input="héllo\n", text=True, cwd="/")
        assert text.stdout == "[héllo]\n"
    finally:
        backend.close()
        close = getattr(fs_backend, "close", None)
        if close is not None:
            close()


def test_run_with_a_real_backend_collects_and_checks(
    local_backend: LocalProcessBackend, dispatcher: CallbackDispatcher
) -> None:
    env = Environment(
        processes=local_backend,
        fs_backend=None,  # type: ignore[arg-type]
        info=_info(shell="/bin/sh"),
        dispatcher=dispatcher,
    )
    result = env.run("printf out; printf err >&2; exit 3", shell=True, cwd="/")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out", b"err")
    with pytest.raises(errors.CalledProcessError) as info:
        env.run(["sh", "-c", "printf 'a\\r\\nb'; exit 2"], check=True, text=True, cwd="/")
    assert isinstance(info.value, subprocess.CalledProcessError)
    assert (info.value.returncode, info.value.stdout) == (2, "a\nb")


# --------------------------------------------------------------------------- memory


_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time
    from execsdk.environment import Environment
    from execsdk._callbacks import CallbackDispatcher
    from execsdk._local.processes import LocalProcessBackend
    from execsdk.backends import EnvironmentInfo

    MiB = 2**20
    size = int(sys.argv[1]) * MiB
    pattern = bytes(range(256)) * 4096
    gen = ("import sys\\nb = bytes(range(256)) * 4096\\nw = sys.stdout.buffer.write\\n"
           f"for i in range({size} // len(b)): w(b)\\n")
    info = EnvironmentInfo(os="linux", shell="/bin/sh", cwd="/", home="/", temp_dir="/tmp",
                           generation="local")
    backend = LocalProcessBackend()
    disp = CallbackDispatcher()
    env = Environment(processes=backend, fs_backend=None, info=info, dispatcher=disp,
                      output_budget=16 * MiB)

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def current():
        return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()

    def exact(data):  # no second 200 MiB copy just to compare
        return len(data) == size and data.count(pattern) * len(pattern) == size

    base_peak, base = peak(), current()
    out = env.run([sys.executable, "-c", gen], timeout=120).stdout
    ok = exact(out)
    run_peak = peak() - base_peak
    del out
    # A consumer that does not read until the process has closed: costs disk, not RAM.
    proc = env.spawn([sys.executable, "-c", gen])
    assert proc.wait(timeout=120) == 0
    # Wait until the backend and the Process both saw the end (the I/O thread hands it over).
    while not (backend.read(proc.id, after_seq=10**9).closed and proc._closed):
        time.sleep(0.05)
    idle = current() - base
    spilled = proc._buffer.spilled_total
    stdout, stderr = proc.communicate(timeout=120)
    ok = ok and exact(stdout) and stderr == b""
    print(ok, run_peak, idle, spilled, peak() - base_peak)
    backend.close()
    disp.close()
    """
)


@pytest.mark.timeout(120)
def test_unread_output_spills_and_run_peak_rss_stays_near_output_size() -> None:
    size_mib = 200
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(size_mib)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    ok, run_peak, idle, spilled, peak = proc.stdout.split()
    size = size_mib * 2**20
    assert ok == "True"
    assert int(run_peak) < 2 * size  # run(): the collected output plus overhead, under 2x
    assert int(spilled) >= size - 16 * 2**20 - 8192  # all but the budget went to disk
    assert int(idle) < 16 * 2**20 + 40 * 2**20  # budget plus slack, not 200 MiB
    assert int(peak) < 2 * size
