"""``execsdk serve --root DIR``: every path a request names must resolve inside DIR.

The check runs in the server, before a request reaches the local backends. A path is first
normalised the way the backends normalise it (``.``/``..`` resolved textually, PROTOCOL.md §6
item 42); then its real location is computed the way the kernel will find it: each existing
component is looked up with ``lstat`` and every symlink is followed (relative or absolute,
dangling ones too, up to 40 hops), and the part that does not exist yet is appended as it is.
That real path must be the root's real path or lie below it; otherwise the request is refused
with -32600 "... is outside root ...". A path that cannot be judged (a NUL byte, a URI naming
another host) is refused the same way.

Methods that act on a link itself rather than on its target (``fs/remove``, the source of
``fs/copy``, which copies links as links) resolve every component but the last.

What this does not do: it is not a sandbox. A process started inside the root can touch
anything the server's user can. Checks happen before the operation, so a concurrent change
of the tree (a directory swapped for a symlink by a process) can race with them, and a hard
link inside the root to a file outside is that file. docs/security.md says so.

Thread-safety: immutable after construction; safe from any thread.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from execsdk import errors
from execsdk.server.params import PathUri

__all__ = ["MAX_SYMLINK_HOPS", "Confinement"]

MAX_SYMLINK_HOPS = 40
"""Like Linux's limit: more links on one lookup is a loop (ELOOP)."""


def normalize(path: str) -> str:
    """``path`` as the backends will use it: ``.``/``..`` resolved textually, one leading /."""
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def real_path(path: str, *, follow_last: bool = True) -> str:
    """Where the kernel will find ``path`` (absolute and normalised), missing parts appended.

    Raises:
        OSError: ELOOP after :data:`MAX_SYMLINK_HOPS` symlinks.
    """
    pending = [part for part in reversed(path.split("/")) if part]
    resolved = "/"
    hops = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, name)
        if not pending and not follow_last:
            return candidate
        try:
            st = os.lstat(candidate)
        except OSError:
            # Missing (or unreachable): nothing below it exists, so no link can redirect the
            # rest. A ".." left in a link target is resolved textually, which can only move the
            # answer up, never hide an escape.
            return normalize(posixpath.join(candidate, *reversed(pending)))
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = "/"
            pending.extend(part for part in reversed(target.split("/")) if part)
            continue
        resolved = candidate
    return resolved


class Confinement:
    """The root of ``--root`` and the checks against it.

    Thread-safety: immutable; safe from any thread.
    """

    def __init__(self, root: str) -> None:
        """``root`` must be an existing directory (its real path becomes the root).

        Raises:
            OSError: ``root`` does not exist or is not a directory.
        """
        real = os.path.realpath(os.path.abspath(root))
        st = os.stat(real)  # FileNotFoundError for a missing root
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
        self.root = real

    def __repr__(self) -> str:
        return f"Confinement({self.root!r})"

    def contains(self, real: str) -> bool:
        """True when the real path ``real`` is the root or below it."""
        if self.root == "/":
            return real.startswith("/")
        return real == self.root or real.startswith(self.root + "/")

    def inside(self, path: str, *, follow_last: bool = True) -> bool:
        """True when ``path`` (absolute) resolves inside the root; never raises."""
        if "\x00" in path or not path.startswith("/"):
            return False
        try:
            return self.contains(real_path(normalize(path), follow_last=follow_last))
        except OSError:
            return False

    def _outside(self, shown: str) -> errors.InvalidRequest:
        return errors.InvalidRequest(-32600, f"path `{shown}` is outside root `{self.root}`")

    def check(self, path: str, *, follow_last: bool = True, shown: str | None = None) -> str:
        """The normalised ``path`` if it resolves inside the root.

        Raises:
            errors.InvalidRequest: -32600 "path `...` is outside root `...`".
            OSError: ELOOP (a symlink loop), answered like the backend's own OS errors.
        """
        label = shown if shown is not None else path
        if "\x00" in path or not path.startswith("/"):
            raise self._outside(label.replace("\x00", "\\0"))
        norm = normalize(path)
        if not self.contains(real_path(norm, follow_last=follow_last)):
            raise self._outside(label)
        return norm

    def check_uri(self, uri: PathUri, *, follow_last: bool = True) -> str:
        """:meth:`check` for a ``file://`` URI from params; a foreign host is outside too."""
        if uri.path is None:
            raise errors.InvalidRequest(
                -32600, f"path `{uri.uri}` is outside root `{self.root}` ({uri.host_error})"
            )
        return self.check(uri.path, follow_last=follow_last, shown=uri.uri)
