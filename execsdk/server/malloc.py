"""Allocator settings for the ``execsdk serve`` process (Linux with glibc only).

Every megabyte-sized request (a 1 MiB ``fs/writeBlock`` or ``process/write`` is 1.4 MB of JSON)
allocates a few fresh buffers of that size: the unmasked frame, the parsed string, the decoded
bytes. glibc hands out blocks that large with ``mmap`` and returns them with ``munmap`` (its
threshold moves with the sizes it sees, so whether it does depends on the order of earlier
allocations), or trims them off its heap as soon as they are freed. Either way the next request
touches fresh pages: measured on one connection writing 1 MiB files, 30,000 page faults per
64 MiB in that state against 2,300 in the other, and about 0.7 ms more server CPU per file.

:func:`tune_allocator` fixes both thresholds instead: blocks up to 32 MiB come from the heap,
and up to 128 MiB of freed heap stays mapped for the next request. The cost is resident
memory kept after a burst of large transfers (about 40 MiB more after the fs and stdin
benchmarks). The command line calls it when it starts a server; ``EXECSDK_SERVE_MALLOC=default``
leaves glibc's own behaviour. A program that embeds :class:`~execsdk.server.ws.WsServer` keeps
its allocator as it is unless it calls this itself.

What closed connections freed is given back, though: :func:`trim_soon` (called as each
connection ends) runs ``malloc_trim(0)`` once, a second later, for every burst of closes, so a
thousand connections that come and go leave the heap's free pages with the system, not with the
server (glibc keeps freed memory of its per-thread arenas otherwise, whatever the thresholds).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from typing import Any

__all__ = [
    "MMAP_THRESHOLD",
    "OPT_OUT",
    "TRIM_DELAY",
    "TRIM_THRESHOLD",
    "trim",
    "trim_soon",
    "tune_allocator",
]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks smaller than this come from the heap (glibc's largest allowed value on 64-bit)."""
TRIM_THRESHOLD = 128 * 1024 * 1024
"""Freed memory at the top of a heap is given back to the system only beyond this."""
OPT_OUT = "EXECSDK_SERVE_MALLOC"
"""Set to ``default`` to keep glibc's own thresholds."""

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds for a server process; True when both were set.

    Does nothing (False) off Linux, without glibc (musl's ``mallopt`` ignores these), or when
    ``EXECSDK_SERVE_MALLOC=default``. Call it once, early, from the server's main thread.
    """
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only; musl lacks it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("allocator thresholds left as they are: no glibc")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("allocator thresholds %s", "set" if done else "refused by glibc")
    return done


TRIM_DELAY = 1.0
"""Seconds between a connection's end and the trim that gives its memory back (closes within
that time share one trim)."""

_trim_lock = threading.Lock()
_trim_timer: threading.Timer | None = None
_malloc_trim: Any = None  # glibc's malloc_trim, once looked up; False: none here


def _trim_function() -> Any:
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)
                libc.gnu_get_libc_version  # noqa: B018 - glibc only
                function = libc.malloc_trim
                function.argtypes = (ctypes.c_size_t,)
                function.restype = ctypes.c_int
                _malloc_trim = function
            except (OSError, AttributeError):
                pass
    return _malloc_trim


def trim() -> bool:
    """Give the heap's free pages back to the system now (glibc only); True when some were."""
    function = _trim_function()
    if not function:
        return False
    return bool(function(0))


def trim_soon() -> None:
    """:func:`trim` in :data:`TRIM_DELAY` seconds, once for every call made meanwhile, on a
    short-lived thread (``execsdk-serve-trim``). Does nothing without glibc. Any thread."""
    global _trim_timer
    if not _trim_function():
        return
    with _trim_lock:
        if _trim_timer is not None:
            return
        timer = threading.Timer(TRIM_DELAY, _run_trim)
        timer.name = "execsdk-serve-trim"
        timer.daemon = True
        _trim_timer = timer
        timer.start()


def _run_trim() -> None:
    global _trim_timer
    with _trim_lock:
        _trim_timer = None
    released = trim()
    log.debug("malloc_trim after closed connections: %s", "released" if released else "nothing")
