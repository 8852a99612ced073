"""Files on an environment: the :class:`Fs` facade (``env.fs``), :class:`RemotePath`, transfers.

Modules, one job each: ``facade`` (:class:`Fs`), ``paths`` (:class:`RemotePath`), ``core`` (the
backend, helper processes, deadlines), ``streams`` (one file's bytes and the file objects of
``open``), ``walk`` (trees for ``walk`` and ``glob``), ``transfer`` (``upload``/``download``).
"""

from __future__ import annotations

from execsdk.fs.facade import BLOCK_SIZE, Fs, RemoteFs
from execsdk.fs.paths import PathArg, RemotePath
from execsdk.fs.transfer import Progress

__all__ = ["BLOCK_SIZE", "Fs", "PathArg", "Progress", "RemoteFs", "RemotePath"]
