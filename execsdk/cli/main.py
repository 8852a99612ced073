"""The ``execsdk`` command line (``execsdk ...`` or ``python -m execsdk ...``).

Subcommands:

``run [--tty] [--cwd DIR] [-e NAME=VALUE] -- CMD [ARG...]``
    Run a command in the environment. Its stdout and stderr are copied to ours as they arrive
    (flushed chunk by chunk, in server order) and its exit code becomes ours (death by signal N
    is 128+N). The remote stdin is empty. Ctrl-C interrupts the remote process (SIGINT, or a
    kill where the server cannot signal) and exits 130.
``shell``
    An interactive shell under a pseudo-terminal: the local terminal goes to raw mode, keys go
    to the remote shell, its output comes back; the terminal is restored on exit, and the
    shell's exit code becomes ours. Needs a terminal on stdin.
``fs ls|cat|put|get|rm|mkdir|stat``
    Files of the environment. ``put``/``get`` copy files or whole trees (like ``cp -r``: onto an
    existing directory, the source goes inside it) and show a progress bar on a terminal for
    transfers over 2 MiB (on stderr; ``--quiet`` turns it off).
``info``
    The environment (OS, shell, cwd...) and the server (URL, generation, session, capabilities).
``serve``
    Run our own exec-server (PROTOCOL.md G2, as codex 0.169). ``--listen ws://HOST:PORT``
    (default ``ws://127.0.0.1:0``) prints the bound URL as the first line of stdout;
    ``--listen stdio`` serves one session over stdin/stdout and prints nothing else there.
    A non-loopback address needs authentication (``--ws-token-file`` or ``--ws-auth
    signed-bearer-token``); ``--root DIR`` confines every path to DIR (docs/security.md).
    SIGINT/SIGTERM end it cleanly (every process it started is killed, exit status 0).

Connecting: ``--url`` falls back to ``$EXECSDK_URL``, then to the embedded default server (a
``python -m execsdk serve --listen stdio`` child). The token comes from ``--token-file FILE`` or
``$EXECSDK_TOKEN``, never from the command line (where every user could read it).

Errors print one line, ``execsdk: error: ...``, and exit 1 (2 for a usage error); ``-v`` adds
the traceback and INFO logging of the ``execsdk`` logger on stderr, ``-vv`` DEBUG logging.

Each subcommand lives in a module of this package (``run``, ``shell``, ``files``, ``info``,
``serve``) that registers its parser; ``common`` holds what they share. Heavy modules are
imported inside the commands: the embedded server starts through this package.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from execsdk.cli import files, info, run, serve, shell
from execsdk.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    Parser,
    Stopped,
    UsageError,
    common_options,
    opt,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from execsdk._version import __version__

    common = common_options()
    parser = Parser(
        prog="execsdk",
        description="Run processes and move files on an exec-server.",
        epilog="Without --url (or $EXECSDK_URL) commands run on an embedded server, a child "
        "process of this one. Exit status: the remote command's for run and shell, else 0; "
        "1 on an error, 2 on a usage error, 130 after Ctrl-C.",
        parents=[common],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"execsdk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    for add in (run.add_parser, shell.add_parser, files.add_parser, info.add_parser):
        add(sub, common)
    serve.add_parser(sub)
    return parser


class _OneLineFormatter(logging.Formatter):
    """``execsdk: warning: message``: what a command-line user sees without ``-v``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"execsdk: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbosity: int, *, server: bool) -> None:
    """Logging to stderr: WARNING, ``-v`` INFO, ``-vv`` DEBUG.

    ``serve`` configures the root logger (its websockets logger is redacted in
    ``server/ws.py``). The client commands give a handler to the ``execsdk`` logger only and
    leave other libraries at WARNING: their DEBUG output is not ours to vouch for.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if server:
        logging.basicConfig(
            level=level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return
    logger = logging.getLogger("execsdk")
    for old in [h for h in logger.handlers if getattr(h, "execsdk_cli", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.execsdk_cli = True  # type: ignore[attr-defined]
    if verbosity > 0:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLineFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _error_line(message: str) -> None:
    text = " ".join(message.split()) or "unknown error"
    try:
        sys.stderr.write(f"execsdk: error: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _describe(exc: BaseException) -> str:
    from execsdk.errors import ExecSdkError

    text = str(exc)
    if isinstance(exc, (CliError, ExecSdkError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the final flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _error_line(str(exc))
        return EXIT_USAGE
    verbosity = int(opt(args, "verbose", 0) or 0)
    _setup_logging(verbosity, server=args.command == "serve")
    try:
        result: int = args.func(args)
    except UsageError as exc:
        if args.command == "serve":
            print(f"execsdk serve: {exc}", file=sys.stderr)
        else:
            _error_line(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Stopped as exc:
        return 128 + exc.signum
    except Exception as exc:
        from execsdk.errors import ExecSdkError

        if isinstance(exc, BrokenPipeError) and not isinstance(exc, ExecSdkError):
            # Our stdout was closed early (`execsdk fs cat big | head`): not an error.
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if verbosity > 0:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        _error_line(_describe(exc))
        return EXIT_ERROR
    return result
