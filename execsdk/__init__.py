"""execsdk: run processes and move files on an exec-server, from any number of threads.

Start here::

    import execsdk

    with execsdk.connect() as env:              # embedded server; or connect("ws://host:port")
        result = env.run(["echo", "hello"], text=True)
        env.fs.write_text("/tmp/greeting.txt", result.stdout)

``connect()`` returns a :class:`RemoteEnvironment`, ``local()`` a :class:`LocalEnvironment`;
both are :class:`Environment` objects with the same ``run``/``spawn``/``fs`` API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from execsdk._version import __version__

if TYPE_CHECKING:
    from execsdk import errors
    from execsdk._local.localenv import LocalEnvironment, local
    from execsdk.backends import (
        DirEntry,
        EnvironmentInfo,
        EnvPolicy,
        FileInfo,
        OutputChunk,
    )
    from execsdk.client import Client, Generation, Reconnect, ServerInfo
    from execsdk.environment import CompletedProcess, Environment
    from execsdk.errors import (
        CalledProcessError,
        ConnectError,
        ConnectionClosed,
        ConnectionLost,
        ExecSdkError,
        OutputLost,
        ProtocolError,
        RequestTimeout,
        ServerError,
        SessionLost,
        TimeoutExpired,
        UnsupportedByServer,
    )
    from execsdk.fs.facade import Fs, RemoteFs
    from execsdk.fs.paths import RemotePath
    from execsdk.process import Process
    from execsdk.remote.connector import connect
    from execsdk.remote.remoteenv import RemoteEnvironment

# Public names resolve on first use, so `import execsdk` (and the embedded server's
# `python -m execsdk serve`) stays cheap and imports only what it needs.
_LAZY = {
    "errors": ("execsdk.errors", None),
    "connect": ("execsdk.remote.connector", "connect"),
    "Environment": ("execsdk.environment", "Environment"),
    "CompletedProcess": ("execsdk.environment", "CompletedProcess"),
    "Client": ("execsdk.client", "Client"),
    "Reconnect": ("execsdk.client", "Reconnect"),
    "Generation": ("execsdk.client", "Generation"),
    "ServerInfo": ("execsdk.client", "ServerInfo"),
    "DirEntry": ("execsdk.backends", "DirEntry"),
    "EnvironmentInfo": ("execsdk.backends", "EnvironmentInfo"),
    "EnvPolicy": ("execsdk.backends", "EnvPolicy"),
    "FileInfo": ("execsdk.backends", "FileInfo"),
    "OutputChunk": ("execsdk.backends", "OutputChunk"),
    "CalledProcessError": ("execsdk.errors", "CalledProcessError"),
    "ConnectError": ("execsdk.errors", "ConnectError"),
    "ConnectionClosed": ("execsdk.errors", "ConnectionClosed"),
    "ConnectionLost": ("execsdk.errors", "ConnectionLost"),
    "ExecSdkError": ("execsdk.errors", "ExecSdkError"),
    "OutputLost": ("execsdk.errors", "OutputLost"),
    "ProtocolError": ("execsdk.errors", "ProtocolError"),
    "RequestTimeout": ("execsdk.errors", "RequestTimeout"),
    "ServerError": ("execsdk.errors", "ServerError"),
    "SessionLost": ("execsdk.errors", "SessionLost"),
    "TimeoutExpired": ("execsdk.errors", "TimeoutExpired"),
    "UnsupportedByServer": ("execsdk.errors", "UnsupportedByServer"),
    "Fs": ("execsdk.fs.facade", "Fs"),
    "RemoteFs": ("execsdk.fs.facade", "RemoteFs"),
    "RemotePath": ("execsdk.fs.paths", "RemotePath"),
    "LocalEnvironment": ("execsdk._local.localenv", "LocalEnvironment"),
    "local": ("execsdk._local.localenv", "local"),
    "Process": ("execsdk.process", "Process"),
    "RemoteEnvironment": ("execsdk.remote.remoteenv", "RemoteEnvironment"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'execsdk' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CalledProcessError",
    "Client",
    "CompletedProcess",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLost",
    "DirEntry",
    "EnvPolicy",
    "Environment",
    "EnvironmentInfo",
    "ExecSdkError",
    "FileInfo",
    "Fs",
    "Generation",
    "LocalEnvironment",
    "OutputChunk",
    "OutputLost",
    "Process",
    "ProtocolError",
    "Reconnect",
    "RemoteEnvironment",
    "RemoteFs",
    "RemotePath",
    "RequestTimeout",
    "ServerError",
    "ServerInfo",
    "SessionLost",
    "TimeoutExpired",
    "UnsupportedByServer",
    "__version__",
    "connect",
    "errors",
    "local",
]
