"""``execsdk serve`` at the dispatch level: a Connection fed in-process, real processes and disk.

Expected messages and codes were probed on codex 0.169.0 (the reference server); the
conformance suite compares the two servers over real sockets.
"""

# ruff: noqa: E501  (tables of codex's messages, quoted verbatim, one case per line)

from __future__ import annotations

import base64
import binascii
import errno
import itertools
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execsdk import errors
from execsdk._local.processes import LocalProcessBackend
from execsdk._protocol import wire
from execsdk._protocol.wire import b64decode_strict, path_to_uri
from execsdk.server import params as P
from execsdk.server.connection import Connection
from execsdk.server.handlers import error_for
from execsdk.server.hostinfo import CAPABILITIES
from execsdk.server.outbox import Outbox
from execsdk.server.sessions import SessionRegistry
from tests.waiting import pid_gone, wait_until

pytestmark = pytest.mark.timeout(60)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class Peer:
    """A Connection plus what it sends back. Not thread-safe: one test thread."""

    def __init__(self, registry: SessionRegistry) -> None:
        self.out: queue.Queue[dict[str, Any]] = queue.Queue()
        self.outbox = Outbox(self._deliver)
        self.conn = Connection(registry, self.outbox, parse_error_prefix="failed to parse test")
        self._ids = itertools.count(1)
        self.replies: dict[Any, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []
        self.open = True

    def _deliver(self, batch: list[bytes]) -> None:
        for message in batch:
            self.out.put(json.loads(message))

    def send(self, msg: Any) -> bool:
        text = msg if isinstance(msg, (str, bytes)) else json.dumps(msg)
        self.open = self.conn.handle(text) and self.open
        return self.open

    def request(self, method: str, params: Any = None) -> int:
        rid = next(self._ids)
        msg: dict[str, Any] = {"id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return rid

    def _pull(self, timeout: float) -> None:
        msg = self.out.get(timeout=timeout)
        if "id" in msg:
            self.replies[msg["id"]] = msg
        else:
            self.notes.append(msg)

    def reply(self, rid: Any, timeout: float = 10) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while rid not in self.replies:
            self._pull(max(0.0, end - time.monotonic()))
        return self.replies.pop(rid)

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        return self.reply(self.request(method, params))

    def result(self, method: str, params: Any = None) -> Any:
        reply = self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]

    def error(self, method: str, params: Any = None) -> tuple[int, str]:
        reply = self.call(method, params)
        assert "error" in reply, reply
        return reply["error"]["code"], reply["error"]["message"]

    def handshake(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.result("initialize", {"clientName": "test", **params})
        self.send({"method": "initialized"})
        return result

    def notification(self, method: str, pred: Any = None, timeout: float = 10) -> dict[str, Any]:
        end = time.monotonic() + timeout
        seen = 0
        while True:
            for note in self.notes[seen:]:
                if note["method"] == method and (pred is None or pred(note["params"])):
                    return note
            seen = len(self.notes)
            self._pull(max(0.0, end - time.monotonic()))

    def close(self) -> None:
        self.conn.connection_lost()


@pytest.fixture
def registry() -> Iterator[SessionRegistry]:
    reg = SessionRegistry(grace=30)
    yield reg
    reg.close(timeout=5)


@pytest.fixture
def peer(registry: SessionRegistry) -> Iterator[Peer]:
    p = Peer(registry)
    yield p
    p.close()


@pytest.fixture
def ready(peer: Peer) -> Peer:
    peer.handshake()
    return peer


def start(peer: Peer, pid: str, argv: list[str], cwd: Path, **extra: Any) -> dict[str, Any]:
    params = {"processId": pid, "argv": argv, "cwd": f"file://{cwd}", "env": {}, "tty": False}
    params.update(extra)
    return peer.result("process/start", params)  # type: ignore[no-any-return]


def output_of(peer: Peer, pid: str) -> bytes:
    peer.notification("process/closed", lambda p: p["processId"] == pid)
    return b"".join(
        base64.b64decode(n["params"]["chunk"])
        for n in peer.notes
        if n["method"] == "process/output" and n["params"]["processId"] == pid
    )


# --------------------------------------------------------------------------- lifecycle


def test_method_before_initialize_names_its_family(peer: Peer) -> None:
    assert peer.error("fs/getMetadata", {"path": "file:///"}) == (
        -32600,
        "client must call initialize before using filesystem methods",
    )
    assert peer.error("process/terminate", {"processId": "x"}) == (
        -32600,
        "client must call initialize before using exec methods",
    )
    assert peer.error("environment/info") == (
        -32600,
        "client must call initialize before using environment info methods",
    )


def test_method_before_initialized_is_refused_until_initialized_arrives(peer: Peer) -> None:
    peer.result("initialize", {"clientName": "t"})
    assert peer.error("http/request", {"method": "GET", "url": "http://x/", "requestId": "r"}) == (
        -32600,
        "client must send initialized before using http methods",
    )
    peer.send({"method": "initialized"})
    assert peer.result("environment/status") == {"status": "ready"}


def test_params_are_checked_before_the_lifecycle(peer: Peer) -> None:
    assert peer.error("fs/readFile", {}) == (-32602, "missing field `path`")


def test_second_initialize_is_invalid_request(ready: Peer) -> None:
    assert ready.error("initialize", {"clientName": "again"}) == (
        -32600,
        "initialize may only be sent once per connection",
    )


def test_initialize_without_client_name_is_invalid_params(peer: Peer) -> None:
    assert peer.error("initialize", {}) == (-32602, "missing field `clientName`")
    assert peer.error("initialize", None) == (
        -32602,
        "invalid type: null, expected struct InitializeParams",
    )


def test_initialize_answers_session_and_environment_info(peer: Peer) -> None:
    result = peer.handshake()
    info = result["environmentInfo"]
    assert len(result["sessionId"]) == 36
    assert info["capabilities"] == CAPABILITIES
    assert info["capabilities"]["execsdk/closeStdin"] is True
    assert info["cwd"] == path_to_uri(os.getcwd())
    assert info["platformOs"] in ("linux", "macos")
    assert info["executorVersion"].startswith("execsdk-")
    assert info["providerId"].startswith("execsdk:")


def test_unknown_method_is_method_not_found_even_before_initialize(peer: Peer) -> None:
    assert peer.error("nope/nope", {}) == (
        -32601,
        "exec-server stub does not implement `nope/nope` yet",
    )


@pytest.mark.parametrize(
    "msg",
    [
        {"method": "nope"},
        {"method": "process/output", "params": {}},
        {"id": 1, "result": {}},
        {"id": 1, "error": {"code": 1, "message": "x"}},
    ],
    ids=["unknown-notification", "server-notification", "result", "error"],
)
def test_connection_closes_silently(ready: Peer, msg: dict[str, Any]) -> None:
    assert ready.send(msg) is False
    with pytest.raises(queue.Empty):
        ready.out.get(timeout=0.2)


def test_initialized_before_initialize_closes(peer: Peer) -> None:
    assert peer.send({"method": "initialized"}) is False


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("{bad", "key must be a string at line 1 column 2"),
        ("[]", "expected a JSON-RPC object"),
        ('{"id":null,"method":"environment/status"}', "data did not match any variant of untagged enum RequestId"),
        ('{"id":1.5,"method":"environment/status"}', "data did not match any variant of untagged enum RequestId"),
        ("{}", "missing field `error`"),
        ('{"id":1,"method":5}', "invalid type: number, expected a string"),
        ("", "EOF while parsing a value at line 1 column 0"),
        ('{"id":1,"method":"x"', "EOF while parsing an object at line 1 column 20"),
        ('{"id":5,"method":"environment/status"}\n{"id":6}', "trailing characters at line 2 column 1"),
        ('{"error":5}', "invalid type: number, expected struct JSONRPCErrorError"),
    ],
)  # fmt: skip
def test_malformed_message_gets_id_minus_1_and_the_connection_stays(
    ready: Peer, raw: str, detail: str
) -> None:
    assert ready.send(raw) is True
    reply = ready.reply(-1)
    assert reply["error"] == {"code": -32600, "message": f"failed to parse test: {detail}"}
    assert ready.result("environment/status") == {"status": "ready"}


