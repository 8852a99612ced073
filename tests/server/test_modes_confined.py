"""``execsdk serve --root``: ``fs/setMode`` and ``fs/stat`` (``execsdk/fileMode``) are confined.

Both follow a final link (as chmod and stat do), so a link that leads out of the root is refused
as well as every other escape of ``tests/server/test_security.py``'s hostile list; inside the
root they work, also through the SDK (``Fs.chmod``, ``stat().mode``, ``upload`` keeping modes).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import execsdk
from tests.server.test_security import HOSTILE, Layout
from tests.servers import RawConn, ServerHandle, start_ours

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Layout]]:
    layout = Layout(tmp_path_factory.mktemp("confine-modes"))
    with start_ours(extra_args=["--root", str(layout.root)]) as handle:
        yield handle, layout


@pytest.fixture
def conn(confined: tuple[ServerHandle, Layout]) -> Iterator[RawConn]:
    with RawConn(confined[0].url) as c:
        c.handshake()
        yield c


@pytest.fixture
def layout(confined: tuple[ServerHandle, Layout]) -> Layout:
    return confined[1]


def _modes(top: Path) -> dict[str, int]:
    return {str(p): stat.S_IMODE(os.lstat(p).st_mode) for p in [top, *sorted(top.rglob("*"))]}


def _assert_outside(reply: dict[str, Any], what: str) -> None:
    assert "error" in reply, f"{what}: expected a refusal, got {reply!r}"
    assert reply["error"]["code"] == -32600, f"{what}: {reply['error']!r}"
    assert "outside root" in reply["error"]["message"], f"{what}: {reply['error']!r}"


@pytest.mark.parametrize("template", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_path_is_refused_by_set_mode_and_stat(
    conn: RawConn, layout: Layout, template: str
) -> None:
    before = _modes(layout.outside)
    uri = template.format(root=layout.root, base=layout.base)
    _assert_outside(conn.call("fs/setMode", {"path": uri, "mode": 0o777}), f"setMode {uri}")
    _assert_outside(conn.call("fs/stat", {"path": uri}), f"stat {uri}")
    assert _modes(layout.outside) == before
    assert not (layout.outside / "created-through-link").exists()


def test_inside_the_root_set_mode_and_stat_work(conn: RawConn, layout: Layout) -> None:
    target = layout.root / "sub" / "f.txt"
    uri = f"file://{target}"
    assert conn.result("fs/setMode", {"path": uri, "mode": 0o604}) == {}
    assert stat.S_IMODE(target.stat().st_mode) == 0o604
    assert conn.result("fs/stat", {"path": uri})["mode"] == 0o604
    # Through a link that stays inside the root.
    via_link = f"file://{layout.root}/link_in/f.txt"
    assert conn.result("fs/setMode", {"path": via_link, "mode": 0o640}) == {}
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert conn.result("fs/stat", {"path": via_link})["mode"] == 0o640


def test_sdk_keeps_modes_on_a_confined_server(
    confined: tuple[ServerHandle, Layout], tmp_path: Path
) -> None:
    handle, layout = confined
    src = tmp_path / "src"
    (src / "private").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "private" / "key").write_text("k")
    os.chmod(src / "run.sh", 0o755)
    os.chmod(src / "private" / "key", 0o600)
    os.chmod(src / "private", 0o700)
    with execsdk.connect(handle.url, timeout=30) as env:
        dst = f"{layout.root}/uploaded"
        env.fs.upload(src, dst)
        assert stat.S_IMODE(os.stat(f"{dst}/run.sh").st_mode) == 0o755
        assert stat.S_IMODE(os.stat(f"{dst}/private/key").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(f"{dst}/private").st_mode) == 0o700
        assert env.fs.stat(f"{dst}/private").mode == 0o700
        env.fs.chmod(f"{dst}/run.sh", 0o700)
        assert env.fs.stat(f"{dst}/run.sh").mode == 0o700
        with pytest.raises(execsdk.errors.InvalidRequest, match="outside root"):
            env.fs.chmod(f"{layout.outside}/secret.txt", 0o777)
        with pytest.raises(execsdk.errors.InvalidRequest, match="outside root"):
            env.fs.stat(f"{layout.outside}/secret.txt")
    assert stat.S_IMODE(os.stat(layout.outside / "secret.txt").st_mode) != 0o777
