"""Unit tests of the pure protocol layer: wire types, method table, converters, JSON-RPC.

The recorded payloads below are real answers and notifications, copied verbatim from codex
0.169.0 (G2) and 0.123.0 (G1) exec-servers (probe: process/start of
``sh -c 'echo out; echo err >&2; exit 3'``, then reads of a directory holding
``a file#1%.txt``, ``link`` -> that file, and ``sub dir#%ü/x``).
"""

from __future__ import annotations

import json
import os
import re
import timeit
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from execsdk._protocol import methods
from execsdk._protocol import types as t
from execsdk._protocol.converter import (
    make_converter,
    structure_result,
    unstructure_params,
    wire_name,
)
from execsdk._protocol.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    SESSION_ATTACHED,
    ErrorObject,
    Notification,
    Request,
    Response,
    decode_message,
    encode_error,
    encode_notification,
    encode_request,
    encode_response,
)
from execsdk._protocol.wire import (
    b64decode,
    b64encode,
    decode_path,
    encode_path,
    path_to_uri,
    uri_to_path,
)
from execsdk.errors import ProtocolError
from tests.wire_methods import REQUEST_METHODS

GENERATIONS = ("G1", "G2")

# --------------------------------------------------------------------------- recorded payloads

G2_INITIALIZE_RESULT: dict[str, Any] = {
    "sessionId": "67535eed-efb4-4f57-84fe-3dc45704f482",
    "environmentInfo": {
        "shell": {"name": "bash", "path": "/bin/bash"},
        "executorVersion": "0.169.0",
        "providerId": "sha256:2101b24c143ad7dd250ba28b0acfb89d51781d78d013ebcdb1fafdba63feb222",
        "cwd": "file:///work/main/.cache/codex-0.169.0/node_modules/.bin",
        "userHomeDir": "file:///root",
        "platformOs": "linux",
        "prependPathDirs": [
            "file:///work/main/.cache/codex-0.169.0/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/codex-path"
        ],
        "temporaryDirectories": [],
        "tempDir": "file:///tmp",
        "capabilities": {"networkProxyLaunch": True, "fsWatchMissing": True, "windowsMxc": False},
    },
}

# PROTOCOL.md §3.6 example answer.
DOC_PROCESS_READ = (
    '{"id":30,"result":{"chunks":[{"seq":6,"stream":"stderr","chunk":"ZTMK"}],"nextSeq":9,'
    '"exited":true,"exitCode":0,"closed":true,"failure":null,"sandboxDenied":false}}'
)

G2_RECORDED = {
    "initialize": (
        '{"id":1,"result":{"sessionId":"a09c0639-d80a-4bdb-8c76-5784d108d496","environmentInfo":'
        '{"shell":{"name":"bash","path":"/bin/bash"},"executorVersion":"0.169.0","providerId":'
        '"sha256:2101b24c143ad7dd250ba28b0acfb89d51781d78d013ebcdb1fafdba63feb222","cwd":'
        '"file:///work/main","userHomeDir":"file:///root","platformOs":"linux","prependPathDirs":'
        '["file:///work/main/.cache/codex-0.169.0/node_modules/@openai/codex-linux-x64/vendor/'
        'x86_64-unknown-linux-musl/codex-path"],"temporaryDirectories":[],"tempDir":"file:///tmp",'
        '"capabilities":{"networkProxyLaunch":true,"networkProxyReviewDomains":true,'
        '"credentialMasking":true,"credentialMaskingCustomProviders":true,'
        '"capabilityDiscoverySandbox":true,"fsWatchMissing":true,"capabilityDiscoveryV2":true,'
        '"environmentConfigRead":true,"httpHeaderEnvVars":true,"sandboxedFileStreaming":true,'
        '"fileWriteStreaming":true,"shellSnapshotV2":true,"windowsMxc":false,'
        '"linuxRootWritePreservesDevices":true,'
        '"linuxApprovedRootWritePreservesRestrictions":true}}}}'
    ),
    "process/start": '{"id":2,"result":{"processId":"p1","sandboxType":"none"}}',
    "process/read": (
        '{"id":3,"result":{"chunks":[{"seq":1,"stream":"stdout","chunk":"b3V0Cg=="},{"seq":2,'
        '"stream":"stderr","chunk":"ZXJyCg=="}],"nextSeq":5,"exited":true,"exitCode":3,'
        '"closed":true,"failure":null,"sandboxDenied":false}}'
    ),
    "process/write": '{"id":5,"result":{"status":"stdinClosed"}}',
    "process/terminate": '{"id":6,"result":{"running":false}}',
    "fs/getMetadata": (
        '{"id":7,"result":{"isDirectory":false,"isFile":true,"isSymlink":false,"size":5,'
        '"createdAtMs":0,"modifiedAtMs":1795625973325}}'
    ),
    "fs/readDirectory": (
        '{"id":10,"result":{"entries":[{"fileName":"a file#1%.txt","isDirectory":false,'
        '"isFile":true},{"fileName":"link","isDirectory":false,"isFile":true},'
        '{"fileName":"sub dir#%ü","isDirectory":true,"isFile":false}]}}'
    ),
    "fs/readFile": '{"id":11,"result":{"dataBase64":"aGVsbG8="}}',
    "environment/status": '{"id":14,"result":{"status":"ready"}}',
    "fs/walk": (
        '{"id":15,"result":{"entries":[{"path":"file:///tmp/probe/d-0.169.0/a%20file%231%25.txt",'
        '"kind":"file"},{"path":"file:///tmp/probe/d-0.169.0/sub%20dir%23%25%C3%BC",'
        '"kind":"directory"},{"path":"file:///tmp/probe/d-0.169.0/sub%20dir%23%25%C3%BC/x",'
        '"kind":"file"}],"errors":[],"truncated":false}}'
    ),
    "fs/canonicalize": (
        '{"id":16,"result":{"path":"file:///tmp/probe/d-0.169.0/a%20file%231%25.txt"}}'
    ),
    "fs/open": '{"id":17,"result":{"handleId":"h1"}}',
    "fs/readBlock": '{"id":19,"result":{"chunk":"bG8=","eof":true}}',
    "fs/close": '{"id":20,"result":{}}',
    "process/signal": '{"id":21,"result":{}}',
    "fs/watchMissing": '{"id":22,"result":{"watching":true}}',
    "environmentConfig/read": (
        '{"id":23,"result":{"userHomeDir":"file:///root","codexHomeDir":"file:///root/.codex",'
        '"hostname":"vm","config":{"layers":[],"cloudInsertionIndex":0},"requirements":'
        '{"layers":[],"cloudInsertionIndex":0}}}'
    ),
}

