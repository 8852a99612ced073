"""Request workers of ``execsdk serve`` connections, and the marker of the server's threads."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["SERVING", "Workers"]

log = logging.getLogger(__name__)

SERVING = threading.local()
"""``SERVING.active`` is True on connection handler and request worker threads (``ws.py``
refuses ``shutdown()`` there: it would wait for itself)."""


class Workers:
    """A small pool of named daemon threads, started on demand. Thread-safety: any thread."""

    _STOP = object()

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._queue.put(fn)
            if self._idle <= 0 and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._main,
                    name=f"{self._name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1  # an idle worker (or the next one free) is spoken for
        return True

    def _main(self) -> None:
        SERVING.active = True
        while True:
            fn = self._queue.get()
            if fn is self._STOP:
                return
            try:
                fn()  # type: ignore[operator]
            except Exception:
                log.exception("request worker task failed")
            with self._lock:
                self._idle += 1

    def close(self, timeout: float = 1.0) -> None:
        """Stop the workers once their current tasks end; join them for ``timeout`` at most."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(self._STOP)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(timeout)
