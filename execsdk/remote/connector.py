"""Entry point :func:`connect`: a URL, ``$EXECSDK_URL`` or else the embedded server."""

from __future__ import annotations

import os
import ssl

from execsdk.client import Client, Reconnect
from execsdk.remote.embedded import start_embedded
from execsdk.remote.remoteenv import RemoteEnvironment

__all__ = ["connect"]


def connect(
    url: str | None = None,
    *,
    token: str | None = None,
    timeout: float | None = 30.0,
    connect_timeout: float | None = 10.0,
    initialize_timeout: float | None = 10.0,
    client_name: str = "execsdk",
    ssl_context: ssl.SSLContext | None = None,
    output_budget: int = 64 * 2**20,
    reconnect: Reconnect | bool | None = None,
) -> RemoteEnvironment:
    """Connect to an exec-server and return an Environment that owns the connection.

    ``url`` falls back to ``$EXECSDK_URL``, then to the embedded default server (a child
    process over stdio). ``token`` falls back to ``$EXECSDK_TOKEN``. ``timeout`` is the
    default for every call made through the environment (``None``: no limit).
    ``reconnect`` (``True``, or a :class:`~execsdk.client.Reconnect` policy) makes the
    environment survive a dropped connection: it reconnects, resumes its session and every
    running process, whose output then arrives whole (see ``Reconnect`` for the limits).
    Raises ``ConnectError`` (``ConnectTimeout``, ``InitializeTimeout``) when it cannot.
    """
    url = url or os.environ.get("EXECSDK_URL") or None
    if token is None:
        token = os.environ.get("EXECSDK_TOKEN") or None
    if url is None:
        if reconnect:
            raise ValueError("reconnect needs a ws:// URL (the embedded server runs over stdio)")
        client = start_embedded(
            initialize_timeout=max(initialize_timeout or 0, 20.0), timeout=timeout
        )
    else:
        client = Client.connect(
            url,
            token=token,
            client_name=client_name,
            connect_timeout=connect_timeout,
            initialize_timeout=initialize_timeout,
            timeout=timeout,
            ssl_context=ssl_context,
            reconnect=reconnect,
        )
    try:
        return RemoteEnvironment(
            client, owns_client=True, timeout=timeout, output_budget=output_budget
        )
    except BaseException:
        client.close()
        raise
