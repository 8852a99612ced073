"""The ``Process`` facade: one started process, in the vocabulary of :mod:`subprocess`.

A ``Process`` talks only to a :class:`~execsdk.backends.ProcessBackend` and registers itself
as that backend's :class:`~execsdk.backends.ProcessEvents` receiver, so local and remote
processes behave the same. Events carry one seq counter per process (PROTOCOL.md §4); the
facade applies them strictly in seq order: duplicates are dropped, early events are held until
the gap before them fills, and a gap that stays open is filled with ``backend.read`` from a
consumer's thread (or the dispatcher thread), never from the backend's I/O thread.

Output that nobody has consumed yet stays in memory up to ``output_budget`` bytes and spills to
a temporary file beyond that, so a process whose output is never read costs disk, not RAM, and
nothing is ever dropped.

Timeouts: ``wait``, ``communicate``, ``output`` and ``iter_lines`` wait without limit unless
``timeout=`` is given (a process may legitimately run for hours), like :mod:`subprocess`.
Short control calls (``write``, ``close_stdin``, ``interrupt``, ``terminate``) use the
environment's default timeout unless ``timeout=`` is given.
"""

from __future__ import annotations

import codecs
import collections
import functools
import io
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from execsdk import errors
from execsdk._callbacks import CallbackDispatcher, callback_name
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk._outbuffer import OutputBuffer
from execsdk.backends import OutputChunk, ProcessBackend, ProcessSpec, ReadResult, Stream

__all__ = ["DEFAULT_OUTPUT_BUDGET", "Process", "new_process_id"]

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_BUDGET = 64 * 2**20
"""Bytes of unconsumed output a process keeps in memory before spilling to a temp file."""

WRITE_PIECE = 1 << 20
"""Largest single ``backend.write``; bigger inputs are sent in pieces of this size."""

