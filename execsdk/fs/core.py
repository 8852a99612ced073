"""What every part of the filesystem facade shares: the backend, helper processes, deadlines.

:class:`FsCore` pairs an :class:`~execsdk.backends.FsBackend` with the environment that can
run helper commands (the G1 fallbacks and ``move``). The functions here turn one caller
``timeout`` into the ``timeout`` of each call of a multi-call operation, and build the builtin
errors the facade raises for files it cannot read as regular files.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import itertools
import posixpath
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar, cast

from execsdk import errors
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk.backends import EnvironmentInfo, FileMetadata, FsBackend

MiB = 1024 * 1024
BLOCK_SIZE = MiB
"""Bytes per ``fs/readBlock`` / ``fs/writeBlock`` call (the protocol maximum)."""
ONE_CALL = MiB
"""Files up to this size move in one ``fs/readFile``/``fs/writeFile``; bigger ones in blocks.
(Measured: pipelined 1 MiB blocks beat one big message, and hold far less memory.)"""
G1_PART = 2 * MiB
"""G1 writes: bytes per ``fs/writeFile`` part (the first lands in place)."""

T = TypeVar("T")


class Host(Protocol):
    """What the facade needs from its environment: the info and a way to run a command."""

    @property
    def info(self) -> EnvironmentInfo: ...

    @property
    def timeout(self) -> float | None: ...

    def run(
        self, args: Sequence[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]: ...


class ModeBackend(Protocol):
    """What an :class:`~execsdk.backends.FsBackend` offers on top when it can read and set
    permission bits itself (the local disk; servers announcing ``execsdk/fileMode``).
    Elsewhere the facade runs ``chmod`` and ``stat`` in a helper process."""

    @property
    def supports_modes(self) -> bool:
        """True when :meth:`set_mode` and :meth:`get_metadata_and_mode` work."""

    def set_mode(self, path: str, mode: int, *, timeout: Timeoutish = UNSET) -> None:
        """Set exactly ``mode`` (0 ... 0o7777) on ``path`` (a link's target)."""

    def get_metadata_and_mode(
        self, path: str, *, timeout: Timeoutish = UNSET
    ) -> tuple[FileMetadata, int]:
        """``get_metadata`` plus the permission bits of the file a link leads to."""


_MODE_METHODS = frozenset({"supports_modes", "set_mode", "get_metadata_and_mode"})

MODE_BITS = 0o7777
"""Permission bits: rwx for user, group and others, setuid, setgid, sticky."""


def check_mode(mode: int) -> int:
    """``mode`` if it is permission bits only (0 ... 0o7777), else ``ValueError``/``TypeError``."""
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int, not {type(mode).__name__}")
    if not 0 <= mode <= MODE_BITS:
        raise ValueError(
            f"mode must be permission bits between 0 and 0o7777 (stat.S_IMODE), not {mode:#o}"
        )
    return mode


# --------------------------------------------------------------------------- deadlines


def deadline_for(timeout: Timeoutish) -> Deadline | None:
    """``None`` when the caller left ``timeout`` out: each call then gets its own default."""
    if timeout is UNSET:
        return None
    return Deadline(resolve_timeout(timeout, None))


def step(deadline: Deadline | None, what: str = "fs") -> Timeoutish:
    """The ``timeout`` for the next call of a multi-call operation."""
    if deadline is None:
        return UNSET
    left = deadline.left()
    if left is not None and left <= 0:
        raise errors.RequestTimeout(what, deadline.total, "the operation ran out of time")
    return left


@contextlib.contextmanager
def pool(workers: int) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """Worker threads for pipelined calls; on exit queued work is dropped and running calls
    are waited for, so no thread outlives the operation."""
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="execsdk-fs-transfer"
    )
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def handle_id() -> str:
    """A fresh ``fs/open`` handle id (unique per connection with overwhelming odds)."""
    return f"h{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- errors


def not_regular(path: str) -> errors.RemoteOSError:
    return errors.os_error(
        errno.EINVAL, "Not a regular file (only regular files can be read or written)", path
    )


def is_dir_error(path: str, hint: str = "") -> errors.RemoteOSError:
    return errors.os_error(errno.EISDIR, "Is a directory" + hint, path)


# --------------------------------------------------------------------------- the core


