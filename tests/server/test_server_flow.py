"""Back-pressure in ``execsdk serve``: a slow client slows its processes down, nobody is dropped.

A real server (``python -m execsdk serve`` as a subprocess) over a real socket, real processes.
When a connection's queue of ``process/output`` notifications passes the high-water mark the
server stops reading that session's pipes, so the child blocks in ``write()``; once the client
caught up, reading resumes. Other connections keep streaming at full speed.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest
import websocket

import execsdk
from execsdk.server.outbox import Outbox
from tests.servers import ServerHandle, start_ours
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    with start_ours() as handle:
        yield handle


class _Client:
    """A bare JSON-RPC client whose reading pace the test controls. One thread only.

    websocket-client validates UTF-8 in pure Python (~2 MB/s); the server sends ASCII JSON,
    so validation is skipped to let the fast phases run at socket speed.
    """

    def __init__(self, url: str, resume: str | None = None) -> None:
        self.ws = websocket.create_connection(
            url, suppress_origin=True, skip_utf8_validation=True, timeout=30
        )
        self.stash: list[dict[str, Any]] = []  # notifications that came before a reply
        self._ids = itertools.count(1)
        init = {"clientName": "flow-test", "resumeSessionId": resume}
        self.session_id: str = self.result("initialize", init)["sessionId"]
        self.ws.send(json.dumps({"method": "initialized", "params": {}}))

    def recv(self) -> dict[str, Any]:
        if self.stash:
            return self.stash.pop(0)
        msg: dict[str, Any] = json.loads(self.ws.recv())
        return msg

    def result(self, method: str, params: dict[str, Any]) -> Any:
        rid = next(self._ids)
        self.ws.send(json.dumps({"id": rid, "method": method, "params": params}))
        while True:
            msg: dict[str, Any] = json.loads(self.ws.recv())
            if msg.get("id") == rid:
                assert "result" in msg, msg
                return msg["result"]
            self.stash.append(msg)  # output may come before the start answer (§4.3)

    def start(self, process_id: str, argv: list[str], cwd: Path) -> None:
        params = {"processId": process_id, "argv": argv, "cwd": cwd.as_uri()}
        self.result("process/start", {**params, "env": {}, "tty": False})

    def close(self) -> None:
        self.ws.close(timeout=2)
        # close() leaves the socket open once the server's close frame was read.
        self.ws.shutdown()  # type: ignore[no-untyped-call]


def _children_running(server: ServerHandle, name: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server.popen.pid).children(recursive=True):
        try:
            if child.name() == name and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _children_held(server: ServerHandle, name: str) -> list[psutil.Process]:
    """Children called ``name`` that are asleep. ``head -c N /dev/zero`` never waits for its
    input, so asleep means blocked writing to a pipe that the server no longer empties."""
    held = []
    for child in _children_running(server, name):
        try:
            if child.status() == psutil.STATUS_SLEEPING:
                held.append(child)
        except psutil.NoSuchProcess:
            continue
    return held


class _Stream:
    """Collects one process's notifications from a RawConn and checks their seq order."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.digest = hashlib.sha256()
        self.size = 0
        self.next_seq = 1
        self.exit_code: int | None = None
        self.closed = False

    def feed(self, msg: dict[str, Any]) -> None:
        assert "method" in msg, f"unexpected reply {msg!r}"
        params = msg["params"]
        assert params["processId"] == self.process_id
        assert not self.closed, "an event after process/closed"
        # Every event takes the next seq: any loss, duplicate or reordering shows up here.
        assert params["seq"] == self.next_seq, (params["seq"], self.next_seq)
        self.next_seq += 1
        if msg["method"] == "process/output":
            data = base64.b64decode(params["chunk"])
            self.digest.update(data)
            self.size += len(data)
        elif msg["method"] == "process/exited":
            self.exit_code = params["exitCode"]
        else:
            assert msg["method"] == "process/closed"
            self.closed = True


def test_slow_reader_receives_every_byte_while_the_process_is_slowed_down(
    server: ServerHandle, tmp_path: Path
) -> None:
    total = 64 * MIB
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(total))
    expected = hashlib.sha256(payload.read_bytes()).hexdigest()
    server_proc = psutil.Process(server.popen.pid)
    conn = _Client(server.url)
    try:
        rss_before = server_proc.memory_info().rss
        conn.start("slow", ["cat", str(payload)], tmp_path)
        stream = _Stream("slow")
        # Phase 1: read ~4 MB/s for 3 s. A server that buffered instead would have all 64 MiB
        # (~88 MB of JSON) queued within a second and `cat` long gone.
        rate = 4_000_000
        began = time.monotonic()
        rss_peak = rss_before
        cat_alive_while_slow = False
        while (elapsed := time.monotonic() - began) < 3.0:
            stream.feed(conn.recv())
            ahead = stream.size / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)  # the reading pace is the behaviour under test
                rss_peak = max(rss_peak, server_proc.memory_info().rss)
            if elapsed > 2.0 and not cat_alive_while_slow:
                cat_alive_while_slow = bool(_children_running(server, "cat"))
        slow_bytes = stream.size
        # Phase 2: read at full speed to the end.
        while not stream.closed:
            stream.feed(conn.recv())
        rss_peak = max(rss_peak, server_proc.memory_info().rss)
    finally:
        conn.close()
    assert slow_bytes < 24 * MIB  # the slow phase really was slow
    assert cat_alive_while_slow, "cat finished while the client read slowly: no back-pressure"
    assert stream.size == total
    assert stream.digest.hexdigest() == expected
    assert stream.exit_code == 0
    growth = rss_peak - rss_before
    assert growth < 48 * MIB, f"server RSS grew by {growth / MIB:.1f} MiB"


