"""``execsdk serve --root`` against a process that swaps a directory and a symlink.

A helper process exchanges ``root/d`` (a real directory) and ``root/l`` (a symlink to a
directory outside the root) with ``renameat2(RENAME_EXCHANGE)`` as fast as it can, while a
client drives reads, writes, metadata, listings, walks, directory creation and removals through
``root/d/...`` on a server started with ``--root``. With ``openat2`` every one of them must stay
inside the root: the sentinel files outside must be untouched, nothing new may appear outside,
and no answer may carry outside data (its bytes, its size, its names).

Also: ``fs/remove`` of the root itself, however it is spelled, is refused and the root stays.
"""

from __future__ import annotations

import base64
import collections
import ctypes
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execsdk.server import beneath
from tests.servers import RawConn, ServerHandle, start_ours

pytestmark = pytest.mark.timeout(90)

RACE_SECONDS = 6.0
OUTSIDE_DATA = b"OUTSIDE-SECRET-0123456789-this-is-longer-than-the-inside-file"
INSIDE_DATA = b"inside"
OUTSIDE_ONLY = "OUTSIDE-ONLY-NAME"

# The swapper: renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) through libc, until a
# deadline; prints how many exchanges succeeded.
SWAPPER = textwrap.dedent(
    """
    import ctypes, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    a, b, seconds = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]), float(sys.argv[3])
    swaps = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(200):
            if renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0:
                swaps += 1
    if swaps % 2:  # leave the tree as it was found
        renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
    print(swaps, flush=True)
    """
)


def _has_openat2() -> bool:
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        return beneath.probe(fd) is None
    finally:
        os.close(fd)


def _has_renameat2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "renameat2")
    except OSError:
        return False


pytestmark = [
    pytestmark,
    pytest.mark.skipif(sys.platform != "linux", reason="Linux only"),
    pytest.mark.skipif(not _has_openat2(), reason="the kernel has no openat2"),
    pytest.mark.skipif(not _has_renameat2(), reason="libc has no renameat2"),
]


class Tree:
    """``base/root`` (served) and ``base/outside`` (the sentinels)."""

    def __init__(self, base: Path) -> None:
        self.base = Path(os.path.realpath(base))
        self.root = self.base / "root"
        self.outside = self.base / "outside"
        self.outside.mkdir()
        # The same names as inside, so that any escape would find something to act on.
        (self.outside / "f.txt").write_bytes(OUTSIDE_DATA)
        (self.outside / "victim.txt").write_bytes(OUTSIDE_DATA)
        (self.outside / OUTSIDE_ONLY).write_bytes(OUTSIDE_DATA)
        (self.outside / "sub").mkdir()
        (self.outside / "sub" / "g.txt").write_bytes(OUTSIDE_DATA)
        (self.outside / "victim-dir").mkdir()
        (self.outside / "victim-dir" / "x").write_bytes(OUTSIDE_DATA)
        self.root.mkdir()
        (self.root / "d").mkdir()
        (self.root / "d" / "f.txt").write_bytes(INSIDE_DATA)
        (self.root / "d" / "sub").mkdir()
        (self.root / "d" / "sub" / "g.txt").write_bytes(INSIDE_DATA)
        (self.root / "l").symlink_to(self.outside)
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[str, bytes | None, int]]:
        """Everything outside the root: kind, content and permission bits of each path."""
        out: dict[str, tuple[str, bytes | None, int]] = {}
        for path in sorted([self.outside, *self.outside.rglob("*")]):
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path).encode(), mode)
            elif path.is_dir():
                out[str(path)] = ("dir", None, mode)
            else:
                out[str(path)] = ("file", path.read_bytes(), mode)
        return out


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.fixture
def server(tree: Tree) -> Iterator[ServerHandle]:
    with start_ours(extra_args=["--root", str(tree.root), "-v"]) as handle:
        yield handle


def _uri(path: Path | str) -> str:
    return f"file://{path}"


def _walk_options() -> dict[str, Any]:
    return {
        "maxDepth": 3,
        "maxDirectories": 100,
        "maxEntries": 1000,
        "followDirectorySymlinks": True,
    }


def _requests(tree: Tree, n: int) -> list[tuple[str, dict[str, Any]]]:
    d = tree.root / "d"
    return [
        ("fs/readFile", {"path": _uri(d / "f.txt")}),
        ("fs/readFile", {"path": _uri(d / "sub" / "g.txt")}),
        ("fs/writeFile", {"path": _uri(d / f"w-{n}.txt"), "dataBase64": "aW5zaWRl"}),
        ("fs/writeFile", {"path": _uri(d / "f.txt"), "dataBase64": "aW5zaWRl"}),
        ("fs/getMetadata", {"path": _uri(d / "f.txt")}),
        ("fs/stat", {"path": _uri(d / "sub" / "g.txt")}),
        ("fs/setMode", {"path": _uri(d / "f.txt"), "mode": 0o600}),
        ("fs/setMode", {"path": _uri(d / "sub"), "mode": 0o700}),
        ("fs/readDirectory", {"path": _uri(d)}),
        ("fs/walk", {"path": _uri(d), "options": _walk_options()}),
        ("fs/createDirectory", {"path": _uri(d / f"m-{n}" / "x"), "recursive": True}),
        ("fs/createDirectory", {"path": _uri(d / f"n-{n}"), "recursive": False}),
        ("fs/remove", {"path": _uri(d / "victim.txt"), "recursive": False, "force": True}),
        ("fs/remove", {"path": _uri(d / "victim-dir"), "recursive": True, "force": True}),
        ("fs/remove", {"path": _uri(d / f"w-{n - 1}.txt"), "recursive": False, "force": True}),
        (
            "fs/copy",
            {
                "sourcePath": _uri(d / "f.txt"),
                "destinationPath": _uri(d / f"c-{n}.txt"),
                "recursive": False,
            },
        ),
        ("fs/canonicalize", {"path": _uri(d / "f.txt")}),
        (
            "fs/copy",
            {
                "sourcePath": _uri(d / "sub"),
                "destinationPath": _uri(d / f"tree-{n}"),
                "recursive": True,
            },
        ),
        ("fs/open", {"path": _uri(d / "f.txt"), "handleId": f"r{n}", "mode": "read"}),
        ("fs/open", {"path": _uri(d / f"h-{n}.txt"), "handleId": f"w{n}", "mode": "replace"}),
        ("fs/open", {"path": _uri(d / f"x-{n}.txt"), "handleId": f"x{n}", "mode": "createNew"}),
    ]