def test_binary_message_is_read_like_text(peer: Peer) -> None:
    peer.send(b'{"id":7,"method":"initialize","params":{"clientName":"b"}}')
    assert "sessionId" in peer.reply(7)["result"]


def test_request_ids_are_echoed_unchanged(ready: Peer) -> None:
    ready.send({"id": "abc", "method": "environment/status"})
    ready.send({"id": -5, "method": "environment/status"})
    assert ready.reply("abc")["result"] == {"status": "ready"}
    assert ready.reply(-5)["result"] == {"status": "ready"}


# --------------------------------------------------------------------------- params (serde wording)

PARAM_ERRORS: list[tuple[str, Any, int, str]] = [
    ("environment/info", [], -32602, "invalid type: sequence, expected unit"),
    ("environment/info", {"x": 1}, -32602, "invalid type: map, expected unit"),
    ("process/start", [], -32602, "invalid length 0, expected struct WireExecParams with 14 elements"),
    ("process/start", "x", -32602, 'invalid type: string "x", expected struct WireExecParams'),
    ("process/start", {"tty": True}, -32602, "missing field `processId`"),
    ("process/start", {"processId": "a", "argv": "true"}, -32602, 'invalid type: string "true", expected a sequence'),
    ("process/start", {"processId": "a", "argv": [1]}, -32602, "invalid type: number, expected a string"),
    ("process/start", {"processId": "a", "env": None}, -32602, "invalid type: null, expected a map"),
    ("process/start", {"processId": "a", "tty": "yes"}, -32602, 'invalid type: string "yes", expected a boolean'),
    ("process/start", {"processId": "a", "cwd": "/tmp"}, -32602, "invalid URI: relative URL without a base"),
    ("process/start", {"processId": "a", "cwd": "http://x/y"}, -32602, "unsupported path URI scheme `http`"),
    ("process/start", {"processId": "a", "envPolicy": {"inherit": "all"}}, -32602, "missing field `ignoreDefaultExcludes`"),
    ("process/start", {"envPolicy": {"inherit": "some"}}, -32602, "unknown variant `some`, expected one of `core`, `all`, `none`"),
    ("process/start", {"envPolicy": {"inherit": 5}}, -32602, "invalid type: number, expected string or map"),
    ("process/start", {"pipeStdin": None}, -32602, "invalid type: null, expected a boolean"),
    ("process/start", {"sandbox": "x"}, -32602, 'invalid type: string "x", expected struct WireFileSystemSandboxContext'),
    ("process/start", {"sandbox": {}}, -32602, "missing field `permissions`"),
    ("process/start", {"metadata": {"threadId": "t"}}, -32602, "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `t` at 1"),
    ("process/read", {}, -32602, "missing field `processId`"),
    ("process/read", {"processId": "x", "afterSeq": -1}, -32602, "invalid number"),
    ("process/read", {"processId": "x", "afterSeq": 1.0}, -32602, "invalid number"),
    ("process/read", {"processId": "x", "afterSeq": "1"}, -32602, 'invalid type: string "1", expected u64'),
    ("process/read", {"processId": True}, -32602, "invalid type: boolean `true`, expected a string"),
    ("process/write", {"processId": "x", "chunk": ""}, -32602, "missing field `writeId`"),
    ("process/write", {"processId": "x", "chunk": "!!", "writeId": "w"}, -32602, "Invalid symbol 33, offset 0."),
    ("process/signal", {"processId": "x", "signal": "kill"}, -32602, "unknown variant `kill`, expected `interrupt`"),
    ("process/signal", {"processId": "x"}, -32602, "missing field `signal`"),
    ("process/terminate", [], -32602, "invalid length 0, expected struct TerminateParams with 1 element"),
    ("fs/readFile", {"path": "file:///tmp/x?y"}, -32602, "query parameters are not allowed in path URIs"),
    ("fs/readFile", {"path": "file:///tmp/x#y"}, -32602, "fragments are not allowed in path URIs"),
    ("fs/readFile", {"path": ""}, -32602, "invalid URI: relative URL without a base"),
    ("fs/writeFile", {"path": "file:///tmp/w"}, -32602, "missing field `dataBase64`"),
    ("fs/copy", {"sourcePath": "file:///a", "destinationPath": "file:///b"}, -32602, "missing field `recursive`"),
    ("fs/walk", {"path": "file:///tmp", "options": {}}, -32602, "missing field `maxDepth`"),
    ("fs/open", {"handleId": "h", "path": "file:///tmp", "mode": "write"}, -32602, "unknown variant `write`, expected `read` or `replace`"),
    ("fs/open", {"handleId": "h", "path": "file:///tmp", "mode": None}, -32602, "invalid type: null, expected string or map"),
    ("fs/readBlock", {"handleId": "h", "offset": 0}, -32602, "missing field `len`"),
    ("http/request", {}, -32602, "missing field `method`"),
    ("http/request", {"method": "GET", "url": "http://x/"}, -32602, "missing field `requestId`"),
    ("http/request", {"method": "GET", "url": "http://x/", "requestId": "r", "headers": None}, -32602, "invalid type: null, expected a sequence"),
    ("fs/watchMissing", {"watchId": "x", "missing": []}, -32602, 'invalid type: string "x", expected u64'),
    ("environmentConfig/read", {"cwd": "file:///tmp"}, -32602, "missing field `configPaths`"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "params", "code", "message"), PARAM_ERRORS)
