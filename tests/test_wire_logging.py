"""Client-side frame logging: every frame at DEBUG, secrets replaced by sizes, lines cut short.

Run against the real codex 0.169.0 and our embedded server: file contents, process input and
output and environment values must never reach the log, whatever the server answers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import execsdk
from execsdk._protocol.redact import PREVIEW_CHARS
from tests.conftest import ServerPool

SECRET = "s3cr3t-" + "q" * 12
LOGGER = "execsdk._rpc.endpoint"


@pytest.fixture(params=["codex-0.169.0", "embedded"])
def env(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[execsdk.Environment]:
    if request.param == "embedded":
        environment = execsdk.connect()
    else:
        environment = execsdk.connect(server_pool.get(request.param).url)
    with environment:
        yield environment


def _frames(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.timeout(60)
def test_frames_are_logged_at_debug_without_secrets(
    env: execsdk.Environment, caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    path = f"{tmp_path}/secret.txt"
    env.fs.write_text(path, SECRET * 3)
    assert env.fs.read_text(path) == SECRET * 3
    done = env.run(
        ["sh", "-c", 'printf "%s" "$MARK"; cat'],
        env={"MARK": SECRET},
        input=SECRET.encode(),
        check=True,
    )
    assert done.stdout == (SECRET * 2).encode()
    lines = _frames(caplog)
    sent = [line for line in lines if " -> " in line]
    received = [line for line in lines if " <- " in line]
    assert any("fs/writeFile" in line for line in sent)
    assert any("process/start" in line for line in sent)
    assert any("process/output" in line or "process/exited" in line for line in received)
    assert any("redacted>" in line for line in sent)  # the file content, the env value
    assert any("redacted>" in line for line in received)  # the file read back, the output
    for line in lines:
        assert SECRET not in line
        assert "czNjcjN0" not in line  # the secret's base64 ("s3cr3t" encodes to this)
        preview = line.split(" -> ", 1)[-1].split(" <- ", 1)[-1]
        assert len(preview) <= PREVIEW_CHARS + 3


def test_nothing_is_formatted_when_debug_is_off(
    env: execsdk.Environment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    env.fs.exists("/")
    assert _frames(caplog) == []
