"""``GET /healthz`` and ``GET /metrics`` on ``[engine] listen``, served by aiohttp on the
engine's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from trigger_engine.errors import TriggerEngineError
from trigger_engine.ops.metrics import Metrics
from trigger_engine.threads import in_daemon_thread


def make_app(
    metrics: Metrics, *, scheduler_running: Callable[[], bool], ping_database: Callable[[], None]
) -> web.Application:
    """The aiohttp application serving /healthz and /metrics."""

    async def healthz(_request: web.Request) -> web.Response:
        if not scheduler_running():
            return web.Response(status=503, text="unhealthy: the scheduler is not running\n")
        try:
            await asyncio.wait_for(in_daemon_thread(ping_database), timeout=5)
        except TimeoutError:
            return web.Response(status=503, text="unhealthy: the database did not answer in 5s\n")
        except (TriggerEngineError, OSError, Exception) as exc:  # any failure is a 503
            return web.Response(status=503, text=f"unhealthy: the database failed: {exc}\n")
        return web.Response(text="ok\n")

    async def metrics_page(_request: web.Request) -> web.Response:
        body = await in_daemon_thread(metrics.render)
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Serve ``app`` on ``HOST:PORT``; the runner's cleanup() stops it."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner
