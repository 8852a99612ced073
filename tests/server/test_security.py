"""Security of ``execsdk serve``: authentication, safe defaults, quiet logs, ``--root``.

Everything runs against real server processes over real sockets: our ``python -m execsdk
serve`` and, for the authentication rules, codex 0.169's ``exec-server`` side by side (the same
token must get the same answer from both). JWTs are minted here with hmac/hashlib, not with the
server's own code.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import posixpath
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import execsdk
from execsdk.errors import ConnectError
from tests.servers import (
    CODEX_G2,
    RawConn,
    ServerHandle,
    b64,
    require_binary,
    start_codex,
    start_ours,
    unb64,
)

pytestmark = pytest.mark.timeout(120)

SERVE = [sys.executable, "-m", "execsdk", "serve"]


def _upgrade(handle: ServerHandle, headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and body of a WebSocket upgrade request carrying ``headers``."""
    host, port = handle.host_port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(
            "GET",
            "/",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
                **headers,
            },
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _run_serve(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run ``execsdk serve`` expecting it to refuse to start (it would otherwise block)."""
    return subprocess.run(
        [*SERVE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def _both(args: list[str]) -> Iterator[dict[str, ServerHandle]]:
    """Our server and codex 0.169 started with the same options."""
    require_binary(CODEX_G2)
    handles: dict[str, ServerHandle] = {}
    try:
        handles["ours"] = start_ours(extra_args=args)
        handles["codex"] = start_codex(CODEX_G2, extra_args=args)
        yield handles
    finally:
        for handle in handles.values():
            handle.stop()


# --------------------------------------------------------------------------- capability token

TOKEN = "cap-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def token_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerHandle]]:
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(f"  {TOKEN} \n")  # surrounding whitespace is trimmed by both
    with _both(["--ws-auth", "capability-token", "--ws-token-file", str(token_file)]) as handles:
        yield handles


TOKEN_CASES: list[tuple[str, dict[str, str], int]] = [
    ("right", {"Authorization": f"Bearer {TOKEN}"}, 101),
    ("scheme-in-lower-case", {"Authorization": f"bearer {TOKEN}"}, 101),
    ("extra-spaces", {"Authorization": f"Bearer   {TOKEN}  "}, 101),
    ("missing", {}, 401),
    ("wrong", {"Authorization": "Bearer " + "x" * len(TOKEN)}, 401),
    ("prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}, 401),
    ("longer", {"Authorization": f"Bearer {TOKEN}0"}, 401),
    ("basic-scheme", {"Authorization": f"Basic {TOKEN}"}, 401),
    ("no-credential", {"Authorization": "Bearer"}, 401),
    ("empty-credential", {"Authorization": "Bearer   "}, 401),
    ("token-alone", {"Authorization": TOKEN}, 401),
]


@pytest.mark.parametrize(
    ("headers", "status"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES]
)
def test_capability_token_answers_match_codex(
    token_servers: dict[str, ServerHandle], headers: dict[str, str], status: int
) -> None:
    answers = {name: _upgrade(handle, headers) for name, handle in token_servers.items()}
    assert answers["ours"][0] == answers["codex"][0] == status, answers
    if status == 401:
        # A fixed phrase: nothing about the expected token (nor an echo of the one sent).
        body = answers["ours"][1]
        assert body == answers["codex"][1]
        assert TOKEN[4:12].encode() not in body and b"xxxx" not in body


def test_capability_token_session_works_end_to_end(
    token_servers: dict[str, ServerHandle],
) -> None:
    with RawConn(token_servers["ours"].url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        c.handshake()
        assert c.result("environment/status") == {"status": "ready"}


def test_token_sha256_option_accepts_the_token(tmp_path: Path) -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    with start_ours(extra_args=["--ws-auth", "capability-token", "--ws-token-sha256", digest]) as h:
        assert _upgrade(h, {"Authorization": f"Bearer {TOKEN}"})[0] == 101
        assert _upgrade(h, {"Authorization": "Bearer nope"})[0] == 401


# --------------------------------------------------------------------------- signed bearer (JWT)

SECRET = secrets.token_urlsafe(40)  # 54 characters, > 32 bytes
ISSUER, AUDIENCE = "execsdk-tests", "exec-server"
SKEW = 20


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(
    claims: dict[str, Any] | bytes,
    *,
    header: dict[str, Any] | None = None,
    key: str = SECRET,
    digest: Callable[..., Any] = hashlib.sha256,
) -> str:
    """An HS256 JWT (or whatever ``header``/``digest`` make of it) signed with ``key``."""
    head = _b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    raw = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    body = _b64url(raw)
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def _padded(now: int) -> str:
    for filler in ("a", "ab", "abc"):
        claims = {"exp": now + 300, "iss": ISSUER, "aud": AUDIENCE, "f": filler}
        body = _b64url(json.dumps(claims).encode())
        if len(body) % 4:
            break
    head = _b64url(b'{"alg":"HS256"}')
    body += "=" * (-len(body) % 4)
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def _good(now: int, **extra: Any) -> dict[str, Any]:
    return {"exp": now + 300, "iss": ISSUER, "aud": AUDIENCE, "sub": "tests", "iat": now, **extra}


JWT_CASES: list[tuple[str, Callable[[int], str], int]] = [
    ("valid", lambda now: mint(_good(now)), 101),
    ("audience-in-list", lambda now: mint(_good(now, aud=["x", AUDIENCE])), 101),
    ("expired-within-skew", lambda now: mint(_good(now, exp=now - 5)), 101),
    ("not-before-within-skew", lambda now: mint(_good(now, nbf=now + 5)), 101),
    ("unknown-header-members", lambda now: mint(_good(now), header={"alg": "HS256", "z": 1}), 101),
    ("expired", lambda now: mint(_good(now, exp=now - 120)), 401),
    ("not-yet-valid", lambda now: mint(_good(now, nbf=now + 120)), 401),
    ("no-exp", lambda now: mint({"iss": ISSUER, "aud": AUDIENCE}), 401),
    ("no-claims", lambda now: mint({}), 401),
    ("float-exp", lambda now: mint(_good(now, exp=now + 300.5)), 401),
    ("string-exp", lambda now: mint(_good(now, exp=str(now + 300))), 401),
    ("boolean-exp", lambda now: mint(_good(now, exp=True)), 401),
    ("exp-beyond-i64", lambda now: mint(_good(now, exp=2**63)), 401),
    ("wrong-issuer", lambda now: mint(_good(now, iss="someone-else")), 401),
    ("missing-issuer", lambda now: mint({"exp": now + 300, "aud": AUDIENCE}), 401),
    ("wrong-audience", lambda now: mint(_good(now, aud="elsewhere")), 401),
    ("missing-audience", lambda now: mint({"exp": now + 300, "iss": ISSUER}), 401),
    ("numeric-audience", lambda now: mint(_good(now, aud=5)), 401),
    ("wrong-key", lambda now: mint(_good(now), key="k" * 40), 401),
    ("alg-none", lambda now: mint(_good(now), header={"alg": "none"}), 401),
    (
        "alg-hs512",
        lambda now: mint(_good(now), header={"alg": "HS512"}, digest=hashlib.sha512),
        401,
    ),
    ("tampered-claims", lambda now: _tamper(mint(_good(now))), 401),
    ("padded-base64", _padded, 401),
    ("signature-padded", lambda now: mint(_good(now)) + "=", 401),
    ("four-parts", lambda now: mint(_good(now)) + ".e30", 401),
    ("duplicate-exp", lambda now: mint(b'{"exp": 1, "exp": %d}' % (now + 300)), 401),
    ("claims-not-an-object", lambda now: mint(b"[1, 2]"), 401),
]


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "admin"
    return f"{head}.{_b64url(json.dumps(claims).encode())}.{sig}"


@pytest.fixture(scope="module")
def jwt_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerHandle]]:
    secret_file = tmp_path_factory.mktemp("jwt") / "secret"
    secret_file.write_text(SECRET + "\n")
    args = [
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        str(secret_file),
        "--ws-issuer",
        ISSUER,
        "--ws-audience",
        AUDIENCE,
        "--ws-max-clock-skew-seconds",
        str(SKEW),
    ]
    with _both(args) as handles:
        yield handles


@pytest.mark.parametrize(
    ("make", "status"), [c[1:] for c in JWT_CASES], ids=[c[0] for c in JWT_CASES]
)
def test_signed_bearer_answers_match_codex(
    jwt_servers: dict[str, ServerHandle], make: Callable[[int], str], status: int
) -> None:
    token = make(int(time.time()))
    headers = {"Authorization": f"Bearer {token}"}
    answers = {name: _upgrade(handle, headers) for name, handle in jwt_servers.items()}
    assert answers["ours"][0] == answers["codex"][0] == status, answers
    assert answers["ours"][1] == answers["codex"][1]  # the same fixed phrase (or nothing)


def test_signed_bearer_session_works_end_to_end(jwt_servers: dict[str, ServerHandle]) -> None:
    token = mint(_good(int(time.time())))
    with RawConn(jwt_servers["ours"].url, headers={"Authorization": f"Bearer {token}"}) as c:
        c.handshake()
        assert c.result("environment/status") == {"status": "ready"}


@pytest.mark.parametrize("server", ["ours", "codex"])
def test_execsdk_client_sends_the_jwt_as_bearer(
    jwt_servers: dict[str, ServerHandle], server: str
) -> None:
    url = jwt_servers[server].url
    with execsdk.connect(url, token=mint(_good(int(time.time()))), timeout=30) as env:
        assert env.run(["echo", "in"], text=True, timeout=20).stdout == "in\n"
    expired = mint(_good(int(time.time()), exp=int(time.time()) - 3600))
    with pytest.raises(ConnectError):
        execsdk.connect(url, token=expired, connect_timeout=10)


def test_signed_bearer_without_issuer_or_audience_options_ignores_those_claims(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    args = ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", str(secret_file)]
    now = int(time.time())
    with _both(args) as handles:
        for claims, status in (
            ({"exp": now + 60, "iss": "anyone", "aud": ["whoever"]}, 101),
            ({"exp": now + 60}, 101),
            ({"exp": now - 10}, 101),  # the default leeway is 30 s, as codex
            ({"exp": now - 90}, 401),
        ):
            headers = {"Authorization": f"Bearer {mint(claims)}"}
            got = {name: _upgrade(h, headers)[0] for name, h in handles.items()}
            assert got == {"ours": status, "codex": status}, claims


@pytest.mark.parametrize("server", ["ours", "codex"])
def test_short_shared_secret_refuses_to_start(tmp_path: Path, server: str) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 31 + "\n")  # 31 bytes once trimmed
    args = [
        "--listen",
        "ws://127.0.0.1:0",
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        str(secret_file),
    ]
    if server == "ours":
        proc = _run_serve(args)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "at least 32 bytes" in lines[0], proc.stderr
        assert "s" * 31 not in proc.stderr  # the secret itself is never echoed
    else:
        binary = require_binary(CODEX_G2)
        proc = subprocess.run(
            [str(binary), "exec-server", *args],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode != 0
        assert "32" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ws-auth", "signed-bearer-token"], "--ws-shared-secret-file"),
        (["--ws-issuer", "x"], "signed-bearer-token"),
        (["--ws-auth", "capability-token"], "--ws-token-file"),
        (["--ws-token-file", "relative/token"], "absolute"),
        (["--ws-token-sha256", "abc"], "64-character"),
    ],
    ids=["jwt-without-secret", "issuer-alone", "token-mode-without-token", "relative", "bad-hex"],
)
def test_bad_auth_options_exit_2_with_one_line(args: list[str], needle: str) -> None:
    proc = _run_serve(["--listen", "ws://127.0.0.1:0", *args])
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


# --------------------------------------------------------------------------- safe defaults


def test_default_listen_address_is_loopback() -> None:
    with contextlib.closing(_ServeProcess([])) as proc:
        url = proc.first_line()
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", url


class _ServeProcess:
    """``execsdk serve`` with arbitrary options, ended with SIGTERM (then SIGKILL)."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            [*SERVE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def first_line(self) -> str:
        assert self.popen.stdout is not None
        return self.popen.stdout.readline().strip()

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.communicate(timeout=5)


@pytest.mark.parametrize("listen", ["ws://0.0.0.0:0", "ws://[::]:0", "ws://192.0.2.10:8765"])
def test_non_loopback_listen_without_auth_is_refused(listen: str) -> None:
    proc = _run_serve(["--listen", listen])
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen" in lines[0], proc.stderr


def test_non_loopback_listen_with_signed_bearer_is_allowed(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    args = ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", str(secret_file)]
    with contextlib.closing(_ServeProcess(["--listen", "ws://0.0.0.0:0", *args])) as proc:
        url = proc.first_line()
        port = urllib.parse.urlsplit(url).port
        assert url.startswith("ws://0.0.0.0:") and port
        local = f"ws://127.0.0.1:{port}"
        token = mint({"exp": int(time.time()) + 60})
        with RawConn(local, headers={"Authorization": f"Bearer {token}"}) as conn:
            assert "sessionId" in conn.handshake()


@pytest.mark.parametrize("origin", ["http://127.0.0.1", "null", "https://evil.example"])
def test_origin_header_is_refused_even_with_a_valid_token(
    token_servers: dict[str, ServerHandle], origin: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": origin}
    answers = {name: _upgrade(handle, headers)[0] for name, handle in token_servers.items()}
    assert answers == {"ours": 403, "codex": 403}


def test_debug_log_never_contains_the_token_or_file_contents(tmp_path: Path) -> None:
    token = "tok-" + secrets.token_hex(20)
    payload = "PAYLOAD-" + secrets.token_hex(20)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    target = tmp_path / "secret.txt"
    handle = start_ours(extra_args=["-vv", "--ws-token-file", str(token_file)])
    try:
        assert _upgrade(handle, {"Authorization": "Bearer wrong-" + token[4:]})[0] == 401
        with RawConn(handle.url, headers={"Authorization": f"Bearer {token}"}) as conn:
            conn.handshake()
            uri = f"file://{target}"
            assert conn.result("fs/writeFile", {"path": uri, "dataBase64": b64(payload)}) == {}
            assert (
                unb64(conn.result("fs/readFile", {"path": uri})["dataBase64"]) == payload.encode()
            )
            conn.result("fs/open", {"handleId": "h", "path": uri + ".2", "mode": "replace"})
            conn.result("fs/writeBlock", {"handleId": "h", "offset": 0, "chunk": b64(payload)})
            conn.result("fs/close", {"handleId": "h"})
            conn.start_process(
                "p",
                ["sh", "-c", 'cat "$1"; echo "$SECRET_VALUE"', "sh", str(target)],
                f"file://{tmp_path}",
                env={"PATH": os.environ["PATH"], "SECRET_VALUE": payload},
                pipeStdin=True,
            )
            conn.result("process/write", {"processId": "p", "chunk": b64(payload), "writeId": "w"})
            conn.wait_closed("p")
            assert payload.encode() in conn.output("p")
    finally:
        handle.stop()
    log_text = handle.stderr_text()
    assert "fs/writeFile" in log_text and "DEBUG" in log_text  # the log really is verbose
    for needle in (token, token[4:24], payload, payload[8:28]):
        assert needle not in log_text
    for encoded in (b64(payload), b64(payload + "\n"), base64.b64encode(token.encode()).decode()):
        assert encoded[:24] not in log_text and encoded[-16:] not in log_text


# --------------------------------------------------------------------------- --root confinement


class Layout:
    """The tree a confined server sees: ``root`` (served) next to ``outside`` (forbidden)."""

    def __init__(self, base: Path) -> None:
        self.base = Path(os.path.realpath(base))
        self.root = self.base / "root"
        self.outside = self.base / "outside"
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("outside secret")
        (self.outside / "deep").mkdir()
        (self.outside / "deep" / "x.txt").write_text("deep")
        self.root.mkdir()
        (self.root / "inside.txt").write_text("inside")
        (self.root / "sub").mkdir()
        (self.root / "sub" / "f.txt").write_text("f")
        (self.root / "link_in").symlink_to("sub")
        (self.root / "link_out").symlink_to("../outside")  # relative, leads out
        (self.root / "abs_link_out").symlink_to(self.outside / "secret.txt")
        (self.root / "dangling_out").symlink_to(self.outside / "created-through-link")
        (self.root / "sub" / "up_out").symlink_to("../../outside/deep")

    def outside_snapshot(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for path in sorted(self.base.rglob("*")):
            if self.root in path.parents or path == self.root:
                continue
            out[str(path)] = path.read_bytes() if path.is_file() else None
        return out


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Layout]]:
    layout = Layout(tmp_path_factory.mktemp("confine"))
    with start_ours(extra_args=["--root", str(layout.root)]) as handle:
        yield handle, layout


@pytest.fixture
def conn(confined: tuple[ServerHandle, Layout]) -> Iterator[RawConn]:
    with RawConn(confined[0].url) as c:
        c.handshake()
        yield c


@pytest.fixture
def layout(confined: tuple[ServerHandle, Layout]) -> Layout:
    return confined[1]


def _assert_outside(reply: dict[str, Any], what: str) -> None:
    assert "error" in reply, f"{what}: expected a refusal, got {reply!r}"
    assert reply["error"]["code"] == -32600, f"{what}: {reply['error']!r}"
    assert "outside root" in reply["error"]["message"], f"{what}: {reply['error']!r}"


def _method_params(uri: str, root_uri: str) -> list[tuple[str, dict[str, Any]]]:
    """Every path-taking method aimed at ``uri`` (each would touch it if allowed)."""
    walk_options = {
        "maxDepth": 2,
        "maxDirectories": 10,
        "maxEntries": 100,
        "followDirectorySymlinks": True,
    }
    return [
        ("fs/readFile", {"path": uri}),
        ("fs/writeFile", {"path": uri, "dataBase64": b64("pwned")}),
        ("fs/createDirectory", {"path": uri + "/newdir", "recursive": True}),
        ("fs/getMetadata", {"path": uri}),
        ("fs/readDirectory", {"path": uri}),
        ("fs/canonicalize", {"path": uri}),
        ("fs/walk", {"path": uri, "options": walk_options}),
        ("fs/open", {"handleId": "r", "path": uri, "mode": "read"}),
        ("fs/open", {"handleId": "w", "path": uri, "mode": "replace"}),
        (
            "fs/copy",
            {"sourcePath": root_uri + "/inside.txt", "destinationPath": uri, "recursive": False},
        ),
        (
            "process/start",
            {"processId": "escape", "argv": ["true"], "cwd": uri, "env": {}, "tty": False},
        ),
    ]


# (id, URI template, whether only the last component leads out: a link acted on as a link by
# fs/remove and by fs/copy's source is fine there)
HOSTILE: list[tuple[str, str, bool]] = [
    ("dotdot", "file://{root}/../outside/secret.txt", False),
    ("dotdot-deep", "file://{root}/sub/../../outside", False),
    ("absolute-elsewhere", "file://{base}/outside/secret.txt", False),
    ("etc-passwd", "file:///etc/passwd", False),
    ("percent-dotdot", "file://{root}/%2e%2e/outside/secret.txt", False),
    ("percent-dotdot-mixed-case", "file://{root}/%2E./outside", False),
    ("encoded-slashes", "file://{root}/sub%2F..%2F..%2Foutside%2Fsecret.txt", False),
    ("double-slashes", "file://{root}/..//outside//secret.txt", False),
    ("four-slashes", "file:///{base}/outside/secret.txt", False),
    ("localhost-host", "file://localhost{base}/outside/secret.txt", False),
    ("foreign-host", "file://evil.example{root}/inside.txt", False),
    ("nul-byte", "file://{root}/inside.txt%00/../../outside/secret.txt", False),
    ("relative-link-out", "file://{root}/link_out/secret.txt", False),
    ("link-in-subdir-out", "file://{root}/sub/up_out/x.txt", False),
    ("link-to-outside-dir", "file://{root}/link_out", True),
    ("absolute-link-out", "file://{root}/abs_link_out", True),
    ("dangling-link-out", "file://{root}/dangling_out", True),
]


@pytest.mark.parametrize(
    ("template", "last_is_link"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_path_is_refused_by_every_method(
    conn: RawConn, layout: Layout, template: str, last_is_link: bool
) -> None:
    before = layout.outside_snapshot()
    uri = template.format(root=layout.root, base=layout.base)
    root_uri = f"file://{layout.root}"
    calls = _method_params(uri, root_uri)
    if not last_is_link:
        calls.append(("fs/remove", {"path": uri, "recursive": True, "force": True}))
        for recursive in (False, True):
            copy = {"sourcePath": uri, "destinationPath": root_uri + "/c", "recursive": recursive}
            calls.append(("fs/copy", copy))
    for method, params in calls:
        _assert_outside(conn.call(method, params), f"{method} {uri}")
    assert layout.outside_snapshot() == before
    assert not os.path.lexists(layout.root / "c")


def test_environment_info_reports_the_root_as_cwd(conn: RawConn, layout: Layout) -> None:
    assert conn.init_result is not None
    assert conn.init_result["environmentInfo"]["cwd"] == f"file://{layout.root}"
    assert conn.result("environment/info")["cwd"] == f"file://{layout.root}"


def test_paths_inside_the_root_work(conn: RawConn, layout: Layout) -> None:
    root = f"file://{layout.root}"
    read = conn.result("fs/readFile", {"path": f"{root}/sub/../inside.txt"})
    assert unb64(read["dataBase64"]) == b"inside"
    assert (
        unb64(conn.result("fs/readFile", {"path": f"{root}/link_in/f.txt"})["dataBase64"]) == b"f"
    )
    canon = conn.result("fs/canonicalize", {"path": f"{root}/link_in"})
    assert canon == {"path": f"{root}/sub"}
    assert conn.result("fs/getMetadata", {"path": root})["isDirectory"] is True
    missing = conn.call("fs/readFile", {"path": f"{root}/no-such-file"})
    assert missing["error"]["code"] == -32004  # inside the root, errors stay what they were


def test_followed_symlink_inside_root_pointing_out_is_refused(
    conn: RawConn, layout: Layout
) -> None:
    _assert_outside(
        conn.call("fs/readFile", {"path": f"file://{layout.root}/abs_link_out"}), "readFile"
    )
    # The data never left: nothing of the outside file is in any reply.
    assert b"outside secret" not in json.dumps(conn.stashed()).encode()


def test_write_through_a_dangling_outward_link_creates_nothing(
    conn: RawConn, layout: Layout
) -> None:
    uri = f"file://{layout.root}/dangling_out"
    _assert_outside(conn.call("fs/writeFile", {"path": uri, "dataBase64": b64("x")}), "write")
    assert not (layout.outside / "created-through-link").exists()


def test_remove_of_an_outward_link_removes_only_the_link(conn: RawConn, layout: Layout) -> None:
    link = layout.root / "remove_me"
    link.symlink_to(layout.outside / "secret.txt")
    assert conn.result("fs/remove", {"path": f"file://{link}"}) == {}
    assert not os.path.lexists(link)
    assert (layout.outside / "secret.txt").read_text() == "outside secret"


def test_copy_of_an_outward_link_copies_the_link_not_the_data(
    conn: RawConn, layout: Layout
) -> None:
    source = f"file://{layout.root}/abs_link_out"
    destination = layout.root / "copied_link"
    params = {"sourcePath": source, "destinationPath": f"file://{destination}", "recursive": False}
    assert conn.result("fs/copy", params) == {}
    assert destination.is_symlink()
    _assert_outside(conn.call("fs/readFile", {"path": f"file://{destination}"}), "read copy")
    destination.unlink()


def test_directory_copy_into_a_tree_with_an_outward_link_is_refused(
    conn: RawConn, layout: Layout
) -> None:
    src = layout.root / "merge_src"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "planted.txt").write_text("planted")
    dst = layout.root / "merge_dst"
    dst.mkdir()
    (dst / "deep").symlink_to(layout.outside / "deep")  # the merge would write through it
    params = {
        "sourcePath": f"file://{src}",
        "destinationPath": f"file://{dst}",
        "recursive": True,
    }
    _assert_outside(conn.call("fs/copy", params), "merge copy")
    assert not (layout.outside / "deep" / "planted.txt").exists()


def test_read_directory_leaves_out_links_that_lead_out(conn: RawConn, layout: Layout) -> None:
    entries = conn.result("fs/readDirectory", {"path": f"file://{layout.root}"})["entries"]
    names = {e["fileName"] for e in entries}
    assert {"inside.txt", "sub", "link_in"} <= names
    assert names.isdisjoint({"link_out", "abs_link_out", "dangling_out"})


@pytest.mark.parametrize("follow", [True, False])
def test_walk_never_reports_entries_outside_the_root(
    conn: RawConn, layout: Layout, follow: bool
) -> None:
    options = {
        "maxDepth": 5,
        "maxDirectories": 100,
        "maxEntries": 1000,
        "followDirectorySymlinks": follow,
    }
    result = conn.result("fs/walk", {"path": f"file://{layout.root}", "options": options})
    paths = {e["path"] for e in result["entries"]}
    assert f"file://{layout.root}/inside.txt" in paths
    assert any(p.endswith("/f.txt") for p in paths)  # via sub/ or link_in/ (walked once)
    for path in paths:
        local = urllib.parse.unquote(path.removeprefix("file://"))
        assert os.path.realpath(local).startswith(str(layout.root) + "/"), path
    assert not any("secret.txt" in p or p.endswith("/x.txt") for p in paths)


def test_process_cwd_outside_the_root_is_refused(conn: RawConn, layout: Layout) -> None:
    for cwd in (f"file://{layout.outside}", f"file://{layout.root}/link_out", "file:///"):
        params = {"processId": "x", "argv": ["true"], "cwd": cwd, "env": {}, "tty": False}
        _assert_outside(conn.call("process/start", params), f"cwd {cwd}")


def test_process_cwd_dotdot_after_an_outward_link_stays_in_the_root(
    conn: RawConn, layout: Layout
) -> None:
    # Textually root/link_out/.. is the root; the kernel would resolve it to the link's parent
    # outside. The server hands the process the checked, normalised path.
    cwd = f"file://{layout.root}/link_out/.."
    conn.start_process("pwd", ["pwd", "-P"], cwd)
    conn.wait_closed("pwd")
    assert conn.output("pwd").decode().strip() == str(layout.root)


def test_client_defaults_run_in_the_root(confined: tuple[ServerHandle, Layout]) -> None:
    handle, layout = confined
    with execsdk.connect(handle.url, timeout=30) as env:
        assert env.run(["pwd", "-P"], text=True, timeout=20).stdout.strip() == str(layout.root)
        relative = env.run(["pwd", "-P"], cwd="sub", text=True, timeout=20).stdout.strip()
        assert relative == str(layout.root / "sub")


def test_process_started_inside_the_root_runs_there(conn: RawConn, layout: Layout) -> None:
    conn.start_process("sub", ["pwd", "-P"], f"file://{layout.root}/link_in")
    conn.wait_closed("sub")
    assert conn.output("sub").decode().strip() == str(layout.root / "sub")


def test_watch_missing_ignores_paths_outside_the_root(conn: RawConn, layout: Layout) -> None:
    outside = {"watchId": 1, "missing": [f"file://{layout.outside}/later"], "present": None}
    assert conn.result("fs/watchMissing", outside) == {"watching": False}
    inside = {"watchId": 2, "missing": [f"file://{layout.root}/later"], "present": None}
    assert conn.result("fs/watchMissing", inside) == {"watching": True}


def test_missing_root_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = _run_serve(["--root", str(tmp_path / "nope")])
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--root" in lines[0]


def test_stdio_transport_is_confined_too(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    proc = subprocess.run(
        [*SERVE, "--listen", "stdio", "--root", str(layout.root)],
        input="\n".join(
            json.dumps(m)
            for m in (
                {"id": 1, "method": "initialize", "params": {"clientName": "t"}},
                {"method": "initialized", "params": {}},
                {
                    "id": 2,
                    "method": "fs/readFile",
                    "params": {"path": f"file://{layout.outside}/secret.txt"},
                },
                {
                    "id": 3,
                    "method": "fs/readFile",
                    "params": {"path": f"file://{layout.root}/inside.txt"},
                },
            )
        )
        + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    replies = {m["id"]: m for m in map(json.loads, proc.stdout.splitlines())}
    assert replies[1]["result"]["environmentInfo"]["cwd"] == f"file://{layout.root}"
    _assert_outside(replies[2], "stdio readFile")
    assert unb64(replies[3]["result"]["dataBase64"]) == b"inside"


# A generated set: random walks over names that stay, climb, or follow links in and out.
SEGMENTS = [
    "..",
    ".",
    "",
    "sub",
    "link_in",
    "link_out",
    "abs_link_out",
    "dangling_out",
    "up_out",
    "inside.txt",
    "secret.txt",
    "deep",
    "nope",
    "outside",
    "root",
    "%2e%2e",
    ".%2E",
    "%2e",
    "sub%2F..%2F..",
    "..%2F..%2Foutside",
]


def _without_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal as URL parsers do it (``%2e`` counts as a dot)."""
    parts = path.split("/")[1:]
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        dots = re.sub("%2e", ".", part, flags=re.IGNORECASE)
        if dots == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif dots == ".":
            if last:
                out.append("")
        else:
            out.append(part)
    return "/" + "/".join(out)


def _oracle_inside(root: Path, segments: list[str]) -> bool:
    """Independent judgement: URL dot segments, decode, normalise, then ``os.path.realpath``."""
    path = urllib.parse.unquote(_without_dot_segments(str(root) + "/" + "/".join(segments)))
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    real = os.path.realpath(norm)
    return real == str(root) or real.startswith(str(root) + "/")


@pytest.mark.timeout(180)
@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(segments=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=7))
def test_generated_paths_are_judged_like_realpath(
    conn: RawConn, layout: Layout, segments: list[str]
) -> None:
    uri = f"file://{layout.root}/" + "/".join(segments)
    reply = conn.call("fs/getMetadata", {"path": uri})
    refused = "error" in reply and "outside root" in reply["error"]["message"]
    assert refused == (not _oracle_inside(layout.root, segments)), (uri, reply)
    if refused:
        assert reply["error"]["code"] == -32600
