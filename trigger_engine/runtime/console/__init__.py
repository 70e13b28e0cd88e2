"""The web console and the admin API (``[console]``), mounted on the daemon's aiohttp
application beside /healthz and /metrics: :func:`mount`.

- ``api``: the JSON admin API under ``/api/v1/``;
- ``openapi``: its OpenAPI document, served at ``/api/v1/openapi.json``;
- ``pages``: the console's server-rendered pages (``/``, ``/events``, ``/login``...);
- ``security``: the token, the session cookie, CSRF and the security headers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from trigger_engine.config import Config
from trigger_engine.db.store import Store
from trigger_engine.runtime.console.api import PREFIX, AdminApi, ApiError, error_response
from trigger_engine.runtime.console.openapi import document
from trigger_engine.runtime.console.pages import Pages, is_public, refused
from trigger_engine.runtime.console.security import Access, Handler, security_middleware


def _refuse(request: web.Request, status: int, message: str) -> web.StreamResponse:
    if request.path.startswith(PREFIX):
        return error_response(status, message)
    return refused(status, message)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError, and aiohttp's own refusals under /api/, as ``{"error": ...}``."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if not request.path.startswith(PREFIX) or exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def mount(
    app: web.Application,
    config: Callable[[], Config],
    store: Store,
    *,
    clock: Callable[[], datetime],
) -> None:
    """Serve the admin API and the console's pages on ``app``, while ``config()`` (the
    current configuration: a reload changes it) has ``[console]``; 404 otherwise."""

    def token() -> str | None:
        console = config().console
        return None if console is None else console.token.get_secret_value()

    access = Access(token)
    app.middlewares.append(security_middleware(access, public=is_public, refuse=_refuse))
    app.middlewares.append(_errors)
    api = AdminApi(config, store, clock=clock)
    api.add_routes(app)
    Pages(api, access).add_routes(app)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document())

    app.router.add_get(f"{PREFIX}/openapi.json", openapi)