# fs/walk over a directory holding a file whose name is not UTF-8 (b"x\xff y").
G2_WALK_WITH_ERROR = (
    '{"id":3,"result":{"entries":[],"errors":[{"path":"file:///tmp/probe/sur/x%EF%BF%BD%20y",'
    '"message":"No such file or directory (os error 2)"}],"truncated":false}}'
)

# fs/walk over a file named with every printable ASCII character but "/", then \x01, DEL, "é".
G2_WALK_ASCII = (
    '{"id":2,"result":{"entries":[{"path":"file:///tmp/probe/enc/%20!%22%23$%25&\'()*+,-.'
    "0123456789:;%3C=%3E%3F@ABCDEFGHIJKLMNOPQRSTUVWXYZ[%5C]^_%60abcdefghijklmnopqrstuvwxyz"
    '%7B|%7D~%01%7F%C3%A9","kind":"file"}],"errors":[],"truncated":false}}'
)
ASCII_NAME = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x2F) + "\x01\x7f\u00e9"

G2_NOTIFICATIONS = [
    '{"method":"process/output","params":{"processId":"p1","seq":1,"stream":"stdout",'
    '"chunk":"b3V0Cg=="}}',
    '{"method":"process/output","params":{"processId":"p1","seq":2,"stream":"stderr",'
    '"chunk":"ZXJyCg=="}}',
    '{"method":"process/exited","params":{"processId":"p1","seq":3,"exitCode":3,'
    '"sandboxDenied":false}}',
    '{"method":"process/closed","params":{"processId":"p1","seq":4}}',
]

G1_RECORDED = {
    "initialize": '{"id":1,"result":{"sessionId":"4b46b4bf-9e69-4252-b6a7-476f4df5a169"}}',
    "process/start": '{"id":2,"result":{"processId":"p1"}}',
    "process/read": (
        '{"id":3,"result":{"chunks":[{"seq":2,"stream":"stdout","chunk":"b3V0Cg=="},{"seq":3,'
        '"stream":"stderr","chunk":"ZXJyCg=="}],"nextSeq":4,"exited":true,"exitCode":3,'
        '"closed":true,"failure":null}}'
    ),
    "process/write": '{"id":5,"result":{"status":"stdinClosed"}}',
    "process/terminate": '{"id":6,"result":{"running":false}}',
    "fs/getMetadata": (
        '{"id":9,"result":{"isDirectory":true,"isFile":false,"isSymlink":false,"createdAtMs":0,'
        '"modifiedAtMs":1795625974933}}'
    ),
    "fs/readDirectory": (
        '{"id":10,"result":{"entries":[{"fileName":"a file#1%.txt","isDirectory":false,'
        '"isFile":true},{"fileName":"link","isDirectory":false,"isFile":true},'
        '{"fileName":"sub dir#%ü","isDirectory":true,"isFile":false}]}}'
    ),
    "fs/readFile": '{"id":11,"result":{"dataBase64":"aGVsbG8="}}',
}

G1_NOTIFICATIONS = [
    '{"method":"process/exited","params":{"processId":"p1","seq":1,"exitCode":3}}',
    '{"method":"process/output","params":{"processId":"p1","seq":2,"stream":"stdout",'
    '"chunk":"b3V0Cg=="}}',
    '{"method":"process/closed","params":{"processId":"p1","seq":4}}',
]

# process/start as the codex CLI sends it (PROTOCOL.md §3.21), every optional member present.
CODEX_CLI_PROCESS_START = {
    "processId": "1",
    "argv": ["/bin/bash", "-lc", "ls"],
    "cwd": "file:///srv/app",
    "env": {"PATH": "/usr/bin:/bin", "TERM": "dumb"},
    "tty": False,
    "pipeStdin": False,
    "arg0": None,
    "envPolicy": {
        "inherit": "all",
        "ignoreDefaultExcludes": True,
        "exclude": ["AWS_*"],
        "set": {},
        "includeOnly": [],
    },
    "metadata": {"threadId": "t-1", "toolCallId": "call_9"},
    "sandbox": None,
    "enforceManagedNetwork": False,
    "managedNetwork": None,
}


# --------------------------------------------------------------------------- samples


def _p(path: str) -> t.WirePath:
    return t.WirePath(path)


ODD = "/tmp/sp ace/#hash/100%/ü/日本/a?b"

