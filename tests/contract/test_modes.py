"""Permission bits travel: ``chmod``, ``stat().mode`` and ``preserve_mode`` on every environment.

One fixture, ``env`` (tests/contract/conftest.py): local, codex 0.169 (G2), codex 0.123 (G1) and
our server. Every server runs on this machine, so what a transfer wrote is checked with
``os.stat`` on the real disk, never through the code under test. Codex servers have no permission
calls: there the facade runs ``chmod`` and ``stat`` processes, and ``stat().mode`` is None.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from execsdk.environment import Environment
from execsdk.fs import Fs
from execsdk.remote.remoteenv import RemoteEnvironment

pytestmark = pytest.mark.timeout(120)

# Relative path -> mode. Directories end in "/". Names a shell or chmod could misread are on
# purpose: spaces, a leading dash, a newline, a quote.
TREE: dict[str, int] = {
    "": 0o750,
    "run.sh": 0o755,
    "secret": 0o600,
    "plain.txt": 0o644,
    "-rf": 0o640,
    "new\nline": 0o604,
    "it's here": 0o711,
    "setuid": 0o4755,
    "private/": 0o700,
    "private/key": 0o400,
    "private/deeper/": 0o2750,
    "private/deeper/tool": 0o750,
    "shared/": 0o1777,
    "shared/note": 0o666,
    "locked/": 0o500,
    "locked/inside": 0o444,
}


@pytest.fixture
def fs(env: Environment) -> Fs:
    return env.fs


@pytest.fixture
def base(env: Environment) -> Iterator[str]:
    """A fresh directory on the environment; removed afterwards (made writable first)."""
    path = posixpath.join(env.info.temp_dir, f"execsdk-modes-{secrets.token_hex(6)}")
    env.fs.mkdir(path)
    yield path
    _make_removable(path)
    env.fs.rmtree(path, missing_ok=True)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask (the local side of transfers; a local environment's server)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _make_removable(path: str | Path) -> None:
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)


def make_tree(root: str | Path) -> None:
    """TREE on the real disk under ``root``: files written, then every mode set, deepest last."""
    root = Path(root)
    root.mkdir(exist_ok=True)
    for rel in TREE:
        if rel.endswith("/"):
            (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in TREE:
        if rel and not rel.endswith("/"):
            (root / rel).write_text(f"content of {rel}")
    for rel in sorted(TREE, key=lambda r: -r.count("/")):
        os.chmod(root / rel.rstrip("/") if rel else root, TREE[rel])


def modes_on_disk(root: str | Path) -> dict[str, int]:
    """Relative path -> permission bits, as TREE spells it, read with os.lstat."""
    found = {"": stat.S_IMODE(os.lstat(root).st_mode)}
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        for name in dirs:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            found[rel + "/"] = stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode)
        for name in files:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            found[rel] = stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode)
    return found


def server_umask(env: Environment) -> int:
    """The umask files created by the environment get (its processes inherit it)."""
    result = env.run(["/bin/sh", "-c", "umask"], timeout=30)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.decode().strip(), 8)


def has_mode_calls(env: Environment) -> bool:
    return env.info.generation == "local" or "execsdk/fileMode" in env.info.capabilities


def fmt(modes: dict[str, int]) -> dict[str, str]:
    return {k: oct(v) for k, v in sorted(modes.items())}


# --------------------------------------------------------------------------- chmod and stat


def test_chmod_then_stat(env: Environment, fs: Fs, base: str) -> None:
    f = f"{base}/f"
    fs.write_bytes(f, b"x")
    for mode in (0o640, 0o755, 0o600, 0o4711, 0o000, 0o777):
        fs.chmod(f, mode)
        assert stat.S_IMODE(os.stat(f).st_mode) == mode
        info = fs.stat(f)
        assert info.is_file
        assert info.mode == (mode if has_mode_calls(env) else None)
    fs.mkdir(f"{base}/d")
    fs.path(f"{base}/d").chmod(0o700)
    assert stat.S_IMODE(os.stat(f"{base}/d").st_mode) == 0o700
    assert fs.path(f"{base}/d").stat().mode == (0o700 if has_mode_calls(env) else None)
    fs.chmod(f"{base}/d", 0o2755)  # five octal digits reach chmod: setgid is set exactly
    assert stat.S_IMODE(os.stat(f"{base}/d").st_mode) == 0o2755
    fs.chmod(f"{base}/d", 0o755)  # ... and cleared exactly (GNU chmod keeps it for "755")
    assert stat.S_IMODE(os.stat(f"{base}/d").st_mode) == 0o755


def test_chmod_follows_a_link_and_reports_missing_paths(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/target", b"x")
    os.symlink(f"{base}/target", f"{base}/link")
    fs.chmod(f"{base}/link", 0o604)
    assert stat.S_IMODE(os.stat(f"{base}/target").st_mode) == 0o604
    with pytest.raises(FileNotFoundError):
        fs.chmod(f"{base}/missing", 0o600)
    os.symlink(f"{base}/nowhere", f"{base}/dangling")
    with pytest.raises(FileNotFoundError):
        fs.chmod(f"{base}/dangling", 0o600)


@pytest.mark.parametrize("bad", [0o10000, -1, 0o100644])
def test_chmod_refuses_what_is_not_permission_bits(fs: Fs, base: str, bad: int) -> None:
    fs.write_bytes(f"{base}/f", b"x")
    os.chmod(f"{base}/f", 0o640)
    with pytest.raises(ValueError, match="permission bits"):
        fs.chmod(f"{base}/f", bad)
    with pytest.raises(TypeError):
        fs.chmod(f"{base}/f", "755")  # type: ignore[arg-type]
    assert stat.S_IMODE(os.stat(f"{base}/f").st_mode) == 0o640


def test_stat_mode_follows_links(env: Environment, fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/target", b"x")
    os.chmod(f"{base}/target", 0o610)
    os.symlink(f"{base}/target", f"{base}/link")
    info = fs.stat(f"{base}/link")
    assert info.is_symlink and info.is_file
    assert info.mode == (0o610 if has_mode_calls(env) else None)


# --------------------------------------------------------------------------- transfers


def test_upload_tree_keeps_every_mode(fs: Fs, base: str, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    try:
        with umask(0o077):  # the local side's umask plays no part (nor the server's)
            fs.upload(tmp_path / "src", f"{base}/dst")
        assert fmt(modes_on_disk(f"{base}/dst")) == fmt(TREE)
        assert Path(f"{base}/dst/private/deeper/tool").read_text() == (
            "content of private/deeper/tool"
        )
        # Into the same tree again: existing files and directories get the bits again.
        os.chmod(f"{base}/dst/secret", 0o666)
        os.chmod(f"{base}/dst/private", 0o755)
        fs.upload(tmp_path / "src", f"{base}/dst")
        assert fmt(modes_on_disk(f"{base}/dst")) == fmt(TREE)
    finally:
        _make_removable(tmp_path)


def test_download_tree_keeps_every_mode(fs: Fs, base: str, tmp_path: Path) -> None:
    make_tree(f"{base}/src")
    try:
        with umask(0o077):
            fs.download(f"{base}/src", tmp_path / "dst")
        assert fmt(modes_on_disk(tmp_path / "dst")) == fmt(TREE)
        assert (tmp_path / "dst" / "locked" / "inside").read_text() == "content of locked/inside"
    finally:
        _make_removable(tmp_path)


def test_copy_tree_keeps_every_mode(fs: Fs, base: str) -> None:
    make_tree(f"{base}/src")
    fs.copy(f"{base}/src", f"{base}/dst", recursive=True)
    assert fmt(modes_on_disk(f"{base}/dst")) == fmt(TREE)


def test_single_files_keep_their_mode(fs: Fs, base: str, tmp_path: Path) -> None:
    for name, mode in (("run.sh", 0o755), ("secret", 0o600), ("setuid", 0o4750)):
        local = tmp_path / name
        local.write_text(name)
        os.chmod(local, mode)
        with umask(0o077):
            fs.upload(local, f"{base}/{name}")
            assert stat.S_IMODE(os.stat(f"{base}/{name}").st_mode) == mode
            fs.download(f"{base}/{name}", tmp_path / f"back-{name}")
            assert stat.S_IMODE(os.stat(tmp_path / f"back-{name}").st_mode) == mode
        fs.copy(f"{base}/{name}", f"{base}/copy-{name}")
        assert stat.S_IMODE(os.stat(f"{base}/copy-{name}").st_mode) == mode
    # An existing destination file gets the source's bits too.
    os.chmod(f"{base}/secret", 0o644)
    fs.upload(tmp_path / "secret", f"{base}/secret")
    assert stat.S_IMODE(os.stat(f"{base}/secret").st_mode) == 0o600


def test_without_preserve_mode_new_files_get_the_umask_default(
    env: Environment, fs: Fs, base: str, tmp_path: Path
) -> None:
    make_tree(tmp_path / "src")
    try:
        remote_mask = server_umask(env)
        fs.upload(tmp_path / "src", f"{base}/up", preserve_mode=False)
        up = modes_on_disk(f"{base}/up")
        assert {rel: mode for rel, mode in up.items() if rel.endswith("/") or not rel} == {
            rel: 0o777 & ~remote_mask for rel in TREE if rel.endswith("/") or not rel
        }
        assert {rel: mode for rel, mode in up.items() if rel and not rel.endswith("/")} == {
            rel: 0o666 & ~remote_mask for rel in TREE if rel and not rel.endswith("/")
        }
        fs.upload(tmp_path / "src" / "run.sh", f"{base}/one", preserve_mode=False)
        assert stat.S_IMODE(os.stat(f"{base}/one").st_mode) == 0o666 & ~remote_mask

        make_tree(f"{base}/src")
        with umask(0o027):
            fs.download(f"{base}/src", tmp_path / "down", preserve_mode=False)
            fs.download(f"{base}/src/run.sh", tmp_path / "one", preserve_mode=False)
        down = modes_on_disk(tmp_path / "down")
        assert {rel: mode for rel, mode in down.items() if rel.endswith("/") or not rel} == {
            rel: 0o750 for rel in TREE if rel.endswith("/") or not rel
        }
        assert {rel: mode for rel, mode in down.items() if rel and not rel.endswith("/")} == {
            rel: 0o640 for rel in TREE if rel and not rel.endswith("/")
        }
        assert stat.S_IMODE(os.stat(tmp_path / "one").st_mode) == 0o640
    finally:
        _make_removable(tmp_path)


def test_copy_without_preserve_mode_keeps_only_the_file_modes(
    env: Environment, fs: Fs, base: str
) -> None:
    """Every server's fs/copy copies a file's bits (as shutil.copy); directories get the
    server's defaults unless preserve_mode gives them their source's bits."""
    make_tree(f"{base}/src")
    remote_mask = server_umask(env)
    fs.copy(f"{base}/src", f"{base}/dst", recursive=True, preserve_mode=False)
    copied = modes_on_disk(f"{base}/dst")
    for rel, mode in TREE.items():
        if rel.endswith("/") or not rel:
            assert copied[rel] == 0o777 & ~remote_mask, rel
        else:
            assert copied[rel] == mode, rel


def test_copy_of_a_link_to_a_directory_changes_no_mode(fs: Fs, base: str) -> None:
    make_tree(f"{base}/src")
    os.symlink(f"{base}/src", f"{base}/link")
    fs.copy(f"{base}/link", f"{base}/copy", recursive=True)
    assert os.readlink(f"{base}/copy") == f"{base}/src"
    assert fmt(modes_on_disk(f"{base}/src")) == fmt(TREE)


def test_download_from_a_file_without_read_access_for_others_keeps_mode(
    fs: Fs, base: str, tmp_path: Path
) -> None:
    """A 0000 file: the server reads it (it runs as its owner, here root) and the copy is 0000
    too, not readable by anyone but root, as cp -p would leave it."""
    fs.write_bytes(f"{base}/none", b"hidden")
    os.chmod(f"{base}/none", 0)
    try:
        if os.geteuid() != 0:
            pytest.skip("needs root to read a 0000 file")
        fs.download(f"{base}/none", tmp_path / "none")
        assert stat.S_IMODE(os.stat(tmp_path / "none").st_mode) == 0
        assert (tmp_path / "none").read_bytes() == b"hidden"
    finally:
        os.chmod(f"{base}/none", 0o600)


# --------------------------------------------------------------------------- capability


def test_only_our_server_announces_the_file_mode_capability(env: Environment) -> None:
    announced = "execsdk/fileMode" in env.info.capabilities
    if env.info.generation == "local":
        assert not announced  # nothing to announce: the local backend has the calls itself
        return
    assert isinstance(env, RemoteEnvironment)
    info = env.client.server_info
    version = info.environment.executor_version if info.environment is not None else None
    ours = version is not None and version.startswith("execsdk-")
    assert announced is ours
    assert env.client.supports("fs/setMode") is ours
    assert env.client.supports("fs/stat") is ours
