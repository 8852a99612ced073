"""``--root`` answers the same with ``openat2`` (descriptors) as with check-then-use.

Every path-taking ``fs/*`` handler runs on a tricky tree (links in and out, absolute links that
lead back inside, dangling links, a loop, a link elsewhere that leads into the root, files
where directories are expected) twice: once with the openat2 mode (``confined_fs``) and once
with the fallback the server uses on kernels without it. Both must give the same answer (the
result, or the JSON-RPC code and message) and leave the same tree behind. The fallback is what
the conformance suites have compared with codex, so this keeps them comparable.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from execsdk._local.disk import LocalFsBackend
from execsdk.server import fs_methods as F
from execsdk.server.beneath import probe
from execsdk.server.confine import Confinement
from execsdk.server.handlers import error_for
from execsdk.server.params import parse_path_uri

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="Linux only")]


def _has_openat2() -> bool:
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        return probe(fd) is None
    finally:
        os.close(fd)


pytestmark.append(pytest.mark.skipif(not _has_openat2(), reason="the kernel has no openat2"))


def _build(base: Path) -> None:
    if base.exists():
        shutil.rmtree(base)
    base.mkdir()
    root, outside = base / "root", base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside secret")
    (outside / "deep").mkdir()
    (outside / "deep" / "x.txt").write_text("deep")
    root.mkdir()
    (root / "inside.txt").write_text("inside")
    (root / "sub").mkdir()
    (root / "sub" / "f.txt").write_text("f")
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "g.txt").write_text("g")
    (root / "link_in").symlink_to("sub")
    (root / "abs_in").symlink_to(root / "sub")
    (root / "abs_file_in").symlink_to(root / "inside.txt")
    (root / "dangling_in").symlink_to("not-there-yet")
    (root / "abs_dangling_in").symlink_to(root / "abs-not-there")
    (root / "loop").symlink_to("loop")
    (root / "link_out").symlink_to("../outside")
    (root / "abs_link_out").symlink_to(outside / "secret.txt")
    (root / "dangling_out").symlink_to(outside / "created-through-link")
    (root / "sub" / "up_out").symlink_to("../../outside/deep")
    (root / "sub" / "up_in").symlink_to("../inside.txt")
    (root / "up").symlink_to("..")
    (root / "dest").mkdir()
    (root / "dest" / "sub").symlink_to("../../outside")  # a merge target that leads out
    (base / "into").symlink_to("root")  # elsewhere, leading into the root


def _snapshot(base: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[path] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[path] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[path] = ("file", Path(path).read_bytes(), stat.S_IMODE(st.st_mode))
    return out


NAMES = [
    "",
    "/.",
    "/inside.txt",
    "/sub",
    "/sub/f.txt",
    "/sub/deeper",
    "/missing",
    "/missing/x",
    "/inside.txt/x",
    "/link_in",
    "/link_in/f.txt",
    "/link_in/..",
    "/abs_in",
    "/abs_in/f.txt",
    "/abs_file_in",
    "/dangling_in",
    "/abs_dangling_in",
    "/loop",
    "/loop/x",
    "/link_out",
    "/link_out/secret.txt",
    "/abs_link_out",
    "/dangling_out",
    "/sub/up_out",
    "/sub/up_out/x.txt",
    "/sub/up_in",
    "/up",
    "/up/root",
    "/up/root/inside.txt",
    "/dest",
    "/../outside/secret.txt",
    "@into/inside.txt",
    "@into",
    "@outside/secret.txt",
]


def _uri(base: Path, name: str) -> str:
    if name.startswith("@"):
        return f"file://{base}/{name[1:]}"
    return f"file://{base}/root{name}"


def _calls(base: Path, name: str) -> list[tuple[str, Callable[..., object], dict[str, Any]]]:
    u = parse_path_uri(_uri(base, name))
    root = f"file://{base}/root"
    walk = {"maxDepth": 3, "maxDirectories": 50, "maxEntries": 500}
    calls: list[tuple[str, Callable[..., object], dict[str, Any]]] = [
        ("readFile", F.fs_read_file, {"path": u}),
        ("writeFile", F.fs_write_file, {"path": u, "dataBase64": "bmV3"}),
        ("writeFile-bad-b64", F.fs_write_file, {"path": u, "dataBase64": "%%%"}),
        ("mkdir-r", F.fs_create_directory, {"path": u, "recursive": True}),
        ("mkdir", F.fs_create_directory, {"path": u, "recursive": False}),
        ("getMetadata", F.fs_get_metadata, {"path": u}),
        ("stat", F.fs_stat, {"path": u}),
        ("setMode", F.fs_set_mode, {"path": u, "mode": 0o640}),
        ("readDirectory", F.fs_read_directory, {"path": u}),
        ("remove-rf", F.fs_remove, {"path": u, "recursive": True, "force": True}),
        ("remove", F.fs_remove, {"path": u, "recursive": False, "force": False}),
        ("canonicalize", F.fs_canonicalize, {"path": u}),
        ("walk", F.fs_walk, {"path": u, "options": {**walk, "followDirectorySymlinks": False}}),
        (
            "walk-follow",
            F.fs_walk,
            {"path": u, "options": {**walk, "followDirectorySymlinks": True}},
        ),
        ("open-read", F.fs_open, {"path": u, "handleId": "h", "mode": "read"}),
        ("open-replace", F.fs_open, {"path": u, "handleId": "h", "mode": "replace"}),
        ("open-new", F.fs_open, {"path": u, "handleId": "h", "mode": "createNew"}),
    ]
    for recursive in (True, False):
        calls.append(
            (
                f"copy-from-{recursive}",
                F.fs_copy,
                {
                    "sourcePath": u,
                    "destinationPath": parse_path_uri(root + "/copied"),
                    "recursive": recursive,
                },
            )
        )
        calls.append(
            (
                f"copy-to-{recursive}",
                F.fs_copy,
                {
                    "sourcePath": parse_path_uri(root + "/sub"),
                    "destinationPath": u,
                    "recursive": recursive,
                },
            )
        )
    calls.append(
        (
            "copy-file-to",
            F.fs_copy,
            {
                "sourcePath": parse_path_uri(root + "/inside.txt"),
                "destinationPath": u,
                "recursive": False,
            },
        )
    )
    for call in calls:
        call[2].setdefault("sandbox", None)
    return calls


def _answer(conn: Any, handler: Callable[..., object], params: dict[str, Any]) -> Any:
    try:
        result = handler(conn, params)
    except Exception as exc:
        return ("error", *error_for(exc, "filesystem"))
    if isinstance(result, dict) and "dataBase64" in result:
        result = {"data": base64.b64decode(result["dataBase64"])}
    if isinstance(result, dict) and "entries" in result and isinstance(result["entries"], list):
        result = {**result, "entries": sorted(result["entries"], key=repr)}
    if isinstance(result, dict):
        result.pop("modifiedAtMs", None)  # the tree is built anew for each run
    extra: Any = None
    if params.get("handleId"):
        extra = conn.fs.open_handle_count()
        conn.fs.close()
    return ("ok", result, extra)


def _run(base: Path, beneath: bool, name: str, index: int) -> tuple[Any, Any]:
    _build(base)
    confine = Confinement(str(base / "root"), use_openat2=beneath)
    assert confine.beneath is beneath
    fs = LocalFsBackend()
    try:
        conn = SimpleNamespace(confine=confine, fs=fs)
        _what, handler, params = _calls(base, name)[index]
        return _answer(conn, handler, params), _snapshot(base)
    finally:
        fs.close()
        confine.close()


@pytest.mark.parametrize("name", NAMES)
def test_openat2_answers_like_the_checked_fallback(tmp_path: Path, name: str) -> None:
    base = Path(os.path.realpath(tmp_path)) / "t"
    mismatches = []
    for index, (what, _handler, _params) in enumerate(_calls(base, name)):
        fallback = _run(base, False, name, index)
        ours = _run(base, True, name, index)
        if ours[0] != fallback[0]:
            mismatches.append(f"{what} {name!r}: openat2 {ours[0]!r} != fallback {fallback[0]!r}")
        elif ours[1] != fallback[1]:
            changed = sorted(
                k for k in set(ours[1]) | set(fallback[1]) if ours[1].get(k) != fallback[1].get(k)
            )
            mismatches.append(f"{what} {name!r}: trees differ at {changed}")
    assert not mismatches, "\n".join(mismatches)