PARAMS_SAMPLES: list[object] = [
    t.InitializeParams(client_name="execsdk-test", resume_session_id="abc"),
    t.InitializeParams(client_name="execsdk-test"),
    t.EnvironmentInfoParams(),
    t.EnvironmentStatusParams(),
    t.EnvironmentConfigReadParams(
        cwd=_p(ODD), config_paths=[["mcp_servers"]], requirements_paths=[["mcp_servers"]]
    ),
    t.ProcessStartParams(process_id="p1", argv=["true"], cwd=_p("/tmp"), env={}, tty=False),
    t.ProcessStartParams(
        process_id="",
        argv=["sh", "-c", "echo hi"],
        cwd=_p(ODD),
        env={"A": "1", "EMPTY": ""},
        tty=True,
        pipe_stdin=True,
        arg0="-sh",
        env_policy=t.WireEnvPolicy(
            inherit="core",
            ignore_default_excludes=False,
            exclude=["*X*"],
            set={"B": "2"},
            include_only=["PATH", "B"],
        ),
        metadata={"threadId": "t", "nested": {"k": [1, 2]}},
        sandbox={"permissions": {}},
        enforce_managed_network=False,
        managed_network={"loopbackPorts": [1], "allowLocalBinding": False},
    ),
    t.ProcessReadParams(process_id="p1"),
    t.ProcessReadParams(process_id="p1", after_seq=0, max_bytes=0, wait_ms=1500),
    t.ProcessWriteParams(process_id="p1", chunk=b"\x00\xffhello\n", write_id="w1"),
    t.ProcessWriteParams(process_id="p1", chunk=b""),
    t.ProcessSignalParams(process_id="p1"),
    t.ProcessTerminateParams(process_id="p1"),
    t.ProcessCloseStdinParams(process_id="p1"),
    t.ProcessKeepOutputParams(),
    t.ProcessAckOutputParams(process_id="p1", seq=42),
    t.FsSetModeParams(path=_p("/tmp/f"), mode=0o755),
    t.FsStatParams(path=_p("/tmp/f")),
    t.FsReadFileParams(path=_p(ODD)),
    t.FsWriteFileParams(path=_p(ODD), data_base64=bytes(range(256))),
    t.FsCreateDirectoryParams(path=_p("/tmp/d"), recursive=False),
    t.FsCreateDirectoryParams(path=_p("/tmp/d")),
    t.FsGetMetadataParams(path=_p("/")),
    t.FsReadDirectoryParams(path=_p(ODD)),
    t.FsRemoveParams(path=_p("/tmp/x"), recursive=False, force=False),
    t.FsRemoveParams(path=_p("/tmp/x")),
    t.FsCopyParams(source_path=_p(ODD), destination_path=_p("/tmp/dst"), recursive=False),
    t.FsCanonicalizeParams(path=_p(ODD)),
    t.FsWalkParams(
        path=_p(ODD),
        options=t.FsWalkOptions(
            max_depth=3, max_directories=10, max_entries=100, follow_directory_symlinks=False
        ),
    ),
    t.FsOpenParams(handle_id="h1", path=_p(ODD), mode="replace"),
    t.FsOpenParams(handle_id="h2", path=_p("/etc/hosts")),
    t.FsReadBlockParams(handle_id="h1", offset=0, len=1048576),
    t.FsWriteBlockParams(handle_id="h1", offset=10, chunk=b"abc"),
    t.FsCloseParams(handle_id="h1"),
    t.FsWatchMissingParams(watch_id=1, missing=[_p(ODD)], present=[_p("/tmp")]),
    t.HttpRequestParams(method="GET", url="http://127.0.0.1:1/", request_id="r1"),
    t.HttpRequestParams(
        method="POST",
        url="http://127.0.0.1:1/x",
        request_id="r2",
        headers=[t.HttpHeader(name="a", value="1"), t.HttpHeader(name="a", value="2")],
        body_base64=b"{}",
        timeout_ms=500,
        stream_response=True,
    ),
]

RESULT_SAMPLES: list[object] = [
    t.InitializeResult(session_id="s"),
    t.InitializeResult(
        session_id="s",
        environment_info=t.WireEnvironmentInfo(
            shell=t.WireShell(name="bash", path="/bin/bash"),
            executor_version="0.1",
            provider_id="execsdk",
            cwd=_p(ODD),
            user_home_dir=_p("/root"),
            platform_os="linux",
            prepend_path_dirs=[_p("/opt/bin")],
            temporary_directories=[],
            temp_dir=_p("/tmp"),
            capabilities={"execsdk/closeStdin": True, "windowsMxc": False},
        ),
    ),
    t.WireEnvironmentInfo(shell=t.WireShell(name="sh", path="sh")),
    t.EnvironmentStatusResult(status="ready"),
    t.EnvironmentConfigReadResult(
        user_home_dir=_p("/root"),
        codex_home_dir=_p("/root/.codex"),
        hostname="vm",
        config=t.EnvironmentConfigLayers(layers=[{"any": 1}], cloud_insertion_index=0),
        requirements=t.EnvironmentConfigLayers(layers=[]),
    ),
    t.ProcessStartResult(process_id="p1", sandbox_type="none"),
    t.ProcessReadResult(
        chunks=[
            t.ProcessChunk(seq=1, stream="stdout", chunk=b"a"),
            t.ProcessChunk(seq=2, stream="pty", chunk=b"\r\n"),
        ],
        next_seq=3,
        exited=False,
        exit_code=None,
        closed=False,
        failure=None,
    ),
    t.ProcessWriteResult(status="unknownProcess"),
    t.ProcessSignalResult(),
    t.ProcessTerminateResult(running=True),
    t.ProcessCloseStdinResult(),
    t.ProcessKeepOutputResult(window=8 << 20),
    t.ProcessAckOutputResult(),
    t.FsSetModeResult(),
    t.FsStatResult(
        is_directory=False,
        is_file=True,
        is_symlink=False,
        created_at_ms=1,
        modified_at_ms=2,
        mode=0o600,
        size=5,
    ),
    t.FsReadFileResult(data_base64=b""),
    t.FsWriteFileResult(),
    t.FsCreateDirectoryResult(),
    t.FsGetMetadataResult(
        is_directory=False,
        is_file=True,
        is_symlink=True,
        created_at_ms=0,
        modified_at_ms=1795625973325,
        size=5,
    ),
    t.FsReadDirectoryResult(
        entries=[t.FsDirectoryEntry(file_name="sub dir#%ü", is_directory=True, is_file=False)]
    ),
    t.FsRemoveResult(),
    t.FsCopyResult(),
    t.FsCanonicalizeResult(path=_p(ODD)),
    t.FsWalkResult(
        entries=[t.FsWalkEntry(path=_p(ODD), kind="directory")],
        errors=[t.FsWalkError(path=_p("/tmp/x"), message="boom")],
        truncated=True,
    ),
    t.FsOpenResult(handle_id="h1"),
    t.FsReadBlockResult(chunk=b"xyz", eof=False),
    t.FsWriteBlockResult(),
    t.FsCloseResult(),
    t.FsWatchMissingResult(watching=True),
    t.HttpRequestResult(status=200, headers=[t.HttpHeader(name="a", value="b")], body_base64=b"x"),
    t.ProcessOutputNotification(process_id="p1", seq=1, stream="stderr", chunk=b"e"),
    t.ProcessExitedNotification(process_id="p1", seq=2, exit_code=137, sandbox_denied=False),
    t.ProcessExitedNotification(process_id="p1", seq=2, exit_code=-1),
    t.ProcessClosedNotification(process_id="p1", seq=3),
    t.HttpRequestBodyDeltaNotification(request_id="r", seq=1, delta_base64=b"d", done=True),
]


