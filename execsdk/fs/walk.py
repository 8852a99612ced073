"""Directory trees for ``Fs.walk`` and ``RemotePath.glob``: one ``fs/walk`` call where the server
offers it, else one ``fs/readDirectory`` per directory (G1, or a truncated ``fs/walk``)."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import posixpath
from collections.abc import Iterator

from execsdk import errors
from execsdk._deadline import Deadline
from execsdk.backends import FileMetadata
from execsdk.fs.core import FsCore, step

log = logging.getLogger(__name__)

WALK_LIMITS = (64, 10_000, 50_000)
"""fs/walk maximums (depth, directories, entries) that codex 0.169 accepts."""
CLIENT_WALK_MAX_DEPTH = 40
"""Client-side walks with ``followlinks`` stop this deep (no inode numbers to spot cycles)."""

Tree = dict[str, tuple[list[str], list[str]]]
"""Directory path -> (sorted dirnames, sorted filenames)."""


def tree(
    core: FsCore, root: str, max_depth: int | None, followlinks: bool, dl: Deadline | None
) -> Tree:
    """Map of directory -> (dirnames, filenames) for ``root`` and below.

    ``max_depth`` as fs/walk: 0 lists the root's children only; ``None`` is unlimited.
    """
    meta = core.backend.get_metadata(root, timeout=step(dl))
    if not meta.is_directory:
        raise errors.os_error(errno.ENOTDIR, "Not a directory", root)
    if "walk" in core.features:
        found = _server_tree(core, root, meta, max_depth, followlinks, dl)
        if found is not None:
            return found
    return _client_tree(core, root, max_depth, followlinks, dl)


def _server_tree(
    core: FsCore,
    root: str,
    meta: FileMetadata,
    max_depth: int | None,
    followlinks: bool,
    dl: Deadline | None,
) -> Tree | None:
    limit_depth, limit_dirs, limit_entries = WALK_LIMITS
    depth = limit_depth if max_depth is None else min(max_depth, limit_depth)
    start = root
    if meta.is_symlink:
        # fs/walk does not follow a link at the root; os.walk does. Walk the target.
        start = core.backend.canonicalize(root, timeout=step(dl))
    result = core.backend.walk(
        start,
        max_depth=depth,
        max_directories=limit_dirs,
        max_entries=limit_entries,
        follow_directory_symlinks=followlinks,
        timeout=step(dl),
    )
    if result.truncated:
        log.debug("fs/walk of %s was truncated; listing directories one by one", root)
        return None
    found: Tree = {root: ([], [])}
    prefix = start.rstrip("/") + "/"
    deepest: list[str] = []
    for entry in result.entries:
        if not entry.path.startswith(prefix):
            continue
        rel = entry.path[len(prefix) :]
        path = posixpath.join(root, rel)
        parent, name = posixpath.split(path)
        slot = found.setdefault(parent, ([], []))
        if entry.kind == "directory":
            slot[0].append(name)
            found.setdefault(path, ([], []))
            if rel.count("/") == limit_depth and (max_depth is None or max_depth > limit_depth):
                deepest.append(path)
        else:
            slot[1].append(name)
    for dirs, files in found.values():
        dirs.sort()
        files.sort()
    for path in deepest:  # deeper than the server walks: continue below client-side
        left = None if max_depth is None else max_depth - limit_depth - 1
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            found.update(_client_tree(core, path, left, followlinks, dl))
    return found


def _client_tree(
    core: FsCore, root: str, max_depth: int | None, followlinks: bool, dl: Deadline | None
) -> Tree:
    backend = core.backend
    found: Tree = {}
    limit = CLIENT_WALK_MAX_DEPTH if followlinks else None
    pending: list[tuple[str, int]] = [(root, 0)]
    while pending:
        directory, depth = pending.pop()
        try:
            entries = sorted(
                backend.read_directory(directory, timeout=step(dl)), key=lambda e: e.name
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            if directory == root:
                raise
            continue
        dirs = [e.name for e in entries if e.is_dir]
        files = [e.name for e in entries if not e.is_dir]
        found[directory] = (dirs, files)
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
                        is_link = backend.get_metadata(child, timeout=step(dl)).is_symlink
                    except OSError:
                        continue
                if is_link:
                    continue
            pending.append((child, depth + 1))
    return found


def walk_tree(found: Tree, top: str, topdown: bool) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` order over a tree (copies of the name lists, so callers may prune them)."""
    entry = found.get(top)
    if entry is None:
        return
    dirs, files = list(entry[0]), list(entry[1])
    if topdown:
        yield top, dirs, files
    for name in dirs:
        yield from walk_tree(found, posixpath.join(top, name), topdown)
    if not topdown:
        yield top, dirs, files


def glob(core: FsCore, root: str, pattern: str, dl: Deadline | None) -> list[tuple[str, ...]]:
    """Relative paths (as component tuples, ``()`` for ``root`` itself) below ``root`` that
    match ``pattern``, sorted; see ``RemotePath.glob``. A missing ``root`` matches nothing."""
    if not pattern or pattern.startswith("/"):
        raise ValueError(f"non-relative patterns are unsupported: {pattern!r}")
    pats = [p for p in pattern.split("/") if p and p != "."]
    if not pats:
        raise ValueError(f"unacceptable pattern: {pattern!r}")
    dirs_only = pattern.endswith("/") or pats[-1] == "**"
    depth = None if "**" in pats else len(pats) - 1
    try:
        found = tree(core, root, depth, False, dl)
    except (FileNotFoundError, NotADirectoryError):
        return []
    prefix = root.rstrip("/") + "/"
    candidates: list[tuple[tuple[str, ...], bool]] = [((), True)]
    for directory, (dirs, files) in found.items():
        rel = () if directory == root else tuple(directory[len(prefix) :].split("/"))
        candidates.extend(((*rel, d), True) for d in dirs)
        candidates.extend(((*rel, f), False) for f in files)
    return sorted(
        {rel for rel, is_dir in candidates if (is_dir or not dirs_only) and _match(rel, pats)}
    )


def _match(parts: tuple[str, ...], pats: list[str]) -> bool:
    if not pats:
        return not parts
    head = pats[0]
    if head == "**":
        return _match(parts, pats[1:]) or (bool(parts) and _match(parts[1:], pats))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match(parts[1:], pats[1:])
