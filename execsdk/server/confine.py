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

Where the kernel has ``openat2`` (Linux 5.6+, ``beneath.py``) the file methods do not use
that check-then-use: they open every path relative to a descriptor of the root with
``RESOLVE_BENEATH`` (:meth:`Confinement.open`, :meth:`Confinement.open_parent`) and work on
the descriptors they get (``confined_fs.py``), so a concurrent swap cannot lead them out. The
textual normalisation and the words of every answer stay the same; the kernel's ``EXDEV``
becomes the "outside root" refusal (after the real path is looked at once more, because
``RESOLVE_BENEATH`` also refuses an absolute symlink that leads back inside, which is allowed).
Without ``openat2`` the server falls back to the check above and logs it once at startup.

What this does not do: it is not a sandbox. A process started inside the root can touch
anything the server's user can. In the fallback mode checks happen before the operation, so a
concurrent change of the tree (a directory swapped for a symlink by a process) can race with
them; a process's ``cwd`` is checked, then the child's ``chdir`` resolves it again; and a hard
link inside the root to a file outside is that file. docs/security.md says so.

Nothing may remove the root itself (``fs/remove`` of ``root/.``, ``root/link/..``, or any path
that names it): -32600 "path `...` is the root `...` and cannot be removed".

Thread-safety: immutable after construction; safe from any thread.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat

from execsdk import errors
from execsdk.server import beneath
from execsdk.server.params import PathUri

__all__ = ["MAX_SYMLINK_HOPS", "Confinement"]

log = logging.getLogger(__name__)

