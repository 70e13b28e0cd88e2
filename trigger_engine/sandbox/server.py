"""The simulator's HTTP face: the aiohttp app and the ways to run it (in a loop, a thread, a CLI).

The endpoints, the faults and the control endpoints are described at the top of
:mod:`trigger_engine.sandbox.simulator`; the state they serve is a :class:`Simulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import signal
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final

import orjson
from aiohttp import web

from trigger_engine.errors import RuntimeFailure
from trigger_engine.sandbox.faults import Fault, fault_from_json
from trigger_engine.sandbox.records import KINDS
from trigger_engine.sandbox.simulator import Simulator

VENDOR_PREFIX: Final = "/api/integrations/zapier"
DEFAULT_PER_PAGE: Final = 100
MAX_CONTROL_ADD: Final = 1_000_000  # items one POST /_control/{kind}?n=N may add
SHUTDOWN_TIMEOUT: Final = 2.0  # seconds a stopping server grants requests still in flight
_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 30.0


# --------------------------------------------------------------------------- the application


def make_app(sim: Simulator) -> web.Application:
    """A new aiohttp application serving ``sim``: the list endpoints and the control ones."""
    application = web.Application()
    for kind in KINDS:
        handler = functools.partial(_serve_list, sim, kind)
        for prefix in ("", VENDOR_PREFIX):
            application.router.add_get(f"{prefix}/{kind}", handler)
            application.router.add_get(f"{prefix}/{kind}/", handler)
    application.router.add_post("/_control/fault", functools.partial(_control_fault, sim))
    application.router.add_post("/_control/{kind}", functools.partial(_control_add, sim))
    return application


async def _serve_list(sim: Simulator, kind: str, request: web.Request) -> web.StreamResponse:
    """A list endpoint: log the request, serve a queued fault if one applies, check the key,
    then serve the list (or one page of it)."""
    sim.log_request(request.path, request.query)
    fault = sim.take_fault(f"/{kind}")
    if fault is not None:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if not fault.is_pure_delay:
            return _fault_response(fault)
    if not sim.key_matches(request.query.get(sim.auth_param)):
        return _json_response({"error": "invalid api key"}, status=401)
    if "page" not in request.query:
        return web.Response(body=sim.list_body(kind), content_type="application/json")
    try:
        page = _positive_int(request.query, "page", None)
        per_page = _positive_int(request.query, "per_page", DEFAULT_PER_PAGE)
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    return web.Response(body=sim.page_body(kind, page, per_page), content_type="application/json")


async def _control_fault(sim: Simulator, request: web.Request) -> web.Response:
    """``POST /_control/fault``: queue the fault in the body."""
    try:
        fault = fault_from_json(orjson.loads(await request.read()))
    except orjson.JSONDecodeError:
        return _json_response({"error": "the body must be a JSON object"}, status=400)
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    sim.inject(fault)
    return _json_response({"queued": True, "pending_faults": len(sim.pending_faults())})


async def _control_add(sim: Simulator, request: web.Request) -> web.Response:
    """``POST /_control/{kind}?n=N``: add N items now."""
    kind = request.match_info["kind"]
    if kind not in KINDS:
        return _json_response({"error": f"unknown kind {kind!r}"}, status=404)
    try:
        n = _positive_int(request.query, "n", 1, maximum=MAX_CONTROL_ADD)
    except ValueError as exc:
        return _json_response({"error": str(exc)}, status=400)
    total = sim.add_items(kind, n)
    return _json_response({"added": n, "total": total})


def _json_response(data: object, *, status: int = 200) -> web.Response:
    """``data`` as a JSON response."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _fault_response(fault: Fault) -> web.Response:
    """What ``fault`` answers instead of the list (after its delay)."""
    body = fault.body
    if body is None:
        body = orjson.dumps({"error": f"simulated fault (HTTP {fault.status})"})
    headers = {"Content-Type": fault.content_type}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    return web.Response(body=body, status=fault.status, headers=headers)


def _positive_int(
    query: Mapping[str, str], name: str, default: int | None, maximum: int | None = None
) -> int:
    """The query parameter ``name`` as a positive integer; ValueError says what is wrong."""
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value}")
    return value


# --------------------------------------------------------------------------- running it


async def start(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve ``sim`` on ``host:port`` (0: any free port). Returns the runner (call
    ``await runner.cleanup()`` to stop) and the bound port."""
    runner = web.AppRunner(
        make_app(sim),
        access_log=None,  # the access log would print the query string, with the key
        handler_cancellation=True,  # a client that gave up ends its slow answer
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


async def _tick_every(sim: Simulator, interval: float) -> None:
    """Call :meth:`Simulator.tick` every ``interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        sim.tick()


class SimulatorThread:
    """Runs a simulator server on its own event loop in a daemon thread, for sync code::

        with SimulatorThread(Simulator()) as server:
            httpx.get(f"{server.base_url}/leads", params={"api_key": "demo"})

    With ``new_item_interval`` (seconds), :meth:`Simulator.tick` runs that often.
    """

    def __init__(
        self, sim: Simulator, port: int = 0, *, new_item_interval: float | None = None
    ) -> None:
        if new_item_interval is not None and new_item_interval <= 0:
            raise ValueError(f"new_item_interval must be positive, not {new_item_interval}")
        self.sim = sim
        self.port = port
        self.base_url = ""
        self._requested_port = port
        self._interval = new_item_interval
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        if self._thread is not None:
            raise RuntimeError("this SimulatorThread was already started")
        self._thread = threading.Thread(target=self._run, name="meetalfred-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"the simulator did not start within {_START_TIMEOUT:g} s")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT)
            error, self._error = self._error, None
            raise error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if thread.is_alive():
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(stop.set)
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"the simulator thread did not stop within {_STOP_TIMEOUT:g} s")
        if self._error is not None:  # the server failed while serving
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # handed to the thread that started or stops us
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        runner, port = await start(self.sim, port=self._requested_port)
        ticker: asyncio.Task[None] | None = None
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            if self._interval is not None:
                ticker = asyncio.create_task(_tick_every(self.sim, self._interval))
            self.port = port
            self.base_url = f"http://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await runner.cleanup()


def serve_forever(
    *,
    port: int,
    api_key: str,
    new_item_interval: float,
    seed: int | None,
    auth_param: str = "api_key",
) -> int:
    """``trigger-engine simulator``: serve on 127.0.0.1 until SIGINT/SIGTERM, then return 0.

    Every ``new_item_interval`` seconds (0 or less: never) :meth:`Simulator.tick` adds a lead,
    every 2nd tick a connection, every 5th a campaign. Without a seed, a random one.
    Raises :class:`~trigger_engine.errors.RuntimeFailure` when the port cannot be bound.
    """
    sim = Simulator(
        api_key=api_key,
        seed=secrets.randbits(32) if seed is None else seed,
        auth_param=auth_param,
    )
    return asyncio.run(_serve(sim, port, new_item_interval))


async def _serve(sim: Simulator, port: int, interval: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            runner, bound = await start(sim, port=port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise RuntimeFailure(
                f"The simulator cannot listen on 127.0.0.1:{port} ({reason}); "
                "choose another port with --port."
            ) from exc
        ticker = asyncio.create_task(_tick_every(sim, interval)) if interval > 0 else None
        try:
            print(
                f"Meet Alfred simulator on http://127.0.0.1:{bound} "
                f"(api key parameter {sim.auth_param}={sim.api_key})",
                flush=True,
            )
            await stop.wait()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await runner.cleanup()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0