def test_bad_params_get_codex_wording(
    ready: Peer, method: str, params: Any, code: int, message: str
) -> None:
    assert ready.error(method, params) == (code, message)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", None), ("aGVsbG8=", None), ("aGVsbA==", None), ("=", "Invalid symbol 61, offset 0."),
        ("a", "Invalid input length: 1"), ("aGVsb", "Invalid input length: 5"),
        ("aG", "Invalid padding"), ("aGVsbA=", "Invalid padding"), ("aGVsbG8", "Invalid padding"),
        ("aGVsbG8==", "Invalid symbol 61, offset 7."), ("aG=s", "Invalid symbol 61, offset 2."),
        ("aG==", "Invalid last symbol 71, offset 1."), ("aGV=", "Invalid last symbol 86, offset 2."),
        ("aGVs====", "Invalid symbol 61, offset 4."), ("a===", "Invalid symbol 61, offset 1."),
        ("YQ==YQ==", "Invalid symbol 61, offset 2."), ("aGVs\u00e9", "Invalid symbol 195, offset 4."),
        ("aGVsbG8=\n", "Invalid symbol 10, offset 8."), ("aGVsbG8-", "Invalid symbol 45, offset 7."),
        ("AAAAAAAAAAAA!", "Invalid symbol 33, offset 12."), ("Zm9=", "Invalid last symbol 57, offset 2."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("decoder", ["installed", "stdlib"])
def test_base64_is_as_strict_as_codex(
    text: str, problem: str | None, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "stdlib":  # without the fast extra (no pybase64)
        monkeypatch.setattr(
            wire, "b64decode_alphabet", lambda t: binascii.a2b_base64(t, strict_mode=True)
        )
    if problem is None:
        assert b64decode_strict(text) == base64.b64decode(text)
    else:
        with pytest.raises(ValueError) as info:
            b64decode_strict(text)
        assert str(info.value) == problem


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file:///tmp/x", "/tmp/x"),
        ("file:///tmp/sp ace/%C3%BC.txt", "/tmp/sp ace/\u00fc.txt"),
        ("file:///tmp/a%23b", "/tmp/a#b"),
        ("FILE://localhost/tmp/x", "/tmp/x"),
        ("file:tmp", "/tmp"),
        ("file://", "/"),
        ("file:///a/b/../../etc/./hosts", "/etc/hosts"),
        ("file:///../../etc", "/etc"),
        ("file:///tmp//x", "/tmp//x"),
        (" file:///tmp/x ", "/tmp/x"),
    ],
)
def test_file_uris_parse_like_codex(uri: str, path: str) -> None:
    assert P.parse_path_uri(uri).path == path