ProcessArgs = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""An argv list, or one string (a command line with ``shell=True``)."""
OnOutput = Callable[[OutputChunk], object]
OnExit = Callable[[int], object]

# Event kinds held while waiting for a gap to fill.
_OUT = 0
_EXIT = 1
_CLOSED = 2
_Event = tuple[int, Stream, bytes, int]  # kind, stream, data, exit code


def new_process_id() -> str:
    """A fresh process id: ``p-`` and 8 random hex digits."""
    return f"p-{secrets.token_hex(4)}"


class Process:
    """A process started in an environment (created by ``Environment.spawn``).

    Thread-safety: safe to share between threads; output is consumed by one reader at a time
    (``output``, ``iter_lines`` and ``communicate`` take chunks away from each other).

    ``poll()``/``wait()`` report the exit code as soon as it is known; ``communicate()``,
    ``output()`` and ``iter_lines()`` end, and ``on_exit`` fires, only once every output chunk
    has been delivered. A process killed by signal N reports ``128 + N`` (servers of generation
    G1 report ``-1``). When ``on_output`` is given, chunks go to that callback only and are not
    kept for ``output()``/``communicate()``. Callbacks run on the environment's dispatcher
    thread, in seq order.
    """

    _gap_wait: float = 1.0
    """Seconds an out-of-order gap may stay open before a consumer fills it with a read."""

    _max_held: int = 256
    """Events held behind a gap before the gap is filled without waiting for ``_gap_wait``."""

    def __init__(
        self,
        backend: ProcessBackend,
        spec: ProcessSpec,
        *,
        args: ProcessArgs | None = None,
        process_id: str | None = None,
        dispatcher: CallbackDispatcher | None = None,
        default_timeout: float | None = 30.0,
        output_budget: int = DEFAULT_OUTPUT_BUDGET,
        on_output: OnOutput | None = None,
        on_exit: OnExit | None = None,
    ) -> None:
        """Prepare (but do not start) a process; :meth:`start` starts it."""
        if (on_output is not None or on_exit is not None) and dispatcher is None:
            raise ValueError("on_output/on_exit need a dispatcher to run on")
        self.id: str = process_id if process_id is not None else new_process_id()
        self.args: ProcessArgs = list(spec.argv) if args is None else args
        self.spec = spec
        self._backend = backend
        self._dispatcher = dispatcher
        self._timeout = default_timeout
        self._on_output = on_output
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Ordering state (guarded by _lock).
        self._next_seq = 1
        self._held: dict[int, _Event] = {}
        self._gap_since = 0.0
        self._fill_not_before = 0.0
        self._filling = False
        self._fill_scheduled = False
        self._resync = False
        # Lifecycle state (guarded by _lock).
        self._returncode: int | None = None
        self._closed_seen = False
        self._closed = False
        self._lost: BaseException | None = None
        self._exit_seq: int | None = None  # seq of the exited event, once seen
        # Output that cannot be recovered: raised in order by the delivering calls.
        self._gaps: collections.deque[errors.OutputLost] = collections.deque()
        self._output_lost: errors.OutputLost | None = None
        ack_every = getattr(backend, "ack_every", None)
        self._ack_every: int = ack_every if isinstance(ack_every, int) else 0
        self._unacked = 0
        self._events = _Receiver(self)
        self._started = False
        self._released = False
        self._waiters = 0
        self._buffer = OutputBuffer(output_budget)
        # Chunks of other streams that a one-stream reader (iter_lines) passed over, kept for
        # later readers: every one has a lower seq than anything left in _buffer.
        self._aside: dict[Stream, OutputBuffer] = {}
        self._output_budget = output_budget
        # communicate() keeps what it collected so a retry after a timeout loses nothing.
        self._comm_out = io.BytesIO()
        self._comm_err = io.BytesIO()
        self._stdin_closed = False

    # ------------------------------------------------------------------ starting

    def start(self, *, timeout: Timeoutish = UNSET) -> Process:
        """Start the process on the backend (the environment's default timeout applies).

        Events may arrive before this returns; the object is complete before the call.
        Raises ``FileNotFoundError`` for a missing executable or cwd (from the backend).
        """
        with self._lock:
            if self._started:
                raise RuntimeError(f"process {self.id} was already started")
            self._started = True
        try:
            self._backend.start(
                self.id,
                self.spec,
                events=self._events,
                timeout=resolve_timeout(timeout, self._timeout),
            )
        except BaseException:
            self._release()
            raise
        log.debug("started %s %.200r", self.id, self.args)
        return self

    # ------------------------------------------------------------------ ProcessEvents
    # Called through _Receiver on the backend's I/O thread: quick, never blocking, never
    # raising.

    def _event_output(self, seq: int, stream: Stream, data: bytes) -> None:
        """Receive one output chunk (backend I/O thread)."""
        try:
            with self._lock:
                self._accept(seq, (_OUT, stream, data, 0))
        except Exception:
            log.exception("process %s: dropping a failure in on_output", self.id)

    def _event_exited(self, seq: int, exit_code: int) -> None:
        """Receive the exit code (backend I/O thread); ``wait()`` reports it at once."""
        try:
            with self._lock:
                self._exit_seq = seq
                if self._returncode is None:
                    self._returncode = exit_code
                    self._cond.notify_all()
                self._accept(seq, (_EXIT, "stdout", b"", exit_code))
        except Exception:
            log.exception("process %s: dropping a failure in on_exited", self.id)

    def _event_closed(self, seq: int) -> None:
        """Receive the end of output (backend I/O thread)."""
        try:
            with self._lock:
                self._closed_seen = True
                self._accept(seq, (_CLOSED, "stdout", b"", 0))
        except Exception:
            log.exception("process %s: dropping a failure in on_closed", self.id)

    def _event_lost(self, exc: BaseException) -> None:
        """The backend can deliver nothing more: wake every waiter with ``exc``."""
        with self._lock:
            if self._closed or self._lost is not None:
                return
            self._lost = exc
            self._cond.notify_all()
        log.debug("process %s: events lost: %r", self.id, exc)

    def _event_resync(self) -> None:
        """Events may have been missed (e.g. across a reconnect): the next waiter re-reads.

        Not part of the ``ProcessEvents`` protocol; a backend may call it when it knows
        notifications were lost without a visible seq gap.
        """
        with self._lock:
            if self._closed:
                return
            self._resync = True
            self._fill_not_before = 0.0
            self._cond.notify_all()
            self._maybe_schedule_fill()

    # ------------------------------------------------------------------ ordering (under _lock)

    def _accept(self, seq: int, event: _Event) -> None:
        if seq < self._next_seq or seq in self._held or self._closed:
            return  # a duplicate (replayed, or seen through both a read and a notification)
        if seq > self._next_seq:
            if not self._held:
                self._gap_since = time.monotonic()
            self._held[seq] = event
            self._cond.notify_all()
            self._maybe_schedule_fill()
            return
        self._apply(seq, event)
        self._next_seq = seq + 1
        self._drain(0)
        self._cond.notify_all()

    def _drain(self, skip_below: int) -> int:
        """Apply held events in order, treating seqs below ``skip_below`` as absent (no data)."""
        skipped = 0
        while not self._closed:
            seq = self._next_seq
            event = self._held.pop(seq, None)
            if event is not None:
                self._apply(seq, event)
            elif seq < skip_below:
                skipped += 1
            else:
                break
            self._next_seq = seq + 1
        if self._closed:
            self._held.clear()
        if self._held:
            self._gap_since = time.monotonic()
        return skipped

    def _apply(self, seq: int, event: _Event) -> None:
        kind, stream, data, code = event
        if kind == _OUT:
            chunk = OutputChunk(stream, data, seq)
            if self._on_output is not None:
                self._submit(functools.partial(self._on_output, chunk))
            else:
                self._buffer.append(chunk)
            if self._ack_every:
                # Received in order up to here: the server may let these chunks go.
                self._unacked += len(data)
                if self._unacked >= self._ack_every:
                    self._unacked = 0
                    self._backend.acknowledge(self.id, seq)  # type: ignore[attr-defined]
        elif kind == _EXIT:
            if self._returncode is None:
                self._returncode = code
        else:
            self._apply_closed()

    def _apply_closed(self) -> None:
        self._closed = True
        self._held.clear()
        if self._returncode is None:
            log.warning("process %s closed without a known exit code", self.id)
        if self._on_exit is not None and self._returncode is not None:
            self._submit(functools.partial(self._on_exit, self._returncode))
        if self._dispatcher is not None:
            # Nothing follows "closed", so the backend may forget us now (it would otherwise
            # keep this object and its buffered output alive for its retention period). Done
            # on the dispatcher: never call the backend from its own I/O thread. A closed
            # dispatcher (environment closing) is fine: the consumer or __exit__ releases.
            self._dispatcher.submit(self._release, critical=True)

    def _submit(self, fn: Callable[[], object]) -> None:
        assert self._dispatcher is not None
        if not self._dispatcher.submit(fn, critical=True):
            log.warning(
                "process %s: dispatcher closed, callback %s not run", self.id, callback_name(fn)
            )

    def _needs_fill(self, now: float) -> bool:
        if self._closed or self._filling or now < self._fill_not_before:
            return False
        if self._resync:
            return True
        if not self._held:
            return False
        return (
            self._closed_seen
            or now - self._gap_since >= self._gap_wait
            or len(self._held) > self._max_held
        )

    def _maybe_schedule_fill(self) -> None:
        """From a receiver: when no consumer waits, fill a stale gap on the dispatcher."""
        if self._waiters or self._fill_scheduled or self._dispatcher is None:
            return
        if not self._needs_fill(time.monotonic()):
            return
        self._fill_scheduled = True
        if not self._dispatcher.submit(self._fill_in_background, critical=True):
            self._fill_scheduled = False

    def _fill_in_background(self) -> None:
        with self._lock:
            self._fill_scheduled = False
            if self._closed or self._filling or not (self._held or self._resync):
                return
            try:
                self._fill(Deadline(self._timeout))
            except Exception as exc:
                log.warning("process %s: filling an output gap failed: %r", self.id, exc)

    def _fill(self, deadline: Deadline) -> None:
        """Fill the gap at ``next_seq`` with ``backend.read``. Called and returns under _lock."""
        self._filling = True
        self._resync = False
        after = self._next_seq - 1
        result: ReadResult | None = None
        failure: BaseException | None = None
        self._lock.release()
        try:
            result = self._backend.read(
                self.id, after_seq=after, timeout=self._rpc_timeout(deadline)
            )
        except errors.ProcessNotFound as exc:
            failure = exc
        finally:
            self._lock.acquire()
            self._filling = False
            self._cond.notify_all()
        if result is None:
            # The backend forgot the process: what is held is all there will ever be.
            log.warning(
                "process %s: output after seq %d cannot be recovered (%s)", self.id, after, failure
            )
            skipped = self._drain(max(self._held, default=0) + 1)
            # One of the skipped seqs may be the exit event, which is not output.
            lost = skipped - (0 if self._exit_seq is not None else 1)
            if lost > 0:
                self._record_loss(lost, after + 1, after + skipped)
            if not self._closed:
                assert failure is not None
                raise failure
            return
        self._merge(result)

    def _merge(self, result: ReadResult) -> None:
        before = self._next_seq
        lost, last = self._count_lost(result, before)
        for chunk in result.chunks:
            if chunk.seq >= self._next_seq and chunk.seq not in self._held:
                self._held[chunk.seq] = (_OUT, chunk.stream, chunk.data, 0)
        # Seqs below the newest retained chunk that the read did not return are no output
        # (exited/closed are not chunks; PROTOCOL.md §4.5) or output the server evicted.
        skip_below = max((c.seq for c in result.chunks), default=0) + 1
        if result.exited and result.exit_code is not None and self._returncode is None:
            self._returncode = result.exit_code
        if result.closed:
            skip_below = max(skip_below, result.next_seq, max(self._held, default=0) + 1)
        skipped = self._drain(skip_below)
        if result.closed and not self._closed:
            self._apply_closed()
        if lost > 0 and skipped:
            self._record_loss(lost, before, last)
        if self._next_seq == before and not self._closed:
            # No progress: let notifications catch up before reading again.
            self._fill_not_before = time.monotonic() + self._gap_wait
        else:
            self._fill_not_before = 0.0
        self._cond.notify_all()

    def _count_lost(self, result: ReadResult, before: int) -> tuple[int, int]:
        """How many output chunks from seq ``before`` on the server no longer has, by this
        read's answer; and the last seq of that range. Under _lock.

        A server evicts the oldest output first (PROTOCOL.md §4.5), so what is gone is the
        range from ``before`` up to the first chunk it still returns (or, with none returned,
        to its ``nextSeq``). Seqs of that range the facade already holds are not lost; the
        closed event and the exit event, which are not chunks, may sit in it and are not
        counted. When the exit's seq cannot be placed (a G1 server's ``nextSeq`` stops at its
        last chunk), it is assumed to be in the range: a count is a lower bound.
        """
        seqs = sorted(c.seq for c in result.chunks if c.seq >= before)
        end = seqs[0] if seqs else result.next_seq
        if end <= before:
            return 0, 0
        held = sum(1 for q in self._held if before <= q < end)
        missing = end - before - held
        exit_unplaced = result.exited and self._exit_seq is None
        if not seqs:
            missing -= int(result.closed) + int(exit_unplaced)
        elif exit_unplaced:
            present = set(seqs).union(q for q in self._held if q > seqs[0])
            inner = seqs[-1] - seqs[0] + 1 - sum(1 for q in present if q <= seqs[-1])
            tail = result.next_seq - 1 - seqs[-1] - int(result.closed)
            if inner <= 0 and tail <= 0:
                missing -= 1
        return max(missing, 0), end - 1

    def _record_loss(self, lost: int, first: int, last: int) -> None:
        """Output seqs ``first``..``last`` (``lost`` chunks of them) are gone. Under _lock."""
        streams: tuple[str, ...] = ("pty",) if self.spec.tty else ("stdout", "stderr")
        gap = errors.OutputLost(
            f"process {self.id}: {lost} output chunk(s) (seq {first} to {last}, up to "
            f"{lost * 8} KiB of {' or '.join(streams)}) were lost; the server kept only the "
            "last part of the output while the connection was down",
            process_id=self.id,
            chunks=lost,
            first_seq=first,
            last_seq=last,
            streams=streams,
        )
        log.warning("%s", gap)
        self._gaps.append(gap)
        total = self._output_lost
        if total is None:
            self._output_lost = gap
        else:
            self._output_lost = errors.OutputLost(
                f"process {self.id}: {total.chunks + lost} output chunk(s) were lost in "
                f"{len(self._gaps)} gap(s) between seq {total.first_seq} and {last}",
                process_id=self.id,
                chunks=total.chunks + lost,
                first_seq=total.first_seq,
                last_seq=last,
                streams=streams,
            )
        self._cond.notify_all()

    def _wait_until(self, ready: Callable[[], bool], deadline: Deadline) -> bool:
        """Wait under _lock until ``ready()``; False on timeout. Fills gaps, raises on loss."""
        self._waiters += 1
        try:
            while not ready():
                if self._lost is not None:
                    raise self._lost_error()
                now = time.monotonic()
                if self._needs_fill(now):
                    self._fill(deadline)
                    continue
                left = deadline.left()
                if left is not None and left <= 0:
                    return False
                wait = left
                if (self._held or self._resync) and not self._filling:
                    due = max(self._gap_since + self._gap_wait, self._fill_not_before) - now
                    wait = max(0.01, due) if wait is None else min(wait, max(0.01, due))
                self._cond.wait(wait)
            return True
        finally:
            self._waiters -= 1

    def _lost_error(self) -> BaseException:
        exc = self._lost
        assert exc is not None
        # One per waiter (tracebacks would pile up on a shared one), chained from the loss.
        return errors.fresh(exc, chain=True)

    # ------------------------------------------------------------------ status

    @property
    def returncode(self) -> int | None:
        """The exit code once known, else ``None`` (128+N for death by signal N; G1: -1)."""
        return self._returncode

    def poll(self) -> int | None:
        """The exit code if the process has exited, else ``None``. Never blocks."""
        return self._returncode

    def wait(self, *, timeout: Timeoutish = UNSET) -> int:
        """Wait for the process to exit and return its exit code.

        ``timeout`` unset or ``None`` waits without limit. Raises ``errors.TimeoutExpired``
        (the process keeps running and stays usable) and ``ConnectionLost`` when the backend
        can deliver nothing more.
        """
        limit = resolve_timeout(timeout, None)
        deadline = Deadline(limit)
        with self._lock:
            if not self._wait_until(lambda: self._returncode is not None, deadline):
                raise errors.TimeoutExpired(self.args, limit or 0.0, process_id=self.id)
            code = self._returncode
        assert code is not None
        return code

    # ------------------------------------------------------------------ output

    def output(self, *, timeout: Timeoutish = UNSET) -> Iterator[OutputChunk]:
        """Yield output chunks (all streams) in order until the process closes its output.

        ``timeout`` (unset/``None`` = no limit) bounds the whole iteration; on expiry
        ``errors.TimeoutExpired`` is raised and unread output stays available. Consumes the
        chunks: other consumers (``communicate``, ``iter_lines``) will not see them. A process
        spawned with ``on_output`` keeps no chunks: this then only waits for the end.

        Raises:
            errors.OutputLost: output was lost (a server that keeps only the last part of it,
                read after a reconnect); raised where the gap is, after every chunk before
                it. Iterating again goes on after the gap.
        """
        return self._chunks(None, resolve_timeout(timeout, None))

    @property
    def output_lost(self) -> errors.OutputLost | None:
        """What output of this process was lost (all gaps together), or None: nothing was."""
        return self._output_lost

    def _chunks(self, want: Stream | None, limit: float | None) -> Iterator[OutputChunk]:
        """Yield the chunks of ``want`` (None: every stream) in seq order; chunks of other
        streams are kept for later readers."""
        deadline = Deadline(limit)
        while True:
            with self._lock:
                if not self._wait_until(lambda: self._has_chunks(want) or self._closed, deadline):
                    raise errors.TimeoutExpired(self.args, limit or 0.0, process_id=self.id)
                chunks, origin = self._take(want)
                if not chunks:
                    if not self._closed:
                        continue  # only chunks of other streams came: they were set aside
                    if self._gaps:
                        raise errors.fresh(self._gaps.popleft())
            if not chunks:
                self._release()
                return
            done = 0
            try:
                while done < len(chunks):
                    chunk = chunks[done]
                    if self._gaps and chunk.seq > self._gaps[0].first_seq:
                        with self._lock:
                            gap = self._gaps.popleft()
                        raise errors.fresh(gap)
                    done += 1
                    yield chunk
            finally:
                if done < len(chunks):
                    # The consumer stopped early: put back what it never saw.
                    with self._lock:
                        back = self._buffer if origin is None else self._aside_buffer(origin)
                        back.push_front(chunks[done:])

    def _has_chunks(self, want: Stream | None) -> bool:
        if self._buffer:
            return True
        if want is None:
            return any(self._aside.values())
        return bool(self._aside.get(want))

    def _aside_buffer(self, stream: Stream) -> OutputBuffer:
        buf = self._aside.get(stream)
        if buf is None:
            buf = self._aside[stream] = OutputBuffer(self._output_budget)
        return buf

    def _take(self, want: Stream | None) -> tuple[list[OutputChunk], Stream | None]:
        """Under _lock: the next chunks for a reader of ``want``, and where unconsumed ones go
        back (None: the main buffer; a stream: its set-aside buffer)."""
        aside = self._aside
        if want is not None:
            mine = aside.get(want)
            if mine:
                return mine.pop(), want
            kept: list[OutputChunk] = []
            for chunk in self._buffer.pop():
                if chunk.stream == want:
                    kept.append(chunk)
                else:
                    self._aside_buffer(chunk.stream).append(chunk)
            return kept, want
        if any(aside.values()):
            # Everything set aside precedes the main buffer; across streams, oldest first.
            heads = [(buf.pop(0)[0], buf) for buf in aside.values() if buf]
            oldest, _ = min(heads, key=lambda head: head[0].seq)
            for chunk, buf in heads:
                if chunk is not oldest:
                    buf.push_front([chunk])
            return [oldest], oldest.stream
        return self._buffer.pop(), None

    def iter_lines(
        self,
        stream: Stream = "stdout",
        *,
        keepends: bool = False,
        encoding: str | None = None,
        errors: str = "strict",
        timeout: Timeoutish = UNSET,
    ) -> Iterator[str]:
        """Yield decoded lines of one stream; a UTF-8 character or line split across chunks is
        joined first. With a tty the output is the ``pty`` stream (``"stdout"`` means it too)
        and ``"\\r\\n"`` becomes ``"\\n"``. Chunks of other streams are kept: a later
        ``output()``, ``communicate()`` or ``iter_lines()`` of that stream gets them.

        ``encoding`` defaults to UTF-8. ``timeout`` as in :meth:`output`; ``OutputLost`` as
        there, after the text before the gap (an unfinished line is yielded as it is).
        """
        want: Stream = "pty" if self.spec.tty and stream in ("stdout", "pty") else stream
        crlf = want == "pty"
        decoder = codecs.getincrementaldecoder(encoding or "utf-8")(errors)
        parts: list[str] = []
        end = "\n" if keepends else ""
        try:
            for chunk in self._chunks(want, resolve_timeout(timeout, None)):
                text = decoder.decode(chunk.data)
                if "\n" not in text:
                    if text:
                        parts.append(text)
                    continue
                pieces = text.split("\n")
                parts.append(pieces[0])
                first = "".join(parts)
                for line in (first, *pieces[1:-1]):
                    if crlf and line.endswith("\r"):
                        line = line[:-1]
                    yield line + end
                parts = [pieces[-1]] if pieces[-1] else []
        except _OutputLost:
            rest = "".join(parts)
            if rest:
                yield rest
            raise
        parts.append(decoder.decode(b"", final=True))
        rest = "".join(parts)
        if rest:
            yield rest

    def communicate(
        self, input: bytes | None = None, *, timeout: Timeoutish = UNSET
    ) -> tuple[bytes, bytes]:
        """Send ``input``, close stdin, and collect ``(stdout, stderr)`` until output closes.

        With a tty both are in stdout. ``timeout`` unset/``None`` waits without limit; on
        expiry ``errors.TimeoutExpired`` carries the output so far, the process keeps running,
        and a later call continues where this one stopped.

        Raises:
            errors.UnsupportedByServer: ``input`` was given but this server cannot close a
                process's stdin; use ``env.run(args, input=...)``, which stages it in a file.
        """
        limit = resolve_timeout(timeout, None)
        deadline = Deadline(limit)
        if input is not None:
            if not self._backend.can_close_stdin:
                raise errors.UnsupportedByServer(
                    "communicate(input=...)",
                    hint="this server cannot close stdin; use env.run(args, input=...) instead",
                )
            self._feed(input, deadline)
        if self.spec.pipe_stdin and not self.spec.tty and self._backend.can_close_stdin:
            self._close_stdin_quietly(deadline)
        try:
            for chunk in self.output(timeout=deadline.left()):
                if chunk.stream == "stderr":
                    self._comm_err.write(chunk.data)
                else:
                    self._comm_out.write(chunk.data)
        except errors.OutputLost as lost:
            # What came before the gap is the caller's; a later call goes on after it.
            lost.stdout, lost.stderr = self._comm_out.getvalue(), self._comm_err.getvalue()
            self._comm_out, self._comm_err = io.BytesIO(), io.BytesIO()
            raise
        except errors.TimeoutExpired:
            raise errors.TimeoutExpired(
                self.args,
                limit or 0.0,
                self._comm_out.getvalue(),
                self._comm_err.getvalue(),
                process_id=self.id,
            ) from None
        result = self._comm_out.getvalue(), self._comm_err.getvalue()
        # Hand the output over instead of keeping a second reference alive with the Process.
        self._comm_out, self._comm_err = io.BytesIO(), io.BytesIO()
        return result

    def _feed(self, data: bytes, deadline: Deadline) -> None:
        """Write ``data`` then close stdin; a process that stopped reading is not an error."""
        try:
            self._write(data, deadline)
        except errors.StdinClosed:
            log.debug("process %s stopped reading its input", self.id)
        self._close_stdin_quietly(deadline)

    def _close_stdin_quietly(self, deadline: Deadline) -> None:
        if self._stdin_closed or self._returncode is not None:
            return
        try:
            self.close_stdin(timeout=self._rpc_timeout(deadline))
        except (errors.StdinClosed, errors.ProcessNotFound):
            self._stdin_closed = True

    # ------------------------------------------------------------------ control

    def _rpc_timeout(self, deadline: Deadline) -> float | None:
        left = deadline.left()
        if left is None:
            return self._timeout
        return left if self._timeout is None else min(left, self._timeout)

    def write(self, data: bytes, *, timeout: Timeoutish = UNSET) -> int:
        """Send ``data`` to the process's stdin (spawned with ``stdin=True`` or ``tty=True``).

        Large data goes in pieces of at most 1 MiB. ``timeout`` (default: the environment's)
        bounds the whole write. Returns ``len(data)``.

        Raises:
            errors.StdinClosed: stdin is closed or was never opened.
            errors.ProcessNotFound: the backend does not know the process.
        """
        self._write(bytes(data), Deadline(resolve_timeout(timeout, self._timeout)))
        return len(data)

    def _write(self, data: bytes, deadline: Deadline) -> None:
        view = memoryview(data)
        offset = 0
        while True:
            piece = bytes(view[offset : offset + WRITE_PIECE])
            status = self._backend.write(self.id, piece, timeout=self._rpc_timeout(deadline))
            if status == "starting":
                # Not yet able to take input (never observed; PROTOCOL.md §3.5): retry shortly.
                if deadline.expired():
                    raise errors.TimeoutExpired(
                        self.args, deadline.total or 0.0, process_id=self.id
                    )
                time.sleep(0.01)
                continue
            if status == "stdinClosed":
                self._stdin_closed = True
                raise errors.StdinClosed(
                    f"process {self.id}: stdin is closed (spawn with stdin=True to write)",
                    process_id=self.id,
                )
            if status == "unknownProcess":
                raise errors.ProcessNotFound(
                    f"process {self.id} is unknown to the backend", process_id=self.id
                )
            offset += len(piece)
            if offset >= len(data):
                return

    def close_stdin(self, *, timeout: Timeoutish = UNSET) -> None:
        """Close stdin so the process sees EOF (environment's default timeout).

        Raises ``errors.UnsupportedByServer`` where the server cannot (codex servers); there,
        use ``env.run(args, input=...)`` or, with a tty, write ``b"\\x04"``.
        """
        self._backend.close_stdin(self.id, timeout=resolve_timeout(timeout, self._timeout))
        self._stdin_closed = True

    def interrupt(self, *, timeout: Timeoutish = UNSET) -> None:
        """Send SIGINT (like Ctrl-C); ``cat`` or ``sleep`` then exit with 130.

        Raises ``errors.UnsupportedByServer`` on servers without ``process/signal`` (G1).
        """
        self._backend.interrupt(self.id, timeout=resolve_timeout(timeout, self._timeout))

    def terminate(self, *, timeout: Timeoutish = UNSET) -> None:
        """Kill the process and its process group.

        The exec-server protocol has a single way to stop a process, ``process/terminate``,
        which sends SIGKILL to the whole process group; :meth:`terminate` and :meth:`kill`
        both use it (exit code 137, or -1 on G1). For a gentle stop use :meth:`interrupt`.
        Does nothing once the process has closed its output.
        """
        if self._closed:
            return
        self._backend.terminate(self.id, timeout=resolve_timeout(timeout, self._timeout))

    def kill(self, *, timeout: Timeoutish = UNSET) -> None:
        """Same as :meth:`terminate`: SIGKILL to the process group."""
        self.terminate(timeout=timeout)

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        try:
            self._backend.release(self.id)
        except Exception:
            log.debug("process %s: release failed", self.id, exc_info=True)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill a still-running process, wait briefly for it to end, and release it."""
        try:
            if not self._closed and self._lost is None:
                # Even after exit, a background child may hold the output open: kill the group.
                self.terminate()
                deadline = Deadline(self._timeout)
                with self._lock:
                    if not self._wait_until(lambda: self._closed, deadline):
                        log.warning("process %s did not close after being killed", self.id)
        except errors.ExecSdkError as err:
            log.debug("process %s: cleanup on exit failed: %r", self.id, err)
        finally:
            with self._lock:
                self._buffer.clear()
                for buf in self._aside.values():
                    buf.clear()
            self._release()

    def __repr__(self) -> str:
        code = self._returncode
        lost = self._lost
        if code is not None:
            state = f"exited {code}"
        elif lost is not None:
            state = f"unknown ({type(lost).__name__}: {lost})"
        else:
            state = "running"
        if self._output_lost is not None:
            state += f", {self._output_lost.chunks} output chunk(s) lost"
        return f"<Process {self.id!r} {self.args!r} {state}>"


_OutputLost = errors.OutputLost  # iter_lines' ``errors`` parameter shadows the module there


class _Receiver:
    """The :class:`~execsdk.backends.ProcessEvents` a :class:`Process` registers with its
    backend: the receiving side stays off the public object."""

    __slots__ = ("on_closed", "on_exited", "on_lost", "on_output", "on_resync")

    def __init__(self, proc: Process) -> None:
        self.on_output = proc._event_output
        self.on_exited = proc._event_exited
        self.on_closed = proc._event_closed
        self.on_lost = proc._event_lost
        self.on_resync = proc._event_resync
