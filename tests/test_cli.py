"""The ``execsdk`` command line, run for real as a subprocess.

Commands go to the embedded default server (no ``--url``), to our own WebSocket server and to a
real codex 0.169 server. Terminal behaviour (progress bar, ``shell``) is checked under a real
pseudo-terminal from the :mod:`pty` module.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.servers import ServerHandle, start_kind, start_ours
from tests.waiting import eventually, pid_gone

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "execsdk"]
TOKEN = "cli-test-token-5f2b9c"


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EXECSDK_URL", "EXECSDK_TOKEN")}
    env.update(extra or {})
    return env


def cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m execsdk ARGS`` with pipes everywhere (stdin empty)."""
    return subprocess.run(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=_env(env),
        cwd=cwd,
        timeout=timeout,
    )


def _read_master(fd: int, until: float, stop: bytes | None = None) -> bytes:
    """Read a pty master until EOF/EIO, the deadline, or ``stop`` appears."""
    data = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every slave end is closed
            break
        if not chunk:
            break
        data += chunk
        if stop is not None and stop in data:
            break
    return data


class PtyRun:
    """The CLI with some of its standard streams on a fresh pseudo-terminal.

    Thread-safety: one test thread.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin_tty: bool,
        stdout_tty: bool,
        stderr_tty: bool,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.master, slave = pty.openpty()
        if size is not None:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdin=slave if stdin_tty else subprocess.DEVNULL,
            stdout=slave if stdout_tty else subprocess.PIPE,
            stderr=slave if stderr_tty else subprocess.PIPE,
            env=_env(),
            start_new_session=True,
        )
        os.close(slave)

    def read(self, timeout: float, stop: bytes | None = None) -> bytes:
        return _read_master(self.master, time.monotonic() + timeout, stop)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30) -> tuple[int, bytes, bytes, bytes]:
        """(exit status, terminal output, piped stdout, piped stderr)."""
        term = self.read(timeout)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, term, out or b"", err or b""

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture(scope="module")
def ours() -> Iterator[ServerHandle]:
    with start_ours() as handle:
        yield handle


@pytest.fixture(scope="module")
def codex() -> Iterator[ServerHandle]:
    with start_kind("codex-0.169.0") as handle:
        yield handle


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Path]]:
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with start_ours(extra_args=["--ws-token-file", str(token_file)]) as handle:
        yield handle, token_file


def _stderr_lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return proc.stderr.decode().strip().splitlines()


# --------------------------------------------------------------------------- run

SCRIPT = "echo out; echo err >&2; exit 3"


def test_run_embedded_streams_separated_and_returns_exit_code() -> None:
    proc = cli("run", "--", "sh", "-c", SCRIPT)
    assert proc.returncode == 3
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"


def test_run_against_codex_with_url(codex: ServerHandle) -> None:
    proc = cli("run", "--url", codex.url, "--", "sh", "-c", SCRIPT)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"


def test_run_url_from_environment_variable(ours: ServerHandle, tmp_path: Path) -> None:
    proc = cli(
        "run", "--cwd", str(tmp_path), "-e", "GREETING=hi there", "--", "sh", "-c",
        'pwd; echo "$GREETING"',
        env={"EXECSDK_URL": ours.url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [str(tmp_path), "hi there"]


def test_run_tty_gives_the_command_a_terminal(ours: ServerHandle) -> None:
    proc = cli("--url", ours.url, "run", "--tty", "--", "sh", "-c", "test -t 1 && echo tty")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"tty\r\n"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_run_output_is_flushed_live_and_ctrl_c_interrupts_the_remote_command(
    ours: ServerHandle,
) -> None:
    script = 'trap "echo got-sigint; exit 5" INT; echo first; while :; do sleep 0.1; done'
    popen = subprocess.Popen(
        [*CLI, "run", "--url", ours.url, "--", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        # As from a terminal: a test run started in the background (`cmd &` in a script)
        # hands its children SIGINT ignored, and Python then never installs its handler.
        preexec_fn=_default_sigint,
    )
    try:
        assert popen.stdout is not None
        fd = popen.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], 15)
        assert ready, "no output while the command was still running"
        assert os.read(fd, 100) == b"first\n"
        popen.send_signal(signal.SIGINT)  # what Ctrl-C does
        out, err = popen.communicate(timeout=15)
        assert popen.returncode == 130, err
        assert out == b"got-sigint\n"  # the remote shell got SIGINT; its last words arrived
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.communicate(timeout=10)


def _gone(pid: int, timeout: float) -> bool:
    return eventually(lambda: pid_gone(pid), timeout, interval=0.05)


def test_sigterm_stops_the_remote_command_too(ours: ServerHandle) -> None:
    popen = subprocess.Popen(
        [*CLI, "run", "--url", ours.url, "--", "sh", "-c", "echo $$; exec sleep 30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert popen.stdout is not None
        remote_pid = int(popen.stdout.readline())
        popen.terminate()
        popen.communicate(timeout=15)
        assert popen.returncode == 128 + signal.SIGTERM
        # Killed now, not left to the server's 80 s session grace.
        assert _gone(remote_pid, 10)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.communicate(timeout=10)


def test_run_into_a_closed_pipe_exits_quietly(ours: ServerHandle) -> None:
    popen = subprocess.Popen(
        [*CLI, "run", "--url", ours.url, "--", "yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert popen.stdout is not None
        assert popen.stdout.read(1000) == b"y\n" * 500
        popen.stdout.close()  # as `| head` does
        assert popen.wait(timeout=20) == 141
        assert popen.stderr is not None and popen.stderr.read() == b""
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(timeout=10)
        if popen.stderr is not None:
            popen.stderr.close()


def test_run_without_command_is_a_usage_error() -> None:
    proc = cli("run", "--")
    assert proc.returncode == 2
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("execsdk: error: run needs a command")


# --------------------------------------------------------------------------- errors and tokens


def test_bad_url_prints_one_line_and_exits_1() -> None:
    proc = cli("run", "--url", "ws://127.0.0.1:1", "--", "true")
    assert proc.returncode == 1
    lines = _stderr_lines(proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith("execsdk: error: ") and "ws://127.0.0.1:1" in lines[0]
    assert "Traceback" not in proc.stderr.decode()


def test_bad_url_with_verbose_shows_the_traceback() -> None:
    proc = cli("-v", "info", "--url", "ws://127.0.0.1:1")
    assert proc.returncode == 1
    text = proc.stderr.decode()
    assert "Traceback (most recent call last)" in text and "ConnectError" in text
    assert text.strip().splitlines()[-1].startswith("execsdk: error: ")


def test_token_from_token_file(token_server: tuple[ServerHandle, Path]) -> None:
    server, token_file = token_server
    ok = cli("run", "--url", server.url, "--token-file", str(token_file), "--", "echo", "in")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"in\n"
    refused = cli("run", "--url", server.url, "--", "echo", "in")
    assert refused.returncode == 1
    lines = _stderr_lines(refused)
    assert len(lines) == 1 and "401" in lines[0] and "token" in lines[0]


def test_token_from_environment_variable(token_server: tuple[ServerHandle, Path]) -> None:
    server, _ = token_server
    proc = cli("info", "--json", "--url", server.url, env={"EXECSDK_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["url"] == server.url


def test_token_on_the_command_line_is_refused_without_echoing_it() -> None:
    proc = cli("run", "--token", "s3cr3t-value", "--", "true")
    assert proc.returncode == 2
    text = proc.stderr.decode()
    assert "--token-file" in text and "s3cr3t-value" not in text


def test_debug_logging_never_shows_token_or_file_contents(
    token_server: tuple[ServerHandle, Path], tmp_path: Path
) -> None:
    server, token_file = token_server
    secret = b"FILE-CONTENTS-do-not-log-" + os.urandom(8).hex().encode()
    src = tmp_path / "secret.txt"
    src.write_bytes(secret)
    dst = tmp_path / "remote-secret.txt"
    put = cli("-vv", "fs", "put", str(src), str(dst), "--url", server.url,
              "--token-file", str(token_file))  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert dst.read_bytes() == secret
    text = put.stderr.decode()
    assert " DEBUG execsdk" in text or " INFO execsdk" in text  # logging is on
    assert TOKEN not in text
    assert secret.decode() not in text
    assert secret.hex() not in text


# --------------------------------------------------------------------------- fs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fs_put_get_round_trip_of_a_5mb_file(ours: ServerHandle, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * 1000 * 1000))
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    put = cli("fs", "put", str(src), str(remote_dir), "--url", ours.url)
    assert put.returncode == 0, put.stderr
    assert put.stderr == b""  # stderr is not a terminal: no progress bar
    assert _sha256(remote_dir / "big.bin") == _sha256(src)  # put into an existing directory
    back = tmp_path / "back.bin"
    get = cli("fs", "get", str(remote_dir / "big.bin"), str(back), "--url", ours.url)
    assert get.returncode == 0, get.stderr
    assert _sha256(back) == _sha256(src)


def test_fs_put_get_round_trip_of_a_tree(ours: ServerHandle, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "empty").mkdir()
    files = {"top.txt": b"top\n", "a/one.bin": os.urandom(3000), "a/b/two.txt": b"two"}
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    remote = tmp_path / "remote-tree"
    assert cli("fs", "put", str(tree), str(remote), "--url", ours.url).returncode == 0
    assert (remote / "empty").is_dir()
    local = tmp_path / "local"
    local.mkdir()
    get = cli("fs", "get", str(remote), str(local), "--url", ours.url)
    assert get.returncode == 0, get.stderr
    for rel, data in files.items():
        assert (local / "remote-tree" / rel).read_bytes() == data  # got into the directory
    assert (local / "remote-tree" / "empty").is_dir()


def test_fs_ls_cat_mkdir_rm(ours: ServerHandle, tmp_path: Path) -> None:
    url = ("--url", ours.url)
    base = tmp_path / "work"
    assert cli("fs", "mkdir", "-p", str(base / "sub" / "deeper"), *url).returncode == 0
    assert (base / "sub" / "deeper").is_dir()
    (base / "hello.txt").write_bytes(b"hello\x00world\n")

    ls = cli("fs", "ls", str(base), *url)
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.decode().splitlines() == ["hello.txt", "sub/"]
    long = cli("fs", "ls", "-l", str(base), *url)
    lines = long.stdout.decode().splitlines()
    assert (
        lines[0].startswith("-") and lines[0].split()[1] == "12" and lines[0].endswith("hello.txt")
    )
    assert lines[1].startswith("d") and lines[1].endswith("sub/")

    cat = cli("fs", "cat", str(base / "hello.txt"), *url)
    assert cat.returncode == 0 and cat.stdout == b"hello\x00world\n"

    missing = cli("fs", "cat", str(base / "nope.txt"), *url)
    assert missing.returncode == 1
    assert _stderr_lines(missing)[0].startswith("execsdk: error: ")
    assert "nope.txt" in missing.stderr.decode()

    again = cli("fs", "mkdir", str(base / "sub"), *url)
    assert again.returncode == 1 and "exists" in again.stderr.decode().lower()

    refused = cli("fs", "rm", str(base / "sub"), *url)
    assert refused.returncode == 1 and "use -r" in refused.stderr.decode()
    assert cli("fs", "rm", str(base / "hello.txt"), *url).returncode == 0
    assert cli("fs", "rm", "-r", str(base / "sub"), *url).returncode == 0
    assert sorted(os.listdir(base)) == []
    assert cli("fs", "rm", "-f", str(base / "gone"), *url).returncode == 0


def test_fs_stat_human_and_json(ours: ServerHandle, tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_bytes(b"x" * 2048)
    human = cli("fs", "stat", str(target), "--url", ours.url)
    assert human.returncode == 0, human.stderr
    text = human.stdout.decode()
    assert f"path:     {target}" in text and "type:     file" in text
    assert "size:     2048 (2.0 KiB)" in text
    data = json.loads(cli("fs", "stat", "--json", str(tmp_path), "--url", ours.url).stdout)
    assert data["type"] == "directory" and data["path"] == str(tmp_path)
    assert data["modified"] is not None and data["is_symlink"] is False


def test_info_json(ours: ServerHandle) -> None:
    proc = cli("info", "--json", "--url", ours.url)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["url"] == ours.url and data["embedded"] is False
    assert data["generation"] == "G2"
    assert len(data["session_id"]) >= 8
    assert "execsdk/closeStdin" in data["capabilities"]
    assert data["os"] == "linux" and data["cwd"].startswith("/")


# --------------------------------------------------------------------------- terminals


def _put_under_pty(url: str, src: Path, dst: Path, *extra: str) -> tuple[int, bytes]:
    run = PtyRun(
        ["fs", "put", *extra, str(src), str(dst), "--url", url],
        stdin_tty=False,
        stdout_tty=False,
        stderr_tty=True,
    )
    try:
        code, term, out, _ = run.finish()
    finally:
        run.close()
    assert out == b""
    return code, term


def test_progress_bar_on_a_terminal_only(ours: ServerHandle, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * 1000 * 1000))
    code, term = _put_under_pty(ours.url, src, tmp_path / "copy1.bin")
    assert code == 0
    text = term.decode()
    assert "\r" in text and "put big.bin [" in text and "100%" in text and "MiB" in text
    assert _sha256(tmp_path / "copy1.bin") == _sha256(src)

    code, term = _put_under_pty(ours.url, src, tmp_path / "copy2.bin", "--quiet")
    assert code == 0 and b"%" not in term
    # Small files never get a bar, even on a terminal.
    small = tmp_path / "small.txt"
    small.write_bytes(b"tiny")
    code, term = _put_under_pty(ours.url, small, tmp_path / "copy3.txt")
    assert code == 0 and term == b""


@pytest.mark.skipif(shutil.which("stty") is None, reason="needs stty")
def test_shell_through_a_pty_runs_commands_and_returns_exit_code() -> None:
    run = PtyRun(["shell"], stdin_tty=True, stdout_tty=True, stderr_tty=True, size=(40, 120))
    try:
        # Any output (the prompt) means raw mode is on: the CLI copies output only after that.
        first = run.read(20, stop=b"")
        assert first, "the remote shell printed no prompt"
        run.write(b"echo hi; stty size; exit 7\n")
        code, term, _, _ = run.finish()
    finally:
        run.close()
    lines = [line.strip() for line in (first + term).decode(errors="replace").splitlines()]
    assert "hi" in lines  # the output line, not the echo of the typed command
    assert "40 120" in lines  # the remote pty got the local window size
    assert code == 7


def test_shell_refuses_without_a_terminal() -> None:
    proc = cli("shell")
    assert proc.returncode == 1
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("execsdk: error: shell needs a terminal")


# --------------------------------------------------------------------------- logging hygiene

PACKAGE = Path(__file__).resolve().parents[1] / "execsdk"
_FORBIDDEN_CALLS = {"print", "basicConfig", "addHandler", "StreamHandler", "FileHandler"}


def test_library_modules_never_print_or_install_log_handlers() -> None:
    import ast

    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "cli" in path.parents:
            continue  # the command line owns stdout/stderr and configures logging
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in _FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}()")
    assert found == []


def test_using_the_library_installs_no_log_handlers(ours: ServerHandle) -> None:
    code = (
        "import logging, sys, execsdk\n"
        f"with execsdk.connect({ours.url!r}) as env:\n"
        "    assert env.run(['echo', 'x']).stdout == b'x\\n'\n"
        "    path = env.info.temp_dir + '/execsdk-cli-log-check'\n"
        "    env.fs.write_bytes(path, b'y')\n"
        "    env.fs.remove(path)\n"
        "names = [n for n in logging.root.manager.loggerDict if n.startswith('execsdk')]\n"
        "handlers = [h for n in ['', *names] for h in logging.getLogger(n).handlers]\n"
        "sys.stderr.write(repr(handlers))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and proc.stderr == b"[]"
