"""Server CPU per MiB received, small-request latency and output throughput of ``execsdk serve``.

Usage: python benchmarks/server_receive_cpu.py [--tree PATH] [--other PATH] [--rounds N]
           [--blocks N] [--calls N] [--output-mib N] [--only recv latency output]

Compares two source trees of execsdk (``--tree``, default this repository, against ``--other``,
e.g. a ``git worktree`` of an older commit) by running ``python -m execsdk serve`` from each as a
child process, taking turns for ``--rounds`` rounds (the order flips every round), and printing
the median of each figure, and the median of the per-round ratios (both trees ran back to back,
so the ratio cancels most of a busy machine's drift; two runs of one tree differ by up to ~7%):

- ``recv ms/MiB``: the server's CPU time (utime + stime of the whole process, from
  ``/proc/PID/stat``) per MiB of block data received, over ``--blocks`` 1 MiB ``fs/writeBlock``
  requests (1.4 MB of compact base64 JSON each, as execsdk's client writes them, sent as one
  frame, four in flight, after 32 not counted), written to a file under ``/dev/shm`` at offsets
  that cycle over 16 MiB so the page cache costs little and the same every run;
- ``latency us``: median round trip of ``--calls`` sequential ``environment/status`` requests;
- ``output MB/s`` and ``out ms/MiB``: ``head -c`` of ``--output-mib`` MiB of zeros read as
  ``process/output`` notifications until ``process/closed`` (tty false); wall-clock rate and the
  server's CPU per MiB sent.

The client frames the write requests itself (masked with a C XOR, so client CPU stays out of the
way) and reads with websocket-client. Numbers are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets build without its C extension

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        pattern = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(pattern, "little")).to_bytes(
            n, "little"
        )


try:
    import orjson

    loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - the fast extra is optional
    loads = json.loads

REPO = Path(__file__).resolve().parents[1]


def dumps(obj: object) -> str:
    """Compact JSON, as execsdk's client writes it (the server cuts base64 members out of
    compact requests without parsing them)."""
    return json.dumps(obj, separators=(",", ":"))


MiB = 2**20
TICK = os.sysconf("SC_CLK_TCK")
IN_FLIGHT = 4
WARM_UP = 32


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def client_frame(payload: bytes) -> bytes:
    """One masked text frame (RFC 6455 §5.2) with a fresh key."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


class Server:
    """``python -m execsdk serve`` from one source tree, as a child process."""

    def __init__(self, tree: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "execsdk", "serve", "--listen", "ws://127.0.0.1:0"],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().decode().strip()
        if not self.url.startswith("ws://"):
            self.stop()
            raise RuntimeError(f"server in {tree} printed {self.url!r}")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Client:
    """One initialized session over websocket-client."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(
            url,
            suppress_origin=True,
            skip_utf8_validation=True,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            timeout=60,
        )
        self.ids = itertools.count(1)
        self.call("initialize", {"clientName": "bench"})
        self.ws.send(dumps({"method": "initialized", "params": {}}))

    def send(self, method: str, params: dict[str, Any]) -> int:
        rid = next(self.ids)
        self.ws.send(dumps({"id": rid, "method": method, "params": params}))
        return rid

    def reply(self) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = loads(self.ws.recv())
            if "id" in msg:
                if "error" in msg:
                    raise RuntimeError(f"server error: {msg['error']}")
                return msg

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = self.send(method, params)
        msg = self.reply()
        assert msg["id"] == rid, msg
        result: dict[str, Any] = msg["result"]
        return result

    def close(self) -> None:
        self.ws.close(timeout=1)


def bench_receive(client: Client, server: Server, blocks: int, directory: str) -> float:
    """Server CPU ms per MiB of ``fs/writeBlock`` data received."""
    target = Path(directory, "blocks.bin")
    uri = target.as_uri()
    client.call("fs/open", {"handleId": "h", "path": uri, "mode": "replace"})
    chunk = base64.b64encode(os.urandom(MiB)).decode()
    prefix = dumps({"method": "fs/writeBlock", "params": {"handleId": "h", "chunk": chunk}})
    sock = client.ws.sock
    assert sock is not None

    def frame_for(i: int) -> bytes:
        # offset and id go last, so the 1.4 MB prefix is built once.
        body = prefix[:-2] + f',"offset":{(i % 16) * MiB}}},"id":{10_000 + i}}}'
        return client_frame(body.encode())

    frames = [frame_for(i) for i in range(32)]  # built before the clock starts

    def send(count: int) -> None:
        sent = done = 0
        while done < count:
            while sent < count and sent - done < IN_FLIGHT:
                sock.sendall(frames[sent % len(frames)])
                sent += 1
            client.reply()
            done += 1

    send(WARM_UP)  # buffers, heap and the file's pages reach their steady state first
    before = server.cpu()
    send(blocks)
    after = server.cpu()
    client.call("fs/close", {"handleId": "h"})
    target.unlink(missing_ok=True)
    return (after - before) * 1000 / blocks


def bench_latency(client: Client, calls: int) -> float:
    """Median microseconds per ``environment/status`` round trip."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.call("environment/status", {})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def bench_output(client: Client, server: Server, mib: int, run: int) -> tuple[float, float]:
    """(MB/s, server CPU ms per MiB) of ``head -c`` output read as notifications."""
    pid = f"out{run}"
    before = server.cpu()
    start = time.perf_counter()
    client.call(
        "process/start",
        {
            "processId": pid,
            "argv": ["head", "-c", str(mib * MiB), "/dev/zero"],
            "cwd": Path("/tmp").as_uri(),
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "tty": False,
        },
    )
    got = 0
    while True:
        msg = loads(client.ws.recv())
        method = msg.get("method")
        if method == "process/output":
            text = msg["params"]["chunk"]
            got += len(text) * 3 // 4 - text[-2:].count("=")
        elif method == "process/closed":
            break
    elapsed = time.perf_counter() - start
    after = server.cpu()
    if got != mib * MiB:
        raise RuntimeError(f"got {got} bytes of output, expected {mib * MiB}")
    return got / elapsed / 1e6, (after - before) * 1000 / mib


