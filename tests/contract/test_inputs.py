"""Inputs of ``run``/``spawn`` are checked as subprocess checks them, before anything is sent or
started, on every environment; a missing or non-directory cwd is named as such; and ``run()``'s
result checks itself with execsdk's ``CalledProcessError``.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import execsdk
from execsdk import errors
from execsdk.environment import Environment
from execsdk.remote.remoteenv import RemoteEnvironment

Sent = list[str]


@pytest.fixture
def sent(env: Environment, monkeypatch: pytest.MonkeyPatch) -> Sent:
    """What the environment started or sent: process starts, staged stdin files and (remote)
    every typed request on the wire."""
    record: Sent = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            record.append(name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(env.processes, "start", spy("process start", env.processes.start))
    monkeypatch.setattr(env.fs, "write_bytes", spy("staged input", env.fs.write_bytes))
    if isinstance(env, RemoteEnvironment):
        real_typed = env.client._typed

        def typed(method: str, *args: Any, **kwargs: Any) -> Any:
            record.append(method)
            return real_typed(method, *args, **kwargs)

        monkeypatch.setattr(env.client, "_typed", typed)
    return record


def _raises(exc: type[BaseException], message: str) -> Any:
    return pytest.raises(exc, match=f"^{re.escape(message)}$")


# --------------------------------------------------------------------------- input


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (5, {}, "a bytes-like object is required for input, not 'int'"),
        (
            "text",
            {},
            "a bytes-like object is required for input, not 'str' "
            "(give text=True, encoding or errors to pass a str)",
        ),
        (5, {"text": True}, "a str or a bytes-like object is required for input, not 'int'"),
        (
            [1, 2],
            {"encoding": "utf-8"},
            "a str or a bytes-like object is required for input, not 'list'",
        ),
    ],
    ids=["int", "str-without-text", "int-with-text", "list-with-encoding"],
)
def test_run_input_of_the_wrong_type_raises_type_error_before_sending(
    env: Environment, sent: Sent, value: object, kwargs: dict[str, Any], message: str
) -> None:
    with _raises(TypeError, message):
        env.run(["cat"], input=value, **kwargs)  # type: ignore[call-overload]
    assert sent == []


@pytest.mark.parametrize(
    "value",
    [bytearray(b"abc\x00def"), memoryview(b"abc\x00def")],
    ids=["bytearray", "memoryview"],
)
def test_run_input_takes_any_bytes_like_object(env: Environment, value: object) -> None:
    result = env.run(["cat"], input=value)  # type: ignore[call-overload]
    assert result.stdout == b"abc\x00def"


def test_run_input_str_is_encoded_in_text_mode(env: Environment) -> None:
    result = env.run(["cat"], input="héllo", encoding="latin-1")
    assert result.stdout == "héllo"


# --------------------------------------------------------------------------- args


def test_args_entry_of_the_wrong_type_raises_type_error_before_sending(
    env: Environment, sent: Sent
) -> None:
    with _raises(TypeError, "args[1] must be str, bytes or os.PathLike, not int"):
        env.run(["echo", 1])  # type: ignore[list-item]
    with _raises(TypeError, "args[2] must be str, bytes or os.PathLike, not NoneType"):
        env.spawn(["echo", "a", None])  # type: ignore[list-item]
    assert sent == []


def test_args_that_are_not_a_sequence_raise_type_error(env: Environment, sent: Sent) -> None:
    with _raises(TypeError, "args must be str, bytes, os.PathLike or a sequence of them, not int"):
        env.run(5)  # type: ignore[call-overload]
    assert sent == []


def test_args_nul_character_raises_value_error_before_sending(env: Environment, sent: Sent) -> None:
    with _raises(ValueError, "embedded null byte in args[1]"):
        env.run(["echo", "a\x00b"])
    assert sent == []


def test_args_bytes_and_path_like_entries_are_decoded(env: Environment, tmp_path: Path) -> None:
    result = env.run([b"echo", tmp_path, os.fsencode("caf\u00e9")])  # type: ignore[list-item]
    assert result.stdout == f"{tmp_path} caf\u00e9\n".encode()


# --------------------------------------------------------------------------- env


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"A": 1}, "env value for 'A' must be str, bytes or os.PathLike, not int"),
        ({"A": None}, "env value for 'A' must be str, bytes or os.PathLike, not NoneType"),
        ({1: "x"}, "env key 1 must be str, bytes or os.PathLike, not int"),
    ],
    ids=["int-value", "none-value", "int-key"],
)
def test_env_entry_of_the_wrong_type_raises_type_error_before_sending(
    env: Environment, sent: Sent, variables: dict[Any, Any], message: str
) -> None:
    with _raises(TypeError, message):
        env.run(["true"], env=variables)
    with _raises(TypeError, message):
        env.spawn(["true"], env=variables)
    assert sent == []


def test_env_that_is_not_a_mapping_raises_type_error(env: Environment, sent: Sent) -> None:
    with _raises(TypeError, "env must be a mapping, not list"):
        env.run(["true"], env=[("A", "1")])  # type: ignore[call-overload]
    assert sent == []


def test_env_name_with_equals_sign_raises_value_error(env: Environment, sent: Sent) -> None:
    with _raises(ValueError, "illegal environment variable name 'A=B'"):
        env.run(["true"], env={"A=B": "x"})
    assert sent == []


def test_env_bytes_and_path_like_are_decoded(env: Environment, tmp_path: Path) -> None:
    variables: dict[bytes, bytes | os.PathLike[str]] = {
        b"EXECSDK_B": b"bytes-value",
        b"EXECSDK_P": tmp_path,
    }
    result = env.run(["sh", "-c", 'printf "%s|%s" "$EXECSDK_B" "$EXECSDK_P"'], env=variables)
    assert result.stdout == f"bytes-value|{tmp_path}".encode()


# --------------------------------------------------------------------------- cwd


def test_cwd_of_the_wrong_type_raises_type_error_before_sending(
    env: Environment, sent: Sent
) -> None:
    with _raises(TypeError, "cwd must be str, bytes or os.PathLike, not int"):
        env.run(["true"], cwd=5)  # type: ignore[call-overload]
    assert sent == []


@pytest.mark.parametrize("how", ["run", "spawn"])
def test_missing_cwd_raises_file_not_found_naming_the_cwd(
    env: Environment, tmp_path: Path, how: str
) -> None:
    cwd = str(tmp_path / "no-such-dir")
    with pytest.raises(FileNotFoundError) as caught:
        if how == "run":
            env.run(["ls"], cwd=cwd)
        else:
            env.spawn(["ls"], cwd=cwd)
    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == cwd
    assert cwd in str(caught.value)


def test_missing_cwd_and_missing_executable_names_the_cwd(env: Environment, tmp_path: Path) -> None:
    cwd = str(tmp_path / "no-such-dir")
    with pytest.raises(FileNotFoundError) as caught:
        env.run(["/nonexistent/execsdk-no-such-program"], cwd=cwd)
    assert caught.value.filename == cwd


def test_missing_executable_in_an_existing_cwd_names_the_executable(
    env: Environment, tmp_path: Path
) -> None:
    program = "/nonexistent/execsdk-no-such-program"
    with pytest.raises(FileNotFoundError) as caught:
        env.run([program], cwd=str(tmp_path))
    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == program


def test_cwd_that_is_a_file_raises_not_a_directory(env: Environment, tmp_path: Path) -> None:
    cwd = tmp_path / "a-file"
    cwd.write_text("x")
    with pytest.raises(NotADirectoryError) as caught:
        env.run(["ls"], cwd=cwd)
    assert caught.value.errno == errno.ENOTDIR
    assert caught.value.filename == str(cwd)
    assert str(cwd) in str(caught.value)


def test_cwd_below_a_file_raises_not_a_directory(env: Environment, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    cwd = str(tmp_path / "a-file" / "sub")
    with pytest.raises(NotADirectoryError) as caught:
        env.run(["ls"], cwd=cwd)
    assert caught.value.filename == cwd


# --------------------------------------------------------------------------- results


def test_run_returns_execsdk_completed_process(env: Environment) -> None:
    result = env.run(["true"])
    assert isinstance(result, execsdk.CompletedProcess)
    assert isinstance(result, subprocess.CompletedProcess)
    result.check_returncode()  # exit code 0: no error


@pytest.mark.parametrize("text", [False, True], ids=["bytes", "text"])
def test_check_returncode_raises_execsdk_called_process_error(env: Environment, text: bool) -> None:
    result = env.run(["sh", "-c", "echo out; echo err >&2; exit 3"], text=text)
    with pytest.raises(errors.CalledProcessError) as caught:
        result.check_returncode()
    exc = caught.value
    assert isinstance(exc, subprocess.CalledProcessError)
    assert exc.returncode == 3
    assert exc.cmd == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert exc.stdout == ("out\n" if text else b"out\n")
    assert exc.stderr == ("err\n" if text else b"err\n")
    assert exc.process_id == result.process_id is not None


def test_processes_repr_says_what_the_backend_is(env: Environment) -> None:
    env.run(["true"])
    text = repr(env.processes)
    assert re.fullmatch(r"<(Local|Remote)ProcessBackend .*processes=\d+.*>", text), text
