"""``Fs.upload`` and ``Fs.download``: files and trees between the local disk and an environment.

Big files stream through :mod:`execsdk.fs.streams` (bounded memory); the small files of a tree go
several at a time, one call each. Progress is reported on the calling thread, never decreasing.

Permission bits travel with ``preserve_mode`` (the default): each file and directory gets exactly
its source's bits (``stat.S_IMODE``, setuid/setgid/sticky included), whatever the umask of the
side that creates it. Files are set as they land; directories last, deepest first, so a
read-only or untraversable directory never blocks what goes inside it. Where the backend has no
permission calls (codex servers) one ``stat`` process reads the bits of a whole tree and one
``chmod`` process sets them (a few hundred paths per process).
"""

from __future__ import annotations

import concurrent.futures
import os
import posixpath
import stat
from collections.abc import Callable

from execsdk import errors
from execsdk._deadline import Deadline
from execsdk.backends import FileMetadata
from execsdk.fs.core import ONE_CALL, FsCore, not_regular, pool, step
from execsdk.fs.streams import read_chunks, write_from

POOL_FILE = 256 * 1024
"""Tree transfers: files up to this size go several at a time, one call each."""
WORKERS = 8
"""Threads (and so calls in flight) for tree transfers."""

Progress = Callable[[int, int], object]
"""``progress(done_bytes, total_bytes)`` for upload/download; called on the calling thread."""


class Meter:
    """Monotone progress reporting: first (0, total), last (total, total).
    Thread-safety: one thread (the caller's) only."""

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


# --------------------------------------------------------------------------- upload


def upload(
    core: FsCore,
    src: str,
    dst: str,
    progress: Progress | None,
    dl: Deadline | None,
    preserve_mode: bool = True,
) -> None:
    """The local file or tree ``src`` to the absolute remote path ``dst`` (see ``Fs.upload``)."""
    st = os.stat(src)
    if preserve_mode:
        core.require_modes()
    meter = Meter(progress)
    if not stat.S_ISDIR(st.st_mode):
        meter.start(st.st_size)
        _upload_file(core, src, dst, st.st_size, meter, dl)
        if preserve_mode:
            core.set_modes([(dst, stat.S_IMODE(st.st_mode))], dl)
        meter.finish()
        return
    dirs, files, modes = scan_local(src)
    meter.start(sum(size for _, size in files))
    core.backend.create_directory(dst, recursive=True, timeout=step(dl))
    for rel in leaf_dirs(dirs):
        core.backend.create_directory(posixpath.join(dst, rel), recursive=True, timeout=step(dl))
    small = [(rel, size) for rel, size in files if size <= POOL_FILE]
    large = [(rel, size) for rel, size in files if size > POOL_FILE]
    # Files get their bits as they land when the backend can set them; else in one go below.
    each = core.modes if preserve_mode else None

    def put_small(rel: str, size: int) -> int:
        with open(os.path.join(src, *rel.split("/")), "rb") as f:
            data = f.read()
        target = posixpath.join(dst, rel)
        core.backend.write_file(target, data, timeout=step(dl))
        if each is not None:
            each.set_mode(target, modes[rel], timeout=step(dl))
        return len(data)

    _pooled(small, put_small, meter)
    for rel, size in large:
        target = posixpath.join(dst, rel)
        _upload_file(core, os.path.join(src, *rel.split("/")), target, size, meter, dl)
        if each is not None:
            each.set_mode(target, modes[rel], timeout=step(dl))
    if preserve_mode:
        later = [] if each is not None else _file_modes(files, modes)
        later += [(rel, modes[rel]) for rel in deepest_first(dirs)]
        core.set_modes([(posixpath.join(dst, r) if r else dst, m) for r, m in later], dl)
    meter.finish()


def _upload_file(
    core: FsCore, src: str, dst: str, size: int, meter: Meter, dl: Deadline | None
) -> None:
    with open(src, "rb") as f:
        if size <= core.one_call_write:
            data = f.read()
            core.backend.write_file(dst, data, timeout=step(dl))
            meter.add(len(data))
        else:
            write_from(core, dst, f.read, dl, meter.add)


