"""Handlers of ``environment/*``, ``environmentConfig/read`` and ``http/request``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from execsdk import errors
from execsdk.server import hostinfo
from execsdk.server.handlers import Reply
from execsdk.server.params import PathUri

if TYPE_CHECKING:
    from execsdk.server.connection import Connection


def environment_info(conn: Connection, p: Any) -> object:
    return hostinfo.environment_info(cwd=conn.root)


def environment_status(conn: Connection, p: Any) -> object:
    return {"status": "ready"}


def environment_config_read(conn: Connection, p: dict[str, Any]) -> object:
    cwd: PathUri = p["cwd"]
    if cwd.path is None:
        raise errors.InvalidParams(-32602, cwd.host_error or "invalid cwd URI")
    paths = [*p["configPaths"], *p["requirementsPaths"]]
    if any(not path for path in paths):
        raise errors.InvalidParams(-32602, "TOML paths must contain at least one key segment")
    if not paths:
        raise errors.InvalidParams(-32602, "at least one config or requirements path is required")
    return hostinfo.environment_config()


def http_request(conn: Connection, p: dict[str, Any]) -> object:
    result, start = conn.http.request(p)
    return Reply(result, start)
