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
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

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

_T = TypeVar("_T")

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]
"""A path as :mod:`subprocess` takes it: str, bytes (decoded with ``os.fsdecode``) or
path-like."""

EnvArg = Mapping[str, PathArg] | Mapping[bytes, PathArg]
"""Environment variables as :mod:`subprocess` takes them: names and values are str, bytes
or path-like."""


class CompletedProcess(subprocess.CompletedProcess[_T]):
    """``run()``'s result: ``args``, ``returncode``, ``stdout``, ``stderr`` (bytes or str).

    A :class:`subprocess.CompletedProcess` whose :meth:`check_returncode` raises execsdk's
    :class:`~execsdk.errors.CalledProcessError` (itself a ``subprocess.CalledProcessError``).
    Thread-safety: an immutable value once returned.
    """

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: _T | None = None,
        stderr: _T | None = None,
        *,
        process_id: str | None = None,
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.process_id = process_id

    def check_returncode(self) -> None:
        """Raise :class:`~execsdk.errors.CalledProcessError` if the exit code is not 0."""
        if self.returncode:
            out = cast("bytes | str | None", self.stdout)
            err = cast("bytes | str | None", self.stderr)
            raise _errors.CalledProcessError(
                self.returncode, self.args, out, err, process_id=self.process_id
            )


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
        env: EnvArg | None = None,
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
            FileNotFoundError: the executable or the cwd does not exist (``filename`` says
                which).
            NotADirectoryError: the cwd is not a directory.
            TypeError: ``args``, ``env`` or ``cwd`` of the wrong type (checked, as subprocess
                checks them, before anything is sent).
            ValueError: a NUL character in ``args``, ``env`` or ``cwd``, or ``=`` in an
                ``env`` name.
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
        env: EnvArg | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | bytearray | memoryview | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: Literal[False] = False,
        encoding: None = None,
        errors: None = None,
        tty: bool = False,
    ) -> CompletedProcess[bytes]: ...

    @overload
    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: EnvArg | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | bytearray | memoryview | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        tty: bool = False,
    ) -> CompletedProcess[str]: ...

    @overload
    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: EnvArg | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | bytearray | memoryview | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        tty: bool = False,
    ) -> CompletedProcess[bytes] | CompletedProcess[str]: ...

    def run(
        self,
        args: ProcessArgs,
        *,
        cwd: PathArg | None = None,
        env: EnvArg | None = None,
        replace_env: bool = False,
        shell: bool = False,
        input: bytes | bytearray | memoryview | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        tty: bool = False,
    ) -> CompletedProcess[bytes] | CompletedProcess[str]:
        """Run a command to completion and collect its output, like ``subprocess.run``.

        ``stdout``/``stderr`` are bytes, or str when ``text``, ``encoding`` or ``errors`` is
        given (UTF-8 by default, newlines translated as in subprocess). ``input`` is fed to
        stdin, which then reaches EOF (on servers that cannot close stdin it is staged in a
        temporary file on the environment side): a bytes-like object, or a str when ``text``,
        ``encoding`` or ``errors`` is given. ``timeout`` (seconds, default no limit) covers
        the whole run. Arguments are checked, as subprocess checks them, before anything is
        sent or started.

        Raises:
            errors.TimeoutExpired: time ran out; the process was killed; the exception carries
                the output collected so far.
            errors.CalledProcessError: ``check=True`` and the exit code was not 0.
            FileNotFoundError: the executable or the cwd does not exist (``filename`` says
                which).
            NotADirectoryError: the cwd is not a directory.
            TypeError: ``args``, ``env``, ``cwd`` or ``input`` of the wrong type.
            ValueError: a NUL character in ``args``, ``env`` or ``cwd``, or ``=`` in an
                ``env`` name.
        """
        textual = text or encoding is not None or errors is not None
        spec = self._spec(
            args, cwd=cwd, env=env, replace_env=replace_env, shell=shell, stdin=False, tty=tty
        )
        data = _input_bytes(input, textual=textual, encoding=encoding, errors=errors)
        deadline = Deadline(timeout)
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
                        out, err, lost = _communicate_through_gaps(proc, deadline.left())
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
        result: CompletedProcess[bytes] | CompletedProcess[str]
        if textual:
            result = CompletedProcess(
                args,
                code,
                _decode(out, encoding, errors),
                _decode(err, encoding, errors),
                process_id=proc.id,
            )
        else:
            result = CompletedProcess(args, code, out, err, process_id=proc.id)
        if lost is not None:
            # Every byte that arrived is in ``result``; the error says where the gaps are.
            lost.completed = result
            lost.stdout, lost.stderr = result.stdout, result.stderr
            raise lost
        if check:
            result.check_returncode()
        return result

    def _kill_and_collect(self, proc: Process) -> tuple[bytes, bytes]:
        """After a timeout: kill the process and gather what it wrote until it closed."""
        try:
            proc.kill()
            out, err, _ = _communicate_through_gaps(proc, self._timeout)
            return out, err
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
        env: EnvArg | None,
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
            env=_env_strings(env),
            env_policy=policy,
            tty=tty,
            pipe_stdin=stdin,
        )

    def _argv(self, args: ProcessArgs, *, shell: bool) -> tuple[str, ...]:
        if isinstance(args, (str, bytes, os.PathLike)):
            items = [_path_string(args, "args")]
        else:
            try:
                entries = list(args)
            except TypeError:
                raise TypeError(
                    "args must be str, bytes, os.PathLike or a sequence of them, "
                    f"not {type(args).__name__}"
                ) from None
            items = [_path_string(a, f"args[{i}]") for i, a in enumerate(entries)]
        if not items:
            raise ValueError("args must not be empty")
        if shell:
            return (self._info.shell or "/bin/sh", "-c", *items)
        return tuple(items)

    def _cwd(self, cwd: PathArg | None) -> str:
        if cwd is None:
            return self._info.cwd
        path = _path_string(cwd, "cwd")
        return path if posixpath.isabs(path) else posixpath.join(self._info.cwd, path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._info.generation} cwd={self._info.cwd!r}>"


