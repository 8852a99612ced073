"""The ``fs/*`` methods under ``--root`` when the kernel has ``openat2``: on descriptors only.

Every path is opened beneath the root's descriptor (:meth:`Confinement.open`), and what the
method does next uses the descriptor it got: reads and writes through it, metadata by
``fstat`` (the final name's own type by ``fstatat(parent, name, AT_SYMLINK_NOFOLLOW)``),
listings by ``scandir(fd)``, and the calls that act on a name (``mkdir``, ``unlink``,
``rmdir``, ``symlink``, a recursive remove) relative to a parent directory opened the same way.
A path string is never resolved again after a check, so a process that swaps a directory for a
symlink at the same time can make a method fail or act elsewhere *inside* the root, never
outside it.

The answers are those of ``LocalFsBackend`` (``disk.py``) with the checks of
``fs_methods.py``: the same error numbers, refusals and words, so codex-conformance holds
with and without ``--root``. Plain ``OSError`` is raised; ``handlers.error_for`` words it.

Thread-safety: stateless functions over the immutable :class:`Confinement`; any thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator

from execsdk import errors
from execsdk._local.disk import (
    ChildStat,
    LocalFsBackend,
    breadth_first_walk,
    check_walk_limits,
    stat_metadata,
)
from execsdk.backends import DirEntry, FileMetadata, WalkResult
from execsdk.server import beneath
from execsdk.server.confine import Confinement, real_path
from execsdk.server.params import PathUri

__all__ = [
    "canonicalize",
    "copy",
    "create_directory",
    "metadata",
    "open_handle",
    "read_directory",
    "read_file",
    "remove",
    "set_mode",
    "walk",
    "write_file",
]

_DIR = os.O_RDONLY | os.O_DIRECTORY
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_COPY_CHUNK = 8 << 20


def _join(rel: str, name: str) -> str:
    return name if rel == "." else f"{rel}/{name}"


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _exists_error(shown: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), shown)


# --------------------------------------------------------------------------- whole files


def read_file(fs: LocalFsBackend, c: Confinement, uri: PathUri) -> bytes:
    norm, rel = c.locate(uri)
    return fs.read_file(
        norm, opener=lambda _p, flags, mode: c.open(rel, flags, mode, shown=uri.uri)
    )


def write_file(fs: LocalFsBackend, c: Confinement, uri: PathUri, data: bytes) -> None:
    norm, rel = c.locate(uri)
    fs.write_file(
        norm, data, opener=lambda _p, flags, mode: c.open(rel, flags, mode, shown=uri.uri)
    )


def open_handle(
    fs: LocalFsBackend, c: Confinement, handle_id: str, uri: PathUri, mode: str
) -> None:
    """``fs/open``: ``read`` and ``replace`` through the backend with a beneath-opener;
    ``createNew`` creates the file exclusively in its parent's descriptor first."""
    norm, rel = c.locate(uri)
    if mode != "createNew":
        fs.open(
            handle_id,
            norm,
            mode=mode,  # type: ignore[arg-type]  # the backend refuses other words itself
            opener=lambda _p, flags, m: c.open(rel, flags, m, shown=uri.uri),
        )
        return
    pfd, name = c.open_parent(rel, shown=uri.uri)
    with _fd(pfd):
        if name == ".":
            raise _exists_error(norm)
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=pfd
            )
        except FileExistsError:
            c.judge(rel, shown=uri.uri)  # a link that leads out is refused, as before
            raise
        adopted = False

        def opener(_p: str, _flags: int, _mode: int) -> int:
            nonlocal adopted
            adopted = True
            return fd

        try:
            fs.open(handle_id, norm, mode="replace", opener=opener)
        except BaseException:
            # Refused (handle id, handle limit): the file this request created goes again.
            if not adopted:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=pfd)
            raise


# --------------------------------------------------------------------------- metadata


