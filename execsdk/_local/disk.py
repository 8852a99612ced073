"""The local filesystem backend: the real disk of this Python process, with exec-server semantics.

Our server wraps this class directly (one instance per connection), so every method follows what
codex ``exec-server`` 0.169 does for the matching ``fs/*`` method (PROTOCOL.md §3.10-3.19 and §6
items 35-43): the same error kinds, the same refusals, the same walk order and limits. Where codex
would destroy data (copying a file onto itself truncates it to zero bytes) we keep the answer
(success) but not the damage.

Paths are absolute POSIX strings. ``..`` is resolved textually before the disk is touched
(``/a/link/../b`` is ``/a/b`` whatever ``link`` points to), as the protocol requires (item 42).

Errors: OS failures raise the builtin-mapped ``errors.RemoteOSError`` subclasses built by
``errors.os_error`` (``FileNotFoundError`` for ENOENT, ...); semantic refusals raise
``errors.InvalidRequest`` with codex's wording; an unknown block handle raises
``errors.NotFound`` (-32004).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import posixpath
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

from execsdk import errors
from execsdk._deadline import UNSET, Timeoutish
from execsdk.backends import DirEntry, FileMetadata, WalkEntry, WalkResult

__all__ = ["LocalFsBackend"]

log = logging.getLogger(__name__)

MAX_READ_FILE = 512 * 1024 * 1024
"""``fs/readFile`` refuses bigger files (codex: "file is too large to read")."""
MAX_BLOCK = 1024 * 1024
"""Largest ``fs/readBlock`` length and ``fs/writeBlock`` chunk."""
MAX_HANDLES = 128
"""Open block handles per backend (per connection on the server)."""
MAX_HANDLE_ID_BYTES = 32

WALK_MAX_DEPTH = 64
WALK_MAX_DIRECTORIES = 10_000
WALK_MAX_ENTRIES = 50_000
"""``fs/walk`` refuses larger limits (codex 0.169: "filesystem walk limits exceed maximums")."""

_FEATURES = frozenset({"canonicalize", "walk", "blocks"})

Opener = Callable[[str, int, int], int]
"""``opener(path, flags, mode) -> fd``: how :meth:`LocalFsBackend.read_file`, ``write_file``
and ``open`` get their descriptor when not from ``os.open`` (``execsdk serve --root`` opens
beneath the root with openat2)."""


def _normalize(path: str, method: str) -> str:
    """Validate an absolute path and resolve ``.``/``..`` textually (PROTOCOL.md §6 item 42)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise errors.InvalidParams(
            -32602, f"path must be an absolute POSIX path, not {path!r}", method=method
        )
    if "\x00" in path:
        raise errors.InvalidParams(-32602, "path contains a NUL byte", method=method)
    norm = posixpath.normpath(path)
    # POSIX keeps a leading "//" as implementation-defined; the server treats it as "/".
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


@contextlib.contextmanager
def _mapped(method: str, path: str) -> Iterator[None]:
    """Turn a builtin ``OSError`` into the matching ``errors.RemoteOSError`` subclass."""
    try:
        yield
    except errors.ExecSdkError:
        raise
    except OSError as exc:
        code = exc.errno
        strerror = exc.strerror or (os.strerror(code) if code else str(exc))
        filename = exc.filename if isinstance(exc.filename, str) else path
        raise errors.os_error(code, strerror, filename, method=method) from exc


