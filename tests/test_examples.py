"""Every example under examples/ runs for real, against a real server.

Each example runs twice: against codex 0.169.0 over a real socket (``EXECSDK_URL`` set), and
with no ``EXECSDK_URL`` at all, i.e. against the embedded default server (``python -m execsdk
serve --listen stdio`` as a child process); checks that do not depend on the server (a failing
remote test run, manage.py as a script) run once. Scripts run in a subprocess, exactly as a
user runs them; the Flask and Django apps run in-process through their test clients; the REPL
walkthrough (examples/repl.md) is replayed as a doctest.
"""

from __future__ import annotations

import doctest
import importlib.util
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ServerPool

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DJANGO_PROJECT = EXAMPLES / "django_app"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["codex-0.169.0", "embedded"])
def server_url(request: pytest.FixtureRequest, server_pool: ServerPool) -> str | None:
    """The URL the examples use, or None for the embedded default server."""
    if request.param == "embedded":
        return None
    return server_pool.get(str(request.param)).url


@pytest.fixture
def codex_url(server_pool: ServerPool) -> str:
    """For checks that do not depend on the server: codex 0.169.0 only, to keep the suite fast."""
    return server_pool.get("codex-0.169.0").url


@pytest.fixture
def url_in_environ(server_url: str | None, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Point in-process examples at the server through $EXECSDK_URL (unset: embedded)."""
    if server_url is None:
        monkeypatch.delenv("EXECSDK_URL", raising=False)
    else:
        monkeypatch.setenv("EXECSDK_URL", server_url)
    return server_url


def run_example(
    argv: list[str], server_url: str | None, cwd: Path, timeout: float = 45
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("EXECSDK_URL", None)
    if server_url is not None:
        env["EXECSDK_URL"] = server_url
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# ---------------------------------------------------------------------------------- scripts


def test_script_streams_output_and_round_trips_a_file(
    server_url: str | None, tmp_path: Path
) -> None:
    result = run_example([str(EXAMPLES / "script.py")], server_url, tmp_path)
    assert result.returncode == 0, describe(result)
    out = result.stdout
    assert "[stdout] line 1" in out and "[stdout] line 3" in out, describe(result)
    assert "[stderr] warn" in out, describe(result)
    assert "exit code: 0" in out, describe(result)
    assert "round trip: ok (262149 bytes)" in out, describe(result)


def test_quickstart_runs(server_url: str | None, tmp_path: Path) -> None:
    result = run_example([str(EXAMPLES / "quickstart.py")], server_url, tmp_path)
    assert result.returncode == 0, describe(result)
    assert "line 3" in result.stdout and "exit code 0" in result.stdout, describe(result)
    assert "hello from execsdk" in result.stdout, describe(result)


def test_upload_and_test_passes_remotely(server_url: str | None, tmp_path: Path) -> None:
    result = run_example([str(EXAMPLES / "upload_and_test.py")], server_url, tmp_path)
    assert result.returncode == 0, describe(result)
    assert "Ran 2 tests" in result.stdout, describe(result)
    assert "remote tests exited with 0" in result.stdout, describe(result)


def test_upload_and_test_reports_a_remote_failure(codex_url: str, tmp_path: Path) -> None:
    result = run_example([str(EXAMPLES / "upload_and_test.py"), "--broken"], codex_url, tmp_path)
    assert result.returncode == 1, describe(result)
    assert "FAILED (failures=1)" in result.stdout, describe(result)
    assert "test_deliberately_wrong" in result.stdout, describe(result)


# ---------------------------------------------------------------------------------- Flask


@pytest.fixture(scope="module")
def flask_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLES / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def flask_client(flask_example: ModuleType, url_in_environ: str | None) -> Iterator[Any]:
    try:
        yield flask_example.app.test_client()
    finally:
        flask_example.close_environment()


def test_flask_streams_command_output(flask_example: ModuleType, flask_client: Any) -> None:
    response = flask_client.get("/run?cmd=count", buffered=False)
    try:
        assert response.status_code == 200
        assert response.is_streamed
        chunks = iter(response.response)
        first = next(chunks)
        # The first piece arrives while the command still runs (one tick per 0.2 s).
        assert first.startswith(b"tick 1\n") and b"tick 5" not in first
        body = first + b"".join(chunks)
    finally:
        response.close()
    assert body.decode().splitlines() == [
        *(f"tick {i}" for i in range(1, 6)),
        "",
        "[exit code 0]",
    ]
    # Later requests reuse the app's one environment.
    shared = flask_example.environment()
    assert flask_client.get("/run?cmd=date").status_code == 200
    assert flask_example.environment() is shared


def test_flask_refuses_commands_outside_the_allow_list(flask_client: Any) -> None:
    response = flask_client.get("/run?cmd=rm")
    assert response.status_code == 400
    assert "allowed: count, date, disk, uptime" in response.get_data(as_text=True)


# ---------------------------------------------------------------------------------- Django


@pytest.fixture
def django_project(
    url_in_environ: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(DJANGO_PROJECT))
    from remoterun import project, shared

    project.setup()
    try:
        yield shared
    finally:
        shared.close_environment()


def test_django_view_streams_command_output(django_project: ModuleType) -> None:
    from django.test import Client

    response = Client().get("/run?cmd=count")
    try:
        assert response.status_code == 200
        assert response.streaming
        chunks = iter(response.streaming_content)
        first = next(chunks)
        assert first.startswith(b"tick 1\n") and b"tick 5" not in first
        body = first + b"".join(chunks)
    finally:
        response.close()
    assert b"tick 5\n" in body
    assert body.endswith(b"[exit code 0]\n")


def test_django_view_refuses_commands_outside_the_allow_list(django_project: ModuleType) -> None:
    from django.test import Client

    response = Client().get("/run?cmd=rm")
    assert response.status_code == 400
    assert b"allowed: count, date, disk, uptime" in response.content


def test_django_runremote_prints_both_streams(django_project: ModuleType) -> None:
    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command("runremote", "sh", "-c", "echo to-out; echo to-err >&2", stdout=out, stderr=err)
    assert out.getvalue() == "to-out\n"
    assert err.getvalue() == "to-err\n"


def test_django_runremote_fails_with_the_exit_code(django_project: ModuleType) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as info:
        call_command("runremote", "--", "sh", "-c", "exit 3", stdout=io.StringIO())
    assert info.value.returncode == 3


def test_django_manage_py_runremote_runs_as_a_script(codex_url: str, tmp_path: Path) -> None:
    result = run_example(
        [str(DJANGO_PROJECT / "manage.py"), "runremote", "--", "echo", "from manage.py"],
        codex_url,
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    assert result.stdout == "from manage.py\n", describe(result)


# ---------------------------------------------------------------------------------- REPL


def test_repl_walkthrough_replays(url_in_environ: str | None) -> None:
    text = (EXAMPLES / "repl.md").read_text(encoding="utf-8")
    globs: dict[str, Any] = {}
    test = doctest.DocTestParser().get_doctest(text, globs, "repl.md", str(EXAMPLES), 0)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    try:
        result = runner.run(test, out=report.write)
    finally:
        env = globs.get("env")
        if env is not None:
            env.close()
    assert result.attempted >= 30
    assert result.failed == 0, report.getvalue()
