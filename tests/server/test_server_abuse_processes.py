"""``execsdk serve`` under abuse, the processes it starts (issue 18).

Real servers (``python -m execsdk serve``), real processes:

- Bounded stdin: a flood of 1 MiB ``process/write`` to a child that never reads keeps the
  server's memory bounded; writes beyond the limit wait for an answer (while other requests of
  the same connection are answered), and are answered once the child is terminated.
- No orphans: SIGKILL or SIGTERM of the server (WebSocket or stdio) takes its children and their
  background children (same process group) with it.
- Children start clean: a server that ignores SIGHUP and blocks a signal hands neither on.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from execsdk._local.processes import STDIN_LIMIT
from execsdk.client import Client
from execsdk.server.ws import WsServer
from tests.servers import ServerHandle, start_ours
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process groups"),
]

MIB = 1 << 20


def _start_params(process_id: str, argv: list[str], cwd: Path, **extra: Any) -> dict[str, Any]:
    return {
        "processId": process_id,
        "argv": argv,
        "cwd": f"file://{cwd}",
        "tty": False,
        **{"env": {}, **extra},
    }


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@pytest.fixture()
def server() -> Iterator[ServerHandle]:
    with start_ours() as handle:
        yield handle


# --------------------------------------------------------------------------- bounded stdin


def test_a_write_flood_to_a_child_that_never_reads_stays_bounded(
    server: ServerHandle, tmp_path: Path
) -> None:
    client = Client.connect(server.url, timeout=60)
    try:
        client.call("process/start", _start_params("s", ["sleep", "600"], tmp_path, pipeStdin=True))
        baseline = _rss(server.popen.pid)
        chunk = base64.b64encode(b"x" * MIB).decode()
        threads_n, per_thread = 16, 6  # 96 MiB: 12 times the limit
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        peak = [baseline]

        def writer(k: int) -> None:
            for i in range(per_thread):
                if stop.is_set():
                    return
                reply = client.call(
                    "process/write", {"processId": "s", "chunk": chunk, "writeId": f"{k}-{i}"}
                )
                with lock:
                    answered.append(reply["status"])

        threads = [
            threading.Thread(target=writer, args=(k,), name=f"flood-{k}") for k in range(threads_n)
        ]
        for thread in threads:
            thread.start()
        try:
            # The queue fills to the limit; then every writer waits for its answer.
            limit_mib = STDIN_LIMIT // MIB
            wait_until(lambda: len(answered) >= limit_mib, 30, lambda: f"{len(answered)} answered")
            time.sleep(1.0)
            with lock:
                held_back = len(answered)
            peak[0] = max(peak[0], _rss(server.popen.pid))
            # The limit, plus what the pipe itself holds (64 KiB): one more write at most.
            assert held_back <= limit_mib + 1, f"{held_back} writes answered for {limit_mib} MiB"
            # Another request of the same connection is answered meanwhile, at once.
            began = time.monotonic()
            client.call("fs/getMetadata", {"path": f"file://{tmp_path}"})
            assert time.monotonic() - began < 5.0
            assert len(answered) == held_back  # and the writers still wait
            growth = peak[0] - baseline
            assert growth < 200 * MIB, f"server RSS grew by {growth / MIB:.0f} MiB"
            stop.set()
            assert client.call("process/terminate", {"processId": "s"})["running"] is True
            for thread in threads:
                thread.join(30)
                assert not thread.is_alive(), "a write was not answered after terminate"
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert set(answered) == {"accepted"}
        # What was queued is freed with the process.
        after = _rss(server.popen.pid)
        assert after - baseline < 64 * MIB, f"{(after - baseline) / MIB:.0f} MiB kept"
    finally:
        client.close()


def test_a_repeated_write_id_is_not_delivered_twice_after_waiting(
    server: ServerHandle, tmp_path: Path
) -> None:
    client = Client.connect(server.url, timeout=60)
    try:
        # `sleep 2; wc -c`: reads nothing for two seconds, then counts everything.
        argv = ["sh", "-c", "sleep 2; wc -c"]
        client.call("process/start", _start_params("w", argv, tmp_path, pipeStdin=True))
        chunk = base64.b64encode(b"y" * MIB).decode()
        for i in range(12):  # the last 4 wait for room
            params = {"processId": "w", "chunk": chunk, "writeId": f"id-{i}"}
            assert client.call("process/write", params)["status"] == "accepted"
        again = {"processId": "w", "chunk": chunk, "writeId": "id-11"}
        assert client.call("process/write", again)["status"] == "accepted"
        client.call("process/closeStdin", {"processId": "w"})
        out = b""
        after = 0
        while True:
            read = client.call(
                "process/read", {"processId": "w", "afterSeq": after, "waitMs": 5000}
            )
            out += b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
            after = read["nextSeq"] - 1
            if read["closed"]:
                break
        assert int(out.strip()) == 12 * MIB
    finally:
        client.close()


# --------------------------------------------------------------------------- no orphans


class _StdioServer:
    """``execsdk serve --listen stdio`` driven with raw JSON lines. One thread only."""

    def __init__(self, **popen: Any) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "execsdk", "serve", "--listen", "stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            **popen,
        )
        self._ids = 0
        self.call("initialize", {"clientName": "abuse-test"})
        self._send({"jsonrpc": "2.0", "method": "initialized"})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(message).encode() + b"\n")
        self.popen.stdin.flush()

    def call(self, method: str, params: Any) -> Any:
        self._ids += 1
        self._send({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        assert self.popen.stdout is not None
        while True:
            line = self.popen.stdout.readline()
            assert line, "the stdio server closed its stdout"
            message = json.loads(line)
            if message.get("id") == self._ids:
                assert "result" in message, message
                return message["result"]

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                pipe.close()


def _descendants(pid: int) -> list[psutil.Process]:
    return list(psutil.Process(pid).children(recursive=True))


def _family(pid: int, sleepers: int) -> list[psutil.Process] | None:
    """Every descendant of ``pid`` once ``sleepers`` of them run ``sleep``, else None."""
    procs = _descendants(pid)
    count = 0
    for proc in procs:
        try:
            count += proc.name() == "sleep"
        except psutil.NoSuchProcess:
            pass
    return procs if count >= sleepers else None


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return left


# Each child leaves a grandchild behind in its process group.
FAMILY = ["sh", "-c", "sleep 300 & exec sleep 301"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("transport", ["ws", "stdio"])
def test_children_die_with_the_server(transport: str, sig: int, tmp_path: Path) -> None:
    stdio: _StdioServer | None = None
    handle: ServerHandle | None = None
    client: Client | None = None
    try:
        if transport == "ws":
            handle = start_ours()
            client = Client.connect(handle.url, timeout=30)
            server_pid = handle.popen.pid
            call = client.call
        else:
            stdio = _StdioServer()
            server_pid = stdio.popen.pid
            call = stdio.call
        for k in range(5):
            call("process/start", _start_params(f"p{k}", FAMILY, tmp_path))
        family = wait_until(lambda: _family(server_pid, 10), 10, "5 children, 5 grandchildren")
        os.kill(server_pid, sig)
        wait_until(lambda: not _alive(family), 10, lambda: f"still alive: {_alive(family)}")
    finally:
        if client is not None:
            client.close()
        if handle is not None:
            handle.stop()
        if stdio is not None:
            stdio.close()


def test_a_clean_exit_on_stdin_eof_kills_the_children(tmp_path: Path) -> None:
    stdio = _StdioServer()
    try:
        for k in range(3):
            stdio.call("process/start", _start_params(f"p{k}", FAMILY, tmp_path))
        family = wait_until(lambda: _family(stdio.popen.pid, 6), 10, "3 children, 3 grandchildren")
        assert stdio.popen.stdin is not None
        stdio.popen.stdin.close()
        assert stdio.popen.wait(10) == 0
        wait_until(lambda: not _alive(family), 10, lambda: f"still alive: {_alive(family)}")
    finally:
        stdio.popen.stdin = None
        stdio.close()


# --------------------------------------------------------------------------- clean signals


def _ignore_hup_block_usr1() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGUSR2])


def _run(stdio: _StdioServer, process_id: str, argv: list[str], cwd: Path, **extra: Any) -> Any:
    # A PATH: codex (and so our server) spawns tty children only with one.
    params = _start_params(process_id, argv, cwd, env={"PATH": os.defpath}, **extra)
    stdio.call("process/start", params)
    out = b""
    after = 0
    while True:
        read = stdio.call(
            "process/read", {"processId": process_id, "afterSeq": after, "waitMs": 5000}
        )
        out += b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
        after = read["nextSeq"] - 1
        if read["closed"]:
            return read["exitCode"], out


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_children_get_default_signals_and_an_empty_mask(tty: bool, tmp_path: Path) -> None:
    stdio = _StdioServer(preexec_fn=_ignore_hup_block_usr1)
    try:
        # The server itself was started that way...
        status = Path(f"/proc/{stdio.popen.pid}/status").read_text()
        fields = dict(line.split(":\t") for line in status.splitlines() if ":\t" in line)
        assert int(fields["SigIgn"], 16) & (1 << (signal.SIGHUP - 1))
        assert int(fields["SigBlk"], 16) & (1 << (signal.SIGUSR1 - 1))
        # ...its children are not.
        code, _ = _run(stdio, "hup", ["sh", "-c", "kill -HUP $$; echo survived"], tmp_path, tty=tty)
        assert code == 128 + signal.SIGHUP
        code, out = _run(
            stdio,
            "status",
            ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"],
            tmp_path,
            tty=tty,
        )
        assert code == 0
        masks = dict(line.split(":") for line in out.decode().splitlines())
        assert int(masks["SigBlk"], 16) == 0, out
        assert int(masks["SigIgn"], 16) == 0, out
    finally:
        stdio.close()


def test_a_waiting_write_ends_with_its_connection(tmp_path: Path) -> None:
    # In-process server: the test looks at the session's process and at the server's threads.
    srv = WsServer("127.0.0.1", 0, session_grace=30.0)
    srv.start()
    try:
        client = Client.connect(srv.url, timeout=30)
        client.call("process/start", _start_params("s", ["sleep", "600"], tmp_path, pipeStdin=True))
        session = srv.registry.get(client.server_info.session_id)
        assert session is not None
        chunk = base64.b64encode(b"x" * MIB).decode()
        for i in range(STDIN_LIMIT // MIB):
            client.call("process/write", {"processId": "s", "chunk": chunk, "writeId": str(i)})
        outcome: list[BaseException] = []

        def write_more() -> None:
            try:
                client.call("process/write", {"processId": "s", "chunk": chunk, "writeId": "more"})
            except BaseException as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write_more)
        writer.start()
        proc = session.backend._require("s")
        wait_until(lambda: len(proc.stdin_waiters) == 1, 10, "the write waits")
        client.close()
        writer.join(10)
        assert outcome, "the waiting write was answered after its connection closed"
        # Its place in line is given up, its thread ends; the process lives on in its session.
        wait_until(lambda: not proc.stdin_waiters, 10, "the waiting write gave up its place")
        wait_until(
            lambda: (
                not [t for t in threading.enumerate() if t.name.startswith("execsdk-serve-hold")]
            ),
            10,
            "holder threads end with the connection",
        )
        assert not proc.exited
    finally:
        srv.shutdown(timeout=5)