def _not_a_file(path: str, method: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(-32600, f"path `{path}` is not a file", method=method)


class _Handle:
    """One open block handle: a file descriptor and its direction."""

    __slots__ = ("closed", "fd", "lock", "mode", "path")

    def __init__(self, fd: int, mode: str, path: str) -> None:
        self.fd = fd
        self.mode = mode
        self.path = path
        self.lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                os.close(self.fd)


_RESERVED = object()
"""Placeholder in the handle table while an ``open`` is in progress (keeps ids unique)."""


class LocalFsBackend:
    """``FsBackend`` on the local disk with exec-server semantics.

    Each instance owns its own table of block handles (the server creates one instance per
    connection); :meth:`close` closes them all. The ``timeout`` arguments are accepted for
    interface compatibility and ignored: local disk calls are not interruptible.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[str, _Handle | object] = {}
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def features(self) -> frozenset[str]:
        """All optional groups: ``canonicalize``, ``walk`` and ``blocks``."""
        return _FEATURES

    def close(self) -> None:
        """Close every open block handle. Idempotent; the backend stays usable afterwards."""
        with self._lock:
            handles = [h for h in self._handles.values() if isinstance(h, _Handle)]
            self._handles.clear()
        for handle in handles:
            with contextlib.suppress(OSError):
                handle.close()

    def open_handle_count(self) -> int:
        """Number of open block handles (for tests and diagnostics)."""
        with self._lock:
            return len(self._handles)

    def __enter__(self) -> LocalFsBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ whole files

    def read_file(
        self, path: str, *, timeout: Timeoutish = UNSET, opener: Opener | None = None
    ) -> bytes:
        """Whole content of a regular file (``fs/readFile``); at most 512 MiB."""
        method = "fs/readFile"
        p = _normalize(path, method)
        with _mapped(method, p):
            # O_NONBLOCK: opening a FIFO must not hang; it is refused below anyway.
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(p, flags) if opener is None else opener(p, flags, 0)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise _not_a_file(p, method)
                if st.st_size > MAX_READ_FILE:
                    raise errors.InvalidRequest(
                        -32600,
                        f"file is too large to read: limit is {MAX_READ_FILE} bytes",
                        method=method,
                    )
                parts: list[bytes] = []
                while chunk := os.read(fd, max(st.st_size, 1 << 16)):
                    parts.append(chunk)
                return b"".join(parts)
            finally:
                os.close(fd)

    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        timeout: Timeoutish = UNSET,
        opener: Opener | None = None,
    ) -> None:
        """Create or truncate a file (``fs/writeFile``); the parent must exist."""
        method = "fs/writeFile"
        p = _normalize(path, method)
        with _mapped(method, p):
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = os.open(p, flags, 0o666) if opener is None else opener(p, flags, 0o666)
            try:
                _write_all(fd, memoryview(data))
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ directories and metadata

    def create_directory(
        self, path: str, *, recursive: bool = True, timeout: Timeoutish = UNSET
    ) -> None:
        """``fs/createDirectory``: existing directories are fine only when ``recursive``."""
        method = "fs/createDirectory"
        p = _normalize(path, method)
        with _mapped(method, p):
            if recursive:
                # An existing file or dangling link still raises FileExistsError (as codex).
                os.makedirs(p, exist_ok=True)
            else:
                os.mkdir(p)

    def get_metadata(self, path: str, *, timeout: Timeoutish = UNSET) -> FileMetadata:
        """``fs/getMetadata``: follows symlinks for type and size, flags ``is_symlink``."""
        return self._stat("fs/getMetadata", path)[0]

    def get_metadata_and_mode(
        self, path: str, *, timeout: Timeoutish = UNSET
    ) -> tuple[FileMetadata, int]:
        """``fs/stat`` (our extension): :meth:`get_metadata` plus the permission bits
        (``stat.S_IMODE``) of the file a link leads to."""
        return self._stat("fs/stat", path)

    def _stat(self, method: str, path: str) -> tuple[FileMetadata, int]:
        p = _normalize(path, method)
        with _mapped(method, p):
            st = os.stat(p)
            is_link = stat.S_ISLNK(os.lstat(p).st_mode)
        return stat_metadata(st, is_link)

    @property
    def supports_modes(self) -> bool:
        """Always True: :meth:`set_mode` and :meth:`get_metadata_and_mode` work here."""
        return True

    def set_mode(self, path: str, mode: int, *, timeout: Timeoutish = UNSET) -> None:
        """``fs/setMode`` (our extension): ``chmod`` to exactly ``mode`` (0 ... 0o7777),
        following a link to its target, as ``os.chmod`` does.

        Raises ``errors.InvalidParams`` for a mode outside 0 ... 0o7777 (file-type bits are
        not permission bits), ``FileNotFoundError``, ``PermissionError`` (not the owner).
        """
        method = "fs/setMode"
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise errors.InvalidParams(
                -32602,
                f"invalid mode {mode!r}: expected permission bits 0..=4095 (0o7777)",
                method=method,
            )
        p = _normalize(path, method)
        with _mapped(method, p):
            os.chmod(p, mode)

    def read_directory(self, path: str, *, timeout: Timeoutish = UNSET) -> list[DirEntry]:
        """``fs/readDirectory``: links report their target's type; dangling links are omitted."""
        method = "fs/readDirectory"
        p = _normalize(path, method)
        out: list[DirEntry] = []
        with _mapped(method, p), os.scandir(p) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue  # dangling link or loop: codex leaves it out
                out.append(
                    DirEntry(
                        name=entry.name,
                        is_file=stat.S_ISREG(st.st_mode),
                        is_dir=stat.S_ISDIR(st.st_mode),
                        is_symlink=entry.is_symlink(),
                    )
                )
        return out

    def remove(
        self,
        path: str,
        *,
        recursive: bool = True,
        force: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """``fs/remove``: a link is removed itself, never its target."""
        method = "fs/remove"
        p = _normalize(path, method)
        with _mapped(method, p):
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                if force:
                    return
                raise
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    shutil.rmtree(p)
                else:
                    os.rmdir(p)
            else:
                os.unlink(p)

    def copy(
        self, source: str, destination: str, *, recursive: bool, timeout: Timeoutish = UNSET
    ) -> None:
        """``fs/copy``: links are copied as links; directories need ``recursive``.

        A directory copy creates missing parents and merges into an existing directory: files
        are replaced, a link or directory that meets an existing entry of another kind fails.
        """
        method = "fs/copy"
        src = _normalize(source, method)
        dst = _normalize(destination, method)
        with _mapped(method, src):
            st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            with _mapped(method, dst):
                os.symlink(os.readlink(src), dst)
            return
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise errors.InvalidRequest(
                    -32600,
                    "fs/copy requires recursive: true when sourcePath is a directory",
                    method=method,
                )
            if _inside(dst, src) or _inside(os.path.realpath(dst), os.path.realpath(src)):
                # The second test (through links) goes beyond codex: it would recurse forever.
                raise errors.InvalidRequest(
                    -32600,
                    "fs/copy cannot copy a directory to itself or one of its descendants",
                    method=method,
                )
            with _mapped(method, dst):
                # As codex: missing parents are created and an existing directory is merged into
                # (files replaced, an existing link or file where a link/directory goes fails).
                os.makedirs(dst, exist_ok=True)
                _copy_tree_contents(src, dst)
            return
        if not stat.S_ISREG(st.st_mode):
            raise errors.InvalidRequest(
                -32600,
                "fs/copy only supports regular files, directories, and symlinks",
                method=method,
            )
        with _mapped(method, dst):
            with contextlib.suppress(OSError):
                if os.path.samefile(src, dst):
                    return  # codex truncates the file here; keep the data instead
            _copy_file(src, dst)

    def canonicalize(self, path: str, *, timeout: Timeoutish = UNSET) -> str:
        """``fs/canonicalize``: the absolute path with every symlink resolved; must exist."""
        method = "fs/canonicalize"
        p = _normalize(path, method)
        with _mapped(method, p):
            return os.path.realpath(p, strict=True)

    def walk(
        self,
        path: str,
        *,
        max_depth: int,
        max_directories: int,
        max_entries: int,
        follow_directory_symlinks: bool = False,
        timeout: Timeoutish = UNSET,
    ) -> WalkResult:
        """``fs/walk``, breadth first with names sorted per directory, as codex 0.169 does.

        Reported: regular files (``"file"``) and directories (``"directory"``). Symlinks are left
        out, except links to directories when ``follow_directory_symlinks`` (reported as
        directories, descended once per real directory). Special files are left out. Children of
        the root have depth 0; directories deeper than ``max_depth`` are listed but not read.
        Every directory entry examined counts toward ``max_entries`` (reported or not); every
        directory read, the root included, counts toward ``max_directories``. Hitting either
        limit sets ``truncated``. A root that is not a directory gives no entries. Limits must be
        positive (depth may be 0) and at most depth 64, 10,000 directories, 50,000 entries.
        """
        method = "fs/walk"
        root = _normalize(path, method)
        check_walk_limits(max_depth, max_directories, max_entries)
        with _mapped(method, root):
            lst = os.lstat(root)
            st = os.stat(root) if stat.S_ISLNK(lst.st_mode) and follow_directory_symlinks else lst
        if not stat.S_ISDIR(st.st_mode):
            return WalkResult(entries=(), errors=(), truncated=False)
        follow = follow_directory_symlinks

        @contextlib.contextmanager
        def listing(directory: str) -> Iterator[tuple[list[str], ChildStat[str]]]:
            names = sorted(os.listdir(directory))

            def child_stat(name: str) -> tuple[os.stat_result, str] | None:
                child = posixpath.join(directory, name)
                try:
                    cst = os.lstat(child)
                    if stat.S_ISLNK(cst.st_mode):
                        if not follow:
                            return None
                        cst = os.stat(child)
                        if not stat.S_ISDIR(cst.st_mode):
                            return None
                except OSError:
                    return None
                return cst, child

            yield names, child_stat

        return breadth_first_walk(
            root,
            root,
            st,
            listing,
            max_depth=max_depth,
            max_directories=max_directories,
            max_entries=max_entries,
        )

    # ------------------------------------------------------------------ block handles

    def open(
        self,
        handle_id: str,
        path: str,
        *,
        mode: Literal["read", "replace"] = "read",
        timeout: Timeoutish = UNSET,
        opener: Opener | None = None,
    ) -> None:
        """``fs/open``: ``read`` needs a regular file; ``replace`` creates or truncates now."""
        method = "fs/open"
        if mode not in ("read", "replace"):
            raise errors.InvalidParams(
                -32602, f"unknown variant `{mode}`, expected `read` or `replace`", method=method
            )
        p = _normalize(path, method)
        if len(handle_id.encode("utf-8", "surrogatepass")) > MAX_HANDLE_ID_BYTES:
            raise errors.InvalidRequest(
                -32600, "file handle ID must not exceed 32 bytes", method=method
            )
        with self._lock:
            if handle_id in self._handles:
                raise errors.InvalidRequest(
                    -32600, f"file handle `{handle_id}` already exists", method=method
                )
            if len(self._handles) >= MAX_HANDLES:
                raise errors.InvalidRequest(
                    -32600,
                    f"at most {MAX_HANDLES} file handles may be open per connection",
                    method=method,
                )
            self._handles[handle_id] = _RESERVED
        handle: _Handle | None = None
        try:
            with _mapped(method, p):
                if mode == "read":
                    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
                    fd = os.open(p, flags) if opener is None else opener(p, flags, 0)
                    try:
                        if not stat.S_ISREG(os.fstat(fd).st_mode):
                            raise _not_a_file(p, method)
                    except BaseException:
                        os.close(fd)
                        raise
                else:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                    fd = os.open(p, flags, 0o666) if opener is None else opener(p, flags, 0o666)
            handle = _Handle(fd, mode, p)
        finally:
            with self._lock:
                if handle is not None and self._handles.get(handle_id) is _RESERVED:
                    self._handles[handle_id] = handle
                    handle = None
                elif self._handles.get(handle_id) is _RESERVED:
                    del self._handles[handle_id]
            if handle is not None:  # close() ran meanwhile: do not leak the descriptor
                handle.close()

    def _handle(self, handle_id: str, method: str) -> _Handle:
        with self._lock:
            handle = self._handles.get(handle_id)
        if not isinstance(handle, _Handle):
            raise errors.NotFound(-32004, f"unknown file handle `{handle_id}`", method=method)
        return handle

    @contextlib.contextmanager
    def _block_io(
        self, handle_id: str, offset: int, length: int, mode: Literal["read", "replace"]
    ) -> Iterator[_Handle]:
        """The checks ``fs/readBlock`` and ``fs/writeBlock`` share, in the server's order
        (length, offset, handle, mode); yields the handle locked, with OS errors mapped."""
        method, verb = ("fs/readBlock", "read") if mode == "read" else ("fs/writeBlock", "write")
        if not 1 <= length <= MAX_BLOCK:
            raise errors.InvalidRequest(
                -32600, f"file {verb} block length must be between 1 and {MAX_BLOCK}", method=method
            )
        if offset < 0:
            raise errors.InvalidParams(-32602, "invalid number", method=method)
        handle = self._handle(handle_id, method)
        with handle.lock:
            if handle.closed:
                raise errors.NotFound(-32004, f"unknown file handle `{handle_id}`", method=method)
            if handle.mode != mode:
                raise errors.os_error(
                    errno.EBADF, os.strerror(errno.EBADF), handle.path, method=method
                )
            with _mapped(method, handle.path):
                yield handle

    def read_block(
        self, handle_id: str, offset: int, length: int, *, timeout: Timeoutish = UNSET
    ) -> tuple[bytes, bool]:
        """``fs/readBlock``: up to ``length`` bytes at ``offset``; EOF when fewer came back."""
        with self._block_io(handle_id, offset, length, "read") as handle:
            parts: list[bytes] = []
            got = 0
            while got < length:
                chunk = os.pread(handle.fd, length - got, offset + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        return b"".join(parts), got < length

    def write_block(
        self, handle_id: str, offset: int, data: bytes, *, timeout: Timeoutish = UNSET
    ) -> None:
        """``fs/writeBlock``: write at ``offset``; a gap past the end reads back as zeros."""
        with self._block_io(handle_id, offset, len(data), "replace") as handle:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(handle.fd, view[done:], offset + done)

    def close_handle(self, handle_id: str, *, timeout: Timeoutish = UNSET) -> None:
        """``fs/close``. An unknown id is not an error (codex 0.169 answers ``{}`` too)."""
        with self._lock:
            handle = self._handles.get(handle_id)
            if not isinstance(handle, _Handle):
                return
            del self._handles[handle_id]
        with _mapped("fs/close", handle.path):
            handle.close()


# --------------------------------------------------------------------------- helpers


def stat_metadata(st: os.stat_result, is_link: bool) -> tuple[FileMetadata, int]:
    """``fs/getMetadata``'s values (and the permission bits) from a followed ``stat``."""
    birth = getattr(st, "st_birthtime", None)
    meta = FileMetadata(
        is_directory=stat.S_ISDIR(st.st_mode),
        is_file=stat.S_ISREG(st.st_mode),
        is_symlink=is_link,
        size=st.st_size,
        # Linux Python has no birth time; codex 0.169 reports 0 there too (probed).
        created_at_ms=int(birth * 1000) if birth else 0,
        modified_at_ms=st.st_mtime_ns // 1_000_000,
    )
    return meta, stat.S_IMODE(st.st_mode)


S = TypeVar("S")

ChildStat = Callable[[str], "tuple[os.stat_result, S] | None"]
"""For an entry name of the directory being listed: what it is (links followed only where
the walk follows them) and how to reach it, or None to leave it out."""


def breadth_first_walk(
    root: str,
    state: S,
    st: os.stat_result,
    listing: Callable[[S], contextlib.AbstractContextManager[tuple[list[str], ChildStat[S]]]],
    *,
    max_depth: int,
    max_directories: int,
    max_entries: int,
) -> WalkResult:
    """``fs/walk``'s traversal, for the plain and the ``--root`` walk alike: breadth first,
    names sorted, each real directory descended once, and codex's counting of the limits.

    ``root`` is the path shown in entries, ``state`` how ``listing`` reaches a directory (a
    path, or a path below a descriptor) and ``st`` the root's stat. ``listing(state)`` gives
    a directory's sorted names and a :data:`ChildStat` valid while it is entered; an
    ``OSError`` (or a confinement refusal) from it becomes one entry of ``errors``.
    """
    visited = {(st.st_dev, st.st_ino)}
    queue: collections.deque[tuple[str, S, int]] = collections.deque([(root, state, 0)])
    entries: list[WalkEntry] = []
    problems: list[str] = []
    dirs_read = 0
    examined = 0
    truncated = False
    while queue and not truncated:
        directory, where, depth = queue.popleft()
        if dirs_read >= max_directories:
            truncated = True
            break
        dirs_read += 1
        with contextlib.ExitStack() as stack:
            try:
                names, child_stat = stack.enter_context(listing(where))
            except (OSError, errors.InvalidRequest) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else None
                problems.append(f"{directory}: {reason or exc}")
                continue
            for name in names:
                if examined >= max_entries:
                    truncated = True
                    break
                examined += 1
                found = child_stat(name)
                if found is None:
                    continue
                cst, reach = found
                child = posixpath.join(directory, name)
                if stat.S_ISDIR(cst.st_mode):
                    entries.append(WalkEntry(path=child, kind="directory"))
                    key = (cst.st_dev, cst.st_ino)
                    if depth < max_depth and key not in visited:
                        visited.add(key)
                        queue.append((child, reach, depth + 1))
                elif stat.S_ISREG(cst.st_mode):
                    entries.append(WalkEntry(path=child, kind="file"))
    return WalkResult(entries=tuple(entries), errors=tuple(problems), truncated=truncated)


def check_walk_limits(max_depth: int, max_directories: int, max_entries: int) -> None:
    """Refuse ``fs/walk`` limits as codex 0.169 does (before the disk is touched)."""
    method = "fs/walk"
    for name, value in (
        ("maxDepth", max_depth),
        ("maxDirectories", max_directories),
        ("maxEntries", max_entries),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise errors.InvalidParams(-32602, f"invalid number for {name}", method=method)
    if max_directories == 0 or max_entries == 0:
        raise errors.InvalidRequest(
            -32600, "filesystem walk limits must be greater than zero", method=method
        )
    if (
        max_depth > WALK_MAX_DEPTH
        or max_directories > WALK_MAX_DIRECTORIES
        or max_entries > WALK_MAX_ENTRIES
    ):
        raise errors.InvalidRequest(
            -32600,
            "filesystem walk limits exceed maximums: "
            f"depth={WALK_MAX_DEPTH}, directories={WALK_MAX_DIRECTORIES}, "
            f"entries={WALK_MAX_ENTRIES}",
            method=method,
        )


def _inside(path: str, top: str) -> bool:
    """True when ``path`` is ``top`` or below it (textually)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _copy_file(src: str, dst: str) -> None:
    """Copy bytes and permission bits (as the server's copy does), following ``dst`` links."""
    shutil.copyfile(src, dst)
    with contextlib.suppress(OSError):
        shutil.copymode(src, dst)


def _copy_tree_contents(src: str, dst: str) -> None:
    """Copy the children of ``src`` into the existing directory ``dst``, merging.

    Links are recreated as links, directories recursively, regular files by content (replacing
    existing files); special files (FIFOs, sockets, devices) are skipped, as codex does.
    """
    with os.scandir(src) as it:
        children = list(it)
    for entry in children:
        target = posixpath.join(dst, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir(follow_symlinks=False):
            os.makedirs(target, exist_ok=True)
            _copy_tree_contents(entry.path, target)
        elif entry.is_file(follow_symlinks=False):
            _copy_file(entry.path, target)
