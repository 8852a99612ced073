"""The hand-written baseline: JSON-RPC straight on websocket-client, no execsdk.

``RawClient(url)`` is as tuned as a careful user would make it: ``skip_utf8_validation``,
TCP_NODELAY, TCP_QUICKACK re-armed after every receive, and orjson + pybase64 when installed.
``RawClient(url, tuned=False, fast=False)`` is the naive loop (defaults everywhere, stdlib
``json`` and ``base64``). Not thread-safe, except that one thread may send while one other
thread receives (websocket-client locks each direction separately).
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket

try:
    import orjson
except ImportError:  # pragma: no cover - the fast extra is optional
    orjson = None  # type: ignore[assignment]
try:
    import pybase64
except ImportError:  # pragma: no cover - the fast extra is optional
    pybase64 = None  # type: ignore[assignment]

HAVE_FAST = orjson is not None and pybase64 is not None
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class RawError(Exception):
    """The server answered a raw call with a JSON-RPC error."""


class RawClient:
    """One WebSocket, one JSON-RPC session, nothing else."""

    def __init__(self, url: str, *, tuned: bool = True, fast: bool = True) -> None:
        opts: dict[str, Any] = {"suppress_origin": True}
        if tuned:
            opts["skip_utf8_validation"] = True
            opts["sockopt"] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
        self.ws = websocket.create_connection(url, **opts)
        fast = fast and HAVE_FAST
        self.dumps: Callable[[Any], str | bytes]
        self.loads: Callable[[str | bytes], Any]
        if fast:
            self.dumps, self.loads = orjson.dumps, orjson.loads
            self.b64encode: Callable[[bytes], bytes] = pybase64.b64encode
            self.b64decode: Callable[[str], bytes] = pybase64.b64decode
        else:
            self.dumps, self.loads = json.dumps, json.loads
            self.b64encode, self.b64decode = base64.b64encode, base64.b64decode
        self.quickack = tuned and _QUICKACK is not None
        self.ids = itertools.count(1)
        self.stash: collections.deque[dict[str, Any]] = collections.deque()
        # Our server answers concurrently, so replies may overtake each other.
        self.early: dict[int, dict[str, Any]] = {}
        init = self.call("initialize", {"clientName": "raw-bench"})
        self.g2 = "environmentInfo" in init
        self.send({"method": "initialized", "params": {}})

    def uri(self, path: str) -> str:
        """The wire form of an absolute path (file:// URI on G2)."""
        return Path(path).as_uri() if self.g2 else path

    def send(self, obj: Any) -> None:
        self.ws.send(self.dumps(obj))

    def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = self.loads(self.ws.recv())
        if self.quickack:
            sock = self.ws.sock
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        return msg

    def request(self, method: str, params: Any) -> int:
        rid = next(self.ids)
        self.send({"id": rid, "method": method, "params": params})
        return rid

    def wait(self, rid: int) -> Any:
        """The result of request ``rid``; notifications seen meanwhile go to ``stash``."""
        msg = self.early.pop(rid, None)
        while msg is None:
            msg = self.recv()
            if "method" in msg:
                self.stash.append(msg)
                msg = None
            elif msg.get("id") != rid:
                self.early[msg["id"]] = msg
                msg = None
        if "error" in msg:
            raise RawError(msg["error"])
        return msg.get("result")

    def call(self, method: str, params: Any) -> Any:
        return self.wait(self.request(method, params))

    def next_notification(self) -> dict[str, Any]:
        if self.stash:
            return self.stash.popleft()
        while True:
            msg = self.recv()
            if "method" in msg:
                return msg

    def wait_closed(self, process_id: str) -> None:
        """Read notifications until ``process/closed`` for ``process_id``."""
        while True:
            msg = self.next_notification()
            if msg["method"] == "process/closed" and msg["params"]["processId"] == process_id:
                return

    def close(self) -> None:
        self.ws.close()


class ThreadedRawClient:
    """The smallest client with the SDK's shape: one reader thread owns the socket and wakes
    the calling thread through a per-call lock. No typed layer, no timeouts, no reconnect:
    what it costs is the floor of the one-reader design, without any of execsdk's code.
    Thread-safety: ``call`` from any number of threads."""

    def __init__(self, url: str) -> None:
        self.raw = RawClient(url)
        self.g2 = self.raw.g2
        self.uri = self.raw.uri
        self._pending: dict[int, list[Any]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1_000_000)
        self._reader = threading.Thread(target=self._read, name="raw-threaded-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        recv = self.raw.recv
        pending, lock = self._pending, self._lock
        try:
            while True:
                msg = recv()
                rid = msg.get("id")
                if rid is None:
                    continue
                with lock:
                    slot = pending.pop(rid, None)
                if slot is not None:
                    slot[1] = msg
                    slot[0].release()
        except Exception:  # the socket closed: wake everybody
            with lock:
                slots = list(pending.values())
                pending.clear()
            for slot in slots:
                slot[0].release()

    def call(self, method: str, params: Any) -> Any:
        done = threading.Lock()
        done.acquire()
        slot: list[Any] = [done, None]
        rid = next(self._ids)
        with self._lock:
            self._pending[rid] = slot
        data = self.raw.dumps({"id": rid, "method": method, "params": params})
        with self._send_lock:
            self.raw.ws.send(data)
        done.acquire()
        msg = slot[1]
        if msg is None:
            raise RawError("connection closed")
        if "error" in msg:
            raise RawError(msg["error"])
        return msg.get("result")

    def close(self) -> None:
        self.raw.close()
        self._reader.join(5)