def _id(obj: object) -> str:
    return type(obj).__name__


def _response(text: str) -> Response:
    msg = decode_message(text)
    assert isinstance(msg, Response)
    assert msg.error is None
    return msg


def _camel_case_class(path: str, suffix: str) -> str:
    parts = re.split(r"[/]", path)
    return "".join(p[:1].upper() + p[1:] for p in parts) + suffix


# --------------------------------------------------------------------------- method table


def test_every_method_uses_the_types_named_after_its_path() -> None:
    for name, spec in methods.METHODS.items():
        assert spec.name == name
        assert getattr(t, _camel_case_class(name, "Params")) is spec.params_type
        assert getattr(t, _camel_case_class(name, "Result")) is spec.result_type


def test_every_notification_uses_the_type_named_after_its_path() -> None:
    assert set(methods.NOTIFICATIONS) == set(methods.NOTIFICATION_GENERATIONS)
    for name, cls in methods.NOTIFICATIONS.items():
        assert getattr(t, _camel_case_class(name, "Notification")) is cls


def test_method_table_lists_the_protocol_methods() -> None:
    expected = set(REQUEST_METHODS)
    assert len(expected) == len(REQUEST_METHODS)  # no method written twice
    assert set(methods.METHODS) == expected
    assert methods.INITIALIZED == "initialized"
    assert methods.INITIALIZED not in methods.METHODS


def test_g1_methods_match_the_probed_table() -> None:
    g1 = {name for name, spec in methods.METHODS.items() if "G1" in spec.generations}
    assert g1 == {
        "initialize",
        "process/start",
        "process/read",
        "process/write",
        "process/terminate",
        "fs/readFile",
        "fs/writeFile",
        "fs/createDirectory",
        "fs/getMetadata",
        "fs/readDirectory",
        "fs/remove",
        "fs/copy",
    }
    assert all("G2" in spec.generations for spec in methods.METHODS.values())


def test_close_stdin_needs_the_announced_capability() -> None:
    spec = methods.METHODS["process/closeStdin"]
    assert spec.capability == methods.CAPABILITY_CLOSE_STDIN == "execsdk/closeStdin"
    assert not spec.supported("G2", {})
    assert not spec.supported("G2", {"execsdk/closeStdin": False})
    assert spec.supported("G2", {"execsdk/closeStdin": True})
    assert not spec.supported("G1", {"execsdk/closeStdin": True})
    assert methods.METHODS["process/signal"].supported("G2")
    assert not methods.METHODS["process/signal"].supported("G1")


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("sample", PARAMS_SAMPLES + RESULT_SAMPLES, ids=_id)
def test_round_trip_through_json(generation: str, sample: object) -> None:
    conv = make_converter(generation, strict=True)  # type: ignore[arg-type]
    wire = json.loads(json.dumps(unstructure_params(conv, sample)))
    assert structure_result(conv, wire, type(sample), method="test") == sample


def test_every_wire_type_has_a_round_trip_sample() -> None:
    covered = {type(s) for s in PARAMS_SAMPLES + RESULT_SAMPLES}
    wanted = set(methods.NOTIFICATIONS.values())
    for spec in methods.METHODS.values():
        wanted |= {spec.params_type, spec.result_type}
    assert wanted - covered == set()


def test_names_are_camel_case_on_the_wire() -> None:
    conv = make_converter("G2")
    wire = unstructure_params(conv, t.FsWriteFileParams(path=_p("/tmp/f"), data_base64=b"hi"))
    assert wire == {"path": "file:///tmp/f", "dataBase64": "aGk="}
    assert wire_name("data_base64") == "dataBase64"
    assert wire_name("set_") == "set"
    assert wire_name("arg0") == "arg0"
    assert wire_name("follow_directory_symlinks") == "followDirectorySymlinks"


def test_optional_members_are_omitted_and_required_falsy_members_sent() -> None:
    conv = make_converter("G2")
    wire = unstructure_params(
        conv, t.ProcessStartParams(process_id="", argv=["true"], cwd=_p("/"), env={}, tty=False)
    )
    assert wire == {"processId": "", "argv": ["true"], "cwd": "file:///", "env": {}, "tty": False}
    copy = unstructure_params(
        conv, t.FsCopyParams(source_path=_p("/a"), destination_path=_p("/b"), recursive=False)
    )
    assert copy["recursive"] is False
    assert "sandbox" not in copy


def test_env_policy_always_sends_all_five_members() -> None:
    conv = make_converter("G1")
    policy = t.WireEnvPolicy(
        inherit="none", ignore_default_excludes=False, exclude=[], set={}, include_only=[]
    )
    wire = unstructure_params(
        conv,
        t.ProcessStartParams(
            process_id="p", argv=["env"], cwd=_p("/"), env={}, tty=False, env_policy=policy
        ),
    )
    assert wire["envPolicy"] == {
        "inherit": "none",
        "ignoreDefaultExcludes": False,
        "exclude": [],
        "set": {},
        "includeOnly": [],
    }


def test_result_nulls_that_codex_sends_stay_on_the_wire() -> None:
    conv = make_converter("G2")
    wire = unstructure_params(
        conv,
        t.ProcessReadResult(
            chunks=[], next_seq=1, exited=False, exit_code=None, closed=False, failure=None
        ),
    )
    assert wire["exitCode"] is None and wire["failure"] is None
    assert "sandboxDenied" not in wire


