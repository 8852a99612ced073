"""Shared fixtures: real servers started once per session, and checks that a test leaves no
thread and no unclosed socket, file or process behind."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

import pytest

import execsdk
from execsdk.environment import Environment
from tests.servers import ServerHandle, start_kind
from tests.waiting import wait_until

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


ENV_KINDS = ("local", *SERVER_KINDS)
"""Every kind of environment a test may run on: local, and a connection to each server."""


@contextlib.contextmanager
def environment_of(kind: str, pool: ServerPool) -> Iterator[Environment]:
    """An environment of ``kind`` (one of :data:`ENV_KINDS`), closed on exit."""
    environment: Environment
    if kind == "local":
        environment = execsdk.local()
    else:
        environment = execsdk.connect(pool.get(kind).url, timeout=60.0)
    try:
        yield environment
    finally:
        environment.close()


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
    wait_until(
        lambda: not (_execsdk_threads() - before),
        5.0,
        lambda: f"threads outlived the test: {sorted(t.name for t in _execsdk_threads() - before)}",
        interval=0.05,
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    # What exists now (modules, collected tests) is never garbage: leave it out of every later
    # collection, so that the one after each test below costs milliseconds, not tens of them.
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_unclosed_resources() -> Iterator[None]:
    """A socket, file or subprocess a test drops without closing fails that test.

    Python warns (ResourceWarning) when such an object is freed still open, from ``__del__``,
    where pyproject's filterwarnings turn the warning into an exception that Python cannot
    raise: pytest reports it as a PytestUnraisableExceptionWarning at the end of the test phase,
    which the filters make an error too. Objects caught in reference cycles are only freed by
    the garbage collector; collecting here makes that happen within the test that leaked.
    ``PYTHONTRACEMALLOC=20`` adds where the object was allocated to the report.
    """
    yield
    gc.collect()
