"""The contract suite's one fixture: ``env``, over every kind of environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from execsdk.environment import Environment
from tests.conftest import ENV_KINDS, ServerPool, environment_of


@pytest.fixture(params=ENV_KINDS)
def env(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Environment]:
    with environment_of(request.param, server_pool) as environment:
        yield environment
