"""The refusal classifier (_protocol/refusals.py): code first, then the recorded words."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from execsdk import errors
from execsdk._protocol import refusals
from execsdk.remote.failures import map_fs_errors


def answer(code: int, message: str) -> errors.ServerError:
    return errors.server_error(code, message, method="m", request_id=1)


# --------------------------------------------------------------------------- sessions


def test_unknown_session_is_recognised_by_code_and_words() -> None:
    exc = answer(-32600, "unknown session id 0000-1111")
    assert refusals.is_unknown_session(exc)
    assert not refusals.is_session_attached(exc)


@pytest.mark.parametrize(
    "exc",
    [
        answer(-32603, "unknown session id 0000"),  # right words, wrong code
        answer(-32600, "session 0000 is already attached to another connection"),
        answer(-32600, "the unknown session id 0000"),  # not the recorded form
        errors.ConnectError("unknown session id 0000"),  # not a server answer
        ValueError("unknown session id 0000"),
    ],
)
def test_unknown_session_needs_code_and_recorded_words(exc: BaseException) -> None:
    assert not refusals.is_unknown_session(exc)


def test_attached_session_is_minus_32010_on_g2_and_words_on_g1() -> None:
    assert refusals.is_session_attached(answer(-32010, "anything at all"))
    g1 = answer(-32600, "session abc is already attached to another connection")
    assert refusals.is_session_attached(g1)
    assert not refusals.is_unknown_session(g1)


# --------------------------------------------------------------------------- processes


def test_duplicate_process_matches_the_id_when_given() -> None:
    exc = answer(-32600, "process p 1 already exists")
    assert refusals.is_duplicate_process(exc)
    assert refusals.is_duplicate_process(exc, "p 1")
    assert not refusals.is_duplicate_process(exc, "p")
    assert refusals.is_duplicate_process(answer(-32600, "process  already exists"), "")


def test_a_duplicate_file_handle_is_not_a_duplicate_process() -> None:
    assert not refusals.is_duplicate_process(answer(-32600, "file handle `d` already exists"))


def test_unknown_process() -> None:
    assert refusals.is_unknown_process(answer(-32600, "unknown process id nope"))
    assert not refusals.is_unknown_process(answer(-32004, "unknown process id nope"))
    assert not refusals.is_unknown_process(answer(-32600, "unknown session id nope"))


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (-32004, "No such file or directory (os error 2)", errno.ENOENT),
        (-32603, "File exists (os error 17)", errno.EEXIST),
        (-32603, "Is a directory (os error 21)", errno.EISDIR),
        (-32603, "Bad file descriptor (os error 9)", errno.EBADF),
        (-32004, "not found", errno.ENOENT),  # -32004 alone means not found
        (-32600, "path `/tmp/x y` is not a file", errno.EISDIR),
        (-32600, refusals.COPY_NEEDS_RECURSIVE, errno.EISDIR),
        (-32004, "unknown file handle `h1`", None),  # not about any path
        (-32600, "file handle ID must not exceed 32 bytes", None),
        (-32600, "fs/writeFile requires valid base64 dataBase64: bad", None),
        (-32602, "path `/x` is not a file", None),  # right words, wrong code
    ],
)
def test_refusal_errno(code: int, message: str, expected: int | None) -> None:
    assert refusals.refusal_errno(answer(code, message)) == expected


def test_os_error_form_is_read_whatever_the_code() -> None:
    exc = answer(-32099, "Directory not empty (os error 39)")
    assert refusals.os_errno(exc) == errno.ENOTEMPTY
    assert refusals.os_strerror(exc) == "Directory not empty"
    assert refusals.os_errno(answer(-32603, "http/request failed: refused")) is None


def test_unknown_handle() -> None:
    assert refusals.is_unknown_handle(answer(-32004, "unknown file handle `h1`"))
    assert not refusals.is_unknown_handle(answer(-32600, "unknown file handle `h1`"))


@pytest.mark.parametrize(
    ("template", "check"),
    [
        (refusals.UNKNOWN_SESSION, refusals.is_unknown_session),
        (refusals.PROCESS_EXISTS, refusals.is_duplicate_process),
        (refusals.UNKNOWN_PROCESS, refusals.is_unknown_process),
    ],
)
def test_messages_built_from_a_template_are_recognised(
    template: str, check: Callable[[BaseException], bool]
) -> None:
    for ident in ("p1", "", "with space", "{braces}", "`tick`"):
        assert check(answer(-32600, template.format(id=ident)))


def test_os_error_message_is_codex_wording() -> None:
    message = refusals.os_error_message(17, "File exists")
    assert message == "File exists (os error 17)"
    assert refusals.os_errno(answer(-32603, message)) == 17


# --------------------------------------------------------------------------- the users


@pytest.mark.parametrize(
    ("code", "message", "builtin"),
    [
        (-32004, "No such file or directory (os error 2)", FileNotFoundError),
        (-32600, "path `/d` is not a file", IsADirectoryError),
        (-32600, refusals.COPY_NEEDS_RECURSIVE, IsADirectoryError),
        (-32603, "Not a directory (os error 20)", NotADirectoryError),
        (-32603, "File exists (os error 17)", FileExistsError),
    ],
)
def test_fs_refusals_map_to_builtin_errors(code: int, message: str, builtin: type) -> None:
    with pytest.raises(builtin) as info, map_fs_errors("fs/readFile", "/d"):
        raise answer(code, message)
    assert isinstance(info.value, errors.RemoteOSError)
    assert info.value.filename == "/d"
    assert info.value.server_message == message


def test_unrecognised_fs_refusal_stays_the_server_error() -> None:
    original = answer(-32004, "unknown file handle `h1`")
    with pytest.raises(errors.NotFound) as info, map_fs_errors("fs/readBlock", None):
        raise original
    assert info.value is original


def test_our_server_words_come_from_the_templates() -> None:
    from execsdk.server.handlers import error_for

    code, message = error_for(errors.ProcessNotFound("x", process_id="p9"))
    assert (code, message) == (-32600, "unknown process id p9")
    assert refusals.is_unknown_process(answer(code, message))
    code, message = error_for(FileExistsError(errno.EEXIST, "exists"), "filesystem")
    assert refusals.os_errno(answer(code, message)) == errno.EEXIST
