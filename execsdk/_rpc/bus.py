"""The event bus: where the reader thread puts server notifications.

Three kinds of receivers, each bounded so the reader never blocks on a consumer:

* internal *handlers* (``add_handler``) run on the reader thread itself; they must be quick
  and non-blocking (the remote process backend routes process events through one);
  *idle handlers* (``add_idle_handler``) run there too, whenever the reader has handled every
  message already received and is about to wait for the network, so a handler can batch
  work (waking a consumer once per burst of output instead of once per 8 KiB chunk);
* *callbacks* (``subscribe``) run on the dispatcher thread; a full dispatcher queue drops and
  counts them;
* *subscriptions* (``subscription``) are pull-mode queues; a full one receives a single
  :class:`Gap` marker and further events are dropped and counted until it drains.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from execsdk._callbacks import CallbackDispatcher
from execsdk._deadline import UNSET, Deadline, Timeoutish
from execsdk.errors import ConnectionClosed, ExecSdkError, fresh

__all__ = ["Event", "EventBus", "Gap", "Subscription"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]


@attrs.frozen
class Event:
    """One server notification: its method and its raw params."""

    method: str
    params: dict[str, Any]


@attrs.frozen
class Gap:
    """Marker in a subscription that overflowed: ``dropped`` events were lost after it."""

    dropped: int


class Subscription:
    """A bounded pull-mode queue of events. Thread-safety: one consumer; any producer."""

    def __init__(self, bus: EventBus, methods: frozenset[str] | None, maxsize: int) -> None:
        self._bus = bus
        self.methods = methods
        self._maxsize = maxsize
        self._items: collections.deque[Event | Gap] = collections.deque()
        self._cond = threading.Condition()
        self._overflowing = False
        self._dropped_now = 0
        self.dropped = 0
        self._end: BaseException | None = None
        self._ended = False

    def _offer(self, event: Event) -> None:
        with self._cond:
            if self._ended:
                return
            if self._overflowing:
                self._dropped_now += 1
                self.dropped += 1
                return
            if len(self._items) >= self._maxsize:
                self._overflowing = True
                self._dropped_now = 1
                self.dropped += 1
                return
            self._items.append(event)
            self._cond.notify()

    def _finish(self, exc: BaseException | None) -> None:
        with self._cond:
            self._ended = True
            self._end = exc
            self._cond.notify_all()

    def get(self, *, timeout: Timeoutish = UNSET) -> Event | Gap:
        """The next event, or a :class:`Gap`. ``timeout`` (default: none) raises TimeoutError.

        After the connection ends, remaining events are still returned; then the end is
        raised as ``ConnectionClosed`` / ``ConnectionLost``.
        """
        deadline = Deadline(None if timeout is UNSET else timeout)
        with self._cond:
            while True:
                if self._items:
                    item = self._items.popleft()
                    return item
                if self._overflowing:
                    self._overflowing = False
                    gap = Gap(self._dropped_now)
                    self._dropped_now = 0
                    return gap
                if self._ended:
                    raise self._end_error()
                if not self._cond.wait(deadline.left()):
                    raise TimeoutError("no event within the timeout")

    def _end_error(self) -> ExecSdkError:
        if isinstance(self._end, ExecSdkError):
            return fresh(self._end)  # one per raise; same cause as the link's end
        return ConnectionClosed("the event subscription was closed")

    def __iter__(self) -> Iterator[Event | Gap]:
        """Iterate until the subscription or the connection ends."""
        while True:
            try:
                yield self.get()
            except (ConnectionClosed, ExecSdkError):
                return

    def close(self) -> None:
        """Stop receiving events. Idempotent."""
        self._bus._remove(self)
        self._finish(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _bind(callback: Callable[[Event], object], event: Event) -> Callable[[], object]:
    def run() -> object:
        return callback(event)

    run.__qualname__ = getattr(callback, "__qualname__", "callback")
    return run


class EventBus:
    """Fans notifications out to handlers, callbacks and subscriptions.

    Thread-safety: ``publish`` is called by the reader thread; everything else from any thread.
    """

    def __init__(self, dispatcher: CallbackDispatcher) -> None:
        self.dispatcher = dispatcher
        self._lock = threading.Lock()
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        self._subs: tuple[Subscription, ...] = ()
        self._callbacks: tuple[tuple[Callable[[Event], object], frozenset[str] | None], ...] = ()
        self._ended: BaseException | None = None
        self._closed = False
        self._close_handlers: tuple[Callable[[BaseException | None], None], ...] = ()
        self._idle_handlers: tuple[Callable[[], None], ...] = ()

    def add_handler(self, method: str, handler: Handler) -> None:
        """Run ``handler(params)`` on the reader thread for each ``method`` notification."""
        with self._lock:
            self._handlers[method] = (*self._handlers.get(method, ()), handler)

    def add_idle_handler(self, handler: Callable[[], None]) -> None:
        """Run ``handler()`` on the reader thread each time it has caught up with the network
        (before it blocks for more). Must be quick and non-blocking, like a handler."""
        with self._lock:
            self._idle_handlers = (*self._idle_handlers, handler)

    def idle(self) -> None:
        """The reader has handled everything received so far (reader thread)."""
        for handler in self._idle_handlers:
            try:
                handler()
            except Exception:
                log.exception("idle handler %r failed", handler)

    def add_close_handler(self, handler: Callable[[BaseException | None], None]) -> None:
        """Run ``handler(cause)`` once when the connection ends (on the ending thread).

        Added after the end, it runs at once.
        """
        with self._lock:
            if not self._closed:
                self._close_handlers = (*self._close_handlers, handler)
                return
            cause = self._ended
        handler(cause)

    def subscribe(
        self, callback: Callable[[Event], object], *, methods: set[str] | None = None
    ) -> Callable[[], None]:
        """Call ``callback(event)`` on the dispatcher thread; returns an unsubscribe function."""
        entry = (callback, None if methods is None else frozenset(methods))
        with self._lock:
            self._callbacks = (*self._callbacks, entry)

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks = tuple(c for c in self._callbacks if c is not entry)

        return unsubscribe

    def subscription(self, *, methods: set[str] | None = None, maxsize: int = 1024) -> Subscription:
        """A pull-mode queue of events (all, or only ``methods``), bounded by ``maxsize``."""
        sub = Subscription(self, None if methods is None else frozenset(methods), maxsize)
        with self._lock:
            if self._closed:
                sub._finish(self._ended)
            else:
                self._subs = (*self._subs, sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def publish(self, method: str, params: dict[str, Any]) -> None:
        """Deliver one notification (reader thread). Never blocks."""
        for handler in self._handlers.get(method, ()):
            try:
                handler(params)
            except Exception:
                log.exception("internal handler for %s failed", method)
        subs, callbacks = self._subs, self._callbacks
        if not subs and not callbacks:
            return
        event = Event(method, params)
        for sub in subs:
            if sub.methods is None or method in sub.methods:
                sub._offer(event)
        for callback, methods in callbacks:
            if methods is None or method in methods:
                self.dispatcher.submit(_bind(callback, event))

    def close(self, cause: BaseException | None) -> None:
        """End every subscription with ``cause`` (ConnectionLost/Closed). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ended = cause
            subs, self._subs = self._subs, ()
            handlers, self._close_handlers = self._close_handlers, ()
        for sub in subs:
            sub._finish(cause)
        for handler in handlers:
            try:
                handler(cause)
            except Exception:
                log.exception("close handler failed")