def scan_local(root: str) -> tuple[list[str], list[tuple[str, int]], dict[str, int]]:
    """Relative directories, (relative file, size) and the permission bits of each (``""``:
    ``root`` itself) below the local ``root``: links to files count as files (with their
    target's bits), links to directories and special files are skipped."""
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    modes = {"": stat.S_IMODE(os.stat(root).st_mode)}
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
                modes[child] = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
            elif entry.is_file(follow_symlinks=True):
                st = entry.stat(follow_symlinks=True)
                files.append((child, st.st_size))
                modes[child] = stat.S_IMODE(st.st_mode)
    return sorted(dirs), sorted(files), modes


def leaf_dirs(dirs: list[str]) -> list[str]:
    """Directories that are not a parent of another (creating these creates them all)."""
    parents = {posixpath.dirname(d) for d in dirs}
    return [d for d in dirs if d not in parents]


def deepest_first(dirs: list[str]) -> list[str]:
    """``dirs`` (relative) plus the root (``""``), each after every directory below it: the
    order to set directory bits in (a directory made read-only or untraversable last)."""
    return [*sorted(dirs, key=lambda d: (-d.count("/"), d)), ""]


def _file_modes(files: list[tuple[str, int]], modes: dict[str, int]) -> list[tuple[str, int]]:
    """(relative file, bits), grouped by bits so that one ``chmod`` takes many files."""
    return sorted(((rel, modes[rel]) for rel, _ in files), key=lambda item: (item[1], item[0]))


# --------------------------------------------------------------------------- download


def download(
    core: FsCore,
    src: str,
    dst: str,
    progress: Progress | None,
    dl: Deadline | None,
    preserve_mode: bool = True,
) -> None:
    """The remote file or tree ``src`` (absolute) to the local path ``dst`` (see
    ``Fs.download``)."""
    if preserve_mode:
        core.require_modes()
    meter = Meter(progress)
    meta, mode = _stat_remote(core, src, preserve_mode, dl)
    if not meta.is_directory:
        if not meta.is_file:
            raise not_regular(src)
        size = meta.size if meta.size is not None else core.g1_sizes([src], dl)[0]
        if preserve_mode and mode is None:
            mode = core.read_modes([src], dl)[0]
        meter.start(size)
        _download_file(core, src, dst, size, meter, dl)
        if mode is not None:
            os.chmod(dst, mode)
        meter.finish()
        return
    dirs, files, modes = scan_remote(core, src, dl, preserve_mode=preserve_mode)
    if mode is not None:
        modes[""] = mode
    meter.start(sum(size for _, size in files))
    os.makedirs(dst, exist_ok=True)
    for rel in dirs:
        os.makedirs(os.path.join(dst, *rel.split("/")), exist_ok=True)
    small = [(rel, size) for rel, size in files if size <= POOL_FILE]
    large = [(rel, size) for rel, size in files if size > POOL_FILE]

    def local(rel: str) -> str:
        return os.path.join(dst, *rel.split("/")) if rel else dst

    def get_small(rel: str, size: int) -> int:
        data = core.backend.read_file(posixpath.join(src, rel), timeout=step(dl))
        with open(local(rel), "wb") as f:
            f.write(data)
        if preserve_mode:
            os.chmod(local(rel), modes[rel])
        return len(data)

    _pooled(small, get_small, meter)
    for rel, size in large:
        _download_file(core, posixpath.join(src, rel), local(rel), size, meter, dl)
        if preserve_mode:
            os.chmod(local(rel), modes[rel])
    if preserve_mode:
        for rel in deepest_first(dirs):
            os.chmod(local(rel), modes[rel])
    meter.finish()


def _stat_remote(
    core: FsCore, path: str, want_mode: bool, dl: Deadline | None
) -> tuple[FileMetadata, int | None]:
    """Metadata of ``path``, plus its permission bits when wanted and the backend tells them
    in the same call (else None)."""
    backend = core.modes if want_mode else None
    if backend is not None:
        return backend.get_metadata_and_mode(path, timeout=step(dl))
    return core.backend.get_metadata(path, timeout=step(dl)), None


