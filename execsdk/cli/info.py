"""``execsdk info``: the environment and the server, as text or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from execsdk.cli.common import Parser, open_environment

__all__ = ["add_parser"]


def _cmd_info(args: argparse.Namespace) -> int:
    from execsdk._version import __version__

    with open_environment(args) as env:
        info = env.info
        data = {
            "url": env.url,
            "embedded": env.url.startswith("stdio:"),
            "generation": info.generation,
            "session_id": env.session_id,
            "capabilities": sorted(info.capabilities),
            "os": info.os,
            "shell": info.shell,
            "cwd": info.cwd,
            "home": info.home,
            "temp_dir": info.temp_dir,
            "execsdk_version": __version__,
        }
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    caps = data["capabilities"]
    rows = [
        ("url", str(data["url"]) + (" (embedded server)" if data["embedded"] else "")),
        ("generation", data["generation"]),
        ("session", data["session_id"]),
        ("capabilities", ", ".join(caps) if isinstance(caps, list) and caps else "(none)"),
        ("os", data["os"]),
        ("shell", data["shell"]),
        ("cwd", data["cwd"]),
        ("home", data["home"]),
        ("temp dir", data["temp_dir"]),
        ("execsdk", data["execsdk_version"]),
    ]
    sys.stdout.write("".join(f"{key + ':':14}{value}\n" for key, value in rows))
    return 0


def add_parser(sub: Any, common: Parser) -> None:
    """Register ``info``."""
    info = sub.add_parser(
        "info",
        help="show the environment and the server",
        description="OS, shell and directories of the environment; URL, protocol generation, "
        "session id and capabilities of the server.",
        parents=[common],
        allow_abbrev=False,
    )
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)
