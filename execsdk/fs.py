"""The filesystem facade (:class:`Fs`, alias ``RemoteFs``), :class:`RemotePath` and file objects.

One API on every environment, in pathlib/shutil words, over an :class:`~execsdk.environment.
FsBackend` (the local disk, or ``fs/*`` calls on an exec-server). What the protocol lacks is
built here, with the generation's tools:

- **Any size, bounded memory.** One ``fs/writeFile`` message may carry at most ~45 MiB of data
  (64 MiB WebSocket messages, base64) and ``fs/readFile`` refuses files over 512 MiB; each big
  message also costs the client several times its size in memory. So files up to 1 MiB move in
  one call, bigger ones in pieces. Where the server offers block handles (``"blocks"`` in
  :attr:`Fs.features`: local, G2) they go through ``fs/open`` and 1 MiB ``fs/readBlock`` /
  ``fs/writeBlock`` calls, a few in flight at once. On G1 servers (codex 0.123) writes go in
  2 MiB parts: the first is written in place, the next ones are staged as
  ``<dst>.execsdk-part-N`` and appended by ``cat`` in a short helper process, 16 at a time.
  Streamed reads on G1 run ``dd`` for one 8 MiB window at a time; ``read_bytes`` there asks for
  the whole file at once (``dd`` windows only beyond the 512 MiB cap).
- **Walk, canonicalize, move.** ``walk`` uses the server's ``fs/walk`` when offered, else lists
  directories one by one. ``canonicalize`` falls back to ``realpath`` in a process on G1.
  ``move`` has no protocol method: it runs ``mv -- src dst``, or copies then removes when no
  process can run.

Paths are ``str``, :class:`~pathlib.PurePosixPath` or :class:`RemotePath`; relative paths resolve
against the environment's cwd. ``..`` is resolved textually (``/a/link/..`` is ``/a``), exactly as
the server does (PROTOCOL.md §6 item 42).

Timeouts: every method takes a keyword-only ``timeout``. Left out, each protocol call gets the
client's default timeout (so a 10 GiB upload is never cut short by a 30 s default); a number is
one deadline for the whole operation, across all of its calls; ``None`` means no limit. On expiry
``errors.RequestTimeout`` (a ``TimeoutError``) is raised.

Errors are the builtin types (``FileNotFoundError``, ``FileExistsError``, ``IsADirectoryError``,
``NotADirectoryError``, ``PermissionError``, ``OSError``), as ``errors.RemoteOSError``
subclasses; the facade never swallows them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import fnmatch
import io
import logging
import os
import posixpath
import secrets
import shutil
import stat as _stat
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePath, PurePosixPath
from typing import IO, Any, Literal, Protocol, Union, cast, overload

from execsdk import errors
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk.environment import DirEntry, EnvironmentInfo, FileInfo, FileMetadata, FsBackend

__all__ = [
    "BLOCK_SIZE",
    "Fs",
    "PathArg",
    "Progress",
    "RemoteFs",
    "RemotePath",
]

log = logging.getLogger(__name__)

_MiB = 1024 * 1024
BLOCK_SIZE = _MiB
"""Bytes per ``fs/readBlock`` / ``fs/writeBlock`` call (the protocol maximum)."""
_ONE_CALL = _MiB
"""Files up to this size move in one ``fs/readFile``/``fs/writeFile``; bigger ones in blocks.
(Measured: pipelined 1 MiB blocks beat one big message, and hold far less memory.)"""
_G1_PART = 2 * _MiB
"""G1 writes: bytes per ``fs/writeFile`` part (the first lands in place)."""
_G1_JOIN = 16
"""G1 writes: staged parts appended per helper process (so at most 32 MiB staged on disk)."""
_G1_WINDOW = 8 * _MiB
"""G1 streamed reads: bytes fetched per ``dd`` process."""
_POOL_FILE = 256 * 1024
"""Tree transfers: files up to this size go several at a time, one call each."""
_WORKERS = 8
"""Threads (and so calls in flight) for tree transfers."""
_READ_DEPTH = 4
_WRITE_DEPTH = 2
"""Block calls kept in flight while streaming one file (hides round-trip latency)."""
_WALK_LIMITS = (64, 10_000, 50_000)
"""fs/walk maximums (depth, directories, entries) that codex 0.169 accepts."""
_CLIENT_WALK_MAX_DEPTH = 40
"""Client-side walks with ``followlinks`` stop this deep (no inode numbers to spot cycles)."""

PathArg = Union[str, PurePosixPath, "RemotePath"]
"""A path argument: ``str``, ``PurePosixPath`` or ``RemotePath``."""

Progress = Callable[[int, int], object]
"""``progress(done_bytes, total_bytes)`` for upload/download; called on the calling thread."""


class _Host(Protocol):
    """What :class:`Fs` needs from its environment: the info and a way to run a command."""

    @property
    def info(self) -> EnvironmentInfo: ...

    @property
    def timeout(self) -> float | None: ...

    def run(
        self, args: Sequence[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]: ...


# --------------------------------------------------------------------------- small helpers


def _normpath(path: str) -> str:
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def _deadline(timeout: Timeoutish) -> Deadline | None:
    """``None`` when the caller left ``timeout`` out: each call then gets its own default."""
    if timeout is UNSET:
        return None
    return Deadline(resolve_timeout(timeout, None))


def _step(deadline: Deadline | None, what: str = "fs") -> Timeoutish:
    """The ``timeout`` for the next call of a multi-call operation."""
    if deadline is None:
        return UNSET
    left = deadline.left()
    if left is not None and left <= 0:
        raise errors.RequestTimeout(what, deadline.total, "the operation ran out of time")
    return left


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """Worker threads for pipelined calls; on exit queued work is dropped and running calls
    are waited for, so no thread outlives the operation."""
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="execsdk-fs-transfer"
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _handle_id() -> str:
    return f"h{secrets.token_hex(8)}"


def _in_reader_thread() -> bool:
    return threading.current_thread().name.startswith("execsdk-reader")


def _not_regular(path: str) -> errors.RemoteOSError:
    return errors.os_error(
        errno.EINVAL, "Not a regular file (only regular files can be read or written)", path
    )


def _is_dir_error(path: str, hint: str = "") -> errors.RemoteOSError:
    return errors.os_error(errno.EISDIR, "Is a directory" + hint, path)


# --------------------------------------------------------------------------- the facade


class Fs:
    """Files of one environment, in pathlib/shutil vocabulary (``env.fs``).

    Thread-safety: every method may be called from any thread; file objects from :meth:`open`
    are, like builtin files, meant for one thread at a time.
    """

    def __init__(self, backend: FsBackend, *, environment: _Host | None = None) -> None:
        self._backend = backend
        self._host = environment
        cwd = environment.info.cwd if environment is not None else "/"
        self._cwd = _normpath(cwd if cwd.startswith("/") else "/" + cwd)

    # ------------------------------------------------------------------ basics

    @property
    def backend(self) -> FsBackend:
        """The backend doing the calls (one method per protocol method)."""
        return self._backend

    @property
    def features(self) -> frozenset[str]:
        """Optional server groups in use: ``"canonicalize"``, ``"walk"``, ``"blocks"``."""
        return self._backend.features

    @property
    def _one_call_write(self) -> int:
        """Largest write sent as one ``fs/writeFile`` (bigger: blocks, or G1 parts)."""
        return _ONE_CALL if "blocks" in self.features else _G1_PART

    @property
    def cwd(self) -> str:
        """The directory relative paths resolve against (the environment's cwd)."""
        return self._cwd

    def abspath(self, path: PathArg) -> str:
        """``path`` made absolute against :attr:`cwd` and normalised (``..`` textually)."""
        if isinstance(path, (RemotePath, PurePath)):
            text = path.as_posix()
        elif isinstance(path, str):
            text = path
        else:
            raise TypeError(f"expected str, PurePosixPath or RemotePath, not {type(path).__name__}")
        if not text.startswith("/"):
            text = posixpath.join(self._cwd, text)
        return _normpath(text)

    def path(self, path: PathArg = ".") -> RemotePath:
        """A :class:`RemotePath` bound to this filesystem."""
        return RemotePath(self, path)

    def __repr__(self) -> str:
        return f"<Fs cwd={self._cwd!r} features={sorted(self.features)}>"

    # ------------------------------------------------------------------ metadata

    def stat(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> FileInfo:
        """Type, size and times of ``path`` (symlinks followed; ``is_symlink`` flags a link).

        ``size`` is ``None`` on G1 servers. Raises ``FileNotFoundError`` (also for a dangling
        link).
        """
        return FileInfo.from_metadata(
            self._backend.get_metadata(self.abspath(path), timeout=timeout)
        )

    def exists(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> bool:
        """True if ``path`` exists (a dangling symlink does not), as ``os.path.exists``."""
        return self._meta_or_none(self.abspath(path), timeout) is not None

    def is_file(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> bool:
        """True for a regular file (or a link to one)."""
        meta = self._meta_or_none(self.abspath(path), timeout)
        return meta is not None and meta.is_file

    def is_dir(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> bool:
        """True for a directory (or a link to one)."""
        meta = self._meta_or_none(self.abspath(path), timeout)
        return meta is not None and meta.is_directory

    def _meta_or_none(self, p: str, timeout: Timeoutish) -> FileMetadata | None:
        try:
            return self._backend.get_metadata(p, timeout=timeout)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def listdir(self, path: PathArg = ".", *, timeout: Timeoutish = UNSET) -> list[str]:
        """Sorted names in a directory (dangling symlinks are not listed by the server)."""
        return [e.name for e in self.iterdir(path, timeout=timeout)]

    def iterdir(self, path: PathArg = ".", *, timeout: Timeoutish = UNSET) -> Iterator[DirEntry]:
        """Entries of a directory sorted by name: ``name``, ``is_file``, ``is_dir`` and
        ``is_symlink`` (``None`` where the server does not say). Fetched in one call, eagerly:
        ``FileNotFoundError``/``NotADirectoryError`` are raised here, not while iterating.
        """
        entries = self._backend.read_directory(self.abspath(path), timeout=timeout)
        return iter(sorted(entries, key=lambda e: e.name))

    # ------------------------------------------------------------------ whole files

    def read_bytes(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> bytes:
        """The whole content of a file, whatever its size.

        Raises ``FileNotFoundError``, ``IsADirectoryError``, ``OSError`` (not a regular file).
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        # Look first: the size picks the method, and a G1 server asked to read a FIFO would
        # block on it forever (and with it every later request on the connection).
        meta = self._backend.get_metadata(p, timeout=_step(dl))
        if meta.is_directory:
            raise _is_dir_error(p)
        if not meta.is_file:
            raise _not_regular(p)
        if "blocks" in self.features and meta.size is not None and meta.size > _ONE_CALL:
            return b"".join(self._read_chunks(p, dl))
        try:
            return self._backend.read_file(p, timeout=_step(dl))
        except errors.InvalidRequest as exc:
            self._explain_refused_read(p, exc, dl)
        # A regular file the server would not send in one message: it is too big.
        return b"".join(self._read_chunks(p, dl))

    def _explain_refused_read(
        self, p: str, exc: errors.InvalidRequest, dl: Deadline | None
    ) -> None:
        """Turn a refused ``fs/readFile``/``fs/open`` into a builtin error, by the file's state
        (not the server's prose): directory -> IsADirectoryError, special file -> OSError.
        Returns normally only for a regular file (refused because of its size)."""
        try:
            meta = self._backend.get_metadata(p, timeout=_step(dl))
        except OSError:
            raise exc from None
        if meta.is_directory:
            raise _is_dir_error(p) from exc
        if not meta.is_file:
            raise _not_regular(p) from exc

    def _read_chunks(self, p: str, dl: Deadline | None) -> Iterator[bytes]:
        """A file's content in order, with bounded memory: block reads (a few in flight, which
        hides the round trips) or, on G1, ``dd`` windows."""
        if "blocks" not in self.features:
            offset = 0
            while True:
                window = self._g1_window(p, offset, dl)
                if window:
                    yield window
                offset += len(window)
                if len(window) < _G1_WINDOW:
                    return
        # Exit order matters: the pool drains its calls before the handle closes.
        with self._block_handle(p, "read", dl) as hid, _pool(_READ_DEPTH) as pool:
            pending: collections.deque[concurrent.futures.Future[tuple[bytes, bool]]]
            pending = collections.deque()
            offset = 0
            for _ in range(_READ_DEPTH):
                pending.append(
                    pool.submit(
                        self._backend.read_block, hid, offset, BLOCK_SIZE, timeout=_step(dl)
                    )
                )
                offset += BLOCK_SIZE
            while pending:
                chunk, eof = pending.popleft().result()
                if chunk:
                    yield chunk
                if eof or len(chunk) < BLOCK_SIZE:
                    return
                pending.append(
                    pool.submit(
                        self._backend.read_block, hid, offset, BLOCK_SIZE, timeout=_step(dl)
                    )
                )
                offset += BLOCK_SIZE

    def _write_from(
        self, p: str, read: Callable[[int], bytes], dl: Deadline | None, meter: _Meter
    ) -> int:
        """Create/replace ``p`` with everything ``read(n)`` returns until it returns nothing:
        block writes (a few in flight) or, on G1, staged parts. Returns the byte count."""
        total = 0
        if "blocks" not in self.features:
            sink = _G1Sink(self, p, dl)
            try:
                while part := read(_G1_PART):
                    sink.write_part(part)
                    total += len(part)
                    meter.add(len(part))
            except BaseException:
                sink.abort()
                raise
            sink.finish()
            return total
        with self._block_handle(p, "replace", dl) as hid, _pool(_WRITE_DEPTH) as pool:
            pending: collections.deque[tuple[concurrent.futures.Future[None], int]]
            pending = collections.deque()
            while chunk := read(BLOCK_SIZE):
                if len(pending) >= _WRITE_DEPTH:
                    fut, n = pending.popleft()
                    fut.result()
                    meter.add(n)
                call = pool.submit(self._backend.write_block, hid, total, chunk, timeout=_step(dl))
                pending.append((call, len(chunk)))
                total += len(chunk)
            while pending:
                fut, n = pending.popleft()
                fut.result()
                meter.add(n)
        return total

    def read_text(
        self,
        path: PathArg,
        encoding: str = "utf-8",
        errors: str = "strict",
        newline: str | None = None,
        *,
        timeout: Timeoutish = UNSET,
    ) -> str:
        """The file decoded (UTF-8 by default); newlines translated as ``Path.read_text``."""
        data = self.read_bytes(path, timeout=timeout)
        with io.TextIOWrapper(
            io.BytesIO(data), encoding=encoding, errors=errors, newline=newline
        ) as f:
            return f.read()

    def write_bytes(
        self, path: PathArg, data: bytes | bytearray | memoryview, *, timeout: Timeoutish = UNSET
    ) -> int:
        """Create or replace a file with ``data`` (any size); the parent must exist.

        Returns the number of bytes written. Raises ``FileNotFoundError`` (missing parent),
        ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``.
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        view = memoryview(data).cast("B")
        size = len(view)
        if size <= self._one_call_write:
            payload = data if isinstance(data, bytes) else view.tobytes()
            self._backend.write_file(p, payload, timeout=_step(dl))
            return size
        position = 0

        def read(n: int) -> bytes:
            nonlocal position
            chunk = view[position : position + n].tobytes()
            position += len(chunk)
            return chunk

        return self._write_from(p, read, dl, _Meter(None))

    def write_text(
        self,
        path: PathArg,
        data: str,
        encoding: str = "utf-8",
        errors: str = "strict",
        newline: str | None = None,
        *,
        timeout: Timeoutish = UNSET,
    ) -> int:
        """Create or replace a file with ``data`` encoded (UTF-8 by default); returns the
        number of characters. ``newline`` (e.g. ``"\\r\\n"``) translates ``"\\n"`` on the way."""
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {type(data).__name__}")
        text = data.replace("\n", newline) if newline not in (None, "", "\n") else data
        self.write_bytes(path, text.encode(encoding, errors), timeout=timeout)
        return len(data)

    @contextlib.contextmanager
    def _block_handle(
        self, p: str, mode: Literal["read", "replace"], dl: Deadline | None
    ) -> Iterator[str]:
        hid = self._open_handle(p, mode, _step(dl))
        try:
            yield hid
        finally:
            try:
                self._backend.close_handle(
                    hid, timeout=_step(dl) if dl is None or not dl.expired() else 5.0
                )
            except Exception as exc:  # the body's error matters more; keep it
                log.debug("closing handle %s of %s failed: %r", hid, p, exc)

    def _open_handle(self, p: str, mode: Literal["read", "replace"], timeout: Timeoutish) -> str:
        hid = _handle_id()
        try:
            self._backend.open(hid, p, mode=mode, timeout=timeout)
        except errors.InvalidRequest as exc:
            if mode == "read":
                self._explain_refused_read(p, exc, None)
            raise
        return hid

    # ------------------------------------------------------------------ directories

    def mkdir(
        self,
        path: PathArg,
        *,
        parents: bool = False,
        exist_ok: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Create a directory, as ``Path.mkdir``.

        Raises ``FileExistsError`` (exists, unless ``exist_ok`` and it is a directory),
        ``FileNotFoundError`` (missing parent without ``parents``), ``NotADirectoryError``.
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        try:
            self._backend.create_directory(p, recursive=False, timeout=_step(dl))
        except FileNotFoundError:
            parent = posixpath.dirname(p)
            if not parents or parent == p:
                raise
            self._backend.create_directory(parent, recursive=True, timeout=_step(dl))
            self.mkdir(p, parents=False, exist_ok=exist_ok, timeout=_step(dl))
        except OSError:
            if not exist_ok or not self.is_dir(p, timeout=_step(dl)):
                raise

    def remove(
        self, path: PathArg, *, missing_ok: bool = False, timeout: Timeoutish = UNSET
    ) -> None:
        """Remove a file or a symbolic link (never its target), as ``os.remove``.

        Raises ``FileNotFoundError`` (unless ``missing_ok``), ``IsADirectoryError`` for a
        directory (use :meth:`rmdir` or :meth:`rmtree`).
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        try:
            meta = self._backend.get_metadata(p, timeout=_step(dl))
        except FileNotFoundError:
            # Missing, or a dangling symlink (metadata follows links): try removing the link.
            try:
                self._backend.remove(p, recursive=False, force=False, timeout=_step(dl))
            except FileNotFoundError:
                if not missing_ok:
                    raise
            return
        if meta.is_directory and not meta.is_symlink:
            raise _is_dir_error(p, "; use rmdir() or rmtree() for directories")
        self._backend.remove(p, recursive=False, force=False, timeout=_step(dl))

    unlink = remove

    def rmdir(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> None:
        """Remove an empty directory, as ``os.rmdir``.

        Raises ``FileNotFoundError``, ``NotADirectoryError`` (a file or a link), ``OSError``
        with ``errno.ENOTEMPTY`` for a directory that is not empty.
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        meta = self._backend.get_metadata(p, timeout=_step(dl))
        if meta.is_symlink or not meta.is_directory:
            raise errors.os_error(errno.ENOTDIR, "Not a directory", p)
        self._backend.remove(p, recursive=False, force=False, timeout=_step(dl))

    def rmtree(
        self, path: PathArg, *, missing_ok: bool = False, timeout: Timeoutish = UNSET
    ) -> None:
        """Remove a directory and everything below it, as ``shutil.rmtree``.

        Links inside are removed, never followed. Raises ``FileNotFoundError`` (unless
        ``missing_ok``), ``NotADirectoryError`` for a file, ``OSError`` for a symbolic link.
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        try:
            meta = self._backend.get_metadata(p, timeout=_step(dl))
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        if meta.is_symlink:
            raise errors.os_error(None, "Cannot call rmtree on a symbolic link", p)
        if not meta.is_directory:
            raise errors.os_error(errno.ENOTDIR, "Not a directory", p)
        self._backend.remove(p, recursive=True, force=False, timeout=_step(dl))

    # ------------------------------------------------------------------ copy and move

    def copy(
        self,
        src: PathArg,
        dst: PathArg,
        *,
        recursive: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Copy a file, a symbolic link (as a link) or, with ``recursive``, a directory tree.

        ``dst`` is the path of the copy (not a directory to copy into). A file replaces an
        existing file. A directory copy creates missing parents and merges into an existing
        directory (files replaced; a link or directory meeting an entry of another kind fails).
        Raises ``FileNotFoundError``, ``IsADirectoryError`` (a directory without ``recursive``,
        or a file onto a directory), ``FileExistsError`` (a directory onto a file, a link onto
        anything), ``shutil.SameFileError`` (``src`` and ``dst`` are the same path),
        ``OSError`` (a directory into itself, a special file).
        """
        s = self.abspath(src)
        d = self.abspath(dst)
        dl = _deadline(timeout)
        if s == d:
            raise shutil.SameFileError(f"{s!r} and {d!r} are the same file")
        try:
            self._backend.copy(s, d, recursive=recursive, timeout=_step(dl))
        except errors.InvalidRequest as exc:
            try:
                meta = self._backend.get_metadata(s, timeout=_step(dl))
            except OSError:
                raise exc from None
            if meta.is_directory and not recursive:
                raise _is_dir_error(s, "; pass recursive=True to copy a directory") from exc
            if meta.is_directory:
                raise errors.os_error(
                    errno.EINVAL, "Cannot copy a directory into itself", d
                ) from exc
            if not meta.is_file:
                raise errors.os_error(
                    errno.EINVAL, "Only regular files, directories and links can be copied", s
                ) from exc
            raise

    def move(self, src: PathArg, dst: PathArg, *, timeout: Timeoutish = UNSET) -> str:
        """Move a file, link or directory, as ``shutil.move`` / ``mv``; returns the new path.

        When ``dst`` is an existing directory, ``src`` goes inside it. The protocol has no move
        method: this runs ``mv -- src dst`` in the environment (one process). Without a way to
        run processes it copies (links as links) and then removes the source.
        Raises ``FileNotFoundError`` (missing source or destination parent), ``OSError``.
        """
        s = self.abspath(src)
        d = self.abspath(dst)
        dl = _deadline(timeout)
        if s == d:
            return d
        final = posixpath.join(d, posixpath.basename(s)) if self.is_dir(d, timeout=_step(dl)) else d
        if self._host is None:
            self._backend.copy(s, final, recursive=True, timeout=_step(dl))
            self._backend.remove(s, recursive=True, force=False, timeout=_step(dl))
            return final
        result = self._run(["mv", "--", s, d], dl)
        if result.returncode != 0:
            self._diagnose(s, final, result, dl)
        return final

    # ------------------------------------------------------------------ walk and resolve

    def walk(
        self,
        top: PathArg = ".",
        *,
        topdown: bool = True,
        followlinks: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """Yield ``(dirpath, dirnames, filenames)`` for ``top`` and every directory below, as
        ``os.walk`` (names sorted; with ``topdown`` you may prune ``dirnames`` in place).

        Where the server offers ``fs/walk`` the whole tree comes in one call: it reports regular
        files and directories only, so symbolic links are not listed (with ``followlinks``,
        links to directories are listed and descended, each real directory once) and special
        files are not either. Elsewhere (G1) directories are listed one call each; links then
        appear under their target's type, as in ``os.walk``.

        Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a bad ``top`` (where
        ``os.walk`` would yield nothing); errors below ``top`` (a directory removed meanwhile)
        are skipped.
        """
        root = self.abspath(top)
        dl = _deadline(timeout)
        tree = self._tree(root, None, followlinks, dl)
        yield from _walk_tree(tree, root, topdown)

    def _tree(
        self, root: str, max_depth: int | None, followlinks: bool, dl: Deadline | None
    ) -> dict[str, tuple[list[str], list[str]]]:
        """Map of directory -> (dirnames, filenames) for ``root`` and below.

        ``max_depth`` as fs/walk: 0 lists the root's children only; ``None`` is unlimited.
        """
        meta = self._backend.get_metadata(root, timeout=_step(dl))
        if not meta.is_directory:
            raise errors.os_error(errno.ENOTDIR, "Not a directory", root)
        if "walk" in self.features:
            tree = self._server_tree(root, meta, max_depth, followlinks, dl)
            if tree is not None:
                return tree
        return self._client_tree(root, max_depth, followlinks, dl)

    def _server_tree(
        self,
        root: str,
        meta: FileMetadata,
        max_depth: int | None,
        followlinks: bool,
        dl: Deadline | None,
    ) -> dict[str, tuple[list[str], list[str]]] | None:
        limit_depth, limit_dirs, limit_entries = _WALK_LIMITS
        depth = limit_depth if max_depth is None else min(max_depth, limit_depth)
        start = root
        if meta.is_symlink:
            # fs/walk does not follow a link at the root; os.walk does. Walk the target.
            start = self._backend.canonicalize(root, timeout=_step(dl))
        result = self._backend.walk(
            start,
            max_depth=depth,
            max_directories=limit_dirs,
            max_entries=limit_entries,
            follow_directory_symlinks=followlinks,
            timeout=_step(dl),
        )
        if result.truncated:
            log.debug("fs/walk of %s was truncated; listing directories one by one", root)
            return None
        tree: dict[str, tuple[list[str], list[str]]] = {root: ([], [])}
        prefix = start.rstrip("/") + "/"
        deepest: list[str] = []
        for entry in result.entries:
            if not entry.path.startswith(prefix):
                continue
            rel = entry.path[len(prefix) :]
            path = posixpath.join(root, rel)
            parent, name = posixpath.split(path)
            slot = tree.setdefault(parent, ([], []))
            if entry.kind == "directory":
                slot[0].append(name)
                tree.setdefault(path, ([], []))
                if rel.count("/") == limit_depth and (max_depth is None or max_depth > limit_depth):
                    deepest.append(path)
            else:
                slot[1].append(name)
        for dirs, files in tree.values():
            dirs.sort()
            files.sort()
        for path in deepest:  # deeper than the server walks: continue below client-side
            left = None if max_depth is None else max_depth - limit_depth - 1
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                tree.update(self._client_tree(path, left, followlinks, dl))
        return tree

    def _client_tree(
        self, root: str, max_depth: int | None, followlinks: bool, dl: Deadline | None
    ) -> dict[str, tuple[list[str], list[str]]]:
        tree: dict[str, tuple[list[str], list[str]]] = {}
        limit = _CLIENT_WALK_MAX_DEPTH if followlinks else None
        pending: list[tuple[str, int]] = [(root, 0)]
        while pending:
            directory, depth = pending.pop()
            try:
                entries = sorted(
                    self._backend.read_directory(directory, timeout=_step(dl)), key=lambda e: e.name
                )
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                if directory == root:
                    raise
                continue
            dirs = [e.name for e in entries if e.is_dir]
            files = [e.name for e in entries if not e.is_dir]
            tree[directory] = (dirs, files)
            if max_depth is not None and depth >= max_depth:
                continue  # as fs/walk: deeper directories are listed, not read
            if limit is not None and depth >= limit:
                continue
            for entry in entries:
                if not entry.is_dir:
                    continue
                child = posixpath.join(directory, entry.name)
                if not followlinks:
                    is_link = entry.is_symlink
                    if is_link is None:
                        try:
                            is_link = self._backend.get_metadata(
                                child, timeout=_step(dl)
                            ).is_symlink
                        except OSError:
                            continue
                    if is_link:
                        continue
                pending.append((child, depth + 1))
        return tree

    def canonicalize(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> str:
        """The absolute path with every symbolic link resolved; the path must exist.

        Uses ``fs/canonicalize`` where offered, else ``realpath`` in a process (G1).
        Raises ``FileNotFoundError`` (also for a dangling link).
        """
        p = self.abspath(path)
        dl = _deadline(timeout)
        if "canonicalize" in self.features:
            return _normpath(self._backend.canonicalize(p, timeout=_step(dl)))
        self._backend.get_metadata(p, timeout=_step(dl))  # FileNotFoundError as on G2
        result = self._run(
            ["/bin/sh", "-c", 'realpath -- "$1" 2>/dev/null || readlink -f -- "$1"', "sh", p], dl
        )
        out = result.stdout.decode("utf-8", "surrogateescape")
        if result.returncode != 0 or not out.startswith("/"):
            self._diagnose(p, p, result, dl)
        return _normpath(out[:-1] if out.endswith("\n") else out)

    def resolve(
        self, path: PathArg = ".", *, strict: bool = False, timeout: Timeoutish = UNSET
    ) -> str:
        """Like ``Path.resolve``: links resolved; with ``strict=False`` a missing tail is kept
        as written (its existing head is resolved)."""
        p = self.abspath(path)
        dl = _deadline(timeout)
        try:
            return self.canonicalize(p, timeout=_step(dl))
        except FileNotFoundError:
            if strict or p == "/":
                raise
        head, name = posixpath.split(p)
        return posixpath.join(self.resolve(head, timeout=_step(dl)), name)

    # ------------------------------------------------------------------ streams

    @overload
    def open(
        self,
        path: PathArg,
        mode: Literal["rb"],
        *,
        buffering: int = -1,
        timeout: Timeoutish = UNSET,
    ) -> io.BufferedReader: ...

    @overload
    def open(
        self,
        path: PathArg,
        mode: Literal["wb"],
        *,
        buffering: int = -1,
        timeout: Timeoutish = UNSET,
    ) -> io.BufferedWriter: ...

    @overload
    def open(
        self,
        path: PathArg,
        mode: Literal["r", "w", "rt", "wt"] = "r",
        *,
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        timeout: Timeoutish = UNSET,
    ) -> io.TextIOWrapper: ...

    @overload
    def open(
        self,
        path: PathArg,
        mode: str,
        *,
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        timeout: Timeoutish = UNSET,
    ) -> IO[Any]: ...

    def open(
        self,
        path: PathArg,
        mode: str = "r",
        *,
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        timeout: Timeoutish = UNSET,
    ) -> IO[Any]:
        """Open a remote file as a real file object (use it in a ``with`` block).

        ``"rb"``: an ``io.BufferedReader`` (1 MiB buffer) that is seekable; reads go through
        block handles, or on G1 through ``dd`` processes, one 8 MiB window at a time.
        ``"wb"``: an ``io.BufferedWriter``; the file is created/truncated now, data goes out in
        1 MiB blocks (G1: 2 MiB parts, see the module notes). ``"r"``/``"w"`` wrap those in an
        ``io.TextIOWrapper`` (UTF-8 unless ``encoding``). ``buffering=0`` gives the raw binary
        object. ``timeout`` applies to every call the file makes.

        Each open file holds one server handle; servers allow 128 per connection.
        Raises ``FileNotFoundError``, ``IsADirectoryError``, ``ValueError`` for other modes.
        """
        kind = mode.replace("t", "")
        if kind not in ("r", "w", "rb", "wb", "br", "bw") or ("b" in mode and "t" in mode):
            raise ValueError(f"unsupported mode {mode!r}: use 'rb', 'wb', 'r' or 'w'")
        binary = "b" in kind
        reading = "r" in kind
        if binary and (encoding is not None or errors is not None or newline is not None):
            raise ValueError("binary mode takes no encoding, errors or newline argument")
        p = self.abspath(path)
        raw: _RawReader | _RawWriter
        raw = self._raw_reader(p, timeout) if reading else self._raw_writer(p, timeout)
        if buffering == 0:
            if not binary:
                raise ValueError("can't have unbuffered text I/O")
            return cast(IO[Any], raw)
        size = BLOCK_SIZE if buffering in (-1, 1) else buffering
        buffered: io.BufferedReader | io.BufferedWriter
        if isinstance(raw, _RawReader):
            buffered = io.BufferedReader(raw, buffer_size=size)
        else:
            buffered = io.BufferedWriter(raw, buffer_size=size)
        if binary:
            return buffered
        return io.TextIOWrapper(
            buffered, encoding=encoding or "utf-8", errors=errors, newline=newline
        )

    def _raw_reader(self, p: str, timeout: Timeoutish) -> _RawReader:
        if "blocks" in self.features:
            hid = self._open_handle(p, "read", timeout)
            return _RawReader(p, _BlockSource(self, p, hid, timeout))
        meta = self._backend.get_metadata(p, timeout=timeout)
        if meta.is_directory:
            raise _is_dir_error(p)
        if not meta.is_file:
            raise _not_regular(p)
        return _RawReader(p, _WindowSource(self, p, timeout))

    def _raw_writer(self, p: str, timeout: Timeoutish) -> _RawWriter:
        if "blocks" in self.features:
            hid = self._open_handle(p, "replace", timeout)
            return _RawWriter(p, _BlockSink(self, hid, timeout))
        return _RawWriter(p, _G1Sink(self, p, None, per_call=timeout))

    # ------------------------------------------------------------------ transfers

    def upload(
        self,
        local: str | os.PathLike[str],
        remote: PathArg,
        *,
        progress: Progress | None = None,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Copy a local file to the remote path ``remote``, or a local directory tree to the
        remote directory ``remote`` (like ``shutil.copytree(..., dirs_exist_ok=True)``).

        Files are streamed with bounded memory and arrive byte-exact; small files of a tree go
        several at a time. Links to files are copied as files; links to directories and special
        files are skipped. ``progress(done, total)`` is called on this thread: first with 0,
        last with ``done == total``, never decreasing.

        Raises:
            FileNotFoundError: ``local`` is missing, or the remote parent of a single file is.
            IsADirectoryError: a single file onto a remote directory.
            FileExistsError, NotADirectoryError: a remote file stands where a directory goes.
        """
        src = os.fspath(local)
        dst = self.abspath(remote)
        dl = _deadline(timeout)
        st = os.stat(src)
        meter = _Meter(progress)
        if not _stat.S_ISDIR(st.st_mode):
            meter.start(st.st_size)
            self._upload_file(src, dst, st.st_size, meter, dl)
            meter.finish()
            return
        dirs, files = _scan_local(src)
        meter.start(sum(size for _, size in files))
        self._backend.create_directory(dst, recursive=True, timeout=_step(dl))
        for rel in _leaf_dirs(dirs):
            self._backend.create_directory(
                posixpath.join(dst, rel), recursive=True, timeout=_step(dl)
            )
        small = [(rel, size) for rel, size in files if size <= _POOL_FILE]
        large = [(rel, size) for rel, size in files if size > _POOL_FILE]

        def put_small(rel: str, size: int) -> int:
            with open(os.path.join(src, *rel.split("/")), "rb") as f:
                data = f.read()
            self._backend.write_file(posixpath.join(dst, rel), data, timeout=_step(dl))
            return len(data)

        self._pooled(small, put_small, meter)
        for rel, size in large:
            self._upload_file(
                os.path.join(src, *rel.split("/")), posixpath.join(dst, rel), size, meter, dl
            )
        meter.finish()

    def _upload_file(
        self, src: str, dst: str, size: int, meter: _Meter, dl: Deadline | None
    ) -> None:
        with open(src, "rb") as f:
            if size <= self._one_call_write:
                data = f.read()
                self._backend.write_file(dst, data, timeout=_step(dl))
                meter.add(len(data))
            else:
                self._write_from(dst, f.read, dl, meter)

    def download(
        self,
        remote: PathArg,
        local: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Copy a remote file to the local path ``local``, or a remote directory tree into the
        local directory ``local`` (created if needed; existing files are replaced).

        Streamed with bounded memory, byte-exact; small files of a tree go several at a time.
        Links to files arrive as files; links to directories and special files are skipped.
        ``progress(done, total)`` as in :meth:`upload`.

        Raises:
            FileNotFoundError: ``remote`` is missing, or the local parent of a single file is.
            IsADirectoryError: a single file onto a local directory.
            OSError: ``remote`` is a special file (FIFO, device).
        """
        src = self.abspath(remote)
        dst = os.fspath(local)
        dl = _deadline(timeout)
        meter = _Meter(progress)
        meta = self._backend.get_metadata(src, timeout=_step(dl))
        if not meta.is_directory:
            if not meta.is_file:
                raise _not_regular(src)
            size = meta.size if meta.size is not None else self._g1_sizes([src], dl)[0]
            meter.start(size)
            self._download_file(src, dst, size, meter, dl)
            meter.finish()
            return
        dirs, files = self._scan_remote(src, dl)
        meter.start(sum(size for _, size in files))
        os.makedirs(dst, exist_ok=True)
        for rel in dirs:
            os.makedirs(os.path.join(dst, *rel.split("/")), exist_ok=True)
        small = [(rel, size) for rel, size in files if size <= _POOL_FILE]
        large = [(rel, size) for rel, size in files if size > _POOL_FILE]

        def get_small(rel: str, size: int) -> int:
            data = self._backend.read_file(posixpath.join(src, rel), timeout=_step(dl))
            with open(os.path.join(dst, *rel.split("/")), "wb") as f:
                f.write(data)
            return len(data)

        self._pooled(small, get_small, meter)
        for rel, size in large:
            self._download_file(
                posixpath.join(src, rel), os.path.join(dst, *rel.split("/")), size, meter, dl
            )
        meter.finish()

    def _download_file(
        self, src: str, dst: str, size: int, meter: _Meter, dl: Deadline | None
    ) -> None:
        with open(dst, "wb") as f:
            if size <= _ONE_CALL:
                try:
                    data = self._backend.read_file(src, timeout=_step(dl))
                except errors.InvalidRequest as exc:
                    self._explain_refused_read(src, exc, dl)
                    raise
                f.write(data)
                meter.add(len(data))
                return
            for chunk in self._read_chunks(src, dl):
                f.write(chunk)
                meter.add(len(chunk))

    def _scan_remote(
        self, root: str, dl: Deadline | None
    ) -> tuple[list[str], list[tuple[str, int]]]:
        """Relative directories and (relative file, size) below ``root``, as transfers see it:
        links to files count as files, links to directories and special files are skipped."""
        dirs: list[str] = []
        files: list[str] = []
        pending = [""]
        unknown_sizes: list[str] = []
        sizes: dict[str, int] = {}
        with _pool(_WORKERS) as pool:
            while pending:
                level, pending = pending, []
                listings = [
                    pool.submit(
                        self._backend.read_directory,
                        posixpath.join(root, rel) if rel else root,
                        timeout=_step(dl),
                    )
                    for rel in level
                ]
                probes: list[tuple[str, bool, concurrent.futures.Future[FileMetadata]]] = []
                for rel, fut in zip(level, listings, strict=True):
                    for entry in fut.result():
                        child = f"{rel}/{entry.name}" if rel else entry.name
                        if not entry.is_dir and not entry.is_file:
                            continue
                        needs_meta = (entry.is_dir and entry.is_symlink is None) or (entry.is_file)
                        if entry.is_dir and entry.is_symlink:
                            continue
                        if needs_meta:
                            probes.append(
                                (
                                    child,
                                    entry.is_dir,
                                    pool.submit(
                                        self._backend.get_metadata,
                                        posixpath.join(root, child),
                                        timeout=_step(dl),
                                    ),
                                )
                            )
                        else:
                            dirs.append(child)
                            pending.append(child)
                for child, is_dir, mfut in probes:
                    try:
                        meta = mfut.result()
                    except FileNotFoundError:
                        continue  # removed meanwhile
                    if is_dir:
                        if not meta.is_symlink:
                            dirs.append(child)
                            pending.append(child)
                    else:
                        files.append(child)
                        if meta.size is None:
                            unknown_sizes.append(child)
                        else:
                            sizes[child] = meta.size
        if unknown_sizes:
            found = self._g1_sizes([posixpath.join(root, rel) for rel in unknown_sizes], dl)
            sizes.update(zip(unknown_sizes, found, strict=True))
        dirs.sort()
        return dirs, [(rel, sizes[rel]) for rel in sorted(files)]

    def _pooled(
        self,
        items: list[tuple[str, int]],
        work: Callable[[str, int], int],
        meter: _Meter,
    ) -> None:
        """Run ``work`` over ``items`` on a few threads; progress is reported on this thread."""
        if not items:
            return
        if len(items) == 1:
            meter.add(work(*items[0]))
            return
        with _pool(min(_WORKERS, len(items))) as pool:
            futures = [pool.submit(work, rel, size) for rel, size in items]
            for fut in concurrent.futures.as_completed(futures):
                meter.add(fut.result())

    # ------------------------------------------------------------------ G1 process helpers

    def _run(self, argv: Sequence[str], dl: Deadline | None) -> subprocess.CompletedProcess[bytes]:
        """Run a helper command in the environment (G1 fallbacks, move)."""
        if self._host is None:
            raise errors.UnsupportedByServer(
                f"{argv[0]} fallback", hint="this Fs has no environment to run processes in"
            )
        budget: float | None
        if dl is None:
            # Helper commands move up to 32 MiB; give them at least a minute.
            limit = self._host.timeout
            budget = None if limit is None else max(limit, 60.0)
        else:
            budget = dl.left()
            if budget is not None and budget <= 0:
                raise errors.RequestTimeout(argv[0], dl.total, "the operation ran out of time")
        return self._host.run(list(argv), timeout=budget)

    def _diagnose(
        self, src: str, dst: str, result: subprocess.CompletedProcess[bytes], dl: Deadline | None
    ) -> None:
        """A helper process failed: raise the builtin error that explains it."""
        message = (
            result.stderr.decode("utf-8", "replace").strip() or f"exit status {result.returncode}"
        )
        self._backend.get_metadata(src, timeout=_step(dl))  # FileNotFoundError for the source
        parent = posixpath.dirname(dst)
        if parent != dst:
            self._backend.get_metadata(parent, timeout=_step(dl))
        argv = result.args if isinstance(result.args, list) else [str(result.args)]
        raise errors.os_error(None, f"{argv[0]} failed: {message}", src)

    def _g1_window(self, p: str, offset: int, dl: Deadline | None) -> bytes:
        """Up to 8 MiB at ``offset`` (a multiple of 1 MiB) through ``dd``."""
        result = self._run(
            [
                "dd",
                f"if={p}",
                f"bs={_MiB}",
                f"skip={offset // _MiB}",
                f"count={_G1_WINDOW // _MiB}",
            ],
            dl,
        )
        if result.returncode != 0:
            self._diagnose(p, p, result, dl)
        return result.stdout

    def _g1_sizes(self, paths: Sequence[str], dl: Deadline | None) -> list[int]:
        """Sizes of files on a server whose metadata has none (G1), a few hundred per process."""
        sizes: list[int] = []
        batch: list[str] = []
        budget = 0

        def flush() -> None:
            result = self._run(
                [
                    "/bin/sh",
                    "-c",
                    'for f do wc -c < "$f" 2>/dev/null || echo -1; done',
                    "sh",
                    *batch,
                ],
                dl,
            )
            values = [int(v) for v in result.stdout.split()]
            if len(values) != len(batch):
                self._diagnose(batch[0], batch[0], result, dl)
            for path, value in zip(batch, values, strict=True):
                if value < 0:
                    self._backend.get_metadata(path, timeout=_step(dl))
                    raise errors.os_error(None, "cannot read the file size", path)
            sizes.extend(values)

        for path in paths:
            if batch and (len(batch) >= 500 or budget + len(path) > 64 * 1024):
                flush()
                batch, budget = [], 0
            batch.append(path)
            budget += len(path) + 1
        if batch:
            flush()
        return sizes


RemoteFs = Fs
"""The same class under the name the issues use."""


# --------------------------------------------------------------------------- walk helpers


def _walk_tree(
    tree: dict[str, tuple[list[str], list[str]]], top: str, topdown: bool
) -> Iterator[tuple[str, list[str], list[str]]]:
    entry = tree.get(top)
    if entry is None:
        return
    dirs, files = list(entry[0]), list(entry[1])
    if topdown:
        yield top, dirs, files
    for name in dirs:
        yield from _walk_tree(tree, posixpath.join(top, name), topdown)
    if not topdown:
        yield top, dirs, files


def _scan_local(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(root, *rel.split("/")) if rel else root) as it:
            children = sorted(it, key=lambda e: e.name)
        for entry in children:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                dirs.append(child)
                pending.append(child)
            elif entry.is_file(follow_symlinks=True):
                files.append((child, entry.stat(follow_symlinks=True).st_size))
    return sorted(dirs), sorted(files)


def _leaf_dirs(dirs: list[str]) -> list[str]:
    """Directories that are not a parent of another (creating these creates them all)."""
    parents = {posixpath.dirname(d) for d in dirs}
    return [d for d in dirs if d not in parents]


class _Meter:
    """Monotone progress reporting: first (0, total), last (total, total)."""

    def __init__(self, callback: Progress | None) -> None:
        self._callback = callback
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        self._emit()

    def add(self, n: int) -> None:
        if n:
            self.done += n
            self._emit()

    def finish(self) -> None:
        if self.done != self.total:
            # A file changed size while it moved: report what really moved, as the total.
            self.total = self.done
            self._emit()

    def _emit(self) -> None:
        if self._callback is not None:
            self._callback(min(self.done, self.total), self.total)


# --------------------------------------------------------------------------- file objects


class _BlockSource:
    """Reads through an ``fs/open`` handle (1 MiB per call)."""

    def __init__(self, fs: Fs, path: str, hid: str, timeout: Timeoutish) -> None:
        self._fs = fs
        self._path = path
        self._hid = hid
        self._timeout = timeout

    def read_at(self, offset: int, n: int) -> tuple[bytes, bool]:
        return self._fs.backend.read_block(
            self._hid, offset, max(1, min(n, BLOCK_SIZE)), timeout=self._timeout
        )

    def size(self) -> int:
        size = self._fs.backend.get_metadata(self._path, timeout=self._timeout).size
        if size is None:
            raise io.UnsupportedOperation("the server reports no file size")
        return size

    def close(self) -> None:
        if _in_reader_thread():  # never block the thread that delivers the answer
            log.warning("file handle of %s not closed: closed from the reader thread", self._path)
            return
        self._fs.backend.close_handle(self._hid, timeout=self._timeout)


class _WindowSource:
    """G1 reads: one ``dd`` process per 8 MiB window; the last window fetched is kept."""

    def __init__(self, fs: Fs, path: str, timeout: Timeoutish) -> None:
        self._fs = fs
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
            start = offset - offset % _MiB
            data = self._fs._g1_window(self._path, start, _deadline(self._timeout))
            self._start, self._data = start, data
            if len(data) < _G1_WINDOW:
                self._size = start + len(data)
            if offset >= start + len(data):
                return b"", True
        rel = offset - self._start
        chunk = self._data[rel : rel + n]
        eof = self._size is not None and offset + len(chunk) >= self._size
        return chunk, eof

    def size(self) -> int:
        if self._size is None:
            self._size = self._fs._g1_sizes([self._path], _deadline(self._timeout))[0]
        return self._size

    def close(self) -> None:
        self._data = b""


class _BlockSink:
    """Writes through an ``fs/open`` ``replace`` handle (at most 1 MiB per call)."""

    max_write = BLOCK_SIZE

    def __init__(self, fs: Fs, hid: str, timeout: Timeoutish) -> None:
        self._fs = fs
        self._hid = hid
        self._timeout = timeout

    def write(self, offset: int, data: bytes) -> None:
        self._fs.backend.write_block(self._hid, offset, data, timeout=self._timeout)

    def finish(self) -> None:
        if _in_reader_thread():
            log.warning("file handle %s not closed: closed from the reader thread", self._hid)
            return
        self._fs.backend.close_handle(self._hid, timeout=self._timeout)


class _G1Sink:
    """G1 writes of any size. The first 2 MiB part is written in place with ``fs/writeFile``;
    later parts are staged as ``<dst>.execsdk-part-N`` and appended, up to 16 at a time, by
    ``cat`` in a short helper process that then removes them (at most 32 MiB staged on disk).
    Parts stay small because each message costs the client several times its size in memory.

    ``dl`` bounds the whole write; without it every step gets ``per_call`` (file objects).
    """

    max_write = _G1_PART

    def __init__(
        self, fs: Fs, dst: str, dl: Deadline | None, *, per_call: Timeoutish | None = None
    ) -> None:
        self._fs = fs
        self._dst = dst
        self._dl = dl
        self._per_call = per_call
        self._parts = 0
        self._staged: list[str] = []
        self._buffer = bytearray()
        if per_call is not None:
            # A file object: create/truncate now, as fs/open "replace" does (and fail early).
            fs.backend.write_file(dst, b"", timeout=_step(self._deadline()))

    def _deadline(self) -> Deadline | None:
        if self._dl is not None or self._per_call is None:
            return self._dl
        return _deadline(self._per_call)

    def write(self, offset: int, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= _G1_PART:
            part = bytes(self._buffer[:_G1_PART])
            del self._buffer[:_G1_PART]
            self.write_part(part)

    def write_part(self, data: bytes) -> None:
        backend = self._fs.backend
        if self._parts == 0:
            backend.write_file(self._dst, data, timeout=_step(self._deadline()))
            self._parts = 1
            return
        part = f"{self._dst}.execsdk-part-{self._parts}"
        self._staged.append(part)  # before writing: abort() removes it whatever happens
        backend.write_file(part, data, timeout=_step(self._deadline()))
        self._parts += 1
        if len(self._staged) >= _G1_JOIN:
            self._join()

    def _join(self) -> None:
        if not self._staged:
            return
        script = 'd=$1; shift; cat -- "$@" >> "$d"; s=$?; rm -f -- "$@"; exit $s'
        argv = ["/bin/sh", "-c", script, "sh", self._dst, *self._staged]
        result = self._fs._run(argv, self._deadline())
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
                self._fs.backend.remove(part, recursive=False, force=True)
            except Exception as exc:
                log.warning("could not remove staged part %s: %r", part, exc)
        self._staged.clear()


class _RawReader(io.RawIOBase):
    """Seekable raw binary reader over a block handle or G1 windows. One thread at a time (the
    ``io.BufferedReader`` around it serialises callers)."""

    def __init__(self, name: str, source: _BlockSource | _WindowSource) -> None:
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
        parts: list[bytes] = []
        while True:
            data, eof = self._source.read_at(self._pos, BLOCK_SIZE)
            parts.append(data)
            self._pos += len(data)
            if eof or not data:
                return b"".join(parts)

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


class _RawWriter(io.RawIOBase):
    """Sequential raw binary writer over a block handle or the G1 part writer. One thread at a
    time (the ``io.BufferedWriter`` around it serialises callers)."""

    def __init__(self, name: str, sink: _BlockSink | _G1Sink) -> None:
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


# --------------------------------------------------------------------------- RemotePath


class RemotePath:
    """A path on an environment, bound to its :class:`Fs`, with pathlib's names.

    Pure operations (``/``, ``name``, ``parent``, ``with_suffix`` ...) never call the server;
    the others call :class:`Fs`. It is deliberately not a ``pathlib.Path`` (an inherited method
    would quietly touch the local disk) and has no ``__fspath__`` (it is not a local path).
    Paths are absolute and normalised (``..`` resolved textually, as the server does).
    Equal when they name the same path on the same backend.

    Thread-safety: immutable; safe to share.
    """

    __slots__ = ("_fs", "_path", "_pure")

    def __init__(self, fs: Fs, path: PathArg = ".") -> None:
        self._fs = fs
        self._path = fs.abspath(path)
        self._pure = PurePosixPath(self._path)

    # ------------------------------------------------------------------ pure part

    @property
    def fs(self) -> Fs:
        """The filesystem this path belongs to."""
        return self._fs

    def __str__(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"RemotePath({self._path!r})"

    def as_posix(self) -> str:
        """The path as a string."""
        return self._path

    def _key(self) -> tuple[int, str]:
        return (id(self._fs.backend), self._path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemotePath):
            return NotImplemented
        return self._fs.backend is other._fs.backend and self._path == other._path

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: RemotePath) -> bool:
        if not isinstance(other, RemotePath):
            return NotImplemented
        return self._pure < other._pure

    def __le__(self, other: RemotePath) -> bool:
        if not isinstance(other, RemotePath):
            return NotImplemented
        return self._pure <= other._pure

    def __gt__(self, other: RemotePath) -> bool:
        if not isinstance(other, RemotePath):
            return NotImplemented
        return self._pure > other._pure

    def __ge__(self, other: RemotePath) -> bool:
        if not isinstance(other, RemotePath):
            return NotImplemented
        return self._pure >= other._pure

    def _with(self, path: str | PurePosixPath) -> RemotePath:
        return RemotePath(self._fs, path if isinstance(path, str) else path.as_posix())

    def __truediv__(self, other: str | PurePosixPath | RemotePath) -> RemotePath:
        if isinstance(other, RemotePath):
            return self._with(other.as_posix())
        if isinstance(other, PurePath):
            other = other.as_posix()
        if not isinstance(other, str):
            return NotImplemented
        return self._with(posixpath.join(self._path, other))

    def joinpath(self, *others: str | PurePosixPath | RemotePath) -> RemotePath:
        """``self / a / b ...``."""
        result = self
        for other in others:
            result = result / other
        return result

    @property
    def name(self) -> str:
        """The last component (``""`` for ``/``)."""
        return self._pure.name

    @property
    def suffix(self) -> str:
        """The last component's extension, with the dot."""
        return self._pure.suffix

    @property
    def suffixes(self) -> list[str]:
        """All extensions of the last component."""
        return self._pure.suffixes

    @property
    def stem(self) -> str:
        """The last component without its suffix."""
        return self._pure.stem

    @property
    def parent(self) -> RemotePath:
        """The containing directory (``/`` is its own parent)."""
        return self._with(self._pure.parent)

    @property
    def parents(self) -> tuple[RemotePath, ...]:
        """All ancestors, nearest first."""
        return tuple(self._with(p) for p in self._pure.parents)

    @property
    def parts(self) -> tuple[str, ...]:
        """``("/", "a", "b")`` for ``/a/b``."""
        return self._pure.parts

    @property
    def anchor(self) -> str:
        """Always ``"/"``."""
        return self._pure.anchor

    def is_absolute(self) -> bool:
        """Always True: remote paths are absolute."""
        return True

    def absolute(self) -> RemotePath:
        """The path itself (already absolute)."""
        return self

    def with_name(self, name: str) -> RemotePath:
        """The path with its last component replaced."""
        return self._with(self._pure.with_name(name))

    def with_suffix(self, suffix: str) -> RemotePath:
        """The path with its suffix replaced (``""`` removes it)."""
        return self._with(self._pure.with_suffix(suffix))

    def with_stem(self, stem: str) -> RemotePath:
        """The path with its stem replaced, keeping the suffix."""
        return self.with_name(stem + self.suffix)

    def relative_to(self, other: str | PurePosixPath | RemotePath) -> PurePosixPath:
        """The part below ``other``, as a pure relative path; ``ValueError`` if not below."""
        base = other.as_posix() if isinstance(other, (RemotePath, PurePath)) else other
        return self._pure.relative_to(self._fs.abspath(base))

    def is_relative_to(self, other: str | PurePosixPath | RemotePath) -> bool:
        """True when the path is ``other`` or below it."""
        try:
            self.relative_to(other)
        except ValueError:
            return False
        return True

    def match(self, pattern: str) -> bool:
        """Match against a glob pattern from the right (``PurePath.match``)."""
        return self._pure.match(pattern)

    # ------------------------------------------------------------------ I/O

    def exists(self, *, timeout: Timeoutish = UNSET) -> bool:
        """True if the path exists (a dangling link does not)."""
        return self._fs.exists(self._path, timeout=timeout)

    def is_file(self, *, timeout: Timeoutish = UNSET) -> bool:
        """True for a regular file (or a link to one)."""
        return self._fs.is_file(self._path, timeout=timeout)

    def is_dir(self, *, timeout: Timeoutish = UNSET) -> bool:
        """True for a directory (or a link to one)."""
        return self._fs.is_dir(self._path, timeout=timeout)

    def stat(self, *, timeout: Timeoutish = UNSET) -> FileInfo:
        """See :meth:`Fs.stat`."""
        return self._fs.stat(self._path, timeout=timeout)

    def read_bytes(self, *, timeout: Timeoutish = UNSET) -> bytes:
        """See :meth:`Fs.read_bytes`."""
        return self._fs.read_bytes(self._path, timeout=timeout)

    def read_text(
        self,
        encoding: str = "utf-8",
        errors: str = "strict",
        newline: str | None = None,
        *,
        timeout: Timeoutish = UNSET,
    ) -> str:
        """See :meth:`Fs.read_text`."""
        return self._fs.read_text(self._path, encoding, errors, newline, timeout=timeout)

    def write_bytes(
        self, data: bytes | bytearray | memoryview, *, timeout: Timeoutish = UNSET
    ) -> int:
        """See :meth:`Fs.write_bytes`."""
        return self._fs.write_bytes(self._path, data, timeout=timeout)

    def write_text(
        self,
        data: str,
        encoding: str = "utf-8",
        errors: str = "strict",
        newline: str | None = None,
        *,
        timeout: Timeoutish = UNSET,
    ) -> int:
        """See :meth:`Fs.write_text`."""
        return self._fs.write_text(self._path, data, encoding, errors, newline, timeout=timeout)

    def iterdir(self, *, timeout: Timeoutish = UNSET) -> Iterator[RemotePath]:
        """Children, sorted by name (fetched eagerly in one call)."""
        names = self._fs.listdir(self._path, timeout=timeout)
        return iter([self / name for name in names])

    def glob(self, pattern: str, *, timeout: Timeoutish = UNSET) -> Iterator[RemotePath]:
        """Paths below this directory matching ``pattern`` (``*``, ``?``, ``[...]`` within one
        component, ``**`` for any number of directories), sorted. A pattern ending in ``**`` or
        ``/`` matches directories only. The listing comes from :meth:`Fs.walk`'s machinery, so
        the same notes on symbolic links apply. A missing directory matches nothing.
        """
        if not pattern or pattern.startswith("/"):
            raise ValueError(f"non-relative patterns are unsupported: {pattern!r}")
        pats = [p for p in pattern.split("/") if p and p != "."]
        if not pats:
            raise ValueError(f"unacceptable pattern: {pattern!r}")
        dirs_only = pattern.endswith("/") or pats[-1] == "**"
        depth = None if "**" in pats else len(pats) - 1
        try:
            tree = self._fs._tree(self._path, depth, False, _deadline(timeout))
        except (FileNotFoundError, NotADirectoryError):
            return iter([])
        prefix = self._path.rstrip("/") + "/"
        found: list[tuple[tuple[str, ...], bool]] = [((), True)]
        for directory, (dirs, files) in tree.items():
            rel = () if directory == self._path else tuple(directory[len(prefix) :].split("/"))
            found.extend(((*rel, d), True) for d in dirs)
            found.extend(((*rel, f), False) for f in files)
        matches = sorted(
            {rel for rel, is_dir in found if (is_dir or not dirs_only) and _glob_match(rel, pats)}
        )
        return iter([self.joinpath(*rel) if rel else self for rel in matches])

    def rglob(self, pattern: str, *, timeout: Timeoutish = UNSET) -> Iterator[RemotePath]:
        """``glob("**/" + pattern)``."""
        return self.glob(f"**/{pattern}", timeout=timeout)

    def mkdir(
        self, *, parents: bool = False, exist_ok: bool = False, timeout: Timeoutish = UNSET
    ) -> None:
        """See :meth:`Fs.mkdir`."""
        self._fs.mkdir(self._path, parents=parents, exist_ok=exist_ok, timeout=timeout)

    def unlink(self, *, missing_ok: bool = False, timeout: Timeoutish = UNSET) -> None:
        """Remove this file or link; see :meth:`Fs.remove`."""
        self._fs.remove(self._path, missing_ok=missing_ok, timeout=timeout)

    def rmdir(self, *, timeout: Timeoutish = UNSET) -> None:
        """Remove this empty directory; see :meth:`Fs.rmdir`."""
        self._fs.rmdir(self._path, timeout=timeout)

    def rename(
        self, target: str | PurePosixPath | RemotePath, *, timeout: Timeoutish = UNSET
    ) -> RemotePath:
        """Move to ``target`` (see :meth:`Fs.move`) and return the new path."""
        return self._with(self._fs.move(self._path, target, timeout=timeout))

    def resolve(self, *, strict: bool = False, timeout: Timeoutish = UNSET) -> RemotePath:
        """See :meth:`Fs.resolve`."""
        return self._with(self._fs.resolve(self._path, strict=strict, timeout=timeout))

    def open(
        self,
        mode: str = "r",
        *,
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        timeout: Timeoutish = UNSET,
    ) -> IO[Any]:
        """See :meth:`Fs.open`."""
        return self._fs.open(
            self._path,
            mode,
            buffering=buffering,
            encoding=encoding,
            errors=errors,
            newline=newline,
            timeout=timeout,
        )


def _glob_match(parts: tuple[str, ...], pats: list[str]) -> bool:
    if not pats:
        return not parts
    head = pats[0]
    if head == "**":
        return _glob_match(parts, pats[1:]) or (bool(parts) and _glob_match(parts[1:], pats))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _glob_match(parts[1:], pats[1:])