def one_run(tree: Path, args: argparse.Namespace, run: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    server = Server(tree)
    try:
        client = Client(server.url)
        try:
            if "recv" in args.only:
                shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
                with tempfile.TemporaryDirectory(dir=shm) as d:
                    figures["recv ms/MiB"] = bench_receive(client, server, args.blocks, d)
            if "latency" in args.only:
                figures["latency us"] = bench_latency(client, args.calls)
            if "output" in args.only:
                rate, out_cpu = bench_output(client, server, args.output_mib, run)
                figures["output MB/s"], figures["out ms/MiB"] = rate, out_cpu
        finally:
            client.close()
    finally:
        server.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="source tree A (default: here)")
    parser.add_argument("--other", type=Path, default=Path("/tmp/old"), help="source tree B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=256, help="1 MiB writeBlock requests")
    parser.add_argument("--calls", type=int, default=2000, help="environment/status calls")
    parser.add_argument("--output-mib", type=int, default=256, help="MiB of process output")
    parser.add_argument(
        "--only",
        nargs="+",
        default=["recv", "latency", "output"],
        choices=["recv", "latency", "output"],
        help="measures to run (default: all)",
    )
    args = parser.parse_args()
    trees = {"new": args.tree.resolve(), "old": args.other.resolve()}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for run in range(args.rounds):
        order = list(trees) if run % 2 else list(reversed(trees))
        for name in order:
            figures = one_run(trees[name], args, run)
            results[name].append(figures)
            shown = "  ".join(f"{k} {v:8.2f}" for k, v in figures.items())
            sys.stderr.write(f"round {run + 1} {name}: {shown}\n")
    keys = list(results["new"][0])
    out = sys.stdout
    out.write(f"{'median of ' + str(args.rounds):16s}" + "".join(f"{k:>14s}" for k in keys) + "\n")
    for name, runs in results.items():
        medians = [statistics.median(r[k] for r in runs) for k in keys]
        out.write(f"{name:16s}" + "".join(f"{m:14.2f}" for m in medians) + "\n")
    # Each round ran both trees back to back, so their ratio cancels most of the machine's drift.
    ratios = [
        statistics.median(
            new[k] / old[k] for new, old in zip(results["new"], results["old"], strict=True)
        )
        for k in keys
    ]
    out.write(f"{'new/old (paired)':16s}" + "".join(f"{r:14.3f}" for r in ratios) + "\n")
    out.write(f"new = {trees['new']}, old = {trees['old']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