def test_defaulted_non_null_members_are_sent() -> None:
    conv = make_converter("G2")
    assert unstructure_params(conv, t.ProcessSignalParams(process_id="p")) == {
        "processId": "p",
        "signal": "interrupt",
    }
    info = unstructure_params(conv, t.WireEnvironmentInfo(shell=t.WireShell(name="sh", path="sh")))
    assert info == {"shell": {"name": "sh", "path": "sh"}, "capabilities": {}}


def test_codex_cli_process_start_structures_and_round_trips() -> None:
    conv = make_converter("G2", strict=True)
    params = structure_result(
        conv, CODEX_CLI_PROCESS_START, t.ProcessStartParams, method="process/start"
    )
    assert params.cwd == "/srv/app"
    assert params.env_policy is not None and params.env_policy.exclude == ["AWS_*"]
    assert params.metadata == {"threadId": "t-1", "toolCallId": "call_9"}
    assert params.enforce_managed_network is False
    again = unstructure_params(conv, params)
    # The explicit nulls are dropped, everything else survives unchanged.
    assert again == {k: v for k, v in CODEX_CLI_PROCESS_START.items() if v is not None}


# --------------------------------------------------------------------------- recorded answers


def test_recorded_g2_initialize_result_structures() -> None:
    conv = make_converter("G2")
    res = structure_result(conv, G2_INITIALIZE_RESULT, t.InitializeResult, method="initialize")
    assert res.session_id == "67535eed-efb4-4f57-84fe-3dc45704f482"
    info = res.environment_info
    assert info is not None
    assert info.shell == t.WireShell(name="bash", path="/bin/bash")
    assert info.executor_version == "0.169.0"
    assert info.cwd == "/work/main/.cache/codex-0.169.0/node_modules/.bin"
    assert info.user_home_dir == "/root"
    assert info.temp_dir == "/tmp"
    assert info.platform_os == "linux"
    assert info.prepend_path_dirs is not None
    assert info.prepend_path_dirs[0].endswith("/x86_64-unknown-linux-musl/codex-path")
    assert info.prepend_path_dirs[0].startswith("/work/main/")
    assert info.temporary_directories == []
    assert info.capabilities == {
        "networkProxyLaunch": True,
        "fsWatchMissing": True,
        "windowsMxc": False,
    }


def test_recorded_g2_initialize_result_is_exact_under_strict_converter() -> None:
    conv = make_converter("G2", strict=True)
    res = structure_result(conv, G2_INITIALIZE_RESULT, t.InitializeResult, method="initialize")
    assert unstructure_params(conv, res) == G2_INITIALIZE_RESULT


def test_g1_initialize_result_has_no_environment_info() -> None:
    conv = make_converter("G1")
    raw = _response(G1_RECORDED["initialize"]).result
    res = structure_result(conv, raw, t.InitializeResult, method="initialize")
    assert res.session_id == "4b46b4bf-9e69-4252-b6a7-476f4df5a169"
    assert res.environment_info is None


def test_documented_process_read_example_structures() -> None:
    msg = _response(DOC_PROCESS_READ)
    assert msg.id == 30
    res = structure_result(
        make_converter("G2"), msg.result, t.ProcessReadResult, method="process/read"
    )
    assert res.chunks == [t.ProcessChunk(seq=6, stream="stderr", chunk=b"e3\n")]
    assert (res.next_seq, res.exited, res.exit_code, res.closed) == (9, True, 0, True)
    assert res.failure is None and res.sandbox_denied is False


@pytest.mark.parametrize(
    ("generation", "recorded"),
    [("G2", G2_RECORDED), ("G1", G1_RECORDED)],
    ids=["G2", "G1"],
)
def test_every_recorded_answer_structures_strictly(
    generation: str, recorded: dict[str, str]
) -> None:
    conv = make_converter(generation, strict=True)  # type: ignore[arg-type]
    for method, text in recorded.items():
        raw = _response(text).result
        result: object = structure_result(
            conv, raw, methods.METHODS[method].result_type, method=method
        )
        # Strict structuring plus an exact re-encode proves no member was lost or invented.
        assert unstructure_params(conv, result) == raw, method


def test_recorded_process_read_values_g2_and_g1() -> None:
    g2 = structure_result(
        make_converter("G2"),
        _response(G2_RECORDED["process/read"]).result,
        t.ProcessReadResult,
        method="process/read",
    )
    g1 = structure_result(
        make_converter("G1"),
        _response(G1_RECORDED["process/read"]).result,
        t.ProcessReadResult,
        method="process/read",
    )
    assert [c.chunk for c in g2.chunks] == [b"out\n", b"err\n"] == [c.chunk for c in g1.chunks]
    assert [c.stream for c in g2.chunks] == ["stdout", "stderr"]
    assert g2.sandbox_denied is False and g1.sandbox_denied is None
    assert g2.exit_code == g1.exit_code == 3


def test_recorded_metadata_size_is_g2_only() -> None:
    g2 = structure_result(
        make_converter("G2"),
        _response(G2_RECORDED["fs/getMetadata"]).result,
        t.FsGetMetadataResult,
        method="fs/getMetadata",
    )
    g1 = structure_result(
        make_converter("G1"),
        _response(G1_RECORDED["fs/getMetadata"]).result,
        t.FsGetMetadataResult,
        method="fs/getMetadata",
    )
    assert g2.size == 5 and g2.is_file and not g2.is_directory
    assert g1.size is None and g1.is_directory


def test_recorded_walk_paths_decode_and_reencode_like_codex() -> None:
    raw = _response(G2_RECORDED["fs/walk"]).result
    res = structure_result(make_converter("G2"), raw, t.FsWalkResult, method="fs/walk")
    assert [e.path for e in res.entries] == [
        "/tmp/probe/d-0.169.0/a file#1%.txt",
        "/tmp/probe/d-0.169.0/sub dir#%ü",
        "/tmp/probe/d-0.169.0/sub dir#%ü/x",
    ]
    assert [e.kind for e in res.entries] == ["file", "directory", "file"]
    assert isinstance(raw, dict)
    # Our encoding of these names is byte-identical to codex's own.
    assert [path_to_uri(e.path) for e in res.entries] == [e["path"] for e in raw["entries"]]


