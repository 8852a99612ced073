"""Fixtures for the protocol conformance suite (PROTOCOL.md §6): real servers, raw JSON.

`server` is parametrised over the reference codex (G2) and our own server; test ids carry the
server name, so `-k codex` or `-k ours` picks one. `g1` is the older codex (G1) for the few
items whose G1 behaviour PROTOCOL.md notes (those tests have g1 in their names).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from servers import (  # noqa: E402
    CODEX_G1,
    CODEX_G2,
    RawConn,
    ServerHandle,
    connections,
    start_kind,
)

SERVER_KINDS = [f"codex-{CODEX_G2}", "ours"]


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """One G2-compatible server per kind, shared by the whole session."""
    handle = start_kind(request.param)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session", params=[f"codex-{CODEX_G1}"])
def g1(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """The G1 reference server (codex 0.123.0)."""
    handle = start_kind(request.param)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def raw(server: ServerHandle) -> Iterator[RawConn]:
    """A fresh connection to `server`, not initialized."""
    c = RawConn(server.url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def conn(server: ServerHandle) -> Iterator[RawConn]:
    """A fresh connection to `server` after initialize + initialized."""
    c = RawConn(server.url)
    try:
        c.handshake()
        yield c
    finally:
        c.close()


@pytest.fixture
def g1conn(g1: ServerHandle) -> Iterator[RawConn]:
    """A fresh, initialized connection to the G1 server."""
    c = RawConn(g1.url)
    try:
        c.handshake()
        yield c
    finally:
        c.close()


@pytest.fixture
def connect(server: ServerHandle) -> Iterator[Callable[[], RawConn]]:
    """Factory for extra raw (uninitialized) connections to `server`; closed at teardown."""
    with connections(server.url) as make:
        yield make
