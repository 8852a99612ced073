"""``Environment``: the one user-facing place to run processes and reach files.

Local and remote environments differ only in the backends they pass in; ``run()`` and
``spawn()`` here speak :mod:`subprocess` on top of any :class:`ProcessBackend`.
"""

from __future__ import annotations

import codecs
import logging
import os
import posixpath
import secrets
import subprocess
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar, overload

from execsdk import errors as _errors
from execsdk._callbacks import CallbackDispatcher
from execsdk._deadline import UNSET, Deadline, Timeoutish, resolve_timeout
from execsdk.backends import (
    DEFAULT_ENV_POLICY,
    EnvironmentInfo,
    EnvPolicy,
    FsBackend,
    ProcessBackend,
    ProcessSpec,
)
from execsdk.process import DEFAULT_OUTPUT_BUDGET, OnExit, OnOutput, Process, ProcessArgs

if TYPE_CHECKING:
    from execsdk.fs import Fs

__all__ = ["CompletedProcess", "Environment"]

_E = TypeVar("_E", bound="Environment")
log = logging.getLogger(__name__)

PathArg = str | os.PathLike[str]

CompletedProcess = subprocess.CompletedProcess
"""``run()``'s result: ``args``, ``returncode``, ``stdout``, ``stderr`` (bytes or str)."""