class FsCore:
    """The backend plus the environment that runs helper processes (``None``: none can run).

    Thread-safety: stateless beyond its two references; safe from any thread.
    """

    def __init__(self, backend: FsBackend, host: Host | None) -> None:
        self.backend = backend
        self.host = host

    @property
    def features(self) -> frozenset[str]:
        return self.backend.features

    @property
    def one_call_write(self) -> int:
        """Largest write sent as one ``fs/writeFile`` (bigger: blocks, or G1 parts)."""
        return ONE_CALL if "blocks" in self.features else G1_PART

    def explain_refused_read(self, p: str, exc: errors.InvalidRequest, dl: Deadline | None) -> None:
        """Turn a refused ``fs/readFile``/``fs/open`` into a builtin error, by the file's state
        (not the server's prose): directory -> IsADirectoryError, special file -> OSError.
        Returns normally only for a regular file (refused because of its size)."""
        try:
            meta = self.backend.get_metadata(p, timeout=step(dl))
        except OSError:
            raise exc from None
        if meta.is_directory:
            raise is_dir_error(p) from exc
        if not meta.is_file:
            raise not_regular(p) from exc

    # ------------------------------------------------------------------ helper processes

    def run(self, argv: Sequence[str], dl: Deadline | None) -> subprocess.CompletedProcess[bytes]:
        """Run a helper command in the environment (G1 fallbacks, move)."""
        if self.host is None:
            raise errors.UnsupportedByServer(
                f"{argv[0]} fallback", hint="this Fs has no environment to run processes in"
            )
        budget: float | None
        if dl is None:
            # Helper commands move up to 32 MiB; give them at least a minute.
            limit = self.host.timeout
            budget = None if limit is None else max(limit, 60.0)
        else:
            budget = dl.left()
            if budget is not None and budget <= 0:
                raise errors.RequestTimeout(argv[0], dl.total, "the operation ran out of time")
        return self.host.run(list(argv), timeout=budget)

    def diagnose(
        self, src: str, dst: str, result: subprocess.CompletedProcess[bytes], dl: Deadline | None
    ) -> None:
        """A helper process failed: raise the builtin error that explains it."""
        message = (
            result.stderr.decode("utf-8", "replace").strip() or f"exit status {result.returncode}"
        )
        self.backend.get_metadata(src, timeout=step(dl))  # FileNotFoundError for the source
        parent = posixpath.dirname(dst)
        if parent != dst:
            self.backend.get_metadata(parent, timeout=step(dl))
        argv = result.args if isinstance(result.args, list) else [str(result.args)]
        raise errors.os_error(None, f"{argv[0]} failed: {message}", src)

    def g1_sizes(self, paths: Sequence[str], dl: Deadline | None) -> list[int]:
        """Sizes of files on a server whose metadata has none (G1), a few hundred per process."""
        sizes: list[int] = []
        for batch in _batches(paths, paths):
            result = self.run(
                [
                    "/bin/sh",
                    "-c",
                    'for f do wc -c < "$f" 2>/dev/null || echo -1; done',
                    "sh",
                    *batch,
                ],
                dl,
            )
            values = [int(v) for v in result.stdout.split()]
            if len(values) != len(batch):
                self.diagnose(batch[0], batch[0], result, dl)
            for path, value in zip(batch, values, strict=True):
                if value < 0:
                    self.backend.get_metadata(path, timeout=step(dl))
                    raise errors.os_error(None, "cannot read the file size", path)
            sizes.extend(values)
        return sizes

    # ------------------------------------------------------------------ permission bits

    @property
    def modes(self) -> ModeBackend | None:
        """The backend when it reads and sets permission bits itself, else None (then
        :meth:`read_modes` and :meth:`set_modes` run ``stat`` and ``chmod`` processes)."""
        backend = self.backend
        # Asked of the class: a wrapper that forwards unknown attributes (``__getattr__``) to
        # another backend but overrides ``get_metadata`` must not be bypassed by ``fs/stat``.
        if _MODE_METHODS.issubset(dir(type(backend))) and cast(ModeBackend, backend).supports_modes:
            return cast(ModeBackend, backend)
        return None

    def require_modes(self) -> None:
        """Raise ``UnsupportedByServer`` now, before anything is written, when permission bits
        can be neither set by the backend nor by a ``chmod`` process."""
        if self.host is None and self.modes is None:
            raise errors.UnsupportedByServer(
                "permission bits",
                hint="this Fs has no environment to run chmod in; pass preserve_mode=False",
            )

    def read_modes(self, paths: Sequence[str], dl: Deadline | None) -> list[int]:
        """Permission bits of ``paths`` (links followed): by the backend, one call each, or by
        ``stat`` processes of a few hundred paths each (codex servers).

        Raises ``FileNotFoundError`` for a path that does not exist.
        """
        backend = self.modes
        if backend is not None:
            return [backend.get_metadata_and_mode(p, timeout=step(dl))[1] for p in paths]
        modes: list[int] = []
        for batch in _batches(paths, paths):
            result = self.run(["/bin/sh", "-c", _STAT_SCRIPT, "sh", *batch], dl)
            values = result.stdout.decode("ascii", "replace").split()
            if len(values) != len(batch):
                self.diagnose(batch[0], batch[0], result, dl)
            for path, value in zip(batch, values, strict=True):
                try:
                    modes.append(int(value, 8) & MODE_BITS)
                except ValueError:
                    self.backend.get_metadata(path, timeout=step(dl))  # FileNotFoundError
                    raise errors.os_error(None, "cannot read the permission bits", path) from None
        return modes

    def set_modes(self, pairs: Sequence[tuple[str, int]], dl: Deadline | None) -> None:
        """Give each path exactly its mode, in the order given (callers put a directory after
        everything below it): by the backend, one call each, or by ``chmod`` processes (codex
        servers; one per few hundred paths, consecutive equal modes sharing a ``chmod``)."""
        backend = self.modes
        if backend is not None:
            for path, mode in pairs:
                backend.set_mode(path, mode, timeout=step(dl))
            return
        for batch in _batches([path for path, _ in pairs], pairs):
            argv: list[str] = []
            for mode, group in itertools.groupby(batch, key=lambda pair: pair[1]):
                paths = [path for path, _ in group]
                argv.extend((f"{mode:05o}", str(len(paths)), *paths))
            result = self.run(["/bin/sh", "-c", _CHMOD_SCRIPT, "sh", *argv], dl)
            if result.returncode != 0:
                self._chmod_failed(batch, result, dl)

    def _chmod_failed(
        self,
        batch: Sequence[tuple[str, int]],
        result: subprocess.CompletedProcess[bytes],
        dl: Deadline | None,
    ) -> None:
        message = result.stderr.decode("utf-8", "replace").strip()
        # chmod names the path it could not change, quoted by GNU coreutils.
        named = [p for p, _ in batch if f"'{p}'" in message]
        named = named or [p for p, _ in batch if p in message]
        path = named[0] if named else batch[0][0]
        self.backend.get_metadata(path, timeout=step(dl))  # FileNotFoundError
        number = errno.EPERM if "not permitted" in message else None
        raise errors.os_error(number, f"chmod failed: {message or result.returncode}", path)


