"""Request workers of ``execsdk serve`` connections, and the marker of the server's threads."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["IDLE_EXIT", "SERVING", "Workers"]

log = logging.getLogger(__name__)

SERVING = threading.local()
"""``SERVING.active`` is True on connection handler and request worker threads (``ws.py``
refuses ``shutdown()`` there: it would wait for itself)."""


IDLE_EXIT = 5.0
"""Seconds a worker waits for a task before it ends (a later task starts a new one), so an
idle connection keeps no worker thread."""


class Workers:
    """A small pool of named daemon threads, started on demand, each ending after
    ``idle_exit`` seconds without a task. Thread-safety: any thread."""

    _STOP = object()

    def __init__(self, name: str, size: int, *, idle_exit: float = IDLE_EXIT) -> None:
        self._name = name
        self._size = size
        self._idle_exit = idle_exit
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._numbers = itertools.count(1)
        # Idle workers minus queued tasks (negative: tasks wait for a worker); under _lock.
        self._idle = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[[], None]) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._queue.put(fn)
            if self._idle <= 0 and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._main,
                    name=f"{self._name}-{next(self._numbers)}",
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
            try:
                fn = self._queue.get(timeout=self._idle_exit)
            except queue.Empty:
                with self._lock:
                    # Leave only while the other idle workers cover every queued task.
                    if self._idle > 0 and not self._closed:
                        self._idle -= 1
                        self._threads.remove(threading.current_thread())
                        return
                continue
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
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