def test_other_connection_streams_at_full_speed_while_one_client_stalls(
    server: ServerHandle, tmp_path: Path
) -> None:
    stalled = _Client(server.url)
    try:
        stalled.start("big", ["head", "-c", str(96 * MIB), "/dev/zero"], tmp_path)
        # The stalled client reads nothing: its process must be held, blocked in write().
        wait_until(
            lambda: _children_held(server, "head"), 15, "the stalled client's process is not held"
        )
        began = time.monotonic()
        with execsdk.connect(server.url, timeout=60) as env:
            result = env.run(["head", "-c", str(32 * MIB), "/dev/zero"], timeout=60)
        took = time.monotonic() - began
        assert result.returncode == 0 and len(result.stdout) == 32 * MIB
        assert result.stdout.count(0) == 32 * MIB
        assert took < 15.0, f"32 MiB took {took:.1f}s next to a stalled connection"
        assert _children_running(server, "head"), "the stalled client's process was not held"
        # The stalled client was kept, not dropped, and still gets everything.
        stream = _Stream("big")
        while not stream.closed:
            stream.feed(stalled.recv())
        assert stream.size == 96 * MIB and stream.exit_code == 0
    finally:
        stalled.close()


def test_a_stalled_connection_that_goes_away_lets_its_processes_run_on(
    server: ServerHandle, tmp_path: Path
) -> None:
    stalled = _Client(server.url)
    stalled.start("held", ["head", "-c", str(64 * MIB), "/dev/zero"], tmp_path)
    wait_until(
        lambda: _children_held(server, "head"), 15, "the stalled client's process is not held"
    )
    stalled.close()  # detached: notifications are dropped, so nothing may stay paused
    wait_until(
        lambda: not _children_running(server, "head"),
        15,
        "still paused after its connection went away",
        interval=0.05,
    )
    resumed = _Client(server.url, resume=stalled.session_id)
    try:
        state = resumed.result("process/read", {"processId": "held", "waitMs": 10_000})
        deadline = time.monotonic() + 10
        while not state["closed"] and time.monotonic() < deadline:
            state = resumed.result("process/read", {"processId": "held", "waitMs": 1000})
        assert state["exited"] and state["exitCode"] == 0 and state["closed"]
    finally:
        resumed.close()


def test_outbox_pauses_above_high_water_and_resumes_below_low_water() -> None:
    gate = threading.Event()
    entered = threading.Event()
    sent: list[bytes] = []
    changes: list[bool] = []

    def send(batch: list[bytes]) -> None:
        entered.set()
        gate.wait(10)
        sent.extend(batch)

    outbox = Outbox(send, high_water=1000, low_water=300, limit=10_000)
    outbox.set_flow_listener(lambda: changes.append(outbox.output_paused))
    try:
        assert outbox.put_reply("r" * 5000)  # taken by the blocked writer, never counted
        assert entered.wait(5), "the writer did not take the first reply"
        assert outbox.queued_bytes == 0
        assert outbox.put_reply("r" * 2000)  # replies never pause anything
        assert not outbox.output_paused and changes == []
        for _ in range(5):
            assert outbox.put("o" * 200, output=True)
        assert not outbox.output_paused  # 1000 is not above the mark
        assert outbox.put("o" * 200, output=True)
        assert outbox.output_paused and changes == [True]
        gate.set()
        wait_until(lambda: outbox.queued_bytes == 0, 5, "the writer did not empty the queue")
        assert not outbox.output_paused and changes == [True, False]
        assert len(sent) == 8
    finally:
        gate.set()
        outbox.close()


def test_outbox_closing_lifts_a_pause() -> None:
    gate = threading.Event()
    changes: list[bool] = []

    def send(batch: list[bytes]) -> None:
        gate.wait(10)

    outbox = Outbox(send, high_water=100, low_water=10)
    outbox.set_flow_listener(lambda: changes.append(outbox.output_paused))
    try:
        # The writer takes what is queued into its stuck send; what it did not take counts.
        for _ in range(10):
            outbox.put("o" * 60, output=True)
            if outbox.output_paused:
                break
        assert outbox.output_paused
        outbox.close(timeout=0.1)  # the writer is stuck in send; the queue is dropped
        assert not outbox.output_paused and changes == [True, False]
        assert outbox.put("o" * 60, output=True) is False
    finally:
        gate.set()
        outbox.close()


