"""LocalFsBackend: exec-server fs semantics on the real local disk (PROTOCOL.md §3.10-3.19),
and the Fs facade over it where no server is needed (no environment, G1-like fallbacks).

Expected values (error kinds, messages, walk order and limits) are what codex exec-server 0.169
answered when probed with the same trees; our server wraps this backend directly.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import execsdk
from execsdk import errors
from execsdk._local.disk import MAX_BLOCK, MAX_HANDLES, MAX_READ_FILE, LocalFsBackend
from execsdk.backends import FsBackend
from execsdk.fs import Fs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fsb() -> Iterator[LocalFsBackend]:
    backend = LocalFsBackend()
    yield backend
    backend.close()


def s(path: Path) -> str:
    return str(path)


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- basics


def test_backend_satisfies_protocol_and_offers_every_feature(fsb: LocalFsBackend) -> None:
    assert isinstance(fsb, FsBackend)
    assert fsb.features == frozenset({"canonicalize", "walk", "blocks"})


@pytest.mark.parametrize("bad", ["relative/path", "", "file:///tmp/x"])
def test_non_absolute_path_is_invalid_params(fsb: LocalFsBackend, bad: str) -> None:
    with pytest.raises(errors.InvalidParams):
        fsb.read_file(bad)


# --------------------------------------------------------------------------- readFile / writeFile


def test_read_file_returns_exact_bytes(fsb: LocalFsBackend, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    write(tmp_path / "f", data)
    assert fsb.read_file(s(tmp_path / "f")) == data


def test_read_file_of_empty_file_is_empty(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "empty", b"")
    assert fsb.read_file(s(tmp_path / "empty")) == b""


def test_read_file_missing_raises_file_not_found(fsb: LocalFsBackend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        fsb.read_file(s(tmp_path / "nope"))
    assert isinstance(info.value, errors.RemoteOSError)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == s(tmp_path / "nope")


def test_read_file_directory_is_invalid_request_not_a_file(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.read_file(s(tmp_path))
    assert info.value.code == -32600
    assert info.value.message == f"path `{tmp_path}` is not a file"


def test_read_file_fifo_is_refused_without_blocking(fsb: LocalFsBackend, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(errors.InvalidRequest, match="is not a file"):
        fsb.read_file(s(tmp_path / "fifo"))


def test_read_file_below_a_file_raises_not_a_directory(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        fsb.read_file(s(tmp_path / "f" / "x"))


def test_read_file_over_512_mib_is_refused(fsb: LocalFsBackend, tmp_path: Path) -> None:
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(MAX_READ_FILE + 1)
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.read_file(s(tmp_path / "sparse"))
    assert info.value.message == "file is too large to read: limit is 536870912 bytes"


def test_read_file_follows_symlinks(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "target", b"via link")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert fsb.read_file(s(tmp_path / "link")) == b"via link"


def test_write_file_creates_and_truncates(fsb: LocalFsBackend, tmp_path: Path) -> None:
    target = s(tmp_path / "f")
    fsb.write_file(target, b"long content")
    fsb.write_file(target, b"short")
    assert (tmp_path / "f").read_bytes() == b"short"
    fsb.write_file(target, b"")
    assert (tmp_path / "f").read_bytes() == b""


def test_write_file_does_not_create_parents(fsb: LocalFsBackend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsb.write_file(s(tmp_path / "missing" / "f"), b"x")
    assert not (tmp_path / "missing").exists()


def test_write_file_onto_directory_raises_is_a_directory(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    with pytest.raises(IsADirectoryError):
        fsb.write_file(s(tmp_path), b"x")


def test_write_file_through_dangling_link_creates_the_target(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "target")
    fsb.write_file(s(tmp_path / "dangling"), b"q")
    assert (tmp_path / "target").read_bytes() == b"q"


# --------------------------------------------------------------------------- paths


def test_dotdot_is_resolved_textually_before_symlinks(fsb: LocalFsBackend, tmp_path: Path) -> None:
    # tmp/lx -> tmp/real/x ; "tmp/lx/../f" is "tmp/f" textually but "tmp/real/f" physically.
    (tmp_path / "real" / "x").mkdir(parents=True)
    write(tmp_path / "real" / "f", b"physical")
    (tmp_path / "lx").symlink_to(tmp_path / "real" / "x")
    with pytest.raises(FileNotFoundError):
        fsb.read_file(f"{tmp_path}/lx/../f")
    fsb.write_file(f"{tmp_path}/lx/../written", b"w")
    assert (tmp_path / "written").exists()
    assert not (tmp_path / "real" / "written").exists()
    assert fsb.canonicalize(f"{tmp_path}/lx/../real") == s(tmp_path / "real")


def test_dotdot_above_root_stays_at_root(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f", b"root-clamped")
    assert fsb.read_file(f"/../../..{tmp_path}/f") == b"root-clamped"
    assert fsb.read_file(f"//{str(tmp_path).lstrip('/')}/./f") == b"root-clamped"


def test_trailing_slash_on_a_file_is_tolerated(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f", b"abc")
    assert fsb.read_file(f"{tmp_path}/f/") == b"abc"


@pytest.mark.parametrize(
    "name", ["ünïcødé 文件.txt", "sp ace", "hash#name", "per%cent", "new\nline", "-dash", ".hidden"]
)
def test_unusual_names_round_trip(fsb: LocalFsBackend, tmp_path: Path, name: str) -> None:
    target = s(tmp_path / name)
    fsb.write_file(target, name.encode())
    assert fsb.read_file(target) == name.encode()
    assert [e.name for e in fsb.read_directory(s(tmp_path))] == [name]


# --------------------------------------------------------------------------- createDirectory


def test_create_directory_recursive_creates_parents_and_accepts_existing(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    fsb.create_directory(s(tmp_path / "a" / "b" / "c"))
    assert (tmp_path / "a" / "b" / "c").is_dir()
    fsb.create_directory(s(tmp_path / "a" / "b" / "c"), recursive=True)


def test_create_directory_non_recursive_on_existing_raises_file_exists(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    with pytest.raises(FileExistsError) as info:
        fsb.create_directory(s(tmp_path), recursive=False)
    assert info.value.errno == errno.EEXIST


def test_create_directory_non_recursive_missing_parent_raises_file_not_found(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        fsb.create_directory(s(tmp_path / "n1" / "n2"), recursive=False)


@pytest.mark.parametrize("recursive", [True, False])
def test_create_directory_over_a_file_raises_file_exists(
    fsb: LocalFsBackend, tmp_path: Path, recursive: bool
) -> None:
    write(tmp_path / "f")
    with pytest.raises(FileExistsError):
        fsb.create_directory(s(tmp_path / "f"), recursive=recursive)


def test_create_directory_on_dangling_link_raises_file_exists(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    (tmp_path / "dl").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        fsb.create_directory(s(tmp_path / "dl"), recursive=True)


def test_create_directory_below_a_file_raises_not_a_directory(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    write(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        fsb.create_directory(s(tmp_path / "f" / "sub"))


# --------------------------------------------------------------------------- getMetadata


def test_get_metadata_of_a_file(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f", b"12345")
    meta = fsb.get_metadata(s(tmp_path / "f"))
    st = os.stat(tmp_path / "f")
    assert (meta.is_file, meta.is_directory, meta.is_symlink, meta.size) == (True, False, False, 5)
    assert meta.modified_at_ms == st.st_mtime_ns // 1_000_000
    # codex 0.169 reports 0 here on Linux (no birth time through std); so do we.
    birth = getattr(st, "st_birthtime", None)
    assert meta.created_at_ms == (int(birth * 1000) if birth else 0)


def test_get_metadata_follows_links_and_flags_them(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f", b"abc")
    (tmp_path / "fl").symlink_to(tmp_path / "f")
    (tmp_path / "dl").symlink_to(tmp_path)
    file_link = fsb.get_metadata(s(tmp_path / "fl"))
    dir_link = fsb.get_metadata(s(tmp_path / "dl"))
    assert (file_link.is_file, file_link.is_symlink, file_link.size) == (True, True, 3)
    assert (dir_link.is_directory, dir_link.is_symlink) == (True, True)


def test_get_metadata_of_dangling_link_raises_file_not_found(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        fsb.get_metadata(s(tmp_path / "dangling"))


def test_get_metadata_of_fifo_is_neither_file_nor_directory(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "fifo")
    meta = fsb.get_metadata(s(tmp_path / "fifo"))
    assert (meta.is_file, meta.is_directory, meta.size) == (False, False, 0)


# --------------------------------------------------------------------------- readDirectory


def test_read_directory_reports_types_links_and_omits_dangling(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    write(tmp_path / "a.txt")
    (tmp_path / "sub").mkdir()
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    (tmp_path / "linkfile").symlink_to(tmp_path / "a.txt")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")
    got = {e.name: (e.is_file, e.is_dir, e.is_symlink) for e in fsb.read_directory(s(tmp_path))}
    assert got == {
        "a.txt": (True, False, False),
        "sub": (False, True, False),
        "linkdir": (False, True, True),
        "linkfile": (True, False, True),
        "fifo": (False, False, False),
    }


def test_read_directory_of_empty_directory_is_empty(fsb: LocalFsBackend, tmp_path: Path) -> None:
    assert fsb.read_directory(s(tmp_path)) == []


def test_read_directory_errors(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        fsb.read_directory(s(tmp_path / "f"))
    with pytest.raises(FileNotFoundError):
        fsb.read_directory(s(tmp_path / "nope"))


# --------------------------------------------------------------------------- remove


def test_remove_defaults_to_recursive_and_force(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "t" / "a" / "b" / "f")
    fsb.remove(s(tmp_path / "t"))
    assert not (tmp_path / "t").exists()
    fsb.remove(s(tmp_path / "t"))  # missing is fine with force


def test_remove_missing_without_force_raises_file_not_found(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        fsb.remove(s(tmp_path / "nope"), force=False)


def test_remove_non_empty_directory_without_recursive_raises_enotempty(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    write(tmp_path / "d" / "f")
    with pytest.raises(OSError) as info:
        fsb.remove(s(tmp_path / "d"), recursive=False)
    assert info.value.errno == errno.ENOTEMPTY
    assert (tmp_path / "d" / "f").exists()
    (tmp_path / "e").mkdir()
    fsb.remove(s(tmp_path / "e"), recursive=False)
    assert not (tmp_path / "e").exists()


def test_remove_link_to_directory_keeps_the_target(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "real" / "keep")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    fsb.remove(s(tmp_path / "link"))
    assert not (tmp_path / "link").is_symlink()
    assert (tmp_path / "real" / "keep").exists()


def test_remove_dangling_link_without_force(fsb: LocalFsBackend, tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    fsb.remove(s(tmp_path / "dangling"), recursive=False, force=False)
    assert not os.path.lexists(tmp_path / "dangling")


def test_remove_below_a_file_raises_not_a_directory_even_with_force(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    write(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        fsb.remove(s(tmp_path / "f" / "sub"), force=True)


# --------------------------------------------------------------------------- copy


def test_copy_file_copies_bytes_and_mode(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "src", b"payload")
    os.chmod(tmp_path / "src", 0o750)
    write(tmp_path / "dst", b"old and longer")
    fsb.copy(s(tmp_path / "src"), s(tmp_path / "dst"), recursive=False)
    assert (tmp_path / "dst").read_bytes() == b"payload"
    assert stat.S_IMODE(os.stat(tmp_path / "dst").st_mode) == 0o750


def test_copy_file_onto_directory_raises_is_a_directory(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    write(tmp_path / "src")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        fsb.copy(s(tmp_path / "src"), s(tmp_path / "d"), recursive=False)


def test_copy_missing_source_or_parent_raises_file_not_found(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        fsb.copy(s(tmp_path / "nope"), s(tmp_path / "x"), recursive=False)
    write(tmp_path / "src")
    with pytest.raises(FileNotFoundError):
        fsb.copy(s(tmp_path / "src"), s(tmp_path / "missing" / "x"), recursive=False)


def test_copy_directory_requires_recursive(fsb: LocalFsBackend, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.copy(s(tmp_path / "d"), s(tmp_path / "d2"), recursive=False)
    assert info.value.message == "fs/copy requires recursive: true when sourcePath is a directory"


def test_copy_tree_keeps_links_as_links_and_skips_special_files(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    src = tmp_path / "d"
    write(src / "a.txt", b"a")
    write(src / "sub" / "deeper" / "c.txt", b"c")
    (src / "linkdir").symlink_to(src / "sub")
    (src / "linkfile").symlink_to(src / "a.txt")
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(src / "fifo")
    fsb.copy(s(src), s(tmp_path / "out" / "nested" / "d2"), recursive=True)
    dst = tmp_path / "out" / "nested" / "d2"
    assert sorted(os.listdir(dst)) == ["a.txt", "dangling", "linkdir", "linkfile", "sub"]
    assert os.readlink(dst / "linkdir") == str(src / "sub")
    assert os.readlink(dst / "dangling") == str(tmp_path / "nowhere")
    assert (dst / "sub" / "deeper" / "c.txt").read_bytes() == b"c"
    assert not (dst / "sub").is_symlink()


def test_copy_directory_merges_into_existing_directory(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "src" / "f", b"new")
    write(tmp_path / "src" / "sub" / "g", b"newg")
    write(tmp_path / "dst" / "f", b"old")
    write(tmp_path / "dst" / "keep", b"keep")
    (tmp_path / "dst" / "sub").mkdir()
    fsb.copy(s(tmp_path / "src"), s(tmp_path / "dst"), recursive=True)
    assert (tmp_path / "dst" / "f").read_bytes() == b"new"
    assert (tmp_path / "dst" / "keep").read_bytes() == b"keep"
    assert (tmp_path / "dst" / "sub" / "g").read_bytes() == b"newg"


def test_copy_directory_conflicts(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "src" / "f", b"new")
    (tmp_path / "src" / "l").symlink_to("f")
    write(tmp_path / "file")
    with pytest.raises(FileExistsError):  # a directory cannot replace a file
        fsb.copy(s(tmp_path / "src"), s(tmp_path / "file"), recursive=True)
    write(tmp_path / "d1" / "f" / "inner")
    with pytest.raises(IsADirectoryError):  # a file cannot replace a directory
        fsb.copy(s(tmp_path / "src"), s(tmp_path / "d1"), recursive=True)
    write(tmp_path / "d2" / "l", b"where the link goes")
    with pytest.raises(FileExistsError):  # a link never replaces anything
        fsb.copy(s(tmp_path / "src"), s(tmp_path / "d2"), recursive=True)


def test_copy_directory_into_itself_is_refused(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt")
    for target in ("d/inner", "d/a.txt", "d"):
        with pytest.raises(errors.InvalidRequest, match="cannot copy a directory to itself"):
            fsb.copy(s(tmp_path / "d"), s(tmp_path / target), recursive=True)
    assert not (tmp_path / "d" / "inner").exists()
    (tmp_path / "alias").symlink_to(tmp_path / "d")  # into itself through a link
    with pytest.raises(errors.InvalidRequest, match="cannot copy a directory to itself"):
        fsb.copy(s(tmp_path / "d"), s(tmp_path / "alias" / "inner"), recursive=True)
    assert not (tmp_path / "d" / "inner").exists()


def test_copy_top_level_links_as_links(fsb: LocalFsBackend, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "linkdir").symlink_to(tmp_path / "d")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    fsb.copy(s(tmp_path / "linkdir"), s(tmp_path / "ld2"), recursive=False)
    fsb.copy(s(tmp_path / "dangling"), s(tmp_path / "dg2"), recursive=False)
    assert os.readlink(tmp_path / "ld2") == str(tmp_path / "d")
    assert os.readlink(tmp_path / "dg2") == str(tmp_path / "nowhere")
    write(tmp_path / "taken")
    with pytest.raises(FileExistsError):
        fsb.copy(s(tmp_path / "dangling"), s(tmp_path / "taken"), recursive=False)


def test_copy_of_special_file_is_refused(fsb: LocalFsBackend, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(errors.InvalidRequest, match="only supports regular files"):
        fsb.copy(s(tmp_path / "fifo"), s(tmp_path / "x"), recursive=False)


def test_copy_file_onto_itself_keeps_the_data(fsb: LocalFsBackend, tmp_path: Path) -> None:
    # codex truncates the file to 0 bytes here; we answer the same success but keep the data.
    write(tmp_path / "f", b"precious")
    (tmp_path / "alias").symlink_to(tmp_path / "f")
    fsb.copy(s(tmp_path / "f"), f"{tmp_path}/./f", recursive=False)
    fsb.copy(s(tmp_path / "f"), s(tmp_path / "alias"), recursive=False)
    assert (tmp_path / "f").read_bytes() == b"precious"


# --------------------------------------------------------------------------- canonicalize


def test_canonicalize_resolves_links(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "sub" / "b.txt")
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    real = os.path.realpath(tmp_path / "sub" / "b.txt")
    assert fsb.canonicalize(s(tmp_path / "linkdir" / "b.txt")) == real


def test_canonicalize_missing_or_dangling_raises_file_not_found(
    fsb: LocalFsBackend, tmp_path: Path
) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("nope", "dangling"):
        with pytest.raises(FileNotFoundError):
            fsb.canonicalize(s(tmp_path / name))


# --------------------------------------------------------------------------- walk


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The tree probed against codex 0.169 (walk answers below are its answers)."""
    root = tmp_path / "t"
    for rel in ("a/a1/a11.txt", "a/a2.txt", "b/b1/b11.txt", "b/b2.txt", "c.txt", "a/a1/deep/x.txt"):
        write(root / rel)
    os.mkfifo(root / "fifo")
    (root / "b" / "loop").symlink_to(root)
    (root / "b" / "flink").symlink_to(root / "c.txt")
    return root


