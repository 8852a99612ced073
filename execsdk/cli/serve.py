"""``execsdk serve``: our exec-server on a WebSocket port or on stdio, until a signal."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import urllib.parse
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execsdk.server.auth import Authenticator

from execsdk.cli.common import UsageError

__all__ = ["add_parser"]

log = logging.getLogger("execsdk.cli")


def _parse_listen(value: str) -> tuple[str, str, int]:
    """``("stdio", "", 0)`` or ``("ws", host, port)`` from a ``--listen`` value."""
    if value in ("stdio", "stdio://", "stdio:"):
        return "stdio", "", 0
    split = urllib.parse.urlsplit(value)
    if split.scheme != "ws" or not split.hostname:
        raise UsageError(
            f"--listen {value!r}: expected ws://HOST:PORT (for example ws://127.0.0.1:0) or stdio"
        )
    if split.path not in ("", "/") or split.query or split.fragment:
        raise UsageError(f"--listen {value!r}: a path, query or fragment is not supported")
    try:
        port = split.port if split.port is not None else 0
    except ValueError as exc:
        raise UsageError(f"--listen {value!r}: {exc}") from None
    return "ws", split.hostname, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve_auth(args: argparse.Namespace) -> Authenticator | None:
    from execsdk.server.auth import authenticator_from_options

    try:
        return authenticator_from_options(
            mode=args.ws_auth,
            token_file=args.ws_token_file,
            token_sha256=args.ws_token_sha256,
            shared_secret_file=args.ws_shared_secret_file,
            issuer=args.ws_issuer,
            audience=args.ws_audience,
            max_clock_skew=args.ws_max_clock_skew_seconds,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _stop_signals() -> list[signal.Signals]:
    """SIGINT, SIGTERM, and SIGHUP unless it is ignored (``nohup``): they end serving cleanly."""
    sigs = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        sigs.append(signal.SIGHUP)
    return sigs


def _guard_children() -> None:
    """Start the guardian that kills our children if we die without cleaning up (SIGKILL)."""
    from execsdk._local.processes import guard_children

    try:
        pid = guard_children()
    except OSError as exc:
        log.warning("no child guardian (children may outlive a killed server): %s", exc)
        return
    log.debug("child guardian pid %d", pid)


class _Stop:
    """SIGINT/SIGTERM/SIGHUP set an event the main thread waits on. Thread-safety: any thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def install(self) -> None:
        for sig in _stop_signals():
            signal.signal(sig, self)


def _cmd_serve(args: argparse.Namespace) -> int:
    kind, host, port = _parse_listen(args.listen)
    auth = _serve_auth(args)
    if auth is not None and kind == "stdio":
        raise UsageError("--ws-auth and the --ws-* options apply to ws:// listeners only")
    if args.root is not None and not os.path.isdir(args.root):
        raise UsageError(f"--root {args.root!r} is not an existing directory")
    if args.session_grace < 0:
        raise UsageError("--session-grace must be >= 0")
    for option, value in (
        ("--ws-ping-interval", args.ws_ping_interval),
        ("--ws-ping-timeout", args.ws_ping_timeout),
    ):
        if value is not None and not value > 0:
            raise UsageError(f"{option} must be > 0")
    from execsdk.server.malloc import tune_allocator

    tune_allocator()  # megabyte-sized requests reuse heap pages instead of faulting in new ones
    stop = _Stop()
    _guard_children()
    if kind == "stdio":
        return _serve_stdio(args, stop)
    if auth is None and not _is_loopback(host):
        raise UsageError(
            f"refusing to listen on {host} without authentication: anyone who reaches it could "
            "run commands; pass --ws-token-file FILE (or --ws-auth signed-bearer-token) or "
            "listen on 127.0.0.1"
        )
    from execsdk.server.ws import WsServer

    stop.install()
    try:
        server = WsServer(
            host,
            port,
            auth=auth,
            root=args.root,
            session_grace=args.session_grace,
            ping_interval=args.ws_ping_interval,
            ping_timeout=args.ws_ping_timeout,
        )
    except OSError as exc:
        print(
            f"execsdk serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    server.start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        while not stop.event.wait(0.5):
            pass
    finally:
        log.info("stopping (signal %s)", stop.signum)
        server.shutdown()
    return 0


class _Terminated(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM to interrupt a blocked stdin read."""


def _serve_stdio(args: argparse.Namespace, stop: _Stop) -> int:
    from execsdk.server.serve_stdio import serve_stdio

    # stdout carries protocol messages only: nothing else may ever be printed there.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.event.is_set():
            return  # already ending: never interrupt the cleanup that kills the children
        stop(signum, frame)
        raise _Terminated(signum)

    for sig in _stop_signals():
        signal.signal(sig, on_signal)
    try:
        serve_stdio(stop=stop.event, session_grace=args.session_grace, root=args.root)
    except _Terminated:
        log.info("stopped by signal %s", stop.signum)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``serve``."""
    serve = sub.add_parser(
        "serve",
        help="run an exec-server (G2 protocol, as codex 0.169)",
        description="Run execsdk's own exec-server. Prints the bound ws:// URL as the first "
        "line of stdout (nothing for --listen stdio).",
        allow_abbrev=False,
    )
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        metavar="URL",
        help="ws://HOST:PORT (port 0 picks a free one; default ws://127.0.0.1:0) or stdio",
    )
    serve.add_argument(
        "--ws-auth",
        choices=["capability-token", "signed-bearer-token"],
        default=None,
        help="require `Authorization: Bearer ...` on the WebSocket upgrade: a shared token "
        "(--ws-token-file/--ws-token-sha256) or an HS256 JWT (--ws-shared-secret-file)",
    )
    serve.add_argument(
        "--ws-token-file",
        metavar="FILE",
        default=None,
        help="absolute path of a file holding the token (surrounding whitespace is ignored); "
        "implies --ws-auth capability-token",
    )
    serve.add_argument(
        "--ws-token-sha256", metavar="HEX", default=None, help="SHA-256 (hex) of the token"
    )
    serve.add_argument(
        "--ws-shared-secret-file",
        metavar="FILE",
        default=None,
        help="absolute path of the JWT signing secret (at least 32 bytes)",
    )
    serve.add_argument("--ws-issuer", metavar="ISSUER", default=None, help="required JWT `iss`")
    serve.add_argument("--ws-audience", metavar="AUDIENCE", default=None, help="required JWT `aud`")
    serve.add_argument(
        "--ws-max-clock-skew-seconds",
        type=int,
        metavar="SECONDS",
        default=None,
        help="leeway for JWT `exp`/`nbf` (default 30)",
    )
    serve.add_argument(
        "--root",
        metavar="DIR",
        default=None,
        help="confine every file path and process cwd to DIR (refused with -32600 outside "
        "it); processes start there by default. Not a sandbox: see docs/security.md",
    )
    serve.add_argument(
        "--session-grace",
        type=float,
        default=80.0,
        metavar="SECONDS",
        help="how long a disconnected session waits for a resume before its processes are "
        "killed (default 80, as codex)",
    )
    # Keepalive timing (seconds; default 30 and 60, as codex): for tests and benchmarks.
    serve.add_argument(
        "--ws-ping-interval", type=float, default=None, metavar="SECONDS", help=argparse.SUPPRESS
    )
    serve.add_argument(
        "--ws-ping-timeout", type=float, default=None, metavar="SECONDS", help=argparse.SUPPRESS
    )
    serve.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more to stderr (-vv: debug)",
    )
    serve.set_defaults(func=_cmd_serve)
