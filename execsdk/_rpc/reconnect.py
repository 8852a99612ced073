"""Reconnect and resume: a :class:`Link` keeps one live :class:`RpcClient` and replaces it
after the connection drops.

Without a policy a link is a thin shell around one RpcClient: when that ends, the event bus
ends with the same ``ConnectionLost`` and every later call fails. With a :class:`Reconnect`
policy a drop starts a supervisor thread (``execsdk-reconnect-<n>``) that opens a new
connection and sends ``initialize`` with ``resumeSessionId`` (PROTOCOL.md §2), with exponential
backoff, for at most ``max_wait`` seconds:

* resumed: the new RpcClient takes over; the shared event bus keeps its handlers and
  subscriptions; reconnect handlers run with ``None`` (the remote process backend then asks
  every live process to re-read what it missed, ``process/read`` after its last seq);
* the server no longer knows the session (grace period over, server restarted): a fresh
  session takes over and reconnect handlers run with a :class:`SessionLost`;
* nothing worked within ``max_wait``: the bus ends with ``SessionLost`` and so does every
  later call.

Calls made while the link is down wait for it (within their own timeout). A call that was in
flight when the link dropped fails with ``ConnectionLost`` unless the caller marked it safe to
repeat (reads, metadata, writes carrying an idempotency key) and the policy allows retries.
An optional keepalive thread (``execsdk-keepalive-<n>``) pings an idle server and gives up on a
link that stays silent for ``keepalive_timeout`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from execsdk._callbacks import CallbackDispatcher
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk._protocol import refusals
from execsdk._rpc.bus import EventBus
from execsdk._rpc.endpoint import NotSent, RpcClient
from execsdk.errors import (
    ConnectionClosed,
    ConnectionLost,
    ExecSdkError,
    RequestTimeout,
    ServerError,
    SessionLost,
    fresh,
)

__all__ = ["Link", "Opened", "Opener", "Reconnect"]

log = logging.getLogger(__name__)

_ids = itertools.count(1)

PING_METHOD = "environment/status"
"""Cheap on G2; G1 answers it with -32601, which proves the link is alive just as well."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class Reconnect:
    """How a client reconnects after its connection drops (``connect(url, reconnect=...)``).

    Attributes:
        max_wait: seconds to keep trying after a drop before giving up; then every live
            process fails with ``SessionLost``.
        backoff: pause before the second attempt (the first is immediate); it doubles after
            every failed attempt, up to ``max_backoff``.
        retry_idempotent: repeat calls that were in flight at the drop when repeating them is
            harmless (reads, metadata, ``process/write`` with its write id); other calls in
            flight fail with ``ConnectionLost``.
        keepalive: ping the server after this many seconds without a message (``None``: never).
        keepalive_timeout: give the link up after this many seconds of silence with a ping
            unanswered; set it above the longest single transfer you expect.

    Output a process writes while the client is disconnected is kept by the server, but only
    its last 1 MiB (PROTOCOL.md §1.5): a chatty process that runs through a long outage loses
    the oldest part of it, and a WARNING says so.

    Thread-safety: immutable.
    """

    max_wait: float = attrs.field(default=60.0, validator=_positive)
    backoff: float = attrs.field(default=0.1, validator=_positive)
    max_backoff: float = attrs.field(default=5.0, validator=_positive)
    retry_idempotent: bool = True
    keepalive: float | None = attrs.field(default=10.0, validator=_positive)
    keepalive_timeout: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen
class Opened:
    """What an :data:`Opener` hands back: the new RpcClient after its handshake.

    Thread-safety: immutable.
    """

    rpc: RpcClient
    session_id: str
    payload: Any = None
    """Anything the opener wants back in ``on_connected`` (the Client's ServerInfo)."""


OnEnd = Callable[[RpcClient, ExecSdkError], None]
Opener = Callable[[str | None, float | None, OnEnd], Opened]
"""``opener(resume_session_id, limit, on_end)``: connect and handshake within ``limit``
seconds at most (``None``: the opener's own timeouts), and return :class:`Opened`.

It must create the RpcClient with the link's bus and dispatcher and with ``on_end``, and close
it again if the handshake fails. Raises ``ConnectError`` or the ``initialize`` error.
"""


