"""The protocol side of one connection to ``execsdk serve``: envelopes, lifecycle, ordering.

A transport (``ws.py``, ``stdio.py``) hands every incoming message to
:meth:`Connection.handle` and calls :meth:`Connection.connection_lost` when it ends. The
connection validates params the way codex does (``params.py``), enforces the
``initialize``/``initialized`` lifecycle (PROTOCOL.md §2), and runs each method's handler: a
thin adapter that converts wire values, calls the local backends (``LocalProcessBackend`` of the
session, ``LocalFsBackend`` of the connection) and converts the answer back. Exceptions become
JSON-RPC errors in one place, :func:`error_for`.

Concurrency (PROTOCOL.md §7, ``execsdk/concurrentRequests``): ``initialize`` and the lifecycle
checks run inline, in arrival order. Every other request runs on a small per-connection pool of
worker threads (long-polling reads on a second, larger one), so a long-polling ``process/read``
does not hold up the requests behind it and answers may come in any order. Effects still happen
in arrival order: requests that change something (start, write, signal, terminate, fs writes,
handles...) form one chain and each waits for the previous one; reads wait for the changes sent
before them, but nobody waits for a read. So a client that pipelines ``process/start`` and
``process/write`` (fine with codex, which serves one request at a time) sees the same result.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

from execsdk import errors
from execsdk._local.disk import LocalFsBackend
from execsdk._local.records import PollScope
from execsdk._protocol.jsonrpc import encode_error, encode_raw_response, encode_response
from execsdk._protocol.redact import redacted
from execsdk.server import params as P
from execsdk.server.confine import Confinement
from execsdk.server.handlers import Held, RawResult, Reply, error_for
from execsdk.server.hostinfo import environment_info
from execsdk.server.http_request import HttpRequester
from execsdk.server.malloc import trim_soon
from execsdk.server.method_table import METHODS, Method
from execsdk.server.outbox import Outbox
from execsdk.server.parse import error_object_problem, parse, parse_bulk, valid_id
from execsdk.server.sessions import Session, SessionRegistry
from execsdk.server.specs import INITIALIZE
from execsdk.server.watch import MissingWatcher
from execsdk.server.workers import SERVING, Workers

__all__ = ["DEFAULT_MAX_PENDING", "DEFAULT_POLLERS", "DEFAULT_WORKERS", "SERVING", "Connection"]

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
DEFAULT_POLLERS = 64
"""Long-polling ``process/read`` calls (``waitMs`` > 0) get threads of their own, so a client
waiting on many processes at once does not starve its other requests."""
DEFAULT_MAX_PENDING = 256
DEFAULT_HOLDERS = 64
"""Threads that wait for held answers (:class:`~execsdk.server.handlers.Held`: a
``process/write`` waiting for room in a child's stdin), apart from the other pools."""
_conn_ids = itertools.count(1)


class Connection:
    """The protocol state of one client connection.

    ``handle`` is called by the transport's receive loop only (one thread); ``connection_lost``
    once at the end. Handlers run on the worker pool; everything they share is thread-safe.
    """

    def __init__(
        self,
        registry: SessionRegistry,
        outbox: Outbox,
        *,
        parse_error_prefix: str,
        workers: int = DEFAULT_WORKERS,
        pollers: int = DEFAULT_POLLERS,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str | None = None,
        confine: Confinement | None = None,
    ) -> None:
        self.name = name or str(next(_conn_ids))
        self.confine = confine
        self._registry = registry
        self._outbox = outbox
        self._parse_error_prefix = parse_error_prefix
        self.fs = LocalFsBackend()
        self.watcher = MissingWatcher(outbox.put)
        self.http = HttpRequester(outbox.put)
        self._session: Session | None = None
        self._init_requested = False
        self._initialized = False
        self._tail: threading.Event | None = None
        self._workers = Workers(f"execsdk-serve-worker-{self.name}", workers)
        self._pollers = Workers(f"execsdk-serve-poll-{self.name}", pollers)
        self._holders = Workers(f"execsdk-serve-hold-{self.name}", DEFAULT_HOLDERS)
        self._slots = threading.BoundedSemaphore(max_pending)
        self._in_flight = 0  # requests submitted and not finished; under _in_flight_lock
        self._in_flight_lock = threading.Lock()
        self.polls = PollScope()
        """Every long-polling ``process/read`` of this connection: they end when it does."""
        self._lost = False

    @property
    def session(self) -> Session:
        """The attached session (handlers run only after ``initialize`` succeeded)."""
        assert self._session is not None
        return self._session

    @property
    def root(self) -> str | None:
        """The ``--root`` directory (real path), or None when paths are not confined."""
        return None if self.confine is None else self.confine.root

    @property
    def session_id(self) -> str | None:
        return None if self._session is None else self._session.id

    # -- receive side -----------------------------------------------------------------------

    def handle(self, raw: str | bytes) -> bool:
        """Process one incoming message. Returns False when the connection must be closed."""
        if self._lost:
            return False
        try:
            msg = parse_bulk(raw) or parse(raw)
        except ValueError as exc:
            log.debug("conn %s <- unparseable message of %d characters", self.name, len(raw))
            self._parse_error(str(exc))
            return True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %s <- %s", self.name, redacted(msg))
        if not isinstance(msg, dict):
            self._parse_error("expected a JSON-RPC object")
            return True
        if "method" in msg:
            method = msg["method"]
            if not isinstance(method, str):
                self._parse_error(f"invalid type: {P.describe(method)}, expected a string")
                return True
            if "id" not in msg:
                return self._notification(method)
            request_id = msg["id"]
            if not valid_id(request_id):
                self._parse_error("data did not match any variant of untagged enum RequestId")
                return True
            self._request(request_id, method, msg.get("params"))
            return True
        if "result" in msg:
            if "id" not in msg:
                self._parse_error("missing field `id`")
                return True
            if not valid_id(msg["id"]):
                self._parse_error("data did not match any variant of untagged enum RequestId")
                return True
            log.info("conn %s: the client sent a response; closing the connection", self.name)
            return False
        if "error" in msg:
            problem = error_object_problem(msg)
            if problem is not None:
                self._parse_error(problem)
                return True
            log.info("conn %s: the client sent an error response; closing", self.name)
            return False
        self._parse_error("missing field `error`")
        return True

    def _parse_error(self, detail: str) -> None:
        self._outbox.put_reply(encode_error(-1, -32600, f"{self._parse_error_prefix}: {detail}"))

    def _notification(self, method: str) -> bool:
        if method == "initialized":
            if not self._init_requested:
                log.info("conn %s: `initialized` before `initialize`; closing", self.name)
                return False
            self._initialized = True  # a repeated `initialized` is harmless
            return True
        log.info("conn %s: unknown notification %r; closing the connection", self.name, method)
        return False

    def _request(self, request_id: int | str, method: str, params: object) -> None:
        if method == "initialize":
            self._initialize(request_id, params)
            return
        entry = METHODS.get(method)
        if entry is None:
            self._error(request_id, -32601, f"exec-server stub does not implement `{method}` yet")
            return
        try:
            decoded = entry.decoder(params)
        except errors.ServerError as exc:
            self._error(request_id, exc.code, exc.message)
            return
        if not self._init_requested:
            self._error(
                request_id,
                -32600,
                f"client must call initialize before using {entry.family} methods",
            )
            return
        if not self._initialized:
            self._error(
                request_id,
                -32600,
                f"client must send initialized before using {entry.family} methods",
            )
            return
        before = None if entry.order == "free" else self._tail
        done: threading.Event | None = None
        if entry.order == "change":
            done = threading.Event()
            self._tail = done
        self._slots.acquire()  # too many requests in flight: stop reading (back pressure)
        with self._in_flight_lock:
            self._in_flight += 1

        def run() -> None:
            held = False
            try:
                if before is not None:
                    before.wait()
                held = self._run(request_id, entry, decoded)
            finally:
                if done is not None:
                    done.set()  # a held answer lets the requests behind it go on
                if not held:  # a held one stays in flight, with its slot, until answered
                    self._finished()

        long_poll = (
            entry.name == "process/read" and isinstance(decoded, dict) and bool(decoded["waitMs"])
        )
        pool = self._pollers if long_poll else self._workers
        if not pool.submit(run):
            if done is not None:
                done.set()
            with self._in_flight_lock:
                self._in_flight -= 1
            self._slots.release()

    def _finished(self) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1
        self._slots.release()

    def _run(self, request_id: int | str, entry: Method, params: Any) -> bool:
        """Run the handler and answer; True when the answer is held (sent later)."""
        try:
            result = entry.handler(self, params)
        except Exception as exc:
            code, message = error_for(exc, entry.family)
            self._error(request_id, code, message)
            return False
        if isinstance(result, Held):
            finish = result.finish

            def answer_later() -> None:
                try:
                    self._answer(request_id, entry, finish)
                finally:
                    self._finished()

            if self._holders.submit(answer_later):
                return True
            self._answer(request_id, entry, finish)  # closing: ends at once (polls cancelled)
            return False
        self._send_result(request_id, result)
        return False

    def _answer(self, request_id: int | str, entry: Method, finish: Any) -> None:
        try:
            result = finish()
        except Exception as exc:
            code, message = error_for(exc, entry.family)
            self._error(request_id, code, message)
            return
        self._send_result(request_id, result)

    def _send_result(self, request_id: int | str, result: object) -> None:
        # Handlers run on request workers, which may send their answer themselves.
        if isinstance(result, RawResult):
            self._outbox.put_reply(encode_raw_response(request_id, *result.parts), direct=True)
        elif isinstance(result, Reply):
            self._outbox.put_reply(encode_response(request_id, result.result), direct=True)
            if result.after is not None:
                result.after()
        else:
            self._outbox.put_reply(encode_response(request_id, result), direct=True)

    def _initialize(self, request_id: int | str, params: object) -> None:
        try:
            decoded = INITIALIZE(params)
        except errors.ServerError as exc:
            self._error(request_id, exc.code, exc.message)
            return
        assert isinstance(decoded, dict)
        if self._init_requested:
            self._error(request_id, -32600, "initialize may only be sent once per connection")
            return
        self._init_requested = True
        try:
            session = self._registry.attach(decoded["resumeSessionId"], self)
        except errors.ServerError as exc:
            self._init_requested = False
            self._error(request_id, exc.code, exc.message)
            return
        self._session = session
        log.info(
            "conn %s: initialize from %r -> session %s",
            self.name,
            decoded["clientName"],
            session.id,
        )
        self._outbox.put_reply(
            encode_response(
                request_id,
                {"sessionId": session.id, "environmentInfo": environment_info(cwd=self.root)},
            )
        )
        # Connected only now, so no process notification overtakes the initialize answer.
        self._registry.connect(session, self, self._outbox)

    def _error(self, request_id: int | str, code: int, message: str) -> None:
        self._outbox.put_reply(encode_error(request_id, code, message))

    # -- end ----------------------------------------------------------------------------------

    def connection_lost(self, *, drain: bool = False) -> None:
        """The transport ended: detach the session, drop per-connection state. Idempotent.

        ``drain``: still send the answers already queued (stdio, where the output outlives
        the input); otherwise they are dropped with the connection.
        """
        if self._lost:
            return
        self._lost = True
        self.polls.cancel()  # waiting reads answer now, so their workers are free at once
        self.watcher.close()
        self.http.close()
        if self._session is not None:
            self._registry.detach(self._session, self)
        self._workers.close(timeout=0.5)
        self._pollers.close(timeout=0.1)
        self._holders.close(timeout=0.1)
        with self._in_flight_lock:
            settled = not self._in_flight
        if self._session is not None and settled:
            # Nothing to resume without processes: drop it now, not after the grace period.
            # (With a request still running, say a slow process/start, it keeps its grace.)
            self._registry.release_if_empty(self._session)
        self.fs.close()
        self._outbox.close(drain=drain)
        log.info("conn %s closed (session %s)", self.name, self.session_id)
        trim_soon()  # what this connection held goes back to the system, not the heap
