"""Servers that misbehave on purpose (a fake WebSocket server on the ``websockets`` sync API).

Garbage, oversized or truncated frames, answers with unknown ids, malformed answers, requests
from the server, notifications for processes nobody started: the client either carries on
(where the fault is confined to one message) or ends the link with ``ConnectionLost`` whose
``__cause__`` says why. Nothing hangs past its timeout and nothing leaks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import execsdk
from execsdk import errors
from execsdk.client import Client
from tests.reliability.reliability_support import (
    FakeConn,
    FakeServer,
    no_fd_leak,
    ws_frame_header,
)

OP_TEXT = 0x1
OP_BINARY = 0x2


@contextmanager
def fake(behaviour: Callable[[FakeConn], None]) -> Iterator[FakeServer]:
    # Counted: the client's and the fake server's connection sockets. Not counted: epoll
    # descriptors, which websockets' server-side reader threads may keep a while (its poller
    # outlives a socket closed under it); the client itself uses none.
    with FakeServer(behaviour) as server, no_fd_leak(ignore=("anon_inode:[eventpoll]",)):
        yield server
    assert not server.errors, server.errors


def _serve_status_then(
    after: Callable[[FakeConn, dict[str, object]], None],
) -> Callable[[FakeConn], None]:
    """Handshake, then hand the first request to ``after`` and idle."""

    def behaviour(conn: FakeConn) -> None:
        conn.handshake()
        req = conn.recv_request()
        after(conn, req)
        conn.idle(10)

    return behaviour


def _lost_within(call: Callable[[], object], seconds: float) -> errors.ConnectionLost:
    start = time.monotonic()
    with pytest.raises(errors.ConnectionLost) as info:
        call()
    assert time.monotonic() - start < seconds
    return info.value


# --------------------------------------------------------------------------- garbage


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "garbage",
    [
        "not json at all",
        '{"id": 1, "result": ',
        "[]",
        "42",
        '{"id": 1}',
        '{"id": [1], "result": {}}',
        '{"method": 5, "params": {}}',
        "[" * 10_000 + "]" * 10_000,
    ],
    ids=["text", "truncated-json", "batch", "scalar", "no-result", "bad-id", "bad-method", "deep"],
)
def test_garbage_from_the_server_ends_the_link_with_protocol_error(garbage: str) -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.send(garbage)

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        lost = _lost_within(lambda: client.environment_status(timeout=10), 3.0)
        assert isinstance(lost.__cause__, errors.ProtocolError), repr(lost.__cause__)
        assert not client.is_open


@pytest.mark.timeout(30)
def test_invalid_utf8_binary_frame_ends_the_link() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.ws.send(b"\xff\xfe\x00garbage")

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        lost = _lost_within(lambda: client.environment_status(timeout=10), 3.0)
        assert isinstance(lost.__cause__, errors.ProtocolError)


@pytest.mark.timeout(30)
def test_binary_frame_with_json_is_accepted() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.ws.send(f'{{"id": {req["id"]}, "result": {{"status": "ready"}}}}'.encode())

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        assert client.environment_status(timeout=5).status == "ready"


@pytest.mark.timeout(30)
def test_request_from_the_server_ends_the_link() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.send({"id": 77, "method": "client/doSomething", "params": {}})

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        lost = _lost_within(lambda: client.environment_status(timeout=10), 3.0)
        assert isinstance(lost.__cause__, errors.ProtocolError)


# --------------------------------------------------------------------------- framing


@pytest.mark.timeout(30)
def test_truncated_frame_then_eof_ends_the_link() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        body = b'{"id": 1, "result": {"status": "ready"}}'
        conn.send_raw(ws_frame_header(OP_TEXT, len(body)) + body[:10])
        time.sleep(0.2)  # the misbehaviour: the frame stops, and only later the link ends
        conn.abort()

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        _lost_within(lambda: client.environment_status(timeout=10), 3.0)


@pytest.mark.timeout(30)
def test_truncated_frame_then_silence_times_out_and_close_is_bounded() -> None:
    """A frame announced but never finished: the call times out; close() does not wait for
    the rest of the frame."""

    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.send_raw(ws_frame_header(OP_TEXT, 1000) + b'{"id": 1, ')
        conn.idle(10)

    with fake(_serve_status_then(after)) as server:
        client = Client.connect(server.url)
        start = time.monotonic()
        with pytest.raises(errors.RequestTimeout):
            client.environment_status(timeout=1.0)
        assert time.monotonic() - start < 2.0
        start = time.monotonic()
        client.close(timeout=2.0)
        assert time.monotonic() - start < 3.0


@pytest.mark.timeout(30)
def test_absurd_frame_length_then_eof_ends_the_link() -> None:
    """A header announcing 2**62 bytes must not make the client allocate or wait for them."""

    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.send_raw(ws_frame_header(OP_TEXT, 2**62) + b"x" * 100)
        time.sleep(0.2)  # the misbehaviour: the frame stops, and only later the link ends
        conn.abort()

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        _lost_within(lambda: client.environment_status(timeout=10), 3.0)


@pytest.mark.timeout(30)
def test_reserved_opcode_ends_the_link() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.send_raw(bytes([0x80 | 0x3, 2]) + b"{}")

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        _lost_within(lambda: client.environment_status(timeout=10), 3.0)


@pytest.mark.timeout(60)
def test_oversized_answer_arrives_whole() -> None:
    """Server-to-client messages have no size limit (PROTOCOL.md §1.5): 70 MiB arrive whole."""
    size = 70 * 2**20

    def after(conn: FakeConn, req: dict[str, object]) -> None:
        blob = "a" * size
        conn.send(f'{{"id": {req["id"]}, "result": {{"blob": "{blob}"}}}}')

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        result = client.call("fake/big", {}, timeout=30)
        assert len(result["blob"]) == size


@pytest.mark.timeout(30)
def test_fragmented_answer_is_reassembled() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        text = f'{{"id": {req["id"]}, "result": {{"status": "ready"}}}}'
        conn.ws.send(iter([text[:5], text[5:20], text[20:]]))

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        assert client.environment_status(timeout=5).status == "ready"


# --------------------------------------------------------------------------- answers


@pytest.mark.timeout(30)
def test_answers_with_unknown_ids_are_dropped() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        rid = req["id"]
        conn.send({"id": 987654, "result": {"status": "bogus"}})
        conn.send({"id": str(rid), "result": {"status": "string id"}})
        conn.send({"id": -1, "error": {"code": -32600, "message": "failed to parse"}})
        conn.send({"id": rid, "result": {"status": "ready"}})
        conn.send({"id": rid, "result": {"status": "duplicate"}})
        second = conn.recv_request()
        conn.reply(second, {"status": "second"})

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        assert client.environment_status(timeout=5).status == "ready"
        assert client.environment_status(timeout=5).status == "second"
        assert client.is_open


@pytest.mark.timeout(30)
def test_malformed_result_fails_only_that_call() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.reply(req, {"status": 12, "unexpected": True})
        second = conn.recv_request()
        conn.reply(second, {"status": "ready"})

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        with pytest.raises(errors.ProtocolError):
            client.environment_status(timeout=5)
        assert client.environment_status(timeout=5).status == "ready"


@pytest.mark.timeout(30)
def test_error_answer_of_unknown_shape_ends_the_link() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.send({"id": req["id"], "error": "just a string"})

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        lost = _lost_within(lambda: client.environment_status(timeout=10), 3.0)
        assert isinstance(lost.__cause__, errors.ProtocolError)


@pytest.mark.timeout(30)
def test_error_answer_keeps_code_and_message() -> None:
    def after(conn: FakeConn, req: dict[str, object]) -> None:
        conn.error(req, -32099, "custom failure")
        second = conn.recv_request()
        conn.reply(second, {"status": "ready"})

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        with pytest.raises(errors.ServerError) as info:
            client.environment_status(timeout=5)
        assert (info.value.code, info.value.message) == (-32099, "custom failure")
        assert client.environment_status(timeout=5).status == "ready"


# --------------------------------------------------------------------------- handshake


@pytest.mark.timeout(30)
def test_initialize_never_answered_raises_initialize_timeout() -> None:
    def behaviour(conn: FakeConn) -> None:
        conn.recv_request("initialize")
        conn.idle(10)

    with fake(behaviour) as server:
        start = time.monotonic()
        with pytest.raises(errors.InitializeTimeout):
            Client.connect(server.url, initialize_timeout=1.0)
        assert time.monotonic() - start < 3.0


@pytest.mark.timeout(30)
def test_close_right_after_the_upgrade_raises_connect_error() -> None:
    def behaviour(conn: FakeConn) -> None:
        conn.abort()

    with fake(behaviour) as server, pytest.raises(errors.ConnectError):
        Client.connect(server.url, initialize_timeout=5.0)


@pytest.mark.timeout(30)
def test_initialize_answered_with_garbage_raises_connect_error() -> None:
    def behaviour(conn: FakeConn) -> None:
        init = conn.recv_request("initialize")
        conn.reply(init, {"sessionId": 5})
        conn.idle(5)

    with fake(behaviour) as server, pytest.raises((errors.ConnectError, errors.ProtocolError)):
        Client.connect(server.url, initialize_timeout=5.0)


# --------------------------------------------------------------------------- notifications


@pytest.mark.timeout(30)
def test_notifications_for_unknown_processes_are_ignored() -> None:
    """Output for a process nobody started, and malformed process notifications, neither
    reach the real process nor break the link."""

    def behaviour(conn: FakeConn) -> None:
        conn.handshake()
        start = conn.recv_request("process/start")
        pid = start["params"]["processId"]
        for method, params in [
            (
                "process/output",
                {"processId": "ghost", "seq": 1, "stream": "stdout", "chunk": "Z2hvc3Q="},
            ),
            ("process/exited", {"processId": "ghost", "seq": 2, "exitCode": 9}),
            ("process/closed", {"processId": "ghost", "seq": 3}),
            ("process/output", {"seq": 1}),
            ("process/output", "not an object"),
            ("process/unknownEvent", {"processId": pid}),
        ]:
            conn.send({"method": method, "params": params})
        conn.reply(start, {"processId": pid, "sandboxType": "none"})
        conn.notify(
            "process/output", {"processId": pid, "seq": 1, "stream": "stdout", "chunk": "cmVhbAo="}
        )
        conn.notify("process/exited", {"processId": pid, "seq": 2, "exitCode": 0})
        conn.notify("process/closed", {"processId": pid, "seq": 3})
        # Anything else (terminate on exit, ...) is answered generically.
        while True:
            req = conn.recv_request(timeout=10)
            conn.reply(req, {"running": False})

    with fake(behaviour) as server, execsdk.connect(server.url, timeout=5) as env:
        proc = env.spawn(["anything"])
        out, err = proc.communicate(timeout=5)
        assert (out, err, proc.returncode) == (b"real\n", b"", 0)
        assert env.client.is_open


@pytest.mark.timeout(30)
def test_malformed_notification_for_a_live_process_is_recovered_by_read() -> None:
    """A notification the client cannot decode leaves a seq gap; the process facade fills it
    with process/read and the output is complete."""

    def behaviour(conn: FakeConn) -> None:
        conn.handshake()
        start = conn.recv_request("process/start")
        pid = start["params"]["processId"]
        conn.reply(start, {"processId": pid, "sandboxType": "none"})
        conn.notify(
            "process/output",
            {"processId": pid, "seq": 1, "stream": "stdout", "chunk": "!!not base64"},
        )
        conn.notify(
            "process/output", {"processId": pid, "seq": 2, "stream": "stdout", "chunk": "Yg=="}
        )
        conn.notify("process/closed", {"processId": pid, "seq": 4})
        while True:
            req = conn.recv_request(timeout=10)
            if req["method"] == "process/read":
                conn.reply(
                    req,
                    {
                        "chunks": [
                            {"seq": 1, "stream": "stdout", "chunk": "YQ=="},
                            {"seq": 2, "stream": "stdout", "chunk": "Yg=="},
                        ],
                        "nextSeq": 5,
                        "exited": True,
                        "exitCode": 4,
                        "closed": True,
                        "failure": None,
                    },
                )
            else:
                conn.reply(req, {"running": False})

    with fake(behaviour) as server, execsdk.connect(server.url, timeout=5) as env:
        proc = env.spawn(["anything"])
        out, _ = proc.communicate(timeout=10)
        assert out == b"ab"
        assert proc.returncode == 4


@pytest.mark.timeout(30)
def test_notification_flood_does_not_block_calls() -> None:
    """10,000 notifications nobody listens to, interleaved with an answer."""

    def after(conn: FakeConn, req: dict[str, object]) -> None:
        for i in range(5000):
            conn.notify(
                "process/output", {"processId": "nobody", "seq": i, "stream": "stdout", "chunk": ""}
            )
        conn.reply(req, {"status": "ready"})
        for i in range(5000):
            conn.notify("fake/noise", {"n": i})
        second = conn.recv_request()
        conn.reply(second, {"status": "second"})

    with fake(_serve_status_then(after)) as server, Client.connect(server.url) as client:
        assert client.environment_status(timeout=10).status == "ready"
        assert client.environment_status(timeout=10).status == "second"


# --------------------------------------------------------------------------- concurrency


@pytest.mark.timeout(30)
def test_server_vanishing_under_many_calls_fails_them_all_promptly() -> None:
    """50 calls in flight when the server drops the TCP connection: all ConnectionLost."""
    got_all = threading.Event()

    def behaviour(conn: FakeConn) -> None:
        conn.handshake()
        for _ in range(50):
            conn.recv_request()
        got_all.set()
        conn.abort()

    with fake(behaviour) as server, Client.connect(server.url) as client:
        outcomes: list[BaseException | None] = []
        lock = threading.Lock()

        def call() -> None:
            try:
                client.environment_status(timeout=20)
                got: BaseException | None = None
            except BaseException as exc:
                got = exc
            with lock:
                outcomes.append(got)

        threads = [threading.Thread(target=call) for _ in range(50)]
        for t in threads:
            t.start()
        assert got_all.wait(10)
        start = time.monotonic()
        for t in threads:
            t.join(5)
        assert time.monotonic() - start < 2.0
        assert len(outcomes) == 50
        assert all(isinstance(o, errors.ConnectionLost) for o in outcomes), outcomes