def test_uri_encoding_is_byte_identical_to_codex_for_every_ascii_character() -> None:
    raw = _response(G2_WALK_ASCII).result
    res = structure_result(make_converter("G2"), raw, t.FsWalkResult, method="fs/walk")
    assert res.entries[0].path == "/tmp/probe/enc/" + ASCII_NAME
    assert isinstance(raw, dict)
    assert path_to_uri(res.entries[0].path) == raw["entries"][0]["path"]


def test_recorded_walk_error_structures() -> None:
    raw = _response(G2_WALK_WITH_ERROR).result
    res = structure_result(make_converter("G2"), raw, t.FsWalkResult, method="fs/walk")
    assert res.entries == []
    assert res.errors == [
        t.FsWalkError(
            path=_p("/tmp/probe/sur/x\ufffd y"), message="No such file or directory (os error 2)"
        )
    ]


@pytest.mark.parametrize(
    ("generation", "texts"),
    [("G2", G2_NOTIFICATIONS), ("G1", G1_NOTIFICATIONS)],
    ids=["G2", "G1"],
)
def test_recorded_notifications_structure(generation: str, texts: list[str]) -> None:
    conv = make_converter(generation, strict=True)  # type: ignore[arg-type]
    seen: list[object] = []
    for text in texts:
        msg = decode_message(text)
        assert isinstance(msg, Notification)
        cls = methods.NOTIFICATIONS[msg.method]
        seen.append(structure_result(conv, msg.params, cls, method=msg.method))
    outputs = [n for n in seen if isinstance(n, t.ProcessOutputNotification)]
    exited = [n for n in seen if isinstance(n, t.ProcessExitedNotification)]
    assert outputs[0].chunk == b"out\n" and outputs[0].stream == "stdout"
    assert exited[0].exit_code == 3
    assert exited[0].sandbox_denied is (False if generation == "G2" else None)
    assert isinstance(seen[-1], t.ProcessClosedNotification) and seen[-1].seq == 4


def test_g2_readblock_chunk_decodes_to_bytes() -> None:
    res = structure_result(
        make_converter("G2"),
        _response(G2_RECORDED["fs/readBlock"]).result,
        t.FsReadBlockResult,
        method="fs/readBlock",
    )
    assert res == t.FsReadBlockResult(chunk=b"lo", eof=True)


# --------------------------------------------------------------------------- leniency


def test_unknown_members_are_ignored_at_every_level() -> None:
    raw = json.loads(DOC_PROCESS_READ)["result"]
    raw["futureMember"] = {"x": 1}
    raw["chunks"][0]["compressed"] = False
    res = structure_result(make_converter("G2"), raw, t.ProcessReadResult, method="process/read")
    assert res.chunks[0].chunk == b"e3\n"


def test_strict_converter_rejects_unknown_members() -> None:
    raw = json.loads(DOC_PROCESS_READ)["result"]
    raw["chunks"][0]["compressed"] = False
    with pytest.raises(ProtocolError) as info:
        structure_result(
            make_converter("G2", strict=True), raw, t.ProcessReadResult, method="process/read"
        )
    assert info.value.field_path == "$.chunks[0]"
    assert "compressed" in str(info.value)


def test_non_boolean_capabilities_are_skipped_not_fatal() -> None:
    raw = {
        "shell": {"name": "sh", "path": "/bin/sh"},
        "capabilities": {"a": True, "b": False, "structured": {"v": 2}, "n": 1},
    }
    info = structure_result(
        make_converter("G2"), raw, t.WireEnvironmentInfo, method="environment/info"
    )
    assert info.capabilities == {"a": True, "b": False}


def test_missing_optional_members_default_to_none() -> None:
    res = structure_result(
        make_converter("G2"),
        {"processId": "p1"},
        t.ProcessStartResult,
        method="process/start",
    )
    assert res == t.ProcessStartResult(process_id="p1", sandbox_type=None)


def test_null_result_is_accepted_for_empty_results_only() -> None:
    conv = make_converter("G2")
    assert structure_result(conv, None, t.FsCloseResult, method="fs/close") == t.FsCloseResult()
    with pytest.raises(ProtocolError) as info:
        structure_result(conv, None, t.FsOpenResult, method="fs/open")
    assert info.value.field_path == "$"
    assert info.value.method == "fs/open"


# --------------------------------------------------------------------------- schema errors


def test_mistyped_field_raises_protocol_error_with_field_path() -> None:
    raw = json.loads(G2_RECORDED["process/read"])["result"]
    raw["chunks"][1]["seq"] = "2"
    with pytest.raises(ProtocolError) as info:
        structure_result(make_converter("G2"), raw, t.ProcessReadResult, method="process/read")
    err = info.value
    assert err.field_path == "$.chunks[1].seq"
    assert err.method == "process/read"
    assert "expected an integer" in str(err)
    assert err.payload is not None and err.payload.startswith('{"chunks"')


def test_field_path_uses_wire_names() -> None:
    raw = json.loads(G2_RECORDED["fs/getMetadata"])["result"]
    raw["modifiedAtMs"] = 1.5
    with pytest.raises(ProtocolError) as info:
        structure_result(make_converter("G2"), raw, t.FsGetMetadataResult, method="fs/getMetadata")
    assert info.value.field_path == "$.modifiedAtMs"


def test_missing_required_field_is_named() -> None:
    raw = dict(CODEX_CLI_PROCESS_START)
    del raw["argv"]
    with pytest.raises(ProtocolError) as info:
        structure_result(make_converter("G2"), raw, t.ProcessStartParams, method="process/start")
    assert info.value.field_path == "$.argv"
    assert "missing field `argv`" in str(info.value)


@pytest.mark.parametrize(
    ("member", "value", "path"),
    [
        ("exited", 1, "$.exited"),  # a number is not a boolean
        ("nextSeq", True, "$.nextSeq"),  # a boolean is not an integer
        ("chunks", {}, "$.chunks"),  # an object is not an array
        ("chunks", "abc", "$.chunks"),  # nor is a string
        ("failure", 5, "$.failure"),
    ],
)
def test_primitive_types_are_checked(member: str, value: object, path: str) -> None:
    raw = json.loads(G2_RECORDED["process/read"])["result"]
    raw[member] = value
    with pytest.raises(ProtocolError) as info:
        structure_result(make_converter("G2"), raw, t.ProcessReadResult, method="process/read")
    assert info.value.field_path == path