def _path_string(value: object, what: str) -> str:
    """``value`` (str, bytes or path-like, as subprocess takes them) as a str; ``what`` names
    it in the errors."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, os.PathLike)):
        text = os.fsdecode(value)
    else:
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    if "\0" in text:
        # What subprocess says; servers would refuse it only after the request was sent.
        raise ValueError(f"embedded null byte in {what}")
    return text


def _env_strings(env: object) -> dict[str, str]:
    """``env`` checked as subprocess checks it, names and values decoded to str."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping, not {type(env).__name__}")
    out: dict[str, str] = {}
    for key, value in env.items():
        name = _path_string(key, f"env key {key!r}")
        if "=" in name:
            raise ValueError(f"illegal environment variable name {name!r}")
        out[name] = _path_string(value, f"env value for {name!r}")
    return out


def _input_bytes(
    value: object, *, textual: bool, encoding: str | None, errors: str | None
) -> bytes | None:
    """``run(input=...)`` as bytes: a bytes-like object, or a str in text mode (encoded with
    ``encoding``/``errors``); the refusals are worded as subprocess words them."""
    if value is None:
        return None
    if isinstance(value, str):
        if not textual:
            raise TypeError(
                "a bytes-like object is required for input, not 'str' "
                "(give text=True, encoding or errors to pass a str)"
            )
        return value.encode(encoding or "utf-8", errors or "strict")
    if type(value) is bytes:
        return value
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        wanted = "a str or a bytes-like object" if textual else "a bytes-like object"
        raise TypeError(f"{wanted} is required for input, not {type(value).__name__!r}") from None
    with view:
        return view.tobytes()


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


def _communicate_through_gaps(
    proc: Process, timeout: float | None
) -> tuple[bytes, bytes, _errors.OutputLost | None]:
    """``proc.communicate()`` to the end across any ``OutputLost``: everything received, and
    the loss (None when nothing was lost)."""
    deadline = Deadline(timeout)
    outs: list[bytes] = []
    errs: list[bytes] = []
    while True:
        try:
            out, err = proc.communicate(timeout=deadline.left())
        except _errors.OutputLost as gap:
            outs.append(_as_bytes(gap.stdout))
            errs.append(_as_bytes(gap.stderr))
            continue
        outs.append(out)
        errs.append(err)
        lost = proc.output_lost
        return b"".join(outs), b"".join(errs), None if lost is None else _errors.fresh(lost)
