"""A connected in-memory transport pair, for unit tests of the RPC core and the server."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["MemoryTransport", "memory_pair"]

_EOF = object()


class MemoryTransport:
    """One end of an in-memory pipe. Thread-safety: as :class:`Transport`.

    ``on_send`` (tests only) is called with each sent message before it is delivered, from the
    sending thread; it lets a test answer from inside ``send`` or drop a message.
    """

    def __init__(self, name: str = "memory") -> None:
        self._inbox: queue.Queue[object] = queue.Queue()
        self.peer: MemoryTransport | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.name = name
        self.on_send: Callable[[str | bytes], bool] | None = None

    @property
    def description(self) -> str:
        return f"memory://{self.name}"

    def send(self, text: str | bytes, *, timeout: float | None = None) -> None:
        """Deliver ``text`` to the peer's inbox. Never blocks (the inboxes are unbounded), so
        ``timeout`` is always met and ``SendTimeout`` is never raised."""
        if self._closed.is_set() or self.peer is None or self.peer._closed.is_set():
            raise BrokenPipeError("memory transport is closed")
        hook = self.on_send
        if hook is not None and not hook(text):
            return
        self.peer._inbox.put(text)

    def feed(self, text: str | bytes) -> None:
        """Deliver ``text`` to this end as if the peer had sent it (tests)."""
        self._inbox.put(text)

    def recv(self) -> str | bytes | None:
        item = self._inbox.get()
        if item is _EOF:
            self._inbox.put(_EOF)
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, (str, bytes))
        return item

    def buffered(self) -> bool:
        """True when something is waiting in the inbox (a message, the end, or an error), so
        ``recv`` returns at once."""
        return not self._inbox.empty()

    def fail(self, exc: BaseException) -> None:
        """Make the next ``recv`` raise ``exc`` (tests: a broken link)."""
        self._inbox.put(exc)

    def close(self, timeout: float | None = 5.0) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._inbox.put(_EOF)
        if self.peer is not None:
            self.peer._inbox.put(_EOF)


def memory_pair() -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends: what one sends, the other receives."""
    a, b = MemoryTransport("a"), MemoryTransport("b")
    a.peer, b.peer = b, a
    return a, b