class _RecordingSend:
    """An outbox's send function that records who sent what, can be held, and checks that
    never two threads send at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[bytes]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.active = 0
        self.overlap = False
        self._lock = threading.Lock()

    def __call__(self, batch: list[bytes]) -> None:
        with self._lock:
            self.active += 1
            self.overlap = self.overlap or self.active > 1
        self.entered.set()
        self.hold.wait(10)
        with self._lock:
            self.sent.append((threading.current_thread().name, list(batch)))
            self.active -= 1

    def messages(self) -> list[bytes]:
        return [m for _, batch in self.sent for m in batch]


def test_outbox_direct_reply_is_sent_by_the_caller_when_nothing_waits() -> None:
    send = _RecordingSend()
    outbox = Outbox(send, name="writer")
    try:
        assert outbox.put_reply(b"r1", direct=True)
        # Sent before put_reply returned, on this thread: no hand-over to the writer.
        assert send.sent == [(threading.current_thread().name, [b"r1"])]
        assert outbox.put_reply(b"r2")  # not direct: the writer sends it
        wait_until(lambda: len(send.sent) == 2, 5, lambda: f"sent {send.sent}")
        assert send.sent[1] == ("writer", [b"r2"])
    finally:
        outbox.close()


def test_outbox_direct_reply_waits_its_turn_and_never_sends_beside_another_sender() -> None:
    send = _RecordingSend()
    outbox = Outbox(send, name="writer")
    try:
        send.hold.clear()
        assert outbox.put(b"n1")  # the writer takes it and is held inside send
        assert send.entered.wait(5)
        assert outbox.put_reply(b"r1", direct=True)  # someone is sending: queued instead
        assert outbox.put(b"n2")
        send.hold.set()
        wait_until(
            lambda: send.messages() == [b"n1", b"r1", b"n2"], 5, lambda: f"sent {send.messages()}"
        )
        assert {name for name, _ in send.sent} == {"writer"}

        # Now a direct sender is held inside send: everything queued meanwhile waits for it.
        send.hold.clear()
        send.entered.clear()
        direct = threading.Thread(target=outbox.put_reply, args=(b"r2",), kwargs={"direct": True})
        direct.start()
        assert send.entered.wait(5)
        assert outbox.put(b"n3")
        assert outbox.put_reply(b"r3", direct=True)  # busy: queued, returns at once
        # A window for a wrong writer to jump in: when all is right nothing happens, so there
        # is no event to wait for. Whoever enters send() counts itself in `active` at once.
        time.sleep(0.1)
        assert send.active == 1, "the writer sent beside the held direct sender"
        send.hold.set()
        direct.join(5)
        wait_until(lambda: len(send.messages()) == 6, 5, lambda: f"sent {send.messages()}")
        assert send.messages()[3:] == [b"r2", b"r3", b"n3"]  # queued answers before events
        assert not send.overlap
    finally:
        send.hold.set()
        outbox.close()


def test_outbox_direct_reply_failure_breaks_the_outbox() -> None:
    def send(batch: list[bytes]) -> None:
        raise OSError("connection reset")

    outbox = Outbox(send)
    try:
        assert outbox.put_reply(b"r1", direct=True) is False
        assert outbox.closed
        assert outbox.put(b"n1") is False
    finally:
        outbox.close()


def _held_direct_sender(outbox: Outbox, send: _RecordingSend) -> threading.Thread:
    """A thread sending b"r1" directly, held inside ``send`` until ``send.hold`` is set."""
    send.hold.clear()
    direct = threading.Thread(target=outbox.put_reply, args=(b"r1",), kwargs={"direct": True})
    direct.start()
    assert send.entered.wait(5)
    return direct


def test_outbox_drain_waits_for_a_direct_sender() -> None:
    send = _RecordingSend()
    outbox = Outbox(send, name="writer")
    direct = _held_direct_sender(outbox, send)
    try:
        assert outbox.put(b"n1")
        closer = threading.Thread(target=outbox.close, kwargs={"drain": True})
        closer.start()
        wait_until(lambda: outbox.closed, 5, "close() did not begin")
        assert closer.is_alive(), "close(drain=True) returned before n1 was sent"
        send.hold.set()
        closer.join(5)
        direct.join(5)
        assert send.messages() == [b"r1", b"n1"] and not send.overlap
    finally:
        send.hold.set()
        outbox.close()


def test_outbox_close_without_drain_does_not_wait_for_a_stuck_direct_sender() -> None:
    send = _RecordingSend()
    outbox = Outbox(send, name="writer")
    direct = _held_direct_sender(outbox, send)
    try:
        assert outbox.put(b"n1")  # queued behind the stuck sender, dropped by the close
        started = time.monotonic()
        outbox.close(timeout=5)
        assert time.monotonic() - started < 2  # the writer ended without waiting its turn
        assert outbox.put(b"n2") is False
    finally:
        send.hold.set()
        direct.join(5)
    assert send.messages() == [b"r1"]
