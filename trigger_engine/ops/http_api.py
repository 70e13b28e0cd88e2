"""``GET /healthz``, ``GET /livez`` and ``GET /metrics`` on ``[engine] listen``, served by
aiohttp on the engine's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from trigger_engine.ops.health import Health
from trigger_engine.ops.metrics import Metrics
from trigger_engine.threads import in_daemon_thread

# Seconds a request in progress may still take once the server stops (aiohttp's default is
# 60, and a daemon's stop must not wait for a page that waits for a locked database).
STOP_WITHIN = 0.5


def make_app(
    metrics: Metrics,
    *,
    readiness: Callable[[], Awaitable[Health]],
    liveness: Callable[[], Health],
    mount: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """The aiohttp application serving /healthz (readiness), /livez and /metrics (see
    :mod:`trigger_engine.ops.health` for what each checks); ``mount`` adds more (the
    console and the admin API, when ``[console]`` is configured)."""

    def answer(health: Health, ok: bool) -> web.Response:
        return web.json_response(health.body(), status=200 if ok else 503)

    async def healthz(_request: web.Request) -> web.Response:
        health = await readiness()
        return answer(health, health.ready)

    async def livez(_request: web.Request) -> web.Response:
        health = liveness()
        return answer(health, health.live)

    async def metrics_page(_request: web.Request) -> web.Response:
        body = await in_daemon_thread(metrics.render)
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics_page)
    if mount is not None:
        mount(app)
    return app


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Serve ``app`` on ``HOST:PORT``; :func:`stop` stops it."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_WITHIN)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner


async def stop(runner: web.AppRunner) -> bool:
    """Stop serving, within about twice :data:`STOP_WITHIN` seconds whatever a request waits
    on (a /metrics page reading a database that another session has locked): aiohttp waits
    that long for a request in progress, then as long again for its cancellation; the
    thread the request waits for is abandoned. The cleanup runs in a task of its own
    (``wait_for``), so that aiohttp does not mistake a daemon stopping at once (its task
    being cancelled) for its own cancellation. Returns whether it stopped in time."""
    try:
        await asyncio.wait_for(runner.cleanup(), 2 * STOP_WITHIN + 0.5)
    except TimeoutError:
        return False
    return True
