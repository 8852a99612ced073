"""The filesystem contract: every ``Fs`` method behaves the same on every environment.

One fixture, ``env`` (tests/contract/conftest.py): local, codex 0.169 (G2), codex 0.123 (G1) and
our server. Everything is set up through the environment itself (``env.fs``, ``env.run``), so
the suite would hold for a server on another machine. Feature-dependent paths are not skipped:
on G1 the same tests run through the fallbacks (staged part writes, ``dd`` windows, ``realpath``,
client-side walk).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import io
import os
import posixpath
import secrets
import shutil
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, cast

import attrs
import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from execsdk import errors
from execsdk._deadline import UNSET, Timeoutish
from execsdk.backends import FileMetadata, FsBackend
from execsdk.environment import Environment
from execsdk.fs import Fs, RemotePath

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


@pytest.fixture
def fs(env: Environment) -> Fs:
    return env.fs


@pytest.fixture
def base(env: Environment) -> Iterator[str]:
    """A fresh directory on the environment, removed afterwards."""
    path = posixpath.join(env.info.temp_dir, f"execsdk-contract-{secrets.token_hex(6)}")
    env.fs.mkdir(path)
    yield path
    env.fs.rmtree(path, missing_ok=True)


def sh(env: Environment, *argv: str) -> None:
    result = env.run(list(argv), timeout=30)
    assert result.returncode == 0, result.stderr


def symlink(env: Environment, target: str, link: str) -> None:
    sh(env, "ln", "-s", target, link)


def is_g1(env: Environment) -> bool:
    return env.info.generation == "G1"


class Recorder:
    """Collects progress calls and checks the contract: monotone, ends at the total."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.threads: set[str] = set()

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        self.threads.add(threading.current_thread().name)

    def check(self, total: int) -> None:
        assert self.calls, "progress was never called"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), "progress went backwards"
        assert all(t == total for _, t in self.calls)
        assert self.calls[-1] == (total, total)
        assert self.threads == {threading.current_thread().name}


# --------------------------------------------------------------------------- features and paths


def test_features_match_the_generation(env: Environment, fs: Fs) -> None:
    expected = frozenset() if is_g1(env) else frozenset({"canonicalize", "walk", "blocks"})
    assert fs.features == expected


def test_relative_paths_resolve_against_the_environment_cwd(env: Environment, fs: Fs) -> None:
    cwd = env.info.cwd
    assert fs.cwd == posixpath.normpath(cwd)
    assert fs.abspath("a/b") == posixpath.join(fs.cwd, "a/b")
    assert fs.abspath(PurePosixPath("x/../y")) == posixpath.join(fs.cwd, "y")
    assert fs.abspath("/a/./b/../c/") == "/a/c"
    assert str(fs.path("rel")) == posixpath.join(fs.cwd, "rel")