def _leaks(method: str, result: Any, tree: Tree) -> list[str]:
    """What in an answer could only have come from outside the root."""
    found = []
    text = repr(result)
    if OUTSIDE_ONLY in text or str(tree.outside) in text:
        found.append(f"{method} named something outside: {text[:300]}")
    if method == "fs/readFile" and base64.b64decode(result["dataBase64"]) == OUTSIDE_DATA:
        found.append("fs/readFile returned outside data")
    if method in ("fs/getMetadata", "fs/stat") and result["size"] == len(OUTSIDE_DATA):
        found.append(f"{method} reported the outside file's size")
    return found


def test_swapping_a_directory_and_a_link_never_leads_out(server: ServerHandle, tree: Tree) -> None:
    swapper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SWAPPER,
            str(tree.root / "d"),
            str(tree.root / "l"),
            str(RACE_SECONDS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    operations = ok = refused = failed = 0
    other: collections.Counter[str] = collections.Counter()
    leaks: list[str] = []
    try:
        with RawConn(server.url, timeout=30) as conn:
            conn.handshake()
            end = time.monotonic() + RACE_SECONDS - 0.5
            n = 0
            while time.monotonic() < end:
                n += 1
                batch = _requests(tree, n)
                ids = [(method, conn.request(method, params)) for method, params in batch]
                handles: list[str] = []
                for method, rid in ids:
                    reply = conn.wait_reply(rid, 30)
                    operations += 1
                    if "result" in reply:
                        ok += 1
                        leaks.extend(_leaks(method, reply["result"], tree))
                        if method == "fs/open":
                            handles.append(reply["result"]["handleId"])
                    elif "outside root" in reply["error"]["message"]:
                        refused += 1
                    else:
                        failed += 1
                        other[f"{method}: {reply['error']['message']}"] += 1
                # The handles that opened: read or write through them, then close them.
                for handle in handles:
                    if handle.startswith("r"):
                        params = {"handleId": handle, "offset": 0, "len": 4096}
                        reply = conn.call("fs/readBlock", params, 30)
                        if "result" in reply:
                            data = base64.b64decode(reply["result"]["chunk"])
                            if data == OUTSIDE_DATA:
                                leaks.append("fs/readBlock returned outside data")
                    else:
                        params = {"handleId": handle, "offset": 0, "chunk": "aW5zaWRl"}
                        reply = conn.call("fs/writeBlock", params, 30)
                    conn.call("fs/close", {"handleId": handle}, 30)
                    operations += 2
    finally:
        out, _ = swapper.communicate(timeout=30)
    swaps = int(out.strip() or 0)
    after = tree.snapshot()
    changed = sorted(
        set(after) ^ set(tree.before) | {k for k in after if after.get(k) != tree.before.get(k)}
    )
    print(
        f"\nrace: {swaps} swaps, {operations} operations ({ok} answered, {refused} refused "
        f"outside root, {failed} other errors), {len(changed)} changes outside, "
        f"{len(leaks)} leaks; most frequent other errors: {other.most_common(6)}"
    )
    assert swaps > 1000, f"the swapper hardly ran ({swaps} swaps)"
    assert operations > 300
    assert not changed, f"paths outside the root changed: {changed[:20]}"
    assert not leaks, leaks[:10]
    # The tree inside is still whole: root, its two names, one of them the directory.
    assert (tree.root / "d").exists() and (tree.root / "l").exists()
    assert "openat2" in server.stderr_text()


@pytest.mark.parametrize(
    "spelling", ["{root}/.", "{root}", "{root}/l/..", "{root}/d/..", "{root}/d/../.", "{root}/"]
)
def test_removing_the_root_is_refused(server: ServerHandle, tree: Tree, spelling: str) -> None:
    with RawConn(server.url) as conn:
        conn.handshake()
        uri = _uri(spelling.format(root=tree.root))
        for recursive in (True, False):
            reply = conn.call("fs/remove", {"path": uri, "recursive": recursive, "force": True})
            assert "error" in reply, reply
            assert reply["error"]["code"] == -32600
            assert "is the root" in reply["error"]["message"], reply
            assert "cannot be removed" in reply["error"]["message"]
    assert (tree.root / "d" / "f.txt").read_bytes() == INSIDE_DATA
    assert tree.snapshot() == tree.before


def test_removing_the_root_through_a_link_to_its_parent_is_refused(
    server: ServerHandle, tree: Tree
) -> None:
    (tree.root / "up").symlink_to("..")
    with RawConn(server.url) as conn:
        conn.handshake()
        reply = conn.call(
            "fs/remove",
            {"path": _uri(tree.root / "up" / "root"), "recursive": True, "force": True},
        )
        assert "error" in reply, reply
        assert reply["error"]["code"] == -32600
    assert (tree.root / "d" / "f.txt").read_bytes() == INSIDE_DATA
