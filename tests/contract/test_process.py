"""The process contract: what ``Environment.run``/``spawn`` and ``Process`` guarantee on every
environment (local, codex G2 and G1, our server), through the one ``env`` fixture.

Remote servers run on this machine in these tests, so ``tmp_path`` and pids are shared.
Where a generation lacks a feature (``interrupt`` on G1) the test checks the documented
error instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from execsdk import errors
from execsdk.backends import OutputChunk
from execsdk.environment import Environment
from execsdk.process import Process
from tests.waiting import wait_until

PY = shutil.which("python3") or "python3"
MiB = 2**20


def _killed_code(env: Environment, signum: int) -> int:
    """Exit code of a process killed by ``signum``: 128+N, except -1 on G1 servers."""
    return -1 if env.info.generation == "G1" else 128 + signum


def _wait_for_output(
    proc_iter: Iterator[OutputChunk], needle: bytes, timeout: float = 20.0
) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    for chunk in proc_iter:
        seen += chunk.data
        if needle in seen:
            return seen
        assert time.monotonic() < deadline, f"{needle!r} not seen in {seen[-200:]!r}"
    raise AssertionError(f"output ended before {needle!r}: {seen[-200:]!r}")


# --------------------------------------------------------------------------- basics


def test_echo_returns_stdout_and_zero(env: Environment) -> None:
    result = env.run(["echo", "hello", "world"])
    assert result.returncode == 0
    assert result.stdout == b"hello world\n"
    assert result.stderr == b""
    assert result.args == ["echo", "hello", "world"]


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes_are_reported(env: Environment, code: int) -> None:
    assert env.run(["sh", "-c", f"exit {code}"]).returncode == code


def test_stderr_is_kept_apart_from_stdout(env: Environment) -> None:
    result = env.run(["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"])
    assert result.stdout == b"out1\nout2\n"
    assert result.stderr == b"err1\nerr2\n"


def test_missing_executable_raises_file_not_found(env: Environment) -> None:
    with pytest.raises(FileNotFoundError):
        env.run(["/nonexistent/execsdk-no-such-program"])


def test_death_by_signal_reports_128_plus_n(env: Environment) -> None:
    result = env.run(["sh", "-c", "kill -TERM $$; sleep 5"], timeout=30)
    assert result.returncode == _killed_code(env, 15)


def test_cwd_absolute_relative_and_default(env: Environment, tmp_path: Path) -> None:
    where = [PY, "-c", "import os; print(os.getcwd())"]
    real = os.path.realpath(tmp_path)
    assert env.run(where, cwd=tmp_path, text=True).stdout.strip() == real
    assert env.run(where, cwd=str(tmp_path), text=True).stdout.strip() == real
    relative = os.path.relpath(tmp_path, env.info.cwd)
    assert env.run(where, cwd=relative, text=True).stdout.strip() == real
    default = env.run(where, text=True).stdout.strip()
    assert default == os.path.realpath(env.info.cwd)


def test_env_overlays_the_inherited_variables(env: Environment) -> None:
    script = 'printf "%s|%s" "$EXECSDK_CONTRACT_VAR" "${PATH:+has-path}"'
    result = env.run(["sh", "-c", script], env={"EXECSDK_CONTRACT_VAR": "v 1"}, text=True)
    assert result.stdout == "v 1|has-path"


def test_replace_env_gives_the_child_exactly_env(env: Environment) -> None:
    result = env.run(["/usr/bin/env"], env={"ONLY_THIS": "1"}, replace_env=True)
    assert result.stdout == b"ONLY_THIS=1\n"


def test_shell_runs_a_command_string_in_the_environment_shell(env: Environment) -> None:
    result = env.run("echo $((6 * 7)) | tr 4 X; exit 5", shell=True)
    assert (result.returncode, result.stdout) == (5, b"X2\n")


def test_check_raises_called_process_error_with_output(env: Environment) -> None:
    with pytest.raises(errors.CalledProcessError) as info:
        env.run(["sh", "-c", "echo out; echo err >&2; exit 4"], check=True)
    exc = info.value
    assert (exc.returncode, exc.stdout, exc.stderr) == (4, b"out\n", b"err\n")
    assert exc.cmd == ["sh", "-c", "echo out; echo err >&2; exit 4"]
    assert isinstance(exc, subprocess.CalledProcessError)


# --------------------------------------------------------------------------- text


# The child's pauses are the behaviour: each byte leaves in a chunk of its own.
_SPLIT_UTF8 = (
    "import sys, time\n"
    "data = 'héllo wörld €\\nnä日本\\n'.encode()\n"
    "for i in range(len(data)):\n"
    "    sys.stdout.buffer.write(data[i:i+1]); sys.stdout.flush(); time.sleep(0.005)\n"
)


def test_text_mode_decodes_utf8_split_across_chunks(env: Environment) -> None:
    result = env.run([PY, "-c", _SPLIT_UTF8], text=True)
    assert result.stdout == "héllo wörld €\nnä日本\n"


def test_iter_lines_decodes_utf8_split_across_chunks(env: Environment) -> None:
    with env.spawn([PY, "-c", _SPLIT_UTF8]) as proc:
        assert list(proc.iter_lines(timeout=30)) == ["héllo wörld €", "nä日本"]
        assert proc.wait(timeout=10) == 0


# --------------------------------------------------------------------------- volume

_INTERLEAVED = (
    "import sys\n"
    "o, e = sys.stdout.buffer, sys.stderr.buffer\n"
    "for i in range({blocks}):\n"
    "    o.write((b'O%07d' % i) * 8192); o.flush()\n"
    "    e.write((b'E%07d' % i) * 8192); e.flush()\n"
    "sys.exit(7)\n"
)


def _interleaved_once(env: Environment, total: int) -> None:
    blocks = total // (8 * 8192)
    result = env.run([PY, "-c", _INTERLEAVED.format(blocks=blocks)], timeout=300)
    assert result.returncode == 7
    expected_out = b"".join((b"O%07d" % i) * 8192 for i in range(blocks))
    assert len(result.stdout) == total
    assert result.stdout == expected_out
    del expected_out
    expected_err = b"".join((b"E%07d" % i) * 8192 for i in range(blocks))
    assert result.stderr == expected_err


@pytest.mark.timeout(600)
def test_64mib_stdout_and_stderr_interleaved_are_byte_exact(env: Environment) -> None:
    for _ in range(3):
        _interleaved_once(env, 64 * MiB)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_64mib_interleaved_twenty_times(env: Environment) -> None:
    for _ in range(20):
        _interleaved_once(env, 64 * MiB)


@pytest.mark.timeout(300)
def test_stdin_round_trip_16mib_through_head(env: Environment) -> None:
    data = os.urandom(16 * MiB)
    with env.spawn(["head", "-c", str(len(data))], stdin=True) as proc:
        proc.write(data, timeout=120)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0
    assert len(stdout) == len(data)
    assert stdout == data
    assert stderr == b""


def test_run_input_reaches_cat_and_ends_with_eof(env: Environment) -> None:
    data = os.urandom(3 * MiB) + b"\x00\xff tail\n"
    result = env.run(["cat"], input=data, timeout=120)
    assert result.returncode == 0
    assert result.stdout == data


def test_run_text_input(env: Environment) -> None:
    result = env.run(["sort"], input="b\nä\na\n", text=True, timeout=60)
    assert result.stdout.split("\n")[:2] == ["a", "b"]
    assert "ä" in result.stdout


def test_write_without_stdin_raises_stdin_closed(env: Environment) -> None:
    with env.spawn(["sleep", "30"]) as proc, pytest.raises(errors.StdinClosed):
        proc.write(b"nobody reads this")


# --------------------------------------------------------------------------- tty


def test_tty_makes_stdout_a_terminal(env: Environment) -> None:
    assert env.run(["sh", "-c", "test -t 1"], tty=True).returncode == 0
    assert env.run(["sh", "-c", "test -t 1"]).returncode == 1


def test_ctrl_d_ends_cat_on_a_tty(env: Environment) -> None:
    with env.spawn(["cat"], tty=True) as proc:
        proc.write(b"hello tty\n")
        _wait_for_output(proc.output(timeout=30), b"hello tty")
        proc.write(b"\x04")
        assert proc.wait(timeout=30) == 0
        lines = list(proc.iter_lines(timeout=30))
    assert all("\r" not in line for line in lines)


# --------------------------------------------------------------------------- timeouts and stopping


def test_run_timeout_kills_and_raises_with_partial_output(env: Environment) -> None:
    started = time.monotonic()
    with pytest.raises(errors.TimeoutExpired) as info:
        env.run(["sh", "-c", "echo partial; echo err >&2; exec sleep 60"], timeout=2)
    assert time.monotonic() - started < 30
    exc = info.value
    assert isinstance(exc, TimeoutError)
    assert exc.timeout == 2
    assert exc.stdout == b"partial\n"
    assert exc.stderr == b"err\n"


def test_wait_timeout_raises_and_the_process_stays_usable(env: Environment) -> None:
    with env.spawn(["cat"], stdin=True) as proc:
        with pytest.raises(errors.TimeoutExpired):
            proc.wait(timeout=0.1)
        assert proc.poll() is None
        proc.write(b"still here\n")
        _wait_for_output(proc.output(timeout=30), b"still here\n")
        proc.terminate()
        assert proc.wait(timeout=30) == _killed_code(env, 9)


def _start_ready(env: Environment, command: str, *, stdin: bool = False) -> Process:
    proc = env.spawn(["sh", "-c", f"echo ready; exec {command}"], stdin=stdin)
    _wait_for_output(proc.output(timeout=30), b"ready")
    return proc


@pytest.mark.parametrize("command", ["sleep 60", "cat"])
def test_interrupt_exits_130_or_is_unsupported_on_g1(env: Environment, command: str) -> None:
    if env.info.generation == "G1":
        assert not env.processes.can_interrupt
    with _start_ready(env, command, stdin=True) as proc:
        if not env.processes.can_interrupt:
            with pytest.raises(errors.UnsupportedByServer):
                proc.interrupt()
            return
        proc.interrupt()
        assert proc.wait(timeout=30) == 130


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_leaving_the_context_kills_the_process(env: Environment, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with env.spawn(["sh", "-c", 'echo $$ > "$0"; echo ready; exec sleep 60', str(pidfile)]) as p:
        _wait_for_output(p.output(timeout=30), b"ready")
        pid = int(pidfile.read_text())
        assert not _gone(pid)
    assert p.poll() == _killed_code(env, 9)
    wait_until(lambda: _gone(pid), 10, f"pid {pid} still running", interval=0.05)


# --------------------------------------------------------------------------- concurrency


_TAGGED = 'i=0; while [ $i -lt 200 ]; do echo "$0 line $i"; i=$((i+1)); done; exit $1'


def _expected_tagged(tag: str) -> bytes:
    return b"".join(f"{tag} line {i}\n".encode() for i in range(200))


@pytest.mark.timeout(180)
def test_50_concurrent_spawns_from_10_threads_with_callbacks(env: Environment) -> None:
    lock = threading.Lock()
    chunks: dict[str, list[OutputChunk]] = {}
    exits: dict[str, int] = {}
    callback_threads: set[str] = set()
    all_done = threading.Semaphore(0)
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for k in range(5):
                tag = f"w{w}k{k}"
                chunks[tag] = []

                def on_output(chunk: OutputChunk, tag: str = tag) -> None:
                    with lock:
                        chunks[tag].append(chunk)
                        callback_threads.add(threading.current_thread().name)

                def on_exit(code: int, tag: str = tag) -> None:
                    with lock:
                        exits[tag] = code
                    all_done.release()

                env.spawn(["sh", "-c", _TAGGED, tag, str(k)], on_output=on_output, on_exit=on_exit)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    for _ in range(50):
        assert all_done.acquire(timeout=120)
    assert len(exits) == 50
    for tag, code in exits.items():
        assert code == int(tag[-1])
        got = chunks[tag]
        assert [c.seq for c in got] == sorted(c.seq for c in got)
        assert b"".join(c.data for c in got) == _expected_tagged(tag)
    assert callback_threads == {env.dispatcher.thread.name}  # type: ignore[union-attr]


@pytest.mark.timeout(180)
def test_50_concurrent_spawns_from_10_threads_with_iterators(env: Environment) -> None:
    results: dict[str, tuple[int, bytes]] = {}
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            procs = [
                (f"w{w}k{k}", env.spawn(["sh", "-c", _TAGGED, f"w{w}k{k}", str(k)]))
                for k in range(5)
            ]
            for tag, proc in procs:
                with proc:
                    data = b"".join(c.data for c in proc.output(timeout=120))
                    results[tag] = (proc.wait(timeout=30), data)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not failures, failures
    assert len(results) == 50
    for tag, (code, data) in results.items():
        assert code == int(tag[-1])
        assert data == _expected_tagged(tag)


def test_process_repr_and_ids(env: Environment) -> None:
    with env.spawn(["sleep", "30"]) as proc:
        assert re.fullmatch(r"p-[0-9a-f]{8}", proc.id)
        assert repr(proc) == f"<Process {proc.id!r} ['sleep', '30'] running>"
        proc.kill()
        code = proc.wait(timeout=30)
    assert repr(proc) == f"<Process {proc.id!r} ['sleep', '30'] exited {code}>"
