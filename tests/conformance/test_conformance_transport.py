"""Conformance: WebSocket transport, HTTP side, framing (PROTOCOL.md §6 items 1, 2, 2a, 3)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import websocket
from servers import RawConn, ServerHandle, b64, start_kind, unb64

MIB = 1024 * 1024


def _kind(server: ServerHandle) -> str:
    return server.name


# item 1
def test_server_messages_are_bare_envelopes_and_jsonrpc_is_optional(
    raw: RawConn, tmp_path: Path
) -> None:
    # A request without the "jsonrpc" member is answered normally.
    raw.send({"id": 7, "method": "initialize", "params": {"clientName": "conformance"}})
    reply = raw.recv(10)
    assert reply["id"] == 7
    assert set(reply) <= {"id", "result", "jsonrpc"}
    assert "sessionId" in reply["result"]
    raw.send({"method": "initialized", "params": {}})
    # String ids are echoed unchanged.
    raw.send({"id": "abc", "method": "environment/status", "params": {}})
    reply = raw.recv(10)
    assert reply["id"] == "abc" and "result" in reply
    # Errors are {id, error{code, message}}.
    raw.send({"id": 9, "method": "no/such", "params": {}})
    reply = raw.recv(10)
    assert set(reply) <= {"id", "error", "jsonrpc"}
    assert isinstance(reply["error"]["code"], int) and isinstance(reply["error"]["message"], str)
    # Notifications are {method, params} with no id.
    raw.start_process("p", ["echo", "hi"], tmp_path.as_uri())
    events = raw.wait_closed("p")
    assert events
    for note in events:
        assert "id" not in note
        assert set(note) <= {"method", "params", "jsonrpc"}
        assert isinstance(note["params"], dict)


# item 2
def test_origin_header_is_refused_with_403(server: ServerHandle) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.url, origin="http://example.com", timeout=5)
    assert info.value.status_code == 403


# item 2
def test_readyz_answers_200(server: ServerHandle) -> None:
    host, port = server.host_port
    http_conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        http_conn.request("GET", "/readyz")
        resp = http_conn.getresponse()
        body = resp.read()
    finally:
        http_conn.close()
    assert resp.status == 200
    assert body == b""


# item 2
def test_g1_origin_header_is_accepted(g1: ServerHandle) -> None:
    ws = websocket.create_connection(g1.url, origin="http://example.com", timeout=5)
    try:
        ws.send(json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "c"}}))
        reply = json.loads(ws.recv())
    finally:
        ws.close()
    assert "sessionId" in reply["result"]


# item 2
def test_missing_or_wrong_bearer_token_is_refused_with_401(
    server: ServerHandle, tmp_path: Path
) -> None:
    token = "conformance-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")  # the trailing newline is ignored
    args = ["--ws-auth", "capability-token", "--ws-token-file", str(token_file)]
    with start_kind(_kind(server), args) as authed:
        for headers in ([], ["Authorization: Bearer wrong-token"]):
            with pytest.raises(websocket.WebSocketBadStatusException) as info:
                websocket.create_connection(
                    authed.url, suppress_origin=True, header=headers, timeout=5
                )
            assert info.value.status_code == 401
        with RawConn(authed.url, headers=[f"Authorization: Bearer {token}"]) as ok:
            assert "sessionId" in ok.handshake()


# item 2a
@pytest.mark.timeout(60)
def test_idle_connection_gets_a_ping_about_every_30s(conn: RawConn) -> None:
    start = time.monotonic()
    conn.ws.settimeout(40)
    while True:
        opcode, _frame = conn.ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PING:
            break
        assert time.monotonic() - start < 40, "no ping within 40 s"
    elapsed = time.monotonic() - start
    assert 25 <= elapsed <= 36, f"first ping after {elapsed:.1f} s"
    # The connection still works after answering the ping (recv_data_frame sent the pong).
    assert conn.result("environment/status", {}) == {"status": "ready"}


# item 2a
@pytest.mark.timeout(120)
def test_frame_over_16mib_drops_the_connection(
    connect: Callable[[], RawConn], tmp_path: Path
) -> None:
    target = tmp_path / "big.bin"
    # A single frame of ~16.0 M base64 chars (12 MB data) is still fine.
    ok = connect()
    ok.handshake()
    data = bytes(range(256)) * (12_000_000 // 256)
    assert (
        ok.result("fs/writeFile", {"path": target.as_uri(), "dataBase64": b64(data)}, timeout=60)
        == {}
    )
    assert target.stat().st_size == len(data)
    # A single ~18 MB frame (13.5 MB data) exceeds the 16 MiB frame limit.
    bad = connect()
    bad.handshake()
    big = b"\x5a" * 13_500_000
    msg = json.dumps(
        {
            "id": 99,
            "method": "fs/writeFile",
            "params": {"path": (tmp_path / "too-big.bin").as_uri(), "dataBase64": b64(big)},
        }
    )
    assert len(msg) > 16 * MIB
    try:
        bad.send(msg)
    except (OSError, websocket.WebSocketException):
        pass  # the server may reset while we are still writing
    assert bad.closed(30)
    assert not (tmp_path / "too-big.bin").exists()
    # The server itself is unharmed.
    assert ok.result("environment/status", {}) == {"status": "ready"}


# item 2a
@pytest.mark.timeout(120)
def test_fragmented_message_is_reassembled(conn: RawConn, tmp_path: Path) -> None:
    target = tmp_path / "frag.bin"
    data = bytes(range(251)) * (13_500_000 // 251)  # message > 16 MiB, fragments < 16 MiB
    msg = json.dumps(
        {
            "id": 5,
            "method": "fs/writeFile",
            "params": {"path": target.as_uri(), "dataBase64": b64(data)},
        }
    ).encode()
    assert len(msg) > 16 * MIB
    step = 6 * MIB
    pieces = [msg[i : i + step] for i in range(0, len(msg), step)]
    assert len(pieces) >= 3
    for i, piece in enumerate(pieces):
        opcode = websocket.ABNF.OPCODE_TEXT if i == 0 else websocket.ABNF.OPCODE_CONT
        fin = 1 if i == len(pieces) - 1 else 0
        conn.ws.send_frame(websocket.ABNF.create_frame(piece, opcode, fin))
    reply = conn.wait_reply(5, timeout=60)
    assert reply.get("result") == {}, reply
    assert target.read_bytes() == data


# item 3
def test_binary_frame_is_accepted_like_text(raw: RawConn, tmp_path: Path) -> None:
    rid = raw.request("initialize", {"clientName": "binary"}, binary=True)
    reply = raw.wait_reply(rid)
    assert "sessionId" in reply["result"]
    raw.send_binary({"method": "initialized", "params": {}})
    (tmp_path / "f.txt").write_bytes(b"payload")
    rid = raw.request("fs/readFile", {"path": (tmp_path / "f.txt").as_uri()}, binary=True)
    # The answer arrives as a text frame.
    raw.ws.settimeout(10)
    opcode, frame = raw.ws.recv_data_frame()
    assert opcode == websocket.ABNF.OPCODE_TEXT
    reply = json.loads(frame.data)
    assert reply["id"] == rid
    assert unb64(reply["result"]["dataBase64"]) == b"payload"
