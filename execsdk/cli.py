"""The ``execsdk`` command line (``execsdk ...`` or ``python -m execsdk ...``).

Subcommands:

``run [--tty] [--cwd DIR] [-e NAME=VALUE] -- CMD [ARG...]``
    Run a command in the environment. Its stdout and stderr are copied to ours as they arrive
    (flushed chunk by chunk, in server order) and its exit code becomes ours (death by signal N
    is 128+N). The remote stdin is empty. Ctrl-C interrupts the remote process (SIGINT, or a
    kill where the server cannot signal) and exits 130.
``shell``
    An interactive shell under a pseudo-terminal: the local terminal goes to raw mode, keys go
    to the remote shell, its output comes back; the terminal is restored on exit, and the
    shell's exit code becomes ours. Needs a terminal on stdin.
``fs ls|cat|put|get|rm|mkdir|stat``
    Files of the environment. ``put``/``get`` copy files or whole trees (like ``cp -r``: onto an
    existing directory, the source goes inside it) and show a progress bar on a terminal for
    transfers over 2 MiB (on stderr; ``--quiet`` turns it off).
``info``
    The environment (OS, shell, cwd...) and the server (URL, generation, session, capabilities).
``serve``
    Run our own exec-server (PROTOCOL.md G2, as codex 0.169). ``--listen ws://HOST:PORT``
    (default ``ws://127.0.0.1:0``) prints the bound URL as the first line of stdout;
    ``--listen stdio`` serves one session over stdin/stdout and prints nothing else there.
    A non-loopback address needs authentication (``--ws-token-file`` or ``--ws-auth
    signed-bearer-token``); ``--root DIR`` confines every path to DIR (docs/security.md).
    SIGINT/SIGTERM end it cleanly (every process it started is killed, exit status 0).

Connecting: ``--url`` falls back to ``$EXECSDK_URL``, then to the embedded default server (a
``python -m execsdk serve --listen stdio`` child). The token comes from ``--token-file FILE`` or
``$EXECSDK_TOKEN``, never from the command line (where every user could read it).

Errors print one line, ``execsdk: error: ...``, and exit 1 (2 for a usage error); ``-v`` adds
the traceback and INFO logging of the ``execsdk`` logger on stderr, ``-vv`` DEBUG logging.

Each subcommand lives in one ``_cmd_*`` function registered in :func:`build_parser`. Heavy
modules are imported inside the commands: the embedded server starts through this module.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import posixpath
import signal
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    from execsdk.environment import FileInfo
    from execsdk.fs import Fs
    from execsdk.process import Process
    from execsdk.remote import RemoteEnvironment
    from execsdk.server.auth import Authenticator

__all__ = ["build_parser", "main"]

log = logging.getLogger("execsdk.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

PROGRESS_MIN = 2 * 1024 * 1024
"""Transfers of at least this many bytes show a progress bar (on a terminal)."""

INTERRUPT_GRACE = 3.0
"""Seconds ``run`` keeps copying output after Ctrl-C before it kills the remote process."""


class _UsageError(Exception):
    """A bad combination of options: one line on stderr, exit status 2."""


class _CliError(Exception):
    """A failure explained in one line: ``execsdk: error: <message>``, exit status 1."""


class _Stopped(BaseException):
    """SIGTERM/SIGHUP arrived during ``run``/``shell``: stop the remote process and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------- serve


