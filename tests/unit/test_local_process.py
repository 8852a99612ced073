"""LocalProcessBackend with real child processes (Linux/POSIX): events, stdin, signals, read."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from execsdk import errors
from execsdk._local.childenv import CORE_ENV_VARS, build_child_env
from execsdk._local.processes import LocalProcessBackend
from execsdk.backends import EnvPolicy, ProcessBackend, ProcessSpec, Stream
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")

PY = sys.executable


class Recorder:
    """A ProcessEvents receiver that records everything and checks who calls it."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.threads: set[str] = set()
        self.lost: BaseException | None = None

    def _add(self, event: tuple[object, ...]) -> None:
        with self.cond:
            self.threads.add(threading.current_thread().name)
            self.events.append(event)
            self.cond.notify_all()

    def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
        self._add(("output", seq, stream, data))

    def on_exited(self, seq: int, exit_code: int) -> None:
        self._add(("exited", seq, exit_code))

    def on_closed(self, seq: int) -> None:
        with self.cond:
            self.closed = True
        self._add(("closed", seq))

    def on_lost(self, exc: BaseException) -> None:
        with self.cond:
            self.lost = exc
        self._add(("lost",))

    def wait_closed(self, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.closed, timeout), self.events[-5:]

    def wait_for(self, pred: object, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, timeout), self.events[-5:]  # type: ignore[arg-type]

    def data(self, stream: str | None = None) -> bytes:
        with self.cond:
            return b"".join(
                e[3]  # type: ignore[misc]
                for e in self.events
                if e[0] == "output" and (stream is None or e[2] == stream)
            )

    def exit_code(self) -> int | None:
        with self.cond:
            for e in self.events:
                if e[0] == "exited":
                    return e[2]  # type: ignore[return-value]
        return None

    def seqs(self) -> list[int]:
        with self.cond:
            return [e[1] for e in self.events if e[0] != "lost"]  # type: ignore[misc]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _asleep_in(pid: int, name: str) -> bool:
    """True while ``pid`` runs the program ``name`` (its exec is done) and sleeps. ``head -c N
    /dev/zero`` never waits for its input: asleep, it is blocked writing its output."""
    try:
        proc = psutil.Process(pid)
        return bool(proc.name() == name and proc.status() == psutil.STATUS_SLEEPING)
    except psutil.NoSuchProcess:
        return False


def _running(pid: int, name: str) -> bool:
    """True once ``pid`` runs the program ``name``: its exec is done, its signal handling is
    the program's own."""
    try:
        return bool(psutil.Process(pid).name() == name)
    except psutil.NoSuchProcess:
        return False


_markers = itertools.count(1)


def _io_round_trip(b: LocalProcessBackend) -> None:
    """Run a process through the backend's one I/O thread until its exit is delivered: every
    event the thread took up before has been delivered (or dropped) by then."""
    marker = Recorder()
    b.start(f"marker-{next(_markers)}", ProcessSpec(["true"]), marker)
    marker.wait_for(lambda: marker.exit_code() is not None)


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("execsdk-local-")]


@pytest.fixture
def backend() -> Iterator[LocalProcessBackend]:
    before = set(_io_threads())
    b = LocalProcessBackend()
    try:
        yield b
    finally:
        b.close()
        leaked = [t for t in _io_threads() if t not in before and t.is_alive()]
        assert not leaked, leaked


def run(
    b: LocalProcessBackend, argv: list[str], pid: str = "p", timeout: float = 10.0, **kw: object
) -> Recorder:
    rec = Recorder()
    b.start(pid, ProcessSpec(argv, **kw), rec)  # type: ignore[arg-type]
    rec.wait_closed(timeout)
    return rec


# --------------------------------------------------------------------------- basics


def test_backend_satisfies_process_backend_protocol(backend: LocalProcessBackend) -> None:
    assert isinstance(backend, ProcessBackend)
    assert backend.can_close_stdin and backend.can_interrupt


@pytest.mark.timeout(30)
def test_echo_output_then_exited_then_closed(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["echo", "hello"])
    assert rec.events == [("output", 1, "stdout", b"hello\n"), ("exited", 2, 0), ("closed", 3)]
    assert all(name.startswith("execsdk-local-io-") for name in rec.threads)


@pytest.mark.timeout(30)
def test_exit_code_is_reported(backend: LocalProcessBackend) -> None:
    assert run(backend, ["sh", "-c", "exit 7"]).exit_code() == 7
    assert backend.read("p").exit_code == 7


@pytest.mark.timeout(30)
def test_stderr_is_separate_from_stdout(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["sh", "-c", "echo out; echo err >&2; echo out2"])
    assert rec.data("stdout") == b"out\nout2\n"
    assert rec.data("stderr") == b"err\n"


