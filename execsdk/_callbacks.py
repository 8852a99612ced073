"""The callback dispatcher: one named daemon thread that runs user callbacks in order.

User code never runs on a reader or I/O thread: producers call :meth:`CallbackDispatcher.submit`,
which never blocks. A full queue drops the callback, counts it and logs a WARNING at most every
10 seconds; a failing callback is logged and dispatching goes on. Stdlib only.
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["CallbackDispatcher", "callback_name"]

log = logging.getLogger("execsdk.dispatch")

_ids = itertools.count(1)
_STOP = object()


def callback_name(fn: object) -> str:
    """A callback's name for log messages, never its bound arguments (a partial's arguments
    may be process output, i.e. the user's data)."""
    target: object = fn
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else type(target).__name__


class CallbackDispatcher:
    """Runs submitted callables one at a time on a lazily started thread.

    Thread-safety: ``submit`` and ``close`` may be called from any thread.
    """

    def __init__(self, *, maxsize: int = 1000, name: str | None = None) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._name = name or f"execsdk-dispatch-{next(_ids)}"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0
        self._last_warning = 0.0

    @property
    def thread(self) -> threading.Thread | None:
        """The dispatcher thread, once started."""
        return self._thread

    def in_dispatcher(self) -> bool:
        """True when called from the dispatcher thread itself (a callback)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], object], *, critical: bool = False) -> bool:
        """Queue ``fn``; never blocks. Returns False when it was dropped.

        ``critical`` callbacks (process output, exits) are never dropped: past the bound they
        are still queued, because losing a user's data is worse than memory held briefly.
        """
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
                self._thread.start()
        try:
            if critical:
                # Bypass the bound: Queue.put with block=False would refuse when full.
                with self._queue.mutex:
                    self._queue.queue.append(fn)
                    self._queue.unfinished_tasks += 1
                    self._queue.not_empty.notify()
            else:
                self._queue.put_nowait(fn)
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_warning >= 10.0:
                self._last_warning = now
                log.warning("callback queue full: %d callbacks dropped so far", self.dropped)
            return False
        return True

    def _main(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is _STOP:
                return
            try:
                fn()  # type: ignore[operator]
            except Exception:
                log.exception("callback %s raised; dispatching goes on", callback_name(fn))

    def close(self, timeout: float | None = 5.0) -> None:
        """Run what is queued, then stop the thread (joined within ``timeout``). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        with self._queue.mutex:
            self._queue.queue.append(_STOP)
            self._queue.unfinished_tasks += 1
            self._queue.not_empty.notify()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s still running after %ss", thread.name, timeout)