def _parse_listen(value: str) -> tuple[str, str, int]:
    """``("stdio", "", 0)`` or ``("ws", host, port)`` from a ``--listen`` value."""
    if value in ("stdio", "stdio://", "stdio:"):
        return "stdio", "", 0
    split = urllib.parse.urlsplit(value)
    if split.scheme != "ws" or not split.hostname:
        raise _UsageError(
            f"--listen {value!r}: expected ws://HOST:PORT (for example ws://127.0.0.1:0) or stdio"
        )
    if split.path not in ("", "/") or split.query or split.fragment:
        raise _UsageError(f"--listen {value!r}: a path, query or fragment is not supported")
    try:
        port = split.port if split.port is not None else 0
    except ValueError as exc:
        raise _UsageError(f"--listen {value!r}: {exc}") from None
    return "ws", split.hostname, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve_auth(args: argparse.Namespace) -> Authenticator | None:
    from execsdk.server.auth import authenticator_from_options

    try:
        return authenticator_from_options(
            mode=args.ws_auth,
            token_file=args.ws_token_file,
            token_sha256=args.ws_token_sha256,
            shared_secret_file=args.ws_shared_secret_file,
            issuer=args.ws_issuer,
            audience=args.ws_audience,
            max_clock_skew=args.ws_max_clock_skew_seconds,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


class _Stop:
    """SIGINT/SIGTERM set an event the main thread waits on. Thread-safety: any thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


def _cmd_serve(args: argparse.Namespace) -> int:
    kind, host, port = _parse_listen(args.listen)
    auth = _serve_auth(args)
    if auth is not None and kind == "stdio":
        raise _UsageError("--ws-auth and the --ws-* options apply to ws:// listeners only")
    if args.root is not None and not os.path.isdir(args.root):
        raise _UsageError(f"--root {args.root!r} is not an existing directory")
    if args.session_grace < 0:
        raise _UsageError("--session-grace must be >= 0")
    from execsdk.server.memory import tune_allocator

    tune_allocator()  # megabyte-sized requests reuse heap pages instead of faulting in new ones
    stop = _Stop()
    if kind == "stdio":
        return _serve_stdio(args, stop)
    if auth is None and not _is_loopback(host):
        raise _UsageError(
            f"refusing to listen on {host} without authentication: anyone who reaches it could "
            "run commands; pass --ws-token-file FILE (or --ws-auth signed-bearer-token) or "
            "listen on 127.0.0.1"
        )
    from execsdk.server.ws import WsServer

    stop.install()
    try:
        server = WsServer(host, port, auth=auth, root=args.root, session_grace=args.session_grace)
    except OSError as exc:
        print(
            f"execsdk serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    server.start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        while not stop.event.wait(0.5):
            pass
    finally:
        log.info("stopping (signal %s)", stop.signum)
        server.shutdown()
    return 0


class _Terminated(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM to interrupt a blocked stdin read."""


def _serve_stdio(args: argparse.Namespace, stop: _Stop) -> int:
    from execsdk.server.stdio import serve_stdio

    # stdout carries protocol messages only: nothing else may ever be printed there.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.event.is_set():
            return  # already ending: never interrupt the cleanup that kills the children
        stop(signum, frame)
        raise _Terminated(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        serve_stdio(stop=stop.event, session_grace=args.session_grace, root=args.root)
    except _Terminated:
        log.info("stopped by signal %s", stop.signum)
    return 0


# --------------------------------------------------------------------------- connecting


def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    """An option that may be given before or after the subcommand (absent: ``default``)."""
    return getattr(args, name, default)


def _read_token_file(path: str) -> str:
    """The token in ``path`` (one trailing newline ignored). Never logged, never echoed."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise _CliError(f"--token-file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _CliError(f"--token-file {path!r}: not UTF-8 text") from None
    if not token.strip():
        raise _CliError(f"--token-file {path!r} is empty")
    return token


def _connect(args: argparse.Namespace) -> RemoteEnvironment:
    """Connect as the options say: ``--url``/``$EXECSDK_URL``/embedded, token from a file."""
    import execsdk

    token_file = _opt(args, "token_file")
    token = _read_token_file(token_file) if token_file is not None else None
    timeout = _opt(args, "timeout", 30.0)
    url = _opt(args, "url") or None
    log.debug("connecting to %s", url or os.environ.get("EXECSDK_URL") or "the embedded server")
    env = execsdk.connect(url, token=token, timeout=timeout)
    log.info("connected to %s (%s, session %s)", env.url, env.info.generation, env.session_id)
    return env


# --------------------------------------------------------------------------- output helpers


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class _ProgressBar:
    """``label [=====>    ]  45%   2.3 MiB / 5.0 MiB   12.1 MiB/s``, redrawn in place.

    Used as the ``progress(done, total)`` callback of ``fs.upload``/``download``; stays silent
    for transfers under :data:`PROGRESS_MIN`. Thread-safety: one thread (the transfer's).
    """

    interval = 0.1

    def __init__(self, label: str, stream: TextIO, *, min_total: int = PROGRESS_MIN) -> None:
        self._label = label
        self._stream = stream
        self._min_total = min_total
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if total < self._min_total:
            return
        now = time.monotonic()
        if done < total and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._draw(done, total, now)

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns if columns > 0 else 80  # a fresh pty reports 0 columns

    def _draw(self, done: int, total: int, now: float) -> None:
        fraction = done / total if total else 1.0
        elapsed = max(now - self._started, 1e-6)
        # Fixed-width fields keep the bar from jittering as the numbers grow.
        tail = (
            f" {fraction * 100:3.0f}%  {_human_size(done):>10} / {_human_size(total)}"
            f"  {_human_size(done / elapsed):>10}/s"
        )
        width = self._width() - 1
        label = self._label
        room = width - len(tail) - 4
        if room < 10 + len(label):
            label = label[: max(0, room - 10)]
        bar_width = max(room - len(label), 0)
        filled = int(bar_width * fraction)
        arrow = ">" if filled < bar_width else ""
        bar = ("=" * filled + arrow).ljust(bar_width)
        line = f"{label} [{bar}]{tail}" if bar_width else f"{label}{tail}"
        self._stream.write("\r" + line[:width])
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (also after a failure, so an error message starts afresh)."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def _progress_for(args: argparse.Namespace, label: str) -> _ProgressBar | None:
    """A progress bar on stderr, only when stderr is a terminal and ``--quiet`` is not given."""
    if _opt(args, "quiet", False) or not sys.stderr.isatty():
        return None
    return _ProgressBar(label, sys.stderr)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --------------------------------------------------------------------------- run


def _copy_output(proc: Process, *, timeout: float | None = None) -> None:
    """Copy output chunks to our stdout/stderr as they arrive (pty output goes to stdout)."""
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    for chunk in proc.output(timeout=timeout):
        stream = err if chunk.stream == "stderr" else out
        stream.write(chunk.data)
        stream.flush()


def _stop_on_signals() -> None:
    """SIGTERM/SIGHUP raise :class:`_Stopped` in the main thread, so ``with proc`` kills the
    remote process on the way out instead of leaving it to the server's session grace."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stopped(signum)

    for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def _parse_env(items: Sequence[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--env {item.split('=', 1)[0]!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _exit_status(code: int) -> int:
    # G1 servers report -1 for a signal death; a shell shows that as 255.
    return code if 0 <= code <= 255 else 255


def _cmd_run(args: argparse.Namespace) -> int:
    from execsdk.errors import ExecSdkError, TimeoutExpired, UnsupportedByServer

    argv = list(args.cmd)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise _UsageError("run needs a command: execsdk run [OPTIONS] -- CMD [ARG...]")
    extra_env = _parse_env(args.env)
    _stop_on_signals()
    with _connect(args) as env:
        proc = env.spawn(argv, cwd=args.cwd, env=extra_env, tty=args.tty)
        with proc:  # leaving early (error, signal, broken pipe) kills the remote process
            try:
                _copy_output(proc)
            except KeyboardInterrupt:
                log.info("interrupted: sending SIGINT to %s", proc.id)
                try:
                    try:
                        proc.interrupt()
                    except UnsupportedByServer:
                        proc.terminate()
                    _copy_output(proc, timeout=INTERRUPT_GRACE)
                except (KeyboardInterrupt, TimeoutExpired):
                    pass  # `with proc` kills it
                except ExecSdkError as exc:
                    log.debug("stopping %s after Ctrl-C failed: %r", proc.id, exc)
                return EXIT_INTERRUPTED
            return _exit_status(proc.wait())


# --------------------------------------------------------------------------- shell


def _shell_argv(env: RemoteEnvironment, rows: int, cols: int) -> list[str]:
    """The environment's shell; on POSIX first told the local window size (the protocol starts
    every pty at 24x80 and has no resize)."""
    shell = env.info.shell or "/bin/sh"
    if env.info.os.lower().startswith("win") or rows <= 0 or cols <= 0:
        return [shell]
    script = 'stty rows "$1" cols "$2" 2>/dev/null; exec "$0"'
    return ["/bin/sh", "-c", script, shell, str(rows), str(cols)]


def _cmd_shell(args: argparse.Namespace) -> int:
    import select
    import termios
    import tty

    from execsdk.errors import ProcessNotFound, StdinClosed

    stdin_fd = sys.stdin.fileno()
    if not os.isatty(stdin_fd):
        raise _CliError(
            "shell needs a terminal on stdin; to run a command from a script use "
            "'execsdk run -- CMD'"
        )
    try:
        size = os.get_terminal_size(stdin_fd)
        rows, cols = size.lines, size.columns
    except OSError:
        rows = cols = 0
    _stop_on_signals()
    with _connect(args) as env:
        term = os.environ.get("TERM") or "xterm-256color"
        proc = env.spawn(_shell_argv(env, rows, cols), tty=True, env={"TERM": term})
        with proc:
            done = threading.Event()
            failure: list[BaseException] = []
            out_fd = sys.stdout.fileno()

            def pump() -> None:
                try:
                    for chunk in proc.output():
                        _write_all(out_fd, chunk.data)
                except BaseException as exc:
                    failure.append(exc)
                finally:
                    done.set()

            saved = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd, termios.TCSADRAIN)
            pumper = threading.Thread(target=pump, name="execsdk-cli-shell-output", daemon=True)
            try:
                pumper.start()
                while not done.is_set():
                    ready, _, _ = select.select([stdin_fd], [], [], 0.1)
                    if not ready:
                        continue
                    data = os.read(stdin_fd, 4096)
                    if not data:
                        break  # our stdin ended: let the shell finish on its own
                    try:
                        proc.write(data)
                    except (StdinClosed, ProcessNotFound):
                        break  # the shell is exiting
                done.wait()
            finally:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
            if failure:
                raise failure[0]
            return _exit_status(proc.wait())


# --------------------------------------------------------------------------- fs


def _kind(info: FileInfo) -> str:
    if info.is_dir:
        return "directory"
    if info.is_file:
        return "file"
    return "other"


def _when(info: FileInfo, attr: str) -> str | None:
    value = getattr(info, attr)
    return None if value is None else str(value.isoformat())


def _long_line(name: str, info: FileInfo | None) -> str:
    if info is None:
        return f"?  {'?':>12}  {'?':16}  {name}"
    kind = "l" if info.is_symlink else "d" if info.is_dir else "-" if info.is_file else "?"
    size = "-" if info.size is None else str(info.size)
    when = "-" if info.modified is None else info.modified.astimezone().strftime("%Y-%m-%d %H:%M")
    suffix = "/" if info.is_dir else ""
    return f"{kind}  {size:>12}  {when:16}  {name}{suffix}"


def _stat_entries(fs: Fs, base: str, names: list[str]) -> list[FileInfo | None]:
    """``stat`` of every name in ``base``, a few calls in flight (a vanished entry: None)."""
    import concurrent.futures

    def one(name: str) -> FileInfo | None:
        try:
            return fs.stat(posixpath.join(base, name))
        except OSError:
            return None

    with concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="execsdk-cli-ls") as pool:
        return list(pool.map(one, names))


def _cmd_fs_ls(args: argparse.Namespace) -> int:
    paths = args.paths or ["."]
    out = sys.stdout
    with _connect(args) as env:
        fs = env.fs
        for i, path in enumerate(paths):
            info = fs.stat(path)
            if not info.is_dir:
                out.write((_long_line(path, info) if args.long else path) + "\n")
                continue
            if len(paths) > 1:
                out.write(("\n" if i else "") + f"{path}:\n")
            entries = list(fs.iterdir(path))
            names = [e.name for e in entries]
            if args.long:
                stats = _stat_entries(fs, fs.abspath(path), names)
                for name, st in zip(names, stats, strict=True):
                    out.write(_long_line(name, st) + "\n")
            else:
                for entry in entries:
                    out.write(entry.name + ("/" if entry.is_dir else "") + "\n")
        out.flush()
    return 0


def _cmd_fs_cat(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    with _connect(args) as env:
        for path in args.paths:
            with env.fs.open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    out.write(chunk)
                    out.flush()
    return 0


def _remote_target(fs: Fs, local: str, remote: str) -> str:
    """Where ``put`` puts ``local``: inside ``remote`` when it is a directory (as ``cp``)."""
    name = os.path.basename(os.path.normpath(local))
    if remote.endswith("/") or fs.is_dir(remote):
        return posixpath.join(fs.abspath(remote), name) if name not in ("", ".", "..") else remote
    return remote


def _local_target(fs: Fs, remote: str, local: str) -> str:
    """Where ``get`` puts ``remote``: inside ``local`` when it is a directory (as ``cp``)."""
    name = posixpath.basename(fs.abspath(remote))
    if name and (local.endswith(os.sep) or os.path.isdir(local)):
        return os.path.join(local, name)
    return local


def _transfer(args: argparse.Namespace, label: str, move: Callable[..., None]) -> None:
    bar = _progress_for(args, label)
    started = time.monotonic()
    moved = [0]

    def progress(done: int, total: int) -> None:
        moved[0] = total
        if bar is not None:
            bar(done, total)

    try:
        move(progress=progress)
    finally:
        if bar is not None:
            bar.close()
    log.info("%s: %d bytes in %.2fs", label, moved[0], time.monotonic() - started)


def _cmd_fs_put(args: argparse.Namespace) -> int:
    if not os.path.exists(args.local):
        raise _CliError(f"cannot read {args.local!r}: no such local file or directory")
    with _connect(args) as env:
        fs = env.fs
        target = _remote_target(fs, args.local, args.remote)
        label = f"put {os.path.basename(os.path.normpath(args.local)) or args.local}"
        _transfer(args, label, lambda progress: fs.upload(args.local, target, progress=progress))
    return 0


def _cmd_fs_get(args: argparse.Namespace) -> int:
    with _connect(args) as env:
        fs = env.fs
        target = _local_target(fs, args.remote, args.local)
        label = f"get {posixpath.basename(fs.abspath(args.remote)) or args.remote}"
        _transfer(args, label, lambda progress: fs.download(args.remote, target, progress=progress))
    return 0


def _cmd_fs_rm(args: argparse.Namespace) -> int:
    with _connect(args) as env:
        fs = env.fs
        for path in args.paths:
            try:
                fs.remove(path, missing_ok=args.force)
            except IsADirectoryError:
                if not args.recursive:
                    raise _CliError(f"cannot remove {path!r}: is a directory (use -r)") from None
                fs.rmtree(path, missing_ok=args.force)
    return 0


def _cmd_fs_mkdir(args: argparse.Namespace) -> int:
    with _connect(args) as env:
        for path in args.paths:
            env.fs.mkdir(path, parents=args.parents, exist_ok=args.parents)
    return 0


def _cmd_fs_stat(args: argparse.Namespace) -> int:
    with _connect(args) as env:
        fs = env.fs
        results = []
        for path in args.paths:
            info = fs.stat(path)
            results.append(
                {
                    "path": fs.abspath(path),
                    "type": _kind(info),
                    "is_symlink": info.is_symlink,
                    "size": info.size,
                    "modified": _when(info, "modified"),
                    "created": _when(info, "created"),
                }
            )
    if args.json:
        payload: object = results[0] if len(results) == 1 else results
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return 0
    for i, item in enumerate(results):
        if i:
            sys.stdout.write("\n")
        kind = str(item["type"]) + (" (through a symbolic link)" if item["is_symlink"] else "")
        size = item["size"]
        rows = [
            ("path", str(item["path"])),
            ("type", kind),
            ("size", "unknown" if size is None else f"{size} ({_human_size(int(str(size)))})"),
            ("modified", str(item["modified"] or "unknown")),
            ("created", str(item["created"] or "unknown")),
        ]
        sys.stdout.write("".join(f"{key + ':':10}{value}\n" for key, value in rows))
    return 0


# --------------------------------------------------------------------------- info


def _cmd_info(args: argparse.Namespace) -> int:
    import execsdk

    with _connect(args) as env:
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
            "execsdk_version": execsdk.__version__,
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


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``execsdk: error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments") and "--token" in message:
            # Never echo what followed --token: it is most likely the secret itself.
            raise _UsageError(
                "--token is not accepted: a token on the command line is visible to every "
                "user of this machine; use --token-file FILE or $EXECSDK_TOKEN"
            )
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _common_options() -> _Parser:
    """Options every client command takes, before or after the subcommand name.

    Defaults are suppressed so a value given before the subcommand is not overwritten by the
    subcommand's default; :func:`_opt` supplies the defaults.
    """
    common = _Parser(add_help=False, allow_abbrev=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="server URL, ws://HOST:PORT (default: $EXECSDK_URL, else an embedded server)",
    )
    group.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="file holding the server's token (default: $EXECSDK_TOKEN); "
        "never pass a token on the command line",
    )
    group.add_argument(
        "--timeout",
        type=_positive,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="limit of each call to the server (default 30; a running process has no limit)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="tracebacks and INFO logging on stderr (-vv: DEBUG)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar",
    )
    return common


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run an exec-server (G2 protocol, as codex 0.169)",
        description="Run execsdk's own exec-server. Prints the bound ws:// URL as the first "
        "line of stdout (nothing for --listen stdio).",
        allow_abbrev=False,
    )
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        metavar="URL",
        help="ws://HOST:PORT (port 0 picks a free one; default ws://127.0.0.1:0) or stdio",
    )
    serve.add_argument(
        "--ws-auth",
        choices=["capability-token", "signed-bearer-token"],
        default=None,
        help="require `Authorization: Bearer ...` on the WebSocket upgrade: a shared token "
        "(--ws-token-file/--ws-token-sha256) or an HS256 JWT (--ws-shared-secret-file)",
    )
    serve.add_argument(
        "--ws-token-file",
        metavar="FILE",
        default=None,
        help="absolute path of a file holding the token (surrounding whitespace is ignored); "
        "implies --ws-auth capability-token",
    )
    serve.add_argument(
        "--ws-token-sha256", metavar="HEX", default=None, help="SHA-256 (hex) of the token"
    )
    serve.add_argument(
        "--ws-shared-secret-file",
        metavar="FILE",
        default=None,
        help="absolute path of the JWT signing secret (at least 32 bytes)",
    )
    serve.add_argument("--ws-issuer", metavar="ISSUER", default=None, help="required JWT `iss`")
    serve.add_argument("--ws-audience", metavar="AUDIENCE", default=None, help="required JWT `aud`")
    serve.add_argument(
        "--ws-max-clock-skew-seconds",
        type=int,
        metavar="SECONDS",
        default=None,
        help="leeway for JWT `exp`/`nbf` (default 30)",
    )
    serve.add_argument(
        "--root",
        metavar="DIR",
        default=None,
        help="confine every file path and process cwd to DIR (refused with -32600 outside "
        "it); processes start there by default. Not a sandbox: see docs/security.md",
    )
    serve.add_argument(
        "--session-grace",
        type=float,
        default=80.0,
        metavar="SECONDS",
        help="how long a disconnected session waits for a resume before its processes are "
        "killed (default 80, as codex)",
    )
    serve.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more to stderr (-vv: debug)",
    )
    serve.set_defaults(func=_cmd_serve)


def _add_fs(sub: Any, common: _Parser) -> None:
    fs = sub.add_parser(
        "fs",
        help="list, read, copy and remove files of the environment",
        description="Files of the environment. Relative remote paths resolve against the "
        "environment's working directory (see `execsdk info`).",
        parents=[common],
        allow_abbrev=False,
    )
    fs_sub = fs.add_subparsers(dest="fs_command", metavar="FS_COMMAND", parser_class=_Parser)
    fs_sub.required = True

    def leaf(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = fs_sub.add_parser(
            name,
            help=help_text,
            description=description,
            parents=[common],
            allow_abbrev=False,
        )
        return parser

    ls = leaf("ls", "list a directory", "List directories (or show files), sorted by name.")
    ls.add_argument("-l", dest="long", action="store_true", help="type, size and modified time")
    ls.add_argument("paths", nargs="*", metavar="PATH", help="default: the working directory")
    ls.set_defaults(func=_cmd_fs_ls)

    cat = leaf("cat", "print files", "Stream files to stdout, byte for byte.")
    cat.add_argument("paths", nargs="+", metavar="PATH")
    cat.set_defaults(func=_cmd_fs_cat)

    put = leaf(
        "put",
        "upload a file or a tree",
        "Copy a local file or directory tree to the environment. Onto an existing remote "
        "directory the source goes inside it (as cp -r); files are replaced.",
    )
    put.add_argument("local", metavar="LOCAL")
    put.add_argument("remote", metavar="REMOTE")
    put.set_defaults(func=_cmd_fs_put)

    get = leaf(
        "get",
        "download a file or a tree",
        "Copy a remote file or directory tree here. Onto an existing local directory the "
        "source goes inside it (as cp -r); files are replaced.",
    )
    get.add_argument("remote", metavar="REMOTE")
    get.add_argument("local", metavar="LOCAL")
    get.set_defaults(func=_cmd_fs_get)

    rm = leaf("rm", "remove files", "Remove files and links; with -r directories too.")
    rm.add_argument("-r", "--recursive", action="store_true", help="remove directory trees")
    rm.add_argument("-f", "--force", action="store_true", help="a missing path is not an error")
    rm.add_argument("paths", nargs="+", metavar="PATH")
    rm.set_defaults(func=_cmd_fs_rm)

    mkdir = leaf("mkdir", "create directories", "Create directories.")
    mkdir.add_argument(
        "-p", "--parents", action="store_true", help="create parents; an existing one is fine"
    )
    mkdir.add_argument("paths", nargs="+", metavar="PATH")
    mkdir.set_defaults(func=_cmd_fs_mkdir)

    stat = leaf("stat", "show file metadata", "Type, size and times of paths.")
    stat.add_argument("--json", action="store_true", help="machine-readable output")
    stat.add_argument("paths", nargs="+", metavar="PATH")
    stat.set_defaults(func=_cmd_fs_stat)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    import execsdk

    common = _common_options()
    parser = _Parser(
        prog="execsdk",
        description="Run processes and move files on an exec-server.",
        epilog="Without --url (or $EXECSDK_URL) commands run on an embedded server, a child "
        "process of this one. Exit status: the remote command's for run and shell, else 0; "
        "1 on an error, 2 on a usage error, 130 after Ctrl-C.",
        parents=[common],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"execsdk {execsdk.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a command, streaming its output",
        description="Run CMD in the environment. Its stdout and stderr are copied to ours as "
        "they arrive, and its exit code becomes ours. Its stdin is empty. Ctrl-C interrupts "
        "it (exit status 130).",
        parents=[common],
        allow_abbrev=False,
    )
    run.add_argument("--tty", action="store_true", help="run under a pseudo-terminal (24x80)")
    run.add_argument("--cwd", metavar="DIR", default=None, help="working directory")
    run.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="NAME=VALUE",
        help="set an environment variable (repeatable)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    run.set_defaults(func=_cmd_run)

    shell = sub.add_parser(
        "shell",
        help="an interactive shell (needs a terminal)",
        description="Start the environment's shell under a pseudo-terminal and connect this "
        "terminal to it (raw mode; restored on exit). Exits with the shell's exit code.",
        parents=[common],
        allow_abbrev=False,
    )
    shell.set_defaults(func=_cmd_shell)

    _add_fs(sub, common)

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

    _add_serve(sub)
    return parser


# --------------------------------------------------------------------------- main


class _OneLineFormatter(logging.Formatter):
    """``execsdk: warning: message``: what a command-line user sees without ``-v``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"execsdk: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbosity: int, *, server: bool) -> None:
    """Logging to stderr: WARNING, ``-v`` INFO, ``-vv`` DEBUG.

    ``serve`` configures the root logger (its websockets logger is redacted in
    ``server/ws.py``). The client commands give a handler to the ``execsdk`` logger only and
    leave other libraries at WARNING: their DEBUG output is not ours to vouch for.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if server:
        logging.basicConfig(
            level=level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return
    logger = logging.getLogger("execsdk")
    for old in [h for h in logger.handlers if getattr(h, "execsdk_cli", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.execsdk_cli = True  # type: ignore[attr-defined]
    if verbosity > 0:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLineFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _error_line(message: str) -> None:
    text = " ".join(message.split()) or "unknown error"
    try:
        sys.stderr.write(f"execsdk: error: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _describe(exc: BaseException) -> str:
    from execsdk.errors import ExecSdkError

    text = str(exc)
    if isinstance(exc, (_CliError, ExecSdkError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the final flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _error_line(str(exc))
        return EXIT_USAGE
    verbosity = int(_opt(args, "verbose", 0) or 0)
    _setup_logging(verbosity, server=args.command == "serve")
    try:
        result: int = args.func(args)
    except _UsageError as exc:
        if args.command == "serve":
            print(f"execsdk serve: {exc}", file=sys.stderr)
        else:
            _error_line(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _Stopped as exc:
        return 128 + exc.signum
    except Exception as exc:
        from execsdk.errors import ExecSdkError

        if isinstance(exc, BrokenPipeError) and not isinstance(exc, ExecSdkError):
            # Our stdout was closed early (`execsdk fs cat big | head`): not an error.
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if verbosity > 0:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        _error_line(_describe(exc))
        return EXIT_ERROR
    return result
