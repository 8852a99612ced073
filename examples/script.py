"""A plain script: connect, run a command, stream a command's output, copy a file up and back.

The server comes from ``$EXECSDK_URL`` (e.g. ``ws://127.0.0.1:8765``); without it the embedded
default server starts as a child process, so this runs on a fresh machine with no setup::

    python examples/script.py
    EXECSDK_URL=ws://127.0.0.1:8765 python examples/script.py

Exits with 0 when the file came back byte-for-byte identical.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import sys
import tempfile

import execsdk


def main() -> int:
    with execsdk.connect(timeout=30) as env:
        print(f"connected: {env!r}")
        print(f"server: os={env.info.os} shell={env.info.shell} temp={env.info.temp_dir}")

        # run(): wait for the command and collect its output, like subprocess.run.
        uname = env.run(["uname", "-sm"], text=True, check=True)
        print(f"uname: {uname.stdout.strip()}")

        # spawn(): stream output while the command runs; chunks arrive in order, both streams.
        proc = env.spawn(
            ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done; echo warn >&2"]
        )
        for chunk in proc.output(timeout=30):
            print(f"  [{chunk.stream}] {chunk.data.decode('utf-8', 'replace').rstrip()}")
        print(f"exit code: {proc.wait(timeout=10)}")

        # A local file goes up, is checked remotely, and comes back.
        payload = secrets.token_bytes(256 * 1024) + b"\nend\n"
        remote = posixpath.join(env.info.temp_dir, f"execsdk-script-{secrets.token_hex(4)}.bin")
        with tempfile.TemporaryDirectory() as tmp:
            local_src = os.path.join(tmp, "source.bin")
            local_back = os.path.join(tmp, "back.bin")
            with open(local_src, "wb") as f:
                f.write(payload)
            try:
                env.fs.upload(local_src, remote)
                size = env.run(["wc", "-c", remote], text=True, check=True).stdout.split()[0]
                print(f"uploaded {len(payload)} bytes; the server counts {size}")
                env.fs.download(remote, local_back)
            finally:
                env.fs.remove(remote, missing_ok=True)
            with open(local_back, "rb") as f:
                back = f.read()
        same = back == payload
        print(f"round trip: {'ok' if same else 'MISMATCH'} ({len(back)} bytes)")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
