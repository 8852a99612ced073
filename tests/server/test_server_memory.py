"""``execsdk serve`` fixes glibc's allocator thresholds so large requests reuse heap pages.

Without it, a burst of megabyte-sized buffers (what one 1 MiB ``fs/writeBlock`` costs the
server) is mapped fresh or trimmed off the heap each time and every page faults in again. The
probe runs in a child process, so this test process keeps its allocator as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings"),
]

_PROBE = textwrap.dedent(
    """
    import resource
    from execsdk.server.malloc import tune_allocator

    print(tune_allocator())

    def burst():
        # The buffers of one 1 MiB block write: frame, parsed string, decoded bytes.
        a = b"a" * 1_400_000
        b = b"b" * 1_400_000
        c = b"c" * (1 << 20)
        return len(a) + len(b) + len(c)

    for _ in range(5):
        burst()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        burst()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _probe(**env: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_tuned_thresholds_stop_large_buffers_from_faulting_in_again() -> None:
    tuned, faults = _probe()
    if not tuned:
        pytest.skip("no glibc mallopt here")
    # 50 bursts touch ~47,000 pages; reused heap pages fault only where the heap first grew.
    assert faults < 2_000, f"{faults} page faults for 50 bursts of 3.8 MB"


def test_the_opt_out_keeps_glibc_defaults() -> None:
    tuned, _faults = _probe(EXECSDK_SERVE_MALLOC="default")
    assert not tuned


def test_the_command_line_tunes_the_allocator_when_it_serves() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "execsdk", "serve", "--listen", "stdio", "-vv"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    if "no glibc" in proc.stderr:  # musl: nothing to tune
        pytest.skip("no glibc mallopt here")
    assert "allocator thresholds set" in proc.stderr
