"""``execsdk serve``: our own exec-server, speaking the G2 protocol of codex 0.169.

- :class:`~execsdk.server.ws.WsServer` serves WebSocket clients (import ``execsdk.server.ws``;
  it needs the ``websockets`` package).
- :func:`~execsdk.server.serve_stdio.serve_stdio` serves one session over stdin/stdout (stdlib
  only).
- :class:`~execsdk.server.connection.Connection` is the protocol side of one connection, shared by
  both transports; :class:`~execsdk.server.sessions.SessionRegistry` keeps sessions across
  connections.
- :mod:`~execsdk.server.auth` decides who may open a WebSocket (capability token or HS256 JWT);
  :mod:`~execsdk.server.confine` implements ``--root`` (every path must resolve inside it).

Nothing here is imported by ``import execsdk``; the command line starts it
(``python -m execsdk serve``).
"""

from __future__ import annotations

__all__: list[str] = []