def test_foreign_host_uri_is_reported_per_method(ready: Peer, tmp_path: Path) -> None:
    assert ready.error("fs/readFile", {"path": "file://host/tmp/x"}) == (
        -32600,
        "'file://host/tmp/x' is invalid on 'linux'",
    )
    code, message = ready.error(
        "process/start",
        {"processId": "h", "argv": ["true"], "cwd": "file://host/tmp", "env": {}, "tty": False},
    )
    assert (code, message) == (
        -32602,
        "cwd URI `file://host/tmp` is not valid on this exec-server host: "
        "'file://host/tmp' is invalid on 'linux'",
    )
    watched = ready.result("fs/watchMissing", {"watchId": 1, "missing": ["file://host/x"]})
    assert watched == {"watching": False}


def test_paths_we_report_are_percent_encoded_uris() -> None:
    assert path_to_uri("/tmp/a b#c%d/\u00fc") == "file:///tmp/a%20b%23c%25d/%C3%BC"
    assert path_to_uri("/x/[y]@z:1") == "file:///x/[y]@z:1"


# --------------------------------------------------------------------------- error mapping


def test_error_mapping_lives_in_one_place() -> None:
    enoent = errors.os_error(errno.ENOENT, "No such file or directory", "/x")
    assert error_for(enoent, "filesystem") == (-32004, "No such file or directory (os error 2)")
    assert error_for(enoent, "exec") == (-32603, "No such file or directory (os error 2)")
    exists = errors.os_error(errno.EEXIST, "whatever the backend said")
    assert error_for(exists, "filesystem") == (-32603, "File exists (os error 17)")
    assert error_for(errors.ProcessNotFound("gone", process_id="p9"), "exec") == (
        -32600,
        "unknown process id p9",
    )
    assert error_for(errors.NotFound(-32004, "unknown file handle `h`")) == (
        -32004,
        "unknown file handle `h`",
    )
    code, message = error_for(RuntimeError("boom"), "exec")
    assert code == -32603 and "boom" in message


# --------------------------------------------------------------------------- processes


def test_process_events_become_numbered_notifications(ready: Peer, tmp_path: Path) -> None:
    result = start(ready, "p", ["sh", "-c", "echo out; echo err >&2; exit 3"], tmp_path)
    assert result == {"processId": "p", "sandboxType": "none"}
    closed = ready.notification("process/closed", lambda p: p["processId"] == "p")
    exited = ready.notification("process/exited")["params"]
    assert exited["exitCode"] == 3 and exited["sandboxDenied"] is False
    outputs = [n["params"] for n in ready.notes if n["method"] == "process/output"]
    data = {o["stream"]: base64.b64decode(o["chunk"]) for o in outputs}
    assert data == {"stdout": b"out\n", "stderr": b"err\n"}
    seqs = sorted([o["seq"] for o in outputs] + [exited["seq"]])
    assert seqs == [1, 2, 3] and closed["params"]["seq"] == 4