def metadata(c: Confinement, uri: PathUri) -> tuple[FileMetadata, int]:
    """``fs/getMetadata`` and ``fs/stat``: the target's ``fstat``, the final name's own type."""
    _norm, rel = c.locate(uri)
    with _fd(c.open(rel, os.O_PATH, shown=uri.uri)) as fd:
        st = os.fstat(fd)
    return stat_metadata(st, _names_a_link(c, uri))


def _names_a_link(c: Confinement, uri: PathUri) -> bool:
    """Whether the final name of ``uri`` is a symlink (``fstatat`` in its parent's descriptor).

    A path written outside the root whose final name is outside too, but leads inside (the
    root's caller already followed it there), can only be a symlink: nothing outside is read.
    """
    try:
        _norm, rel = c.locate(uri, follow_last=False)
    except errors.InvalidRequest:
        return True
    pfd, name = c.open_parent(rel, shown=uri.uri)
    with _fd(pfd):
        return stat.S_ISLNK(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode)


def set_mode(c: Confinement, uri: PathUri, mode: int) -> None:
    """``fs/setMode``: chmod of the file the path leads to (links followed, beneath the root)."""
    _norm, rel = c.locate(uri)
    with _fd(c.open(rel, os.O_PATH, shown=uri.uri)) as fd:
        # fchmod refuses an O_PATH descriptor; its /proc entry names exactly that file.
        os.chmod(f"/proc/self/fd/{fd}", mode)


def canonicalize(c: Confinement, uri: PathUri) -> str:
    """``fs/canonicalize``: the real path of what the path leads to (which must exist)."""
    norm, rel = c.locate(uri)
    with _fd(c.open(rel, os.O_PATH, shown=uri.uri)) as fd:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    # No /proc: the path was just found inside the root; resolve it as before.
    return os.path.realpath(norm, strict=True)


# --------------------------------------------------------------------------- directories


def read_directory(c: Confinement, uri: PathUri) -> list[DirEntry]:
    """``fs/readDirectory`` of the directory's descriptor. A link reports its target's type
    when the target is inside the root; dangling links and links that lead out are left out."""
    _norm, rel = c.locate(uri)
    out: list[DirEntry] = []
    with _fd(c.open(rel, _DIR, shown=uri.uri)) as dfd:
        with os.scandir(dfd) as it:
            names = [entry.name for entry in it]
        for name in names:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            is_link = stat.S_ISLNK(st.st_mode)
            if is_link:
                try:
                    with _fd(c.open(_join(rel, name), os.O_PATH, shown=name)) as tfd:
                        st = os.fstat(tfd)
                except (OSError, errors.InvalidRequest):
                    continue  # dangling, a loop, or leading out of the root
            out.append(
                DirEntry(
                    name=name,
                    is_file=stat.S_ISREG(st.st_mode),
                    is_dir=stat.S_ISDIR(st.st_mode),
                    is_symlink=is_link,
                )
            )
    return out


def create_directory(c: Confinement, uri: PathUri, *, recursive: bool) -> None:
    """``fs/createDirectory``: ``mkdirat`` in parent descriptors opened beneath the root."""
    _norm, rel = c.locate(uri)
    if rel == ".":
        if not recursive:
            raise _exists_error(uri.uri)
        return
    if not recursive:
        pfd, name = c.open_parent(rel, shown=uri.uri)
        with _fd(pfd):
            try:
                os.mkdir(name, dir_fd=pfd)
            except FileExistsError:
                c.judge(rel, shown=uri.uri)  # a link that leads out is refused, as before
                raise
        return
    c.judge(rel, shown=uri.uri)
    _make_dirs(c, rel, shown=uri.uri)


