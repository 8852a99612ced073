"""An ordered output buffer that keeps up to a byte budget in memory and spills the rest to disk.

A :class:`~execsdk.process.Process` receives output on an I/O thread that must never wait for a
consumer, and output is the user's data, so it is never dropped either. This buffer is where the
two meet: chunks stay in memory until ``budget`` bytes are held, later chunks go to a temporary
file (created on first need), and consumers take chunks back in the order they were added.
Consumed bytes are freed; the spill file is truncated whenever it has been read to its end.
"""

from __future__ import annotations

import collections
import logging
import struct
import sys
import tempfile
import weakref
from typing import IO

from execsdk.backends import OutputChunk, Stream

__all__ = ["OutputBuffer"]

log = logging.getLogger(__name__)

# seq, stream code, length of the data that follows.
_HEADER = struct.Struct("<QBI")
_STREAM_CODES: dict[Stream, int] = {"stdout": 0, "stderr": 1, "pty": 2}
_STREAMS: tuple[Stream, ...] = ("stdout", "stderr", "pty")


class OutputBuffer:
    """FIFO of :class:`OutputChunk` bounded in memory by ``budget`` bytes, unbounded on disk.

    Thread-safety: not thread-safe; the owning ``Process`` calls it under its own lock.
    """

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"output budget must be >= 0, not {budget!r}")
        self._budget = budget
        self._memory: collections.deque[OutputChunk] = collections.deque()
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._read_pos = 0
        self._write_pos = 0
        self._spilled_chunks = 0
        self.spilled_total = 0
        """Bytes of chunk data ever written to the spill file (for diagnostics and tests)."""

    # ------------------------------------------------------------------ state

    @property
    def memory_bytes(self) -> int:
        """Bytes of chunk data held in memory now."""
        return self._memory_bytes

    @property
    def spilled_bytes(self) -> int:
        """Bytes (headers included) waiting in the spill file now."""
        return self._write_pos - self._read_pos

    @property
    def spill_file(self) -> IO[bytes] | None:
        """The spill file, once one was needed."""
        return self._file

    def __len__(self) -> int:
        return len(self._memory) + self._spilled_chunks

    def __bool__(self) -> bool:
        return bool(self._memory) or self._spilled_chunks > 0

    # ------------------------------------------------------------------ writing

    def append(self, chunk: OutputChunk) -> None:
        """Add a chunk after every chunk already held. Never waits for a consumer."""
        size = len(chunk.data)
        # Once anything is on disk, later chunks must follow it there to keep the order.
        if self._spilled_chunks == 0 and self._memory_bytes + size <= self._budget:
            self._memory.append(chunk)
            self._memory_bytes += size
            return
        try:
            self._spill(chunk)
        except OSError as exc:
            # Disk full or unwritable: losing output is worse than using RAM.
            log.error("output spill file failed (%s); keeping all output in memory", exc)
            self._unspill()
            self._memory.append(chunk)
            self._memory_bytes += size

    def _spill(self, chunk: OutputChunk) -> None:
        if self._file is None:
            # Lives as long as the buffer: clear() closes it, or the finalizer when the buffer
            # is collected (an abandoned process must not warn about an unclosed file).
            self._file = tempfile.TemporaryFile(prefix="execsdk-output-", buffering=0)  # noqa: SIM115
            weakref.finalize(self, self._file.close)
        f = self._file
        size = len(chunk.data)
        f.seek(self._write_pos)
        header = _HEADER.pack(chunk.seq, _STREAM_CODES[chunk.stream], size)
        _write_all(f, header + chunk.data if size < 65536 else header)
        if size >= 65536:
            _write_all(f, chunk.data)
        self._write_pos += _HEADER.size + size
        self._spilled_chunks += 1
        self.spilled_total += size

    def _unspill(self) -> None:
        """Move everything from the spill file into memory and stop spilling."""
        self._budget = sys.maxsize
        while self._spilled_chunks:
            chunk = self._read_spilled()
            self._memory.append(chunk)
            self._memory_bytes += len(chunk.data)
        if self._file is not None:
            self._file.close()
            self._file = None

    # ------------------------------------------------------------------ reading

    def pop(self, max_bytes: int = 1 << 20) -> list[OutputChunk]:
        """Remove and return the oldest chunks, at least one (if any) and about ``max_bytes``."""
        out: list[OutputChunk] = []
        taken = 0
        while self._memory and (not out or taken + len(self._memory[0].data) <= max_bytes):
            chunk = self._memory.popleft()
            self._memory_bytes -= len(chunk.data)
            taken += len(chunk.data)
            out.append(chunk)
        if self._memory:
            return out
        while self._spilled_chunks and (not out or taken < max_bytes):
            chunk = self._read_spilled()
            taken += len(chunk.data)
            out.append(chunk)
        return out

    def push_front(self, chunks: list[OutputChunk]) -> None:
        """Return chunks taken by :meth:`pop` but not consumed; they come out first again."""
        for chunk in reversed(chunks):
            self._memory.appendleft(chunk)
            self._memory_bytes += len(chunk.data)

    def _read_spilled(self) -> OutputChunk:
        f = self._file
        assert f is not None
        f.seek(self._read_pos)
        seq, code, size = _HEADER.unpack(_read_exact(f, _HEADER.size))
        data = _read_exact(f, size)
        self._read_pos += _HEADER.size + size
        self._spilled_chunks -= 1
        if self._spilled_chunks == 0:
            # Drained: give the disk space back and start over at offset 0.
            f.seek(0)
            f.truncate(0)
            self._read_pos = self._write_pos = 0
        return OutputChunk(_STREAMS[code], data, seq)

    def clear(self) -> None:
        """Drop everything held and remove the spill file."""
        self._memory.clear()
        self._memory_bytes = 0
        self._spilled_chunks = 0
        self._read_pos = self._write_pos = 0
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_all(f: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = f.write(view)
        if written is None:  # pragma: no cover - only for non-blocking files
            raise OSError("spill file write would block")
        view = view[written:]


def _read_exact(f: IO[bytes], size: int) -> bytes:
    data = f.read(size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = f.read(size - got)
        if not more:
            raise OSError(f"spill file ended early: wanted {size} bytes, got {got}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)
