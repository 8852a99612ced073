"""Answers of ``execsdk serve`` do not wait behind queued output, and long polls end with
their connection.

In-process :class:`~execsdk.server.ws.WsServer` (so the tests can look at a session's outbox
and at the server's threads), real sockets, real processes.

- A reply overtakes the megabytes of ``process/output`` a slow client has queued, while the
  notifications keep their own order (every seq in turn, ``process/closed`` last).
- A long-polling ``process/read`` ends as soon as its connection goes away: its worker thread
  is free at once, not when ``waitMs`` runs out.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from execsdk.server.outbox import DEFAULT_OUTPUT_HIGH_WATER, Outbox
from execsdk.server.ws import WsServer
from tests.waiting import wait_until, waiting_in

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


@pytest.fixture()
def server() -> Iterator[WsServer]:
    srv = WsServer("127.0.0.1", 0, session_grace=5.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown(timeout=5)


class _Client:
    """A bare JSON-RPC client whose reading the test controls. One thread only.

    UTF-8 validation is skipped (pure Python in websocket-client; the server sends ASCII JSON)
    so megabytes of output can be read quickly.
    """

    def __init__(self, url: str, resume: str | None = None) -> None:
        self.ws = websocket.create_connection(
            url, suppress_origin=True, skip_utf8_validation=True, timeout=30
        )
        self._ids = itertools.count(1)
        self.stash: list[dict[str, Any]] = []
        reply = self.call("initialize", {"clientName": "replies-test", "resumeSessionId": resume})
        self.session_id: str = reply["result"]["sessionId"]
        self.ws.send(json.dumps({"method": "initialized", "params": {}}))

    def request(self, method: str, params: dict[str, Any]) -> int:
        rid = next(self._ids)
        self.ws.send(json.dumps({"id": rid, "method": method, "params": params}))
        return rid

    def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.ws.recv())
        return msg

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = self.request(method, params)
        while True:
            msg = self.recv()
            if msg.get("id") == rid:
                return msg
            self.stash.append(msg)

    def close(self) -> None:
        self.ws.close(timeout=2)
        # close() leaves the socket open once the server's close frame was read.
        self.ws.shutdown()  # type: ignore[no-untyped-call]


def _start(client: _Client, process_id: str, argv: list[str], cwd: Path) -> None:
    params = {"processId": process_id, "argv": argv, "cwd": cwd.as_uri(), "env": {}}
    reply = client.call("process/start", {**params, "tty": False})
    assert "result" in reply, reply


def _outbox(server: WsServer, session_id: str) -> Outbox:
    session = server.registry.get(session_id)
    assert session is not None and session.outbox is not None
    return session.outbox


def test_a_reply_overtakes_the_output_queued_for_a_slow_client(
    server: WsServer, tmp_path: Path
) -> None:
    total = 48 * MIB
    rate = 2_000_000  # bytes/s the slow client reads: 8 MiB ahead of the answer would take 4 s
    client = _Client(server.url)
    try:
        _start(client, "big", ["head", "-c", str(total), "/dev/zero"], tmp_path)
        outbox = _outbox(server, client.session_id)
        # The client reads nothing for a while: output piles up until the process is paused.
        wait_until(
            lambda: outbox.queued_bytes >= DEFAULT_OUTPUT_HIGH_WATER,
            20,
            lambda: f"only {outbox.queued_bytes} bytes queued",
        )
        queued = outbox.queued_bytes

        rid = client.request("fs/getMetadata", {"path": tmp_path.as_uri()})
        # Still not reading, the server takes the request in and queues the answer (its writer
        # waits for the socket without blocking the receiving side).
        wait_until(
            lambda: outbox.queued_bytes > queued,
            5,
            "the request was not answered while output waited",
        )

        # Now read slowly. Ahead of the answer is only what the kernel's socket buffers
        # (TCP_NOTSENT_LOWAT keeps the unsent part small) and the batch being written held,
        # not the megabytes it skipped: in FIFO order all of that queue would come first.
        began = time.monotonic()
        events: list[dict[str, Any]] = [*client.stash]
        before_reply = 0  # bytes of messages that arrived before the answer
        reply: dict[str, Any] | None = None
        while reply is None:
            raw = client.ws.recv()
            msg = json.loads(raw)
            if msg.get("id") == rid:
                reply = msg
                break
            events.append(msg)
            before_reply += len(raw)
            ahead = before_reply / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)  # the slow reading pace is the behaviour under test
        took = time.monotonic() - began
        assert reply["result"]["isDirectory"] is True
        assert before_reply < 2 * MIB, (before_reply, queued)
        assert took < 1.5, f"the answer took {took:.2f}s at {rate / 1e6} MB/s"

        # Notifications keep their order: every seq in turn, nothing lost, closed last.
        while not events or events[-1]["method"] != "process/closed":
            events.append(client.recv())
    finally:
        client.close()
    next_seq = 1
    size = 0
    for event in events:
        params = event["params"]
        assert params["seq"] == next_seq, (event["method"], params["seq"], next_seq)
        next_seq += 1
        if event["method"] == "process/output":
            size += len(base64.b64decode(params["chunk"]))
        else:
            assert event["method"] in ("process/exited", "process/closed")
    assert size == total
    assert events[-1]["method"] == "process/closed"


def _pollers(prefix: str = "execsdk-serve-poll-") -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()}


def test_long_polls_end_when_their_connection_goes_away(server: WsServer, tmp_path: Path) -> None:
    polls = 32
    wait_ms = 60_000
    idle = _pollers()
    client = _Client(server.url)
    session_id = client.session_id
    _start(client, "quiet", ["sleep", "60"], tmp_path)
    for _ in range(polls):
        client.request("process/read", {"processId": "quiet", "afterSeq": 0, "waitMs": wait_ms})
    wait_until(
        lambda: len(_pollers() - idle) >= polls,
        10,
        lambda: f"{len(_pollers() - idle)} long polls waiting",
    )
    busy = _pollers() - idle
    assert len(busy) == polls, f"{len(busy)} long polls waiting"

    client.close()
    gone = time.monotonic()
    wait_until(
        lambda: not any(t.is_alive() for t in busy),
        5,
        "long polls still waiting after the disconnect",
    )
    freed = time.monotonic() - gone
    assert freed < 3.0, f"the workers were freed after {freed:.2f}s"

    # The session outlived its connection and serves a new one at once.
    again = _Client(server.url, resume=session_id)
    try:
        began = time.monotonic()
        state = again.call("process/read", {"processId": "quiet", "afterSeq": 0})["result"]
        assert not state["exited"] and not state["closed"]
        assert again.call("process/terminate", {"processId": "quiet"})["result"]["running"]
        assert time.monotonic() - began < 2.0
    finally:
        again.close()


def test_a_long_poll_still_answers_when_output_comes(server: WsServer, tmp_path: Path) -> None:
    # The scope only ends waits when the connection goes: a live connection's poll still
    # answers with the event it waited for.
    client = _Client(server.url)
    try:
        _start(client, "late", ["sh", "-c", "sleep 0.3; echo hi"], tmp_path)
        began = time.monotonic()
        reply = client.call("process/read", {"processId": "late", "afterSeq": 0, "waitMs": 10_000})
        chunks = reply["result"]["chunks"]
        assert chunks and base64.b64decode(chunks[0]["chunk"]) == b"hi\n"
        assert 0.2 < time.monotonic() - began < 5.0
    finally:
        client.close()


def test_cancelling_a_poll_scope_ends_only_its_own_waits(tmp_path: Path) -> None:
    from execsdk._local.processes import LocalProcessBackend
    from execsdk._local.records import PollScope
    from execsdk.backends import ProcessSpec

    class _Quiet:
        def on_output(self, seq: int, stream: Any, data: bytes) -> None: ...
        def on_exited(self, seq: int, exit_code: int) -> None: ...
        def on_closed(self, seq: int) -> None: ...
        def on_lost(self, exc: BaseException) -> None: ...

    with LocalProcessBackend() as backend:
        backend.start("q", ProcessSpec(argv=("sleep", "30"), cwd=str(tmp_path)), _Quiet())
        scope, other = PollScope(), PollScope()
        ended: dict[str, float] = {}

        def poll(name: str, poll_scope: PollScope | None) -> None:
            backend.read("q", after_seq=0, wait_ms=20_000, scope=poll_scope)
            ended[name] = time.monotonic()

        threads = [
            threading.Thread(target=poll, args=(name, s), daemon=True)
            for name, s in (("a", scope), ("b", scope), ("other", other), ("none", None))
        ]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: all(waiting_in(t, "read") for t in threads),
            5,
            lambda: f"not all four are waiting in read(); ended: {sorted(ended)}",
        )
        assert not ended
        cancelled = time.monotonic()
        scope.cancel()
        for thread in threads[:2]:
            thread.join(3)
        assert set(ended) == {"a", "b"}
        assert max(ended.values()) - cancelled < 1.0
        began = time.monotonic()
        backend.read("q", after_seq=0, wait_ms=20_000, scope=scope)  # cancelled: no wait
        assert time.monotonic() - began < 1.0
        # The other scope's and the unscoped wait go on (the cancel woke them on the shared
        # condition: they are back waiting once they saw it was not theirs).
        wait_until(
            lambda: all(waiting_in(t, "read") for t in threads[2:]),
            5,
            lambda: f"the other waits did not go on; ended: {sorted(ended)}",
        )
        assert set(ended) == {"a", "b"}
        backend.terminate("q")  # the process closes: the remaining waits end too
        for thread in threads[2:]:
            thread.join(5)
        assert set(ended) == {"a", "b", "other", "none"}
