"""What a child process starts with: its environment (PROTOCOL.md §3.4) and clean signals.

Without a policy the child gets exactly the requested variables; with one, inherited variables
are filtered by globs that know only ``*`` and ``?`` and ignore case, as codex does.

:func:`clean_spawn` starts a child with every signal disposition at its default and an empty
signal mask, whatever this process ignores or blocks (a server started under ``nohup`` ignores
SIGHUP; ignored signals survive ``exec``), in its own session, with a working directory. It
calls libc's ``posix_spawn`` through ``ctypes`` (``subprocess`` has no way to reset ignored
signals short of a ``preexec_fn``, which is slow and unsafe in a threaded process): glibc
spawns with ``CLONE_VFORK``, nothing runs in Python in the child, and the GIL is released
meanwhile. Where libc lacks what it needs (``posix_spawn_file_actions_addchdir_np``, glibc >=
2.29, musl >= 1.1.24), :data:`CLEAN_SPAWN` is False and callers fall back to ``subprocess``.
Safe from any thread.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import re
import sys
from collections.abc import Mapping, Sequence

from execsdk import errors
from execsdk.backends import (
    EnvPolicy,
)

__all__ = ["CLEAN_SPAWN", "CORE_ENV_VARS", "DEFAULT_ENV_EXCLUDES", "build_child_env", "clean_spawn"]

CORE_ENV_VARS: tuple[str, ...] = (
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TEMP",
    "TMP",
    "TMPDIR",
    "USER",
)
"""Names kept by ``inherit="core"``: the set codex 0.169 keeps on Linux (probed; it does not
keep TERM, USERNAME, LANGUAGE or LC_MESSAGES)."""

DEFAULT_ENV_EXCLUDES: tuple[str, ...] = ("*KEY*", "*SECRET*", "*TOKEN*")
"""Dropped (case-insensitively) unless ``ignore_default_excludes``."""


@functools.lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    # codex matches env names with `*` and `?` only (no [classes]) and ignores case, for the
    # default excludes and for exclude/includeOnly alike (probed against 0.169).
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(_glob(p).fullmatch(name) is not None for p in patterns)


def build_child_env(
    spec_env: Mapping[str, str], policy: EnvPolicy | None, base_env: Mapping[str, str]
) -> dict[str, str]:
    """The child's environment per PROTOCOL.md §3.4 (shared by the local backend and our server).

    ``policy=None``: exactly ``spec_env``. Otherwise start from ``base_env`` (``"all"``), its
    :data:`CORE_ENV_VARS` (``"core"``) or nothing (``"none"``); unless
    ``ignore_default_excludes`` drop :data:`DEFAULT_ENV_EXCLUDES`; drop ``exclude`` matches;
    apply ``set``; keep only ``include_only`` matches when it is non-empty; overlay
    ``spec_env``. Globs know ``*`` and ``?`` and ignore case, as codex does. The result is
    sorted by name, as codex passes it; a name may hold ``=`` (the child then sees ``A=B=c``
    for ``{"A=B": "c"}``, as under codex).

    Raises:
        errors.InvalidParams: ``policy.inherit`` is not all, core or none.
    """
    if policy is None:
        return _sorted(spec_env)
    if policy.inherit == "all":
        env = dict(base_env)
    elif policy.inherit == "core":
        env = {k: base_env[k] for k in CORE_ENV_VARS if k in base_env}
    elif policy.inherit == "none":
        env = {}
    else:
        raise errors.InvalidParams(
            -32602, f"unknown variant `{policy.inherit}`, expected one of `core`, `all`, `none`"
        )
    if not policy.ignore_default_excludes:
        env = {k: v for k, v in env.items() if not _matches_any(k, DEFAULT_ENV_EXCLUDES)}
    if policy.exclude:
        env = {k: v for k, v in env.items() if not _matches_any(k, policy.exclude)}
    env.update(policy.set)
    if policy.include_only:
        env = {k: v for k, v in env.items() if _matches_any(k, policy.include_only)}
    env.update(spec_env)
    return _sorted(env)


def _sorted(env: Mapping[str, str]) -> dict[str, str]:
    # codex hands the child its environment sorted by name (bytewise), as a BTreeMap does.
    return dict(sorted(env.items(), key=lambda item: os.fsencode(item[0])))


# ----------------------------------------------------------------------------- clean spawn

# posix_spawnattr flags, the same in glibc and musl.
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
# Room for posix_spawn_file_actions_t (80 bytes in glibc), posix_spawnattr_t (336) and
# sigset_t (128): generous, so a libc with larger ones is not overrun.
_ACTIONS_SIZE = 512
_ATTR_SIZE = 1024
_SIGSET_SIZE = 512

_int_p = ctypes.POINTER(ctypes.c_int)


class _Libc:
    """The libc functions :func:`clean_spawn` calls. Thread-safety: immutable after init."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.spawn = libc.posix_spawn
        self.spawn.restype = ctypes.c_int
        self.spawn.argtypes = [
            _int_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.fa_init = libc.posix_spawn_file_actions_init
        self.fa_destroy = libc.posix_spawn_file_actions_destroy
        self.fa_dup2 = libc.posix_spawn_file_actions_adddup2
        self.fa_dup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.fa_open = libc.posix_spawn_file_actions_addopen
        self.fa_open.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint,
        ]
        self.fa_chdir = libc.posix_spawn_file_actions_addchdir_np
        self.fa_chdir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.fa_closefrom = getattr(libc, "posix_spawn_file_actions_addclosefrom_np", None)
        if self.fa_closefrom is not None:
            self.fa_closefrom.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.at_init = libc.posix_spawnattr_init
        self.at_destroy = libc.posix_spawnattr_destroy
        self.at_flags = libc.posix_spawnattr_setflags
        self.at_flags.argtypes = [ctypes.c_void_p, ctypes.c_short]
        self.at_sigmask = libc.posix_spawnattr_setsigmask
        self.at_sigdef = libc.posix_spawnattr_setsigdefault
        for fn in (self.at_sigmask, self.at_sigdef):
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        empty = ctypes.create_string_buffer(_SIGSET_SIZE)
        full = ctypes.create_string_buffer(_SIGSET_SIZE)
        libc.sigemptyset(empty)
        # Every bit, not sigfillset(): that leaves out glibc's internal signals (32 and 33),
        # which glibc's spawn then sets to SIG_IGN in the child, and exec keeps ignored.
        ctypes.memset(full, 0xFF, 16)
        self.empty_set = empty
        self.full_set = full


