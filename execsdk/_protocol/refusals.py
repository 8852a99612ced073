"""What a server's error answer means: the one place that reads refusals (PROTOCOL.md §5).

An error answer is classified by its code first. Where codex gives only words (several
refusals share -32600, and OS errors carry their number in the text), the words are matched
against the templates below, each copied from the PROTOCOL.md section that records it and
checked against every server by ``tests/conformance/test_conformance_refusals.py``, so a
codex release that rewords one fails CI instead of silently breaking reconnects or the
filesystem error mapping. ``{id}`` / ``{path}`` stand for the part of a message that varies;
our own server builds its messages from the same templates where it can (``str.format``).

Pure: no I/O; imports only ``errors`` and the stdlib. Every function is safe from any thread.
"""

from __future__ import annotations

import errno as _errno
import re

from execsdk.errors import InvalidRequest, NotFound, ServerError, SessionAttached

__all__ = [
    "COPY_NEEDS_RECURSIVE",
    "NOT_A_FILE",
    "OS_ERROR",
    "PROCESS_EXISTS",
    "SESSION_ATTACHED",
    "UNKNOWN_HANDLE",
    "UNKNOWN_PROCESS",
    "UNKNOWN_SESSION",
    "fits",
    "is_copy_needs_recursive",
    "is_duplicate_process",
    "is_not_a_file",
    "is_session_attached",
    "is_unknown_handle",
    "is_unknown_process",
    "is_unknown_session",
    "os_errno",
    "os_error_message",
    "os_strerror",
    "refusal_errno",
]

# --------------------------------------------------------------------------- the words

UNKNOWN_SESSION = "unknown session id {id}"  # §2 detach and resume: -32600, resume refused
SESSION_ATTACHED = (  # §2 detach and resume: -32010 (G2), -32600 (G1)
    "session {id} is already attached to another connection"
)
PROCESS_EXISTS = "process {id} already exists"  # §3.4 process/start errors: -32600
UNKNOWN_PROCESS = "unknown process id {id}"  # §3.6 process/read (and §4.7): -32600
NOT_A_FILE = "path `{path}` is not a file"  # §3.10 fs/readFile, §3.19 fs/open: -32600 (G2)
COPY_NEEDS_RECURSIVE = (  # §3.16 fs/copy: -32600
    "fs/copy requires recursive: true when sourcePath is a directory"
)
UNKNOWN_HANDLE = "unknown file handle `{id}`"  # §3.19 fs/readBlock, fs/writeBlock: -32004
OS_ERROR = "{text} (os error {errno})"  # §5: Rust's io::Error, "File exists (os error 17)"

_OS_ERROR_FORM = re.compile(r"(?P<text>.*?)\s*\(os error (?P<errno>\d+)\)\s*", re.S)


def _pattern(template: str) -> re.Pattern[str]:
    """The template as a full-match pattern; each ``{name}`` matches anything (ids may hold
    spaces, or be empty: ``"process  already exists"`` is the answer for id ``""``)."""
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for i, part in enumerate(parts):
        out.append(f"(?P<{part}>.*)" if i % 2 else re.escape(part))
    return re.compile("".join(out), re.S)


_UNKNOWN_SESSION = _pattern(UNKNOWN_SESSION)
_SESSION_ATTACHED = _pattern(SESSION_ATTACHED)
_PROCESS_EXISTS = _pattern(PROCESS_EXISTS)
_UNKNOWN_PROCESS = _pattern(UNKNOWN_PROCESS)
_NOT_A_FILE = _pattern(NOT_A_FILE)
_UNKNOWN_HANDLE = _pattern(UNKNOWN_HANDLE)
_BY_TEMPLATE = {
    UNKNOWN_SESSION: _UNKNOWN_SESSION,
    SESSION_ATTACHED: _SESSION_ATTACHED,
    PROCESS_EXISTS: _PROCESS_EXISTS,
    UNKNOWN_PROCESS: _UNKNOWN_PROCESS,
    NOT_A_FILE: _NOT_A_FILE,
    UNKNOWN_HANDLE: _UNKNOWN_HANDLE,
    COPY_NEEDS_RECURSIVE: _pattern(COPY_NEEDS_RECURSIVE),
    OS_ERROR: _OS_ERROR_FORM,
}


