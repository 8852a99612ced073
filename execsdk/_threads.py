"""Which threads must never block on an answer: the I/O threads, known by reference.

A thread that delivers answers (the RPC reader) would wait forever for an answer only it can
deliver, so code that may end up running there (a file object's ``close`` called by the garbage
collector, an internal event handler) asks :func:`is_io_thread` before making a blocking call.
Each I/O thread marks itself once, first thing in its main function; the mark lives in a
thread-local, so it belongs to that thread object alone and goes away with it (a name could be
copied by any thread, and thread idents are reused). Stdlib only, so every layer may import it.
"""

from __future__ import annotations

import threading

__all__ = ["io_thread_role", "is_io_thread", "mark_io_thread"]

_state = threading.local()


def mark_io_thread(role: str) -> None:
    """Declare the calling thread an I/O thread for the rest of its life; ``role`` says which
    (for log messages: "RPC reader")."""
    _state.role = role


def io_thread_role() -> str | None:
    """The role the calling thread marked itself with, or None for an ordinary thread."""
    role: str | None = getattr(_state, "role", None)
    return role


def is_io_thread() -> bool:
    """True on a thread that must not block waiting for an answer (see the module doc)."""
    return getattr(_state, "role", None) is not None