def test_process_read_returns_retained_chunks_and_state(ready: Peer, tmp_path: Path) -> None:
    start(ready, "r", ["sh", "-c", "printf abc"], tmp_path)
    ready.notification("process/closed")
    result = ready.result("process/read", {"processId": "r"})
    assert [base64.b64decode(c["chunk"]) for c in result["chunks"]] == [b"abc"]
    assert result["exited"] is True and result["closed"] is True and result["exitCode"] == 0
    assert result["nextSeq"] == 4 and result["sandboxDenied"] is False
    assert ready.error("process/read", {"processId": "zz"}) == (-32600, "unknown process id zz")


def test_spawn_failure_is_internal_error(ready: Peer, tmp_path: Path) -> None:
    assert ready.error(
        "process/start",
        {"processId": "x", "argv": ["no-such-cmd-xyz"], "cwd": f"file://{tmp_path}", "env": {}, "tty": False},
    ) == (-32603, "No such file or directory (os error 2)")  # fmt: skip


def test_reused_write_id_is_accepted_but_not_delivered(ready: Peer, tmp_path: Path) -> None:
    start(ready, "cat", ["cat"], tmp_path, pipeStdin=True)
    start(ready, "cat2", ["cat"], tmp_path, pipeStdin=True)
    for pid, data, wid in [("cat", "one\n", "a"), ("cat", "two\n", "a"), ("cat2", "three\n", "a")]:
        reply = ready.result(
            "process/write", {"processId": pid, "chunk": b64(data), "writeId": wid}
        )
        assert reply == {"status": "accepted"}
    for pid in ("cat", "cat2"):
        assert ready.result("process/closeStdin", {"processId": pid}) == {}
    assert output_of(ready, "cat") == b"one\n"
    assert output_of(ready, "cat2") == b"three\n"  # writeIds are per process


def test_write_status_for_unknown_and_stdinless_processes(ready: Peer, tmp_path: Path) -> None:
    start(ready, "t", ["sleep", "5"], tmp_path)
    write = {"chunk": b64("x"), "writeId": "w"}
    assert ready.result("process/write", {"processId": "t", **write}) == {"status": "stdinClosed"}
    assert ready.result("process/write", {"processId": "nope", **write}) == {
        "status": "unknownProcess"
    }
    assert ready.result("process/terminate", {"processId": "t"}) == {"running": True}
    assert ready.notification("process/exited")["params"]["exitCode"] == 137


def test_signal_and_close_stdin_answer_empty_for_unknown_ids(ready: Peer) -> None:
    assert ready.result("process/signal", {"processId": "nope", "signal": "interrupt"}) == {}
    assert ready.result("process/closeStdin", {"processId": "nope"}) == {}
    assert ready.result("process/terminate", {"processId": "nope"}) == {"running": False}


def test_sandboxed_requests_are_refused_not_ignored(ready: Peer, tmp_path: Path) -> None:
    code, message = ready.error(
        "process/start",
        {"processId": "s", "argv": ["true"], "cwd": f"file://{tmp_path}", "env": {}, "tty": False,
         "sandbox": {"permissions": {}}},
    )  # fmt: skip
    assert code == -32600 and "sandbox" in message
    code, _ = ready.error(
        "fs/readFile", {"path": f"file://{tmp_path}/x", "sandbox": {"permissions": 1}}
    )
    assert code == -32600


# --------------------------------------------------------------------------- concurrency (§7)


def test_long_poll_read_does_not_delay_later_requests(ready: Peer, tmp_path: Path) -> None:
    start(ready, "slow", ["sleep", "5"], tmp_path)
    began = time.monotonic()
    poll = ready.request("process/read", {"processId": "slow", "afterSeq": 0, "waitMs": 1500})
    assert ready.result("environment/status") == {"status": "ready"}
    assert ready.result("fs/getMetadata", {"path": f"file://{tmp_path}"})["isDirectory"] is True
    assert time.monotonic() - began < 1.0
    assert ready.reply(poll)["result"]["chunks"] == []
    ready.result("process/terminate", {"processId": "slow"})


def test_many_long_polls_do_not_starve_other_requests(ready: Peer, tmp_path: Path) -> None:
    start(ready, "quiet", ["sleep", "5"], tmp_path)
    polls = [
        ready.request("process/read", {"processId": "quiet", "afterSeq": 0, "waitMs": 1000})
        for _ in range(12)  # more than the 8 request workers
    ]
    began = time.monotonic()
    assert ready.result("environment/status") == {"status": "ready"}
    assert time.monotonic() - began < 0.8
    assert all(ready.reply(p)["result"]["chunks"] == [] for p in polls)
    ready.result("process/terminate", {"processId": "quiet"})


