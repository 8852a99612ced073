"""The ``execsdk`` command line (``python -m execsdk ...``).

Subcommands:

``serve``
    Run our own exec-server (PROTOCOL.md G2, as codex 0.169). ``--listen ws://HOST:PORT``
    (default ``ws://127.0.0.1:0``) prints the bound URL as the first line of stdout;
    ``--listen stdio`` serves one session over stdin/stdout and prints nothing else there.
    A non-loopback address needs ``--ws-token-file``. SIGINT/SIGTERM end it cleanly (every
    process it started is killed, exit status 0).

Each subcommand lives in one ``_cmd_*`` function registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from types import FrameType

__all__ = ["build_parser", "main"]

log = logging.getLogger("execsdk.cli")

EXIT_USAGE = 2


class _UsageError(Exception):
    """A bad combination of options: one line on stderr, exit status 2."""


# --------------------------------------------------------------------------- serve


def _parse_listen(value: str) -> tuple[str, str, int]:
    """``("stdio", "", 0)`` or ``("ws", host, port)`` from a ``--listen`` value."""
    if value in ("stdio", "stdio://", "stdio:"):
        return "stdio", "", 0
    split = urllib.parse.urlsplit(value)
    if split.scheme != "ws" or not split.hostname:
        raise _UsageError(
            f"--listen {value!r}: expected ws://HOST:PORT (for example ws://127.0.0.1:0) or stdio"
        )
    if split.path not in ("", "/") or split.query or split.fragment:
        raise _UsageError(f"--listen {value!r}: a path, query or fragment is not supported")
    try:
        port = split.port if split.port is not None else 0
    except ValueError as exc:
        raise _UsageError(f"--listen {value!r}: {exc}") from None
    return "ws", split.hostname, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_token(path: str) -> str:
    if not os.path.isabs(path):
        raise _UsageError(f"--ws-token-file {path!r} must be an absolute path")
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise _UsageError(f"--ws-token-file {path!r}: {exc.strerror or exc}") from None
    if not token.strip():
        raise _UsageError(f"--ws-token-file {path!r} is empty")
    return token


class _Stop:
    """SIGINT/SIGTERM set an event the main thread waits on. Thread-safety: any thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


def _cmd_serve(args: argparse.Namespace) -> int:
    kind, host, port = _parse_listen(args.listen)
    token: str | None = None
    if args.ws_auth not in (None, "capability-token"):
        raise _UsageError(f"--ws-auth {args.ws_auth!r} is not supported (use capability-token)")
    if args.ws_auth == "capability-token" and args.ws_token_file is None:
        raise _UsageError("--ws-auth capability-token needs --ws-token-file FILE")
    if args.ws_token_file is not None:
        if kind == "stdio":
            raise _UsageError("--ws-token-file applies to ws:// listeners only")
        token = _read_token(args.ws_token_file)
    if args.session_grace < 0:
        raise _UsageError("--session-grace must be >= 0")
    stop = _Stop()
    if kind == "stdio":
        return _serve_stdio(args, stop)
    if token is None and not _is_loopback(host):
        raise _UsageError(
            f"refusing to listen on {host} without authentication: anyone who reaches it could "
            "run commands; pass --ws-token-file FILE or listen on 127.0.0.1"
        )
    from execsdk.server.ws import WsServer

    stop.install()
    try:
        server = WsServer(host, port, token=token, session_grace=args.session_grace)
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
    from execsdk.server.stdio import serve_stdio

    # stdout carries protocol messages only: nothing else may ever be printed there.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.event.is_set():
            return  # already ending: never interrupt the cleanup that kills the children
        stop(signum, frame)
        raise _Terminated(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        serve_stdio(stop=stop.event, session_grace=args.session_grace)
    except _Terminated:
        log.info("stopped by signal %s", stop.signum)
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="execsdk", description="Run processes and move files on an exec-server."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run an exec-server (G2 protocol, as codex 0.169)",
        description="Run execsdk's own exec-server. Prints the bound ws:// URL as the first "
        "line of stdout (nothing for --listen stdio).",
    )
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        metavar="URL",
        help="ws://HOST:PORT (port 0 picks a free one; default ws://127.0.0.1:0) or stdio",
    )
    serve.add_argument(
        "--ws-auth",
        choices=["capability-token"],
        default=None,
        help="require a bearer token on the WebSocket upgrade (needs --ws-token-file)",
    )
    serve.add_argument(
        "--ws-token-file",
        metavar="FILE",
        default=None,
        help="absolute path of a file holding the token (a trailing newline is ignored); "
        "implies --ws-auth capability-token",
    )
    serve.add_argument(
        "--session-grace",
        type=float,
        default=80.0,
        metavar="SECONDS",
        help="how long a disconnected session waits for a resume before its processes are "
        "killed (default 80, as codex)",
    )
    serve.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more to stderr (-vv: debug)"
    )
    serve.set_defaults(func=_cmd_serve)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0))
    try:
        result: int = args.func(args)
    except _UsageError as exc:
        print(f"execsdk {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result