def walk_rel(fsb: LocalFsBackend, root: Path, **opts: object) -> tuple[list[str], bool]:
    limits: dict[str, object] = {"max_depth": 10, "max_directories": 100, "max_entries": 100}
    limits.update(opts)
    result = fsb.walk(s(root), **limits)  # type: ignore[arg-type]
    prefix = s(root) + "/"
    return [f"{e.path[len(prefix) :]}:{e.kind[0]}" for e in result.entries], result.truncated


FULL = [
    "a:d", "b:d", "c.txt:f",
    "a/a1:d", "a/a2.txt:f", "b/b1:d", "b/b2.txt:f",
    "a/a1/a11.txt:f", "a/a1/deep:d", "b/b1/b11.txt:f",
    "a/a1/deep/x.txt:f",
]  # fmt: skip


def test_walk_is_breadth_first_sorted_and_omits_links_and_special_files(
    fsb: LocalFsBackend, tree: Path
) -> None:
    assert walk_rel(fsb, tree) == (FULL, False)


def test_walk_following_links_lists_each_real_directory_once(
    fsb: LocalFsBackend, tree: Path
) -> None:
    entries, truncated = walk_rel(fsb, tree, follow_directory_symlinks=True)
    assert not truncated
    assert entries == [*FULL[:7], "b/loop:d", *FULL[7:]]


