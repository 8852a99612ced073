"""The embedded default server: ``python -m execsdk serve --listen stdio`` as a child process.

No port is opened and no token exists to leak; the caller never imports ``websockets``; a crash
stays in the child; closing the client closes the child's stdin, which ends its session and
every process it started.
"""

from __future__ import annotations

import sys

from execsdk.client import Client

__all__ = ["embedded_argv", "start_embedded"]


def embedded_argv() -> list[str]:
    """The command line of the embedded server."""
    return [sys.executable, "-m", "execsdk", "serve", "--listen", "stdio"]


def start_embedded(
    *, initialize_timeout: float | None = 20.0, timeout: float | None = None
) -> Client:
    """Start the embedded server and return a connected client that owns it."""
    return Client.over_stdio(
        embedded_argv(),
        client_name="execsdk",
        initialize_timeout=initialize_timeout,
        timeout=timeout,
    )
