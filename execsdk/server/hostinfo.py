"""What ``environment/info`` and ``environmentConfig/read`` report about this server's host.

Shapes follow codex 0.169 (PROTOCOL.md §3.2, §3.21). ``capabilities`` names only what this
server really honours: codex's ``fsWatchMissing``, ``environmentConfigRead`` and
``fileWriteStreaming`` (``fs/open`` + ``fs/writeBlock``), plus our §7 extensions.

Pure functions: safe from any thread.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from execsdk._protocol.wire import path_to_uri
from execsdk.server.params import platform_name

__all__ = ["CAPABILITIES", "environment_config", "environment_info", "executor_version"]

CAPABILITIES: dict[str, bool] = {
    "fsWatchMissing": True,
    "environmentConfigRead": True,
    "fileWriteStreaming": True,
    "execsdk/closeStdin": True,
    "execsdk/concurrentRequests": True,
    "execsdk/exclusiveCreate": True,
    "execsdk/fileMode": True,
    "execsdk/outputAck": True,
}
"""Every capability this server announces (each one ``true``)."""


@functools.lru_cache(maxsize=1)
def executor_version() -> str:
    """``executorVersion``: ``execsdk-<package version>``."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return "execsdk-" + version("execsdk")
    except (ImportError, PackageNotFoundError):
        return "execsdk-0.0.0"


@functools.lru_cache(maxsize=1)
def _provider_id() -> str:
    # Stable for one user on one host, across restarts: lets a client recognise the machine.
    seed = f"{socket.gethostname()}:{os.getuid() if hasattr(os, 'getuid') else 0}"
    return "execsdk:" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def _shell() -> dict[str, str]:
    path = os.environ.get("SHELL") or "/bin/sh"
    return {"name": os.path.basename(path) or "sh", "path": path}


def _home() -> str:
    try:
        return str(Path.home())
    except (KeyError, RuntimeError):  # no HOME and no passwd entry
        return "/"


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the server's directory was removed under it
        return _home()


def environment_info(cwd: str | None = None) -> dict[str, Any]:
    """The ``environment/info`` result (also ``initialize``'s ``environmentInfo``).

    ``cwd``: what to report as the working directory (the ``--root`` directory, where
    processes start by default); the server's own working directory when None.
    """
    return {
        "shell": _shell(),
        "executorVersion": executor_version(),
        "providerId": _provider_id(),
        "cwd": path_to_uri(cwd if cwd is not None else _cwd()),
        "userHomeDir": path_to_uri(_home()),
        "platformOs": platform_name(),
        "prependPathDirs": [],
        "temporaryDirectories": [],
        "tempDir": path_to_uri(tempfile.gettempdir()),
        "capabilities": dict(CAPABILITIES),
    }


def environment_config() -> dict[str, Any]:
    """The ``environmentConfig/read`` result: no config layers (we read no codex config)."""
    codex_home = os.environ.get("CODEX_HOME") or os.path.join(_home(), ".codex")
    return {
        "userHomeDir": path_to_uri(_home()),
        "codexHomeDir": path_to_uri(os.path.abspath(codex_home)),
        "hostname": socket.gethostname(),
        "config": {"layers": [], "cloudInsertionIndex": 0},
        "requirements": {"layers": [], "cloudInsertionIndex": 0},
    }
