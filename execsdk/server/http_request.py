"""``http/request``: the server fetches an http(s) URL for the client (PROTOCOL.md §3.20).

Validation messages follow codex 0.169. The answer is ``{"status", "headers", "bodyBase64"}``
with header names lower-cased and repeated headers kept. With ``streamResponse`` the answer
carries an empty body and the body follows as ``http/request/bodyDelta`` notifications
``{"requestId", "seq", "deltaBase64", "done", "error"}`` (seq from 1, a last empty delta with
``done: true``), sent by a thread of their own after the answer.

Built on ``urllib.request`` (proxies from the environment, as reqwest does by default).
Redirects are followed here, as codex 0.169 follows them: at most :data:`MAX_REDIRECTS`
(one more is -32603 "http/request failed: too many redirects"), only to http(s) (another
scheme is -32603 "http/request failed: redirect target uses unsupported URL scheme: ftp",
whatever the hop), a 303, or a 301/302 after a POST, continues as GET without the body;
``Authorization``, ``Cookie`` and friends are dropped when the host or port changes. A
redirect without a usable ``Location`` is the answer itself. The timeout covers the whole
chain. A URL quoted in an error never carries its ``user:password@`` (codex quotes it for
redirect targets: docs/server.md lists the difference).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import itertools
import logging
import re
import threading
import time
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

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SENSITIVE = frozenset(
    {"authorization", "cookie", "cookie2", "proxy-authorization", "www-authenticate"}
)
_CONTENT = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _NoFollow(urllib.request.HTTPRedirectHandler):
    """Hands every redirect back as the response: :meth:`HttpRequester._open` follows them."""

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
    ) -> None:
        return None  # the error processor then raises HTTPError: the redirect response

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _as_sent(req: urllib.request.Request) -> urllib.request.Request:
    # urllib adds a form Content-Type to any body; reqwest (codex) sends only what it is given.
    if not any(name.lower() == "content-type" for name in req.headers):
        req.unredirected_hdrs.pop("Content-type", None)
    return req


class _Http(urllib.request.HTTPHandler):
    def http_request(self, req: urllib.request.Request) -> urllib.request.Request:
        return _as_sent(super().http_request(req))


class _Https(urllib.request.HTTPSHandler):
    def https_request(self, req: urllib.request.Request) -> urllib.request.Request:
        return _as_sent(super().https_request(req))


_opener = urllib.request.build_opener(_NoFollow, _Http, _Https)
_opener.addheaders = [("Accept", "*/*")]  # reqwest's default; no User-Agent


def _invalid(message: str) -> errors.InvalidParams:
    return errors.InvalidParams(-32602, message)


def _display_url(url: str) -> str:
    """``url`` as reqwest prints it, without its userinfo (a password is a secret)."""
    split = urllib.parse.urlsplit(url)
    netloc = split.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(split._replace(netloc=netloc, path=split.path or "/"))


def _with_host(url: str) -> str:
    """The URL standard skips any number of slashes after http(s): (``http:///x`` is
    ``http://x/``)."""
    split = urllib.parse.urlsplit(url)
    if split.hostname:
        return url
    rest = url[len(split.scheme) + 1 :].lstrip("/\\")
    return f"{split.scheme.lower()}://{rest}"


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


def _without_userinfo(url: str) -> str:
    split = urllib.parse.urlsplit(url)
    if "@" not in split.netloc:
        return url
    return urllib.parse.urlunsplit(split._replace(netloc=split.netloc.rpartition("@")[2]))


def _referer(url: str, target: str) -> str:
    """The ``Referer`` of a redirect from ``url`` to ``target``, as codex writes it: ``url``
    without userinfo and fragment, only its origin when ``target`` is of another origin."""
    split = urllib.parse.urlsplit(url)
    netloc = split.netloc.rpartition("@")[2]
    if (split.scheme.lower(), *_origin(url)) != (
        urllib.parse.urlsplit(target).scheme.lower(),
        *_origin(target),
    ):
        return f"{split.scheme.lower()}://{netloc}/"
    return urllib.parse.urlunsplit(
        split._replace(netloc=netloc, path=split.path or "/", fragment="")
    )


def _origin(url: str) -> tuple[str | None, int | None]:
    split = urllib.parse.urlsplit(url)
    return split.hostname, split.port or _DEFAULT_PORTS.get(split.scheme.lower())


def _redirect_target(url: str, location: str | None) -> str | None:
    """Where a redirect from ``url`` leads, or None when its Location is unusable."""
    if location is None:
        return None
    location = location.strip()
    scheme = _SCHEME.match(location)
    try:
        if (
            scheme is not None
            and scheme.group(1).lower() in ("http", "https")
            and location[scheme.end() : scheme.end() + 1] in ("/", "\\")
        ):
            target = _with_host(location)  # absolute, whatever the base
        else:
            target = urllib.parse.urljoin(url, location)
        split = urllib.parse.urlsplit(target)
        if split.scheme.lower() in ("http", "https"):
            if not split.hostname:
                return None
            split.port  # noqa: B018 - raises on a bad port
            if split.netloc.rpartition("@")[2].startswith("["):
                ipaddress.IPv6Address(split.hostname)
    except ValueError:
        return None
    return target if split.scheme else None


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
        try:
            split = urllib.parse.urlsplit(url.strip())
            split.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            what = "invalid IPv6 address" if "IPv6" in str(exc) else "invalid port number"
            raise _invalid(f"http/request url is invalid: {what}") from None
        if not split.scheme or ":" not in url:
            raise _invalid("http/request url is invalid: relative URL without a base")
        scheme = split.scheme.lower()
        if scheme not in ("http", "https"):
            raise _invalid(f"http/request only supports http and https URLs, got {scheme}")
        if not split.hostname:
            url = _with_host(url.strip())
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
        """The final response of ``url`` (4xx/5xx and unfollowed redirects included)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        split = urllib.parse.urlsplit(url)
        if "@" in split.netloc and not any(k.lower() == "authorization" for k, _ in headers):
            # As codex: the request's own userinfo becomes a Basic Authorization header (kept
            # on redirects to the same host and port); a redirect target's is ignored.
            user = urllib.parse.unquote(split.username or "")
            password = urllib.parse.unquote(split.password or "")
            credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers = [*headers, ("Authorization", f"Basic {credentials}")]
        redirects = 0
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise errors.InternalError(
                        -32603, "http/request failed: route-aware request timed out"
                    )
            response = HttpRequester._send(method, url, headers, body, timeout)
            if response.status not in _REDIRECTS:
                return response
            target = _redirect_target(url, response.headers.get("Location"))
            if target is None:
                return response
            scheme = urllib.parse.urlsplit(target).scheme.lower()
            if scheme not in ("http", "https"):
                response.close()
                raise errors.InternalError(
                    -32603,
                    f"http/request failed: redirect target uses unsupported URL scheme: {scheme}",
                )
            if redirects >= MAX_REDIRECTS:
                response.close()
                raise errors.InternalError(-32603, "http/request failed: too many redirects")
            response.close()
            redirects += 1
            if (response.status == 303 and method != "HEAD") or (
                response.status in (301, 302) and method == "POST"
            ):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
                headers = [(k, v) for k, v in headers if k.lower() not in _CONTENT]
            if _origin(target) != _origin(url):
                headers = [(k, v) for k, v in headers if k.lower() not in _SENSITIVE]
            headers = [(k, v) for k, v in headers if k.lower() != "referer"]
            if not (url.lower().startswith("https:") and target.lower().startswith("http:")):
                headers.append(("Referer", _referer(url, target)))
            url = target

    @staticmethod
    def _send(
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: float | None,
    ) -> http.client.HTTPResponse:
        req = urllib.request.Request(_without_userinfo(url), data=body, method=method)
        for name, value in headers:
            req.add_header(name, value)
        try:
            response: http.client.HTTPResponse = _opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            # 4xx/5xx (and redirects, handed back by _NoFollow) are answers, not failures.
            return exc  # type: ignore[return-value]
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # Without query and userinfo: a signed URL's query or a user:password is a secret.
            safe = urllib.parse.urlsplit(url)
            where = f"{safe.scheme}://{safe.netloc.rpartition('@')[2]}{safe.path}"
            log.debug("http/request %s %s failed: %s", method, where, exc)
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                raise errors.InternalError(
                    -32603, "http/request failed: route-aware request timed out"
                ) from exc
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