class Link:
    """The live RpcClient of one client, replaced after a drop when a policy allows.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        policy: Reconnect | None,
        bus: EventBus,
        dispatcher: CallbackDispatcher,
        timeout: float | None,
        resume_session_id: str | None = None,
        on_connected: Callable[[Opened, SessionLost | None], None] | None = None,
    ) -> None:
        """Open the first connection (its errors propagate) and start the keepalive thread.

        ``timeout`` is the default of :meth:`call`; ``on_connected(opened, lost)`` runs on the
        supervisor thread after every reconnect (``lost`` is None when the session resumed).
        """
        self._opener = opener
        self.policy = policy
        self.bus = bus
        self.dispatcher = dispatcher
        self.timeout = timeout
        self._on_connected = on_connected
        self._cond = threading.Condition()
        self._closing = False
        self._final: ExecSdkError | None = None
        self._supervisor: threading.Thread | None = None
        self._supervising = False
        self._keepalive: threading.Thread | None = None
        self._pid = os.getpid()
        self._n = next(_ids)
        self.generation = 0
        """How many times the connection was replaced (0: still the first)."""
        self._rpc: RpcClient | None = None
        first = opener(resume_session_id, None, self._rpc_ended)
        with self._cond:
            self._rpc = first.rpc
            self.session_id = first.session_id
            self.first_payload = first.payload
            alive = first.rpc.is_open
        if not alive:
            self._rpc_ended(first.rpc, first.rpc.end_error())
        if policy is not None and policy.keepalive:
            self._keepalive = threading.Thread(
                target=self._keepalive_main, name=f"execsdk-keepalive-{self._n}", daemon=True
            )
            self._keepalive.start()

    # ------------------------------------------------------------------ state

    @property
    def rpc(self) -> RpcClient:
        """The current RpcClient (it may be down while a reconnect is under way)."""
        rpc = self._rpc
        assert rpc is not None
        return rpc

    @property
    def description(self) -> str:
        return self.rpc.description

    @property
    def is_open(self) -> bool:
        """True while a live connection is in place."""
        return not self._closing and self._final is None and self.rpc.is_open

    @property
    def reconnecting(self) -> bool:
        """True while the supervisor is trying to get a connection back."""
        return self._supervising

    # ------------------------------------------------------------------ calls

    def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: Timeoutish = UNSET,
        retry: bool = False,
        session_bound: bool = False,
        on_retried_error: Callable[[ServerError], Any] | None = None,
    ) -> Any:
        """Send a request on the live connection and return its raw result.

        Waits for a reconnect under way (within ``timeout``). A call in flight when the link
        drops is sent again on the new link only with ``retry`` (and a policy allowing it);
        ``session_bound`` calls are not repeated once the session itself was replaced. When a
        repeated call fails with a server error, ``on_retried_error`` may turn it into a result
        (e.g. "already exists" after a ``process/start`` whose first attempt went through).

        Raises ``ConnectionLost`` (in flight at a drop, or still down at the deadline),
        ``SessionLost`` (reconnecting failed for good), ``ConnectionClosed``,
        ``RequestTimeout`` and ``ServerError`` as :meth:`RpcClient.call`.
        """
        total = resolve_timeout(timeout, self.timeout)
        deadline = Deadline(total)
        retried = False
        session = self.session_id
        while True:
            rpc = self._usable(method, deadline)
            try:
                return rpc.call(method, params, timeout=deadline.left())
            except NotSent:
                continue  # never written: safe to send on the next connection
            except ConnectionLost:
                policy = self.policy
                if not (retry and policy is not None and policy.retry_idempotent):
                    raise
                retried = True
            except ServerError as exc:
                if retried and on_retried_error is not None:
                    return on_retried_error(exc)
                raise
            if session_bound:
                # Wait for the outcome of the reconnect before deciding.
                self._usable(method, deadline)
                if self.session_id != session:
                    err = SessionLost(
                        f"{method}: the session on {rpc.description} was lost while the call "
                        "was in flight"
                    )
                    raise err
            log.debug("retrying %s on the new connection", method)

    def _usable(self, method: str, deadline: Deadline) -> RpcClient:
        if os.getpid() != self._pid:
            raise ConnectionClosed(
                "this client belongs to the parent process: create a new client after fork"
            )
        rpc = self._rpc
        if rpc is not None and rpc.is_open and not self._closing:
            return rpc
        with self._cond:
            while True:
                if self._closing:
                    raise ConnectionClosed(
                        f"the client for {self.description} is closed; create a new one"
                    )
                if self._final is not None:
                    raise fresh(self._final)  # one per raise: tracebacks would pile up
                rpc = self.rpc
                if rpc.is_open:
                    return rpc
                if self.policy is None:
                    raise rpc.end_error()
                left = deadline.left()
                if left is not None and left <= 0:
                    raise ConnectionLost(
                        f"{method}: the connection to {rpc.description} is down and did not "
                        f"come back within the call's timeout ({deadline.total:g}s); "
                        "still reconnecting"
                    )
                self._cond.wait(left)

    # ------------------------------------------------------------------ drops

    def _rpc_ended(self, rpc: RpcClient, end: ExecSdkError) -> None:
        """``on_end`` of every RpcClient (on the thread that ended it)."""
        with self._cond:
            if rpc is not self._rpc or self._closing or self._final is not None:
                return
            self._cond.notify_all()
            if self.policy is None:
                self._final = end
                final: ExecSdkError | None = end
            else:
                final = None
                if not self._supervising:
                    log.warning(
                        "connection to %s lost (%r); reconnecting",
                        rpc.description,
                        end.__cause__ or end,
                    )
                    self._supervising = True
                    self._supervisor = threading.Thread(
                        target=self._supervise,
                        args=(rpc, end),
                        name=f"execsdk-reconnect-{self._n}",
                        daemon=True,
                    )
                    self._supervisor.start()
                # else: the running supervisor sees the drop when it checks its new link
        if final is not None:
            self.bus.close(final)

    def _supervise(self, old: RpcClient, cause: ExecSdkError) -> None:
        policy = self.policy
        assert policy is not None
        old.close(timeout=1.0)  # its reader and socket; the bus and dispatcher are shared
        started = time.monotonic()
        delay = 0.0
        attempts = 0
        last: BaseException = cause
        lost: SessionLost | None = None
        resume: str | None = self.session_id
        while True:
            with self._cond:
                if delay:
                    self._cond.wait_for(lambda: self._closing, timeout=delay)
                if self._closing:
                    self._supervising = False
                    return
            left = policy.max_wait - (time.monotonic() - started)
            if attempts and left <= 0:
                break
            attempts += 1
            try:
                opened = self._opener(resume, max(left, 0.05), self._rpc_ended)
            except Exception as exc:
                last = exc
                if resume is not None and refusals.is_unknown_session(exc):
                    lost = SessionLost(
                        f"the server at {old.description} no longer knows session {resume} "
                        "(its grace period ended or the server restarted); its processes are "
                        "gone"
                    )
                    lost.__cause__ = exc
                    log.warning("%s; continuing with a new session", lost)
                    resume = None
                    delay = 0.0
                    continue
                log.info("reconnect attempt %d to %s failed: %s", attempts, old.description, exc)
                delay = min(max(delay * 2, policy.backoff), policy.max_backoff)
                continue
            installed = self._install(opened, lost)
            with self._cond:
                closing = self._closing
                live = self._rpc is opened.rpc
                settled = live and opened.rpc.is_open
                if closing or settled:
                    self._supervising = False
            if closing:
                if not live:
                    # Opened while close() ran: never installed, so close() did not see it.
                    opened.rpc.close(timeout=1.0)
                return
            if settled:
                return
            # The new connection dropped already: go round again from there.
            last = opened.rpc.end_error()
            opened.rpc.close(timeout=1.0)
            old = opened.rpc
            if installed:
                lost = None
                resume = self.session_id
                started = time.monotonic()
                attempts = 0
            delay = policy.backoff
        final = SessionLost(
            f"could not reconnect to {old.description} within {policy.max_wait:g}s "
            f"({attempts} attempts); the session and its processes can no longer be followed"
        )
        final.__cause__ = last
        with self._cond:
            self._supervising = False
            if self._closing:
                return
            self._final = final
            self._cond.notify_all()
        log.error("%s", final)
        self.bus.close(final)

    def _install(self, opened: Opened, lost: SessionLost | None) -> bool:
        """Make ``opened`` the live connection and run the handlers; False if it could not be
        (closing, or it dropped before it was installed)."""
        with self._cond:
            if self._closing or not opened.rpc.is_open:
                ok = False
            else:
                ok = True
                self._rpc = opened.rpc
                self.session_id = opened.session_id
                self.generation += 1
                self._cond.notify_all()
        if not ok:
            return False
        log.log(
            logging.INFO if lost is None else logging.WARNING,
            "reconnected to %s (%s)",
            opened.rpc.description,
            "session resumed" if lost is None else f"new session {opened.session_id}",
        )
        if self._on_connected is not None:
            try:
                self._on_connected(opened, lost)
            except Exception:
                log.exception("reconnect handler failed")
        return True

    # ------------------------------------------------------------------ keepalive

    def _keepalive_main(self) -> None:
        policy = self.policy
        assert policy is not None and policy.keepalive
        interval, limit = policy.keepalive, policy.keepalive_timeout
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closing or self._final is not None, timeout=interval
                )
                if self._closing or self._final is not None:
                    return
                rpc = self.rpc
            if not rpc.is_open or time.monotonic() - rpc.last_received < interval:
                continue
            try:
                rpc.call(PING_METHOD, {}, timeout=limit)
            except ServerError:
                pass  # any answer proves the link is alive
            except RequestTimeout:
                silent = time.monotonic() - rpc.last_received
                if silent >= limit:
                    rpc.abort(
                        TimeoutError(
                            f"no message from {rpc.description} for {silent:.1f}s "
                            f"(keepalive_timeout={limit:g}s)"
                        )
                    )
            except ExecSdkError:
                pass  # the link ended meanwhile; the supervisor takes it from here

    # ------------------------------------------------------------------ close

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the connection and stop reconnecting; idempotent and bounded by ``timeout``."""
        with self._cond:
            first = not self._closing
            self._closing = True
            self._cond.notify_all()
            rpc = self._rpc
        deadline = Deadline(timeout)
        if rpc is not None:
            rpc.close(deadline.left())
        me = threading.current_thread()
        for thread in (self._supervisor, self._keepalive):
            if thread is not None and thread is not me and thread.is_alive():
                thread.join(deadline.left())
                if thread.is_alive():
                    log.warning("%s still running after close()", thread.name)
        if first:
            end = ConnectionClosed(f"the client for {self.description} is closed; create a new one")
            self.bus.close(end)
        if os.getpid() != self._pid:
            return
        self.dispatcher.close(0 if self.dispatcher.in_dispatcher() else deadline.left())
