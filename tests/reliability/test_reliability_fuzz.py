"""Bad input to our server, driven by hypothesis: it answers or closes, and never breaks.

Every request gets an answer with its own id (or ``-1`` when the id could not be read): a
result, or an error whose code is one the protocol uses, with a string message. A notification
or response the server cannot accept closes that connection (PROTOCOL.md §2). After each batch a
second connection must still be served; at the end of the module every process the fuzzing
started is gone and the server's descriptors are back to where they started.

Safety: destructive methods (writes, removes, copies, handle opens, walks) only ever get paths
inside a scratch directory, and ``process/start`` only runs ``true`` or names that do not
exist, so no generated input can touch anything else on this machine.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import start_server
from tests.reliability.reliability_support import server_tree, wait_children_at_most
from tests.servers import ConnectionClosed, RawConn, ServerHandle
from tests.waiting import wait_until
from tests.wire_methods import NOT_FUZZED, REQUEST_METHODS

ALLOWED_CODES = {-32600, -32601, -32602, -32603, -32004, -32010}
REPLY_TIMEOUT = 15.0

FUZZ_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,
)


# --------------------------------------------------------------------------- plumbing


class Scratch:
    """A scratch directory and its ``file://`` URI; destructive fuzzing stays inside it."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="execsdk-fuzz-")
        with open(f"{self.path}/file", "wb") as fh:
            fh.write(b"0123456789" * 100)
        self.uri = "file://" + urllib.parse.quote(self.path)

    def __call__(self, suffix: str = "") -> str:
        return self.uri + ("/" + suffix if suffix else "")

    def play(self, suffix: str = "") -> str:
        """Below ``play/``: where destructive requests aim (it may vanish and come back)."""
        os.makedirs(f"{self.path}/play", exist_ok=True)
        return self.uri + "/play/" + suffix

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Fuzzer:
    """One initialized connection that comes back after the server closes it.

    Thread-safety: one test thread only.
    """

    def __init__(self, server: ServerHandle, scratch: Scratch) -> None:
        self.server = server
        self.scratch = scratch
        self.conn: RawConn | None = None
        self.reconnects = 0
        self.outcomes: collections.Counter[str] = collections.Counter()

    def live(self) -> RawConn:
        if self.conn is None:
            self.conn = RawConn(self.server.url, timeout=REPLY_TIMEOUT)
            self.conn.handshake("fuzz")
            # A live process that reads stdin, for process/* methods to aim at.
            self.conn.start_process(
                "fz-cat", ["cat"], self.scratch(), env={"PATH": "/usr/bin:/bin"}, pipeStdin=True
            )
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            close_raw(self.conn)
            self.conn = None
            self.reconnects += 1

    def request(self, method: Any, params: Any, *, with_params: bool = True) -> dict[str, Any]:
        """Send one request and check the answer's shape; returns it."""
        conn = self.live()
        rid = next(conn._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if with_params:
            msg["params"] = params
        conn.send(json.dumps(msg))
        reply = wait_answer(conn, rid)
        check_answer(reply, rid)
        self.outcomes[str(reply["error"]["code"]) if "error" in reply else "ok"] += 1
        return reply

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.call("process/terminate", {"processId": "fz-cat"}, timeout=5)
        self.drop()


def _peer_ports(pid: int) -> set[int]:
    """Remote ports of the TCP connections process ``pid`` holds open."""
    return {c.raddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr}


def close_raw(conn: RawConn) -> None:
    """Close a RawConn for real: websocket-client's close() returns without closing the
    socket once it has seen the server's close frame, and the server would wait for our FIN."""
    conn.close()
    with contextlib.suppress(Exception):
        conn.ws.shutdown()  # type: ignore[no-untyped-call]


def wait_answer(conn: RawConn, rid: Any) -> dict[str, Any]:
    """The answer to ``rid``, or to an unreadable id (-1), within REPLY_TIMEOUT."""
    end = time.monotonic() + REPLY_TIMEOUT
    while True:
        for key in (rid, -1):
            if key in conn._replies:
                return conn._replies.pop(key)
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no answer to request {rid} within {REPLY_TIMEOUT}s")
        msg = conn.recv(left)
        if "id" not in msg:
            conn._notifications.clear()  # output of fz-cat and friends: not needed
            continue
        conn._replies[msg.get("id")] = msg


def check_answer(reply: dict[str, Any], rid: Any) -> None:
    assert reply.get("id") in (rid, -1), reply
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error, dict), reply
        assert error.get("code") in ALLOWED_CODES, reply
        assert isinstance(error.get("message"), str) and error["message"], reply
        assert "internal error" not in error["message"], reply  # an unexpected exception
    else:
        assert "result" in reply, reply


