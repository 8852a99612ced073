"""``Fs.upload`` and ``Fs.download``: files and trees between the local disk and an environment.

Big files stream through :mod:`execsdk.fs.streams` (bounded memory); the small files of a tree go
several at a time, one call each. Progress is reported on the calling thread, never decreasing.
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
    core: FsCore, src: str, dst: str, progress: Progress | None, dl: Deadline | None
) -> None:
    """The local file or tree ``src`` to the absolute remote path ``dst`` (see ``Fs.upload``)."""
    st = os.stat(src)
    meter = Meter(progress)
    if not stat.S_ISDIR(st.st_mode):
        meter.start(st.st_size)
        _upload_file(core, src, dst, st.st_size, meter, dl)
        meter.finish()
        return
    dirs, files = scan_local(src)
    meter.start(sum(size for _, size in files))
    core.backend.create_directory(dst, recursive=True, timeout=step(dl))
    for rel in leaf_dirs(dirs):
        core.backend.create_directory(posixpath.join(dst, rel), recursive=True, timeout=step(dl))
    small = [(rel, size) for rel, size in files if size <= POOL_FILE]
    large = [(rel, size) for rel, size in files if size > POOL_FILE]

    def put_small(rel: str, size: int) -> int:
        with open(os.path.join(src, *rel.split("/")), "rb") as f:
            data = f.read()
        core.backend.write_file(posixpath.join(dst, rel), data, timeout=step(dl))
        return len(data)

    _pooled(small, put_small, meter)
    for rel, size in large:
        _upload_file(
            core, os.path.join(src, *rel.split("/")), posixpath.join(dst, rel), size, meter, dl
        )
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


def scan_local(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Relative directories and (relative file, size) below the local ``root``: links to files
    count as files, links to directories and special files are skipped."""
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


def leaf_dirs(dirs: list[str]) -> list[str]:
    """Directories that are not a parent of another (creating these creates them all)."""
    parents = {posixpath.dirname(d) for d in dirs}
    return [d for d in dirs if d not in parents]


# --------------------------------------------------------------------------- download


def download(
    core: FsCore, src: str, dst: str, progress: Progress | None, dl: Deadline | None
) -> None:
    """The remote file or tree ``src`` (absolute) to the local path ``dst`` (see
    ``Fs.download``)."""
    meter = Meter(progress)
    meta = core.backend.get_metadata(src, timeout=step(dl))
    if not meta.is_directory:
        if not meta.is_file:
            raise not_regular(src)
        size = meta.size if meta.size is not None else core.g1_sizes([src], dl)[0]
        meter.start(size)
        _download_file(core, src, dst, size, meter, dl)
        meter.finish()
        return
    dirs, files = scan_remote(core, src, dl)
    meter.start(sum(size for _, size in files))
    os.makedirs(dst, exist_ok=True)
    for rel in dirs:
        os.makedirs(os.path.join(dst, *rel.split("/")), exist_ok=True)
    small = [(rel, size) for rel, size in files if size <= POOL_FILE]
    large = [(rel, size) for rel, size in files if size > POOL_FILE]

    def get_small(rel: str, size: int) -> int:
        data = core.backend.read_file(posixpath.join(src, rel), timeout=step(dl))
        with open(os.path.join(dst, *rel.split("/")), "wb") as f:
            f.write(data)
        return len(data)

    _pooled(small, get_small, meter)
    for rel, size in large:
        _download_file(
            core, posixpath.join(src, rel), os.path.join(dst, *rel.split("/")), size, meter, dl
        )
    meter.finish()


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
    core: FsCore, root: str, dl: Deadline | None
) -> tuple[list[str], list[tuple[str, int]]]:
    """Relative directories and (relative file, size) below ``root``, as transfers see it:
    links to files count as files, links to directories and special files are skipped."""
    backend = core.backend
    dirs: list[str] = []
    files: list[str] = []
    pending = [""]
    unknown_sizes: list[str] = []
    sizes: dict[str, int] = {}
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
                                executor.submit(
                                    backend.get_metadata,
                                    posixpath.join(root, child),
                                    timeout=step(dl),
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
        found = core.g1_sizes([posixpath.join(root, rel) for rel in unknown_sizes], dl)
        sizes.update(zip(unknown_sizes, found, strict=True))
    dirs.sort()
    return dirs, [(rel, sizes[rel]) for rel in sorted(files)]


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
