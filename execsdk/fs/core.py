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
import posixpath
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from typing import Protocol

from execsdk import errors
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk.backends import EnvironmentInfo, FsBackend

MiB = 1024 * 1024
BLOCK_SIZE = MiB
"""Bytes per ``fs/readBlock`` / ``fs/writeBlock`` call (the protocol maximum)."""
ONE_CALL = MiB
"""Files up to this size move in one ``fs/readFile``/``fs/writeFile``; bigger ones in blocks.
(Measured: pipelined 1 MiB blocks beat one big message, and hold far less memory.)"""
G1_PART = 2 * MiB
"""G1 writes: bytes per ``fs/writeFile`` part (the first lands in place)."""


class Host(Protocol):
    """What the facade needs from its environment: the info and a way to run a command."""

    @property
    def info(self) -> EnvironmentInfo: ...

    @property
    def timeout(self) -> float | None: ...

    def run(
        self, args: Sequence[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]: ...


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
        batch: list[str] = []
        budget = 0

        def flush() -> None:
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

        for path in paths:
            if batch and (len(batch) >= 500 or budget + len(path) > 64 * 1024):
                flush()
                batch, budget = [], 0
            batch.append(path)
            budget += len(path) + 1
        if batch:
            flush()
        return sizes