def assert_server_serves(server: ServerHandle) -> None:
    """The server process runs and a fresh connection is served at once."""
    assert server.alive(), server.stderr_text()[-3000:]
    other = RawConn(server.url, timeout=5)
    try:
        other.handshake("fuzz-check")
        assert other.result("environment/status", {}, timeout=5) == {"status": "ready"}
    finally:
        close_raw(other)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    handle = start_server("ours")
    baseline_fds: int | None = None
    try:
        # Warm up (first connection, first process) before taking the baseline.
        warm = RawConn(handle.url)
        warm.handshake("warm-up")
        warm.result("environment/status", {})
        assert warm.ws.sock is not None
        warm_port = warm.ws.sock.getsockname()[1]
        close_raw(warm)
        # The baseline is taken once the server let go of the warm-up connection's socket.
        wait_until(
            lambda: warm_port not in _peer_ports(handle.popen.pid),
            10,
            "the server kept the warm-up connection open",
            interval=0.05,
        )
        baseline_fds = psutil.Process(handle.popen.pid).num_fds()
        yield handle
        # Every connection is closed now: sessions expire after the short grace, their
        # processes are killed, and every descriptor they held is released.
        left = wait_children_at_most(handle.popen.pid, 0, timeout=20)
        assert left == [], [(p.pid, p.name()) for p in left]
        limit = baseline_fds + 2
        wait_until(
            lambda: psutil.Process(handle.popen.pid).num_fds() <= limit,
            10,
            lambda: f"server fds {baseline_fds} -> {psutil.Process(handle.popen.pid).num_fds()}",
            interval=0.2,
        )
        assert handle.alive()
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    s = Scratch()
    try:
        yield s
    finally:
        s.remove()


@pytest.fixture
def fuzzer(server: ServerHandle, scratch: Scratch) -> Iterator[Fuzzer]:
    f = Fuzzer(server, scratch)
    try:
        yield f
    finally:
        f.close()
        assert_server_serves(server)


# --------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "\ud7ff", "a" * 5000, "🙂", "null", "true", "-1", "1e999"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=12,
)
bad_base64 = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["!!", "a", "ab=", "a===", "YQ", "YQ==\n", " YQ==", "YQ==YQ==", "Zm9v\x00"]),
)

PATH_TRICKS = [
    "",
    "relative/path",
    "/plain/absolute",
    "file:",
    "file://",
    "file:///",
    "file:///etc/passwd",
    "file:///tmp/../../../etc/hostname",
    "file:///tmp/%2e%2e/%2e%2e/etc/hostname",
    "file://otherhost/etc/hostname",
    "file://[::1]/tmp",
    "file:///tmp/%00x",
    "file:///tmp/\x00x",
    "file:///tmp/%ZZ",
    "file:///" + "a" * 5000,
    "file:///" + "/".join(["d"] * 2000),
    "http://127.0.0.1:1/x",
    "file:///proc/self/status",
    "file:///dev/null",
    "file:///tmp/x?query#frag",
]
free_paths = st.one_of(st.sampled_from(PATH_TRICKS), st.text(max_size=60))
# Only ever inside the scratch directory: no "..", no encoded "..".
_SAFE_SEGMENTS = [
    "a",
    "b",
    ".",
    "%2e",
    "sp%20ace",
    "%C3%BC",
    "%23",
    "x%00y",
    "",
    "%2F",
    "d",
]
scratch_suffixes = st.lists(st.sampled_from(_SAFE_SEGMENTS), max_size=4).map("/".join)

