"""RemoteEnvironment: an Environment over a :class:`~execsdk.client.Client`.

Its backends live next door (``process_calls``, ``fs_calls``); wire types become public types
there, and server errors become builtin-mapped exceptions in ``failures``.
"""

from __future__ import annotations

import threading
import uuid

from execsdk.backends import (
    EnvironmentInfo,
    ProcessSpec,
)
from execsdk.client import Client
from execsdk.environment import Environment
from execsdk.remote.fs_calls import RemoteFsBackend
from execsdk.remote.process_calls import RemoteProcessBackend

__all__ = ["RemoteEnvironment", "environment_info_of"]


def _g1_probe(client: Client, timeout: float | None) -> dict[str, str]:
    """G1 has no environment/info: ask a short-lived process once, at connect."""
    script = (
        'printf "%s\\n" "$(readlink /proc/$PPID/cwd 2>/dev/null || echo "${PWD:-/}")" '
        '"${HOME:-/}" "${TMPDIR:-/tmp}" "${SHELL:-/bin/sh}" "$(uname -s)"'
    )
    out = bytearray()
    done = threading.Event()

    class _Collect:
        def on_output(self, seq: int, stream: str, data: bytes) -> None:
            if stream != "stderr":
                out.extend(data)

        def on_exited(self, seq: int, exit_code: int) -> None:
            pass

        def on_closed(self, seq: int) -> None:
            done.set()

        def on_lost(self, exc: BaseException) -> None:
            done.set()

    backend = RemoteProcessBackend(client, "/")
    pid = f"execsdk-probe-{uuid.uuid4().hex[:8]}"
    from execsdk.backends import DEFAULT_ENV_POLICY

    backend.start(
        pid,
        ProcessSpec(argv=("/bin/sh", "-c", script), cwd="/", env_policy=DEFAULT_ENV_POLICY),
        _Collect(),
        timeout=timeout,
    )
    done.wait(timeout)
    backend.release(pid)
    lines = out.decode("utf-8", "replace").splitlines()
    keys = ["cwd", "home", "temp_dir", "shell", "os"]
    values = dict(zip(keys, lines, strict=False))
    return {
        "cwd": values.get("cwd") or "/",
        "home": values.get("home") or "/",
        "temp_dir": values.get("temp_dir") or "/tmp",
        "shell": values.get("shell") or "/bin/sh",
        "os": (values.get("os") or "linux").lower(),
    }


def environment_info_of(client: Client, *, timeout: float | None = 10.0) -> EnvironmentInfo:
    """Build the public EnvironmentInfo from the handshake (G2) or a probe process (G1)."""
    info = client.server_info
    env = info.environment
    if env is not None:
        return EnvironmentInfo(
            os=env.platform_os or "linux",
            shell=env.shell.path,
            cwd=str(env.cwd or "/"),
            home=str(env.user_home_dir or "/"),
            temp_dir=str(env.temp_dir or "/tmp"),
            generation=info.generation.value,
            capabilities=info.capabilities,
        )
    probed = _g1_probe(client, timeout)
    return EnvironmentInfo(
        os=probed["os"],
        shell=probed["shell"],
        cwd=probed["cwd"],
        home=probed["home"],
        temp_dir=probed["temp_dir"],
        generation=info.generation.value,
        capabilities=frozenset(),
    )


class RemoteEnvironment(Environment):
    """An Environment on an exec-server, owning (or borrowing) its :class:`Client`.

    Thread-safety: safe to share between threads, like the client.
    """

    def __init__(
        self,
        client: Client,
        *,
        owns_client: bool = True,
        timeout: float | None = 30.0,
        output_budget: int = 64 * 2**20,
    ) -> None:
        self.client = client
        self._owns_client = owns_client
        info = environment_info_of(client, timeout=timeout)
        super().__init__(
            processes=RemoteProcessBackend(client, info.cwd),
            fs_backend=RemoteFsBackend(client),
            info=info,
            dispatcher=client.dispatcher,
            timeout=timeout,
            output_budget=output_budget,
        )

    @property
    def url(self) -> str:
        """The server's URL (or stdio command)."""
        return self.client.url

    @property
    def session_id(self) -> str:
        """The server session id (for ``resumeSessionId``)."""
        return self.client.server_info.session_id

    def close(self) -> None:
        """Close the client if this environment owns it. Idempotent."""
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        state = "" if self.client.is_open else " closed"
        return (
            f"<RemoteEnvironment {self.url} {self.info.generation} "
            f"session={self.session_id}{state}>"
        )