def fits(template: str, message: str) -> bool:
    """True when ``message`` is worded as one of the templates above (the varying parts
    aside). For tests that hold real answers against the recorded words."""
    pattern = _BY_TEMPLATE.get(template)
    return (pattern or _pattern(template)).fullmatch(message) is not None


def os_error_message(number: int, text: str) -> str:
    """An OS error worded as codex words it: ``"File exists (os error 17)"``."""
    return OS_ERROR.format(text=text, errno=number)


# --------------------------------------------------------------------------- reading them


def _words(exc: BaseException, code: int) -> str | None:
    """The server's message when ``exc`` is an error answer with ``code``, else None."""
    if isinstance(exc, ServerError) and exc.code == code:
        return exc.message
    return None


def _fits(pattern: re.Pattern[str], exc: BaseException, code: int, **parts: str) -> bool:
    message = _words(exc, code)
    if message is None:
        return False
    match = pattern.fullmatch(message)
    return match is not None and all(match.group(k) == v for k, v in parts.items())


def is_unknown_session(exc: BaseException) -> bool:
    """``initialize`` with a ``resumeSessionId`` the server does not know (never had, or its
    grace period ended): the session and its processes are gone (§2)."""
    return _fits(_UNKNOWN_SESSION, exc, InvalidRequest.code)


def is_session_attached(exc: BaseException) -> bool:
    """Resume refused because the session is attached to another connection (§2): -32010 on
    G2 whatever the words; G1 answers -32600 with the same words."""
    if isinstance(exc, SessionAttached):
        return True
    return _fits(_SESSION_ATTACHED, exc, InvalidRequest.code)


def is_duplicate_process(exc: BaseException, process_id: str | None = None) -> bool:
    """``process/start`` refused: the session already has this process id (§3.4); with
    ``process_id``, only when the answer names that id."""
    if process_id is None:
        return _fits(_PROCESS_EXISTS, exc, InvalidRequest.code)
    return _fits(_PROCESS_EXISTS, exc, InvalidRequest.code, id=process_id)


def is_unknown_process(exc: BaseException) -> bool:
    """``process/read`` of a process id the server does not know, or no longer (§3.6, §4.7)."""
    return _fits(_UNKNOWN_PROCESS, exc, InvalidRequest.code)


def is_unknown_handle(exc: BaseException) -> bool:
    """A block call on a file handle that is not open on this connection (§3.19): -32004 like
    a missing path, but it says nothing about any path."""
    return _fits(_UNKNOWN_HANDLE, exc, NotFound.code)


def is_not_a_file(exc: BaseException) -> bool:
    """``fs/readFile`` or ``fs/open`` of a directory on G2 (§3.10, §3.19); G1 answers an
    OS error instead ("Is a directory (os error 21)")."""
    return _fits(_NOT_A_FILE, exc, InvalidRequest.code)


def is_copy_needs_recursive(exc: BaseException) -> bool:
    """``fs/copy`` of a directory without ``recursive: true`` (§3.16)."""
    return _words(exc, InvalidRequest.code) == COPY_NEEDS_RECURSIVE


def _os_form(exc: BaseException) -> re.Match[str] | None:
    if not isinstance(exc, ServerError):
        return None
    return _OS_ERROR_FORM.fullmatch(exc.message)


def os_errno(exc: BaseException) -> int | None:
    """The OS error number an error answer carries in its text (§5: "... (os error N)"), else
    None. Read whatever the code: -32603 for most, -32004 for ENOENT."""
    match = _os_form(exc)
    return None if match is None else int(match.group("errno"))


def os_strerror(exc: BaseException) -> str | None:
    """The text before "(os error N)" (the server's strerror), else None."""
    match = _os_form(exc)
    return None if match is None else match.group("text")


def refusal_errno(exc: BaseException) -> int | None:
    """The OS error a filesystem refusal stands for, else None (leave the error as it is).

    The number in the text first; then -32004 (not found, §5) except an unknown file handle;
    then the G2 refusals of a directory where a file was expected (not a file, copy without
    ``recursive``), which G1 reports as EISDIR.
    """
    number = os_errno(exc)
    if number is not None:
        return number
    if isinstance(exc, NotFound) and not is_unknown_handle(exc):
        return _errno.ENOENT
    if is_not_a_file(exc) or is_copy_needs_recursive(exc):
        return _errno.EISDIR
    return None