def _load_libc() -> _Libc | None:
    if not sys.platform.startswith("linux") or os.environ.get("EXECSDK_SPAWN") == "subprocess":
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):  # no ctypes-loadable libc, or too old for addchdir_np
        return None


_LIBC = _load_libc()
CLEAN_SPAWN = _LIBC is not None
"""True when :func:`clean_spawn` can be used here (``EXECSDK_SPAWN=subprocess`` turns it off)."""


def _find_executable(executable: str, env: Mapping[str, str], cwd: str) -> str:
    """The path to exec: ``executable`` itself when it holds a slash, else the first executable
    file of that name on the child's PATH (``os.defpath`` when it has none), as execvpe would."""
    if "/" in executable:
        return executable
    denied: str | None = None
    path = env.get("PATH")
    for folder in (path if path is not None else os.defpath).split(os.pathsep):
        candidate = f"{folder or '.'}/{executable}"
        # A relative PATH entry counts from the cwd.
        checked = candidate if folder.startswith("/") else os.path.join(cwd, candidate)
        if os.access(checked, os.X_OK):  # one system call for the usual miss
            if os.path.isfile(checked):
                return candidate
        elif os.path.isfile(checked):
            denied = denied or candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), executable)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), executable)


def clean_spawn(
    argv: Sequence[str],
    *,
    executable: str,
    env: Mapping[str, str],
    cwd: str,
    stdio: tuple[int, int, int] | None,
    tty_path: str | None = None,
) -> int:
    """Start ``executable`` (looked up on ``env``'s PATH) with ``argv``; return its pid.

    The child runs in a new session, in ``cwd``, with default signal dispositions and an empty
    signal mask. ``stdio`` are the fds that become its 0, 1 and 2 (-1 for ``/dev/null``);
    with ``tty_path`` it opens that pty slave as 0, 1 and 2 instead, which also makes it the
    new session's controlling terminal. Every other fd is closed where libc can
    (``addclosefrom_np``, glibc >= 2.34); elsewhere only close-on-exec fds (every fd Python
    opens) stay behind.

    Raises:
        OSError: the executable or the cwd is missing or not usable (``filename`` says which).
        ValueError: a NUL byte in an argument, a variable or the cwd. A name holding ``=``
            is passed on as it is (codex does so).
    """
    libc = _LIBC
    assert libc is not None, "clean_spawn() is not available here (see CLEAN_SPAWN)"
    path = _find_executable(executable, env, cwd)
    for value in (*argv, *env.keys(), *env.values(), cwd, path):
        if "\0" in value:
            raise ValueError("embedded null byte")
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
    c_env = (ctypes.c_char_p * (len(env) + 1))(
        *[os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()], None
    )
    actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    moved: list[int] = []
    libc.fa_init(actions)
    libc.at_init(attr)
    try:
        if stdio is not None:
            # A source among 0-2 (this process started with them closed) would be overwritten
            # by an earlier dup2: give it a number above them first.
            fds = list(stdio)
            for i, fd in enumerate(fds):
                if 0 <= fd < 3:
                    fds[i] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                    moved.append(fds[i])
            stdio = (fds[0], fds[1], fds[2])
        if tty_path is not None:
            # After setsid(): opening the slave (no O_NOCTTY) makes it the controlling tty.
            libc.fa_open(actions, 0, os.fsencode(tty_path), os.O_RDWR, 0)
            libc.fa_dup2(actions, 0, 1)
            libc.fa_dup2(actions, 0, 2)
        else:
            assert stdio is not None
            for target, fd in enumerate(stdio):
                if fd < 0:
                    flags = os.O_RDONLY if target == 0 else os.O_WRONLY
                    libc.fa_open(actions, target, b"/dev/null", flags, 0)
                else:
                    libc.fa_dup2(actions, fd, target)
        if libc.fa_closefrom is not None:
            libc.fa_closefrom(actions, 3)
        libc.fa_chdir(actions, os.fsencode(cwd))
        libc.at_flags(attr, _SETSIGDEF | _SETSIGMASK | _SETSID)
        libc.at_sigdef(attr, libc.full_set)
        libc.at_sigmask(attr, libc.empty_set)
        pid = ctypes.c_int(0)
        code = libc.spawn(ctypes.byref(pid), os.fsencode(path), actions, attr, c_argv, c_env)
    finally:
        libc.fa_destroy(actions)
        libc.at_destroy(attr)
        for fd in moved:
            os.close(fd)
    if code:
        # ENOENT/ENOTDIR/EACCES come from chdir or exec: say which path failed.
        filename = path
        if code in (errno.ENOENT, errno.ENOTDIR, errno.EACCES) and not os.path.isdir(cwd):
            filename = cwd
        raise OSError(code, os.strerror(code), filename)
    return pid.value