_RESOLVE = beneath.RESOLVE_BENEATH | beneath.RESOLVE_NO_MAGICLINKS

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

    def __init__(self, root: str, *, use_openat2: bool = True) -> None:
        """``root`` must be an existing directory (its real path becomes the root).

        With ``use_openat2`` (the default) and a kernel that has it, the file methods resolve
        every path with ``openat2(RESOLVE_BENEATH)`` (:attr:`beneath` is True); otherwise they
        check before they act. Which of the two is logged once, here.

        Raises:
            OSError: ``root`` does not exist or is not a directory.
        """
        real = os.path.realpath(os.path.abspath(root))
        st = os.stat(real)  # FileNotFoundError for a missing root
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
        self.root = real
        self._prefix = real.rstrip("/") + "/"
        # A descriptor of the root for the server's lifetime: every openat2 starts there.
        self.fd = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        why_not = beneath.probe(self.fd) if use_openat2 else "disabled"
        self.beneath = why_not is None
        if self.beneath:
            log.info("--root %s: paths resolved with openat2(RESOLVE_BENEATH)", real)
        else:
            log.warning(
                "--root %s: %s; paths are checked before use (a concurrent change of the tree "
                "can race with the check, see docs/security.md)",
                real,
                why_not,
            )

    def __repr__(self) -> str:
        return f"Confinement({self.root!r})"

    def close(self) -> None:
        """Close the root's descriptor (tests; the server keeps it for its lifetime)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

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

    def root_refusal(self, shown: str) -> errors.InvalidRequest:
        """-32600 for a request that would remove the root itself."""
        return errors.InvalidRequest(
            -32600, f"path `{shown}` is the root `{self.root}` and cannot be removed"
        )

    def check_removable(self, uri: PathUri) -> str:
        """:meth:`check_uri` for ``fs/remove`` (the final link not followed), refusing the root
        itself however it is named (``root/.``, ``root/link/..``, a link to its parent)."""
        norm = self.check_uri(uri, follow_last=False)
        if norm == self.root or real_path(norm, follow_last=False) == self.root:
            raise self.root_refusal(uri.uri)
        return norm

    # ------------------------------------------------------------------ openat2 mode

    def locate(self, uri: PathUri, *, follow_last: bool = True) -> tuple[str, str]:
        """The normalised path a request names and that path relative to the root (``.`` for
        the root itself). Nothing is opened: a path written below the root is taken as it is
        (the kernel judges it when it is opened); any other path is judged by its real path
        (a link elsewhere that leads into the root), as :meth:`check` does.

        Raises:
            errors.InvalidRequest: -32600 outside root (NUL byte, foreign host, real path out).
            OSError: ELOOP while judging a path written outside the root.
        """
        if uri.path is None:
            raise errors.InvalidRequest(
                -32600, f"path `{uri.uri}` is outside root `{self.root}` ({uri.host_error})"
            )
        path = uri.path
        if "\x00" in path or not path.startswith("/"):
            raise self._outside(uri.uri.replace("\x00", "\\0"))
        norm = normalize(path)
        if norm == self.root:
            return norm, "."
        if norm.startswith(self._prefix):
            return norm, norm[len(self._prefix) :]
        real = real_path(norm, follow_last=follow_last)
        if not self.contains(real):
            raise self._outside(uri.uri)
        return norm, self.relative(real)

    def relative(self, real: str) -> str:
        """``real`` (a real path inside the root) relative to the root; ``.`` for the root."""
        return "." if real == self.root else real[len(self._prefix) :]

    def open(self, rel: str, flags: int, mode: int = 0, *, shown: str) -> int:
        """``openat2(root, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)``.

        The kernel refuses any escape (EXDEV). Since it also refuses an absolute symlink that
        leads back inside the root, an EXDEV is judged once more by the real path: inside, the
        real path (no links left) is opened instead, beneath the root again; outside, refused.

        Raises:
            errors.InvalidRequest: -32600 "path `shown` is outside root `...`".
            OSError: every other error of the open (ENOENT, ENOTDIR, ELOOP, EACCES, ...).
        """
        try:
            return beneath.openat2(self.fd, rel, flags, mode, _RESOLVE)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        try:
            real = real_path(posixpath.join(self.root, rel))
        except OSError:
            # A link changed under the look (or a loop): the kernel's EXDEV stands.
            raise self._outside(shown) from None
        if not self.contains(real) or self.relative(real) == rel:
            raise self._outside(shown)
        try:
            return beneath.openat2(self.fd, self.relative(real), flags, mode, _RESOLVE)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise self._outside(shown) from None
            raise

    def open_parent(self, rel: str, *, shown: str) -> tuple[int, str]:
        """A descriptor (``O_PATH``) of the directory holding ``rel``, and ``rel``'s last name,
        for the ``*at`` calls that act on a name (mkdir, unlink, rmdir, symlink, lstat).

        The root itself (``.``, or a path whose directory leads out but which names the root,
        like ``up/root`` with ``up -> ..``) gives a descriptor of the root and the name ``.``:
        callers that must not act on the root check for it.

        Raises:
            errors.InvalidRequest: the directory is outside the root.
            OSError: the directory's own errors (ENOENT, ENOTDIR, ELOOP, EACCES, ...).
        """
        if rel == ".":
            return self._root_fd(), "."
        head, name = posixpath.split(rel)
        try:
            return self.open(head or ".", os.O_PATH | os.O_DIRECTORY, shown=shown), name
        except errors.InvalidRequest:
            # The directory leads out; what it names may still be inside (``up/root``).
            try:
                real = real_path(posixpath.join(self.root, rel), follow_last=False)
            except OSError:
                raise self._outside(shown) from None
            if not self.contains(real):
                raise
            rel2 = self.relative(real)
            if rel2 == ".":
                return self._root_fd(), "."
            head, name = posixpath.split(rel2)
            if rel2 == rel:
                raise
            return self.open(head or ".", os.O_PATH | os.O_DIRECTORY, shown=shown), name

    def _root_fd(self) -> int:
        return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)

    def judge(self, rel: str, *, shown: str) -> None:
        """Refuse ``rel`` when following it (final link included) leads out of the root.

        For the methods that act on a final name without following it (mkdir, an exclusive
        create, a link copy) but are refused, as before, when it is a link that leads out.
        A symlink loop raises ELOOP, as :meth:`check` does; other errors (missing, not a
        directory) are left to the operation itself.
        """
        try:
            os.close(self.open(rel, os.O_PATH, shown=shown))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise

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
