"""Who may open a WebSocket to ``execsdk serve``: the two bearer schemes of codex 0.169.

- ``capability-token``: the client sends ``Authorization: Bearer <token>``; the server keeps
  only the token's SHA-256 digest and compares digests in constant time.
- ``signed-bearer-token``: the bearer is a JWT signed with HMAC-SHA256 under a shared secret of
  at least 32 bytes (PROTOCOL.md §1.3). ``exp`` is required and must not be past (give or take
  the clock-skew leeway, 30 s by default); ``nbf`` is honoured when present; ``iss`` and ``aud``
  are checked only when an issuer or audience is configured. Only ``alg: HS256`` is accepted.

Every refusal is a short fixed phrase (codex's wording) that says nothing about the expected
credential; it becomes the body of an HTTP 401. Nothing here logs a token or a secret.

Standard library only (hmac, hashlib, base64, json). Immutable after construction: safe from
any thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW",
    "MIN_SHARED_SECRET_BYTES",
    "Authenticator",
    "CapabilityToken",
    "SignedBearerToken",
    "authenticator_from_options",
    "bearer_token",
    "read_secret_file",
]

DEFAULT_MAX_CLOCK_SKEW = 30
MIN_SHARED_SECRET_BYTES = 32

MISSING = "missing websocket bearer token"
BAD_HEADER = "invalid authorization header"
BAD_TOKEN = "invalid websocket bearer token"
BAD_JWT = "invalid websocket jwt"
EXPIRED = "expired websocket jwt"
NOT_YET = "websocket jwt is not valid yet"
BAD_ISSUER = "websocket jwt issuer mismatch"
BAD_AUDIENCE = "websocket jwt audience mismatch"


class Authenticator(Protocol):
    """Decides on one upgrade request from its ``Authorization`` header value (None: absent)."""

    def refusal(self, authorization: str | None) -> str | None:
        """None to let the client in, else the reason (a fixed phrase, safe to send back)."""
        ...


def bearer_token(authorization: str | None) -> tuple[str | None, str | None]:
    """``(token, None)`` from an ``Authorization`` value, or ``(None, refusal)``.

    As codex: the scheme is ``Bearer`` in any case, separated by one space; the token is
    trimmed and must not be empty; the header must be visible ASCII.
    """
    if authorization is None:
        return None, MISSING
    if any(not (" " <= ch <= "~" or ch == "\t") for ch in authorization):
        return None, BAD_HEADER
    scheme, sep, token = authorization.partition(" ")
    if not sep or scheme.lower() != "bearer":
        return None, BAD_HEADER
    token = token.strip()
    if not token:
        return None, BAD_HEADER
    return token, None


def read_secret_file(path: str, what: str) -> str:
    """The trimmed content of a token or secret file (codex trims whitespace at both ends).

    Raises:
        ValueError: the path is relative, unreadable, or the file is empty; the message names
            the file and never its content.
    """
    if not os.path.isabs(path):
        raise ValueError(f"{what} {path!r} must be an absolute path")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"{what} {path!r}: cannot read it ({reason})") from None
    if not text:
        raise ValueError(f"{what} {path!r} is empty")
    return text


class CapabilityToken:
    """``--ws-auth capability-token``: one shared token. Thread-safety: immutable."""

    def __init__(self, token: str | None = None, *, sha256: bytes | None = None) -> None:
        if (token is None) == (sha256 is None):
            raise ValueError("give exactly one of token and sha256")
        if token is not None:
            token = token.strip()
            if not token:
                raise ValueError("the capability token must not be empty")
            sha256 = hashlib.sha256(token.encode("utf-8")).digest()
        assert sha256 is not None
        if len(sha256) != 32:
            raise ValueError("a SHA-256 digest is 32 bytes")
        self._digest = sha256

    @classmethod
    def from_hex(cls, text: str) -> CapabilityToken:
        """From ``--ws-token-sha256 HEX`` (64 hex digits)."""
        text = text.strip()
        try:
            digest = bytes.fromhex(text) if len(text) == 64 else b""
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ValueError("--ws-token-sha256 must be a 64-character hex SHA-256 digest")
        return cls(sha256=digest)

    def refusal(self, authorization: str | None) -> str | None:
        token, problem = bearer_token(authorization)
        if token is None:
            return problem
        actual = hashlib.sha256(token.encode("utf-8")).digest()
        # Digests have a fixed length, so the comparison time says nothing about the token.
        return None if hmac.compare_digest(actual, self._digest) else BAD_TOKEN

    def __repr__(self) -> str:
        return "CapabilityToken(<redacted>)"


# --------------------------------------------------------------------------- JWT


def _b64url_decode(text: str) -> bytes:
    """Unpadded base64url, strictly (no ``=``, no stray characters, canonical trailing bits)."""
    if not text or len(text) % 4 == 1 or "=" in text:
        raise ValueError("bad base64url")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64url") from None
    if _b64url_encode(raw) != text:  # non-zero trailing bits
        raise ValueError("bad base64url")
    return raw


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate field `{key}`")
        out[key] = value
    return out


def _json_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _int_claim(claims: dict[str, Any], name: str, required: bool) -> int | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise ValueError(f"missing `{name}`")
        return None
    if type(value) is not int or not _I64_MIN <= value <= _I64_MAX:
        raise ValueError(f"`{name}` is not an integer")
    return value


def _optional_str(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"`{name}` is not a string")
    return value


def _audiences(claims: dict[str, Any]) -> list[str] | None:
    value = claims.get("aud")
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("`aud` is neither a string nor a list of strings")


class SignedBearerToken:
    """``--ws-auth signed-bearer-token``: HS256 JWTs under a shared secret.

    Thread-safety: immutable (``clock`` is only read).
    """

    def __init__(
        self,
        secret: bytes,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        max_clock_skew: int = DEFAULT_MAX_CLOCK_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < MIN_SHARED_SECRET_BYTES:
            raise ValueError(
                f"the shared secret must be at least {MIN_SHARED_SECRET_BYTES} bytes "
                f"(got {len(secret)})"
            )
        if max_clock_skew < 0:
            raise ValueError("the clock skew must be >= 0 seconds")
        self._secret = bytes(secret)
        self._issuer = (issuer or "").strip() or None
        self._audience = (audience or "").strip() or None
        self._skew = int(max_clock_skew)
        self._clock = clock

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT for ``claims`` under this secret (for tests and tools that mint tokens)."""
        header = _b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{body}"
        return f"{signing_input}.{self._signature(signing_input)}"

    def _signature(self, signing_input: str) -> str:
        mac = hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256)
        return _b64url_encode(mac.digest())

    def refusal(self, authorization: str | None) -> str | None:
        token, problem = bearer_token(authorization)
        if token is None:
            return problem
        claims = self._verified_claims(token)
        if claims is None:
            return BAD_JWT
        try:
            exp = _int_claim(claims, "exp", required=True)
            nbf = _int_claim(claims, "nbf", required=False)
            issuer = _optional_str(claims, "iss")
            audiences = _audiences(claims)
        except ValueError:
            return BAD_JWT
        assert exp is not None
        now = int(self._clock())
        if now > exp + self._skew:
            return EXPIRED
        if nbf is not None and now < nbf - self._skew:
            return NOT_YET
        if self._issuer is not None and issuer != self._issuer:
            return BAD_ISSUER
        if self._audience is not None and (audiences is None or self._audience not in audiences):
            return BAD_AUDIENCE
        return None

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a well-formed token whose HS256 signature checks out, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header_text, claims_text, signature = parts
        try:
            header = _json_object(_b64url_decode(header_text))
            if header.get("alg") != "HS256":
                return None  # never "none", never another algorithm under this secret
            for name in ("typ", "cty", "kid"):
                _optional_str(header, name)
            expected = self._signature(f"{header_text}.{claims_text}")
            if not hmac.compare_digest(expected.encode(), signature.encode("ascii", "replace")):
                return None
            return _json_object(_b64url_decode(claims_text))
        except (ValueError, UnicodeDecodeError):
            return None

    def __repr__(self) -> str:
        return "SignedBearerToken(<redacted>)"