PATH_FIELDS = {"path", "cwd", "sourcePath", "destinationPath"}
SCRATCH_ONLY = {
    "fs/writeFile",
    "fs/createDirectory",
    "fs/remove",
    "fs/copy",
    "fs/open",
    "fs/walk",
    "fs/setMode",
}


def base_params(method: str, scratch: Scratch) -> dict[str, Any]:
    """A valid request for ``method`` (what the mutations start from)."""
    pid = f"fz-{uuid.uuid4().hex[:8]}"
    table: dict[str, dict[str, Any]] = {
        "process/start": {
            "processId": pid,
            "argv": ["true"],
            "cwd": scratch(),
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
        },
        "process/read": {"processId": "fz-cat", "afterSeq": 0, "maxBytes": 100, "waitMs": 0},
        "process/write": {"processId": "fz-cat", "chunk": "aGkK", "writeId": pid},
        "process/signal": {"processId": "fz-nobody", "signal": "interrupt"},
        "process/terminate": {"processId": "fz-nobody"},
        "process/closeStdin": {"processId": "fz-nobody"},
        "process/keepOutput": {},
        "process/ackOutput": {"processId": "fz-nobody", "seq": 1},
        "fs/readFile": {"path": scratch("file")},
        "fs/writeFile": {"path": scratch.play("w"), "dataBase64": "aGk="},
        "fs/createDirectory": {"path": scratch.play("dir/sub"), "recursive": True},
        "fs/getMetadata": {"path": scratch("file")},
        "fs/readDirectory": {"path": scratch()},
        "fs/remove": {"path": scratch.play("gone"), "recursive": True, "force": True},
        "fs/copy": {"sourcePath": scratch("file"), "destinationPath": scratch.play("copy")},
        "fs/canonicalize": {"path": scratch()},
        "fs/walk": {
            "path": scratch(),
            "options": {
                "maxDepth": 3,
                "maxDirectories": 20,
                "maxEntries": 200,
                "followDirectorySymlinks": False,
            },
        },
        "fs/open": {"handleId": "fz-h", "path": scratch("file"), "mode": "read"},
        "fs/readBlock": {"handleId": "fz-h", "offset": 0, "len": 10},
        "fs/writeBlock": {"handleId": "fz-h", "offset": 0, "chunk": "aGk="},
        "fs/close": {"handleId": "fz-h"},
        "fs/setMode": {"path": scratch.play("m"), "mode": 0o644},
        "fs/stat": {"path": scratch("file")},
        "environment/info": {},
        "environment/status": {},
        "environmentConfig/read": {
            "cwd": scratch(),
            "configPaths": [["mcp_servers"]],
            "requirementsPaths": [],
        },
        "fs/watchMissing": {"watchId": 1, "missing": [scratch("nothing")], "present": None},
    }
    params = table[method]
    if method == "fs/copy":
        params["recursive"] = False
    return params


METHODS = [m for m in REQUEST_METHODS if m not in NOT_FUZZED]


