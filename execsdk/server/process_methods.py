"""Handlers of ``process/*``: wire values in, the session's process backend, wire values out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from execsdk import errors
from execsdk._local.processes import PendingWrite
from execsdk._protocol.wire import b64encode
from execsdk.backends import EnvPolicy, ProcessSpec
from execsdk.server.handlers import Held, refuse_sandbox
from execsdk.server.params import PathUri

if TYPE_CHECKING:
    from execsdk.server.connection import Connection

_MAX_WAIT_MS = 2**31  # longer long-polls overflow the lock timeout; ~24 days is plenty


def process_start(conn: Connection, p: dict[str, Any]) -> object:
    cwd: PathUri = p["cwd"]
    if conn.confine is not None:
        # The checked, normalised path: the kernel would resolve a ".." after a symlink
        # physically, so the process gets the path that was checked.
        cwd_path = conn.confine.check_uri(cwd)
    elif cwd.path is None:
        raise errors.InvalidParams(
            -32602, f"cwd URI `{cwd.uri}` is not valid on this exec-server host: {cwd.host_error}"
        )
    else:
        cwd_path = cwd.path
    refuse_sandbox(p)
    if p["enforceManagedNetwork"]:
        raise errors.InvalidRequest(
            -32600,
            "execsdk serve cannot enforce a managed network; send `enforceManagedNetwork: false`",
        )
    raw_policy = p["envPolicy"]
    policy = None
    if raw_policy is not None:
        policy = EnvPolicy(
            inherit=raw_policy["inherit"],
            ignore_default_excludes=raw_policy["ignoreDefaultExcludes"],
            exclude=tuple(raw_policy["exclude"]),
            set=dict(raw_policy["set"]),
            include_only=tuple(raw_policy["includeOnly"]),
        )
    _refuse_nul(p)
    spec = ProcessSpec(
        argv=tuple(p["argv"]),
        cwd=cwd_path,
        env=dict(p["env"]),
        env_policy=policy,
        tty=p["tty"],
        pipe_stdin=p["pipeStdin"],
        arg0=p["arg0"],
    )
    session = conn.session
    process_id: str = p["processId"]
    session.backend.start(process_id, spec, session.events_for(process_id))
    session.forget_write_ids(process_id)
    return {"processId": process_id, "sandboxType": "none"}


def _refuse_nul(p: dict[str, Any]) -> None:
    """codex's refusals of a NUL byte in what ``execve`` takes (-32603, Rust's words): argv
    first (and ``arg0``, which a tty child's program lookup reads instead), then variables."""
    words = [*p["argv"], *([] if p["tty"] or p["arg0"] is None else [p["arg0"]])]
    if any("\0" in word for word in words):
        raise errors.InternalError(-32603, "nul byte found in provided data")
    variables = dict(p["env"])
    if p["envPolicy"] is not None:
        variables.update(p["envPolicy"]["set"])
    if any("\0" in text for item in variables.items() for text in item):
        raise errors.InternalError(-32603, "data provided contains a nul byte")


def process_read(conn: Connection, p: dict[str, Any]) -> object:
    wait_ms = p["waitMs"]
    result = conn.session.backend.read(
        p["processId"],
        after_seq=p["afterSeq"],
        max_bytes=p["maxBytes"],
        wait_ms=None if wait_ms is None else min(wait_ms, _MAX_WAIT_MS),
        timeout=None,
        scope=conn.polls,
    )
    next_seq = result.next_seq
    if p["maxBytes"] is not None and result.chunks:
        # codex 0.169: with maxBytes, one past the last chunk returned, even when none was cut.
        next_seq = result.chunks[-1].seq + 1
    return {
        "chunks": [
            {"seq": c.seq, "stream": c.stream, "chunk": b64encode(c.data)} for c in result.chunks
        ],
        "nextSeq": next_seq,
        "exited": result.exited,
        "exitCode": result.exit_code,
        "closed": result.closed,
        "failure": result.failure,
        "sandboxDenied": False,
    }


def process_write(conn: Connection, p: dict[str, Any]) -> object:
    session = conn.session
    process_id: str = p["processId"]
    write_id: str = p["writeId"]
    # A repeated writeId is an idempotent retry: answered accepted, bytes not delivered again.
    if session.write_id_used(process_id, write_id):
        return {"status": "accepted"}
    started = session.backend.start_write(process_id, p["chunk"])
    if not isinstance(started, PendingWrite):
        if started == "accepted":
            session.remember_write_id(process_id, write_id)
        return {"status": started}
    pending = started

    def finish() -> object:
        # Over the stdin limit (STDIN_LIMIT): the answer waits for room, with no time limit
        # of ours (the client has its own), and ends with the connection. The writeId is
        # remembered only once the bytes are queued, so a retry after a reconnect delivers them.
        status = pending.wait(None, scope=conn.polls)
        session.remember_write_id(process_id, write_id)
        return {"status": status}

    return Held(finish)


def process_signal(conn: Connection, p: dict[str, Any]) -> object:
    conn.session.backend.interrupt(p["processId"])
    return {}


def process_terminate(conn: Connection, p: dict[str, Any]) -> object:
    return {"running": conn.session.backend.terminate(p["processId"])}


def process_close_stdin(conn: Connection, p: dict[str, Any]) -> object:
    conn.session.backend.close_stdin(p["processId"])
    return {}


OUTPUT_ACK_WINDOW = 8 << 20
"""Unacknowledged output bytes a process may have before the server stops reading it."""


def process_keep_output(conn: Connection, p: dict[str, Any]) -> object:
    conn.session.backend.keep_unacked_output(OUTPUT_ACK_WINDOW)
    return {"window": OUTPUT_ACK_WINDOW}


def process_ack_output(conn: Connection, p: dict[str, Any]) -> object:
    conn.session.backend.acknowledge(p["processId"], p["seq"])
    return {}
