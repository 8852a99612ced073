"""The fsspec adapter (ExecFileSystem) on a local environment and on real servers."""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.callbacks import Callback

from execsdk import errors
from execsdk.environment import Environment
from execsdk.fsspec import ExecFileSystem
from tests.conftest import ENV_KINDS, ServerPool, environment_of

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=ENV_KINDS)
def env(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Environment]:
    with environment_of(request.param, server_pool) as environment:
        yield environment


@pytest.fixture
def efs(env: Environment) -> ExecFileSystem:
    return ExecFileSystem(environment=env)


@pytest.fixture
def base(env: Environment) -> Iterator[str]:
    path = posixpath.join(env.info.temp_dir, f"execsdk-fsspec-{secrets.token_hex(6)}")
    env.fs.mkdir(path)
    yield path
    env.fs.rmtree(path, missing_ok=True)


class Recording(Callback):  # type: ignore[misc]
    """An fsspec callback that keeps every (value, size) it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int | None]] = []

    def call(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append((self.value, self.size))


# --------------------------------------------------------------------------- registration and URLs


def test_registered_under_the_execsdk_protocol() -> None:
    assert fsspec.get_filesystem_class("execsdk") is ExecFileSystem
    assert ExecFileSystem.cachable is False


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("execsdk://127.0.0.1:8765/tmp/x.txt", "/tmp/x.txt"),
        ("execsdk://host:1/", "/"),
        ("execsdk://host:1", "/"),
        ("execsdk:///tmp/dir/", "/tmp/dir"),
        ("/plain/path/", "/plain/path"),
        ("relative/p", "relative/p"),
    ],
)
def test_strip_protocol(url: str, path: str) -> None:
    assert ExecFileSystem._strip_protocol(url) == path


def test_host_and_port_come_from_the_url() -> None:
    kwargs = ExecFileSystem._get_kwargs_from_urls("execsdk://10.0.0.5:8765/srv/data")
    assert kwargs == {"host": "10.0.0.5", "port": 8765}
    assert ExecFileSystem._get_kwargs_from_urls("/no/url") == {}


def test_instances_are_not_cached(env: Environment) -> None:
    assert ExecFileSystem(environment=env) is not ExecFileSystem(environment=env)


# --------------------------------------------------------------------------- round trips


def test_pipe_and_cat_with_ranges(efs: ExecFileSystem, base: str) -> None:
    efs.pipe_file(f"{base}/x.bin", b"0123456789")
    assert efs.cat_file(f"{base}/x.bin") == b"0123456789"
    assert efs.cat_file(f"{base}/x.bin", start=2, end=5) == b"234"
    assert efs.cat_file(f"{base}/x.bin", start=-3) == b"789"
    assert efs.cat_file(f"{base}/x.bin", start=1, end=-1) == b"12345678"
    assert efs.cat(f"{base}/x.bin") == b"0123456789"
    with pytest.raises(FileExistsError):
        efs.pipe_file(f"{base}/x.bin", b"new", mode="create")


def test_info_ls_and_sizes(efs: ExecFileSystem, base: str) -> None:
    efs.pipe_file(f"{base}/f", b"12345")
    efs.mkdir(f"{base}/d")
    info = efs.info(f"{base}/f")
    assert (info["name"], info["type"], info["size"]) == (f"{base}/f", "file", 5)  # G1 too
    assert efs.info(base)["type"] == "directory"
    assert efs.ls(base, detail=False) == [f"{base}/d", f"{base}/f"]
    listing = {i["name"]: (i["type"], i["size"]) for i in efs.ls(base)}
    assert listing[f"{base}/f"] == ("file", 5)
    assert listing[f"{base}/d"][0] == "directory"
    assert efs.ls(f"{base}/f", detail=False) == [f"{base}/f"]
    assert efs.size(f"{base}/f") == 5
    assert isinstance(efs.modified(f"{base}/f"), dt.datetime)
    with pytest.raises(FileNotFoundError):
        efs.info(f"{base}/nope")
    with pytest.raises(FileNotFoundError):
        efs.ls(f"{base}/nope")


def test_exists_isdir_isfile(efs: ExecFileSystem, base: str) -> None:
    efs.pipe_file(f"{base}/f", b"")
    assert efs.exists(f"{base}/f") and efs.isfile(f"{base}/f") and not efs.isdir(f"{base}/f")
    assert efs.isdir(base) and not efs.isfile(base)
    assert not efs.exists(f"{base}/nope")


def test_open_binary_and_text(efs: ExecFileSystem, base: str) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    with efs.open(f"{base}/b", "wb") as f:
        f.write(data)
    with efs.open(f"{base}/b", "rb") as f:
        f.seek(1024 * 1024)
        assert f.read(10) == data[1024 * 1024 : 1024 * 1024 + 10]
    with efs.open(f"{base}/t", "wt") as f:
        f.write("h\u00e9llo\n")
    with efs.open(f"{base}/t", "rt") as f:
        assert f.read() == "h\u00e9llo\n"
    with pytest.raises(FileNotFoundError):
        efs.open(f"{base}/nope", "rb")


def test_directories_and_removal(efs: ExecFileSystem, base: str) -> None:
    efs.mkdir(f"{base}/a/b/c")
    assert efs.isdir(f"{base}/a/b/c")
    with pytest.raises(FileExistsError):
        efs.mkdir(f"{base}/a")
    with pytest.raises(FileNotFoundError):
        efs.mkdir(f"{base}/x/y", create_parents=False)
    efs.makedirs(f"{base}/a/b/c", exist_ok=True)
    with pytest.raises(FileExistsError):
        efs.makedirs(f"{base}/a/b/c")
    efs.pipe_file(f"{base}/a/b/c/f", b"x")
    efs.rm_file(f"{base}/a/b/c/f")
    efs.rmdir(f"{base}/a/b/c")
    efs.pipe_file(f"{base}/a/b/f", b"x")
    with pytest.raises(IsADirectoryError):
        efs.rm(f"{base}/a")
    efs.rm(f"{base}/a", recursive=True)
    assert not efs.exists(f"{base}/a")
    with pytest.raises(FileNotFoundError):
        efs.rm_file(f"{base}/a")


def test_writing_needs_the_parent_unless_auto_mkdir(env: Environment, base: str) -> None:
    with pytest.raises(FileNotFoundError):
        ExecFileSystem(environment=env).pipe_file(f"{base}/new/f", b"x")
    auto = ExecFileSystem(environment=env, auto_mkdir=True)
    auto.pipe_file(f"{base}/new/f", b"x")
    with auto.open(f"{base}/other/deep/g", "wb") as f:
        f.write(b"y")
    assert auto.cat(f"{base}/new/f") + auto.cat(f"{base}/other/deep/g") == b"xy"


def test_copy_and_move(efs: ExecFileSystem, base: str) -> None:
    efs.makedirs(f"{base}/src/sub")
    efs.pipe_file(f"{base}/src/f", b"one")
    efs.pipe_file(f"{base}/src/sub/g", b"two")
    efs.cp_file(f"{base}/src/f", f"{base}/f-copy")
    assert efs.cat(f"{base}/f-copy") == b"one"
    efs.copy(f"{base}/src", f"{base}/tree-copy", recursive=True)
    assert efs.cat(f"{base}/tree-copy/sub/g") == b"two"
    efs.mv(f"{base}/f-copy", f"{base}/f-moved")
    assert not efs.exists(f"{base}/f-copy")
    assert efs.cat(f"{base}/f-moved") == b"one"


def test_find_walk_glob_du(efs: ExecFileSystem, base: str) -> None:
    efs.makedirs(f"{base}/a/b")
    for rel in ("a/1.txt", "a/b/2.txt", "c.csv"):
        efs.pipe_file(f"{base}/{rel}", b"xy")
    assert efs.find(base) == [f"{base}/a/1.txt", f"{base}/a/b/2.txt", f"{base}/c.csv"]
    assert efs.find(base, maxdepth=1) == [f"{base}/c.csv"]
    assert f"{base}/a/b" in efs.find(base, withdirs=True)
    detail = efs.find(base, detail=True)
    assert detail[f"{base}/a/b/2.txt"]["size"] == 2
    walked = list(efs.walk(base))
    assert walked[0] == (base, ["a"], ["c.csv"])
    assert [d for d, _, _ in efs.walk(base, maxdepth=1)] == [base]
    assert sorted(efs.glob(f"{base}/**/*.txt")) == [f"{base}/a/1.txt", f"{base}/a/b/2.txt"]
    assert efs.du(base) == 6


def test_walk_top_down_names_subdirectories_at_the_depth_limit(
    efs: ExecFileSystem, base: str
) -> None:
    efs.makedirs(f"{base}/a/b")
    efs.pipe_file(f"{base}/a/1.txt", b"x")
    efs.pipe_file(f"{base}/c.csv", b"x")
    # Kept as a list: names yielded at the last level must not be emptied afterwards.
    assert list(efs.walk(base, maxdepth=1)) == [(base, ["a"], ["c.csv"])]
    assert list(efs.walk(base, maxdepth=2)) == [
        (base, ["a"], ["c.csv"]),
        (f"{base}/a", ["b"], ["1.txt"]),
    ]


def test_walk_bottom_up_honours_maxdepth(efs: ExecFileSystem, base: str) -> None:
    efs.makedirs(f"{base}/a/b/c")
    efs.pipe_file(f"{base}/a/b/c/deep", b"x")
    walked = list(efs.walk(base, maxdepth=2, topdown=False))
    assert walked == [(f"{base}/a", ["b"], []), (base, ["a"], [])]
    assert [d for d, _, _ in efs.walk(base, topdown=False)] == [
        f"{base}/a/b/c",
        f"{base}/a/b",
        f"{base}/a",
        base,
    ]


@pytest.mark.parametrize("detail", [False, True])
def test_walk_top_down_pruning_dirs_prunes_the_walk(
    efs: ExecFileSystem, base: str, detail: bool
) -> None:
    for name in ("keep", "skip"):
        efs.makedirs(f"{base}/{name}/sub")
    seen = []
    for dirpath, dirs, _ in efs.walk(base, detail=detail):
        seen.append(dirpath)
        if "skip" in dirs and detail:
            del dirs["skip"]
        elif "skip" in dirs:
            dirs.remove("skip")
    assert seen == [base, f"{base}/keep", f"{base}/keep/sub"]


def test_walk_of_a_missing_path_follows_on_error(efs: ExecFileSystem, base: str) -> None:
    assert list(efs.walk(f"{base}/nope")) == []
    with pytest.raises(FileNotFoundError):
        list(efs.walk(f"{base}/nope", on_error="raise"))
    seen: list[OSError] = []
    assert list(efs.walk(f"{base}/nope", on_error=seen.append)) == []
    assert isinstance(seen[0], FileNotFoundError)


def test_cp_file_creates_the_parent_with_auto_mkdir(env: Environment, base: str) -> None:
    auto = ExecFileSystem(environment=env, auto_mkdir=True)
    auto.pipe_file(f"{base}/f", b"one")
    auto.cp_file(f"{base}/f", f"{base}/new/deep/f")
    assert auto.cat(f"{base}/new/deep/f") == b"one"
    with pytest.raises(FileNotFoundError):
        ExecFileSystem(environment=env).cp_file(f"{base}/f", f"{base}/other/f")


def test_recursive_copy_raises_instead_of_skipping_files(efs: ExecFileSystem, base: str) -> None:
    # fsspec's generic copy ignores FileNotFoundError in recursive copies: without auto_mkdir
    # every file of this glob copy would fail on the missing parent and be skipped silently.
    efs.makedirs(f"{base}/src/sub")
    efs.pipe_file(f"{base}/src/f", b"one")
    efs.pipe_file(f"{base}/src/sub/g", b"two")
    with pytest.raises(FileNotFoundError):
        efs.copy(f"{base}/src/*", f"{base}/missing/dir/", recursive=True)
    # Asked for explicitly, fsspec's skipping still works.
    efs.copy(f"{base}/src/f", f"{base}/missing/f", on_error="ignore")
    assert not efs.exists(f"{base}/missing")


def test_move_of_a_list_keeps_sources_when_a_copy_fails(efs: ExecFileSystem, base: str) -> None:
    efs.pipe_file(f"{base}/a", b"a")
    efs.pipe_file(f"{base}/b", b"b")
    with pytest.raises(FileNotFoundError):
        efs.mv([f"{base}/a", f"{base}/b"], f"{base}/missing/dir/", recursive=True)
    assert efs.cat(f"{base}/a") + efs.cat(f"{base}/b") == b"ab"


def test_exclusive_open_and_pipe(efs: ExecFileSystem, base: str) -> None:
    with efs.open(f"{base}/x.bin", "xb") as f:
        f.write(b"first")
    with pytest.raises(FileExistsError):
        efs.open(f"{base}/x.bin", "xb")
    with efs.open(f"{base}/x.txt", "x") as f:
        f.write("text")
    with pytest.raises(FileExistsError):
        efs.open(f"{base}/x.txt", "x")
    with pytest.raises(FileExistsError):
        efs.pipe_file(f"{base}/x.bin", b"second", mode="create")
    assert efs.cat(f"{base}/x.bin") + efs.cat(f"{base}/x.txt") == b"firsttext"
    efs.pipe_file(f"{base}/y.bin", b"new", mode="create")
    assert efs.cat(f"{base}/y.bin") == b"new"


def test_put_and_get_trees_with_callbacks(efs: ExecFileSystem, base: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "one").write_bytes(b"1" * 1000)
    (src / "sub" / "two").write_bytes(os.urandom(3 * 1024 * 1024))
    efs.put(str(src), f"{base}/up", recursive=True)
    assert efs.cat(f"{base}/up/one") == b"1" * 1000
    assert efs.cat(f"{base}/up/sub/two") == (src / "sub" / "two").read_bytes()
    efs.get(f"{base}/up", str(tmp_path / "down"), recursive=True)
    assert (tmp_path / "down" / "sub" / "two").read_bytes() == (src / "sub" / "two").read_bytes()
    callback = Recording()
    efs.get_file(f"{base}/up/sub/two", str(tmp_path / "single"), callback=callback)
    assert callback.seen[-1] == (3 * 1024 * 1024, 3 * 1024 * 1024)
    callback = Recording()
    efs.put_file(str(src / "one"), f"{base}/new/parent/one", callback=callback)
    assert callback.seen[-1] == (1000, 1000)
    assert efs.cat(f"{base}/new/parent/one") == b"1" * 1000


# --------------------------------------------------------------------------- connecting by URL


@pytest.mark.parametrize("kind", ["codex-0.169.0", "ours"])
def test_url_connects_and_close_ends_the_connection(
    server_pool: ServerPool, kind: str, tmp_path: Path
) -> None:
    url = server_pool.get(kind).url
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    (tmp_path / "hello.txt").write_text("hi there")
    with fsspec.open(f"execsdk://{host}:{port}{tmp_path}/hello.txt", "rt") as f:
        assert f.read() == "hi there"
    efs = fsspec.filesystem("execsdk", host=host, port=int(port))
    assert isinstance(efs, ExecFileSystem)
    assert efs.cat_file(f"execsdk://{host}:{port}{tmp_path}/hello.txt") == b"hi there"
    efs.close()
    with pytest.raises(errors.ConnectionClosed):
        efs.cat_file(f"{tmp_path}/hello.txt")