def _download_file(
    core: FsCore, src: str, dst: str, size: int, meter: Meter, dl: Deadline | None
) -> None:
    with open(dst, "wb") as f:
        if size <= ONE_CALL:
            try:
                data = core.backend.read_file(src, timeout=step(dl))
            except errors.InvalidRequest as exc:
                core.explain_refused_read(src, exc, dl)
                raise
            f.write(data)
            meter.add(len(data))
            return
        for chunk in read_chunks(core, src, dl):
            f.write(chunk)
            meter.add(len(chunk))


def scan_remote(
    core: FsCore, root: str, dl: Deadline | None, *, preserve_mode: bool = False
) -> tuple[list[str], list[tuple[str, int]], dict[str, int]]:
    """Relative directories and (relative file, size) below ``root``, as transfers see it:
    links to files count as files, links to directories and special files are skipped.

    With ``preserve_mode`` also the permission bits of each (``""``: ``root`` itself), from the
    metadata calls where the backend has ``fs/stat``, else from ``stat`` processes (codex);
    without, an empty dict.
    """
    backend = core.backend
    mode_backend = core.modes if preserve_mode else None
    dirs: list[str] = []
    files: list[str] = []
    pending = [""]
    unknown_sizes: list[str] = []
    sizes: dict[str, int] = {}
    modes: dict[str, int] = {}

    def probe(path: str) -> tuple[FileMetadata, int | None]:
        return _stat_remote(core, path, mode_backend is not None, dl)

    with pool(WORKERS) as executor:
        while pending:
            level, pending = pending, []
            listings = [
                executor.submit(
                    backend.read_directory,
                    posixpath.join(root, rel) if rel else root,
                    timeout=step(dl),
                )
                for rel in level
            ]
            probes: list[
                tuple[str, bool, concurrent.futures.Future[tuple[FileMetadata, int | None]]]
            ] = []
            for rel, fut in zip(level, listings, strict=True):
                for entry in fut.result():
                    child = f"{rel}/{entry.name}" if rel else entry.name
                    if not entry.is_dir and not entry.is_file:
                        continue
                    needs_meta = (
                        entry.is_file
                        or (entry.is_dir and entry.is_symlink is None)
                        # the bits of a directory come with its metadata
                        or (entry.is_dir and mode_backend is not None)
                    )
                    if entry.is_dir and entry.is_symlink:
                        continue
                    if needs_meta:
                        probes.append(
                            (
                                child,
                                entry.is_dir,
                                executor.submit(probe, posixpath.join(root, child)),
                            )
                        )
                    else:
                        dirs.append(child)
                        pending.append(child)
            for child, is_dir, mfut in probes:
                try:
                    meta, mode = mfut.result()
                except FileNotFoundError:
                    continue  # removed meanwhile
                if mode is not None:
                    modes[child] = mode
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
        found = core.g1_sizes([posixpath.join(root, rel) for rel in unknown_sizes], dl)
        sizes.update(zip(unknown_sizes, found, strict=True))
    dirs.sort()
    files.sort()
    if preserve_mode and mode_backend is None:
        # No fs/stat: one stat process (per few hundred paths) for the root and everything found.
        rels = ["", *dirs, *files]
        found_modes = core.read_modes([posixpath.join(root, r) if r else root for r in rels], dl)
        modes.update(zip(rels, found_modes, strict=True))
    return dirs, [(rel, sizes[rel]) for rel in files], modes


def _pooled(items: list[tuple[str, int]], work: Callable[[str, int], int], meter: Meter) -> None:
    """Run ``work`` over ``items`` on a few threads; progress is reported on this thread."""
    if not items:
        return
    if len(items) == 1:
        meter.add(work(*items[0]))
        return
    with pool(min(WORKERS, len(items))) as executor:
        futures = [executor.submit(work, rel, size) for rel, size in items]
        for fut in concurrent.futures.as_completed(futures):
            meter.add(fut.result())