def test_unknown_enum_value_is_a_protocol_error() -> None:
    raw = {"processId": "p", "seq": 1, "stream": "stdlog", "chunk": ""}
    with pytest.raises(ProtocolError) as info:
        structure_result(
            make_converter("G2"), raw, t.ProcessOutputNotification, method="process/output"
        )
    assert info.value.field_path == "$.stream"
    assert "stdlog" in str(info.value)


def test_dict_value_error_names_the_key() -> None:
    raw = dict(CODEX_CLI_PROCESS_START, env={"OK": "1", "BAD": 2})
    with pytest.raises(ProtocolError) as info:
        structure_result(make_converter("G2"), raw, t.ProcessStartParams, method="process/start")
    assert info.value.field_path == "$.env['BAD']"


def test_non_object_answer_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        structure_result(make_converter("G1"), [1], t.ProcessStartResult, method="process/start")
    assert info.value.field_path == "$"


# --------------------------------------------------------------------------- base64


def test_invalid_base64_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        structure_result(
            make_converter("G2"), {"dataBase64": "a!b="}, t.FsReadFileResult, method="fs/readFile"
        )
    assert info.value.field_path == "$.dataBase64"
    assert "base64" in str(info.value)


@pytest.mark.parametrize("bad", ["aGk", "aGk==", "aG k=", "aGk=\n", 12, None])
def test_base64_decoding_is_strict(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        b64decode(bad)


def test_base64_is_standard_with_padding() -> None:
    data = bytes(range(256)) * 3 + b"x"
    text = b64encode(data)
    assert text.endswith("=") and "+" in text and "/" in text  # standard alphabet, padded
    assert b64decode(text) == data
    assert b64encode(b"") == "" and b64decode("") == b""


def test_large_chunk_round_trips() -> None:
    conv = make_converter("G2")
    data = os.urandom(8192)
    wire = unstructure_params(
        conv, t.ProcessOutputNotification(process_id="p", seq=1, stream="pty", chunk=data)
    )
    assert len(wire["chunk"]) == 10924  # type: ignore[arg-type]
    back = structure_result(conv, wire, t.ProcessOutputNotification, method="process/output")
    assert back.chunk == data


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        ("/tmp/sp ace", "file:///tmp/sp%20ace"),
        ("/tmp/a#b", "file:///tmp/a%23b"),
        ("/tmp/100%", "file:///tmp/100%25"),
        ("/tmp/ü.txt", "file:///tmp/%C3%BC.txt"),
        ("/tmp/a?b", "file:///tmp/a%3Fb"),
        ("/", "file:///"),
        ("/tmp/x\udcff y", "file:///tmp/x%FF%20y"),  # undecodable byte, as os.fsdecode gives it
    ],
)
def test_uri_codec(path: str, uri: str) -> None:
    assert path_to_uri(path) == uri
    assert uri_to_path(uri) == path


def test_path_that_is_not_text_is_rejected() -> None:
    with pytest.raises(ValueError):
        path_to_uri("/tmp/\ud800")  # a lone surrogate that surrogateescape never produces


def test_uri_decoding_accepts_raw_and_localhost_forms() -> None:
    assert uri_to_path("file:///tmp/sp ace/ü.txt") == "/tmp/sp ace/ü.txt"
    assert uri_to_path("file:///tmp/sp%20ace/%C3%BC.txt") == "/tmp/sp ace/ü.txt"
    assert uri_to_path("file://localhost/tmp") == "/tmp"


@pytest.mark.parametrize("bad", ["/tmp/x", "http://h/x", "file://otherhost/x", "file:", 3])
def test_uri_decoding_rejects_non_file_uris(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        uri_to_path(bad)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_relative_path_is_rejected_before_sending(generation: str) -> None:
    conv = make_converter(generation)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="absolute"):
        unstructure_params(conv, t.FsReadFileParams(path=_p("tmp/x")))


def test_g1_paths_are_plain_and_g2_paths_are_uris() -> None:
    params = t.FsReadFileParams(path=_p("/tmp/a b#"))
    assert unstructure_params(make_converter("G1"), params) == {"path": "/tmp/a b#"}
    assert unstructure_params(make_converter("G2"), params) == {"path": "file:///tmp/a%20b%23"}


def test_each_generation_rejects_the_other_path_form_in_answers() -> None:
    with pytest.raises(ProtocolError) as g1:
        structure_result(
            make_converter("G1"), {"path": "file:///tmp"}, t.FsCanonicalizeResult, method="x"
        )
    assert g1.value.field_path == "$.path"
    with pytest.raises(ProtocolError) as g2:
        structure_result(make_converter("G2"), {"path": "/tmp"}, t.FsCanonicalizeResult, method="x")
    assert g2.value.field_path == "$.path"
    with pytest.raises(ProtocolError):
        structure_result(make_converter("G1"), {"path": "tmp"}, t.FsCanonicalizeResult, method="x")


# Any text but NUL and lone surrogates (those are not text, see the surrogateescape case).
_PATHS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80).map(
    lambda s: "/" + s
)


@given(_PATHS)
def test_paths_round_trip_for_both_generations(path: str) -> None:
    for generation in GENERATIONS:
        wire = encode_path(generation, path)  # type: ignore[arg-type]
        assert decode_path(generation, wire) == path  # type: ignore[arg-type]
    uri = path_to_uri(path)
    assert uri.startswith("file:///")
    assert not set(uri[len("file://") :]) & set(' #?"<>`{}\\')
    assert re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", uri)


@given(_PATHS)
def test_paths_round_trip_through_the_converter(path: str) -> None:
    for generation in GENERATIONS:
        conv = make_converter(generation)  # type: ignore[arg-type]
        obj = t.FsCanonicalizeResult(path=_p(path))
        wire = unstructure_params(conv, obj)
        assert structure_result(conv, wire, t.FsCanonicalizeResult, method="x") == obj


