"""``RemotePath``: a path on an environment, with pathlib's names, bound to its :class:`Fs`.

Pure operations never call the server; the others delegate to :class:`~execsdk.fs.facade.Fs`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import PurePath, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Union

from execsdk._deadline import UNSET, Timeoutish
from execsdk.backends import FileInfo
from execsdk.fs import walk
from execsdk.fs.core import deadline_for

if TYPE_CHECKING:
    from execsdk.fs.facade import Fs

__all__ = ["PathArg", "RemotePath", "normpath"]

PathArg = Union[str, PurePosixPath, "RemotePath"]
"""A path argument: ``str``, ``PurePosixPath`` or ``RemotePath``."""


def normpath(path: str) -> str:
    """``path`` with ``.``/``..`` resolved textually and one leading slash (as the server does)."""
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


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

    def chmod(self, mode: int, *, timeout: Timeoutish = UNSET) -> None:
        """Set exactly these permission bits (0 ... 0o7777); see :meth:`Fs.chmod`."""
        self._fs.chmod(self._path, mode, timeout=timeout)

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
        matches = walk.glob(self._fs._core, self._path, pattern, deadline_for(timeout))
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