@st.composite
def mutated_requests(draw: st.DrawFn, scratch: Scratch) -> tuple[str, dict[str, Any]]:
    """A valid request with one to three fields replaced, removed or added."""
    method = draw(st.sampled_from(METHODS))
    params = base_params(method, scratch)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "remove", "add"]))
        if op == "add" or not params:
            params[draw(st.text(max_size=10))] = draw(json_values)
            continue
        key = draw(st.sampled_from(sorted(params)))
        if op == "remove":
            del params[key]
        elif key in PATH_FIELDS:
            if method in SCRATCH_ONLY:
                params[key] = scratch.play(draw(scratch_suffixes))
            else:
                params[key] = draw(free_paths)
        elif key == "argv":
            params[key] = draw(
                st.one_of(
                    json_values,
                    st.lists(st.text(max_size=10), max_size=4).map(lambda a: ["true", *a]),
                    st.text(max_size=10).map(lambda s: ["fz-no-such-program-" + s]),
                )
            )
        elif key in ("chunk", "dataBase64"):
            params[key] = draw(st.one_of(bad_base64, json_values))
        elif key == "mode":
            params[key] = draw(st.one_of(st.sampled_from(["read", "REPLACE", ""]), json_values))
        elif key == "waitMs":
            params[key] = draw(st.one_of(st.integers(-5, 50), json_scalars.filter(_short_wait)))
        elif key == "options":
            params[key] = draw(
                st.one_of(
                    json_values,
                    st.fixed_dictionaries(
                        {
                            "maxDepth": st.integers(-1, 5),
                            "maxDirectories": st.integers(-1, 50),
                            "maxEntries": st.integers(-1, 500),
                            "followDirectorySymlinks": st.one_of(st.booleans(), json_scalars),
                        }
                    ),
                )
            )
        else:
            params[key] = draw(json_values)
    return method, params


def _short_wait(value: object) -> bool:
    """A long-poll on a live process would wait that long: keep numbers below a second."""
    return not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1000


# --------------------------------------------------------------------------- tests


@pytest.mark.timeout(120)
def test_mutated_params_get_a_well_formed_answer(fuzzer: Fuzzer, scratch: Scratch) -> None:
    @FUZZ_SETTINGS
    @given(req=mutated_requests(scratch))
    def run(req: tuple[str, dict[str, Any]]) -> None:
        method, params = req
        fuzzer.request(method, params)

    run()
    assert fuzzer.reconnects == 0  # requests never cost the connection
    # The mutations reach past the params decoder (-32602) into the handlers, which accept
    # some and reject others. Which handler errors come up depends on state left by earlier
    # examples (an open handle makes fs/open say -32600 "already exists"), and the examples
    # drawn in a full test session differed from a run of this module alone, so any one of
    # them counts.
    outcomes = set(fuzzer.outcomes)
    assert {"ok", "-32602"} <= outcomes, fuzzer.outcomes
    assert outcomes & {"-32600", "-32004", "-32603"}, fuzzer.outcomes


@pytest.mark.timeout(120)
def test_arbitrary_params_get_a_well_formed_answer(fuzzer: Fuzzer) -> None:
    read_only = [m for m in METHODS if m not in SCRATCH_ONLY and m != "process/start"]

    @FUZZ_SETTINGS
    @given(method=st.sampled_from(read_only), params=json_values)
    def run(method: str, params: Any) -> None:
        fuzzer.request(method, params)

    run()
    assert fuzzer.reconnects == 0


@pytest.mark.timeout(120)
def test_wrong_type_for_a_required_field_is_invalid_params(
    fuzzer: Fuzzer, scratch: Scratch
) -> None:
    @FUZZ_SETTINGS
    @given(method=st.sampled_from(METHODS), data=st.data())
    def run(method: str, data: st.DataObject) -> None:
        params = base_params(method, scratch)
        if not params:
            return
        key = data.draw(st.sampled_from(sorted(params)))
        value = params[key]
        if isinstance(value, str):
            wrong: Any = data.draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=2)))
        elif isinstance(value, bool):
            wrong = data.draw(st.one_of(st.integers(2, 9), st.text(max_size=5)))
        elif isinstance(value, int):
            wrong = data.draw(st.one_of(st.text(max_size=5), st.integers(max_value=-1)))
        else:
            wrong = data.draw(st.one_of(st.integers(), st.text(min_size=1, max_size=5)))
        params[key] = wrong
        reply = fuzzer.request(method, params)
        assert reply.get("error", {}).get("code") == -32602, (method, key, wrong, reply)

    run()