@pytest.mark.parametrize(
    ("max_entries", "count", "truncated"),
    [(1, 1, True), (3, 3, True), (4, 3, True), (5, 4, True), (13, 10, True), (14, 11, False)],
)
def test_walk_max_entries_counts_every_entry_examined(
    fsb: LocalFsBackend, tree: Path, max_entries: int, count: int, truncated: bool
) -> None:
    assert walk_rel(fsb, tree, max_entries=max_entries) == (FULL[:count], truncated)


@pytest.mark.parametrize(
    ("max_depth", "max_dirs", "count", "truncated"),
    [(10, 1, 3, True), (10, 2, 5, True), (10, 4, 9, True), (10, 5, 10, True),
     (0, 1, 3, False), (1, 2, 5, True), (1, 3, 7, False)],
)  # fmt: skip
def test_walk_depth_and_directory_limits(
    fsb: LocalFsBackend, tree: Path, max_depth: int, max_dirs: int, count: int, truncated: bool
) -> None:
    got = walk_rel(fsb, tree, max_depth=max_depth, max_directories=max_dirs)
    assert got == (FULL[:count], truncated)


def test_walk_limits_are_validated(fsb: LocalFsBackend, tree: Path) -> None:
    with pytest.raises(errors.InvalidRequest, match="greater than zero"):
        walk_rel(fsb, tree, max_entries=0)
    with pytest.raises(errors.InvalidRequest, match="greater than zero"):
        walk_rel(fsb, tree, max_directories=0, max_depth=65)
    for opts in ({"max_depth": 65}, {"max_directories": 10_001}, {"max_entries": 50_001}):
        with pytest.raises(errors.InvalidRequest, match="exceed maximums"):
            walk_rel(fsb, tree, **opts)
    with pytest.raises(errors.InvalidParams):
        walk_rel(fsb, tree, max_depth=-1)
    assert walk_rel(fsb, tree, max_depth=64, max_directories=10_000, max_entries=50_000)[0] == FULL


