"""``http/request``: the server fetches an http(s) URL for the client (PROTOCOL.md §3.20).

Validation messages follow codex 0.169. The answer is ``{"status", "headers", "bodyBase64"}``
with header names lower-cased and repeated headers kept. With ``streamResponse`` the answer
carries an empty body and the body follows as ``http/request/bodyDelta`` notifications
``{"requestId", "seq", "deltaBase64", "done", "error"}`` (seq from 1, a last empty delta with
``done: true``), sent by a thread of their own after the answer.

Built on ``urllib.request`` (redirects followed, proxies from the environment, as reqwest does
by default).
"""

from __future__ import annotations

import http.client
import itertools
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from execsdk import errors
from execsdk._protocol.jsonrpc import encode_notification
from execsdk._protocol.wire import b64encode

__all__ = ["HttpRequester"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STREAM_CHUNK = 64 * 1024
_ids = itertools.count(1)


def _invalid(message: str) -> errors.InvalidParams:
    return errors.InvalidParams(-32602, message)


def _display_url(url: str) -> str:
    split = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(split._replace(path=split.path or "/"))


class HttpRequester:
    """The ``http/request`` state of one connection: its active body streams.

    ``emit`` receives each ``http/request/bodyDelta`` notification as JSON text.
    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, emit: Callable[[bytes], object]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._streams: dict[str, Any] = {}
        self._closed = False

    def request(self, params: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], None] | None]:
        """Perform the request; returns the answer and, when streaming, a starter to call
        once the answer is sent.

        Raises:
            errors.InvalidParams: bad method, URL or header, or a duplicate stream id.
            errors.InternalError: the request failed ("http/request failed: ...").
        """
        method: str = params["method"]
        url: str = params["url"]
        request_id: str = params["requestId"]
        stream: bool = params["streamResponse"]
        if not _TOKEN.fullmatch(method):
            raise _invalid("http/request method is invalid: invalid HTTP method")
        split = urllib.parse.urlsplit(url.strip())
        if not split.scheme or ":" not in url:
            raise _invalid("http/request url is invalid: relative URL without a base")
        scheme = split.scheme.lower()
        if scheme not in ("http", "https"):
            raise _invalid(f"http/request only supports http and https URLs, got {scheme}")
        if not split.hostname:
            # The URL standard skips any number of slashes after http(s): (http:///x is http://x/).
            rest = url.strip()[len(split.scheme) + 1 :].lstrip("/\\")
            url = f"{scheme}://{rest}"
            split = urllib.parse.urlsplit(url)
            if not split.hostname:
                raise _invalid("http/request url is invalid: empty host")
        headers: list[tuple[str, str]] = []
        for header in params["headers"]:
            name, value = header["name"], header["value"]
            if not _TOKEN.fullmatch(name):
                raise _invalid("http/request header name is invalid: invalid HTTP header name")
            if _BAD_VALUE.search(value):
                raise _invalid(
                    f"http/request header value is invalid for {name}: failed to parse header value"
                )
            headers.append((name, value))
        timeout_ms: int | None = params["timeoutMs"]
        if timeout_ms == 0:
            raise errors.InternalError(-32603, "http/request failed: route-aware request timed out")
        if stream:
            with self._lock:
                if request_id in self._streams:
                    raise _invalid(
                        f"http/request streamResponse requestId `{request_id}` is already active"
                    )
                self._streams[request_id] = None
        try:
            response = self._open(method, url, headers, params["bodyBase64"], timeout_ms)
        except BaseException:
            if stream:
                with self._lock:
                    self._streams.pop(request_id, None)
            raise
        result: dict[str, Any] = {
            "status": response.status,
            "headers": [{"name": k.lower(), "value": v} for k, v in response.getheaders()],
            "bodyBase64": "",
        }
        if not stream:
            try:
                result["bodyBase64"] = b64encode(response.read())
            except (OSError, http.client.HTTPException) as exc:
                raise errors.InternalError(
                    -32603, f"http/request failed: error decoding response body: {exc}"
                ) from exc
            finally:
                response.close()
            return result, None
        with self._lock:
            if self._closed:
                response.close()
                self._streams.pop(request_id, None)
                return result, None
            self._streams[request_id] = response

        def start() -> None:
            threading.Thread(
                target=self._pump,
                args=(request_id, response),
                name=f"execsdk-serve-http-{next(_ids)}",
                daemon=True,
            ).start()

        return result, start

    @staticmethod
    def _open(
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout_ms: int | None,
    ) -> http.client.HTTPResponse:
        req = urllib.request.Request(url, data=body, method=method)
        for name, value in headers:
            req.add_header(name, value)
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            # 4xx/5xx are answers, not failures.
            return exc  # type: ignore[return-value]
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # Without query and userinfo: a signed URL's query or a user:password is a secret.
            safe = urllib.parse.urlsplit(url)
            where = f"{safe.scheme}://{safe.netloc.rpartition('@')[2]}{safe.path}"
            log.debug("http/request %s %s failed: %s", method, where, exc)
            raise errors.InternalError(
                -32603, f"http/request failed: error sending request for url ({_display_url(url)})"
            ) from exc
        return response

    def _pump(self, request_id: str, response: http.client.HTTPResponse) -> None:
        seq = 0
        error: str | None = None
        try:
            while True:
                data = response.read1(_STREAM_CHUNK)
                if not data:
                    break
                seq += 1
                self._delta(request_id, seq, data, False, None)
        except Exception as exc:  # includes a close() from another thread mid-read
            error = f"error reading a chunk of the response body: {exc}"
        finally:
            response.close()
            with self._lock:
                self._streams.pop(request_id, None)
        seq += 1
        self._delta(request_id, seq, b"", True, error)

    def _delta(self, request_id: str, seq: int, data: bytes, done: bool, error: str | None) -> None:
        params = {
            "requestId": request_id,
            "seq": seq,
            "deltaBase64": b64encode(data),
            "done": done,
            "error": error,
        }
        self._emit(encode_notification("http/request/bodyDelta", params))

    def close(self) -> None:
        """Abort every body stream (connection closed). Idempotent."""
        with self._lock:
            self._closed = True
            responses = [r for r in self._streams.values() if r is not None]
            self._streams.clear()
        for response in responses:
            try:
                response.close()
            except Exception:
                log.debug("closing an http/request body stream failed", exc_info=True)
