"""The filesystem facade: :class:`Fs` (alias ``RemoteFs``), pathlib/shutil words over a backend.

One API on every environment, in pathlib/shutil words, over an :class:`~execsdk.backends.
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

import errno
import io
import os
import posixpath
import shutil
from collections.abc import Iterator, Sequence
from pathlib import PurePath
from typing import IO, Any, Literal, overload

from execsdk import errors
from execsdk._deadline import UNSET, Deadline, Timeoutish
from execsdk.backends import DirEntry, FileInfo, FileMetadata, FsBackend
from execsdk.fs import streams, transfer, walk
from execsdk.fs.core import (
    BLOCK_SIZE,
    ONE_CALL,
    FsCore,
    Host,
    check_mode,
    deadline_for,
    is_dir_error,
    not_regular,
    step,
)
from execsdk.fs.paths import PathArg, RemotePath, normpath
from execsdk.fs.transfer import Progress

__all__ = [
    "BLOCK_SIZE",
    "Fs",
    "PathArg",
    "Progress",
    "RemoteFs",
    "RemotePath",
]


# --------------------------------------------------------------------------- the facade


class Fs:
    """Files of one environment, in pathlib/shutil vocabulary (``env.fs``).

    Thread-safety: every method may be called from any thread; file objects from :meth:`open`
    are, like builtin files, meant for one thread at a time.
    """

    def __init__(self, backend: FsBackend, *, environment: Host | None = None) -> None:
        self._backend = backend
        self._core = FsCore(backend, environment)
        cwd = environment.info.cwd if environment is not None else "/"
        self._cwd = normpath(cwd if cwd.startswith("/") else "/" + cwd)

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
        return normpath(text)

    def path(self, path: PathArg = ".") -> RemotePath:
        """A :class:`RemotePath` bound to this filesystem."""
        return RemotePath(self, path)

    def __repr__(self) -> str:
        return f"<Fs cwd={self._cwd!r} features={sorted(self.features)}>"

    # ------------------------------------------------------------------ metadata

    def stat(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> FileInfo:
        """Type, size, times and permission bits of ``path`` (symlinks followed;
        ``is_symlink`` flags a link).

        ``size`` is ``None`` on G1 servers. ``mode`` (``stat.S_IMODE`` bits) is known locally
        and on servers announcing ``execsdk/fileMode`` (``execsdk serve``), in the same single
        call; on codex servers it is ``None``, since reading it would cost a process per call.
        Raises ``FileNotFoundError`` (also for a dangling link).
        """
        p = self.abspath(path)
        modes = self._core.modes
        if modes is not None:
            meta, mode = modes.get_metadata_and_mode(p, timeout=timeout)
            return FileInfo.from_metadata(meta, mode)
        return FileInfo.from_metadata(self._backend.get_metadata(p, timeout=timeout))

    def chmod(self, path: PathArg, mode: int, *, timeout: Timeoutish = UNSET) -> None:
        """Set the permission bits of ``path`` to exactly ``mode``, as ``os.chmod`` (a link's
        target changes; the umask plays no part).

        ``mode`` is 0 ... 0o7777: rwx for user, group and others plus setuid (0o4000), setgid
        (0o2000) and sticky (0o1000); ``stat.S_IMODE(st.st_mode)`` gives it from a stat
        result. Locally this is ``os.chmod``; on servers announcing ``execsdk/fileMode`` one
        ``fs/setMode`` call; on codex servers a ``chmod`` process. As with ``chmod(1)``, the
        system may drop setgid for a file whose group the server's user is not in.

        Raises ``FileNotFoundError``, ``PermissionError`` (not the owner), ``ValueError`` (not
        permission bits), ``TypeError`` (not an int).
        """
        p = self.abspath(path)
        check_mode(mode)
        dl = deadline_for(timeout)
        modes = self._core.modes
        if modes is not None:
            modes.set_mode(p, mode, timeout=step(dl))
        else:
            self._core.set_modes([(p, mode)], dl)

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

        Files read in blocks land in one buffer sized from the file's metadata, which becomes
        the result without a copy: peak memory is about the file's size plus a few blocks.
        Raises ``FileNotFoundError``, ``IsADirectoryError``, ``OSError`` (not a regular file).
        """
        p = self.abspath(path)
        dl = deadline_for(timeout)
        core = self._core
        # Look first: the size picks the method, and a G1 server asked to read a FIFO would
        # block on it forever (and with it every later request on the connection).
        meta = self._backend.get_metadata(p, timeout=step(dl))
        if meta.is_directory:
            raise is_dir_error(p)
        if not meta.is_file:
            raise not_regular(p)
        if "blocks" in self.features and meta.size is not None and meta.size > ONE_CALL:
            return streams.collect(streams.read_chunks(core, p, dl), meta.size)
        try:
            return self._backend.read_file(p, timeout=step(dl))
        except errors.InvalidRequest as exc:
            core.explain_refused_read(p, exc, dl)
        # A regular file the server would not send in one message: it is too big.
        return streams.collect(streams.read_chunks(core, p, dl), meta.size)

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
        dl = deadline_for(timeout)
        view = memoryview(data).cast("B")
        size = len(view)
        if size <= self._core.one_call_write:
            payload = data if isinstance(data, bytes) else view.tobytes()
            self._backend.write_file(p, payload, timeout=step(dl))
            return size
        position = 0

        def read(n: int) -> bytes:
            nonlocal position
            chunk = view[position : position + n].tobytes()
            position += len(chunk)
            return chunk

        return streams.write_from(self._core, p, read, dl)

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
        dl = deadline_for(timeout)
        try:
            self._backend.create_directory(p, recursive=False, timeout=step(dl))
        except FileNotFoundError:
            parent = posixpath.dirname(p)
            if not parents or parent == p:
                raise
            self._backend.create_directory(parent, recursive=True, timeout=step(dl))
            self.mkdir(p, parents=False, exist_ok=exist_ok, timeout=step(dl))
        except OSError:
            if not exist_ok or not self.is_dir(p, timeout=step(dl)):
                raise

    def remove(
        self, path: PathArg, *, missing_ok: bool = False, timeout: Timeoutish = UNSET
    ) -> None:
        """Remove a file or a symbolic link (never its target), as ``os.remove``.

        Raises ``FileNotFoundError`` (unless ``missing_ok``), ``IsADirectoryError`` for a
        directory (use :meth:`rmdir` or :meth:`rmtree`).
        """
        p = self.abspath(path)
        dl = deadline_for(timeout)
        try:
            meta = self._backend.get_metadata(p, timeout=step(dl))
        except FileNotFoundError:
            # Missing, or a dangling symlink (metadata follows links): try removing the link.
            try:
                self._backend.remove(p, recursive=False, force=False, timeout=step(dl))
            except FileNotFoundError:
                if not missing_ok:
                    raise
            return
        if meta.is_directory and not meta.is_symlink:
            raise is_dir_error(p, "; use rmdir() or rmtree() for directories")
        self._backend.remove(p, recursive=False, force=False, timeout=step(dl))

    unlink = remove

    def rmdir(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> None:
        """Remove an empty directory, as ``os.rmdir``.

        Raises ``FileNotFoundError``, ``NotADirectoryError`` (a file or a link), ``OSError``
        with ``errno.ENOTEMPTY`` for a directory that is not empty.
        """
        p = self.abspath(path)
        dl = deadline_for(timeout)
        meta = self._backend.get_metadata(p, timeout=step(dl))
        if meta.is_symlink or not meta.is_directory:
            raise errors.os_error(errno.ENOTDIR, "Not a directory", p)
        self._backend.remove(p, recursive=False, force=False, timeout=step(dl))

    def rmtree(
        self, path: PathArg, *, missing_ok: bool = False, timeout: Timeoutish = UNSET
    ) -> None:
        """Remove a directory and everything below it, as ``shutil.rmtree``.

        Links inside are removed, never followed. Raises ``FileNotFoundError`` (unless
        ``missing_ok``), ``NotADirectoryError`` for a file, ``OSError`` for a symbolic link.
        """
        p = self.abspath(path)
        dl = deadline_for(timeout)
        try:
            meta = self._backend.get_metadata(p, timeout=step(dl))
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        if meta.is_symlink:
            raise errors.os_error(None, "Cannot call rmtree on a symbolic link", p)
        if not meta.is_directory:
            raise errors.os_error(errno.ENOTDIR, "Not a directory", p)
        self._backend.remove(p, recursive=True, force=False, timeout=step(dl))

    # ------------------------------------------------------------------ copy and move

    def copy(
        self,
        src: PathArg,
        dst: PathArg,
        *,
        recursive: bool = False,
        preserve_mode: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Copy a file, a symbolic link (as a link) or, with ``recursive``, a directory tree.

        ``dst`` is the path of the copy (not a directory to copy into). A file replaces an
        existing file. A directory copy creates missing parents and merges into an existing
        directory (files replaced; a link or directory meeting an entry of another kind fails).

        Files keep their permission bits whatever ``preserve_mode`` says: every server's
        ``fs/copy`` copies them, as ``shutil.copy`` does. With ``preserve_mode`` (the default)
        the directories of a tree keep theirs too (a 0700 directory stays 0700), set after the
        copy; without, they get the server's defaults (0777 less its umask).

        Raises ``FileNotFoundError``, ``IsADirectoryError`` (a directory without ``recursive``,
        or a file onto a directory), ``FileExistsError`` (a directory onto a file, a link onto
        anything), ``shutil.SameFileError`` (``src`` and ``dst`` are the same path),
        ``OSError`` (a directory into itself, a special file).
        """
        s = self.abspath(src)
        d = self.abspath(dst)
        dl = deadline_for(timeout)
        if s == d:
            raise shutil.SameFileError(f"{s!r} and {d!r} are the same file")
        if preserve_mode and recursive:
            self._core.require_modes()
        try:
            self._backend.copy(s, d, recursive=recursive, timeout=step(dl))
        except errors.InvalidRequest as exc:
            try:
                meta = self._backend.get_metadata(s, timeout=step(dl))
            except OSError:
                raise exc from None
            if meta.is_directory and not recursive:
                raise is_dir_error(s, "; pass recursive=True to copy a directory") from exc
            if meta.is_directory:
                raise errors.os_error(
                    errno.EINVAL, "Cannot copy a directory into itself", d
                ) from exc
            if not meta.is_file:
                raise errors.os_error(
                    errno.EINVAL, "Only regular files, directories and links can be copied", s
                ) from exc
            raise
        if preserve_mode and recursive:
            self._copy_directory_modes(s, d, dl)

    def _copy_directory_modes(self, src: str, dst: str, dl: Deadline | None) -> None:
        """After ``fs/copy`` of a tree: each directory of the copy gets its source's bits,
        deepest first. Nothing to do for a file or a link (copied as a link)."""
        core = self._core
        meta = self._backend.get_metadata(src, timeout=step(dl))
        if not meta.is_directory or meta.is_symlink:
            return
        found = walk.tree(core, src, None, False, dl)
        rels = transfer.deepest_first(
            [path[len(src.rstrip("/")) + 1 :] for path in found if path != src]
        )
        sources = [posixpath.join(src, rel) if rel else src for rel in rels]
        modes = core.read_modes(sources, dl)
        targets = [posixpath.join(dst, rel) if rel else dst for rel in rels]
        core.set_modes(list(zip(targets, modes, strict=True)), dl)

    def move(self, src: PathArg, dst: PathArg, *, timeout: Timeoutish = UNSET) -> str:
        """Move a file, link or directory, as ``shutil.move`` / ``mv``; returns the new path.

        When ``dst`` is an existing directory, ``src`` goes inside it. The protocol has no move
        method: this runs ``mv -- src dst`` in the environment (one process). Without a way to
        run processes it copies (links as links) and then removes the source.
        Raises ``FileNotFoundError`` (missing source or destination parent), ``OSError``.
        """
        s = self.abspath(src)
        d = self.abspath(dst)
        dl = deadline_for(timeout)
        if s == d:
            return d
        final = posixpath.join(d, posixpath.basename(s)) if self.is_dir(d, timeout=step(dl)) else d
        if self._core.host is None:
            self._backend.copy(s, final, recursive=True, timeout=step(dl))
            self._backend.remove(s, recursive=True, force=False, timeout=step(dl))
            return final
        result = self._core.run(["mv", "--", s, d], dl)
        if result.returncode != 0:
            self._core.diagnose(s, final, result, dl)
        return final

    # ------------------------------------------------------------------ walk and resolve

    def walk(
        self,
        top: PathArg = ".",
        *,
        topdown: bool = True,
        followlinks: bool = False,
        max_depth: int | None = None,
        timeout: Timeoutish = UNSET,
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """Yield ``(dirpath, dirnames, filenames)`` for ``top`` and every directory below, as
        ``os.walk`` (names sorted; with ``topdown`` you may prune ``dirnames`` in place).
        ``max_depth`` limits how far below ``top`` directories are walked (0: ``top`` alone,
        its subdirectories still named in ``dirnames``); only that much is asked of the server.

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
        dl = deadline_for(timeout)
        if max_depth is not None and max_depth < 0:
            raise ValueError(f"max_depth must be 0 or more, not {max_depth}")
        tree = walk.tree(self._core, root, max_depth, followlinks, dl)
        if max_depth is not None:
            # The deepest directories are named in their parent but were not read: leave them
            # out of the walk rather than report them empty.
            prefix = root.rstrip("/") + "/"
            tree = {
                d: names
                for d, names in tree.items()
                if d == root or d[len(prefix) :].count("/") < max_depth
            }
        yield from walk.walk_tree(tree, root, topdown)

    def canonicalize(self, path: PathArg, *, timeout: Timeoutish = UNSET) -> str:
        """The absolute path with every symbolic link resolved; the path must exist.

        Uses ``fs/canonicalize`` where offered, else ``realpath`` in a process (G1).
        Raises ``FileNotFoundError`` (also for a dangling link).
        """
        p = self.abspath(path)
        dl = deadline_for(timeout)
        if "canonicalize" in self.features:
            return normpath(self._backend.canonicalize(p, timeout=step(dl)))
        self._backend.get_metadata(p, timeout=step(dl))  # FileNotFoundError as on G2
        result = self._core.run(
            ["/bin/sh", "-c", 'realpath -- "$1" 2>/dev/null || readlink -f -- "$1"', "sh", p], dl
        )
        out = result.stdout.decode("utf-8", "surrogateescape")
        if result.returncode != 0 or not out.startswith("/"):
            self._core.diagnose(p, p, result, dl)
        return normpath(out[:-1] if out.endswith("\n") else out)

    def resolve(
        self, path: PathArg = ".", *, strict: bool = False, timeout: Timeoutish = UNSET
    ) -> str:
        """Like ``Path.resolve``: links resolved; with ``strict=False`` a missing tail is kept
        as written (its existing head is resolved)."""
        p = self.abspath(path)
        dl = deadline_for(timeout)
        try:
            return self.canonicalize(p, timeout=step(dl))
        except FileNotFoundError:
            if strict or p == "/":
                raise
        head, name = posixpath.split(p)
        return posixpath.join(self.resolve(head, timeout=step(dl)), name)

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
        mode: Literal["wb", "xb"],
        *,
        buffering: int = -1,
        timeout: Timeoutish = UNSET,
    ) -> io.BufferedWriter: ...

    @overload
    def open(
        self,
        path: PathArg,
        mode: Literal["r", "w", "x", "rt", "wt", "xt"] = "r",
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
        1 MiB blocks (G1: 2 MiB parts, see the module notes). ``"xb"``: as ``"wb"`` for a new
        file only, ``FileExistsError`` when anything is there; atomic on servers announcing
        ``execsdk/exclusiveCreate`` (ours), elsewhere (codex, local) it looks first and then
        creates, so a writer racing in between can lose its file. ``"r"``/``"w"``/``"x"`` wrap
        those in an ``io.TextIOWrapper`` (UTF-8 unless ``encoding``). ``buffering=0`` gives the
        raw binary object. ``timeout`` applies to every call the file makes.

        Each open file holds one server handle; servers allow 128 per connection.
        Raises ``FileNotFoundError``, ``FileExistsError``, ``IsADirectoryError``,
        ``ValueError`` for other modes.
        """
        return streams.open_file(
            self._core,
            self.abspath(path),
            mode,
            buffering=buffering,
            encoding=encoding,
            text_errors=errors,
            newline=newline,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ transfers

    def upload(
        self,
        local: str | os.PathLike[str],
        remote: PathArg,
        *,
        progress: Progress | None = None,
        preserve_mode: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Copy a local file to the remote path ``remote``, or a local directory tree to the
        remote directory ``remote`` (like ``shutil.copytree(..., dirs_exist_ok=True)``).

        Files are streamed with bounded memory and arrive byte-exact; small files of a tree go
        several at a time. Links to files are copied as files; links to directories and special
        files are skipped. ``progress(done, total)`` is called on this thread: first with 0,
        last with ``done == total``, never decreasing.

        With ``preserve_mode`` (the default) every file and directory gets exactly the
        permission bits of its local source (``stat.S_IMODE``, setuid/setgid/sticky included;
        the remote umask plays no part), the top directory ``remote`` included. Without, new
        files get 0666 and directories 0777 less the server's umask, and an existing file keeps
        its bits. On codex servers the bits are set by ``chmod`` processes (a few hundred paths
        each); elsewhere by one call per path.

        Raises:
            FileNotFoundError: ``local`` is missing, or the remote parent of a single file is.
            IsADirectoryError: a single file onto a remote directory.
            FileExistsError, NotADirectoryError: a remote file stands where a directory goes.
        """
        src = os.fspath(local)
        dst = self.abspath(remote)
        transfer.upload(self._core, src, dst, progress, deadline_for(timeout), preserve_mode)

    def download(
        self,
        remote: PathArg,
        local: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        preserve_mode: bool = True,
        timeout: Timeoutish = UNSET,
    ) -> None:
        """Copy a remote file to the local path ``local``, or a remote directory tree into the
        local directory ``local`` (created if needed; existing files are replaced).

        Streamed with bounded memory, byte-exact; small files of a tree go several at a time.
        Links to files arrive as files; links to directories and special files are skipped.
        ``progress(done, total)`` as in :meth:`upload`.

        With ``preserve_mode`` (the default) every file and directory gets exactly the
        permission bits of its remote source (the local umask plays no part), ``local``
        included. They come with the metadata calls where the server has ``fs/stat``
        (``execsdk serve``); on codex servers one ``stat`` process reads them for the whole
        tree. Without, new files and directories get the local umask's defaults.

        Raises:
            FileNotFoundError: ``remote`` is missing, or the local parent of a single file is.
            IsADirectoryError: a single file onto a local directory.
            OSError: ``remote`` is a special file (FIFO, device).
        """
        src = self.abspath(remote)
        dst = os.fspath(local)
        transfer.download(self._core, src, dst, progress, deadline_for(timeout), preserve_mode)

    def _g1_sizes(self, paths: Sequence[str], dl: Deadline | None) -> list[int]:
        """Sizes of files whose metadata has none (G1), by a helper process (for fsspec)."""
        return self._core.g1_sizes(paths, dl)


RemoteFs = Fs
"""The same class under the name the issues use."""
