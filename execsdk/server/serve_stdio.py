"""The stdio transport of ``execsdk serve``: one session over stdin/stdout.

Newline-delimited JSON, one message per line, as ``codex exec-server --listen stdio``
(PROTOCOL.md §1.2). Blank lines are skipped. The session ends with stdin: when the parent
closes it (or dies), every process of the session is killed before this returns, so no child
outlives its client. Nothing but protocol messages is ever written to stdout.

Standard library only (no websockets): this is what the embedded default environment spawns.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from typing import BinaryIO

from execsdk._local.processes import LocalProcessBackend
from execsdk.server.confine import Confinement
from execsdk.server.connection import SERVING, Connection
from execsdk.server.outbox import Outbox
from execsdk.server.sessions import DEFAULT_SESSION_GRACE, SessionRegistry

__all__ = ["serve_stdio"]

log = logging.getLogger(__name__)

PARSE_ERROR_PREFIX = "failed to parse JSON-RPC message from exec-server stdio"


def serve_stdio(
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    *,
    stop: threading.Event | None = None,
    session_grace: float = DEFAULT_SESSION_GRACE,
    close_timeout: float = 5.0,
    root: str | None = None,
) -> None:
    """Serve one connection on ``stdin``/``stdout`` (default: the process's) until EOF.

    ``stop`` is set here when serving ends (a signal handler that interrupts the read checks it,
    so it never interrupts the cleanup); set by someone else, serving ends before the next
    message. On return every process of the session has been killed and the output is flushed.
    ``root`` confines every path to that directory (``confine.py``).

    Raises:
        OSError: ``root`` is not an existing directory (before anything is read).
    """
    confine = Confinement(root) if root is not None else None
    source = stdin if stdin is not None else sys.stdin.buffer
    sink = stdout if stdout is not None else sys.stdout.buffer
    write_lock = threading.Lock()

    def send(messages: list[bytes]) -> None:
        data = b"\n".join(messages) + b"\n"  # a line per message, one write per batch
        with write_lock:
            sink.write(data)
            sink.flush()

    if confine is None:
        registry = SessionRegistry(grace=session_grace)
    else:
        factory = functools.partial(LocalProcessBackend, default_cwd=confine.root)
        registry = SessionRegistry(grace=session_grace, backend_factory=factory)
    outbox = Outbox(send, name="execsdk-serve-writer-stdio")
    conn = Connection(
        registry, outbox, parse_error_prefix=PARSE_ERROR_PREFIX, name="stdio", confine=confine
    )
    SERVING.active = True
    try:
        while stop is None or not stop.is_set():
            try:
                line = source.readline()
            except (OSError, ValueError) as exc:  # closed underneath us (shutdown)
                log.debug("stdin read failed: %s", exc)
                break
            if not line:
                break
            if not line.strip():
                continue
            if not conn.handle(line.rstrip(b"\r\n")):
                break
    finally:
        if stop is not None:
            stop.set()
        SERVING.active = False
        log.info("stdin closed; ending the session and killing its processes")
        # The connection's answers still queued go out first; then the processes die (even
        # when ending the connection failed).
        try:
            conn.connection_lost(drain=True)
        finally:
            registry.close(close_timeout)
            outbox.close(drain=True, timeout=close_timeout)
