"""The contract suite's one fixture: ``env``, over every kind of environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import execsdk
from execsdk.environment import Environment
from tests.conftest import ServerPool

ENV_KINDS = ("local", "codex-0.169.0", "codex-0.123.0", "ours")


@pytest.fixture(params=ENV_KINDS)
def env(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Environment]:
    kind = request.param
    if kind == "local":
        environment: Environment = execsdk.local()
    else:
        server = server_pool.get(kind)
        environment = execsdk.connect(server.url, timeout=60.0)
    try:
        yield environment
    finally:
        environment.close()