def test_walk_roots(fsb: LocalFsBackend, tree: Path, tmp_path: Path) -> None:
    assert walk_rel(fsb, tree / "c.txt") == ([], False)
    assert walk_rel(fsb, tree / "fifo") == ([], False)
    with pytest.raises(FileNotFoundError):
        walk_rel(fsb, tmp_path / "missing")
    (tmp_path / "tl").symlink_to(tree / "a")
    assert walk_rel(fsb, tmp_path / "tl") == ([], False)
    followed, _ = walk_rel(fsb, tmp_path / "tl", follow_directory_symlinks=True)
    assert followed == ["a1:d", "a2.txt:f", "a1/a11.txt:f", "a1/deep:d", "a1/deep/x.txt:f"]


# --------------------------------------------------------------------------- block handles


def test_read_block_eof_means_fewer_bytes_than_asked(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f", b"0123456789")
    fsb.open("h", s(tmp_path / "f"))
    assert fsb.read_block("h", 0, 10) == (b"0123456789", False)
    assert fsb.read_block("h", 0, 11) == (b"0123456789", True)
    assert fsb.read_block("h", 5, 3) == (b"567", False)
    assert fsb.read_block("h", 9, 1) == (b"9", False)
    assert fsb.read_block("h", 10, 1) == (b"", True)
    assert fsb.read_block("h", 100, 1) == (b"", True)
    fsb.close_handle("h")


@pytest.mark.parametrize("length", [0, MAX_BLOCK + 1])
def test_read_block_length_is_bounded(fsb: LocalFsBackend, tmp_path: Path, length: int) -> None:
    write(tmp_path / "f")
    fsb.open("h", s(tmp_path / "f"))
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.read_block("h", 0, length)
    assert info.value.message == "file read block length must be between 1 and 1048576"


@pytest.mark.parametrize("size", [0, MAX_BLOCK + 1])
def test_write_block_chunk_is_bounded(fsb: LocalFsBackend, tmp_path: Path, size: int) -> None:
    fsb.open("w", s(tmp_path / "f"), mode="replace")
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.write_block("w", 0, b"x" * size)
    assert info.value.message == "file write block length must be between 1 and 1048576"


def test_write_block_past_the_end_zero_fills(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f", b"old content that replace truncates")
    fsb.open("w", s(tmp_path / "f"), mode="replace")
    assert (tmp_path / "f").read_bytes() == b""  # truncated at open time
    fsb.write_block("w", 5, b"xy")
    fsb.write_block("w", MAX_BLOCK, b"z" * MAX_BLOCK)
    fsb.close_handle("w")
    data = (tmp_path / "f").read_bytes()
    assert data[:7] == b"\x00" * 5 + b"xy"
    assert data[7:MAX_BLOCK] == b"\x00" * (MAX_BLOCK - 7)
    assert data[MAX_BLOCK:] == b"z" * MAX_BLOCK


def test_replace_mode_creates_the_file(fsb: LocalFsBackend, tmp_path: Path) -> None:
    fsb.open("w", s(tmp_path / "new"), mode="replace")
    fsb.close_handle("w")
    assert (tmp_path / "new").read_bytes() == b""


def test_handle_id_is_limited_to_32_bytes(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f")
    fsb.open("x" * 32, s(tmp_path / "f"))
    fsb.open("é" * 16, s(tmp_path / "f"))  # 32 bytes in UTF-8
    fsb.open("", s(tmp_path / "f"))  # codex accepts an empty id too
    for bad in ("y" * 33, "é" * 17):
        with pytest.raises(errors.InvalidRequest) as info:
            fsb.open(bad, s(tmp_path / "f"))
        assert info.value.message == "file handle ID must not exceed 32 bytes"


def test_duplicate_handle_id_is_refused(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f")
    fsb.open("d", s(tmp_path / "f"))
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.open("d", s(tmp_path / "f"))
    assert info.value.message == "file handle `d` already exists"


def test_at_most_128_handles_per_backend(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f")
    for i in range(MAX_HANDLES):
        fsb.open(f"k{i}", s(tmp_path / "f"))
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.open("one-too-many", s(tmp_path / "f"))
    assert info.value.message == "at most 128 file handles may be open per connection"
    fsb.close_handle("k0")
    fsb.open("one-too-many", s(tmp_path / "f"))
    other = LocalFsBackend()  # each backend (server connection) has its own table
    try:
        other.open("k1", s(tmp_path / "f"))
    finally:
        other.close()


def test_open_errors(fsb: LocalFsBackend, tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        fsb.open("d", s(tmp_path))
    assert info.value.message == f"path `{tmp_path}` is not a file"
    with pytest.raises(IsADirectoryError):
        fsb.open("d", s(tmp_path), mode="replace")
    with pytest.raises(FileNotFoundError):
        fsb.open("d", s(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError):
        fsb.open("d", s(tmp_path / "missing" / "x"), mode="replace")
    with pytest.raises(errors.InvalidParams, match="unknown variant"):
        fsb.open("d", s(tmp_path / "nope"), mode="append")  # type: ignore[arg-type]
    assert fsb.open_handle_count() == 0  # failed opens leave no reservation behind


def test_unknown_handle_is_not_found_but_close_is_quiet(fsb: LocalFsBackend) -> None:
    with pytest.raises(errors.NotFound) as info:
        fsb.read_block("h1", 0, 1)
    assert (info.value.code, info.value.message) == (-32004, "unknown file handle `h1`")
    with pytest.raises(errors.NotFound):
        fsb.write_block("h1", 0, b"x")
    fsb.close_handle("h1")  # codex 0.169 answers {} for an unknown handle


def test_wrong_direction_is_bad_file_descriptor(fsb: LocalFsBackend, tmp_path: Path) -> None:
    write(tmp_path / "f")
    fsb.open("r", s(tmp_path / "f"))
    fsb.open("w", s(tmp_path / "g"), mode="replace")
    for call in (lambda: fsb.write_block("r", 0, b"x"), lambda: fsb.read_block("w", 0, 1)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF


def test_close_releases_every_descriptor(tmp_path: Path) -> None:
    write(tmp_path / "f")
    before = len(os.listdir("/proc/self/fd"))
    backend = LocalFsBackend()
    for i in range(20):
        backend.open(f"h{i}", s(tmp_path / "f"))
    assert len(os.listdir("/proc/self/fd")) >= before + 20
    backend.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(errors.NotFound):
        backend.read_block("h1", 0, 1)


def test_concurrent_block_reads_are_consistent(fsb: LocalFsBackend, tmp_path: Path) -> None:
    data = os.urandom(4 * MAX_BLOCK)
    write(tmp_path / "f", data)
    fsb.open("h", s(tmp_path / "f"))
    results: dict[int, bytes] = {}

    def read(i: int) -> None:
        results[i] = fsb.read_block("h", i * 65536, 65536)[0]

    threads = [threading.Thread(target=read, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b"".join(results[i] for i in range(64)) == data


# --------------------------------------------------------------------------- the Fs facade on it


class _G1LikeBackend(LocalFsBackend):
    """The local backend without the optional groups, as a G1 server offers them."""

    @property
    def features(self) -> frozenset[str]:
        return frozenset()


def test_fs_without_environment_moves_by_copy_then_remove(tmp_path: Path) -> None:
    fs = Fs(LocalFsBackend())
    assert fs.cwd == "/"
    write(tmp_path / "d" / "f", b"data")
    (tmp_path / "d" / "link").symlink_to("f")
    assert fs.move(s(tmp_path / "d"), s(tmp_path / "e")) == s(tmp_path / "e")
    assert not (tmp_path / "d").exists()
    assert (tmp_path / "e" / "f").read_bytes() == b"data"
    assert os.readlink(tmp_path / "e" / "link") == "f"


def test_fs_without_environment_refuses_process_fallbacks(tmp_path: Path) -> None:
    fs = Fs(_G1LikeBackend())
    write(tmp_path / "f")
    with pytest.raises(errors.UnsupportedByServer):
        fs.canonicalize(s(tmp_path / "f"))


def test_g1_fallbacks_on_the_local_disk(tmp_path: Path) -> None:
    """Parts + cat for writes, dd windows for streamed reads, realpath, client-side walk."""
    with execsdk.local() as env:
        fs = Fs(_G1LikeBackend(), environment=env)
        data = os.urandom(9 * MAX_BLOCK + 7)  # 5 parts of 2 MiB, 2 windows of 8 MiB
        fs.write_bytes(s(tmp_path / "big"), data)
        assert (tmp_path / "big").read_bytes() == data
        assert not [n for n in os.listdir(tmp_path) if "execsdk-part" in n]
        with fs.open(s(tmp_path / "big"), "rb") as f:
            f.seek(8 * MAX_BLOCK + 1)
            assert f.read(MAX_BLOCK) == data[8 * MAX_BLOCK + 1 : 9 * MAX_BLOCK + 1]
            assert f.seek(0, os.SEEK_END) == len(data)
        with fs.open(s(tmp_path / "streamed"), "wb") as w:
            for i in range(0, len(data), 300_000):
                w.write(data[i : i + 300_000])
        assert (tmp_path / "streamed").read_bytes() == data
        fs.download(s(tmp_path / "big"), s(tmp_path / "down"))
        assert (tmp_path / "down").read_bytes() == data
        (tmp_path / "link").symlink_to(tmp_path / "big")
        assert fs.canonicalize(s(tmp_path / "link")) == os.path.realpath(tmp_path / "big")
        walked = {d: (ds, f) for d, ds, f in fs.walk(s(tmp_path))}
        assert walked[s(tmp_path)] == ([], ["big", "down", "link", "streamed"])
