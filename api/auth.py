"""Bearer-token auth for ``/api`` and the page's session cookie.

With ``IMPORTD_API_TOKENS`` every ``/api`` request needs a bearer token; the page trades its
token for an HttpOnly, SameSite=Strict cookie signed with a key derived from it, honoured for
GET/HEAD only. Without tokens only loopback clients are served. Why: README, "HTTP API".
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from importd.config import Settings

#: Name of the page's session cookie.
COOKIE = "importd_session"
#: Methods a session cookie may authorise (read-only: no cross-site writes).
COOKIE_METHODS = frozenset({"GET", "HEAD"})


def _fingerprint(token: str) -> str:
    return hashlib.sha256(b"importd-token\0" + token.encode()).hexdigest()[:16]


def _sign(token: str, payload: str) -> str:
    key = hashlib.sha256(b"importd-session\0" + token.encode()).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def issue_session(token: str, ttl_s: int, now: float | None = None) -> str:
    """Cookie value ``<expiry>.<token fingerprint>.<hmac>`` for a valid bearer ``token``."""
    payload = f"{int((now or time.time()) + ttl_s)}.{_fingerprint(token)}"
    return f"{payload}.{_sign(token, payload)}"


def check_session(value: str, tokens: list[str], now: float | None = None) -> bool:
    try:
        expiry, fingerprint, signature = value.split(".")
        if int(expiry) < (now or time.time()):
            return False
    except ValueError:
        return False
    for token in tokens:
        if hmac.compare_digest(_fingerprint(token), fingerprint):
            return hmac.compare_digest(_sign(token, f"{expiry}.{fingerprint}"), signature)
    return False


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def valid_token(token: str | None, tokens: list[str]) -> bool:
    """Constant-time match against every configured token."""
    if token is None:
        return False
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(candidate.encode(), token.encode())
    return found


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is no session
                return None
            if COOKIE in jar:
                return jar[COOKIE].value
    return None


def is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class AuthMiddleware:
    """Pure ASGI (never buffers a body or a stream): 401 on ``/api`` without a valid token."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.tokens = settings.token_list
        self.allow_remote = settings.api_allow_remote_without_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.tokens:
            if not self.allow_remote and not is_loopback(scope):
                response = error_response(403, "forbidden", "no API tokens are configured: loopback clients only")
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/api") and not self.authorised(scope):
            response = error_response(401, "unauthorized", "missing or invalid bearer token",
                                      headers={"WWW-Authenticate": 'Bearer realm="importd"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def authorised(self, scope: Scope) -> bool:
        headers = scope["headers"]
        if valid_token(bearer_token(headers), self.tokens):
            return True
        if scope["method"] in COOKIE_METHODS:
            value = _cookie(headers)
            return value is not None and check_session(value, self.tokens)
        return False
