"""What a process's output looks like across reconnects, per server (issue 17's probe).

Runs a 64 MiB writer at full speed through a fault proxy that cuts the link every 4 MiB the
client receives, then a 24 MiB writer that writes while nobody is connected for 10 s, against
our server and codex 0.169, and prints per run: bytes delivered, gaps reported (OutputLost),
chunks the gaps say were lost, exit code.

    .venv/bin/python benchmarks/reconnect_loss.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import execsdk
from execsdk import errors
from execsdk.client import Reconnect
from tests.faultproxy import FaultProxy
from tests.reliability.reliability_support import stream_script
from tests.servers import start_kind

MiB = 2**20
POLICY = Reconnect(max_wait=40.0, backoff=0.05, max_backoff=0.5)


def drain(proc: execsdk.Process, on_bytes: object = None) -> tuple[int, int]:
    got = gaps = 0
    while True:
        try:
            for chunk in proc.output(timeout=120):
                got += len(chunk.data)
                if callable(on_bytes):
                    on_bytes(got)
            return got, gaps
        except errors.OutputLost:
            gaps += 1


def cuts(url: str) -> str:
    size = 64 * MiB
    marks = list(range(4 * MiB, size, 4 * MiB))
    with FaultProxy.for_url(url) as proxy, execsdk.connect(proxy.url, reconnect=POLICY) as env:

        def cut_at(n: int) -> None:
            while marks and n >= marks[0]:
                marks.pop(0)
                proxy.cut()

        proc = env.spawn(stream_script(size))
        got, gaps = drain(proc, cut_at)
        lost = proc.output_lost
        return (
            f"64 MiB, cut every 4 MiB: delivered {got / MiB:.1f} MiB, {gaps} gap(s), "
            f"{lost.chunks if lost else 0} chunks reported lost, exit {proc.wait()}, "
            f"{proxy.cuts} cuts"
        )


def outage(url: str) -> str:
    size = 24 * MiB
    with FaultProxy.for_url(url) as proxy, execsdk.connect(proxy.url, reconnect=POLICY) as env:
        proc = env.spawn(["sh", "-c", 'sleep 1; exec "$@"', "sh", *stream_script(size)])
        proxy.refuse(True)
        proxy.cut()
        time.sleep(10)
        proxy.refuse(False)
        got, gaps = drain(proc)
        lost = proc.output_lost
        return (
            f"24 MiB written during a 10 s outage: delivered {got / MiB:.1f} MiB, {gaps} gap(s), "
            f"{lost.chunks if lost else 0} chunks reported lost, exit {proc.wait()}"
        )


def main() -> None:
    for kind in ("ours", "codex-0.169.0"):
        extra = ["--session-grace", "60"] if kind == "ours" else []
        server = start_kind(kind, extra, require=False)
        try:
            print(f"{kind}: {cuts(server.url)}", flush=True)
            print(f"{kind}: {outage(server.url)}", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