# --------------------------------------------------------------------------- converters


def test_converters_are_built_once_per_generation() -> None:
    assert make_converter("G2") is make_converter("G2")
    assert make_converter("G1") is not make_converter("G2")
    assert make_converter("G2", strict=True) is not make_converter("G2")
    with pytest.raises(ValueError, match="generation"):
        make_converter("G3")  # type: ignore[arg-type]


def _best_of(fn: Any, number: int = 2000, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def test_output_notification_structures_fast() -> None:
    conv = make_converter("G2")
    text = b64encode(os.urandom(8192))
    raw = {"processId": "p1", "seq": 17, "stream": "stdout", "chunk": text}
    total = _best_of(
        lambda: structure_result(conv, raw, t.ProcessOutputNotification, method="process/output")
    )
    base64_cost = _best_of(lambda: b64decode(text))
    assert (total - base64_cost) < 20e-6, f"{(total - base64_cost) * 1e6:.1f} us per notification"


def test_wire_classes_are_frozen() -> None:
    obj = t.ProcessClosedNotification(process_id="p", seq=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        obj.seq = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- json-rpc


def test_decode_request_with_int_and_string_ids() -> None:
    assert decode_message('{"id":7,"method":"fs/close","params":{"handleId":"h"}}') == Request(
        7, "fs/close", {"handleId": "h"}
    )
    assert decode_message(b'{"jsonrpc":"2.0","id":"a-1","method":"environment/info"}') == Request(
        "a-1", "environment/info", None
    )


def test_decode_notification_without_jsonrpc_member() -> None:
    msg = decode_message(G2_NOTIFICATIONS[0])
    assert isinstance(msg, Notification)
    assert msg.method == "process/output"
    assert isinstance(msg.params, dict) and msg.params["seq"] == 1


def test_decode_response_with_string_id() -> None:
    assert decode_message('{"id":"x7","result":{"running":false}}') == Response(
        "x7", {"running": False}, None
    )


def test_decode_response_with_null_result() -> None:
    assert decode_message('{"id":3,"result":null}') == Response(3, None, None)


def test_decode_error_response_as_codex_sends_it() -> None:
    msg = decode_message(
        '{"error":{"code":-32010,"message":"session s is already attached to another '
        'connection"},"id":4}'
    )
    assert isinstance(msg, Response)
    assert msg.id == 4 and msg.result is None
    assert msg.error == ErrorObject(
        SESSION_ATTACHED, "session s is already attached to another connection", None
    )


def test_decode_parse_error_answer_with_unknown_id() -> None:
    msg = decode_message('{"id":-1,"error":{"code":-32600,"message":"failed to parse"}}')
    assert isinstance(msg, Response) and msg.id == -1
    assert msg.error is not None and msg.error.code == PARSE_ERROR == INVALID_REQUEST
    null_id = decode_message('{"id":null,"error":{"code":-32600,"message":"x","data":[1]}}')
    assert isinstance(null_id, Response) and null_id.id is None
    assert null_id.error == ErrorObject(-32600, "x", [1])


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        b"\xff\xfe",
        "",
        '{"id":1,"result":',
    ],
)
def test_decode_garbage_is_a_protocol_error(text: str | bytes) -> None:
    with pytest.raises(ProtocolError, match="invalid JSON"):
        decode_message(text)


def test_garbage_payload_is_truncated_in_the_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message("x" * 100_000)
    assert info.value.payload is not None
    assert len(info.value.payload) < 300
    assert len(str(info.value)) < 500


def test_decode_batch_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="batch"):
        decode_message('[{"id":1,"method":"initialize","params":{"clientName":"x"}}]')


@pytest.mark.parametrize(
    "text",
    [
        "42",
        '"text"',
        "{}",
        '{"jsonrpc":"2.0"}',
        '{"id":1}',  # neither result nor error
        '{"id":1,"result":{},"error":{"code":1,"message":"m"}}',
        '{"id":1,"error":{"code":"x","message":"m"}}',
        '{"id":1,"error":{"message":"m"}}',
        '{"id":1,"error":"boom"}',
        '{"id":1.5,"method":"fs/close"}',
        '{"id":null,"method":"fs/close"}',
        '{"id":true,"method":"fs/close"}',
        '{"id":[1],"result":{}}',
        '{"method":7}',
    ],
)
def test_decode_unknown_envelope_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_message(text)


def test_encode_request_carries_jsonrpc_and_params() -> None:
    text = encode_request(5, "process/read", {"processId": "p"})
    assert json.loads(text) == {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "process/read",
        "params": {"processId": "p"},
    }
    assert decode_message(text) == Request(5, "process/read", {"processId": "p"})


def test_encode_server_messages_omit_jsonrpc() -> None:
    assert json.loads(encode_response("r1", {})) == {"id": "r1", "result": {}}
    assert json.loads(encode_notification("process/closed", {"processId": "p", "seq": 4})) == {
        "method": "process/closed",
        "params": {"processId": "p", "seq": 4},
    }
    assert json.loads(encode_error(-1, INVALID_REQUEST, "bad")) == {
        "id": -1,
        "error": {"code": -32600, "message": "bad"},
    }
    assert json.loads(encode_error(2, -32004, "gone", {"errno": 2}))["error"]["data"] == {
        "errno": 2
    }


def test_encoded_text_keeps_unicode_and_round_trips() -> None:
    text = encode_notification("initialized", {"name": "ü日"})
    assert "ü日".encode() in text
    msg = decode_message(text)
    assert msg == Notification("initialized", {"name": "ü日"})


def test_encode_then_structure_a_full_request() -> None:
    conv = make_converter("G2")
    params = t.FsWriteFileParams(path=_p("/tmp/ü x"), data_base64=b"\x00\x01")
    text = encode_request(9, "fs/writeFile", unstructure_params(conv, params))
    msg = decode_message(text)
    assert isinstance(msg, Request)
    assert structure_result(conv, msg.params, t.FsWriteFileParams, method=msg.method) == params
