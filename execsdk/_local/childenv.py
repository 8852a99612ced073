"""The environment of a child process, built as PROTOCOL.md §3.4 says (local backend and server).

Without a policy the child gets exactly the requested variables; with one, inherited variables
are filtered by globs that know only ``*`` and ``?`` and ignore case, as codex does.
Pure functions: safe from any thread.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from execsdk import errors
from execsdk.backends import (
    EnvPolicy,
)

__all__ = ["CORE_ENV_VARS", "DEFAULT_ENV_EXCLUDES", "build_child_env"]

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
    ``spec_env``. Globs know ``*`` and ``?`` and ignore case, as codex does.

    Raises:
        errors.InvalidParams: ``policy.inherit`` is not all, core or none.
    """
    if policy is None:
        return dict(spec_env)
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
    return env
