"""``manage.py runremote [--timeout S] -- ARGV...``: run a command on the exec-server.

Its output is printed as it arrives (stdout to stdout, stderr to stderr); a non-zero exit code
becomes the command's own exit status. Unlike the web view this takes any command line: it is
run by whoever already has a shell on the machine that runs ``manage.py``.
"""

from __future__ import annotations

import argparse
import codecs
from typing import Any

from django.core.management.base import (  # type: ignore[import-untyped]
    BaseCommand,
    CommandError,
    CommandParser,
)

import execsdk
from remoterun.shared import environment


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run a command on the exec-server and print its output as it arrives."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout", type=float, default=None, help="kill the command after this many seconds"
        )
        parser.add_argument("argv", nargs=argparse.REMAINDER, help="the command and its arguments")

    def handle(self, *args: Any, **options: Any) -> None:
        argv: list[str] = list(options["argv"])
        if argv[:1] == ["--"]:
            argv = argv[1:]
        if not argv:
            raise CommandError("give the command to run, e.g. runremote -- uname -a")
        decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
        }
        try:
            env = environment()
        except execsdk.ConnectError as exc:
            raise CommandError(f"cannot reach the exec-server: {exc}") from exc
        with env.spawn(argv) as proc:
            try:
                for chunk in proc.output(timeout=options["timeout"]):
                    stream = "stderr" if chunk.stream == "stderr" else "stdout"
                    out = self.stderr if stream == "stderr" else self.stdout
                    out.write(decoders[stream].decode(chunk.data), ending="")
                    out.flush()
            except execsdk.TimeoutExpired:
                raise CommandError(f"{argv[0]} did not finish within {options['timeout']} s")
            code = proc.wait(timeout=10)
        if code != 0:
            raise CommandError(f"{argv[0]} exited with {code}", returncode=code)
