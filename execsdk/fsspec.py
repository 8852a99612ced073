"""fsspec adapter: ``ExecFileSystem``, protocol ``execsdk``, over an environment's :class:`Fs`.

Install the ``fsspec`` extra. Registered through the ``fsspec.specs`` entry point, so both work::

    fs = ExecFileSystem(environment=env)                          # an Environment you hold
    with fsspec.open("execsdk://127.0.0.1:8765/tmp/x.txt", "rt", token="...") as f:
        text = f.read()                                           # connects, reads, closes

URLs are ``execsdk://HOST:PORT/absolute/path``; the file system then connects with
``execsdk.connect(f"ws://{host}:{port}", token=token)`` and owns that connection (``close()``
ends it, as does garbage collection). Without host and environment, ``execsdk.connect()`` picks
``$EXECSDK_URL`` or the embedded server. Instances are not cached (``cachable = False``): one
tied to a live connection must not outlive ``close()``.

Errors are the builtin ones fsspec users expect (``FileNotFoundError`` ...), and none is
swallowed: fsspec's generic recursive ``copy`` skips a file whose copy raises
``FileNotFoundError``; here it raises (pass ``on_error="ignore"`` to skip). ``info`` asks the
server for the path itself (``fs/getMetadata``) instead of listing the parent directory.

Exclusive creation (``open(path, "xb")``, ``"x"``, ``pipe_file(..., mode="create")``) raises
``FileExistsError`` when anything is at the path. It is atomic on servers announcing
``execsdk/exclusiveCreate`` (``execsdk serve``); on codex servers and local environments the
adapter looks first and then creates, so a writer racing in between can lose its file.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import posixpath
import urllib.parse
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractFileSystem
from fsspec.utils import isfilelike, stringify_path

from execsdk.fs.facade import Fs

if TYPE_CHECKING:
    from execsdk.environment import Environment

__all__ = ["ExecFileSystem"]

log = logging.getLogger(__name__)

_PREFIX = "execsdk://"


class ExecFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec file system over an execsdk environment (local or remote).

    Args:
        environment: an ``Environment`` to use (not closed by this object).
        host, port, token: connect to ``ws://host:port`` instead (this object owns the
            connection); ``url`` may be given whole instead of host and port.
        timeout: default timeout of the connection it opens.
        auto_mkdir: create missing parent directories when writing or copying a file (as
            fsspec's ``LocalFileSystem(auto_mkdir=True)``); ``put`` always does. Without it a
            missing parent raises ``FileNotFoundError``.

    Thread-safety: every method may be called from any thread (as :class:`~execsdk.fs.Fs`).
    """

    protocol = "execsdk"
    root_marker = "/"
    cachable = False

    def __init__(
        self,
        environment: Environment | None = None,
        *,
        host: str | None = None,
        port: int | str | None = None,
        token: str | None = None,
        url: str | None = None,
        timeout: float | None = 30.0,
        auto_mkdir: bool = False,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        self.auto_mkdir = auto_mkdir
        self._owned: Environment | None = None
        if environment is None:
            # Imported here: a filesystem over an environment it was given never needs a client.
            from execsdk.remote.connector import connect

            if url is None and host is not None:
                url = f"ws://{host}:{port}" if port is not None else f"ws://{host}"
            environment = connect(url, token=token, timeout=timeout)
            self._owned = environment
            self._finalizer = weakref.finalize(self, environment.close)
        self.environment = environment
        self.fs: Fs = environment.fs

    def close(self) -> None:
        """Close the connection this object opened (not an environment passed in)."""
        if self._owned is not None:
            self._finalizer()

    # ------------------------------------------------------------------ URLs

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text: str = stringify_path(path)
        if text.startswith(_PREFIX):
            rest = text[len(_PREFIX) :]
            if not rest.startswith("/"):  # execsdk://host:port/path
                slash = rest.find("/")
                rest = rest[slash:] if slash >= 0 else "/"
            text = rest
        elif text.startswith("execsdk::"):
            text = text[len("execsdk::") :]
        return text.rstrip("/") or cls.root_marker

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        text = stringify_path(path)
        if not text.startswith(_PREFIX):
            return {}
        parts = urllib.parse.urlsplit(text)
        out: dict[str, Any] = {}
        if parts.hostname:
            out["host"] = parts.hostname
        if parts.port is not None:
            out["port"] = parts.port
        return out

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith(_PREFIX) else f"execsdk://{name}"

    # ------------------------------------------------------------------ metadata

    def _info_of(self, path: str, meta: Any) -> dict[str, Any]:
        kind = "directory" if meta.is_dir else ("file" if meta.is_file else "other")
        return {
            "name": path,
            "size": meta.size,
            "type": kind,
            "islink": meta.is_symlink,
            "mtime": meta.modified.timestamp() if meta.modified else None,
            "created": meta.created.timestamp() if meta.created else None,
        }

    def _infos(self, paths: list[str]) -> list[dict[str, Any]]:
        """Info dicts for several paths (vanished ones left out)."""
        out: list[dict[str, Any]] = []
        for p in paths:
            try:
                out.append(self._info_of(p, self.fs.stat(p)))
            except FileNotFoundError:
                continue  # removed meanwhile
        return self._with_sizes(out)

    def _with_sizes(self, infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """G1 metadata has no size: ask one helper process for all the files at once."""
        missing = [i for i in infos if i["size"] is None and i["type"] == "file"]
        if missing:
            sizes = self.fs._g1_sizes([i["name"] for i in missing], None)
            for info, size in zip(missing, sizes, strict=True):
                info["size"] = size
        for info in infos:
            if info["size"] is None:
                info["size"] = 0
        return infos

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        p = self.fs.abspath(self._strip_protocol(path))
        return self._with_sizes([self._info_of(p, self.fs.stat(p))])[0]

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        p = self.fs.abspath(self._strip_protocol(path))
        try:
            names = self.fs.listdir(p)
        except NotADirectoryError:
            return [self.info(p)] if detail else [p]
        full = [posixpath.join(p, n) for n in names]
        return self._infos(full) if detail else full

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.fs.exists(self._strip_protocol(path))

    def isdir(self, path: str) -> bool:
        return self.fs.is_dir(self._strip_protocol(path))

    def isfile(self, path: str) -> bool:
        return self.fs.is_file(self._strip_protocol(path))

    def created(self, path: str) -> _dt.datetime:
        when = self.fs.stat(self._strip_protocol(path)).created
        if when is None:
            raise NotImplementedError("the server reports no creation time for this file")
        return when

    def modified(self, path: str) -> _dt.datetime:
        when = self.fs.stat(self._strip_protocol(path)).modified
        if when is None:
            raise NotImplementedError("the server reports no modification time for this file")
        return when

    def walk(
        self,
        path: str,
        maxdepth: int | None = None,
        topdown: bool = True,
        on_error: Any = "omit",
        **kwargs: Any,
    ) -> Iterator[tuple[str, Any, Any]]:
        """``(dirpath, dirs, files)`` below ``path``, as fsspec's ``walk``: names (or, with
        ``detail=True``, name -> info dicts); top-down, pruning ``dirs`` in place prunes the
        walk. ``maxdepth`` (1: ``path`` alone) bounds what is asked of the server too."""
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        detail = kwargs.pop("detail", False)
        root = self.fs.abspath(self._strip_protocol(path))
        depth = None if maxdepth is None else maxdepth - 1
        try:
            for dirpath, dirs, files in self.fs.walk(root, topdown=topdown, max_depth=depth):
                if not detail:
                    yield dirpath, dirs, files
                    continue
                infos = self._infos([posixpath.join(dirpath, n) for n in dirs + files])
                by_name = {posixpath.basename(i["name"]): i for i in infos}
                dir_infos = {n: by_name[n] for n in dirs if n in by_name}
                yield dirpath, dir_infos, {n: by_name[n] for n in files if n in by_name}
                # What the caller pruned from the dict is pruned from the walk.
                dirs[:] = [n for n in dirs if n in dir_infos]
        except NotADirectoryError:
            return  # a file: nothing to walk (as os.walk)
        except OSError as exc:
            if on_error == "raise":
                raise
            if callable(on_error):
                on_error(exc)

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        root = self.fs.abspath(self._strip_protocol(path))
        names: list[str] = []
        if withdirs and self.fs.is_dir(root):
            names.append(root)
        for dirpath, dirs, files in self.walk(root, maxdepth=maxdepth):
            names.extend(posixpath.join(dirpath, f) for f in files)
            if withdirs:
                names.extend(posixpath.join(dirpath, d) for d in dirs)
        if not names and self.fs.is_file(root):
            names.append(root)
        names.sort()
        if not detail:
            return names
        return {i["name"]: i for i in self._infos(names)}

    # ------------------------------------------------------------------ contents

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        p = self._strip_protocol(path)
        if start is None and end is None:
            return self.fs.read_bytes(p)
        with self.fs.open(p, "rb") as f:
            size = f.seek(0, os.SEEK_END) if (start or 0) < 0 or (end or 0) < 0 else None
            begin = start or 0
            if begin < 0 and size is not None:
                begin = max(0, size + begin)
            f.seek(begin)
            if end is None:
                return f.read()
            stop = size + end if end < 0 and size is not None else end
            return f.read(max(0, stop - begin))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write ``value`` to a file; ``mode="create"`` raises ``FileExistsError`` when anything
        is there (atomically where the server offers it, see the module notes)."""
        p = self._strip_protocol(path)
        self._parents(p)
        if mode == "create":
            with self.fs.open(p, "xb") as f:
                f.write(value)
            return
        self.fs.write_bytes(p, value)

    def _parents(self, path: str) -> None:
        if self.auto_mkdir:
            parent = posixpath.dirname(self.fs.abspath(path))
            self.fs.mkdir(parent, parents=True, exist_ok=True)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> Any:
        if mode not in ("rb", "wb", "xb"):
            raise ValueError(f"execsdk files open in 'rb', 'wb' or 'xb' mode, not {mode!r}")
        if not autocommit:
            raise NotImplementedError("transactions are not supported")
        p = self._strip_protocol(path)
        if mode != "rb":
            self._parents(p)
        return self.fs.open(p, mode)

    # ------------------------------------------------------------------ changes

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        p = self._strip_protocol(path)
        if self.fs.exists(p):
            raise FileExistsError(p)
        self.fs.mkdir(p, parents=create_parents, exist_ok=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.fs.mkdir(self._strip_protocol(path), parents=True, exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        self.fs.rmdir(self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        self.fs.remove(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        for item in path if isinstance(path, list) else [path]:
            p = self._strip_protocol(item)
            if recursive and self.fs.is_dir(p) and not self.fs.stat(p).is_symlink:
                self.fs.rmtree(p)
            else:
                self.fs.remove(p)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy one file (a link as a link), or create ``path2`` as a directory for a directory.

        The parent of ``path2`` is created with ``auto_mkdir``; otherwise a missing parent
        raises ``FileNotFoundError``, as a missing source does.
        """
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.fs.is_dir(src):
            self.fs.mkdir(dst, parents=True, exist_ok=True)
            return
        self._parents(dst)
        self.fs.copy(src, dst)

    def copy(
        self,
        path1: Any,
        path2: Any,
        recursive: bool = False,
        maxdepth: int | None = None,
        on_error: str | None = None,
        **kwargs: Any,
    ) -> None:
        """fsspec's ``copy``, except that a file that cannot be copied raises, recursive or not
        (fsspec's default skips it silently in recursive copies). ``on_error="ignore"`` skips
        sources that raise ``FileNotFoundError``, as fsspec does."""
        super().copy(
            path1,
            path2,
            recursive=recursive,
            maxdepth=maxdepth,
            on_error="raise" if on_error is None else on_error,
            **kwargs,
        )

    def mv(
        self,
        path1: Any,
        path2: Any,
        recursive: bool = False,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(path1, list) or isinstance(path2, list):
            super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
            return
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.fs.abspath(src) != self.fs.abspath(dst):
            self.fs.move(src, dst)

    # ------------------------------------------------------------------ transfers

    def put_file(
        self,
        lpath: str,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        dst = self._strip_protocol(rpath)
        if mode == "create" and self.fs.exists(dst):
            raise FileExistsError(dst)
        if os.path.isdir(lpath):
            self.fs.mkdir(dst, parents=True, exist_ok=True)
            return
        self.fs.mkdir(posixpath.dirname(self.fs.abspath(dst)), parents=True, exist_ok=True)
        self.fs.upload(lpath, dst, progress=_progress(callback))

    def get_file(
        self,
        rpath: str,
        lpath: Any,
        callback: Callback = DEFAULT_CALLBACK,
        outfile: Any = None,
        **kwargs: Any,
    ) -> None:
        src = self._strip_protocol(rpath)
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        if outfile is not None:
            with self.fs.open(src, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    outfile.write(chunk)
                    callback.relative_update(len(chunk))
            return
        if self.fs.is_dir(src):
            os.makedirs(lpath, exist_ok=True)
            return
        parent = os.path.dirname(os.fspath(lpath))
        if parent:
            os.makedirs(parent, exist_ok=True)
        self.fs.download(src, lpath, progress=_progress(callback))


def _progress(callback: Callback) -> Any:
    def report(done: int, total: int) -> None:
        callback.set_size(total)
        callback.absolute_update(done)

    return report