def test_pipelined_changes_apply_in_arrival_order(ready: Peer, tmp_path: Path) -> None:
    # Sent without waiting: the write must see the started process, and writes keep their order.
    cwd = f"file://{tmp_path}"
    ids = [
        ready.request(
            "process/start",
            {"processId": "c", "argv": ["cat"], "cwd": cwd, "env": {}, "tty": False, "pipeStdin": True},
        )
    ]  # fmt: skip
    for i in range(20):
        ids.append(
            ready.request(
                "process/write", {"processId": "c", "chunk": b64(f"{i},"), "writeId": str(i)}
            )
        )
    ids.append(ready.request("process/closeStdin", {"processId": "c"}))
    answers = [ready.reply(i) for i in ids]
    assert all("result" in a for a in answers), answers
    assert all(a["result"] == {"status": "accepted"} for a in answers[1:-1])
    assert output_of(ready, "c") == "".join(f"{i}," for i in range(20)).encode()


def test_pipelined_file_write_then_read_sees_the_write(ready: Peer, tmp_path: Path) -> None:
    path = f"file://{tmp_path}/f"
    first = ready.request("fs/writeFile", {"path": path, "dataBase64": b64("v1")})
    second = ready.request("fs/readFile", {"path": path})
    assert ready.reply(first)["result"] == {}
    assert base64.b64decode(ready.reply(second)["result"]["dataBase64"]) == b"v1"


# --------------------------------------------------------------------------- sessions


