"""fsspec's own abstract test suites (``fsspec.tests.abstract``) run against ``ExecFileSystem``.

Every class the installed fsspec ships (copy, get, put, open, pipe) runs on each environment:
``local``, codex 0.169 (G2), codex 0.123 (G1) and our server. The servers run on this machine,
so the remote file system and fsspec's ``local_fs`` (the test's ``tmpdir``) are the same disk:
``fs_path`` is a fresh directory under the environment's temporary directory.

``fs`` is built with ``auto_mkdir=True``, as fsspec's own local fixture builds
``LocalFileSystem(auto_mkdir=True)``: the scenarios ``touch`` files whose parents do not exist.
"""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Callable, Iterator

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from execsdk.environment import Environment
from execsdk.fsspec import ExecFileSystem
from tests.conftest import ENV_KINDS, ServerPool, environment_of

pytestmark = pytest.mark.timeout(120)


class ExecFixtures(AbstractFixtures):  # type: ignore[misc]
    """The fixtures fsspec's abstract suites expect, over one environment per test."""

    @pytest.fixture(params=ENV_KINDS)
    def environment(
        self, request: pytest.FixtureRequest, server_pool: ServerPool
    ) -> Iterator[Environment]:
        with environment_of(request.param, server_pool) as env:
            yield env

    @pytest.fixture
    def fs(self, environment: Environment) -> ExecFileSystem:
        return ExecFileSystem(environment=environment, auto_mkdir=True)

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self, environment: Environment) -> Iterator[str]:
        path = posixpath.join(
            environment.info.temp_dir, f"execsdk-fsspec-abstract-{secrets.token_hex(6)}"
        )
        environment.fs.mkdir(path)
        yield path
        environment.fs.rmtree(path, missing_ok=True)


class TestExecCopy(ExecFixtures, AbstractCopyTests):  # type: ignore[misc]
    pass


class TestExecGet(ExecFixtures, AbstractGetTests):  # type: ignore[misc]
    pass


class TestExecPut(ExecFixtures, AbstractPutTests):  # type: ignore[misc]
    pass


class TestExecOpen(ExecFixtures, AbstractOpenTests):  # type: ignore[misc]
    pass


class TestExecPipe(ExecFixtures, AbstractPipeTests):  # type: ignore[misc]
    pass
