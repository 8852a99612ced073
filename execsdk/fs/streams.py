"""Bytes in and out of one remote file, with bounded memory, and the file objects of ``open``.

Where the server offers block handles (``"blocks"``) a file moves through ``fs/open`` and 1 MiB
``fs/readBlock``/``fs/writeBlock`` calls, a few in flight at once (which hides the round trips).
On G1 servers reads run ``dd`` for one 8 MiB window at a time, and writes go in 2 MiB
``fs/writeFile`` parts: the first in place, the next ones staged and appended by ``cat``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import io
import logging
from collections.abc import Callable, Iterator
from typing import IO, Any, Literal, Protocol, cast, runtime_checkable

from execsdk import errors
from execsdk._deadline import UNSET, Deadline, Timeoutish
from execsdk._threads import io_thread_role
from execsdk.fs.core import (
    BLOCK_SIZE,
    G1_PART,
    FsCore,
    MiB,
    deadline_for,
    handle_id,
    is_dir_error,
    not_regular,
    pool,
    step,
)

log = logging.getLogger(__name__)

G1_JOIN = 16
"""G1 writes: staged parts appended per helper process (so at most 32 MiB staged on disk)."""
G1_WINDOW = 8 * MiB
"""G1 streamed reads: bytes fetched per ``dd`` process."""
READ_DEPTH = 4
WRITE_DEPTH = 2
"""Block calls kept in flight while streaming one file (hides round-trip latency)."""

Mode = Literal["read", "replace"]


@runtime_checkable
class CreateNewBackend(Protocol):
    """A backend whose ``open`` also takes ``mode="createNew"``: the file is created only where
    nothing is, atomically (servers announcing ``execsdk/exclusiveCreate``, PROTOCOL.md §7).
    Elsewhere exclusive-create modes look first and then create: not atomic."""

    @property
    def supports_create_new(self) -> bool:
        """True when ``open(..., mode="createNew")`` works."""

    def open(
        self,
        handle_id: str,
        path: str,
        *,
        mode: Literal["read", "replace", "createNew"] = "read",
        timeout: Timeoutish = UNSET,
    ) -> None:
        """``fs/open``; ``createNew`` fails with ``FileExistsError`` when anything is there."""


# --------------------------------------------------------------------------- handles, windows


def open_handle(core: FsCore, p: str, mode: Mode, timeout: Timeoutish) -> str:
    """``fs/open`` a fresh handle; a refused read is explained as a builtin error."""
    hid = handle_id()
    try:
        core.backend.open(hid, p, mode=mode, timeout=timeout)
    except errors.InvalidRequest as exc:
        if mode == "read":
            core.explain_refused_read(p, exc, None)
        raise
    return hid


@contextlib.contextmanager
def block_handle(core: FsCore, p: str, mode: Mode, dl: Deadline | None) -> Iterator[str]:
    """A handle for the ``with`` body, closed afterwards (even when the deadline has passed)."""
    hid = open_handle(core, p, mode, step(dl))
    try:
        yield hid
    finally:
        try:
            core.backend.close_handle(
                hid, timeout=step(dl) if dl is None or not dl.expired() else 5.0
            )
        except Exception as exc:  # the body's error matters more; keep it
            log.debug("closing handle %s of %s failed: %r", hid, p, exc)


def g1_window(core: FsCore, p: str, offset: int, dl: Deadline | None) -> bytes:
    """Up to 8 MiB at ``offset`` (a multiple of 1 MiB) through ``dd``."""
    result = core.run(
        ["dd", f"if={p}", f"bs={MiB}", f"skip={offset // MiB}", f"count={G1_WINDOW // MiB}"],
        dl,
    )
    if result.returncode != 0:
        core.diagnose(p, p, result, dl)
    return result.stdout


# --------------------------------------------------------------------------- whole streams


def read_chunks(core: FsCore, p: str, dl: Deadline | None) -> Iterator[bytes]:
    """A file's content in order, with bounded memory: block reads (a few in flight) or, on
    G1, ``dd`` windows. Reads to the end of file, whatever size the file had before."""
    if "blocks" not in core.features:
        offset = 0
        while True:
            window = g1_window(core, p, offset, dl)
            if window:
                yield window
            offset += len(window)
            if len(window) < G1_WINDOW:
                return
    backend = core.backend
    # Exit order matters: the pool drains its calls before the handle closes.
    with block_handle(core, p, "read", dl) as hid, pool(READ_DEPTH) as executor:
        pending: collections.deque[concurrent.futures.Future[tuple[bytes, bool]]]
        pending = collections.deque()
        offset = 0
        for _ in range(READ_DEPTH):
            pending.append(
                executor.submit(backend.read_block, hid, offset, BLOCK_SIZE, timeout=step(dl))
            )
            offset += BLOCK_SIZE
        while pending:
            chunk, eof = pending.popleft().result()
            if chunk:
                yield chunk
            if eof or len(chunk) < BLOCK_SIZE:
                return
            pending.append(
                executor.submit(backend.read_block, hid, offset, BLOCK_SIZE, timeout=step(dl))
            )
            offset += BLOCK_SIZE


def collect(chunks: Iterator[bytes], size: int | None = None) -> bytes:
    """``b"".join(chunks)`` holding the content once, not twice (list plus joined copy).

    The chunks land in a buffer sized ``size`` up front (a hint: more data is appended, less
    cuts the buffer short), and ``BytesIO.getvalue()`` hands that buffer over as the result
    instead of copying it (CPython does so when nothing else shares the buffer). Without a
    hint the buffer grows by about an eighth at a time, in place where the allocator can.
    """
    buffer = io.BytesIO()
    if size:
        # Writing the last byte allocates the whole buffer at its exact size, once.
        buffer.seek(size - 1)
        buffer.write(b"\0")
        buffer.seek(0)
    for chunk in chunks:
        buffer.write(chunk)
    buffer.truncate()  # the file shrank since ``size`` was taken: drop the zero tail
    return buffer.getvalue()


def write_from(
    core: FsCore,
    p: str,
    read: Callable[[int], bytes],
    dl: Deadline | None,
    written: Callable[[int], object] | None = None,
) -> int:
    """Create/replace ``p`` with everything ``read(n)`` returns until it returns nothing:
    block writes (a few in flight) or, on G1, staged parts. ``written(n)`` is called on this
    thread as bytes are confirmed. Returns the byte count."""
    done: Callable[[int], object] = written if written is not None else lambda n: None
    total = 0
    if "blocks" not in core.features:
        sink = G1Sink(core, p, dl)
        try:
            while part := read(G1_PART):
                sink.write_part(part)
                total += len(part)
                done(len(part))
        except BaseException:
            sink.abort()
            raise
        sink.finish()
        return total
    backend = core.backend
    with block_handle(core, p, "replace", dl) as hid, pool(WRITE_DEPTH) as executor:
        pending: collections.deque[tuple[concurrent.futures.Future[None], int]]
        pending = collections.deque()
        while chunk := read(BLOCK_SIZE):
            if len(pending) >= WRITE_DEPTH:
                fut, n = pending.popleft()
                fut.result()
                done(n)
            call = executor.submit(backend.write_block, hid, total, chunk, timeout=step(dl))
            pending.append((call, len(chunk)))
            total += len(chunk)
        while pending:
            fut, n = pending.popleft()
            fut.result()
            done(n)
    return total


# --------------------------------------------------------------------------- file objects


def open_file(
    core: FsCore,
    p: str,
    mode: str,
    *,
    buffering: int,
    encoding: str | None,
    text_errors: str | None,
    newline: str | None,
    timeout: Timeoutish,
) -> IO[Any]:
    """The file object ``Fs.open`` returns (see there for the modes)."""
    kind = mode.replace("t", "")
    if kind not in ("r", "w", "x", "rb", "wb", "xb", "br", "bw", "bx") or (
        "b" in mode and "t" in mode
    ):
        raise ValueError(f"unsupported mode {mode!r}: use 'rb', 'wb', 'xb', 'r', 'w' or 'x'")
    binary = "b" in kind
    if binary and (encoding is not None or text_errors is not None or newline is not None):
        raise ValueError("binary mode takes no encoding, errors or newline argument")
    raw: RawReader | RawWriter
    if "r" in kind:
        raw = _raw_reader(core, p, timeout)
    elif "x" in kind:
        raw = _raw_creator(core, p, timeout)
    else:
        raw = _raw_writer(core, p, timeout)
    if buffering == 0:
        if not binary:
            raise ValueError("can't have unbuffered text I/O")
        return cast(IO[Any], raw)
    size = BLOCK_SIZE if buffering in (-1, 1) else buffering
    buffered: io.BufferedReader | io.BufferedWriter
    if isinstance(raw, RawReader):
        buffered = io.BufferedReader(raw, buffer_size=size)
    else:
        buffered = io.BufferedWriter(raw, buffer_size=size)
    if binary:
        return buffered
    return io.TextIOWrapper(
        buffered, encoding=encoding or "utf-8", errors=text_errors, newline=newline
    )


def _raw_reader(core: FsCore, p: str, timeout: Timeoutish) -> RawReader:
    if "blocks" in core.features:
        hid = open_handle(core, p, "read", timeout)
        return RawReader(p, BlockSource(core, p, hid, timeout))
    meta = core.backend.get_metadata(p, timeout=timeout)
    if meta.is_directory:
        raise is_dir_error(p)
    if not meta.is_file:
        raise not_regular(p)
    return RawReader(p, WindowSource(core, p, timeout))


def _raw_creator(core: FsCore, p: str, timeout: Timeoutish) -> RawWriter:
    """Mode ``x``: a new file, ``FileExistsError`` when anything is at ``p`` (a dangling link
    too, where the server creates atomically)."""
    backend = core.backend
    if (
        "blocks" in core.features
        and isinstance(backend, CreateNewBackend)
        and backend.supports_create_new
    ):
        hid = handle_id()
        backend.open(hid, p, mode="createNew", timeout=timeout)
        return RawWriter(p, BlockSink(core, hid, timeout))
    # No atomic create here (codex, the local backend): look, then create. Another writer may
    # create the file in between, and then loses its content to this one.
    try:
        backend.get_metadata(p, timeout=timeout)
    except FileNotFoundError:
        return _raw_writer(core, p, timeout)
    raise errors.os_error(errno.EEXIST, "File exists", p)


def _raw_writer(core: FsCore, p: str, timeout: Timeoutish) -> RawWriter:
    if "blocks" in core.features:
        hid = open_handle(core, p, "replace", timeout)
        return RawWriter(p, BlockSink(core, hid, timeout))
    return RawWriter(p, G1Sink(core, p, None, per_call=timeout))


class BlockSource:
    """Reads through an ``fs/open`` handle (1 MiB per call). Thread-safety: one thread at a
    time."""

    def __init__(self, core: FsCore, path: str, hid: str, timeout: Timeoutish) -> None:
        self._core = core
        self._path = path
        self._hid = hid
        self._timeout = timeout

    def read_at(self, offset: int, n: int) -> tuple[bytes, bool]:
        return self._core.backend.read_block(
            self._hid, offset, max(1, min(n, BLOCK_SIZE)), timeout=self._timeout
        )

    def size(self) -> int:
        size = self._core.backend.get_metadata(self._path, timeout=self._timeout).size
        if size is None:
            raise io.UnsupportedOperation("the server reports no file size")
        return size

    def close(self) -> None:
        role = io_thread_role()
        if role is not None:  # never block the thread that delivers the answer
            log.warning("file handle of %s not closed: closed from the %s thread", self._path, role)
            return
        self._core.backend.close_handle(self._hid, timeout=self._timeout)


class WindowSource:
    """G1 reads: one ``dd`` process per 8 MiB window; the last window fetched is kept.
    Thread-safety: one thread at a time."""

    def __init__(self, core: FsCore, path: str, timeout: Timeoutish) -> None:
        self._core = core
        self._path = path
        self._timeout = timeout
        self._start = 0
        self._data = b""
        self._size: int | None = None

    def read_at(self, offset: int, n: int) -> tuple[bytes, bool]:
        inside = self._start <= offset < self._start + len(self._data)
        if not inside:
            if self._size is not None and offset >= self._size:
                return b"", True
            start = offset - offset % MiB
            data = g1_window(self._core, self._path, start, deadline_for(self._timeout))
            self._start, self._data = start, data
            if len(data) < G1_WINDOW:
                self._size = start + len(data)
            if offset >= start + len(data):
                return b"", True
        rel = offset - self._start
        chunk = self._data[rel : rel + n]
        eof = self._size is not None and offset + len(chunk) >= self._size
        return chunk, eof

    def size(self) -> int:
        if self._size is None:
            self._size = self._core.g1_sizes([self._path], deadline_for(self._timeout))[0]
        return self._size

    def close(self) -> None:
        self._data = b""


class BlockSink:
    """Writes through an ``fs/open`` ``replace`` handle (at most 1 MiB per call).
    Thread-safety: one thread at a time."""

    max_write = BLOCK_SIZE

    def __init__(self, core: FsCore, hid: str, timeout: Timeoutish) -> None:
        self._core = core
        self._hid = hid
        self._timeout = timeout

    def write(self, offset: int, data: bytes) -> None:
        self._core.backend.write_block(self._hid, offset, data, timeout=self._timeout)

    def finish(self) -> None:
        role = io_thread_role()
        if role is not None:  # never block the thread that delivers the answer
            log.warning("file handle %s not closed: closed from the %s thread", self._hid, role)
            return
        self._core.backend.close_handle(self._hid, timeout=self._timeout)


class G1Sink:
    """G1 writes of any size. The first 2 MiB part is written in place with ``fs/writeFile``;
    later parts are staged as ``<dst>.execsdk-part-N`` and appended, up to 16 at a time, by
    ``cat`` in a short helper process that then removes them (at most 32 MiB staged on disk).
    Parts stay small because each message costs the client several times its size in memory.

    ``dl`` bounds the whole write; without it every step gets ``per_call`` (file objects).
    Thread-safety: one thread at a time.
    """

    max_write = G1_PART

    def __init__(
        self, core: FsCore, dst: str, dl: Deadline | None, *, per_call: Timeoutish | None = None
    ) -> None:
        self._core = core
        self._dst = dst
        self._dl = dl
        self._per_call = per_call
        self._parts = 0
        self._staged: list[str] = []
        self._buffer = bytearray()
        if per_call is not None:
            # A file object: create/truncate now, as fs/open "replace" does (and fail early).
            core.backend.write_file(dst, b"", timeout=step(self._deadline()))

    def _deadline(self) -> Deadline | None:
        if self._dl is not None or self._per_call is None:
            return self._dl
        return deadline_for(self._per_call)

    def write(self, offset: int, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= G1_PART:
            part = bytes(self._buffer[:G1_PART])
            del self._buffer[:G1_PART]
            self.write_part(part)

    def write_part(self, data: bytes) -> None:
        backend = self._core.backend
        if self._parts == 0:
            backend.write_file(self._dst, data, timeout=step(self._deadline()))
            self._parts = 1
            return
        part = f"{self._dst}.execsdk-part-{self._parts}"
        self._staged.append(part)  # before writing: abort() removes it whatever happens
        backend.write_file(part, data, timeout=step(self._deadline()))
        self._parts += 1
        if len(self._staged) >= G1_JOIN:
            self._join()

    def _join(self) -> None:
        if not self._staged:
            return
        script = 'd=$1; shift; cat -- "$@" >> "$d"; s=$?; rm -f -- "$@"; exit $s'
        argv = ["/bin/sh", "-c", script, "sh", self._dst, *self._staged]
        result = self._core.run(argv, self._deadline())
        self._staged.clear()
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip()
            raise errors.os_error(None, f"appending staged parts failed: {message}", self._dst)

    def finish(self) -> None:
        """Write what is buffered and append what is staged."""
        try:
            if self._buffer or self._parts == 0:
                data = bytes(self._buffer)
                self._buffer.clear()
                self.write_part(data)
            self._join()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove staged parts (best effort); the destination keeps what was appended."""
        for part in self._staged:
            try:
                self._core.backend.remove(part, recursive=False, force=True)
            except Exception as exc:
                log.warning("could not remove staged part %s: %r", part, exc)
        self._staged.clear()