def authenticator_from_options(
    *,
    mode: str | None,
    token_file: str | None = None,
    token_sha256: str | None = None,
    shared_secret_file: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    max_clock_skew: int | None = None,
) -> Authenticator | None:
    """The authenticator the ``--ws-*`` options of ``execsdk serve`` ask for (None: none).

    As codex 0.169, except that a token option without ``--ws-auth`` means
    ``capability-token``. Files are read here, once.

    Raises:
        ValueError: a bad combination, an unreadable or empty file, a secret shorter than
            32 bytes; the message is one line that never contains a secret.
    """
    jwt_options = [
        name
        for name, value in (
            ("--ws-shared-secret-file", shared_secret_file),
            ("--ws-issuer", issuer),
            ("--ws-audience", audience),
            ("--ws-max-clock-skew-seconds", max_clock_skew),
        )
        if value is not None
    ]
    token_options = [
        name
        for name, value in (("--ws-token-file", token_file), ("--ws-token-sha256", token_sha256))
        if value is not None
    ]
    if mode is None and token_options:
        mode = "capability-token"
    if mode is None:
        if jwt_options:
            raise ValueError(f"{jwt_options[0]} needs --ws-auth signed-bearer-token")
        return None
    if mode == "capability-token":
        if jwt_options:
            raise ValueError(f"{jwt_options[0]} needs --ws-auth signed-bearer-token")
        if len(token_options) != 1:
            raise ValueError(
                "--ws-auth capability-token needs exactly one of --ws-token-file FILE and "
                "--ws-token-sha256 HEX"
            )
        if token_sha256 is not None:
            return CapabilityToken.from_hex(token_sha256)
        assert token_file is not None
        return CapabilityToken(read_secret_file(token_file, "--ws-token-file"))
    if mode == "signed-bearer-token":
        if token_options:
            raise ValueError(f"{token_options[0]} needs --ws-auth capability-token")
        if shared_secret_file is None:
            raise ValueError("--ws-auth signed-bearer-token needs --ws-shared-secret-file FILE")
        secret = read_secret_file(shared_secret_file, "--ws-shared-secret-file").encode("utf-8")
        if len(secret) < MIN_SHARED_SECRET_BYTES:
            raise ValueError(
                f"--ws-shared-secret-file {shared_secret_file!r}: the secret must be at least "
                f"{MIN_SHARED_SECRET_BYTES} bytes"
            )
        skew = DEFAULT_MAX_CLOCK_SKEW if max_clock_skew is None else max_clock_skew
        if skew < 0:
            raise ValueError("--ws-max-clock-skew-seconds must be >= 0")
        return SignedBearerToken(secret, issuer=issuer, audience=audience, max_clock_skew=skew)
    raise ValueError(f"--ws-auth {mode!r}: expected capability-token or signed-bearer-token")