@pytest.mark.timeout(30)
def test_seq_increments_by_one_across_streams_and_closed_is_last(
    backend: LocalProcessBackend,
) -> None:
    script = "for i in 1 2 3 4 5 6 7 8; do echo o$i; echo e$i >&2; done"
    rec = run(backend, ["sh", "-c", script])
    assert rec.seqs() == list(range(1, len(rec.events) + 1))
    assert rec.events[-1][0] == "closed"
    assert [e[0] for e in rec.events].count("exited") == 1
    assert rec.data("stderr") == b"".join(b"e%d\n" % i for i in range(1, 9))


@pytest.mark.timeout(30)
def test_output_chunks_are_at_most_8192_bytes(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["head", "-c", "300000", "/dev/zero"])
    sizes = [len(e[3]) for e in rec.events if e[0] == "output"]  # type: ignore[arg-type]
    assert sum(sizes) == 300000
    assert max(sizes) <= 8192


@pytest.mark.timeout(30)
def test_death_by_sigterm_reports_143(backend: LocalProcessBackend) -> None:
    assert run(backend, ["sh", "-c", "kill -TERM $$"]).exit_code() == 143


@pytest.mark.timeout(30)
def test_terminate_kills_background_grandchild_and_reports_137(
    backend: LocalProcessBackend,
) -> None:
    rec = Recorder()
    backend.start("t", ProcessSpec(["sh", "-c", "sleep 100 & echo $!; sleep 100"]), rec)
    rec.wait_for(lambda: b"\n" in rec.data())
    grandchild = int(rec.data().decode())
    assert _alive(grandchild)
    assert backend.terminate("t") is True
    rec.wait_closed()
    assert rec.exit_code() == 137
    wait_until(lambda: not _alive(grandchild), 5, "the grandchild survived", interval=0.02)
    assert backend.terminate("t") is False


@pytest.mark.timeout(30)
def test_background_child_holding_stdout_keeps_process_unclosed_until_terminate(
    backend: LocalProcessBackend,
) -> None:
    rec = Recorder()
    backend.start("bg", ProcessSpec(["sh", "-c", "sleep 100 & exit 0"]), rec)
    rec.wait_for(lambda: rec.exit_code() is not None)
    _io_round_trip(backend)  # a wrong "closed" would have been delivered by now
    assert not rec.closed
    assert backend.terminate("bg") is False  # exited already, but the group gets killed
    rec.wait_closed()
    assert rec.exit_code() == 0


@pytest.mark.timeout(30)
def test_terminate_unknown_id_is_false(backend: LocalProcessBackend) -> None:
    assert backend.terminate("nope") is False


# --------------------------------------------------------------------------- environment


BASE = {
    "HOME": "/home/u",
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "xterm",
    "USER": "u",
    "API_KEY": "k",
    "my_secret_x": "s",
    "GH_Token": "t",
    "Foo": "f",
    "FOO2": "g",
    "bar": "b",
}


def test_env_without_policy_is_exactly_spec_env() -> None:
    assert build_child_env({"A": "1"}, None, BASE) == {"A": "1"}
    assert build_child_env({}, None, BASE) == {}


def test_env_inherit_all_keeps_everything_when_default_excludes_ignored() -> None:
    env = build_child_env({}, EnvPolicy(inherit="all", ignore_default_excludes=True), BASE)
    assert env == BASE


def test_env_default_excludes_drop_key_secret_token_case_insensitively() -> None:
    env = build_child_env({}, EnvPolicy(inherit="all", ignore_default_excludes=False), BASE)
    assert "API_KEY" not in env and "my_secret_x" not in env and "GH_Token" not in env
    assert env["Foo"] == "f" and env["PATH"] == "/usr/bin:/bin"


def test_env_inherit_core_keeps_only_core_names() -> None:
    env = build_child_env({}, EnvPolicy(inherit="core"), BASE)
    assert env == {"HOME": "/home/u", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "USER": "u"}
    assert set(env) <= set(CORE_ENV_VARS)


def test_env_inherit_none_then_set_and_spec_env_wins_over_set() -> None:
    policy = EnvPolicy(inherit="none", set={"A": "1", "B": "2"})
    assert build_child_env({"B": "3"}, policy, BASE) == {"A": "1", "B": "3"}


def test_env_exclude_globs_ignore_case() -> None:
    env = build_child_env({}, EnvPolicy(exclude=("foo*", "?AR")), BASE)
    assert "Foo" not in env and "FOO2" not in env and "bar" not in env
    assert "HOME" in env


def test_env_include_only_applies_after_set_and_before_spec_env() -> None:
    policy = EnvPolicy(set={"FOO_SET": "s", "OTHER": "o"}, include_only=("foo*",))
    env = build_child_env({"C": "3"}, policy, BASE)
    assert env == {"Foo": "f", "FOO2": "g", "FOO_SET": "s", "C": "3"}


def test_env_globs_have_no_bracket_classes() -> None:
    # codex's matcher knows * and ? only: "F[O]O*" matches a literal bracket, not FOO.
    assert build_child_env({}, EnvPolicy(include_only=("F[O]O*",)), BASE) == {}