@pytest.mark.timeout(60)
def test_unknown_methods_are_method_not_found(fuzzer: Fuzzer) -> None:
    known = {*REQUEST_METHODS, "initialized"}

    @FUZZ_SETTINGS
    @given(method=st.text(max_size=30).filter(lambda m: m not in known), params=json_values)
    def run(method: str, params: Any) -> None:
        reply = fuzzer.request(method, params)
        assert reply["error"]["code"] == -32601, reply

    run()


@pytest.mark.timeout(60)
def test_invalid_base64_is_refused_with_the_documented_codes(
    fuzzer: Fuzzer, scratch: Scratch
) -> None:
    def valid(text: str) -> bool:
        try:
            base64.b64decode(text, validate=True)
        except ValueError:
            return False
        return True

    @FUZZ_SETTINGS
    @given(chunk=bad_base64.filter(lambda s: not valid(s)))
    def run(chunk: str) -> None:
        w = fuzzer.request(
            "process/write", {"processId": "fz-cat", "chunk": chunk, "writeId": uuid.uuid4().hex}
        )
        assert w["error"]["code"] == -32602, w
        f = fuzzer.request("fs/writeFile", {"path": scratch.play("b64"), "dataBase64": chunk})
        assert f["error"]["code"] == -32600, f

    run()


@pytest.mark.timeout(60)
def test_bad_envelopes_are_answered_or_close_the_connection(fuzzer: Fuzzer) -> None:
    """Non-requests: garbage text is answered with id -1; a notification the server does not
    know, or a response, closes the connection (and only that connection)."""

    @FUZZ_SETTINGS
    @given(
        payload=st.one_of(
            st.text(max_size=50),
            json_values.map(json.dumps),
            st.builds(
                lambda i, m: json.dumps({"id": i, "method": m}),
                st.one_of(
                    st.none(),
                    st.floats(allow_nan=False),
                    st.booleans(),
                    st.lists(st.integers(), max_size=2),
                ),
                st.text(max_size=10),
            ),
        )
    )
    def run(payload: str) -> None:
        conn = fuzzer.live()
        conn.send(payload)
        try:
            reply = wait_answer(conn, -1)
        except ConnectionClosed:
            fuzzer.drop()
            return
        check_answer(reply, -1)

    run()


@pytest.mark.timeout(60)
def test_deeply_nested_json_is_refused_not_crashed(fuzzer: Fuzzer) -> None:
    conn = fuzzer.live()
    for text in (
        "[" * 10_000 + "]" * 10_000,
        '{"id": 1, "method": "fs/getMetadata", "params": {"path": '
        + "[" * 10_000
        + "]" * 10_000
        + "}}",
        '{"id": 2, "method": "environment/status", "params": '
        + '{"a": ' * 10_000
        + "1"
        + "}" * 10_000
        + "}",
    ):
        conn.send(text)
        reply = wait_answer(conn, -1)
        assert reply["error"]["code"] == -32600
    assert fuzzer.request("environment/status", {})["result"] == {"status": "ready"}


@pytest.mark.timeout(120)
def test_oversized_messages_close_only_that_connection(fuzzer: Fuzzer, scratch: Scratch) -> None:
    """A message above 64 MiB (sent in 8 MiB frames) or one frame above 16 MiB: the server
    closes that connection and serves the next one."""
    import websocket

    big = (
        '{"id": 1, "method": "fs/writeFile", "params": {"path": "'
        + scratch.play("big")
        + '", "dataBase64": "'
        + "A" * (65 * 2**20)
        + '"}}'
    ).encode()
    for framed in (True, False):
        conn = fuzzer.live()
        try:
            if framed:
                step = 8 * 2**20
                for start in range(0, len(big), step):
                    piece = big[start : start + step]
                    opcode = (
                        websocket.ABNF.OPCODE_TEXT if start == 0 else websocket.ABNF.OPCODE_CONT
                    )
                    fin = 1 if start + step >= len(big) else 0
                    conn.ws.send_frame(websocket.ABNF.create_frame(piece, opcode, fin))
            else:
                conn.ws.send(big[: 20 * 2**20] + b'"}}')
        except (OSError, websocket.WebSocketException):
            pass  # the server may close while we are still sending
        assert conn.closed(timeout=15)
        assert conn.close_frame is None or conn.close_frame[:2] == b"\x03\xf1"  # 1009
        fuzzer.drop()
        assert_server_serves(fuzzer.server)
    assert not os.path.exists(f"{scratch.path}/play/big")


