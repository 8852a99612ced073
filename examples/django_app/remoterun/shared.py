"""The one environment the whole Django process shares.

Created on first use under a lock (concurrent first requests do not race), reconnected if the
link died, and closed when the interpreter exits. Environments are thread-safe, so every
request thread uses the same one at once.
"""

from __future__ import annotations

import atexit
import threading

import execsdk

_lock = threading.Lock()
_env: execsdk.RemoteEnvironment | None = None


def environment() -> execsdk.RemoteEnvironment:
    """The shared environment (``$EXECSDK_URL``, else the embedded default server)."""
    global _env
    with _lock:
        if _env is not None and not _env.client.is_open:
            _env.close()
            _env = None
        if _env is None:
            _env = execsdk.connect()
        return _env


@atexit.register
def close_environment() -> None:
    """Close the shared environment; runs at interpreter exit, and is safe to call twice."""
    global _env
    with _lock:
        env, _env = _env, None
    if env is not None:
        env.close()