def _make_dirs(c: Confinement, rel: str, *, shown: str) -> None:
    """``os.makedirs(exist_ok=True)`` one component at a time, each opened beneath the root:
    the same errors (a file or a dangling link in the way: EEXIST; a file above: ENOTDIR).

    A component that leads out while the whole path is inside (``up/root/x`` with
    ``up -> ..``) is allowed as before: the path is retried once as its real path.
    """
    try:
        _make_dirs_once(c, rel, shown=shown)
    except errors.InvalidRequest as refusal:
        try:
            real = real_path(posixpath.join(c.root, rel))
        except OSError:
            raise refusal from None
        if not c.contains(real) or c.relative(real) == rel:
            raise
        if c.relative(real) != ".":
            _make_dirs_once(c, c.relative(real), shown=shown)


def _make_dirs_once(c: Confinement, rel: str, *, shown: str) -> None:
    parts = rel.split("/")
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1])
        last = i == len(parts) - 1
        try:
            os.close(c.open(prefix, os.O_PATH | os.O_DIRECTORY, shown=shown))
            continue
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            if last:
                raise _exists_error(shown) from None
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _exists_error(shown) from None
            raise
        pfd, name = c.open_parent(prefix, shown=shown)
        with _fd(pfd):
            try:
                os.mkdir(name, dir_fd=pfd)
            except FileExistsError:
                # A dangling link (or a directory made meanwhile, which is fine).
                try:
                    os.close(c.open(prefix, os.O_PATH | os.O_DIRECTORY, shown=shown))
                except OSError:
                    raise _exists_error(shown) from None


def remove(c: Confinement, uri: PathUri, *, recursive: bool, force: bool) -> None:
    """``fs/remove``: the final name in its parent's descriptor, never followed; a directory
    tree is removed by descriptors (:func:`_remove_tree`, which never follows a link).
    The root itself is refused."""
    _norm, rel = c.locate(uri, follow_last=False)
    if rel == ".":
        raise c.root_refusal(uri.uri)
    try:
        pfd, name = c.open_parent(rel, shown=uri.uri)
    except FileNotFoundError:
        if force:
            return
        raise
    with _fd(pfd):
        if name == ".":
            raise c.root_refusal(uri.uri)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            if force:
                return
            raise
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                _remove_tree(pfd, name)
            else:
                os.rmdir(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)