@pytest.mark.timeout(60)
def test_many_handles_hit_the_limit_and_are_released_with_the_connection(
    fuzzer: Fuzzer, scratch: Scratch
) -> None:
    server_pid = fuzzer.server.popen.pid
    before = psutil.Process(server_pid).num_fds()
    codes = []
    for i in range(200):
        reply = fuzzer.request("fs/open", {"handleId": f"h{i}", "path": scratch("file")})
        codes.append(reply.get("error", {}).get("code"))
    assert codes[:128] == [None] * 128
    assert set(codes[128:]) == {-32600}
    # Reads through the last handle still work at the limit.
    got = fuzzer.request("fs/readBlock", {"handleId": "h127", "offset": 0, "len": 4})
    assert base64.b64decode(got["result"]["chunk"]) == b"0123"
    fuzzer.drop()
    wait_until(
        lambda: psutil.Process(server_pid).num_fds() <= before,
        10,
        lambda: f"server fds {before} -> {psutil.Process(server_pid).num_fds()}",
        interval=0.1,
    )


@pytest.mark.timeout(60)
def test_many_processes_at_once_are_all_reaped(fuzzer: Fuzzer, scratch: Scratch) -> None:
    server_pid = fuzzer.server.popen.pid
    conn = fuzzer.live()
    ids = []
    for i in range(100):
        pid = f"fz-many-{i}-{uuid.uuid4().hex[:6]}"
        ids.append(
            conn.request(
                "process/start",
                {
                    "processId": pid,
                    "argv": ["true"] if i % 2 else ["fz-no-such-program"],
                    "cwd": scratch(),
                    "env": {"PATH": "/usr/bin:/bin"},
                    "tty": bool(i % 3 == 0),
                },
            )
        )
    for rid in ids:
        check_answer(wait_answer(conn, rid), rid)

    def still_there() -> list[str]:
        found = []
        for p in server_tree(server_pid):
            with contextlib.suppress(psutil.Error):
                if p.name() == "true":
                    found.append(f"{p.pid} {p.status()}")
        return found

    wait_until(lambda: not still_there(), 10, lambda: f"not reaped: {still_there()}", interval=0.1)


@pytest.mark.timeout(60)
def test_oversized_message_then_silent_client_does_not_pin_the_session(
    fuzzer: Fuzzer, scratch: Scratch
) -> None:
    server_pid = fuzzer.server.popen.pid
    conn = RawConn(fuzzer.server.url)
    try:
        conn.handshake("pinned")
        conn.start_process("fz-pinned", ["sleep", "300"], scratch(), env={"PATH": "/usr/bin:/bin"})
        with contextlib.suppress(Exception):
            conn.ws.send(b"A" * (20 * 2**20))  # one frame above the 16 MiB limit
        assert conn.closed(timeout=10)

        # The client now neither reads nor closes. The server should give up on the closing
        # handshake after its close timeout, detach the session, and let it expire (3 s).
        def pinned() -> bool:
            names = []
            for p in server_tree(server_pid):
                with contextlib.suppress(psutil.Error):
                    names.append(" ".join(p.cmdline()))
            return any("sleep 300" in n for n in names)

        wait_until(
            lambda: not pinned(),
            12,
            "the pinned session's process is still running",
            interval=0.2,
        )
    finally:
        close_raw(conn)
