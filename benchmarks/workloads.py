"""One measurement per process: the workloads the benchmark runner starts as children.

Each workload gets a spec (bench, subject, url, sizes) and returns its figures. Running every
measurement in a fresh interpreter keeps them from polluting each other: peak RSS is sampled
from an idle baseline taken right before the workload, CPU time is the whole process's.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

MiB = 2**20
INHERIT_ALL = {
    "inherit": "all",
    "ignoreDefaultExcludes": True,
    "exclude": [],
    "set": {},
    "includeOnly": [],
}
Spec = dict[str, Any]
Figures = dict[str, Any]


# --------------------------------------------------------------------------- measuring


class RssSampler:
    """Samples this process's RSS every few milliseconds on a thread; keeps the peak."""

    def __init__(self, interval: float = 0.002) -> None:
        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.idle = self._proc.memory_info().rss
        self.peak = self.idle
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self._proc.memory_info().rss
            if rss > self.peak:
                self.peak = rss

    def stop(self) -> Figures:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return {
            "idle_rss_MiB": self.idle / MiB,
            "peak_rss_above_idle_MiB": (self.peak - self.idle) / MiB,
        }


@contextmanager
def throughput(size: int, out: Figures) -> Iterator[None]:
    """Time a transfer of ``size`` bytes: MB/s, client CPU ms per MB, peak RSS above idle."""
    sampler = RssSampler()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    yield
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    mb = size / MiB
    out.update(sampler.stop())
    out["MBps"] = mb / elapsed
    out["cpu_ms_per_MB"] = cpu * 1e3 / mb
    out["seconds"] = elapsed


def percentiles(samples: list[float]) -> Figures:
    """p50/p99/mean of durations (seconds) in milliseconds."""
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "p50_ms": ordered[n // 2] * 1e3,
        "p99_ms": ordered[min(n - 1, int(n * 0.99))] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "n": n,
    }


def timed_loop(fn: Callable[[], object], n: int, warmup: int) -> Figures:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def block_fast_extra() -> None:
    """Make ``import orjson`` / ``import pybase64`` fail: measure the stdlib fallback."""
    sys.modules["orjson"] = None  # type: ignore[assignment]
    sys.modules["pybase64"] = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- helpers


def _raw(spec: Spec, **kwargs: Any) -> Any:
    from benchmarks.rawws import RawClient

    return RawClient(spec["url"], **kwargs)


def _threaded_raw(spec: Spec) -> Any:
    from benchmarks.rawws import ThreadedRawClient

    return ThreadedRawClient(spec["url"])


def _client(spec: Spec, **kwargs: Any) -> Any:
    from execsdk.client import Client

    return Client.connect(spec["url"], **kwargs)


def _env(spec: Spec) -> Any:
    import execsdk

    return execsdk.connect(spec["url"], timeout=600)


