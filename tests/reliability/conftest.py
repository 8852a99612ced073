"""Fixtures of the reliability suite: real servers behind a fault-injection proxy.

``g2_server`` is parametrised over our server and codex 0.169.0 (test ids carry the name, so
``-k ours`` or ``-k codex`` picks one); servers are shared per module. ``proxy`` puts a fresh
:class:`~tests.faultproxy.FaultProxy` in front of it for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy
from tests.servers import CODEX_G2, ServerHandle, start_kind

G2_KINDS = ["ours", f"codex-{CODEX_G2}"]

# Our server forgets a detached session after this many seconds (codex: ~80 s, fixed).
OURS_GRACE = 3.0


def start_server(kind: str, *, verbose: bool = False) -> ServerHandle:
    """A server of ``kind``; ours gets a short session grace so abandoned work ends soon.

    ``verbose`` (ours only) logs at INFO to its stderr (``ServerHandle.stderr_text``), e.g.
    "session <id> created", "... detached", "... expired".
    """
    extra = ["--session-grace", str(OURS_GRACE)] if kind == "ours" else []
    if verbose and kind == "ours":
        extra.append("-v")
    return start_kind(kind, extra)


@pytest.fixture(scope="module", params=G2_KINDS)
def g2_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """Our server or codex 0.169.0, shared by the tests of one module."""
    handle = start_server(request.param)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def ours_server() -> Iterator[ServerHandle]:
    """Our server alone, shared by the tests of one module."""
    handle = start_server("ours")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def proxy(g2_server: ServerHandle) -> Iterator[FaultProxy]:
    """A fault proxy in front of ``g2_server``."""
    px = FaultProxy.for_url(g2_server.url)
    try:
        yield px
    finally:
        px.close()