_STAT_SCRIPT = r"""
if stat -L -c %a / >/dev/null 2>&1; then set -- -c %a "$@"; else set -- -f %Mp%Lp "$@"; fi
o=$1 f=$2; shift 2
out=$(stat -L "$o" "$f" -- "$@" 2>/dev/null) && { printf '%s\n' "$out"; exit 0; }
for p do stat -L "$o" "$f" -- "$p" 2>/dev/null || echo -; done
"""
"""Prints the permission bits of each argument in octal, one line each ("-" for a path it
cannot stat): GNU/busybox ``stat -c %a``, else BSD ``stat -f %Mp%Lp``; one ``stat`` for all
paths unless one fails, then one per path."""

_CHMOD_SCRIPT = r"""
rc=0
while [ $# -gt 0 ]; do
  m=$1 n=$2; shift 2
  a= i=1
  while [ $i -le $n ]; do a="$a \"\${$i}\""; i=$((i + 1)); done
  eval "chmod \"\$m\" --$a" || rc=1
  shift $n
done
exit $rc
"""
"""Arguments: groups of ``MODE COUNT PATH...``; one ``chmod MODE -- PATH...`` per group. Modes
have five octal digits, so GNU chmod clears a directory's setgid bit when asked to (with three
or four it keeps it). Paths reach ``chmod`` as positional parameters (``"${7}"``), never as
code."""


def _batches(paths: Sequence[str], items: Sequence[T]) -> Iterator[list[T]]:
    """``items`` (one per path) in slices of at most 500 whose paths add up to at most
    64 KiB: what one helper process takes on its command line."""
    batch: list[T] = []
    budget = 0
    for path, item in zip(paths, items, strict=True):
        if batch and (len(batch) >= 500 or budget + len(path) > 64 * 1024):
            yield batch
            batch, budget = [], 0
        batch.append(item)
        budget += len(path) + 1
    if batch:
        yield batch
