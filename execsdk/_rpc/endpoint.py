"""RpcClient: the JSON-RPC core. Request ids, the pending map, the reader thread, one exit path.

Concurrency rules (STYLE.md §3): one reader thread owns ``transport.recv()``; a pending entry
is registered before its request is sent; only whoever pops an entry from the pending map (under
the lock) settles it, so a reply, a timeout and a disconnect can never settle one twice; every
way the link ends goes through ``_fail_all``; at most ``max_in_flight`` calls are in flight.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from execsdk._callbacks import CallbackDispatcher
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk._protocol.jsonrpc import (
    Notification,
    Response,
    decode_message,
    encode_notification,
    encode_request,
)
from execsdk._protocol.redact import redacted
from execsdk._rpc.bus import EventBus
from execsdk._threads import mark_io_thread
from execsdk._transport.base import SendTimeout, Transport
from execsdk.errors import (
    ConnectionClosed,
    ConnectionLost,
    ExecSdkError,
    ProtocolError,
    RequestTimeout,
    fresh,
    server_error,
)

__all__ = ["NotSent", "RpcClient"]

log = logging.getLogger(__name__)

_reader_ids = itertools.count(1)

_STOPPED_READING = "the server stopped reading; the link was given up"


class NotSent(ConnectionLost):
    """The link was already down when the call began: the request was never written, so
    sending it on another connection cannot run it twice."""


_live_clients: weakref.WeakSet[RpcClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_live_clients):
        client._forked = True


_NO_FORK_HOOK = not hasattr(os, "register_at_fork")
if not _NO_FORK_HOOK:
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _as_logged(msg: Notification | Response | object) -> dict[str, object]:
    if isinstance(msg, Notification):
        return {"method": msg.method, "params": msg.params}
    if isinstance(msg, Response):
        if msg.error is not None:
            error = {"code": msg.error.code, "message": msg.error.message}
            return {"id": msg.id, "error": error}
        return {"id": msg.id, "result": msg.result}
    return {"unexpected": repr(msg)}


class _Pending:
    """One in-flight call: a lock held until the answer is stored (cheaper than a Future)."""

    __slots__ = ("error", "lock", "method", "result")

    def __init__(self, method: str) -> None:
        self.method = method
        self.lock = threading.Lock()
        self.lock.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.lock.release()


class RpcClient:
    """A JSON-RPC connection with one reader thread.

    Thread-safety: every method may be called from any number of threads at once.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float | None = None,
        max_in_flight: int = 128,
        dispatcher: CallbackDispatcher | None = None,
        bus: EventBus | None = None,
        on_end: Callable[[RpcClient, ExecSdkError], None] | None = None,
    ) -> None:
        """``dispatcher`` and ``bus`` may be shared by several RpcClients in turn (a
        reconnecting client hands the same ones to each of its connections). A client does not
        close a dispatcher it was given, and does not end a bus it was given when its link ends:
        it calls ``on_end(self, error)`` instead, once, on the thread that saw the end."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._transport = transport
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._ids = itertools.count(1)
        self._pending: dict[int | str, _Pending] = {}
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # "a pending slot is free"
        self._room_waiters = 0
        self._state = "open"  # open -> closing | lost -> closed
        self._end: BaseException | None = None
        self._pid = os.getpid()
        self._forked = False
        self._owns_dispatcher = dispatcher is None
        self.dispatcher = dispatcher or CallbackDispatcher()
        self._owns_bus = bus is None
        self.bus = bus if bus is not None else EventBus(self.dispatcher)
        self._on_end = on_end
        self.last_received = time.monotonic()
        """When the last message arrived (monotonic seconds); keepalive measures silence."""
        self._ended = threading.Event()
        n = next(_reader_ids)
        self._reader = threading.Thread(
            target=self._reader_main, name=f"execsdk-reader-{n}", daemon=True
        )
        _live_clients.add(self)
        self._reader.start()  # last: every attribute exists before the reader runs

    # ------------------------------------------------------------------ properties

    @property
    def description(self) -> str:
        """The transport's URL or command."""
        return self._transport.description

    @property
    def is_open(self) -> bool:
        """True until the connection is closed or lost."""
        return self._state == "open" and not self._forked

    @property
    def reader_thread(self) -> threading.Thread:
        """The reader thread (for tests and diagnostics)."""
        return self._reader

    # ------------------------------------------------------------------ calls

    def _check_usable(self) -> None:
        if self._forked or os.getpid() != self._pid:
            raise ConnectionClosed(
                "this client belongs to the parent process: create a new client after fork"
            )
        if self._state != "open":
            raise self._end_error(not_sent=True)

    def end_error(self) -> ExecSdkError:
        """A fresh instance of the error calls get once the link has ended."""
        return self._end_error()

    def _end_error(self, *, not_sent: bool = False) -> ExecSdkError:
        cause = self._end
        if isinstance(cause, ConnectionLost) and not not_sent:
            return fresh(cause)  # the stored loss, one per raise: same message and cause
        # Otherwise the error depends on the state (closed by us, or a call never sent), not
        # only on what was stored, so it is built here.
        if self._state in ("closing", "closed") and not isinstance(cause, ConnectionLost):
            err: ExecSdkError = ConnectionClosed(
                f"the client for {self.description} is closed; create a new one"
            )
        elif not_sent:
            err = NotSent(f"connection to {self.description} was lost")
        else:
            err = ConnectionLost(f"connection to {self.description} was lost")
        if cause is not None:
            err.__cause__ = cause.__cause__ if isinstance(cause, ExecSdkError) else cause
        return err

    def call(self, method: str, params: Any = None, *, timeout: Timeoutish = UNSET) -> Any:
        """Send a request and block for its raw result.

        Raises ``RequestTimeout`` (a ``TimeoutError``) when no answer comes within
        ``timeout`` (default: the client's), ``ServerError`` subclasses for error answers,
        ``ConnectionLost``/``ConnectionClosed`` when the link ends first. A request the server
        did not take whole by the deadline (it stopped reading) also raises ``RequestTimeout``,
        and the link is given up: later calls get ``ConnectionLost``.
        """
        if self._forked or (_NO_FORK_HOOK and os.getpid() != self._pid):
            self._check_usable()
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        entry = _Pending(method)
        # One lock covers the state check, the in-flight count and the pending map: a call
        # costs one uncontended acquire here, where a separate semaphore cost two more.
        with self._lock:
            if self._state != "open":
                raise self._end_error(not_sent=True)
            if len(self._pending) >= self.max_in_flight:
                self._wait_for_room(method, deadline)
            req_id = next(self._ids)
            self._pending[req_id] = entry
        try:
            text = encode_request(req_id, method, params)
            if log.isEnabledFor(logging.DEBUG):
                self._log_frame("->", {"id": req_id, "method": method, "params": params})
            self._transport.send(text, timeout=deadline.left())
        except BaseException as exc:
            forgot = self._forget(req_id)
            if isinstance(exc, SendTimeout) and exc.started:
                self._give_up_half_sent(method, deadline)
                raise RequestTimeout(method, deadline.total, _STOPPED_READING) from None
            if not forgot:
                # The reader or _fail_all settled it meanwhile; report that outcome.
                entry.lock.acquire()
                return self._outcome(entry)
            if isinstance(exc, TimeoutError):
                raise RequestTimeout(method, deadline.total, "could not send") from None
            if isinstance(exc, OSError):
                self._fail_all(exc)
                raise self._end_error() from exc
            raise
        left = deadline.left()
        got = entry.lock.acquire() if left is None else entry.lock.acquire(timeout=left)
        if not got:
            if self._forget(req_id):
                raise RequestTimeout(method, deadline.total)
            entry.lock.acquire()  # settled concurrently: take that answer
        if entry.error is not None:
            raise entry.error
        return entry.result

    def _wait_for_room(self, method: str, deadline: Deadline) -> None:
        """Under ``_lock``: wait until fewer than ``max_in_flight`` calls are pending."""
        self._room_waiters += 1
        try:
            while len(self._pending) >= self.max_in_flight:
                left = deadline.left()
                if left is not None and left <= 0:
                    raise RequestTimeout(
                        method, deadline.total, f"{self.max_in_flight} calls already in flight"
                    )
                self._room.wait(left)
                if self._state != "open":
                    raise self._end_error(not_sent=True)
        finally:
            self._room_waiters -= 1

    def _forget(self, req_id: int) -> bool:
        """Take ``req_id`` out of the pending map; True if it was still there (ours to settle)."""
        with self._lock:
            mine = self._pending.pop(req_id, None) is not None
            if mine and self._room_waiters:
                self._room.notify()
        return mine

    def _give_up_half_sent(self, method: str, deadline: Deadline) -> None:
        """Our message is half on the wire at its deadline: the server stopped reading.

        The transport would finish it in the background, but every later message waits behind
        the rest of it, so the link is as good as dead until the server reads again. Giving it
        up now fails the other calls at once (``ConnectionLost``) and lets a reconnect policy
        replace the link, instead of every call timing out one by one.
        """
        log.warning(
            "%s stopped reading: a %s message was still half written after %ss; giving the "
            "connection up",
            self.description,
            method,
            deadline.total,
        )
        self.abort(TimeoutError(f"{self.description} stopped reading our messages"))

    @staticmethod
    def _outcome(entry: _Pending) -> Any:
        if entry.error is not None:
            raise entry.error
        return entry.result

    def notify(self, method: str, params: Any = None, *, timeout: Timeoutish = UNSET) -> None:
        """Send a notification (no answer expected)."""
        self._check_usable()
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        if log.isEnabledFor(logging.DEBUG):
            self._log_frame("->", {"method": method, "params": params})
        try:
            self._transport.send(encode_notification(method, params), timeout=deadline.left())
        except TimeoutError as exc:
            if isinstance(exc, SendTimeout) and exc.started:
                self._give_up_half_sent(method, deadline)
                raise RequestTimeout(method, deadline.total, _STOPPED_READING) from None
            raise RequestTimeout(method, deadline.total, "could not send") from None
        except OSError as exc:
            self._fail_all(exc)
            raise self._end_error() from exc

    # ------------------------------------------------------------------ reader

    def _reader_main(self) -> None:
        # Known by reference, not by name: code that must not block on an answer asks.
        mark_io_thread("RPC reader")
        cause: BaseException | None = None
        try:
            # While a whole message is already buffered the bus keeps batching its work; it
            # runs its idle work (one wake-up per burst) only before a recv that may wait.
            buffered = self._transport.buffered
            idle = self.bus.idle
            while True:
                if not buffered():
                    idle()
                raw = self._transport.recv()
                if raw is None:
                    cause = EOFError("the server closed the connection")
                    break
                self.last_received = time.monotonic()
                try:
                    msg = decode_message(raw)
                except ProtocolError as exc:
                    # Garbage from the server: the link can no longer be trusted.
                    cause = exc
                    break
                if log.isEnabledFor(logging.DEBUG):
                    self._log_frame("<-", _as_logged(msg))
                if isinstance(msg, Notification):
                    params = msg.params if isinstance(msg.params, dict) else {}
                    self.bus.publish(msg.method, params)
                elif isinstance(msg, Response):
                    self._settle(msg)
                else:
                    cause = ProtocolError(
                        "the server sent a request; clients do not serve requests",
                        payload=raw if isinstance(raw, str) else raw.decode("utf-8", "replace"),
                    )
                    break
        except BaseException as exc:
            cause = exc
        finally:
            self._fail_all(cause)
            self._ended.set()

    def _log_frame(self, direction: str, message: dict[str, object]) -> None:
        """One frame at DEBUG: data, env and headers replaced by sizes, cut to 200 chars."""
        log.debug("%s %s %s", self.description, direction, redacted(message))

    def _settle(self, msg: Response) -> None:
        with self._lock:
            entry = self._pending.pop(msg.id, None) if msg.id is not None else None
            if self._room_waiters:
                self._room.notify()
        if entry is None:
            if msg.error is not None and msg.id in (-1, None):
                log.warning(
                    "server reported an error without a request id: %s %s",
                    msg.error.code,
                    msg.error.message[:200],
                )
            else:
                log.debug("reply for unknown or expired id %r dropped", msg.id)
            return
        if msg.error is not None:
            entry.settle(
                error=server_error(
                    msg.error.code,
                    msg.error.message,
                    method=entry.method,
                    request_id=msg.id,
                    data=msg.error.data,
                )
            )
        else:
            entry.settle(result=msg.result)

    def _fail_all(self, cause: BaseException | None) -> None:
        """The one disconnect path: mark the state, fail every waiter, end subscriptions."""
        with self._lock:
            if self._state not in ("open", "closing"):
                return
            if self._state == "open":
                self._state = "lost"
            closing = self._state == "closing"
            pending, self._pending = self._pending, {}
            self._room.notify_all()
            if closing:
                self._end = cause
                self._state = "closed"
            else:
                lost = ConnectionLost(f"connection to {self.description} was lost")
                lost.__cause__ = cause
                self._end = lost
        for entry in pending.values():
            err = self._end_error()
            entry.settle(error=err)
        end = self._end_error()
        if self._on_end is not None:
            try:
                self._on_end(self, end)
            except Exception:
                log.exception("on_end handler failed")
        if self._owns_bus:
            self.bus.close(end)

    def abort(self, cause: BaseException) -> None:
        """Give the link up now (it stayed silent, or stopped reading): every waiter fails
        with ``ConnectionLost`` chained from ``cause`` and the socket is shut at once."""
        self._fail_all(cause)
        try:
            self._transport.close(timeout=0)
        except Exception:
            log.debug("closing the transport after an abort failed", exc_info=True)

    # ------------------------------------------------------------------ close

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the connection (idempotent, safe from any thread, including callbacks).

        Pending calls fail with ``ConnectionClosed``; threads are joined within ``timeout``.
        """
        if self._forked or os.getpid() != self._pid:
            self._forked = True
            return  # never touch the parent's socket from a forked child
        with self._lock:
            if self._state == "open":
                self._state = "closing"
                first = True
            else:
                first = False
        if first:
            self._fail_all(None)
        deadline = Deadline(timeout)
        try:
            self._transport.close(timeout=deadline.left())
        except Exception:
            log.debug("transport close failed", exc_info=True)
        me = threading.current_thread()
        if self._reader is not me and self._reader.is_alive():
            self._reader.join(deadline.left())
            if self._reader.is_alive():
                log.warning("%s still running after close()", self._reader.name)
        if self._owns_dispatcher:
            if not self.dispatcher.in_dispatcher():
                self.dispatcher.close(deadline.left())
            else:
                self.dispatcher.close(0)
        _live_clients.discard(self)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the reader has ended; True if it did within ``timeout``."""
        return self._ended.wait(timeout)

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") == "open" and not getattr(self, "_forked", True):
            import warnings

            warnings.warn(
                f"unclosed execsdk client for {self.description}", ResourceWarning, stacklevel=2
            )
