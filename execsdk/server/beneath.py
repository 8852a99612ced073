"""``openat2(2)`` with ``RESOLVE_BENEATH``: opening a path that cannot leave a directory.

Linux 5.6 added ``openat2``; Python has no wrapper, so it is called through ``syscall(2)``
with ctypes. ``RESOLVE_BENEATH`` makes the kernel itself refuse (``EXDEV``) a lookup that
would leave the directory ``dirfd`` names, by ``..``, by an absolute path or symlink, or by a
symlink whose target climbs out; ``RESOLVE_NO_MAGICLINKS`` refuses ``/proc/<pid>/fd``-style
links (``ELOOP``). The check and the use are one system call, so nothing can swap a component
in between. ``--root`` uses it for every file method (``confine.py``, ``confined_fs.py``).

:func:`probe` tells whether the running kernel has it (``ENOSYS`` on older kernels, and a
seccomp filter may answer ``EPERM``); the server then falls back to check-then-use.

Thread-safety: pure functions; the ctypes call releases the GIL. Safe from any thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

__all__ = [
    "RESOLVE_BENEATH",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "openat2",
    "probe",
]

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

_SYS_OPENAT2 = 437
"""The same number on every architecture that got the syscall table unification (5.1+)."""
_MACHINES = frozenset({"x86_64", "amd64", "aarch64", "arm64"})
_EAGAIN_RETRIES = 64
"""``EAGAIN``: a rename elsewhere raced with a ``..`` lookup; the kernel asks to retry."""


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def _load_syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if platform.system() != "Linux" or platform.machine().lower() not in _MACHINES:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """``openat2(dirfd, path, {flags, mode, resolve})``: a new file descriptor.

    ``O_CLOEXEC`` is always added; ``mode`` is only passed with ``O_CREAT`` (the kernel refuses
    a mode otherwise). ``EINTR`` and ``EAGAIN`` are retried.

    Raises:
        OSError: the kernel's error (``EXDEV`` for an escape, ``ENOSYS`` without openat2).
    """
    if _syscall is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), path)
    flags |= os.O_CLOEXEC
    how = _OpenHow(
        flags, mode if flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)) else 0, resolve
    )
    raw = os.fsencode(path)
    tries = 0
    while True:
        fd = int(
            _syscall(
                ctypes.c_long(_SYS_OPENAT2),
                ctypes.c_int(dirfd),
                ctypes.c_char_p(raw),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
        )
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code == errno.EINTR or (code == errno.EAGAIN and tries < _EAGAIN_RETRIES):
            tries += 1
            continue
        raise OSError(code, os.strerror(code), path)


def probe(dirfd: int) -> str | None:
    """None when ``openat2`` with ``RESOLVE_BENEATH`` works on ``dirfd``, else why not."""
    try:
        os.close(openat2(dirfd, ".", os.O_PATH, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS))
    except OSError as exc:
        return f"openat2 is not available ({exc.strerror or exc})"
    return None