def test_dotdot_is_resolved_textually_before_symlinks(env: Environment, fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/real/x", parents=True)
    symlink(env, f"{base}/real/x", f"{base}/lx")
    fs.write_text(f"{base}/lx/../f", "textual")
    assert fs.read_text(f"{base}/f") == "textual"
    assert not fs.exists(f"{base}/real/f")


# --------------------------------------------------------------------------- read / write


@pytest.mark.parametrize("size", [0, 1, 65_537])
def test_write_bytes_then_read_bytes_round_trip(fs: Fs, base: str, size: int) -> None:
    data = os.urandom(size)
    assert fs.write_bytes(f"{base}/f", data) == size
    assert fs.read_bytes(f"{base}/f") == data


def test_write_bytes_replaces_existing_content(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"a much longer first version")
    fs.write_bytes(f"{base}/f", bytearray(b"short"))
    assert fs.read_bytes(f"{base}/f") == b"short"


def test_text_round_trip_with_unicode_and_newlines(fs: Fs, base: str) -> None:
    text = "h\u00e9llo \u6587\u4ef6 \U0001f600\nline2\r\nline3\r"
    assert fs.write_text(f"{base}/t.txt", text) == len(text)
    assert fs.read_bytes(f"{base}/t.txt") == text.encode("utf-8")
    assert fs.read_text(f"{base}/t.txt") == "h\u00e9llo \u6587\u4ef6 \U0001f600\nline2\nline3\n"
    assert fs.read_text(f"{base}/t.txt", newline="") == text
    fs.write_text(f"{base}/l1.txt", "caf\u00e9", encoding="latin-1")
    assert fs.read_bytes(f"{base}/l1.txt") == b"caf\xe9"


@pytest.mark.parametrize(
    "name", ["\u00fcn\u00efc\u00f8d\u00e9 \u6587\u4ef6.txt", "sp ace", "h#sh", "p%20c", ".hidden"]
)
def test_unusual_names_round_trip(fs: Fs, base: str, name: str) -> None:
    fs.write_text(f"{base}/{name}", name)
    assert fs.read_text(f"{base}/{name}") == name
    assert fs.listdir(base) == [name]


def test_read_missing_file_raises_file_not_found(fs: Fs, base: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        fs.read_bytes(f"{base}/nope")
    assert isinstance(info.value, errors.RemoteOSError)
    assert info.value.errno == errno.ENOENT


def test_read_directory_as_file_raises_is_a_directory(fs: Fs, base: str) -> None:
    with pytest.raises(IsADirectoryError):
        fs.read_bytes(base)
    with pytest.raises(IsADirectoryError):
        fs.read_text(base)


def test_read_below_a_file_raises_not_a_directory(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"x")
    with pytest.raises(NotADirectoryError):
        fs.read_bytes(f"{base}/f/x")


def test_read_special_file_raises_os_error(env: Environment, fs: Fs, base: str) -> None:
    sh(env, "mkfifo", f"{base}/fifo")
    with pytest.raises(OSError) as info:
        fs.read_bytes(f"{base}/fifo", timeout=20)
    assert not isinstance(info.value, TimeoutError)
    with pytest.raises(OSError) as info:
        fs.open(f"{base}/fifo", "rb", timeout=20)
    assert not isinstance(info.value, TimeoutError)
    with pytest.raises(OSError) as info:
        fs.download(f"{base}/fifo", "/nonexistent-dir/never-written", timeout=20)
    assert not isinstance(info.value, TimeoutError)


def test_write_into_missing_parent_raises_file_not_found(fs: Fs, base: str) -> None:
    with pytest.raises(FileNotFoundError):
        fs.write_bytes(f"{base}/missing/f", b"x")
    assert not fs.exists(f"{base}/missing")


def test_write_onto_directory_raises_is_a_directory(fs: Fs, base: str) -> None:
    with pytest.raises(IsADirectoryError):
        fs.write_bytes(base, b"x")


def test_write_below_a_file_raises_not_a_directory(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"x")
    with pytest.raises(NotADirectoryError):
        fs.write_bytes(f"{base}/f/x", b"x")


def test_read_through_symlink_and_dangling_symlink(env: Environment, fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/target", b"linked")
    symlink(env, f"{base}/target", f"{base}/link")
    symlink(env, f"{base}/nowhere", f"{base}/dangling")
    assert fs.read_bytes(f"{base}/link") == b"linked"
    with pytest.raises(FileNotFoundError):
        fs.read_bytes(f"{base}/dangling")


def test_zero_timeout_raises_timeout_error(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"x")
    with pytest.raises(TimeoutError):
        fs.read_bytes(f"{base}/f", timeout=0)
    with pytest.raises(TimeoutError):
        fs.rmtree(base, timeout=0)
    assert fs.exists(f"{base}/f")


# ------------------------------------------------------------------- directories and metadata


def test_mkdir_semantics(fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/d")
    assert fs.is_dir(f"{base}/d")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{base}/d")
    fs.mkdir(f"{base}/d", exist_ok=True)
    with pytest.raises(FileNotFoundError):
        fs.mkdir(f"{base}/a/b/c")
    fs.mkdir(f"{base}/a/b/c", parents=True)
    assert fs.is_dir(f"{base}/a/b/c")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{base}/a/b/c", parents=True)
    fs.mkdir(f"{base}/a/b/c", parents=True, exist_ok=True)
    fs.write_bytes(f"{base}/file", b"x")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{base}/file", exist_ok=True)
    with pytest.raises(NotADirectoryError):
        fs.mkdir(f"{base}/file/sub", parents=True)


def test_listdir_and_iterdir(env: Environment, fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/b.txt", b"")
    fs.mkdir(f"{base}/a")
    symlink(env, f"{base}/a", f"{base}/c-link")
    symlink(env, f"{base}/nowhere", f"{base}/dangling")
    assert fs.listdir(base) == ["a", "b.txt", "c-link"]
    entries = list(fs.iterdir(base))
    assert [(e.name, e.is_file, e.is_dir) for e in entries] == [
        ("a", False, True),
        ("b.txt", True, False),
        ("c-link", False, True),
    ]
    if env.info.generation == "local":
        assert [e.is_symlink for e in entries] == [False, False, True]
    assert fs.listdir(f"{base}/a") == []
    with pytest.raises(FileNotFoundError):
        fs.listdir(f"{base}/nope")
    with pytest.raises(NotADirectoryError):
        fs.listdir(f"{base}/b.txt")


def test_stat_reports_type_size_and_link_flag(env: Environment, fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"12345")
    symlink(env, f"{base}/f", f"{base}/link")
    info = fs.stat(f"{base}/f")
    assert (info.is_file, info.is_dir, info.is_symlink) == (True, False, False)
    assert info.size == (None if is_g1(env) else 5)
    assert info.modified is not None and info.modified.tzinfo is not None
    link = fs.stat(f"{base}/link")
    assert (link.is_file, link.is_symlink) == (True, True)
    directory = fs.stat(base)
    assert (directory.is_file, directory.is_dir) == (False, True)
    with pytest.raises(FileNotFoundError):
        fs.stat(f"{base}/nope")


def test_exists_is_file_is_dir(env: Environment, fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"")
    symlink(env, f"{base}/nowhere", f"{base}/dangling")
    cases = {
        base: (True, False, True),
        f"{base}/f": (True, True, False),
        f"{base}/nope": (False, False, False),
        f"{base}/dangling": (False, False, False),
        f"{base}/f/below": (False, False, False),
    }
    for path, expected in cases.items():
        assert (fs.exists(path), fs.is_file(path), fs.is_dir(path)) == expected, path


# --------------------------------------------------------------------------- removal


def test_remove_file_and_missing_ok(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"x")
    fs.remove(f"{base}/f")
    assert not fs.exists(f"{base}/f")
    with pytest.raises(FileNotFoundError):
        fs.remove(f"{base}/f")
    fs.remove(f"{base}/f", missing_ok=True)


def test_remove_directory_raises_is_a_directory(fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/d")
    with pytest.raises(IsADirectoryError):
        fs.remove(f"{base}/d")
    assert fs.is_dir(f"{base}/d")


def test_remove_links_never_their_targets(env: Environment, fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/d")
    fs.write_bytes(f"{base}/d/keep", b"k")
    symlink(env, f"{base}/d", f"{base}/dlink")
    symlink(env, f"{base}/nowhere", f"{base}/dangling")
    fs.remove(f"{base}/dlink")
    fs.remove(f"{base}/dangling")
    assert fs.listdir(base) == ["d"]
    assert fs.read_bytes(f"{base}/d/keep") == b"k"


def test_rmdir_semantics(fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/empty")
    fs.rmdir(f"{base}/empty")
    assert not fs.exists(f"{base}/empty")
    fs.mkdir(f"{base}/full")
    fs.write_bytes(f"{base}/full/f", b"")
    with pytest.raises(OSError) as info:
        fs.rmdir(f"{base}/full")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(NotADirectoryError):
        fs.rmdir(f"{base}/full/f")
    with pytest.raises(FileNotFoundError):
        fs.rmdir(f"{base}/nope")


def test_rmtree_semantics(env: Environment, fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/t/a/b", parents=True)
    fs.write_bytes(f"{base}/t/a/b/f", b"x")
    fs.mkdir(f"{base}/outside")
    fs.write_bytes(f"{base}/outside/keep", b"k")
    symlink(env, f"{base}/outside", f"{base}/t/link")
    fs.rmtree(f"{base}/t")
    assert not fs.exists(f"{base}/t")
    assert fs.read_bytes(f"{base}/outside/keep") == b"k"
    with pytest.raises(FileNotFoundError):
        fs.rmtree(f"{base}/t")
    fs.rmtree(f"{base}/t", missing_ok=True)
    with pytest.raises(NotADirectoryError):
        fs.rmtree(f"{base}/outside/keep")
    symlink(env, f"{base}/outside", f"{base}/top-link")
    with pytest.raises(OSError):
        fs.rmtree(f"{base}/top-link")
    assert fs.exists(f"{base}/outside/keep")


# --------------------------------------------------------------------------- copy and move


def test_copy_file_replaces_destination(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/src", b"new")
    fs.write_bytes(f"{base}/dst", b"old and longer")
    fs.copy(f"{base}/src", f"{base}/dst")
    assert fs.read_bytes(f"{base}/dst") == b"new"


def test_copy_errors_are_builtin(fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/d")
    fs.write_bytes(f"{base}/d/f", b"x")
    with pytest.raises(IsADirectoryError):
        fs.copy(f"{base}/d", f"{base}/d2")
    with pytest.raises(IsADirectoryError):
        fs.copy(f"{base}/d/f", f"{base}/d")
    with pytest.raises(FileNotFoundError):
        fs.copy(f"{base}/nope", f"{base}/x")
    with pytest.raises(FileNotFoundError):
        fs.copy(f"{base}/d/f", f"{base}/missing/x")
    with pytest.raises(shutil.SameFileError):
        fs.copy(f"{base}/d/f", f"{base}/d/./f")
    with pytest.raises(OSError):
        fs.copy(f"{base}/d", f"{base}/d/inner", recursive=True)
    assert fs.read_bytes(f"{base}/d/f") == b"x"
    fs.write_bytes(f"{base}/file", b"")
    with pytest.raises(FileExistsError):  # a directory cannot replace a file
        fs.copy(f"{base}/d", f"{base}/file", recursive=True)


def test_copy_tree_merges_into_existing_directory(fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/src/sub", parents=True)
    fs.write_bytes(f"{base}/src/f", b"new")
    fs.write_bytes(f"{base}/src/sub/g", b"newg")
    fs.mkdir(f"{base}/dst")
    fs.write_bytes(f"{base}/dst/f", b"old")
    fs.write_bytes(f"{base}/dst/keep", b"keep")
    fs.copy(f"{base}/src", f"{base}/dst", recursive=True)
    assert fs.read_bytes(f"{base}/dst/f") == b"new"
    assert fs.read_bytes(f"{base}/dst/keep") == b"keep"
    assert fs.read_bytes(f"{base}/dst/sub/g") == b"newg"


def test_copy_tree_keeps_symlinks(env: Environment, fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/src/sub", parents=True)
    fs.write_bytes(f"{base}/src/sub/f", b"deep")
    symlink(env, "sub/f", f"{base}/src/rel-link")
    symlink(env, f"{base}/nowhere", f"{base}/src/dangling")
    fs.copy(f"{base}/src", f"{base}/dst", recursive=True)
    assert fs.read_bytes(f"{base}/dst/sub/f") == b"deep"
    assert fs.stat(f"{base}/dst/rel-link").is_symlink
    assert fs.read_bytes(f"{base}/dst/rel-link") == b"deep"
    assert fs.listdir(f"{base}/dst") == ["rel-link", "sub"]  # dangling copied, not listed
    fs.remove(f"{base}/dst/dangling")  # ... but it is there


def test_move_file_directory_and_into_directory(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/f", b"moved")
    assert fs.move(f"{base}/f", f"{base}/g") == f"{base}/g"
    assert fs.read_bytes(f"{base}/g") == b"moved"
    assert not fs.exists(f"{base}/f")
    fs.mkdir(f"{base}/d")
    assert fs.move(f"{base}/g", f"{base}/d") == f"{base}/d/g"
    assert fs.read_bytes(f"{base}/d/g") == b"moved"
    assert fs.move(f"{base}/d", f"{base}/e") == f"{base}/e"
    assert fs.listdir(base) == ["e"]


def test_move_errors_are_builtin(fs: Fs, base: str) -> None:
    with pytest.raises(FileNotFoundError):
        fs.move(f"{base}/nope", f"{base}/x")
    fs.write_bytes(f"{base}/f", b"x")
    with pytest.raises(FileNotFoundError):
        fs.move(f"{base}/f", f"{base}/missing/x")
    assert fs.exists(f"{base}/f")


# --------------------------------------------------------------------------- walk and resolve


def make_tree(fs: Fs, root: str) -> None:
    for rel in ("a/a1/a11.txt", "a/a2.txt", "b/b1/b11.txt", "b/b2.txt", "c.txt", "a/a1/deep/x.txt"):
        fs.mkdir(posixpath.dirname(f"{root}/{rel}"), parents=True, exist_ok=True)
        fs.write_text(f"{root}/{rel}", rel)
    fs.mkdir(f"{root}/empty")


EXPECTED_WALK = [
    ("", ["a", "b", "empty"], ["c.txt"]),
    ("a", ["a1"], ["a2.txt"]),
    ("a/a1", ["deep"], ["a11.txt"]),
    ("a/a1/deep", [], ["x.txt"]),
    ("b", ["b1"], ["b2.txt"]),
    ("b/b1", [], ["b11.txt"]),
    ("empty", [], []),
]


def rel_walk(
    walk: Iterator[tuple[str, list[str], list[str]]], root: str
) -> list[tuple[str, list[str], list[str]]]:
    return [("" if d == root else posixpath.relpath(d, root), ds, f) for d, ds, f in walk]


def test_walk_matches_os_walk(fs: Fs, base: str) -> None:
    make_tree(fs, base)
    assert rel_walk(fs.walk(base), base) == EXPECTED_WALK
    bottom_up = [d for d, _, _ in rel_walk(fs.walk(base, topdown=False), base)]
    assert bottom_up == ["a/a1/deep", "a/a1", "a", "b/b1", "b", "empty", ""]


def test_walk_can_be_pruned_topdown(fs: Fs, base: str) -> None:
    make_tree(fs, base)
    seen = []
    for dirpath, dirnames, _ in fs.walk(base):
        seen.append(posixpath.relpath(dirpath, base))
        dirnames[:] = [d for d in dirnames if d != "a"]
    assert seen == [".", "b", "b/b1", "empty"]


def test_walk_with_symlinks_still_reports_real_entries(env: Environment, fs: Fs, base: str) -> None:
    make_tree(fs, base)
    symlink(env, base, f"{base}/b/loop")
    symlink(env, f"{base}/c.txt", f"{base}/flink")
    symlink(env, f"{base}/nowhere", f"{base}/dangling")
    walked = {d: (ds, fs_) for d, ds, fs_ in fs.walk(base)}
    assert set(walked) == {posixpath.join(base, d) if d else base for d, _, _ in EXPECTED_WALK}
    assert "c.txt" in walked[base][1]
    assert "a11.txt" in walked[f"{base}/a/a1"][1]
    followed = list(fs.walk(base, followlinks=True))  # a cycle must not loop forever
    assert any(d == f"{base}/a/a1/deep" for d, _, _ in followed)


def test_walk_bad_top_raises(fs: Fs, base: str) -> None:
    with pytest.raises(FileNotFoundError):
        list(fs.walk(f"{base}/nope"))
    fs.write_bytes(f"{base}/f", b"")
    with pytest.raises(NotADirectoryError):
        list(fs.walk(f"{base}/f"))


def test_canonicalize_and_resolve(env: Environment, fs: Fs, base: str) -> None:
    fs.mkdir(f"{base}/real/sub", parents=True)
    fs.write_bytes(f"{base}/real/sub/f", b"")
    symlink(env, f"{base}/real", f"{base}/link")
    real_base = fs.canonicalize(base)
    assert fs.canonicalize(f"{base}/link/sub/f") == f"{real_base}/real/sub/f"
    assert fs.resolve(f"{base}/link/sub/missing/tail") == f"{real_base}/real/sub/missing/tail"
    with pytest.raises(FileNotFoundError):
        fs.canonicalize(f"{base}/link/missing")
    with pytest.raises(FileNotFoundError):
        fs.resolve(f"{base}/link/missing", strict=True)


# --------------------------------------------------------------------------- file objects


def test_open_read_seek_tell(fs: Fs, base: str) -> None:
    data = os.urandom(3 * MiB + 123)
    fs.write_bytes(f"{base}/f", data)
    with fs.open(f"{base}/f", "rb") as f:
        assert isinstance(f, io.BufferedReader)
        assert f.seekable() and f.readable() and not f.writable()
        assert f.read(10) == data[:10]
        assert f.tell() == 10
        f.seek(MiB + 5)
        assert f.read(MiB) == data[MiB + 5 : 2 * MiB + 5]
        assert f.seek(-100, io.SEEK_END) == len(data) - 100
        assert f.read() == data[-100:]
        assert f.read(5) == b""
        f.seek(7)
        assert f.read() == data[7:]
        f.seek(0)
        buf = bytearray(1000)
        assert f.readinto(buf) == 1000 and bytes(buf) == data[:1000]


def test_open_text_mode_reads_lines(fs: Fs, base: str) -> None:
    fs.write_bytes(f"{base}/t", "\u00e9t\u00e9\nzwei\r\ndrei".encode())
    with fs.open(f"{base}/t") as f:
        assert f.readlines() == ["\u00e9t\u00e9\n", "zwei\n", "drei"]
    with fs.open(f"{base}/w", "w", encoding="utf-16") as w:
        w.write("\u00fc")
    assert fs.read_bytes(f"{base}/w").decode("utf-16") == "\u00fc"


def test_open_write_streams_and_creates_at_open(fs: Fs, base: str) -> None:
    data = os.urandom(2 * MiB + 77)
    with fs.open(f"{base}/out", "wb") as f:
        assert isinstance(f, io.BufferedWriter)
        assert fs.exists(f"{base}/out")  # created (and truncated) at open time
        for i in range(0, len(data), 100_000):
            f.write(data[i : i + 100_000])
    assert fs.read_bytes(f"{base}/out") == data
    with fs.open(f"{base}/out", "wb"):
        pass
    assert fs.read_bytes(f"{base}/out") == b""


def test_open_errors(fs: Fs, base: str) -> None:
    with pytest.raises(FileNotFoundError):
        fs.open(f"{base}/nope", "rb")
    with pytest.raises(IsADirectoryError):
        fs.open(base, "rb")
    with pytest.raises(FileNotFoundError):
        fs.open(f"{base}/missing/x", "wb")
    with pytest.raises(ValueError):
        fs.open(f"{base}/x", "ab")


# --------------------------------------------------------------------------- RemotePath


def test_remote_path_pure_operations(fs: Fs, base: str) -> None:
    p = fs.path(base) / "dir" / "file.tar.gz"
    assert isinstance(p, RemotePath)
    assert not isinstance(p, os.PathLike)
    assert (p.name, p.suffix, p.suffixes, p.stem) == (
        "file.tar.gz",
        ".gz",
        [".tar", ".gz"],
        "file.tar",
    )
    assert p.parent == fs.path(f"{base}/dir")
    assert p.with_suffix(".zip").name == "file.tar.zip"
    assert p.with_name("x").as_posix() == f"{base}/dir/x"
    assert p.parts == PurePosixPath(f"{base}/dir/file.tar.gz").parts
    assert str(p) == f"{base}/dir/file.tar.gz"
    assert repr(p) == f"RemotePath('{base}/dir/file.tar.gz')"
    assert p == fs.path(f"{base}/dir/../dir/file.tar.gz")
    assert len({p, fs.path(str(p))}) == 1
    assert p.relative_to(base) == PurePosixPath("dir/file.tar.gz")
    assert (p / "/abs").as_posix() == "/abs"


def test_remote_path_io(fs: Fs, base: str) -> None:
    root = fs.path(base)
    (root / "d").mkdir()
    (root / "d" / "sub").mkdir(parents=True, exist_ok=True)
    f = root / "d" / "f.txt"
    assert f.write_text("hello") == 5
    assert f.read_text() == "hello" and f.read_bytes() == b"hello"
    assert f.exists() and f.is_file() and not f.is_dir()
    assert f.stat().is_file
    assert list((root / "d").iterdir()) == [root / "d" / "f.txt", root / "d" / "sub"]
    with f.open("rb") as fh:
        assert fh.read() == b"hello"
    g = f.rename(root / "d" / "g.txt")
    assert g.read_text() == "hello" and not f.exists()
    g.unlink()
    g.unlink(missing_ok=True)
    (root / "d" / "sub").rmdir()
    assert list((root / "d").iterdir()) == []
    assert root.resolve() == fs.path(fs.canonicalize(base))


def test_remote_path_glob(fs: Fs, base: str) -> None:
    make_tree(fs, base)
    root = fs.path(base)

    def names(pattern: str) -> list[str]:
        return [p.relative_to(base).as_posix() for p in root.glob(pattern)]

    assert names("*.txt") == ["c.txt"]
    assert names("*") == ["a", "b", "c.txt", "empty"]
    assert names("?/*.txt") == ["a/a2.txt", "b/b2.txt"]
    assert names("**/*.txt") == [
        "a/a1/a11.txt", "a/a1/deep/x.txt", "a/a2.txt", "b/b1/b11.txt", "b/b2.txt", "c.txt",
    ]  # fmt: skip
    assert names("a/**") == ["a", "a/a1", "a/a1/deep"]
    assert names("*/") == ["a", "b", "empty"]
    assert [p.name for p in root.rglob("b*.txt")] == ["b11.txt", "b2.txt"]
    assert list(fs.path(f"{base}/nope").glob("*")) == []


# --------------------------------------------------------------------------- transfers


def test_upload_and_download_single_files_with_progress(fs: Fs, base: str, tmp_path: Path) -> None:
    for size in (0, 3 * MiB + 5):
        data = os.urandom(size)
        (tmp_path / "src").write_bytes(data)
        up = Recorder()
        fs.upload(tmp_path / "src", f"{base}/f", progress=up)
        up.check(size)
        assert fs.read_bytes(f"{base}/f") == data
        down = Recorder()
        fs.download(f"{base}/f", tmp_path / "back", progress=down)
        down.check(size)
        assert (tmp_path / "back").read_bytes() == data


def test_transfer_errors(fs: Fs, base: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fs.upload(tmp_path / "nope", f"{base}/x")
    with pytest.raises(FileNotFoundError):
        fs.download(f"{base}/nope", tmp_path / "x")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        fs.upload(tmp_path / "f", f"{base}/missing/x")


def test_tree_of_1000_small_files_round_trip(fs: Fs, base: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected: dict[str, bytes] = {}
    for i in range(1000):
        rel = f"d{i % 10}/sub{i % 3}/f{i}.bin" if i % 7 else f"top{i}.bin"
        expected[rel] = os.urandom(i % 1500)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(expected[rel])
    (src / "empty-dir").mkdir()
    total = sum(len(v) for v in expected.values())

    up = Recorder()
    fs.upload(src, f"{base}/tree", progress=up)
    up.check(total)
    assert fs.is_dir(f"{base}/tree/empty-dir")
    assert fs.read_bytes(f"{base}/tree/d3/sub1/f13.bin") == expected["d3/sub1/f13.bin"]

    down = Recorder()
    fs.download(f"{base}/tree", tmp_path / "back", progress=down)
    down.check(total)
    got = {
        p.relative_to(tmp_path / "back").as_posix(): p.read_bytes()
        for p in (tmp_path / "back").rglob("*")
        if p.is_file()
    }
    assert got == expected
    assert (tmp_path / "back" / "empty-dir").is_dir()


def test_upload_into_existing_tree_merges(fs: Fs, base: str, tmp_path: Path) -> None:
    (tmp_path / "src" / "d").mkdir(parents=True)
    (tmp_path / "src" / "d" / "new").write_bytes(b"new")
    fs.mkdir(f"{base}/dst/d", parents=True)
    fs.write_bytes(f"{base}/dst/d/old", b"old")
    fs.upload(tmp_path / "src", f"{base}/dst")
    assert fs.listdir(f"{base}/dst/d") == ["new", "old"]


def test_100_mib_write_read_and_download_with_bounded_memory(
    env: Environment, fs: Fs, base: str, tmp_path: Path
) -> None:
    """Above every message limit: byte-exact, and the download streams (peak memory small)."""
    data = os.urandom(100 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    fs.write_bytes(f"{base}/big", data)
    assert hashlib.sha256(fs.read_bytes(f"{base}/big")).hexdigest() == digest
    del data
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fs.download(f"{base}/big", tmp_path / "big")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    h = hashlib.sha256()
    with open(tmp_path / "big", "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    assert h.hexdigest() == digest
    assert peak < 40 * MiB, f"download peaked at {peak / MiB:.1f} MiB of Python memory"


class RssPeak:
    """This process's peak RSS above what it was at construction, sampled every 2 ms."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.idle = self._proc.memory_info().rss
        self.peak = self.idle
        self._thread = threading.Thread(target=self._sample, name="rss-peak", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._proc.memory_info().rss) - self.idle


def test_read_bytes_of_64_mib_holds_the_content_about_once(
    env: Environment, fs: Fs, base: str
) -> None:
    """Blocks land in one buffer sized from the metadata, which becomes the result: peak client
    memory stays under 1.5x the file (a list of blocks plus their join took 2x). On G1 the
    file comes in one fs/readFile message, whose cost is the RPC layer's: content only."""
    size = 64 * MiB
    sh(env, "dd", "if=/dev/urandom", f"of={base}/big", f"bs={MiB}", "count=64")
    result = env.run(["sha256sum", f"{base}/big"], timeout=60)
    expected = result.stdout.split()[0].decode()
    gc.collect()
    tracemalloc.start()
    try:
        rss = RssPeak()
        data = fs.read_bytes(f"{base}/big")
        rss_peak = rss.stop()
        traced_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == expected
    if "blocks" in fs.features:
        assert traced_peak < 1.5 * size, f"peak {traced_peak / MiB:.1f} MiB of Python memory"
        assert rss_peak < 1.5 * size, f"peak RSS {rss_peak / MiB:.1f} MiB above idle"


class StaleSize:
    """The environment's real backend, except that ``fs/getMetadata`` reports files ``delta``
    bytes off: what ``read_bytes`` sees when a file grows or shrinks between stat and reads."""

    def __init__(self, backend: FsBackend, delta: int) -> None:
        self._backend = backend
        self._delta = delta

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def get_metadata(self, path: str, *, timeout: Timeoutish = UNSET) -> FileMetadata:
        meta = self._backend.get_metadata(path, timeout=timeout)
        if not meta.is_file or meta.size is None:
            return meta
        return attrs.evolve(meta, size=max(0, meta.size + self._delta))


@pytest.mark.parametrize("delta", [-3 * MiB - 5, 2 * MiB + 7], ids=["grew", "shrank"])
def test_read_bytes_returns_what_is_there_when_the_size_changed_since_stat(
    env: Environment, fs: Fs, base: str, delta: int
) -> None:
    data = os.urandom(5 * MiB + 3)
    fs.write_bytes(f"{base}/f", data)
    stale = Fs(cast(FsBackend, StaleSize(fs.backend, delta)), environment=env)
    if not is_g1(env):
        assert stale.stat(f"{base}/f").size == len(data) + delta
    assert stale.read_bytes(f"{base}/f") == data


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_1_gib_download_streams_to_disk(
    env: Environment, fs: Fs, base: str, tmp_path: Path
) -> None:
    sh(env, "dd", "if=/dev/urandom", f"of={base}/huge", "bs=1048576", "count=1024")
    result = env.run(["sha256sum", f"{base}/huge"], timeout=300)
    expected = result.stdout.split()[0].decode()
    progress = Recorder()
    tracemalloc.start()
    try:
        fs.download(f"{base}/huge", tmp_path / "huge", progress=progress)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    progress.check(1024 * MiB)
    h = hashlib.sha256()
    with open(tmp_path / "huge", "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    assert h.hexdigest() == expected
    assert peak < 64 * MiB


# --------------------------------------------------------------------------- threads


def test_concurrent_use_from_many_threads(fs: Fs, base: str) -> None:
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            data = os.urandom(10_000 + i)
            for j in range(5):
                fs.write_bytes(f"{base}/t{i}-{j}", data)
                assert fs.read_bytes(f"{base}/t{i}-{j}") == data
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(fs.listdir(base)) == 40