class Environment:
    """A place to run processes and reach files: this machine or an exec-server.

    Thread-safety: safe to share between threads; every method may be called concurrently.

    ``timeout`` is the default for short calls (starting a process, writing to it, file
    operations); ``None`` means no limit. Waiting for a process has no default limit.
    ``output_budget`` is how many bytes of unconsumed output each process keeps in memory
    before spilling to a temporary file.
    """

    def __init__(
        self,
        *,
        processes: ProcessBackend,
        fs_backend: FsBackend,
        info: EnvironmentInfo,
        dispatcher: CallbackDispatcher,
        timeout: float | None = 30.0,
        output_budget: int = DEFAULT_OUTPUT_BUDGET,
    ) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        if output_budget < 0:
            raise ValueError(f"output_budget must be >= 0, not {output_budget!r}")
        self._processes = processes
        self._fs_backend = fs_backend
        self._info = info
        self._dispatcher = dispatcher
        self._timeout = timeout
        self._output_budget = output_budget
        self._fs: Fs | None = None
        self._fs_lock = threading.Lock()

    # ------------------------------------------------------------------ properties

    @property
    def info(self) -> EnvironmentInfo:
        """OS, shell, default cwd, home and temp directories, protocol generation."""
        return self._info

    @property
    def processes(self) -> ProcessBackend:
        """The process backend (low level: ``read``, ``terminate`` by process id)."""
        return self._processes

    @property
    def fs(self) -> Fs:
        """The environment's filesystem (pathlib-style facade), created on first use."""
        with self._fs_lock:
            if self._fs is None:
                from execsdk.fs import Fs

                self._fs = Fs(self._fs_backend, environment=self)
            return self._fs

    @property
    def timeout(self) -> float | None:
        """Default timeout of short calls, in seconds (``None``: no limit)."""
        return self._timeout

    @property
    def dispatcher(self) -> CallbackDispatcher:
        """The thread that runs user callbacks (``on_output``, ``on_exit``)."""
        return self._dispatcher

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the environment's resources (subclasses close their backends)."""

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ processes

    def spawn(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        env_policy: EnvPolicy | None = None,
        shell: bool = False,
        stdin: bool = False,
        tty: bool = False,
        on_output: OnOutput | None = None,
        on_exit: OnExit | None = None,
        timeout: Timeoutish = UNSET,
    ) -> Process:
        """Start a process and return it without waiting (like ``subprocess.Popen``).

        Args:
            args: an argv list, or with ``shell=True`` a command string for the environment's
                shell (``[info.shell, "-c", args]``).
            cwd: working directory; relative paths resolve against ``info.cwd``.
            env: variables added to (overriding) the environment's own; with
                ``replace_env=True`` the child gets exactly these.
            env_policy: explicit control of the inherited variables (see ``EnvPolicy``).
            stdin: keep stdin open for :meth:`Process.write`; otherwise it is ``/dev/null``.
            tty: run under a pseudo-terminal (24x80); output is the single ``pty`` stream.
            on_output, on_exit: callbacks run on the dispatcher thread, in order; with
                ``on_output`` chunks are not kept for ``output()``/``communicate()``.
            timeout: for starting the process (default: the environment's timeout).

        Raises:
            FileNotFoundError: the executable or the cwd does not exist.
        """
        spec = self._spec(
            args,
            cwd=cwd,
            env=env,
            replace_env=replace_env,
            env_policy=env_policy,
            shell=shell,
            stdin=stdin,
            tty=tty,
        )
        return self._spawn_spec(args, spec, on_output=on_output, on_exit=on_exit, timeout=timeout)

    def _spawn_spec(
        self,
        args: ProcessArgs,
        spec: ProcessSpec,
        *,
        on_output: OnOutput | None = None,
        on_exit: OnExit | None = None,
        timeout: Timeoutish = UNSET,
    ) -> Process:
        proc = Process(
            self._processes,
            spec,
            args=args,
            dispatcher=self._dispatcher,
            default_timeout=self._timeout,
            output_budget=self._output_budget,
            on_output=on_output,
            on_exit=on_exit,
        )
        return proc.start(timeout=resolve_timeout(timeout, self._timeout))

    @overload
    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: Literal[False] = False,
        encoding: None = None,
        errors: None = None,
        tty: bool = False,
    ) -> subprocess.CompletedProcess[bytes]: ...

    @overload
    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        tty: bool = False,
    ) -> subprocess.CompletedProcess[str]: ...

    @overload
    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        tty: bool = False,
    ) -> subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]: ...

    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: Mapping[str, str] | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        tty: bool = False,
    ) -> subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]:
        """Run a command to completion and collect its output, like ``subprocess.run``.

        ``stdout``/``stderr`` are bytes, or str when ``text``, ``encoding`` or ``errors`` is
        given (UTF-8 by default, newlines translated as in subprocess). ``input`` is fed to
        stdin, which then reaches EOF (on servers that cannot close stdin it is staged in a
        temporary file on the environment side). ``timeout`` (seconds, default no limit)
        covers the whole run.

        Raises:
            errors.TimeoutExpired: time ran out; the process was killed; the exception carries
                the output collected so far.
            errors.CalledProcessError: ``check=True`` and the exit code was not 0.
            FileNotFoundError: the executable or the cwd does not exist.
        """
        textual = text or encoding is not None or errors is not None
        data: bytes | None
        if isinstance(input, str):
            data = input.encode(encoding or "utf-8", errors or "strict")
        else:
            data = None if input is None else bytes(input)
        deadline = Deadline(timeout)
        spec = self._spec(
            args, cwd=cwd, env=env, replace_env=replace_env, shell=shell, stdin=False, tty=tty
        )
        staged: str | None = None
        if data is not None:
            if self._stdin_via_file(tty=tty):
                staged = self._stage_input(data, deadline)
                spec = _redirect_stdin(spec, staged)
            else:
                spec = _evolve(spec, pipe_stdin=True)
        try:
            proc = self._spawn_spec(args, spec, timeout=self._rpc_timeout(deadline))
            try:
                with proc:
                    try:
                        if data is not None and staged is None:
                            proc._feed(data, deadline)
                        out, err = proc.communicate(timeout=deadline.left())
                    except (_errors.TimeoutExpired, _errors.RequestTimeout):
                        # A write cut short by the run's deadline is the run timing out too.
                        if not deadline.expired():
                            raise
                        out, err = self._kill_and_collect(proc)
                        raise _errors.TimeoutExpired(
                            args,
                            timeout or 0.0,
                            _decode(out, encoding, errors, partial=True) if textual else out,
                            _decode(err, encoding, errors, partial=True) if textual else err,
                            process_id=proc.id,
                        ) from None
                    code = proc.wait(timeout=self._timeout)
            finally:
                proc._release()
        finally:
            if staged is not None:
                self._unstage_input(staged)
        result: subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]
        if textual:
            result = subprocess.CompletedProcess(
                args, code, _decode(out, encoding, errors), _decode(err, encoding, errors)
            )
        else:
            result = subprocess.CompletedProcess(args, code, out, err)
        if check and code != 0:
            raise _errors.CalledProcessError(
                code, args, result.stdout, result.stderr, process_id=proc.id
            )
        return result

    def _kill_and_collect(self, proc: Process) -> tuple[bytes, bytes]:
        """After a timeout: kill the process and gather what it wrote until it closed."""
        try:
            proc.kill()
            return proc.communicate(timeout=self._timeout)
        except _errors.TimeoutExpired as exc:
            log.warning("process %s did not close after being killed", proc.id)
            return _as_bytes(exc.output), _as_bytes(exc.stderr)

    # ------------------------------------------------------------------ stdin staging

    def _stdin_via_file(self, *, tty: bool) -> bool:
        """Whether ``run(input=...)`` stages the input in a file instead of piping it.

        Piping needs a backend that can close stdin (so the program sees EOF); codex servers
        cannot. A tty has no EOF either, so its input is staged too (stdout stays a tty).
        """
        return tty or not self._processes.can_close_stdin

    def _stage_input(self, data: bytes, deadline: Deadline) -> str:
        path = f"{self._info.temp_dir.rstrip('/') or ''}/execsdk-stdin-{secrets.token_hex(8)}"
        self.fs.write_bytes(path, data, timeout=self._rpc_timeout(deadline))
        return path

    def _unstage_input(self, path: str) -> None:
        try:
            self.fs.remove(path, missing_ok=True)
        except Exception as exc:
            log.warning("could not remove staged input %s: %r", path, exc)

    # ------------------------------------------------------------------ helpers

    def _rpc_timeout(self, deadline: Deadline) -> float | None:
        left = deadline.left()
        if left is None:
            return self._timeout
        return left if self._timeout is None else min(left, self._timeout)

    def _spec(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None,
        env: Mapping[str, str] | None,
        replace_env: bool,
        shell: bool,
        stdin: bool,
        tty: bool,
        env_policy: EnvPolicy | None = None,
    ) -> ProcessSpec:
        if replace_env and env_policy is not None:
            raise ValueError("replace_env=True and env_policy are mutually exclusive")
        policy: EnvPolicy | None
        if replace_env:
            policy = None
        elif env_policy is not None:
            policy = env_policy
        else:
            policy = DEFAULT_ENV_POLICY
        return ProcessSpec(
            argv=self._argv(args, shell=shell),
            cwd=self._cwd(cwd),
            env=dict(env or {}),
            env_policy=policy,
            tty=tty,
            pipe_stdin=stdin,
        )

    def _argv(self, args: ProcessArgs, *, shell: bool) -> tuple[str, ...]:
        if isinstance(args, (str, bytes, os.PathLike)):
            items = [_fspath(args)]
        else:
            items = [_fspath(a) for a in args]
        if not items:
            raise ValueError("args must not be empty")
        if shell:
            return (self._info.shell or "/bin/sh", "-c", *items)
        return tuple(items)

    def _cwd(self, cwd: PathArg | None) -> str:
        if cwd is None:
            return self._info.cwd
        path = _fspath(cwd)
        return path if posixpath.isabs(path) else posixpath.join(self._info.cwd, path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._info.generation} cwd={self._info.cwd!r}>"


