"""``execsdk run``: a command in the environment, its output copied to ours as it arrives."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execsdk.process import Process

from execsdk.cli.common import (
    EXIT_INTERRUPTED,
    Parser,
    UsageError,
    exit_status,
    open_environment,
    stop_on_signals,
)

__all__ = ["add_parser"]

log = logging.getLogger("execsdk.cli")

INTERRUPT_GRACE = 3.0
"""Seconds ``run`` keeps copying output after Ctrl-C before it kills the remote process."""


# --------------------------------------------------------------------------- run


def _copy_output(proc: Process, *, timeout: float | None = None) -> None:
    """Copy output chunks to our stdout/stderr as they arrive (pty output goes to stdout)."""
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    for chunk in proc.output(timeout=timeout):
        stream = err if chunk.stream == "stderr" else out
        stream.write(chunk.data)
        stream.flush()


def _parse_env(items: Sequence[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {item.split('=', 1)[0]!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _cmd_run(args: argparse.Namespace) -> int:
    from execsdk.errors import ExecSdkError, TimeoutExpired, UnsupportedByServer

    argv = list(args.cmd)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError("run needs a command: execsdk run [OPTIONS] -- CMD [ARG...]")
    extra_env = _parse_env(args.env)
    stop_on_signals()
    with open_environment(args) as env:
        proc = env.spawn(argv, cwd=args.cwd, env=extra_env, tty=args.tty)
        with proc:  # leaving early (error, signal, broken pipe) kills the remote process
            try:
                _copy_output(proc)
            except KeyboardInterrupt:
                log.info("interrupted: sending SIGINT to %s", proc.id)
                try:
                    try:
                        proc.interrupt()
                    except UnsupportedByServer:
                        proc.terminate()
                    _copy_output(proc, timeout=INTERRUPT_GRACE)
                except (KeyboardInterrupt, TimeoutExpired):
                    pass  # `with proc` kills it
                except ExecSdkError as exc:
                    log.debug("stopping %s after Ctrl-C failed: %r", proc.id, exc)
                return EXIT_INTERRUPTED
            return exit_status(proc.wait())


def add_parser(sub: Any, common: Parser) -> None:
    """Register ``run``."""
    run = sub.add_parser(
        "run",
        help="run a command, streaming its output",
        description="Run CMD in the environment. Its stdout and stderr are copied to ours as "
        "they arrive, and its exit code becomes ours. Its stdin is empty. Ctrl-C interrupts "
        "it (exit status 130).",
        parents=[common],
        allow_abbrev=False,
    )
    run.add_argument("--tty", action="store_true", help="run under a pseudo-terminal (24x80)")
    run.add_argument("--cwd", metavar="DIR", default=None, help="working directory")
    run.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="NAME=VALUE",
        help="set an environment variable (repeatable)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    run.set_defaults(func=_cmd_run)
