"""The process backend over ``process/*`` calls, and the routing of process notifications."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from typing import Any

from execsdk._deadline import UNSET, Timeoutish
from execsdk._protocol import refusals
from execsdk._protocol import types as t
from execsdk._protocol.wire import b64decode as _b64decode
from execsdk.backends import (
    OutputChunk,
    ProcessEvents,
    ProcessSpec,
    ReadResult,
    WriteStatus,
)
from execsdk.client import Client
from execsdk.errors import (
    ConnectionClosed,
    ConnectionLost,
    InvalidRequest,
    ProcessNotFound,
    RequestTimeout,
    SessionLost,
    UnsupportedByServer,
)
from execsdk.remote.failures import map_spawn_errors

__all__ = ["RemoteProcessBackend"]

log = logging.getLogger(__name__)

_OUTPUT, _EXITED, _CLOSED = 0, 1, 2


class _Receivers:
    """processId -> ProcessEvents, fed from the client's reader thread.

    Process events are held until the reader has caught up with the network (the bus's idle
    hook) and then delivered in arrival order, so a consumer blocked in ``output()`` is woken
    once per burst of chunks that arrived together rather than once per chunk (a modest
    saving, see docs/performance.md).

    With a reconnecting client the receivers survive a drop: after the session is resumed
    each live process is told to re-read what it may have missed (``on_resync``: notifications
    sent while disconnected are not replayed, PROTOCOL.md §2); when the session is lost each
    fails with ``SessionLost``.

    Thread-safety: registration from any thread; dispatch on the reader thread.
    """

    def __init__(self, client: Client) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, ProcessEvents] = {}
        self._ended: BaseException | None = None
        self._held: list[tuple[int, dict[str, Any]]] = []
        bus = client.events
        bus.add_handler("process/output", self._on_output)
        bus.add_handler("process/exited", self._on_exited)
        bus.add_handler("process/closed", self._on_closed)
        bus.add_idle_handler(self._deliver)
        bus.add_close_handler(self._on_end)
        client.add_reconnect_handler(self._on_reconnected)

    def add(self, process_id: str, events: ProcessEvents) -> None:
        with self._lock:
            if self._ended is not None:
                raise self._ended
            self._by_id[process_id] = events

    def count(self) -> int:
        """Processes whose events are routed here (started and not yet released)."""
        with self._lock:
            return len(self._by_id)

    def remove(self, process_id: str, events: ProcessEvents | None = None) -> None:
        with self._lock:
            if events is None or self._by_id.get(process_id) is events:
                self._by_id.pop(process_id, None)

    def _on_output(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._held.append((_OUTPUT, params))

    def _on_exited(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._held.append((_EXITED, params))

    def _on_closed(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._held.append((_CLOSED, params))

    def _deliver(self) -> None:
        """Hand every held event to its process, in arrival order."""
        if not self._held:
            return
        with self._lock:
            held, self._held = self._held, []
        by_id = self._by_id
        for kind, params in held:
            events = by_id.get(params.get("processId"))  # type: ignore[arg-type]
            if events is None:
                continue
            try:
                if kind == _OUTPUT:
                    events.on_output(params["seq"], params["stream"], _b64decode(params["chunk"]))
                elif kind == _EXITED:
                    events.on_exited(params["seq"], params["exitCode"])
                else:
                    events.on_closed(params["seq"])
            except Exception:
                log.exception("dropping a malformed process notification %r", params)

    def _on_reconnected(self, lost: SessionLost | None) -> None:
        """After a reconnect (reconnecting thread): resync every live process, or fail them
        all when their session is gone."""
        with self._lock:
            receivers = list(self._by_id.values())
            if lost is not None:
                self._by_id = {}
        for events in receivers:
            try:
                if lost is not None:
                    events.on_lost(lost)
                else:
                    resync = getattr(events, "on_resync", None)
                    if resync is not None:
                        resync()
            except Exception:
                log.exception("process receiver failed after a reconnect")

    def _on_end(self, cause: BaseException | None) -> None:
        self._deliver()
        with self._lock:
            self._ended = cause or ConnectionClosed("the client was closed")
            receivers, self._by_id = list(self._by_id.values()), {}
        for events in receivers:
            try:
                events.on_lost(self._ended)
            except Exception:
                log.exception("process receiver failed on connection end")


class _Acker:
    """Sends ``process/ackOutput`` for processes of a server announcing ``execsdk/outputAck``.

    Acknowledgements come from the I/O thread that applies output (which must not block), so
    they are queued here, coalesced per process (only the highest seq matters), and sent by
    one thread, ``execsdk-ack-<n>``, started on first use and ended with the client. A lost
    acknowledgement costs nothing but time: the next one covers it, and until then the
    server keeps the output (and at worst makes the process wait).

    Thread-safety: :meth:`put` from any thread, never blocking.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._cond = threading.Condition()
        self._pending: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        client.events.add_close_handler(self._stop)

    def put(self, process_id: str, seq: int) -> None:
        with self._cond:
            if self._stopped:
                return
            if seq > self._pending.get(process_id, 0):
                self._pending[process_id] = seq
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"execsdk-ack-{next(_acker_ids)}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                pending, self._pending = self._pending, {}
            for process_id, seq in pending.items():
                try:
                    self._client.process_ack_output(process_id=process_id, seq=seq, timeout=30.0)
                except (ConnectionLost, RequestTimeout) as exc:
                    # Lost with the link: send it again (the call waits for a reconnect). A
                    # process the server holds at its window sends nothing more to prompt it.
                    log.debug("ack of %s up to seq %d failed (%r); retrying", process_id, seq, exc)
                    self.put(process_id, seq)
                    time.sleep(0.05)
                except Exception as exc:
                    log.debug("ack of %s up to seq %d failed: %r", process_id, seq, exc)

    def _stop(self, cause: BaseException | None) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify()


