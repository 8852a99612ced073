"""Unit tests of permission bits (issue 17 item 3) below the servers: the wire types of
``execsdk/fileMode``, the local backend's calls, ``FileInfo.mode``, and the ``chmod``/``stat``
process fallbacks (the codex path) run against the local disk."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import execsdk
from execsdk import errors
from execsdk._local.disk import LocalFsBackend
from execsdk._protocol import methods
from execsdk._protocol import types as t
from execsdk._protocol.converter import make_converter, structure_result, unstructure_params
from execsdk.backends import FileInfo, FileMetadata, FsBackend
from execsdk.environment import Environment
from execsdk.fs import Fs

ODD = "/tmp/sp ace/#hash/100%/ü/a?b"


class _NoModeCalls(LocalFsBackend):
    """The local disk without permission calls, as a codex server offers it."""

    @property
    def supports_modes(self) -> bool:
        return False


class _Forwarding:
    """Forwards everything to a backend, overriding only ``get_metadata``."""

    def __init__(self, backend: FsBackend) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def get_metadata(self, path: str, **kwargs: Any) -> FileMetadata:
        return self._backend.get_metadata(path, **kwargs)


@pytest.fixture
def env() -> Iterator[Environment]:
    with execsdk.local() as environment:
        yield environment


# --------------------------------------------------------------------------- wire


@pytest.mark.parametrize("generation", ["G1", "G2"])
@pytest.mark.parametrize(
    "sample",
    [
        t.FsSetModeParams(path=t.WirePath(ODD), mode=0o4755),
        t.FsSetModeResult(),
        t.FsStatParams(path=t.WirePath(ODD)),
        t.FsStatResult(
            is_directory=False,
            is_file=True,
            is_symlink=True,
            created_at_ms=0,
            modified_at_ms=1_700_000_000_000,
            mode=0o600,
            size=12,
        ),
    ],
    ids=lambda s: type(s).__name__,
)
def test_wire_types_round_trip(generation: str, sample: object) -> None:
    conv = make_converter(generation, strict=True)  # type: ignore[arg-type]
    wire = json.loads(json.dumps(unstructure_params(conv, sample)))
    assert structure_result(conv, wire, type(sample), method="test") == sample


def test_set_mode_params_on_the_wire() -> None:
    conv = make_converter("G2", strict=True)
    wire = unstructure_params(conv, t.FsSetModeParams(path=t.WirePath("/tmp/a b"), mode=0o755))
    assert wire == {"path": "file:///tmp/a%20b", "mode": 493}


def test_methods_need_the_announced_capability() -> None:
    assert methods.CAPABILITY_FILE_MODE == "execsdk/fileMode"
    for name in ("fs/setMode", "fs/stat"):
        spec = methods.METHODS[name]
        assert spec.capability == "execsdk/fileMode"
        assert not spec.supported("G2")
        assert not spec.supported("G2", {"execsdk/fileMode": False})
        assert spec.supported("G2", {"execsdk/fileMode": True})
        assert not spec.supported("G1", {"execsdk/fileMode": True})


# --------------------------------------------------------------------------- values


def test_file_info_mode_is_optional() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    info = FileInfo(True, False, False, 3, when, None)  # positional, as before the field
    assert info.mode is None
    meta = FileMetadata(False, True, False, 3, 0, 1000)
    assert FileInfo.from_metadata(meta).mode is None
    assert FileInfo.from_metadata(meta, 0o640).mode == 0o640


# --------------------------------------------------------------------------- local backend


def test_local_backend_sets_and_reads_modes(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    backend = LocalFsBackend()
    backend.set_mode(str(f), 0o4710)
    assert stat.S_IMODE(f.stat().st_mode) == 0o4710
    meta, mode = backend.get_metadata_and_mode(str(f))
    assert mode == 0o4710
    assert meta == backend.get_metadata(str(f))
    with pytest.raises(FileNotFoundError):
        backend.set_mode(str(tmp_path / "missing"), 0o600)
    with pytest.raises(FileNotFoundError):
        backend.get_metadata_and_mode(str(tmp_path / "missing"))
    for bad in (-1, 0o10000, True, 1.0):
        with pytest.raises(errors.InvalidParams):
            backend.set_mode(str(f), bad)  # type: ignore[arg-type]
    assert stat.S_IMODE(f.stat().st_mode) == 0o4710


# --------------------------------------------------------------------------- the process fallbacks


def test_chmod_and_stat_processes_handle_any_name(env: Environment, tmp_path: Path) -> None:
    fs = Fs(_NoModeCalls(), environment=env)
    assert fs._core.modes is None
    names = ["-rf", "new\nline", "it's", 'quo"te', "$(touch pwned)", "back\\slash", "sp ace"]
    for i, name in enumerate(names):
        (tmp_path / name).write_text(name)
        fs.chmod(str(tmp_path / name), 0o600 + i)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600 + i
    assert not (tmp_path / "pwned").exists()
    assert fs.stat(str(tmp_path / "-rf")).mode is None  # no process per stat
    paths = [str(tmp_path / n) for n in names]
    assert fs._core.read_modes(paths, None) == [0o600 + i for i in range(len(names))]


def test_fallbacks_batch_many_paths(env: Environment, tmp_path: Path) -> None:
    """More paths than one helper process takes: several processes, every mode right."""
    fs = Fs(_NoModeCalls(), environment=env)
    paths = []
    for i in range(1203):
        p = tmp_path / f"f{i:04d}"
        p.write_bytes(b"")
        paths.append(str(p))
    wanted = [(0o600, 0o640, 0o755, 0o4700)[i % 4] for i in range(len(paths))]
    runs: list[list[str]] = []
    real_run = fs._core.run

    def counting_run(argv: Any, dl: Any) -> Any:
        runs.append(list(argv))
        return real_run(argv, dl)

    fs._core.run = counting_run  # type: ignore[method-assign]
    fs._core.set_modes(list(zip(paths, wanted, strict=True)), None)
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in paths] == wanted
    assert len(runs) == 3  # 500 paths per process
    assert fs._core.read_modes(paths, None) == wanted
    assert len(runs) == 6


def test_fallback_errors_are_builtin(env: Environment, tmp_path: Path) -> None:
    fs = Fs(_NoModeCalls(), environment=env)
    (tmp_path / "here").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        fs.chmod(str(tmp_path / "missing"), 0o600)
    with pytest.raises(FileNotFoundError):
        fs._core.read_modes([str(tmp_path / "here"), str(tmp_path / "missing")], None)
    with pytest.raises(FileNotFoundError):
        fs._core.set_modes([(str(tmp_path / "here"), 0o600), (str(tmp_path / "gone"), 0o600)], None)


def test_fs_without_environment_or_mode_calls_cannot_chmod(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(errors.UnsupportedByServer):
        Fs(_NoModeCalls()).chmod(str(tmp_path / "f"), 0o600)
    fs = Fs(_NoModeCalls())
    fs.upload(tmp_path / "f", str(tmp_path / "g"), preserve_mode=False)
    with pytest.raises(errors.UnsupportedByServer, match="preserve_mode=False"):
        fs.upload(tmp_path / "f", str(tmp_path / "h"))
    assert not (tmp_path / "h").exists()  # refused before anything was written
    with pytest.raises(errors.UnsupportedByServer):
        fs.download(str(tmp_path / "f"), tmp_path / "i")
    assert not (tmp_path / "i").exists()


def test_a_forwarding_wrapper_is_not_bypassed(env: Environment, tmp_path: Path) -> None:
    """A wrapper that overrides get_metadata and forwards the rest gets no fs/stat shortcut."""
    (tmp_path / "f").write_bytes(b"x")
    wrapped = Fs(_Forwarding(LocalFsBackend()), environment=env)
    assert wrapped._core.modes is None
    assert wrapped.stat(str(tmp_path / "f")).mode is None
    wrapped.chmod(str(tmp_path / "f"), 0o611)  # by a chmod process
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o611
