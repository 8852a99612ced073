"""execsdk benchmarks: the SDK next to a hand-written websocket-client loop, in one run.

Usage: python benchmarks/run.py [--quick] [--only NAME ...] [--servers codex-0.169.0,ours]

Every figure is printed next to its baseline (a raw websocket-client loop, tuned with
skip_utf8_validation and TCP_NODELAY; or local subprocess) and written to
benchmarks/results.json. Numbers are measurements on this machine, not assertions.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import ServerHandle, start_kind  # noqa: E402

import execsdk  # noqa: E402
from execsdk.client import Client  # noqa: E402

RESULTS: list[dict[str, Any]] = []


def record(bench: str, server: str, subject: str, **figures: float | str) -> None:
    row = {"bench": bench, "server": server, "subject": subject, **figures}
    RESULTS.append(row)
    shown = "  ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"{bench:<26} {server:<15} {subject:<22} {shown}", flush=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --------------------------------------------------------------------------- raw baseline


class RawClient:
    """The hand-written baseline: websocket-client, no SDK, tuned."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(
            url,
            suppress_origin=True,
            skip_utf8_validation=True,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        self.ids = itertools.count(1)
        self.call("initialize", {"clientName": "raw"})
        self.ws.send(json.dumps({"method": "initialized", "params": {}}))
        self.g2 = True

    def quickack(self) -> None:
        sock = self.ws.sock
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def call(self, method: str, params: Any) -> Any:
        rid = next(self.ids)
        self.ws.send(json.dumps({"id": rid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            self.quickack()
            if msg.get("id") == rid:
                return msg.get("result", msg.get("error"))

    def close(self) -> None:
        self.ws.close()


def uri(path: str, g2: bool) -> str:
    return Path(path).as_uri() if g2 else path


# --------------------------------------------------------------------------- benches


def bench_call_latency(server: ServerHandle, n: int) -> None:
    g2 = server.generation == "G2"
    raw = RawClient(server.url)
    lat: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        raw.call("fs/getMetadata", {"path": uri("/", g2)})
        lat.append(time.perf_counter() - t0)
    raw.close()
    record(
        "call_latency_ms", server.name, "raw websocket-client",
        p50=pct(lat, 0.5) * 1e3, p99=pct(lat, 0.99) * 1e3,
    )
    with Client.connect(server.url) as c:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            c.fs_get_metadata(path="/")
            lat.append(time.perf_counter() - t0)
    record(
        "call_latency_ms", server.name, "execsdk Client",
        p50=pct(lat, 0.5) * 1e3, p99=pct(lat, 0.99) * 1e3,
    )


def bench_pipelined(server: ServerHandle, n: int, cap: int = 128) -> None:
    g2 = server.generation == "G2"
    raw = RawClient(server.url)
    params = {"path": uri("/", g2)}
    slots = threading.Semaphore(cap)
    got = [0]
    done = threading.Event()

    def reader() -> None:
        while got[0] < n:
            json.loads(raw.ws.recv())
            got[0] += 1
            slots.release()
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t0 = time.perf_counter()
    t.start()
    for i in range(n):
        slots.acquire()
        raw.ws.send(json.dumps({"id": 1000 + i, "method": "fs/getMetadata", "params": params}))
    done.wait(300)
    raw_rate = n / (time.perf_counter() - t0)
    raw.close()
    record("calls_per_s", server.name, f"raw pipelined cap={cap}", rate=raw_rate)

    with Client.connect(server.url, max_in_flight=cap) as c:
        per = n // 8

        def worker() -> None:
            for _ in range(per):
                c.fs_get_metadata(path="/")

        threads = [threading.Thread(target=worker) for _ in range(8)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rate = per * 8 / (time.perf_counter() - t0)
    record("calls_per_s", server.name, "execsdk 8 threads", rate=rate)


def bench_run_true(server: ServerHandle | None, n: int) -> None:
    if server is None:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(["true"], check=True)
            lat.append(time.perf_counter() - t0)
        record("run_true_ms", "local", "subprocess.run", p50=pct(lat, 0.5) * 1e3,
               p99=pct(lat, 0.99) * 1e3)
        return
    g2 = server.generation == "G2"
    raw = RawClient(server.url)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        pid = f"raw-{i}"
        raw.call("process/start", {"processId": pid, "argv": ["true"], "cwd": uri("/tmp", g2),
                                   "env": {}, "tty": False})
        while True:
            msg = json.loads(raw.ws.recv())
            raw.quickack()
            if msg.get("method") == "process/closed" and msg["params"]["processId"] == pid:
                break
        lat.append(time.perf_counter() - t0)
    raw.close()
    record("run_true_ms", server.name, "raw + NODELAY/QUICKACK", p50=pct(lat, 0.5) * 1e3,
           p99=pct(lat, 0.99) * 1e3)
    with execsdk.connect(server.url) as env:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            env.run(["true"], cwd="/tmp")
            lat.append(time.perf_counter() - t0)
    record("run_true_ms", server.name, "execsdk env.run", p50=pct(lat, 0.5) * 1e3,
           p99=pct(lat, 0.99) * 1e3)


STREAM_CMD = "head -c {n} /dev/zero"


def bench_stdout(server: ServerHandle | None, size: int) -> None:
    cmd = ["sh", "-c", STREAM_CMD.format(n=size)]
    mb = size / 2**20
    if server is None:
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout
        assert len(out) == size
        record("stdout_MBps", "local", "subprocess.run", mbps=mb / (time.perf_counter() - t0))
        return
    g2 = server.generation == "G2"
    raw = RawClient(server.url)
    t0 = time.perf_counter()
    raw.call("process/start", {"processId": "s", "argv": cmd, "cwd": uri("/tmp", g2), "env": {},
                               "tty": False})
    got = 0
    while True:
        msg = json.loads(raw.ws.recv())
        if msg.get("method") == "process/output":
            got += len(base64.b64decode(msg["params"]["chunk"]))
        elif msg.get("method") == "process/closed":
            break
    raw_rate = mb / (time.perf_counter() - t0)
    raw.close()
    assert got == size, (got, size)
    record("stdout_MBps", server.name, "raw websocket-client", mbps=raw_rate)
    with execsdk.connect(server.url) as env:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        proc = env.spawn(cmd, cwd="/tmp")
        total = 0
        for chunk in proc.output():
            total += len(chunk.data)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        assert total == size, (total, size)
    record("stdout_MBps", server.name, "execsdk output()", mbps=mb / elapsed,
           cpu_ms_per_MB=cpu * 1e3 / mb)


BENCHES: dict[str, Callable[..., None]] = {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (for CI)")
    parser.add_argument("--servers", default="codex-0.169.0,ours")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    n_calls = 200 if args.quick else 2000
    n_pipe = 2000 if args.quick else 20000
    n_runs = 20 if args.quick else 200
    stream = (16 if args.quick else 64) * 2**20
    only = set(args.only) if args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus")
    if want("run_true"):
        bench_run_true(None, n_runs)
    if want("stdout"):
        bench_stdout(None, stream)
    for kind in args.servers.split(","):
        server = start_kind(kind, require=False)
        try:
            if want("call_latency"):
                bench_call_latency(server, n_calls)
            if want("pipelined"):
                bench_pipelined(server, n_pipe)
            if want("run_true"):
                bench_run_true(server, n_runs)
            if want("stdout"):
                bench_stdout(server, stream)
        finally:
            server.stop()
    out = REPO / "benchmarks" / "results.json"
    out.write_text(json.dumps({"quick": args.quick, "results": RESULTS}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