def test_session_survives_the_connection_and_resumes(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    first = Peer(registry)
    session_id = first.handshake()["sessionId"]
    start(first, "s", ["sh", "-c", "sleep 0.5; echo late"], tmp_path)
    first.close()  # detached: the process keeps running, its notifications are dropped
    session = registry.get(session_id)
    assert session is not None
    # The process ends while nobody is attached.
    wait_until(lambda: session.backend.read("s").closed, 10, "the process did not end")
    second = Peer(registry)
    try:
        assert second.handshake(resumeSessionId=session_id)["sessionId"] == session_id
        result = second.result("process/read", {"processId": "s"})
        assert b"late\n" in b"".join(base64.b64decode(c["chunk"]) for c in result["chunks"])
        assert result["exitCode"] == 0
    finally:
        second.close()


def test_resume_of_attached_or_unknown_session_is_refused(registry: SessionRegistry) -> None:
    first, second = Peer(registry), Peer(registry)
    try:
        session_id = first.handshake()["sessionId"]
        assert second.error("initialize", {"clientName": "b", "resumeSessionId": session_id}) == (
            -32010,
            f"session {session_id} is already attached to another connection",
        )
        assert second.error("initialize", {"clientName": "b", "resumeSessionId": "nope"}) == (
            -32600,
            "unknown session id nope",
        )
        # A failed initialize may be retried on the same connection.
        assert "sessionId" in second.result("initialize", {"clientName": "b"})
    finally:
        first.close()
        second.close()


def test_expired_session_kills_its_processes(tmp_path: Path) -> None:
    registry = SessionRegistry(grace=0.3)
    try:
        first = Peer(registry)
        session_id = first.handshake()["sessionId"]
        start(first, "z", ["sh", "-c", "echo $$; exec sleep 30"], tmp_path)
        note = first.notification("process/output")
        child = int(base64.b64decode(note["params"]["chunk"]))
        first.close()
        wait_until(lambda: registry.get(session_id) is None, 10, "the session did not expire")
        _wait_gone(child)
        second = Peer(registry)
        assert second.error("initialize", {"clientName": "b", "resumeSessionId": session_id}) == (
            -32600,
            f"unknown session id {session_id}",
        )
        second.close()
    finally:
        registry.close()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    wait_until(lambda: pid_gone(pid), timeout, f"process {pid} is still alive", interval=0.05)


def test_registry_close_kills_attached_sessions(registry: SessionRegistry, tmp_path: Path) -> None:
    peer = Peer(registry)
    peer.handshake()
    start(peer, "k", ["sh", "-c", "echo $$; exec sleep 30"], tmp_path)
    child = int(base64.b64decode(peer.notification("process/output")["params"]["chunk"]))
    registry.close(timeout=5)
    _wait_gone(child)
    peer.close()


def test_custom_backend_factory_is_used_per_session() -> None:
    made: list[LocalProcessBackend] = []

    def factory() -> LocalProcessBackend:
        made.append(LocalProcessBackend(retain_after_close=1.0))
        return made[-1]

    registry = SessionRegistry(backend_factory=factory)
    try:
        a, b = Peer(registry), Peer(registry)
        a.handshake()
        b.handshake()
        assert len(made) == 2 and a.conn.session.backend is made[0]
        a.close()
        b.close()
    finally:
        registry.close()


# --------------------------------------------------------------------------- fs, watch, misc


def test_fs_round_trip_through_handlers(ready: Peer, tmp_path: Path) -> None:
    base = f"file://{tmp_path}"
    assert ready.result("fs/createDirectory", {"path": f"{base}/d/e"}) == {}
    assert (
        ready.result("fs/writeFile", {"path": f"{base}/d/e/f b%23", "dataBase64": b64("hi")}) == {}
    )
    meta = ready.result("fs/getMetadata", {"path": f"{base}/d/e/f%20b%23"})
    assert meta["isFile"] is True and meta["size"] == 2
    entries = ready.result("fs/readDirectory", {"path": f"{base}/d/e"})["entries"]
    assert entries == [{"fileName": "f b#", "isDirectory": False, "isFile": True}]
    walked = ready.result(
        "fs/walk",
        {"path": f"{base}/d", "options": {"maxDepth": 5, "maxDirectories": 10, "maxEntries": 10,
                                            "followDirectorySymlinks": False}},
    )  # fmt: skip
    assert [e["path"] for e in walked["entries"]] == [f"{base}/d/e", f"{base}/d/e/f%20b%23"]
    canon = ready.result("fs/canonicalize", {"path": f"{base}/d/../d/e"})["path"]
    assert canon == path_to_uri(os.path.realpath(tmp_path / "d" / "e"))
    assert ready.error("fs/readFile", {"path": f"{base}/missing"}) == (
        -32004,
        "No such file or directory (os error 2)",
    )
    assert ready.error("fs/writeFile", {"path": f"{base}/x", "dataBase64": "!!"}) == (
        -32600,
        "fs/writeFile requires valid base64 dataBase64: Invalid symbol 33, offset 0.",
    )
    assert ready.result("fs/remove", {"path": f"{base}/d"}) == {}
    assert not (tmp_path / "d").exists()


def test_file_handles_belong_to_the_connection(registry: SessionRegistry, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    first = Peer(registry)
    first.handshake()
    path = f"file://{tmp_path}/f"
    assert first.result("fs/open", {"handleId": "h", "path": path}) == {"handleId": "h"}
    block = first.result("fs/readBlock", {"handleId": "h", "offset": 8, "len": 5})
    assert block == {"chunk": b64("89"), "eof": True}
    assert first.conn.fs.open_handle_count() == 1
    first.close()
    assert first.conn.fs.open_handle_count() == 0
    second = Peer(registry)
    second.handshake()
    assert second.error("fs/readBlock", {"handleId": "h", "offset": 0, "len": 1}) == (
        -32004,
        "unknown file handle `h`",
    )
    second.close()


def test_watch_missing_fires_once_when_the_path_appears(ready: Peer, tmp_path: Path) -> None:
    target = tmp_path / "later" / "file"
    watch = {"watchId": 3, "missing": [f"file://{target}"], "present": None}
    assert ready.result("fs/watchMissing", watch) == {"watching": True}
    assert ready.result("fs/watchMissing", {**watch, "watchId": 2}) == {"watching": False}
    (tmp_path / "later").mkdir()
    note = ready.notification("fs/missingChanged")
    assert note["params"] == {"watchId": 3}
    exists = {"watchId": 4, "missing": [f"file://{tmp_path}"]}
    assert ready.result("fs/watchMissing", exists) == {"watching": False}


def test_environment_config_read_shape(ready: Peer, tmp_path: Path) -> None:
    cwd = f"file://{tmp_path}"
    result = ready.result(
        "environmentConfig/read",
        {"cwd": cwd, "configPaths": [["mcp_servers"]], "requirementsPaths": [["mcp_servers"]]},
    )
    assert set(result) == {"userHomeDir", "codexHomeDir", "hostname", "config", "requirements"}
    assert result["config"] == {"layers": [], "cloudInsertionIndex": 0}
    assert result["codexHomeDir"].startswith("file:///")
    assert ready.error(
        "environmentConfig/read", {"cwd": cwd, "configPaths": [], "requirementsPaths": []}
    ) == (-32602, "at least one config or requirements path is required")


def test_http_request_connection_failure_is_internal_error(ready: Peer) -> None:
    params = {"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "r"}
    assert ready.error("http/request", params) == (
        -32603,
        "http/request failed: error sending request for url (http://127.0.0.1:1/)",
    )
    assert ready.error("http/request", {**params, "url": "ftp://x/"}) == (
        -32602,
        "http/request only supports http and https URLs, got ftp",
    )


def test_http_request_streams_the_body_after_the_answer(ready: Peer) -> None:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"z" * 150_000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        params = {"method": "GET", "url": url, "requestId": "s", "streamResponse": True}
        rid = ready.request("http/request", params)
        answer = ready.reply(rid)["result"]
        assert answer["status"] == 200 and answer["bodyBase64"] == ""
        done = ready.notification("http/request/bodyDelta", lambda p: p["done"])
        deltas = [n["params"] for n in ready.notes if n["method"] == "http/request/bodyDelta"]
        body = b"".join(base64.b64decode(d["deltaBase64"]) for d in deltas)
        assert body == b"z" * 150_000 and done["params"]["error"] is None
        assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_outbox_gives_up_on_a_client_that_does_not_read() -> None:
    gate = threading.Event()
    entered = threading.Event()
    overflowed = threading.Event()

    def blocked_send(batch: list[bytes]) -> None:
        entered.set()
        gate.wait()

    outbox = Outbox(blocked_send, on_overflow=overflowed.set, limit=1000)
    try:
        assert outbox.put("x" * 600)  # taken by the writer, which then blocks
        assert entered.wait(5), "the writer did not take the first message"
        assert outbox.put("y" * 600)
        assert outbox.put("z" * 600) is False
        assert overflowed.is_set() and outbox.closed
    finally:
        gate.set()
        outbox.close()


def test_outbox_sends_replies_ahead_of_waiting_notifications_each_lane_in_order() -> None:
    gate = threading.Event()
    batches: list[list[bytes]] = []

    def send(batch: list[bytes]) -> None:
        gate.wait(10)
        batches.append(list(batch))

    outbox = Outbox(send)
    try:
        assert outbox.put(b"n1")  # taken by the writer, which then blocks
        wait_until(lambda: outbox.queued_bytes == 0, 5, "the writer did not take n1")
        queue_these: list[tuple[str | bytes, bool]] = [
            (b"n2", False),
            (b"r1", True),
            (b"n3", False),
            ("r2", True),  # text is queued as UTF-8
            (b"n4", False),
        ]
        for message, reply in queue_these:
            assert outbox.put_reply(message) if reply else outbox.put(message, output=True)
    finally:
        gate.set()
        outbox.close(drain=True)
    assert batches == [[b"n1"], [b"r1", b"r2", b"n2", b"n3", b"n4"]]


def test_outbox_batches_stay_under_the_cap_but_hold_at_least_one_message() -> None:
    gate = threading.Event()
    batches: list[list[bytes]] = []

    def send(batch: list[bytes]) -> None:
        gate.wait(10)
        batches.append(list(batch))

    outbox = Outbox(send, batch_bytes=100)
    try:
        outbox.put(b"first")
        wait_until(lambda: outbox.queued_bytes == 0, 5, "the writer did not take the first")
        for size in (40, 40, 40, 250, 10):
            outbox.put(b"x" * size)
    finally:
        gate.set()
        outbox.close(drain=True)
    assert [[len(m) for m in batch] for batch in batches] == [[5], [40, 40], [40], [250], [10]]


@pytest.mark.parametrize("process_id", ["p", 'quote"and\\slash', "caf\u00e9 \u2603"])
@pytest.mark.parametrize("stream", ["stdout", "stderr", "pty"])
def test_output_notifications_built_as_bytes_are_the_json_of_their_params(
    registry: SessionRegistry, process_id: str, stream: Any
) -> None:
    sent: queue.Queue[bytes] = queue.Queue()

    def send(batch: list[bytes]) -> None:
        for message in batch:
            sent.put(message)

    outbox = Outbox(send)
    owner = object()
    session = registry.attach(None, owner)
    registry.connect(session, owner, outbox)
    try:
        data = bytes(range(256)) * 32  # 8192 bytes, the largest chunk
        session.events_for(process_id).on_output(123456789, stream, data)
        message = sent.get(timeout=5)
    finally:
        outbox.close()
    assert json.loads(message) == {
        "method": "process/output",
        "params": {"processId": process_id, "seq": 123456789, "stream": stream, "chunk": b64(data)},
    }
    assert list(json.loads(message)["params"]) == ["processId", "seq", "stream", "chunk"]


def test_threads_are_named_and_end_with_the_connection(registry: SessionRegistry) -> None:
    peer = Peer(registry)
    peer.handshake()
    peer.result("environment/status")
    names = {t.name for t in threading.enumerate()}
    assert any(n.startswith("execsdk-serve-worker-") for n in names)
    assert any(n.startswith("execsdk-serve-writer-") for n in names)
    peer.close()
    prefix = f"execsdk-serve-worker-{peer.conn.name}-"
    wait_until(
        lambda: not any(t.name.startswith(prefix) for t in threading.enumerate()),
        5,
        "the connection's workers outlived it",
        interval=0.02,
    )