_acker_ids = itertools.count(1)

ACK_EVERY = 1 << 20
"""Bytes of output a process receives between two acknowledgements (``execsdk/outputAck``)."""


class RemoteProcessBackend:
    """ProcessBackend over ``process/*``. Thread-safety: every method from any thread.

    On a server announcing ``execsdk/outputAck`` (ours) processes are started in a session
    that keeps their output until acknowledged (``process/keepOutput``, sent once per
    session), and the :class:`~execsdk.process.Process` facade acknowledges what it received
    every :data:`ACK_EVERY` bytes: nothing is lost across a reconnect. Elsewhere the server
    keeps only the last 1 MiB per process and a long outage can lose output
    (``errors.OutputLost``).
    """

    def __init__(self, client: Client, default_cwd: str) -> None:
        self._client = client
        self._default_cwd = default_cwd
        self._receivers = _Receivers(client)
        self._keep_lock = threading.Lock()
        self._kept_session: str | None = None
        self._acker: _Acker | None = None

    @property
    def keeps_output(self) -> bool:
        """True when this server keeps output until acknowledged: nothing is lost on resume."""
        return self._client.supports("process/ackOutput")

    @property
    def ack_every(self) -> int | None:
        """Bytes between acknowledgements, or None when the server takes none."""
        return ACK_EVERY if self.keeps_output else None

    def acknowledge(self, process_id: str, seq: int) -> None:
        """Queue an acknowledgement (never blocks; from the thread applying output). Every
        process of a backend with :attr:`ack_every` was started after ``process/keepOutput``."""
        acker = self._acker
        if acker is not None:
            acker.put(process_id, seq)

    def _keep_output(self, timeout: Timeoutish) -> None:
        """Ask the session to keep unacknowledged output, once per session."""
        if not self.keeps_output:
            return
        session = self._client.server_info.session_id
        with self._keep_lock:
            if self._kept_session != session:
                self._client.process_keep_output(timeout=timeout)
                self._kept_session = session
                if self._acker is None:
                    self._acker = _Acker(self._client)

    @property
    def can_close_stdin(self) -> bool:
        return self._client.supports("process/closeStdin")

    @property
    def can_interrupt(self) -> bool:
        return self._client.supports("process/signal")

    def __repr__(self) -> str:
        client = self._client
        state = "" if client.is_open else " closed"
        return (
            f"<RemoteProcessBackend {client.url} {client.generation.value} "
            f"session={client.server_info.session_id} "
            f"processes={self._receivers.count()}{state}>"
        )

    def start(
        self,
        process_id: str,
        spec: ProcessSpec,
        events: ProcessEvents,
        *,
        timeout: Timeoutish = UNSET,
    ) -> None:
        policy = spec.env_policy
        wire_policy = (
            None
            if policy is None
            else t.WireEnvPolicy(
                inherit=policy.inherit,
                ignore_default_excludes=policy.ignore_default_excludes,
                exclude=list(policy.exclude),
                set=dict(policy.set),
                include_only=list(policy.include_only),
            )
        )
        self._keep_output(timeout)
        # Output may arrive before the start answer (PROTOCOL.md §4.3): register first.
        self._receivers.add(process_id, events)
        try:
            with map_spawn_errors(
                self._client,
                spec.argv[0] if spec.argv else None,
                spec.cwd or self._default_cwd,
                timeout=timeout,
            ):
                self._client.process_start(
                    process_id=process_id,
                    argv=spec.argv,
                    cwd=spec.cwd or self._default_cwd,
                    env=spec.env,
                    tty=spec.tty,
                    pipe_stdin=spec.pipe_stdin or None,
                    arg0=spec.arg0,
                    env_policy=wire_policy,
                    timeout=timeout,
                )
        except BaseException:
            self._receivers.remove(process_id, events)
            raise

    def write(self, process_id: str, data: bytes, *, timeout: Timeoutish = UNSET) -> WriteStatus:
        result = self._client.process_write(
            process_id=process_id, chunk=data, write_id=uuid.uuid4().hex, timeout=timeout
        )
        return result.status

    def close_stdin(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        self._client.process_close_stdin(process_id=process_id, timeout=timeout)

    def interrupt(self, process_id: str, *, timeout: Timeoutish = UNSET) -> None:
        if not self.can_interrupt:
            raise UnsupportedByServer(
                "interrupt (process/signal)",
                self._client.generation.value,
                "use terminate() to stop the process",
            )
        self._client.process_signal(process_id=process_id, timeout=timeout)

    def terminate(self, process_id: str, *, timeout: Timeoutish = UNSET) -> bool:
        return self._client.process_terminate(process_id=process_id, timeout=timeout).running

    def read(
        self,
        process_id: str,
        *,
        after_seq: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int | None = None,
        timeout: Timeoutish = UNSET,
    ) -> ReadResult:
        try:
            res = self._client.process_read(
                process_id=process_id,
                after_seq=after_seq,
                max_bytes=max_bytes,
                wait_ms=wait_ms,
                timeout=timeout,
            )
        except InvalidRequest as exc:
            if refusals.is_unknown_process(exc):
                raise ProcessNotFound(exc.message, process_id=process_id) from exc
            raise
        return ReadResult(
            chunks=tuple(OutputChunk(c.stream, c.chunk, c.seq) for c in res.chunks),
            next_seq=res.next_seq,
            exited=res.exited,
            exit_code=res.exit_code,
            closed=res.closed,
            failure=res.failure,
        )

    def release(self, process_id: str) -> None:
        self._receivers.remove(process_id)
