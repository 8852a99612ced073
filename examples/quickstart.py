"""The main job: run a command and stream its output, then write and read a file.

Runs against the embedded default server (no server to set up), or against ``$EXECSDK_URL``
when set, e.g. ``EXECSDK_URL=ws://127.0.0.1:PORT python examples/quickstart.py``.
"""

from __future__ import annotations

import posixpath
import sys

import execsdk


def main() -> int:
    with execsdk.connect() as env:
        print(f"connected: {env!r}", flush=True)
        proc = env.spawn(
            ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done; echo done >&2"]
        )
        for chunk in proc.output(timeout=30):
            target = sys.stdout if chunk.stream != "stderr" else sys.stderr
            target.write(chunk.data.decode("utf-8", "replace"))
            target.flush()
        print(f"exit code {proc.wait(timeout=10)}", flush=True)

        path = posixpath.join(env.info.temp_dir, "execsdk-quickstart.txt")
        env.fs.write_text(path, "hello from execsdk\n")
        print(f"read back: {env.fs.read_text(path)!r}")
        size = env.fs.stat(path).size
        print(f"stat size: {size}")
        env.fs.remove(path)
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