def test_env_bad_inherit_is_invalid_params() -> None:
    with pytest.raises(errors.InvalidParams, match="unknown variant `some`"):
        build_child_env({}, EnvPolicy(inherit="some"), BASE)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_child_sees_exactly_spec_env_without_policy(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["/usr/bin/env"], env={"ONLY": "1"}, env_policy=None)
    assert rec.data() == b"ONLY=1\n"


@pytest.mark.timeout(30)
def test_child_env_uses_base_env_and_policy(tmp_path: Path) -> None:
    b = LocalProcessBackend(base_env={"PATH": os.environ["PATH"], "X_TOKEN": "t", "KEEP": "k"})
    try:
        policy = EnvPolicy(ignore_default_excludes=False)
        rec = run(b, ["env"], env={"EXTRA": "e"}, env_policy=policy)
        lines = set(rec.data().decode().splitlines())
        assert {"KEEP=k", "EXTRA=e"} <= lines
        assert not any(line.startswith("X_TOKEN=") for line in lines)
    finally:
        b.close()


@pytest.mark.timeout(30)
def test_argv0_is_looked_up_on_the_child_path(backend: LocalProcessBackend, tmp_path: Path) -> None:
    tool = tmp_path / "execsdk-test-tool"
    tool.write_text("#!/bin/sh\necho found-on-child-path\n")
    tool.chmod(0o755)
    rec = run(backend, ["execsdk-test-tool"], env={"PATH": str(tmp_path)}, env_policy=None)
    assert rec.data() == b"found-on-child-path\n"
    with pytest.raises(FileNotFoundError):
        backend.start("q", ProcessSpec(["execsdk-test-tool"]), Recorder())


@pytest.mark.timeout(30)
def test_argv0_is_not_looked_up_on_this_process_path(tmp_path: Path) -> None:
    tool = tmp_path / "execsdk-test-tool"
    tool.write_text("#!/bin/sh\necho inherited-path\n")
    tool.chmod(0o755)
    b = LocalProcessBackend(base_env={"PATH": str(tmp_path)})
    try:
        with pytest.raises(FileNotFoundError):  # the child's env has no PATH at all
            b.start("none", ProcessSpec(["execsdk-test-tool"], env_policy=None), Recorder())
        rec = run(b, ["execsdk-test-tool"], pid="all")  # inherits PATH from base_env
        assert rec.data() == b"inherited-path\n"
        assert run(b, ["true"], pid="defpath", env_policy=None).exit_code() == 0
    finally:
        b.close()


@pytest.mark.timeout(30)
def test_arg0_sets_the_process_visible_argv0(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["cat", "/proc/self/cmdline"], arg0="my-name")
    assert rec.data() == b"my-name\0/proc/self/cmdline\0"


@pytest.mark.timeout(30)
def test_cwd_and_default_cwd(backend: LocalProcessBackend, tmp_path: Path) -> None:
    assert run(backend, ["pwd"], cwd=str(tmp_path)).data() == f"{tmp_path}\n".encode()
    b = LocalProcessBackend(default_cwd=str(tmp_path))
    try:
        assert run(b, ["pwd"]).data() == f"{tmp_path}\n".encode()
    finally:
        b.close()


# --------------------------------------------------------------------------- start errors


def test_missing_executable_raises_file_not_found(backend: LocalProcessBackend) -> None:
    with pytest.raises(FileNotFoundError) as info:
        backend.start("m", ProcessSpec(["/nonexistent/tool-xyz"]), Recorder())
    assert isinstance(info.value, errors.RemoteOSError)
    assert info.value.filename == "/nonexistent/tool-xyz"
    with pytest.raises(errors.ProcessNotFound):
        backend.read("m")  # the id was not kept