def _remove_tree(pfd: int, name: str) -> None:
    """Remove the directory ``name`` of ``pfd`` and everything below it, by descriptors: each
    directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, so a link
    swapped in meanwhile is an error, never followed. Entries that vanish are fine."""
    with _fd(os.open(name, _NOFOLLOW_DIR | os.O_CLOEXEC, dir_fd=pfd)) as dfd:
        with os.scandir(dfd) as it:
            names = [entry.name for entry in it]
        for child in names:
            try:
                st = os.stat(child, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    _remove_tree(dfd, child)
                else:
                    os.unlink(child, dir_fd=dfd)
            except FileNotFoundError:
                continue
    os.rmdir(name, dir_fd=pfd)


# --------------------------------------------------------------------------- copy


def copy(c: Confinement, source: PathUri, destination: PathUri, *, recursive: bool) -> None:
    """``fs/copy`` by descriptors: the source's final name is not followed (links are copied
    as links), the destination is opened (or its parent) beneath the root."""
    src_norm, src_rel = c.locate(source, follow_last=False)
    dst_norm, dst_rel = c.locate(destination)
    shown = destination.uri
    # Refusals first and in the old order: the source's directory, then the destination.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, PermissionError):
        os.close(c.open_parent(src_rel, shown=source.uri)[0])
    c.judge(dst_rel, shown=shown)
    spfd, sname = c.open_parent(src_rel, shown=source.uri)
    with _fd(spfd):
        st = os.stat(sname, dir_fd=spfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(sname, dir_fd=spfd)
            dpfd, dname = c.open_parent(dst_rel, shown=shown)
            with _fd(dpfd):
                if dname == ".":
                    raise _exists_error(shown)
                os.symlink(target, dname, dir_fd=dpfd)
            return
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise errors.InvalidRequest(
                    -32600, "fs/copy requires recursive: true when sourcePath is a directory"
                )
            with _fd(os.open(sname, _NOFOLLOW_DIR | os.O_CLOEXEC, dir_fd=spfd)) as sdfd:
                _copy_directory(c, sdfd, src_norm, dst_norm, dst_rel, shown)
            return
        if not stat.S_ISREG(st.st_mode):
            raise errors.InvalidRequest(
                -32600, "fs/copy only supports regular files, directories, and symlinks"
            )
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with _fd(os.open(sname, flags, dir_fd=spfd)) as sfd:
            _copy_file(c, sfd, dst_rel, shown, keep_same=True)


def _copy_directory(
    c: Confinement, sdfd: int, src_norm: str, dst_norm: str, dst_rel: str, shown: str
) -> None:
    # Refused before anything is written, as before: a merge that would go through a link out.
    for sub in _source_names(sdfd, ""):
        c.judge(_join(dst_rel, sub), shown=posixpath.join(dst_norm, sub))
    if _inside(dst_norm, src_norm) or _inside(_real(dst_norm), _real(src_norm)):
        # As LocalFsBackend.copy (the second test, through links, goes beyond codex).
        raise errors.InvalidRequest(
            -32600, "fs/copy cannot copy a directory to itself or one of its descendants"
        )
    if dst_rel != ".":
        _make_dirs(c, dst_rel, shown=shown)
    with _fd(c.open(dst_rel, os.O_PATH | os.O_DIRECTORY, shown=shown)) as ddfd:
        _copy_tree(c, sdfd, ddfd, dst_rel, shown)


def _real(path: str) -> str:
    try:
        return real_path(path)
    except OSError:
        return path


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _source_names(dfd: int, prefix: str) -> Iterator[str]:
    """Every name below the directory ``dfd`` (relative, depth first), links not followed."""
    with os.scandir(dfd) as it:
        names = [entry.name for entry in it]
    for name in names:
        sub = f"{prefix}{name}"
        yield sub
        try:
            child = os.open(name, _NOFOLLOW_DIR | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            continue  # not a directory (or a link to one): nothing below it is copied
        with _fd(child):
            yield from _source_names(child, sub + "/")


def _copy_tree(c: Confinement, sdfd: int, ddfd: int, dst_rel: str, shown: str) -> None:
    """Copy the children of directory ``sdfd`` into directory ``ddfd`` (``dst_rel``), merging
    as LocalFsBackend does: links as links, directories recursively, files by content, special
    files skipped."""
    with os.scandir(sdfd) as it:
        names = [entry.name for entry in it]
    for name in names:
        target_rel = _join(dst_rel, name)
        st = os.stat(name, dir_fd=sdfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=sdfd), name, dir_fd=ddfd)
        elif stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=ddfd)
            try:
                child_dst = c.open(target_rel, os.O_PATH | os.O_DIRECTORY, shown=shown)
            except (NotADirectoryError, FileNotFoundError):
                raise _exists_error(shown) from None
            with (
                _fd(child_dst),
                _fd(os.open(name, _NOFOLLOW_DIR | os.O_CLOEXEC, dir_fd=sdfd)) as child_src,
            ):
                _copy_tree(c, child_src, child_dst, target_rel, shown)
        elif stat.S_ISREG(st.st_mode):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            with _fd(os.open(name, flags, dir_fd=sdfd)) as sfd:
                _copy_file(c, sfd, target_rel, shown, keep_same=False)


def _copy_file(c: Confinement, sfd: int, dst_rel: str, shown: str, *, keep_same: bool) -> None:
    """Bytes and permission bits of ``sfd`` into ``dst_rel`` (a final link followed, beneath
    the root). With ``keep_same``, copying a file onto itself keeps it (LocalFsBackend.copy)."""
    src_st = os.fstat(sfd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK
    with _fd(c.open(dst_rel, flags, 0o666, shown=shown)) as dfd:
        dst_st = os.fstat(dfd)
        if (dst_st.st_dev, dst_st.st_ino) == (src_st.st_dev, src_st.st_ino):
            if keep_same:
                return
            raise shutil.SameFileError(f"{shown} is the file being copied")
        os.ftruncate(dfd, 0)
        _copy_bytes(sfd, dfd)
        with contextlib.suppress(OSError):
            os.fchmod(dfd, stat.S_IMODE(src_st.st_mode))


def _copy_bytes(sfd: int, dfd: int) -> None:
    try:
        while os.sendfile(dfd, sfd, None, _COPY_CHUNK) > 0:
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(sfd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dfd, view) :]


# --------------------------------------------------------------------------- walk


def walk(
    c: Confinement,
    uri: PathUri,
    *,
    max_depth: int,
    max_directories: int,
    max_entries: int,
    follow_directory_symlinks: bool,
) -> WalkResult:
    """``fs/walk`` as LocalFsBackend walks (breadth first, sorted, the same limits and
    counts), every directory opened beneath the root: without ``follow_directory_symlinks``
    below the walked directory's descriptor with no symlink allowed at all
    (``RESOLVE_NO_SYMLINKS``); with it, from the root (links followed, never out)."""
    norm, rel = c.locate(uri)
    c.judge(rel, shown=uri.uri)
    check_walk_limits(max_depth, max_directories, max_entries)
    follow = follow_directory_symlinks
    nothing = WalkResult(entries=(), errors=(), truncated=False)
    try:
        _n, lrel = c.locate(uri, follow_last=False)
    except errors.InvalidRequest:
        lrel = None  # a link outside that leads in (see _names_a_link)
    if lrel is None:
        if not follow:
            return nothing
        try:
            top = c.open(rel, os.O_PATH | os.O_DIRECTORY, shown=uri.uri)
        except NotADirectoryError:
            return nothing
    else:
        pfd, name = c.open_parent(lrel, shown=uri.uri)
        with _fd(pfd):
            lst = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(lst.st_mode):
                top = os.open(name, _PATH_DIR | os.O_NOFOLLOW, dir_fd=pfd)
            elif stat.S_ISLNK(lst.st_mode) and follow:
                try:
                    top = c.open(rel, os.O_PATH | os.O_DIRECTORY, shown=uri.uri)
                except NotADirectoryError:
                    return nothing
            else:
                return nothing
    with _fd(top):

        @contextlib.contextmanager
        def listing(sub: str) -> Iterator[tuple[list[str], ChildStat[str]]]:
            with _fd(_open_walked(c, top, rel, sub, follow)) as dfd:
                names = sorted(os.listdir(dfd))

                def child_stat(name: str) -> tuple[os.stat_result, str] | None:
                    child_sub = _join(sub, name)
                    try:
                        cst = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        if stat.S_ISLNK(cst.st_mode):
                            if not follow:
                                return None
                            target = _join(rel, child_sub)
                            with _fd(c.open(target, os.O_PATH, shown=target)) as tfd:
                                cst = os.fstat(tfd)
                            if not stat.S_ISDIR(cst.st_mode):
                                return None
                    except (OSError, errors.InvalidRequest):
                        return None  # gone, dangling, a loop, or leading out of the root
                    return cst, child_sub

                yield names, child_stat

        return breadth_first_walk(
            norm,
            ".",
            os.fstat(top),
            listing,
            max_depth=max_depth,
            max_directories=max_directories,
            max_entries=max_entries,
        )


def _open_walked(c: Confinement, top: int, rel: str, sub: str, follow: bool) -> int:
    """A directory the walk reached, ``sub`` below the walked directory ``top``."""
    if sub == ".":
        return os.open(".", _DIR | os.O_CLOEXEC, dir_fd=top)
    if follow:
        target = _join(rel, sub)
        return c.open(target, _DIR, shown=target)
    resolve = beneath.RESOLVE_BENEATH | beneath.RESOLVE_NO_MAGICLINKS | beneath.RESOLVE_NO_SYMLINKS
    return beneath.openat2(top, sub, _DIR, 0, resolve)
