"""``execsdk shell``: the environment's shell under a pseudo-terminal, wired to this terminal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execsdk.remote.remoteenv import RemoteEnvironment

from execsdk.cli.common import (
    CliError,
    Parser,
    exit_status,
    open_environment,
    stop_on_signals,
    write_all,
)

__all__ = ["add_parser"]

log = logging.getLogger("execsdk.cli")


def _shell_argv(env: RemoteEnvironment, rows: int, cols: int) -> list[str]:
    """The environment's shell; on POSIX first told the local window size (the protocol starts
    every pty at 24x80 and has no resize)."""
    shell = env.info.shell or "/bin/sh"
    if env.info.os.lower().startswith("win") or rows <= 0 or cols <= 0:
        return [shell]
    script = 'stty rows "$1" cols "$2" 2>/dev/null; exec "$0"'
    return ["/bin/sh", "-c", script, shell, str(rows), str(cols)]


def _cmd_shell(args: argparse.Namespace) -> int:
    import select
    import termios
    import tty

    from execsdk.errors import ProcessNotFound, StdinClosed

    stdin_fd = sys.stdin.fileno()
    if not os.isatty(stdin_fd):
        raise CliError(
            "shell needs a terminal on stdin; to run a command from a script use "
            "'execsdk run -- CMD'"
        )
    try:
        size = os.get_terminal_size(stdin_fd)
        rows, cols = size.lines, size.columns
    except OSError:
        rows = cols = 0
    stop_on_signals()
    with open_environment(args) as env:
        term = os.environ.get("TERM") or "xterm-256color"
        proc = env.spawn(_shell_argv(env, rows, cols), tty=True, env={"TERM": term})
        with proc:
            done = threading.Event()
            failure: list[BaseException] = []
            out_fd = sys.stdout.fileno()

            def pump() -> None:
                try:
                    for chunk in proc.output():
                        write_all(out_fd, chunk.data)
                except BaseException as exc:
                    failure.append(exc)
                finally:
                    done.set()

            saved = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd, termios.TCSADRAIN)
            pumper = threading.Thread(target=pump, name="execsdk-cli-shell-output", daemon=True)
            try:
                pumper.start()
                while not done.is_set():
                    ready, _, _ = select.select([stdin_fd], [], [], 0.1)
                    if not ready:
                        continue
                    data = os.read(stdin_fd, 4096)
                    if not data:
                        break  # our stdin ended: let the shell finish on its own
                    try:
                        proc.write(data)
                    except (StdinClosed, ProcessNotFound):
                        break  # the shell is exiting
                done.wait()
            finally:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
            if failure:
                raise failure[0]
            return exit_status(proc.wait())


def add_parser(sub: Any, common: Parser) -> None:
    """Register ``shell``."""
    shell = sub.add_parser(
        "shell",
        help="an interactive shell (needs a terminal)",
        description="Start the environment's shell under a pseudo-terminal and connect this "
        "terminal to it (raw mode; restored on exit). Exits with the shell's exit code.",
        parents=[common],
        allow_abbrev=False,
    )
    shell.set_defaults(func=_cmd_shell)