class RawReader(io.RawIOBase):
    """Seekable raw binary reader over a block handle or G1 windows. One thread at a time (the
    ``io.BufferedReader`` around it serialises callers)."""

    def __init__(self, name: str, source: BlockSource | WindowSource) -> None:
        super().__init__()
        self.name = name
        self.mode = "rb"
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        data, _ = self._source.read_at(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        return collect(self._rest())

    def _rest(self) -> Iterator[bytes]:
        while True:
            data, eof = self._source.read_at(self._pos, BLOCK_SIZE)
            self._pos += len(data)
            yield data
            if eof or not data:
                return

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._source.size() + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(errno.EINVAL, "Invalid argument: negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._source.close()
        finally:
            super().close()


class RawWriter(io.RawIOBase):
    """Sequential raw binary writer over a block handle or the G1 part writer. One thread at a
    time (the ``io.BufferedWriter`` around it serialises callers)."""

    def __init__(self, name: str, sink: BlockSink | G1Sink) -> None:
        super().__init__()
        self.name = name
        self.mode = "wb"
        self._sink = sink
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(data).cast("B")
        n = min(len(view), self._sink.max_write)
        if n:
            self._sink.write(self._pos, view[:n].tobytes())
            self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (whence == io.SEEK_CUR and offset == 0) or (
            whence == io.SEEK_SET and offset == self._pos
        ):
            return self._pos
        raise io.UnsupportedOperation("remote files open for writing are not seekable")

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._sink.finish()
        finally:
            super().close()
