"""LocalEnvironment: real processes and the real disk of this Python process.

It is the reference implementation: the same facades (``Process``, ``Fs``) as the remote
environment, over backends that do the work here. Our server wraps the same backends.
"""

from __future__ import annotations

import os
import sys
import tempfile

from execsdk._callbacks import CallbackDispatcher
from execsdk._local.disk import LocalFsBackend
from execsdk._local.processes import LocalProcessBackend
from execsdk.backends import EnvironmentInfo
from execsdk.environment import Environment

__all__ = ["LocalEnvironment", "local"]


def _local_info(cwd: str) -> EnvironmentInfo:
    return EnvironmentInfo(
        os="macos" if sys.platform == "darwin" else sys.platform,
        shell=os.environ.get("SHELL") or "/bin/sh",
        cwd=cwd,
        home=os.path.expanduser("~"),
        temp_dir=tempfile.gettempdir(),
        generation="local",
        capabilities=frozenset(),
    )


class LocalEnvironment(Environment):
    """Processes and files on this machine, behind the Environment interface.

    Thread-safety: safe to share between threads.
    """

    def __init__(
        self,
        *,
        cwd: str | None = None,
        timeout: float | None = 30.0,
        output_budget: int = 64 * 2**20,
    ) -> None:
        cwd = os.path.abspath(cwd or os.getcwd())
        self._process_backend = LocalProcessBackend(default_cwd=cwd, retain_after_close=30.0)
        self._local_fs = LocalFsBackend()
        self._dispatcher = CallbackDispatcher()
        self._closed = False
        super().__init__(
            processes=self._process_backend,
            fs_backend=self._local_fs,
            info=_local_info(cwd),
            dispatcher=self._dispatcher,
            timeout=timeout,
            output_budget=output_budget,
        )

    def close(self) -> None:
        """Kill every process still running and stop the helper threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._process_backend.close()
        self._local_fs.close()
        self._dispatcher.close()

    def __repr__(self) -> str:
        return f"<LocalEnvironment cwd={self.info.cwd!r}>"


def local(*, cwd: str | None = None, timeout: float | None = 30.0) -> LocalEnvironment:
    """An Environment for this machine (use it as a context manager to clean up)."""
    return LocalEnvironment(cwd=cwd, timeout=timeout)
