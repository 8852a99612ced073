"""A Flask app that runs an allow-listed command per request and streams its output.

    pip install flask
    python examples/flask_app.py          # then: curl -N 'http://127.0.0.1:5000/run?cmd=count'

The whole app shares ONE environment (one connection to the exec-server): it is created on the
first request, under a lock so that concurrent first requests do not race, and closed when the
interpreter exits. The environment is thread-safe, so every request thread uses it at once.

The server comes from ``$EXECSDK_URL``, else the embedded default server starts.

SECURITY: whoever can reach an exec-server can run anything as the server's user. This app
therefore accepts only the names in ``ALLOWED_COMMANDS`` and never builds a command line from
request data. Do not turn it into a remote shell, and do not expose it beyond your own machine
without authentication in front of it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator

from flask import Flask, Response, request, stream_with_context

import execsdk

ALLOWED_COMMANDS: dict[str, list[str]] = {
    "count": ["sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done"],
    "date": ["date", "-u"],
    "disk": ["df", "-h", "/"],
    "uptime": ["uptime"],
}
"""The only commands a request may run, by name."""

RUN_TIMEOUT = 60.0
"""Seconds a command may stream before it is killed."""

app = Flask(__name__)

_env_lock = threading.Lock()
_env: execsdk.RemoteEnvironment | None = None


def environment() -> execsdk.RemoteEnvironment:
    """The app's shared environment, connected on first use (and again if the link died)."""
    global _env
    with _env_lock:
        if _env is not None and not _env.client.is_open:
            _env.close()
            _env = None
        if _env is None:
            _env = execsdk.connect()
        return _env


@atexit.register
def close_environment() -> None:
    """Close the shared environment; runs at interpreter exit, and is safe to call twice."""
    global _env
    with _env_lock:
        env, _env = _env, None
    if env is not None:
        env.close()


@app.get("/run")
def run() -> Response:
    name = request.args.get("cmd", "")
    argv = ALLOWED_COMMANDS.get(name)
    if argv is None:
        allowed = ", ".join(sorted(ALLOWED_COMMANDS))
        return Response(
            f"unknown command {name!r}; allowed: {allowed}\n", 400, mimetype="text/plain"
        )
    env = environment()
    client = request.remote_addr

    def generate() -> Iterator[bytes]:
        # The process lives inside the generator: if the browser goes away, Flask closes the
        # generator and the `with` block kills the process.
        with env.spawn(argv) as proc:
            app.logger.info("%s runs %s as %s", client, name, proc.id)
            try:
                for chunk in proc.output(timeout=RUN_TIMEOUT):
                    yield chunk.data
            except execsdk.TimeoutExpired:
                yield f"\n[killed after {RUN_TIMEOUT:g} s]\n".encode()
                return
            yield f"\n[exit code {proc.wait(timeout=10)}]\n".encode()

    # stream_with_context keeps the request context alive while the body streams.
    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/")
def index() -> Response:
    links = "\n".join(f"/run?cmd={name}" for name in sorted(ALLOWED_COMMANDS))
    return Response(f"commands:\n{links}\n", mimetype="text/plain")


if __name__ == "__main__":
    # Loopback only, threaded: every request thread shares the one environment.
    app.run(host="127.0.0.1", port=5000, threaded=True)
