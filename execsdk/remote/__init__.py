"""An exec-server reached over a connection: ``connect()`` and ``RemoteEnvironment``.

Modules: ``connector`` (:func:`connect`: a URL, ``$EXECSDK_URL`` or the embedded server),
``embedded`` (the embedded server as a child process), ``remoteenv`` (:class:`RemoteEnvironment`
and the process and filesystem backends over a :class:`~execsdk.client.Client`).
"""

from __future__ import annotations

from execsdk.remote.connector import connect
from execsdk.remote.remoteenv import RemoteEnvironment

__all__ = ["RemoteEnvironment", "connect"]
