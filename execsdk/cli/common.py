"""What every ``execsdk`` subcommand shares: exit codes, errors, options, connecting, signals."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from execsdk.remote.remoteenv import RemoteEnvironment

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CliError",
    "Parser",
    "Stopped",
    "UsageError",
    "common_options",
    "exit_status",
    "open_environment",
    "opt",
    "positive",
    "read_token_file",
    "stop_on_signals",
    "write_all",
]

log = logging.getLogger("execsdk.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`


class UsageError(Exception):
    """A bad combination of options: one line on stderr, exit status 2."""


class CliError(Exception):
    """A failure explained in one line: ``execsdk: error: <message>``, exit status 1."""


class Stopped(BaseException):
    """SIGTERM/SIGHUP arrived during ``run``/``shell``: stop the remote process and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------- parser


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (``execsdk: error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments") and "--token" in message:
            # Never echo what followed --token: it is most likely the secret itself.
            raise UsageError(
                "--token is not accepted: a token on the command line is visible to every "
                "user of this machine; use --token-file FILE or $EXECSDK_TOKEN"
            )
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def common_options() -> Parser:
    """Options every client command takes, before or after the subcommand name.

    Defaults are suppressed so a value given before the subcommand is not overwritten by the
    subcommand's default; :func:`opt` supplies the defaults.
    """
    common = Parser(add_help=False, allow_abbrev=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="server URL, ws://HOST:PORT (default: $EXECSDK_URL, else an embedded server)",
    )
    group.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="file holding the server's token (default: $EXECSDK_TOKEN); "
        "never pass a token on the command line",
    )
    group.add_argument(
        "--timeout",
        type=positive,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="limit of each call to the server (default 30; a running process has no limit)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="tracebacks and INFO logging on stderr (-vv: DEBUG)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar",
    )
    return common


def opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    """An option that may be given before or after the subcommand (absent: ``default``)."""
    return getattr(args, name, default)


def read_token_file(path: str) -> str:
    """The token in ``path`` (one trailing newline ignored). Never logged, never echoed."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise CliError(f"--token-file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"--token-file {path!r}: not UTF-8 text") from None
    if not token.strip():
        raise CliError(f"--token-file {path!r} is empty")
    return token


def open_environment(args: argparse.Namespace) -> RemoteEnvironment:
    """Connect as the options say: ``--url``/``$EXECSDK_URL``/embedded, token from a file."""
    from execsdk.remote.connector import connect

    token_file = opt(args, "token_file")
    token = read_token_file(token_file) if token_file is not None else None
    timeout = opt(args, "timeout", 30.0)
    url = opt(args, "url") or None
    log.debug("connecting to %s", url or os.environ.get("EXECSDK_URL") or "the embedded server")
    env = connect(url, token=token, timeout=timeout)
    log.info("connected to %s (%s, session %s)", env.url, env.info.generation, env.session_id)
    return env


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def stop_on_signals() -> None:
    """SIGTERM/SIGHUP raise :class:`Stopped` in the main thread, so ``with proc`` kills the
    remote process on the way out instead of leaving it to the server's session grace."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def exit_status(code: int) -> int:
    # G1 servers report -1 for a signal death; a shell shows that as 255.
    return code if 0 <= code <= 255 else 255