def _data(size: int) -> bytes:
    block = os.urandom(min(size, MiB))
    return (block * (size // len(block) + 1))[:size]


# --------------------------------------------------------------------------- call latency


def call_latency(spec: Spec) -> Figures:
    n, warmup = spec["n"], 50
    subject = spec["subject"]
    if subject == "local":
        return timed_loop(lambda: os.stat("/"), n, warmup)
    if subject in ("raw", "raw threaded"):
        raw = _raw(spec) if subject == "raw" else _threaded_raw(spec)
        params = {"path": raw.uri("/")}
        try:
            return timed_loop(lambda: raw.call("fs/getMetadata", params), n, warmup)
        finally:
            raw.close()
    with _client(spec) as c:
        return timed_loop(lambda: c.fs_get_metadata(path="/"), n, warmup)


# --------------------------------------------------------------------------- calls per second


def calls_per_s(spec: Spec) -> Figures:
    n, cap, threads = spec["n"], spec["cap"], spec["threads"]
    cpu0 = time.process_time()
    if spec["subject"] == "raw":
        rate = _raw_pipelined(spec, n, cap)
    else:
        rate = _sdk_threads(spec, n, cap, threads, threaded_raw=spec["subject"] == "raw threaded")
    return {"calls_per_s": rate, "cpu_us_per_call": (time.process_time() - cpu0) * 1e6 / n}


def _raw_pipelined(spec: Spec, n: int, cap: int) -> float:
    """One sender and one reader thread; at most ``cap`` requests unanswered."""
    raw = _raw(spec)
    params = {"path": raw.uri("/")}
    for _ in range(50):
        raw.call("fs/getMetadata", params)
    slots = threading.BoundedSemaphore(cap)
    done = threading.Event()
    loads, recv = raw.loads, raw.ws.recv

    def reader() -> None:
        for _ in range(n):
            loads(recv())
            slots.release()
        done.set()

    t = threading.Thread(target=reader, name="raw-reader", daemon=True)
    t.start()
    dumps, send = raw.dumps, raw.ws.send
    t0 = time.perf_counter()
    for i in range(n):
        slots.acquire()
        send(dumps({"id": 10_000 + i, "method": "fs/getMetadata", "params": params}))
    done.wait()
    rate = n / (time.perf_counter() - t0)
    t.join()
    raw.close()
    return rate


def _sdk_threads(spec: Spec, n: int, cap: int, threads: int, *, threaded_raw: bool) -> float:
    """``threads`` threads share one Client (max_in_flight=cap), n calls in all; or, with
    ``threaded_raw``, one ThreadedRawClient (the one-reader design without the SDK)."""
    if threaded_raw:
        raw = _threaded_raw(spec)
        params = {"path": raw.uri("/")}
        client = contextlib.closing(raw)
        call: Callable[[], object] = lambda: raw.call("fs/getMetadata", params)  # noqa: E731
    else:
        c = _client(spec, max_in_flight=cap)
        client = c
        call = lambda: c.fs_get_metadata(path="/")  # noqa: E731
    with client:
        for _ in range(50):
            call()
        per = n // threads
        start = threading.Barrier(threads + 1)

        def worker() -> None:
            start.wait()
            for _ in range(per):
                call()

        pool = [threading.Thread(target=worker, name=f"caller-{i}") for i in range(threads)]
        for th in pool:
            th.start()
        start.wait()
        t0 = time.perf_counter()
        for th in pool:
            th.join()
        return per * threads / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- run(["true"])


def run_true(spec: Spec) -> Figures:
    n, warmup = spec["n"], 20
    subject = spec["subject"]
    if subject == "local":
        return timed_loop(lambda: subprocess.run(["true"], check=True), n, warmup)
    if subject in ("raw", "raw naive"):
        tuned = subject == "raw"
        raw = _raw(spec, tuned=tuned, fast=tuned)
        cwd = raw.uri("/tmp")
        ids = iter(range(10**9))

        def once() -> None:
            pid = f"raw-{next(ids)}"
            # The same request env.run(["true"]) sends: inherit the server's environment.
            params = {"processId": pid, "argv": ["true"], "cwd": cwd, "env": {}, "tty": False}
            params["envPolicy"] = INHERIT_ALL
            raw.call("process/start", params)
            raw.wait_closed(pid)

        try:
            return timed_loop(once, n, warmup)
        finally:
            raw.close()
    with _env(spec) as env:
        return timed_loop(lambda: env.run(["true"], cwd="/tmp", check=True), n, warmup)


# --------------------------------------------------------------------------- stdout stream


def stdout(spec: Spec) -> Figures:
    size = spec["size"]
    argv = ["head", "-c", str(size), "/dev/zero"]
    subject = spec["subject"]
    out: Figures = {}
    got = 0
    if subject == "local":
        with throughput(size, out):
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            while chunk := proc.stdout.read(65536):
                got += len(chunk)
            proc.wait()
    elif subject.startswith("raw"):
        raw = _raw(spec, fast=subject == "raw")
        b64decode = raw.b64decode
        with throughput(size, out):
            raw.call(
                "process/start",
                {"processId": "s", "argv": argv, "cwd": raw.uri("/tmp"), "env": {}, "tty": False},
            )
            while True:
                msg = raw.next_notification()
                method = msg["method"]
                if method == "process/output":
                    got += len(b64decode(msg["params"]["chunk"]))
                elif method == "process/closed":
                    break
        raw.close()
    else:
        with _env(spec) as env, throughput(size, out):
            proc = env.spawn(argv, cwd="/tmp")
            for chunk in proc.output():
                got += len(chunk.data)
    if got != size:
        raise AssertionError(f"stdout: got {got} bytes, expected {size}")
    return out


# --------------------------------------------------------------------------- stdin stream


def stdin(spec: Spec) -> Figures:
    size, piece = spec["size"], spec["piece"]
    data = _data(size)
    argv = ["sh", "-c", f"head -c {size} > /dev/null"]
    subject = spec["subject"]
    out: Figures = {}
    view = memoryview(data)
    if subject == "local":
        with throughput(size, out):
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
            assert proc.stdin is not None
            for start in range(0, size, piece):
                proc.stdin.write(view[start : start + piece])
            proc.stdin.close()
            proc.wait()
    elif subject == "raw":
        raw = _raw(spec)
        b64encode = raw.b64encode
        with throughput(size, out):
            raw.call(
                "process/start",
                {
                    "processId": "w",
                    "argv": argv,
                    "cwd": raw.uri("/tmp"),
                    "env": {},
                    "tty": False,
                    "pipeStdin": True,
                },
            )
            for i, start in enumerate(range(0, size, piece)):
                chunk = b64encode(view[start : start + piece]).decode("ascii")
                res = raw.call(
                    "process/write", {"processId": "w", "chunk": chunk, "writeId": f"w{i}"}
                )
                if res["status"] != "accepted":
                    raise AssertionError(f"process/write: {res}")
            raw.wait_closed("w")
        raw.close()
    else:
        with _env(spec) as env, throughput(size, out):
            proc = env.spawn(argv, cwd="/tmp", stdin=True)
            proc.write(data)
            proc.communicate()
    return out


# --------------------------------------------------------------------------- fs


def fs_read(spec: Spec) -> Figures:
    size, total, path = spec["size"], spec["total"], spec["path"]
    reps = max(1, total // size)
    subject = spec["subject"]
    out: Figures = {}
    got = 0
    if subject == "local":
        with throughput(size * reps, out):
            for _ in range(reps):
                got += len(Path(path).read_bytes())
    elif subject == "raw readFile":
        raw = _raw(spec)
        params = {"path": raw.uri(path)}
        with throughput(size * reps, out):
            for _ in range(reps):
                got += len(raw.b64decode(raw.call("fs/readFile", params)["dataBase64"]))
        raw.close()
    elif subject == "raw blocks":
        raw = _raw(spec)
        with throughput(size * reps, out):
            for _ in range(reps):
                got += len(_raw_read_blocks(raw, path, spec["depth"]))
        raw.close()
    else:
        with _env(spec) as env:
            fs = env.fs
            with throughput(size * reps, out):
                for _ in range(reps):
                    got += len(fs.read_bytes(path))
    if got != size * reps:
        raise AssertionError(f"fs read: got {got} bytes, expected {size * reps}")
    return out


def _raw_read_blocks(raw: Any, path: str, depth: int) -> bytes:
    """fs/open + ``depth`` fs/readBlock calls kept in flight + fs/close."""
    raw.call("fs/open", {"handleId": "r", "path": raw.uri(path), "mode": "read"})
    block = MiB
    chunks: list[bytes] = []
    inflight: list[int] = []
    offset = 0
    eof = False
    for _ in range(depth):
        inflight.append(
            raw.request("fs/readBlock", {"handleId": "r", "offset": offset, "len": block})
        )
        offset += block
    while inflight:
        res = raw.wait(inflight.pop(0))
        data = raw.b64decode(res["chunk"])
        if data:
            chunks.append(data)
        if res["eof"] or len(data) < block:
            eof = True
        if not eof:
            inflight.append(
                raw.request("fs/readBlock", {"handleId": "r", "offset": offset, "len": block})
            )
            offset += block
    raw.call("fs/close", {"handleId": "r"})
    return b"".join(chunks)


def fs_write(spec: Spec) -> Figures:
    size, total, path = spec["size"], spec["total"], spec["path"]
    reps = max(1, total // size)
    data = _data(size)
    subject = spec["subject"]
    out: Figures = {}
    if subject == "local":
        with throughput(size * reps, out):
            for _ in range(reps):
                Path(path).write_bytes(data)
    elif subject == "raw writeFile":
        raw = _raw(spec)
        with throughput(size * reps, out):
            for _ in range(reps):
                payload = raw.b64encode(data).decode("ascii")
                raw.call("fs/writeFile", {"path": raw.uri(path), "dataBase64": payload})
        raw.close()
    elif subject == "raw blocks":
        raw = _raw(spec)
        with throughput(size * reps, out):
            for _ in range(reps):
                _raw_write_blocks(raw, path, data, spec["depth"])
        raw.close()
    else:
        with _env(spec) as env:
            fs = env.fs
            with throughput(size * reps, out):
                for _ in range(reps):
                    fs.write_bytes(path, data)
    written = os.path.getsize(path)
    if written != size:
        raise AssertionError(f"fs write: file has {written} bytes, expected {size}")
    return out


def _raw_write_blocks(raw: Any, path: str, data: bytes, depth: int) -> None:
    """fs/open(replace) + ``depth`` fs/writeBlock calls kept in flight + fs/close."""
    raw.call("fs/open", {"handleId": "w", "path": raw.uri(path), "mode": "replace"})
    view = memoryview(data)
    inflight: list[int] = []
    for offset in range(0, len(data), MiB):
        if len(inflight) >= depth:
            raw.wait(inflight.pop(0))
        chunk = raw.b64encode(view[offset : offset + MiB]).decode("ascii")
        inflight.append(
            raw.request("fs/writeBlock", {"handleId": "w", "offset": offset, "chunk": chunk})
        )
    for rid in inflight:
        raw.wait(rid)
    raw.call("fs/close", {"handleId": "w"})


WORKLOADS: dict[str, Callable[[Spec], Figures]] = {
    "call_latency": call_latency,
    "calls_per_s": calls_per_s,
    "run_true": run_true,
    "stdout": stdout,
    "stdin": stdin,
    "fs_read": fs_read,
    "fs_write": fs_write,
}


def run_child(spec: Spec) -> Figures:
    """Entry point in the child process."""
    if spec.get("no_fast"):
        block_fast_extra()
    return WORKLOADS[spec["bench"]](spec)
