"""Who may use the console and the admin API, and the headers every answer carries.

- A request is let in with ``Authorization: Bearer TOKEN`` (scripts, the API) or with the
  console's session cookie (set after the token was typed once; HttpOnly, SameSite=Strict).
  Both are compared in constant time. Without either: 401 ``{"error": ...}`` and nothing else.
- A changing request (POST) let in by the cookie must also come from the console itself:
  ``Origin`` (or ``Sec-Fetch-Site``) same-origin, and the CSRF token the pages carry. One
  carrying the ``Authorization`` header needs neither (a browser never adds it by itself).
- The session and CSRF values are derived from the token (HMAC), so every node serving
  the same configuration accepts them, a restart keeps them, and changing the token ends
  every session. Neither reveals the token.
- The token is the current configuration's at every request: a reload (SIGHUP) that
  changes it takes effect at once (the old token and its sessions are refused); one that
  removes ``[console]`` turns the console off (404), one that adds it turns it on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

SESSION_COOKIE = "te_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


class Access:
    """The token's checks (see the module). ``token``: the current configuration's, or
    ``None`` when it has no ``[console]`` (the console is off)."""

    def __init__(self, token: Callable[[], str | None]) -> None:
        self._token = token

    def enabled(self) -> bool:
        """Whether the current configuration serves the console."""
        return bool(self._token())

    def _current(self) -> str:
        token = self._token()
        if not token:  # turned off by a reload after this request was let in: nothing
            raise web.HTTPNotFound(text="the console is off")
        return token

    def session_value(self) -> str:
        """The session cookie's value for the current token."""
        return _derive(self._current(), "trigger-engine console session")

    def csrf_value(self) -> str:
        """The CSRF token the console's forms and scripts send with each POST."""
        return _derive(self._current(), "trigger-engine console csrf")

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return hmac.compare_digest(given.encode(), self._current().encode())

    def bearer(self, request: web.Request) -> bool:
        """Whether the request carries ``Authorization: Bearer TOKEN``."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def session(self, request: web.Request) -> bool:
        """Whether the request carries the session cookie."""
        value = request.cookies.get(SESSION_COOKIE, "")
        return bool(value) and hmac.compare_digest(value.encode(), self.session_value().encode())

    def same_origin(self, request: web.Request) -> bool:
        """Whether a browser says the request comes from a page of this origin."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":
            # "null": what Chromium sends with a form under Referrer-Policy: no-referrer;
            # then Sec-Fetch-Site (same-origin, checked above) is the browser's word
            return site is not None
        parts = urlsplit(origin)
        return parts.netloc == request.host and parts.scheme == request.scheme

    def csrf_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the CSRF token (constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_value().encode())


def protected(path: str) -> bool:
    """Whether ``path`` belongs to the console or the API (not /healthz, /livez, /metrics)."""
    return path not in ("/healthz", "/livez", "/metrics")


def security_middleware(
    access: Access,
    *,
    public: Callable[[web.Request], bool],
    refuse: Callable[[web.Request, int, str], web.StreamResponse],
) -> Middleware:
    """The aiohttp middleware: the security headers on every console and API answer;
    401 without the token; 403 for a cookie POST from elsewhere or without the CSRF
    token; 404 for everything while the configuration has no ``[console]``. ``public``:
    requests let in without the token (the login page and its assets). ``refuse``: the
    answer to a request turned away (JSON for the API, a page for the console)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not protected(request.path):
            return await handler(request)
        if not access.enabled():
            response = refuse(
                request, 404, "the console is off (no [console] in the configuration)"
            )
        else:
            response = await _checked(request, handler)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
        if public(request):
            return await handler(request)
        if access.bearer(request):
            return await handler(request)
        if not access.session(request):
            return refuse(request, 401, "a valid token is required (Authorization: Bearer TOKEN)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if not access.same_origin(request):
                return refuse(request, 403, "cross-site request refused")
            given = request.headers.get(CSRF_HEADER)
            if given is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form = await request.post()
                field = form.get(CSRF_FIELD)
                given = field if isinstance(field, str) else None
            if not access.csrf_ok(given):
                return refuse(request, 403, "the CSRF token is missing or wrong: reload the page")
        return await handler(request)

    return middleware
