"""Shared fixtures: real servers started once per session, and a thread-leak check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.servers import ServerHandle, start_kind

SERVER_KINDS = ("codex-0.169.0", "codex-0.123.0", "ours")


class ServerPool:
    """Starts each kind of server on first use and stops them all at the end of the session."""

    def __init__(self) -> None:
        self._servers: dict[str, ServerHandle] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> ServerHandle:
        with self._lock:
            handle = self._servers.get(kind)
            if handle is None or not handle.alive():
                handle = start_kind(kind)
                self._servers[kind] = handle
            return handle

    def stop_all(self) -> None:
        for handle in self._servers.values():
            handle.stop()
        self._servers.clear()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.stop_all()


def _execsdk_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("execsdk-") and t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every execsdk-* thread a test starts must be gone shortly after the test ends."""
    before = _execsdk_threads()
    yield
    deadline = time.monotonic() + 5.0
    leaked = _execsdk_threads() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _execsdk_threads() - before
    assert not leaked, f"threads outlived the test: {sorted(t.name for t in leaked)}"
