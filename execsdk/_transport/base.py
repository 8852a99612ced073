"""The transport interface: moves text messages, knows nothing about JSON-RPC."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Transport"]


class Transport(Protocol):
    """A message pipe to one exec-server.

    Thread-safety: ``send`` may be called from many threads at once (implementations
    serialise whole messages); ``recv`` is called by exactly one thread, the reader;
    ``close`` may be called from any thread and makes a blocked ``recv`` return promptly.
    """

    @property
    def description(self) -> str:
        """Where the transport leads, for messages and logs (a URL or a command)."""

    def send(self, text: str | bytes, *, timeout: float | None = None) -> None:
        """Send one whole message (bytes are UTF-8 text). ``timeout`` bounds the wait for the
        send lock.

        Raises ``OSError`` (or a transport-specific subclass) when the link is broken.
        """

    def recv(self) -> str | bytes | None:
        """Block for the next message; ``None`` at a clean end of stream. Raises on errors."""

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the link (idempotent), at most ``timeout`` seconds of graceful shutdown."""
