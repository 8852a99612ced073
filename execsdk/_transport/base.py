"""The transport interface: moves text messages, knows nothing about JSON-RPC."""

from __future__ import annotations

from typing import Protocol

__all__ = ["SendTimeout", "Transport"]


class SendTimeout(TimeoutError):
    """``Transport.send`` gave up at its timeout; ``started`` says how much the peer may see.

    ``started`` False: not one byte of the message was written and it was withdrawn, so the
    peer never sees it and the link is as good as before (sending it again is safe).
    ``started`` True: part of it is on the wire. A message cannot be taken back halfway, so the
    transport keeps the rest and writes it in the background (the stream stays valid): the peer
    may still receive it whole, later, if it starts reading again, or never if the link ends.
    """

    def __init__(self, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.started = started


class Transport(Protocol):
    """A message pipe to one exec-server.

    Thread-safety: ``send`` may be called from many threads at once (implementations
    serialise whole messages); ``recv`` and ``buffered`` are called by exactly one thread, the
    reader; ``close`` may be called from any thread and makes a blocked ``recv`` return
    promptly.
    """

    @property
    def description(self) -> str:
        """Where the transport leads, for messages and logs (a URL or a command)."""

    def send(self, text: str | bytes, *, timeout: float | None = None) -> None:
        """Send one whole message (bytes are UTF-8 text); never blocks past ``timeout``.

        Messages go out whole and in the order their ``send`` calls were made; two are never
        interleaved. ``timeout`` (seconds, ``None``: no limit) bounds the whole call, the wait
        for the peer to take the bytes included.

        Returning means the message was written, or queued behind a message the transport is
        already writing and will be written right after it unless the link breaks first (then
        ``recv`` raises, so the reader learns). It never means that the peer read it.

        Raises :class:`SendTimeout` (a ``TimeoutError``) at the timeout; its ``started`` says
        whether the peer may still get the message. Raises ``OSError`` (``BrokenPipeError``
        or a transport-specific subclass) when the link is broken or closed; how much of the
        message reached the peer is then unknown.
        """

    def recv(self) -> str | bytes | None:
        """Block for the next message; ``None`` at a clean end of stream. Raises on errors."""

    def buffered(self) -> bool:
        """True when a whole message is already buffered, so ``recv`` will return without
        waiting for the network (reader thread only). The reader runs its idle work (batched
        wake-ups) only when this is False; a transport that cannot tell answers False."""

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the link (idempotent), at most ``timeout`` seconds of graceful shutdown."""
