"""Unit tests of the JSON-RPC core on the in-memory transport."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from execsdk._rpc.endpoint import RpcClient
from execsdk._transport.memory import MemoryTransport, memory_pair
from execsdk.errors import (
    ConnectionClosed,
    ConnectionLost,
    InvalidRequest,
    RequestTimeout,
    ServerError,
)
from tests.waiting import wait_until


class EchoServer:
    """Answers every request on the far end of a memory pair, optionally out of order."""

    def __init__(self, end: MemoryTransport, *, reverse_batches: int = 1) -> None:
        self.end = end
        self.reverse_batches = reverse_batches
        self.seen: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        batch: list[dict[str, Any]] = []
        while True:
            raw = self.end.recv()
            if raw is None:
                return
            msg = json.loads(raw)
            self.seen.append(msg)
            if "id" not in msg:
                continue
            batch.append(msg)
            if len(batch) >= self.reverse_batches:
                for m in reversed(batch):
                    self._answer(m)
                batch = []

    def _answer(self, msg: dict[str, Any]) -> None:
        method = msg["method"]
        try:
            if method == "fail":
                self.end.send(
                    json.dumps({"id": msg["id"], "error": {"code": -32600, "message": "nope"}})
                )
            elif method == "silent":
                pass
            else:
                self.end.send(json.dumps({"id": msg["id"], "result": {"echo": msg.get("params")}}))
        except BrokenPipeError:
            pass


@pytest.fixture
def pair() -> Any:
    client_end, server_end = memory_pair()
    rpc = RpcClient(client_end, timeout=5.0)
    yield rpc, server_end
    rpc.close()


def test_call_returns_the_matching_result(pair: Any) -> None:
    rpc, server_end = pair
    EchoServer(server_end)
    assert rpc.call("x", {"a": 1}) == {"echo": {"a": 1}}


def test_replies_in_reverse_order_reach_their_callers() -> None:
    client_end, server_end = memory_pair()
    rpc = RpcClient(client_end, timeout=5.0)
    EchoServer(server_end, reverse_batches=8)
    results: dict[int, Any] = {}

    def worker(i: int) -> None:
        results[i] = rpc.call("x", {"i": i})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    rpc.close()
    assert results == {i: {"echo": {"i": i}} for i in range(64)}


def test_error_reply_raises_the_code_specific_server_error(pair: Any) -> None:
    rpc, server_end = pair
    EchoServer(server_end)
    with pytest.raises(InvalidRequest) as info:
        rpc.call("fail")
    assert isinstance(info.value, ServerError)
    assert info.value.code == -32600 and info.value.method == "fail"


def test_late_reply_after_timeout_is_dropped_and_client_keeps_working(pair: Any) -> None:
    rpc, server_end = pair
    EchoServer(server_end)
    with pytest.raises(RequestTimeout) as info:
        rpc.call("silent", timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    # The late answer for request id 1 arrives now; it must be dropped quietly.
    server_end.send(json.dumps({"id": 1, "result": {"late": True}}))
    assert rpc.call("x", 2) == {"echo": 2}
    assert rpc.reader_thread.is_alive()


def test_reply_sent_from_inside_send_is_not_lost() -> None:
    client_end, _server_end = memory_pair()

    def answer_immediately(text: str) -> bool:
        msg = json.loads(text)
        client_end.feed(json.dumps({"id": msg["id"], "result": "instant"}))
        return False

    client_end.on_send = answer_immediately
    rpc = RpcClient(client_end, timeout=5.0)
    try:
        assert rpc.call("x") == "instant"
    finally:
        rpc.close()


def _count_sends(end: MemoryTransport) -> Callable[[], int]:
    """Count what ``end`` sends (each request is pending before it is sent); returns the count."""
    sent: list[str | bytes] = []

    def record(text: str | bytes) -> bool:
        sent.append(text)
        return True

    end.on_send = record
    return lambda: len(sent)


def test_garbage_frame_fails_pending_calls_with_connection_lost() -> None:
    client_end, _server_end = memory_pair()
    sent = _count_sends(client_end)
    rpc = RpcClient(client_end, timeout=5.0)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            rpc.call("silent")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: sent() == 1, 5, "the call was not sent")
    client_end.feed("this is not json")
    t.join(2)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionLost)
    with pytest.raises(ConnectionLost):
        rpc.call("x")
    rpc.close()


def test_transport_error_is_the_cause_of_connection_lost() -> None:
    client_end, _server_end = memory_pair()
    sent = _count_sends(client_end)
    rpc = RpcClient(client_end, timeout=5.0)
    boom = OSError("socket exploded")
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            rpc.call("silent")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(100)]
    for t in threads:
        t.start()
    wait_until(lambda: sent() == 100, 5, lambda: f"only {sent()} of 100 calls sent")
    start = time.monotonic()
    client_end.fail(boom)
    for t in threads:
        t.join(2)
    assert time.monotonic() - start < 1.0
    assert len(errors) == 100
    assert all(isinstance(e, ConnectionLost) and e.__cause__ is boom for e in errors)
    rpc.close()


def test_close_fails_pending_calls_with_connection_closed() -> None:
    client_end, _server_end = memory_pair()
    sent = _count_sends(client_end)
    rpc = RpcClient(client_end, timeout=5.0)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            rpc.call("silent")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: sent() == 1, 5, "the call was not sent")
    rpc.close()
    t.join(2)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosed)
    with pytest.raises(ConnectionClosed):
        rpc.call("x")


def test_close_is_idempotent_and_safe_from_two_threads(pair: Any) -> None:
    rpc, server_end = pair
    EchoServer(server_end)
    threads = [threading.Thread(target=rpc.close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    rpc.close()
    assert not rpc.reader_thread.is_alive()


def test_close_from_inside_a_callback_does_not_deadlock() -> None:
    client_end, server_end = memory_pair()
    rpc = RpcClient(client_end, timeout=5.0)
    done = threading.Event()

    def callback(_event: object) -> None:
        rpc.close()
        done.set()

    rpc.bus.subscribe(callback)
    server_end.send(json.dumps({"method": "process/output", "params": {"processId": "p"}}))
    assert done.wait(5)
    assert not rpc.is_open


def test_blocked_callback_does_not_stop_calls() -> None:
    client_end, server_end = memory_pair()
    rpc = RpcClient(client_end, timeout=5.0)
    EchoServer(server_end)
    release = threading.Event()
    rpc.bus.subscribe(lambda _e: release.wait(10))
    server_end.send(json.dumps({"method": "n", "params": {}}))
    try:
        assert rpc.call("x", 1) == {"echo": 1}
    finally:
        release.set()
        rpc.close()


def test_unknown_notifications_reach_a_subscription_in_order(pair: Any) -> None:
    rpc, server_end = pair
    with rpc.bus.subscription() as sub:
        for i in range(5):
            server_end.send(json.dumps({"method": "whatever/new", "params": {"i": i}}))
        got = [sub.get(timeout=2) for _ in range(5)]
    assert [e.params["i"] for e in got] == list(range(5))  # type: ignore[union-attr]


def test_overflowing_subscription_gets_one_gap_marker(pair: Any) -> None:
    from execsdk._rpc.bus import Gap

    rpc, server_end = pair
    sub = rpc.bus.subscription(maxsize=3)
    for i in range(10):
        server_end.send(json.dumps({"method": "n", "params": {"i": i}}))
    wait_until(lambda: sub.dropped == 7, 5, lambda: f"{sub.dropped} dropped")
    items = [sub.get(timeout=1) for _ in range(4)]
    assert isinstance(items[3], Gap) and items[3].dropped == 7
    assert sub.dropped == 7


def test_in_flight_cap_makes_callers_wait_with_their_timeout() -> None:
    client_end, server_end = memory_pair()
    rpc = RpcClient(client_end, timeout=5.0, max_in_flight=2)
    server = EchoServer(server_end)
    blockers = [threading.Thread(target=lambda: _swallow(rpc, "silent")) for _ in range(2)]
    for t in blockers:
        t.start()
    wait_until(lambda: len(server.seen) == 2, 5, "the two blocking calls did not arrive")
    with pytest.raises(RequestTimeout, match="in flight"):
        rpc.call("x", timeout=0.2)
    rpc.close()
    for t in blockers:
        t.join(2)


def _swallow(rpc: RpcClient, method: str) -> None:
    try:
        rpc.call(method, timeout=1.0)
    except Exception:
        pass


def test_forked_child_refuses_the_parents_client(pair: Any) -> None:
    import os

    rpc, server_end = pair
    EchoServer(server_end)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            rpc.call("x")
            os.write(w, b"called")
        except ConnectionClosed as exc:
            os.write(w, b"refused:" + str(exc).encode()[:100])
        except BaseException:
            os.write(w, b"other")
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    answer = os.read(r, 200)
    os.close(r)
    assert answer.startswith(b"refused:") and b"after fork" in answer
    assert rpc.call("x", 3) == {"echo": 3}
