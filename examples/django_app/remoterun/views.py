"""A view that runs an allow-listed command and streams its output to the browser.

SECURITY: whoever can reach an exec-server can run anything as the server's user. This view
accepts only the names in ``ALLOWED_COMMANDS`` and never builds a command line from request
data. Do not turn it into a remote shell, and do not expose it without authentication.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.http import (  # type: ignore[import-untyped]
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)

import execsdk
from remoterun.shared import environment

log = logging.getLogger(__name__)

ALLOWED_COMMANDS: dict[str, list[str]] = {
    "count": ["sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done"],
    "date": ["date", "-u"],
    "disk": ["df", "-h", "/"],
    "uptime": ["uptime"],
}
"""The only commands a request may run, by name."""

RUN_TIMEOUT = 60.0
"""Seconds a command may stream before it is killed."""


def _stream(name: str, argv: list[str]) -> Iterator[bytes]:
    # The process lives inside the generator: when the client goes away Django closes the
    # generator, and the `with` block kills the process.
    with environment().spawn(argv) as proc:
        log.info("running %s as %s", name, proc.id)
        try:
            for chunk in proc.output(timeout=RUN_TIMEOUT):
                yield chunk.data
        except execsdk.TimeoutExpired:
            yield f"\n[killed after {RUN_TIMEOUT:g} s]\n".encode()
            return
        yield f"\n[exit code {proc.wait(timeout=10)}]\n".encode()


def run(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    name = request.GET.get("cmd", "")
    argv = ALLOWED_COMMANDS.get(name)
    if argv is None:
        allowed = ", ".join(sorted(ALLOWED_COMMANDS))
        return HttpResponseBadRequest(
            f"unknown command {name!r}; allowed: {allowed}\n", content_type="text/plain"
        )
    return StreamingHttpResponse(_stream(name, argv), content_type="text/plain")


def index(request: HttpRequest) -> HttpResponse:
    links = "\n".join(f"/run?cmd={name}" for name in sorted(ALLOWED_COMMANDS))
    return HttpResponse(f"commands:\n{links}\n", content_type="text/plain")
