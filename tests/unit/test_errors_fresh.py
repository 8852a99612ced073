"""errors.fresh: a new instance of any execsdk exception, equal in all but identity."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable

import pytest

from execsdk import errors

# One example of every exception class in errors.py, built the way the package builds it.
EXAMPLES: dict[type[BaseException], Callable[[], BaseException]] = {
    errors.ExecSdkError: lambda: errors.ExecSdkError("something failed"),
    errors.ConnectError: lambda: errors.ConnectError("refused", url="ws://h:1"),
    errors.ConnectTimeout: lambda: errors.ConnectTimeout("no connection in 3s", url="ws://h:1"),
    errors.InitializeTimeout: lambda: errors.InitializeTimeout("no answer", url="ws://h:1"),
    errors.ConnectionLost: lambda: errors.ConnectionLost("connection to ws://h:1 was lost"),
    errors.SessionLost: lambda: errors.SessionLost("session gone"),
    errors.ConnectionClosed: lambda: errors.ConnectionClosed("the client is closed"),
    errors.RequestTimeout: lambda: errors.RequestTimeout("fs/readFile", 2.5, "could not send"),
    errors.ProtocolError: lambda: errors.ProtocolError(
        "bad result", method="process/read", field_path="$.chunks[0]", payload="{...}"
    ),
    errors.UnsupportedByServer: lambda: errors.UnsupportedByServer(
        "fs/open", "G1", "use fs/readFile"
    ),
    errors.ServerError: lambda: errors.ServerError(
        -32099, "odd", method="x/y", request_id=7, data={"k": [1]}
    ),
    errors.InvalidRequest: lambda: errors.server_error(
        -32600, "unknown process id p", method="process/read", request_id="r1"
    ),
    errors.MethodNotFound: lambda: errors.server_error(-32601, "no such method", method="a/b"),
    errors.InvalidParams: lambda: errors.server_error(-32602, "missing field `argv`"),
    errors.InternalError: lambda: errors.server_error(-32603, "File exists (os error 17)"),
    errors.NotFound: lambda: errors.server_error(-32004, "No such file or directory (os error 2)"),
    errors.SessionAttached: lambda: errors.server_error(-32010, "session s is already attached"),
    errors.ProcessError: lambda: errors.ProcessError("process failed", process_id="p1"),
    errors.ProcessNotFound: lambda: errors.ProcessNotFound("unknown", process_id="p2"),
    errors.OutputLost: lambda: errors.OutputLost(
        "3 chunks lost", process_id="p3", chunks=3, first_seq=2, last_seq=4, streams=("pty",)
    ),
    errors.StdinClosed: lambda: errors.StdinClosed("stdin closed", process_id="p3"),
    errors.CalledProcessError: lambda: errors.CalledProcessError(
        2, ["false"], output=b"out", stderr=b"err", process_id="p4"
    ),
    errors.TimeoutExpired: lambda: errors.TimeoutExpired(
        ["sleep", "9"], 1.5, b"partial", b"", process_id="p5"
    ),
    errors.RemoteOSError: lambda: errors.RemoteOSError(
        5, "I/O error", "/x", method="fs/readFile", server_message="I/O error (os error 5)"
    ),
    errors.RemoteFileNotFoundError: lambda: errors.os_error(
        2, "No such file or directory", "/missing", method="fs/readFile"
    ),
    errors.RemoteFileExistsError: lambda: errors.os_error(17, "File exists", "/d"),
    errors.RemoteIsADirectoryError: lambda: errors.os_error(21, "Is a directory", "/d"),
    errors.RemoteNotADirectoryError: lambda: errors.os_error(20, "Not a directory", "/f/x"),
    errors.RemotePermissionError: lambda: errors.os_error(13, "Permission denied", "/root/x"),
}

_OS_FIELDS = ("errno", "strerror", "filename", "filename2")


def _raised(exc: BaseException) -> BaseException:
    """``exc`` after a raise inside an except block: traceback and context set."""
    try:
        try:
            raise KeyError("context")
        except KeyError:
            raise exc from ValueError("the cause")
    except BaseException as caught:
        return caught


def test_every_exception_class_in_errors_has_an_example() -> None:
    classes = {
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, BaseException)
    }
    assert classes == set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_fresh_copy_has_same_type_str_and_attributes_and_no_traceback(
    cls: type[BaseException],
) -> None:
    original = _raised(EXAMPLES[cls]())
    assert type(original) is cls
    copy = errors.fresh(original)
    assert copy is not original
    assert type(copy) is cls
    assert str(copy) == str(original)
    assert copy.args == original.args
    assert vars(copy) == vars(original)
    if isinstance(original, OSError):
        assert [getattr(copy, f) for f in _OS_FIELDS] == [getattr(original, f) for f in _OS_FIELDS]
    assert copy.__traceback__ is None
    assert copy.__context__ is None
    assert original.__traceback__ is not None  # the stored one is left as it was


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_fresh_keeps_the_cause_or_chains_from_the_original(cls: type[BaseException]) -> None:
    original = _raised(EXAMPLES[cls]())
    assert isinstance(original.__cause__, ValueError)
    assert errors.fresh(original).__cause__ is original.__cause__
    assert errors.fresh(original).__suppress_context__ is True
    assert errors.fresh(original, chain=True).__cause__ is original


def test_fresh_of_an_error_without_cause_keeps_context_visible() -> None:
    original = errors.ConnectionLost("lost")
    copy = errors.fresh(original)
    assert copy.__cause__ is None
    assert copy.__suppress_context__ is False


def test_fresh_copies_are_raised_with_their_own_tracebacks() -> None:
    stored = errors.ConnectionLost("lost")
    caught: list[BaseException] = []

    def waiter() -> None:
        try:
            raise errors.fresh(stored)
        except errors.ConnectionLost as exc:
            caught.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len({id(exc) for exc in caught}) == 5
    assert stored.__traceback__ is None  # nothing piled up on the stored instance
    assert all(exc.__traceback__ is not None for exc in caught)


def test_fresh_notes_are_not_shared() -> None:
    original = errors.ConnectionLost("lost")
    original.add_note("first")
    copy = errors.fresh(original)
    copy.add_note("only on the copy")
    assert original.__notes__ == ["first"]
    assert copy.__notes__ == ["first", "only on the copy"]


def test_fresh_remote_os_error_still_pickles() -> None:
    copy = errors.fresh(errors.os_error(2, "No such file or directory", "/x", method="m"))
    again = pickle.loads(pickle.dumps(copy))
    assert type(again) is errors.RemoteFileNotFoundError
    assert str(again) == str(copy)


def test_fresh_of_a_builtin_and_a_foreign_exception() -> None:
    builtin = FileNotFoundError(2, "No such file or directory", "/x")
    copy = errors.fresh(builtin)
    assert (type(copy), str(copy), copy.filename) == (FileNotFoundError, str(builtin), "/x")

    class Odd(Exception):
        def __new__(cls, required: str) -> Odd:  # refuses the stored args
            raise TypeError("no")

    odd = Exception.__new__(Odd)
    assert errors.fresh(odd) is odd  # cannot be copied: returned unchanged