def test_missing_cwd_raises_file_not_found(backend: LocalProcessBackend, tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    with pytest.raises(errors.RemoteFileNotFoundError) as info:
        backend.start("m", ProcessSpec(["true"], cwd=missing), Recorder())
    assert info.value.filename == missing
    assert backend.running_count() == 0


def test_not_executable_raises_permission_error(
    backend: LocalProcessBackend, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.write_text("echo\n")
    if os.geteuid() == 0:
        plain.chmod(0o644)  # root may still not exec a file without any x bit
    with pytest.raises(PermissionError):
        backend.start("m", ProcessSpec([str(plain)]), Recorder())


def test_empty_argv_is_invalid_params(backend: LocalProcessBackend) -> None:
    with pytest.raises(errors.InvalidParams, match="argv must not be empty") as info:
        backend.start("e", ProcessSpec([]), Recorder())
    assert info.value.code == -32602


@pytest.mark.timeout(30)
def test_duplicate_id_is_invalid_request_while_live_or_retained(
    backend: LocalProcessBackend,
) -> None:
    run(backend, ["true"], pid="dup")
    with pytest.raises(errors.InvalidRequest, match="process dup already exists") as info:
        backend.start("dup", ProcessSpec(["true"]), Recorder())
    assert info.value.code == -32600


# --------------------------------------------------------------------------- tty


@pytest.mark.timeout(30)
def test_tty_is_a_24x80_terminal_and_output_is_stream_pty(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["sh", "-c", "test -t 0 && test -t 1 && stty size; echo e >&2"], tty=True)
    assert rec.data() == b"24 80\r\ne\r\n"
    assert {e[2] for e in rec.events if e[0] == "output"} == {"pty"}


@pytest.mark.timeout(30)
def test_tty_is_the_controlling_terminal(backend: LocalProcessBackend) -> None:
    rec = run(backend, ["sh", "-c", "echo via-dev-tty > /dev/tty && echo ok"], tty=True)
    assert rec.data() == b"via-dev-tty\r\nok\r\n"


@pytest.mark.timeout(30)
def test_tty_close_stdin_sends_ctrl_d_and_ends_cat(backend: LocalProcessBackend) -> None:
    rec = Recorder()
    backend.start("c", ProcessSpec(["cat"], tty=True), rec)
    assert backend.write("c", b"line\n") == "accepted"
    rec.wait_for(lambda: rec.data().count(b"line\r\n") == 2)  # echo, then cat's copy
    backend.close_stdin("c")
    rec.wait_closed()
    assert rec.exit_code() == 0
    assert backend.write("c", b"x") == "stdinClosed"


# --------------------------------------------------------------------------- stdin


@pytest.mark.timeout(60)
def test_stdin_16mib_round_trip_through_head_is_byte_exact(backend: LocalProcessBackend) -> None:
    size = 16 * 1024 * 1024
    payload = os.urandom(size)
    rec = Recorder()
    backend.start("h", ProcessSpec(["head", "-c", str(size)], pipe_stdin=True), rec)
    for i in range(0, size, 1 << 20):
        assert backend.write("h", payload[i : i + (1 << 20)]) == "accepted"
    rec.wait_closed(30)
    out = rec.data("stdout")
    assert len(out) == size
    assert hashlib.sha256(out).digest() == hashlib.sha256(payload).digest()
    assert rec.exit_code() == 0


@pytest.mark.timeout(30)
def test_close_stdin_ends_cat_after_queued_bytes(backend: LocalProcessBackend) -> None:
    rec = Recorder()
    backend.start("c", ProcessSpec(["cat"], pipe_stdin=True), rec)
    assert backend.write("c", b"a" * 300_000) == "accepted"
    backend.close_stdin("c")
    rec.wait_closed()
    assert rec.data() == b"a" * 300_000
    assert rec.exit_code() == 0


@pytest.mark.timeout(30)
def test_write_statuses(backend: LocalProcessBackend) -> None:
    assert backend.write("nope", b"x") == "unknownProcess"
    backend.start("nostdin", ProcessSpec(["sleep", "30"]), Recorder())
    assert backend.write("nostdin", b"x") == "stdinClosed"
    rec = Recorder()
    backend.start("cat", ProcessSpec(["cat"], pipe_stdin=True), rec)
    assert backend.write("cat", b"") == "accepted"
    assert backend.write("cat", b"hi\n") == "accepted"
    rec.wait_for(lambda: rec.data() == b"hi\n")
    backend.close_stdin("cat")
    assert backend.write("cat", b"more") == "stdinClosed"
    rec.wait_closed()
    backend.close_stdin("nope")  # unknown ids are ignored
    backend.terminate("nostdin")


@pytest.mark.timeout(30)
def test_write_after_exit_is_accepted_and_dropped(backend: LocalProcessBackend) -> None:
    rec = Recorder()
    backend.start("x", ProcessSpec(["true"], pipe_stdin=True), rec)
    rec.wait_closed()
    assert backend.write("x", b"late") == "accepted"


@pytest.mark.timeout(30)
def test_child_closing_its_stdin_early_drops_the_queue_quietly(
    backend: LocalProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    script = "exec 0<&-; sleep 0.3; echo done"
    backend.start("e", ProcessSpec(["sh", "-c", script], pipe_stdin=True), rec)
    with caplog.at_level(logging.WARNING, logger="execsdk"):
        for _ in range(8):
            assert backend.write("e", b"z" * 100_000) == "accepted"
        rec.wait_closed()
    assert rec.data() == b"done\n"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- interrupt


@pytest.mark.timeout(30)
def test_interrupt_sleep_exits_130(backend: LocalProcessBackend) -> None:
    rec = Recorder()
    backend.start("s", ProcessSpec(["sleep", "30"]), rec)
    pid = backend.pid("s")
    assert pid is not None
    wait_until(lambda: _running(pid, "sleep"), 5, "sleep did not start")
    backend.interrupt("s")
    rec.wait_closed()
    assert rec.exit_code() == 130


@pytest.mark.timeout(30)
def test_interrupt_cat_exits_130(backend: LocalProcessBackend) -> None:
    rec = Recorder()
    backend.start("c", ProcessSpec(["cat"], pipe_stdin=True), rec)
    backend.write("c", b"x\n")
    rec.wait_for(lambda: rec.data() == b"x\n")
    backend.interrupt("c")
    rec.wait_closed()
    assert rec.exit_code() == 130
    backend.interrupt("unknown")  # no error


@pytest.mark.timeout(30)
def test_interrupt_works_when_this_process_ignores_sigint(backend: LocalProcessBackend) -> None:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rec = Recorder()
        backend.start("s", ProcessSpec(["sleep", "30"]), rec)
    finally:
        signal.signal(signal.SIGINT, old)
    pid = backend.pid("s")
    assert pid is not None
    wait_until(lambda: _running(pid, "sleep"), 5, "sleep did not start")
    backend.interrupt("s")
    rec.wait_closed()
    assert rec.exit_code() == 130


# --------------------------------------------------------------------------- read


@pytest.mark.timeout(30)
def test_read_after_seq_is_exclusive_and_reports_exit(backend: LocalProcessBackend) -> None:
    run(backend, ["sh", "-c", "echo a; sleep 0.05; echo b >&2; sleep 0.05; echo c"])
    full = backend.read("p")
    assert [c.data for c in full.chunks] == [b"a\n", b"b\n", b"c\n"]
    assert full.exited and full.closed and full.exit_code == 0
    last = full.chunks[-1].seq
    assert full.next_seq == last + 3  # exited and closed took the next two numbers
    tail = backend.read("p", after_seq=full.chunks[0].seq)
    assert [c.data for c in tail.chunks] == [b"b\n", b"c\n"]
    assert tail.chunks[0].stream == "stderr"
    assert backend.read("p", after_seq=full.next_seq).chunks == ()


@pytest.mark.timeout(30)
def test_read_max_bytes_is_a_soft_cap_with_at_least_one_chunk(
    backend: LocalProcessBackend,
) -> None:
    run(backend, ["head", "-c", "40000", "/dev/zero"])
    one = backend.read("p", max_bytes=0)
    assert len(one.chunks) == 1
    assert one.next_seq == one.chunks[0].seq + 1
    some = backend.read("p", max_bytes=20000)
    assert 0 < sum(len(c.data) for c in some.chunks) <= 20000
    rest = backend.read("p", after_seq=some.next_seq - 1)
    assert sum(len(c.data) for c in some.chunks + rest.chunks) == 40000
    assert rest.next_seq == backend.read("p").next_seq


@pytest.mark.timeout(30)
def test_read_wait_ms_long_polls_until_output(backend: LocalProcessBackend) -> None:
    backend.start("w", ProcessSpec(["sh", "-c", "sleep 0.3; echo late"]), Recorder())
    t0 = time.monotonic()
    res = backend.read("w", after_seq=0, wait_ms=5000)
    elapsed = time.monotonic() - t0
    assert [c.data for c in res.chunks] == [b"late\n"]
    assert 0.2 < elapsed < 3.0


@pytest.mark.timeout(30)
def test_read_wait_ms_returns_when_time_passes(backend: LocalProcessBackend) -> None:
    backend.start("w", ProcessSpec(["sleep", "30"]), Recorder())
    t0 = time.monotonic()
    res = backend.read("w", wait_ms=300)
    assert 0.25 < time.monotonic() - t0 < 2.0
    assert res.chunks == () and not res.exited and res.next_seq == 1
    backend.terminate("w")


@pytest.mark.timeout(30)
def test_read_wait_ms_returns_at_once_when_closed(backend: LocalProcessBackend) -> None:
    run(backend, ["true"])
    t0 = time.monotonic()
    res = backend.read("p", after_seq=100, wait_ms=5000)
    assert time.monotonic() - t0 < 0.5
    assert res.closed and res.chunks == ()


@pytest.mark.timeout(30)
def test_read_wait_wakes_on_exit_without_output(backend: LocalProcessBackend) -> None:
    backend.start("x", ProcessSpec(["sleep", "0.3"]), Recorder())
    res = backend.read("x", after_seq=0, wait_ms=5000)
    assert res.exited and res.chunks == ()


def test_read_unknown_id_raises_process_not_found(backend: LocalProcessBackend) -> None:
    with pytest.raises(errors.ProcessNotFound, match="unknown process id nope") as info:
        backend.read("nope", wait_ms=5000)
    assert info.value.process_id == "nope"


@pytest.mark.timeout(30)
def test_retention_keeps_only_the_last_mib(backend: LocalProcessBackend) -> None:
    size = 3 * 1024 * 1024
    code = (
        "import sys\n"
        f"for i in range({size // 4096}):\n"
        "    sys.stdout.buffer.write(b'%08d' % i * 512)\n"
    )
    rec = run(backend, [PY, "-c", code], timeout=30)
    assert len(rec.data()) == size
    res = backend.read("p")
    kept = b"".join(c.data for c in res.chunks)
    assert res.chunks[0].seq > 1
    assert 1024 * 1024 - 8192 <= len(kept) <= 1024 * 1024
    assert rec.data().endswith(kept)


@pytest.mark.timeout(30)
def test_closed_record_is_forgotten_after_retain_after_close() -> None:
    b = LocalProcessBackend(retain_after_close=0.5)
    try:
        began = time.monotonic()
        run(b, ["echo", "x"], pid="f")
        assert b.read("f").closed

        def forgotten() -> bool:
            try:
                b.read("f")
            except errors.ProcessNotFound:
                return True
            return False

        wait_until(forgotten, 5, "the record was kept", interval=0.05)
        assert time.monotonic() - began >= 0.5  # not before its retention ran out
        assert b.write("f", b"x") == "unknownProcess"
        assert run(b, ["echo", "again"], pid="f").data() == b"again\n"  # id reusable
    finally:
        b.close()


# --------------------------------------------------------------------------- receivers


@pytest.mark.timeout(30)
def test_release_stops_delivery_but_keeps_the_record(backend: LocalProcessBackend) -> None:
    rec = Recorder()
    backend.start("r", ProcessSpec(["sh", "-c", "sleep 0.3; echo after"]), rec)
    backend.release("r")
    res = backend.read("r", after_seq=0, wait_ms=5000)
    assert [c.data for c in res.chunks] == [b"after\n"]
    while not res.closed:
        res = backend.read("r", after_seq=res.next_seq - 1, wait_ms=5000)
    _io_round_trip(backend)  # whatever the I/O thread had for "r" was delivered by now
    assert rec.events == []


@pytest.mark.timeout(30)
def test_set_receiver_reattaches_without_replay(backend: LocalProcessBackend) -> None:
    first, second = Recorder(), Recorder()
    backend.start("r", ProcessSpec(["sh", "-c", "echo one; sleep 0.3; echo two"]), first)
    first.wait_for(lambda: first.data() == b"one\n")
    backend.set_receiver("r", second)
    second.wait_closed()
    assert second.data() == b"two\n"
    assert second.seqs()[0] == 2
    assert first.data() == b"one\n" and not first.closed
    with pytest.raises(errors.ProcessNotFound):
        backend.set_receiver("nope", second)


class Exploding(Recorder):
    def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
        super().on_output(seq, stream, data)
        raise RuntimeError("receiver bug")


@pytest.mark.timeout(30)
def test_receiver_exception_is_logged_and_delivery_goes_on(
    backend: LocalProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Exploding()
    with caplog.at_level(logging.ERROR, logger="execsdk"):
        backend.start("x", ProcessSpec(["sh", "-c", "echo a; sleep 0.05; echo b"]), rec)
        rec.wait_closed()
    assert rec.data() == b"a\nb\n"
    assert "receiver bug" in caplog.text


@pytest.mark.timeout(30)
def test_waiter_thread_fallback_without_pidfd(backend: LocalProcessBackend) -> None:
    backend._use_pidfd = False
    rec = run(backend, ["sh", "-c", "echo w; exit 5"])
    assert rec.data() == b"w\n" and rec.exit_code() == 5
    rec = Recorder()
    backend.start("k", ProcessSpec(["sleep", "30"]), rec)
    assert backend.terminate("k") is True
    rec.wait_closed()
    assert rec.exit_code() == 137


# --------------------------------------------------------------------------- scale


@pytest.mark.timeout(60)
def test_64mib_interleaved_stdout_and_stderr_are_byte_exact(
    backend: LocalProcessBackend,
) -> None:
    blocks, size = 512, 65536  # 32 MiB per stream
    code = (
        "import sys\n"
        "o, e = sys.stdout.buffer, sys.stderr.buffer\n"
        f"for i in range({blocks}):\n"
        f"    o.write((b'O%07d' % i) * {size // 8})\n"
        f"    e.write((b'E%07d' % i) * {size // 8})\n"
        "o.flush(); e.flush()\n"
    )
    t0 = time.monotonic()
    rec = run(backend, [PY, "-c", code], timeout=50)
    elapsed = time.monotonic() - t0
    expect_out = b"".join((b"O%07d" % i) * (size // 8) for i in range(blocks))
    expect_err = b"".join((b"E%07d" % i) * (size // 8) for i in range(blocks))
    assert rec.data("stdout") == expect_out
    assert rec.data("stderr") == expect_err
    assert rec.seqs() == list(range(1, len(rec.events) + 1))
    assert elapsed < 15, elapsed


@pytest.mark.timeout(120)
def test_200_concurrent_processes_on_one_backend(backend: LocalProcessBackend) -> None:
    n = 200
    recs = {f"p{i}": Recorder() for i in range(n)}
    script = 'read x; echo "$0 $x"'

    def starter(ids: list[str]) -> None:
        for pid in ids:
            spec = ProcessSpec(["sh", "-c", script, pid], pipe_stdin=True)
            backend.start(pid, spec, recs[pid])

    ids = list(recs)
    threads = [threading.Thread(target=starter, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.running_count() == n  # all alive at once, each waiting for its line
    for pid in ids:
        assert backend.write(pid, b"go\n") == "accepted"
    for pid, rec in recs.items():
        rec.wait_closed(60)
        assert rec.data() == f"{pid} go\n".encode()
        assert rec.exit_code() == 0
    assert backend.running_count() == 0
    callers = set().union(*(rec.threads for rec in recs.values()))
    assert len(callers) == 1 and callers.pop().startswith("execsdk-local-io-")  # one I/O thread


@pytest.mark.timeout(60)
def test_close_kills_everything_and_leaves_no_zombie() -> None:
    b = LocalProcessBackend()
    recs = [Recorder() for _ in range(5)]
    for i, rec in enumerate(recs[:3]):
        b.start(f"s{i}", ProcessSpec(["sleep", "100"]), rec)
    b.start("cat", ProcessSpec(["cat"], pipe_stdin=True), recs[3])
    b.start("tty", ProcessSpec(["sh", "-c", "sleep 100 & sleep 100"], tty=True), recs[4])
    pids = [b.pid(pid) for pid in ["s0", "s1", "s2", "cat", "tty"]]
    assert all(p is not None for p in pids)
    t0 = time.monotonic()
    b.close()
    assert time.monotonic() - t0 < 5
    b.close()  # idempotent
    for rec in recs:
        assert rec.closed and rec.exit_code() == 137
    for pid in pids:
        assert pid is not None
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped by the backend
    zombies = [c for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    assert not zombies
    assert not [t for t in _io_threads() if t.is_alive()]
    with pytest.raises(errors.ConnectionClosed):
        b.start("late", ProcessSpec(["true"]), Recorder())


@pytest.mark.timeout(30)
def test_close_from_inside_a_receiver_does_not_deadlock() -> None:
    b = LocalProcessBackend()

    class Closer(Recorder):
        def on_exited(self, seq: int, exit_code: int) -> None:
            super().on_exited(seq, exit_code)
            b.close()

    rec = Closer()
    b.start("c", ProcessSpec(["true"]), rec)
    rec.wait_for(lambda: rec.exit_code() == 0)
    b.close()  # joins the I/O thread the receiver asked to stop
    assert not [t for t in _io_threads() if t.is_alive()]


@pytest.mark.timeout(30)
def test_close_reports_lost_when_an_escaped_child_holds_the_output() -> None:
    b = LocalProcessBackend()
    rec = Recorder()
    # setsid puts the sleeper in a session of its own, out of reach of the group kill.
    b.start("esc", ProcessSpec(["sh", "-c", "setsid sleep 100 & echo $!; exit 0"]), rec)
    escaped = 0
    try:
        rec.wait_for(lambda: b"\n" in rec.data() and rec.exit_code() is not None)
        escaped = int(rec.data().decode())
        # setsid runs in the background job: wait until it did.
        wait_until(lambda: os.getsid(escaped) == escaped, 5, "setsid did not run")
        t0 = time.monotonic()
        b.close(timeout=0.5)
        assert time.monotonic() - t0 < 3
        assert isinstance(rec.lost, errors.ConnectionClosed)
        assert not rec.closed
    finally:
        if escaped:
            os.kill(escaped, signal.SIGKILL)
        b.close()


# --------------------------------------------------------------------------- throughput


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_throughput_256mib_stdout_to_noop_receiver() -> None:
    size = 256 * 1024 * 1024

    class Sink(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
            self.n += len(data)

    with LocalProcessBackend() as b:
        sink = Sink()
        t0 = time.perf_counter()
        b.start("big", ProcessSpec(["head", "-c", str(size), "/dev/zero"]), sink)
        sink.wait_closed(100)
        elapsed = time.perf_counter() - t0
    assert sink.n == size
    print(f"256 MiB stdout: {size / 2**20 / elapsed:.0f} MiB/s")


# --------------------------------------------------------------------------- flow control


def _events_of(rec: Recorder, kind: str) -> list[tuple[object, ...]]:
    with rec.cond:
        return [e for e in rec.events if e[0] == kind]


@pytest.mark.timeout(30)
def test_paused_process_blocks_until_resumed_then_delivers_every_byte(
    backend: LocalProcessBackend,
) -> None:
    size = 10 * 1024 * 1024
    backend.pause_output()  # the whole backend: processes started later too
    assert backend.output_paused()
    rec = Recorder()
    backend.start("z", ProcessSpec(["head", "-c", str(size), "/dev/zero"]), rec)
    pid = backend.pid("z")
    assert pid is not None
    wait_until(lambda: _asleep_in(pid, "head"), 10, "head is not blocked writing its output")
    assert _alive(pid), "head finished although nobody read its pipe"
    assert rec.events == [] and backend.running_count() == 1
    backend.resume_output()
    assert not backend.output_paused()
    rec.wait_closed(20)
    assert rec.data() == bytes(size) and rec.exit_code() == 0
    assert rec.seqs() == list(range(1, len(rec.events) + 1))


@pytest.mark.timeout(30)
def test_pause_by_id_holds_only_that_process(backend: LocalProcessBackend) -> None:
    size = 8 * 1024 * 1024
    held, free = Recorder(), Recorder()
    backend.start("held", ProcessSpec(["head", "-c", str(size), "/dev/zero"]), held)
    backend.pause_output("held")
    backend.start("free", ProcessSpec(["head", "-c", str(size), "/dev/zero"]), free)
    assert backend.output_paused("held") and not backend.output_paused("free")
    free.wait_closed(20)
    assert free.data() == bytes(size)
    held_pid = backend.pid("held")
    assert held_pid is not None
    wait_until(lambda: _asleep_in(held_pid, "head"), 10, "held is not blocked writing")
    assert not held.closed and held.exit_code() is None
    assert len(held.data()) < size
    backend.resume_output("held")
    held.wait_closed(20)
    assert held.data() == bytes(size) and held.exit_code() == 0
    assert held.seqs() == list(range(1, len(held.events) + 1))


@pytest.mark.timeout(30)
def test_exit_while_paused_is_reported_and_closed_waits_for_the_output(
    backend: LocalProcessBackend,
) -> None:
    backend.pause_output()
    rec = Recorder()
    # 30000 bytes fit in the pipe, so the child exits although nobody reads.
    backend.start("e", ProcessSpec(["sh", "-c", "head -c 30000 /dev/zero; exit 3"]), rec)
    rec.wait_for(lambda: rec.exit_code() == 3)
    _io_round_trip(backend)  # wrong output or "closed" would have been delivered by now
    assert rec.events == [("exited", 1, 3)]
    state = backend.read("e")
    assert state.exited and state.exit_code == 3 and not state.closed and state.chunks == ()
    backend.resume_output()
    rec.wait_closed()
    assert rec.data() == bytes(30000)
    assert rec.seqs() == list(range(1, len(rec.events) + 1))
    assert rec.events[-1][0] == "closed"
    assert backend.read("e").closed


@pytest.mark.timeout(30)
def test_paused_tty_process_blocks_until_resumed(backend: LocalProcessBackend) -> None:
    size = 1024 * 1024
    backend.pause_output()
    rec = Recorder()
    backend.start("t", ProcessSpec(["head", "-c", str(size), "/dev/zero"], tty=True), rec)
    pid = backend.pid("t")
    assert pid is not None
    wait_until(lambda: _asleep_in(pid, "head"), 10, "head is not blocked writing to the tty")
    assert _alive(pid) and rec.events == []
    backend.resume_output()
    rec.wait_closed(20)
    assert rec.data("pty") == bytes(size) and rec.exit_code() == 0


@pytest.mark.timeout(30)
def test_close_reads_paused_output_so_processes_close() -> None:
    b = LocalProcessBackend()
    rec = Recorder()
    try:
        b.pause_output()
        b.start("z", ProcessSpec(["head", "-c", str(10 * 1024 * 1024), "/dev/zero"]), rec)
        pid = b.pid("z")
        assert pid is not None
        wait_until(lambda: _asleep_in(pid, "head"), 10, "head is not blocked writing")
        t0 = time.monotonic()
        b.close()
        assert time.monotonic() - t0 < 3
    finally:
        b.close()
    assert rec.closed and rec.lost is None and rec.exit_code() == 137
    assert rec.events[-1][0] == "closed"


@pytest.mark.timeout(60)
def test_pause_and_resume_racing_from_threads_lose_nothing(backend: LocalProcessBackend) -> None:
    size = 16 * 1024 * 1024
    stop = threading.Event()
    stop_lock = threading.Lock()

    class Pauser(Recorder):
        """Pauses from the I/O thread itself, the way the server's outbox does."""

        def on_output(self, seq: int, stream: Stream, data: bytes) -> None:
            super().on_output(seq, stream, data)
            if seq % 97 == 0:
                with stop_lock:
                    if not stop.is_set():
                        backend.pause_output("r")

    def toggler() -> None:
        while not stop.is_set():
            backend.resume_output("r")
            backend.pause_output()
            time.sleep(0.0005)  # the racing pace: pauses and resumes land at varied moments
            backend.resume_output()
            time.sleep(0.0005)

    rec = Pauser()
    backend.start("r", ProcessSpec(["head", "-c", str(size), "/dev/zero"]), rec)
    threads = [threading.Thread(target=toggler) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        rec.wait_for(lambda: rec.exit_code() is not None or len(rec.events) > 1000, 20)
    finally:
        with stop_lock:
            stop.set()
        for t in threads:
            t.join()
    assert rec.exit_code() is None, "the racing ended after the process: raise the size"
    backend.resume_output("r")
    backend.resume_output()
    rec.wait_closed(20)
    assert rec.data() == bytes(size) and rec.exit_code() == 0
    assert rec.seqs() == list(range(1, len(rec.events) + 1))
    assert len(_events_of(rec, "closed")) == 1


def test_pause_unknown_id_raises_process_not_found(backend: LocalProcessBackend) -> None:
    for call in (backend.pause_output, backend.resume_output, backend.output_paused):
        with pytest.raises(errors.ProcessNotFound):
            call("nope")
    backend.resume_output()  # nothing paused, no I/O thread yet: a no-op
    assert not backend.output_paused()
