"""What idle connections cost ``execsdk serve``: threads, file descriptors and resident memory.

Starts ``python -m execsdk serve`` from a checkout (this one by default), opens ``--connections``
WebSocket connections from this process (raw sockets, no client library), each through the
opening handshake, ``initialize``/``initialized`` and one request served by a worker
(``environment/status``), and leaves them idle. The server's thread count, open descriptors
and RSS (Linux ``/proc``) are printed before, just after the last connection opened, after
``--settle`` seconds of idleness, and after every connection closed.

    python benchmarks/idle_connections.py                 # 1,000 connections
    python benchmarks/idle_connections.py --repo /tmp/old  # an older checkout, same client

Also measures the connection-level abuse cases of issue 18: with ``--announce BYTES`` each
connection sends a frame header announcing BYTES and 2 bytes of payload, then stays silent;
with ``--churn SECONDS`` four client threads open a session and close it again, as fast as they
can, and the server's peak thread count and its count afterwards are printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame with FIN set."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    key = os.urandom(4)
    pattern = (key * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(pattern, "big")).to_bytes(length, "big")
    return header + key + body


def announce_header(length: int) -> bytes:
    """A masked binary frame header announcing ``length`` payload bytes (and its mask key)."""
    return struct.pack("!BBQ", 0x82, 0x80 | 127, length) + os.urandom(4)


def _recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the server closed the connection")
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(length)


def recv_message(sock: socket.socket) -> dict[str, object]:
    """The next text message (pings are answered, other control frames skipped)."""
    while True:
        opcode, data = _recv_frame(sock)
        if opcode == 0x9:
            sock.sendall(masked_frame(data, 0xA))
        elif opcode in (0x1, 0x2):
            message: dict[str, object] = json.loads(data)
            return message
        elif opcode == 0x8:
            raise EOFError("close frame")


def open_raw(host: str, port: int) -> socket.socket:
    """A socket past the opening handshake."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("no handshake answer")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head.decode(errors="replace"))
    return sock


def open_session(host: str, port: int, *, request: bool = True) -> socket.socket:
    """A connection with an initialized session (and one request served, with ``request``)."""
    sock = open_raw(host, port)
    sock.sendall(masked_frame(b'{"id":1,"method":"initialize","params":{"clientName":"idle"}}'))
    recv_message(sock)
    sock.sendall(masked_frame(b'{"method":"initialized","params":{}}'))
    if request:
        sock.sendall(masked_frame(b'{"id":2,"method":"environment/status","params":{}}'))
        recv_message(sock)
    return sock


def server_stats(pid: int) -> dict[str, int]:
    """Threads, open descriptors and RSS (KiB) of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_kib": int(fields["VmRSS"].split()[0]),
    }


def start_server(repo: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str, int]:
    """``python -m execsdk serve`` run from ``repo``; (process, host, port)."""
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.Popen(
        [sys.executable, "-m", "execsdk", "serve", "--listen", "ws://127.0.0.1:0", *extra],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("ws://"):
        proc.kill()
        raise RuntimeError(f"the server printed {url!r}")
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    return proc, host, int(port)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _show(label: str, stats: dict[str, int], base: dict[str, int], count: int) -> None:
    per = ""
    if count:
        per = (
            f"   per connection: {(stats['threads'] - base['threads']) / count:.2f} threads, "
            f"{(stats['fds'] - base['fds']) / count:.2f} fds, "
            f"{(stats['rss_kib'] - base['rss_kib']) / count:.0f} KiB"
        )
    print(
        f"{label:<28} threads {stats['threads']:>5}  fds {stats['fds']:>5}  "
        f"RSS {stats['rss_kib'] / 1024:>7.1f} MiB{per}",
        flush=True,
    )


def churn(pid: int, host: str, port: int, seconds: float, settle: float) -> None:
    """Open and close sessions from four threads for ``seconds``; print the server's threads."""
    time.sleep(0.5)
    base = server_stats(pid)
    _show("server started", base, base, 0)
    stop = threading.Event()
    counts = [0] * 4
    peak = base["threads"]

    def loop(i: int) -> None:
        while not stop.is_set():
            open_session(host, port, request=False).close()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, server_stats(pid)["threads"])
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join()
    _show(f"{sum(counts)} sessions churned", server_stats(pid), base, 0)
    print(f"peak threads during the churn: {peak}", flush=True)
    time.sleep(settle)
    _show(f"after the churn (+{settle:.0f} s)", server_stats(pid), base, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=8.0, help="idle seconds before measuring")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run the server from")
    parser.add_argument("--no-request", action="store_true", help="only initialize")
    parser.add_argument(
        "--announce",
        type=int,
        default=0,
        metavar="BYTES",
        help="instead of a session, send a frame header announcing BYTES and 2 payload bytes",
    )
    parser.add_argument("--churn", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    proc, host, port = start_server(args.repo.resolve(), [])
    if args.churn:
        try:
            churn(proc.pid, host, port, args.churn, args.settle)
        finally:
            stop_server(proc)
        return 0
    socks: list[socket.socket] = []
    try:
        time.sleep(0.5)
        base = server_stats(proc.pid)
        _show("server started", base, base, 0)
        start = time.monotonic()
        for _ in range(args.connections):
            if args.announce:
                sock = open_raw(host, port)
                sock.sendall(announce_header(args.announce) + b"ab")
            else:
                sock = open_session(host, port, request=not args.no_request)
            socks.append(sock)
        opened = time.monotonic() - start
        time.sleep(0.5)
        n = len(socks)
        _show(f"{n} open (+0.5 s)", server_stats(proc.pid), base, n)
        time.sleep(max(0.0, args.settle - 0.5))
        _show(f"{n} open, idle {args.settle:.0f} s", server_stats(proc.pid), base, n)
        for sock in socks:
            sock.close()
        socks.clear()
        time.sleep(args.settle)
        _show(f"all closed (+{args.settle:.0f} s)", server_stats(proc.pid), base, 0)
        print(f"opened {n} connections in {opened:.2f} s", flush=True)
    finally:
        for sock in socks:
            sock.close()
        stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
