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

from execsdk import errors
from execsdk._api import connect
from execsdk._base import Environment
from execsdk.client import Client, Generation, ServerInfo
from execsdk.environment import (
    DirEntry,
    EnvironmentInfo,
    EnvPolicy,
    FileInfo,
    OutputChunk,
)
from execsdk.errors import (
    CalledProcessError,
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    ExecSdkError,
    ProtocolError,
    RequestTimeout,
    ServerError,
    TimeoutExpired,
    UnsupportedByServer,
)
from execsdk.fs import Fs, RemoteFs, RemotePath
from execsdk.local import LocalEnvironment, local
from execsdk.process import Process
from execsdk.remote import RemoteEnvironment

__version__ = "0.1.0"

__all__ = [
    "CalledProcessError",
    "Client",
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
    "Process",
    "ProtocolError",
    "RemoteEnvironment",
    "RemoteFs",
    "RemotePath",
    "RequestTimeout",
    "ServerError",
    "ServerInfo",
    "TimeoutExpired",
    "UnsupportedByServer",
    "__version__",
    "connect",
    "errors",
    "local",
]
