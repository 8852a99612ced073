"""The real codex CLI (0.169) as a client of our server: ``codex exec`` with a scripted model.

``codex exec`` runs every tool call on the exec-server named by ``CODEX_EXEC_SERVER_URL``. The
model is a small local HTTP server speaking the OpenAI Responses API (SSE), configured as a
custom model provider; it asks codex to run a shell command, then to apply a patch, then
finishes. codex exits 0 even when its executor fails, so the test checks the effects on disk
and what codex reported back to the model (the tool outputs in the next request's ``input``).

The same script runs against codex's own exec-server, which proves the test itself, and
against ours with and without ``--root``. A marker variable planted only in the exec-server's
environment shows that the command really ran there, not inside the codex process.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.servers import CODEX_G2, ServerHandle, require_binary, start_codex, start_ours

pytestmark = pytest.mark.timeout(240)

CODEX_RUN_TIMEOUT = 120.0
MODEL = "gpt-5.5"  # a built-in model name, so that codex offers its apply_patch tool
PROVIDER = "scripted"


# --------------------------------------------------------------------------- scripted model


def _sse(events: list[dict[str, Any]]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


class ScriptedModel:
    """A Responses API endpoint that answers turn ``n`` with ``script[n]`` (output items).

    Every request body is recorded. Runs on 127.0.0.1 in a daemon thread.
    Thread-safety: ``requests`` is guarded by a lock; read it after codex has exited.
    """

    def __init__(self, script: list[list[dict[str, Any]]]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with model._lock:
                    model.unexpected.append(f"GET {self.path}")
                self._send(404, b'{"error": "not here"}', "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/responses"):
                    with model._lock:
                        model.unexpected.append(f"POST {self.path}")
                    self._send(404, b'{"error": "not here"}', "application/json")
                    return
                with model._lock:
                    turn = len(model.requests)
                    model.requests.append(body)
                self._send(200, model.turn(turn), "text/event-stream")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scripted-model", daemon=True
        )

    def turn(self, n: int) -> bytes:
        response_id = f"resp_{n}"
        items = self.script[n] if n < len(self.script) else [_message("(script ended)")]
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {"id": response_id}}
        ]
        events += [{"type": "response.output_item.done", "item": item} for item in items]
        events.append(
            {
                "type": "response.completed",
                "response": {
                    "id": response_id,
                    "usage": {
                        "input_tokens": 0,
                        "input_tokens_details": None,
                        "output_tokens": 0,
                        "output_tokens_details": None,
                        "total_tokens": 0,
                    },
                },
            }
        )
        return _sse(events)

    def __enter__(self) -> ScriptedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def tool_output(self, call_type: str, call_id: str) -> str:
        """The ``output`` codex sent back for ``call_id`` (searched in every request)."""
        for body in self.requests:
            for item in body.get("input", []):
                if item.get("type") == call_type and item.get("call_id") == call_id:
                    output = item.get("output")
                    return output if isinstance(output, str) else json.dumps(output)
        raise AssertionError(f"codex never reported {call_type} for {call_id}")


def _message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "id": f"msg_{secrets.token_hex(4)}",
        "content": [{"type": "output_text", "text": text}],
    }


PATCH = """*** Begin Patch
*** Add File: patched.txt
+line one
+line two
*** Update File: edit_me.txt
@@
-old line
+new line
*** End Patch
"""


def _script(marker_var: str) -> list[list[dict[str, Any]]]:
    command = (
        "printf 'shell-%s\\n' $((6*7)); pwd; "
        f'echo "marker=${marker_var}"; echo from-shell > shell.txt'
    )
    return [
        [
            {
                "type": "function_call",
                "call_id": "call_shell",
                "name": "exec_command",
                "arguments": json.dumps({"cmd": command}),
            }
        ],
        [
            {
                "type": "custom_tool_call",
                "call_id": "call_patch",
                "name": "apply_patch",
                "input": PATCH,
            }
        ],
        [_message("all done")],
    ]


# --------------------------------------------------------------------------- running codex


def _write_config(codex_home: Path, port: int) -> None:
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        f'model_provider = "{PROVIDER}"\n'
        "check_for_update_on_startup = false\n"
        "[analytics]\n"
        "enabled = false\n"
        f"[model_providers.{PROVIDER}]\n"
        'name = "scripted test model"\n'
        f'base_url = "http://127.0.0.1:{port}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "OPENAI_API_KEY"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


def _run_codex(
    workspace: Path, codex_home: Path, exec_server_url: str
) -> subprocess.CompletedProcess[str]:
    binary = require_binary(CODEX_G2)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(codex_home.parent / "home"),
        "LANG": "C.UTF-8",
        "CODEX_HOME": str(codex_home),
        "CODEX_EXEC_SERVER_URL": exec_server_url,
        "OPENAI_API_KEY": "dummy",
        # Nothing but the local model and exec-server: everything else goes to a dead proxy.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    Path(env["HOME"]).mkdir(exist_ok=True)
    argv = [
        str(binary),
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "--color",
        "never",
        "-C",
        str(workspace),
        "Run the shell command, then apply the patch.",
    ]
    popen = subprocess.Popen(
        argv,
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = popen.communicate(timeout=CODEX_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        stdout, stderr = popen.communicate(timeout=10)
        raise AssertionError(f"codex exec did not finish in {CODEX_RUN_TIMEOUT}s:\n{stderr}")
    finally:
        # The npm wrapper starts a native child: end the whole group, whatever happened.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
    return subprocess.CompletedProcess(argv, popen.returncode, stdout, stderr)


@contextlib.contextmanager
def _exec_server(kind: str, workspace: Path, marker: str) -> Iterator[ServerHandle]:
    env = {**os.environ, "EXECSDK_EXECUTOR_MARK": marker}
    if kind == "codex":
        require_binary(CODEX_G2)
        handle = start_codex(CODEX_G2, env=env)
    elif kind == "ours":
        handle = start_ours(extra_args=["-v"], env=env)
    else:
        handle = start_ours(extra_args=["-v", "--root", str(workspace)], env=env)
    with handle:
        yield handle


@pytest.mark.parametrize("kind", ["codex", "ours", "ours-root"])
def test_codex_exec_runs_shell_and_apply_patch_on_the_exec_server(
    tmp_path: Path, kind: str
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "edit_me.txt").write_text("keep\nold line\n")
    marker = "mark-" + secrets.token_hex(8)
    with (
        ScriptedModel(_script("EXECSDK_EXECUTOR_MARK")) as model,
        _exec_server(kind, workspace, marker) as server,
    ):
        _write_config(tmp_path / "codex-home", model.port)
        started = time.monotonic()
        proc = _run_codex(workspace, tmp_path / "codex-home", server.url)
        elapsed = time.monotonic() - started
        server_log = server.stderr_text()
    print(f"codex exec against {kind}: {elapsed:.2f}s")
    context = f"codex stderr:\n{proc.stderr[-4000:]}\nserver stderr:\n{server_log[-2000:]}"
    assert proc.returncode == 0, context
    assert not model.unexpected, model.unexpected
    assert len(model.requests) == 3, context

    shell = model.tool_output("function_call_output", "call_shell")
    assert "shell-42" in shell, shell
    assert f"marker={marker}" in shell, shell  # ran on the exec-server, with its environment
    assert str(workspace) in shell and "exited with code 0" in shell, shell
    assert (workspace / "shell.txt").read_text() == "from-shell\n"

    patch = model.tool_output("custom_tool_call_output", "call_patch")
    assert "Success" in patch and "patched.txt" in patch and "edit_me.txt" in patch, patch
    assert (workspace / "patched.txt").read_text() == "line one\nline two\n"
    assert (workspace / "edit_me.txt").read_text() == "keep\nnew line\n"
    assert "all done" in proc.stdout
    if kind != "codex":
        assert "initialize from 'codex-environment'" in server_log