def _fspath(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return os.fsdecode(value)
    if isinstance(value, os.PathLike):
        return os.fsdecode(os.fspath(value))
    return str(value)


def _evolve(spec: ProcessSpec, *, pipe_stdin: bool) -> ProcessSpec:
    return ProcessSpec(
        argv=spec.argv,
        cwd=spec.cwd,
        env=spec.env,
        env_policy=spec.env_policy,
        tty=spec.tty,
        pipe_stdin=pipe_stdin,
        arg0=spec.arg0,
    )


def _redirect_stdin(spec: ProcessSpec, path: str) -> ProcessSpec:
    """Run ``spec.argv`` with stdin read from ``path``; the path is passed as ``$0``, the
    command as ``$@``, so nothing is ever parsed by the shell."""
    return ProcessSpec(
        argv=("/bin/sh", "-c", 'exec "$@" < "$0"', path, *spec.argv),
        cwd=spec.cwd,
        env=spec.env,
        env_policy=spec.env_policy,
        tty=spec.tty,
        pipe_stdin=False,
        arg0=spec.arg0,
    )


def _decode(data: bytes, encoding: str | None, errors: str | None, *, partial: bool = False) -> str:
    try:
        text = codecs.decode(data, encoding or "utf-8", errors or "strict")
    except UnicodeDecodeError:
        if not partial:
            raise
        # Output cut short by a kill may end inside a character; keep the TimeoutExpired.
        text = codecs.decode(data, encoding or "utf-8", "replace")
    # Universal newlines, as subprocess does in text mode.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _as_bytes(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode()
