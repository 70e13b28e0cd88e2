"""Screenshots of the web console for the README, taken from a demo-like run.

    PYTHONPATH=. python docs/screenshots.py [OUT_DIR]     # default: docs/screenshots/

Starts what ``trigger-engine demo`` starts (the simulator, the signed receiver, the daemon
with the console: :mod:`trigger_engine.sandbox.demo`'s pieces) plus a sink answering 500
(its deliveries die after two attempts) and one paused from the admin API (its deliveries
are held), lets a few leads arrive, then logs in with headless Chromium (Selenium,
``/usr/bin/chromium`` and ``/usr/bin/chromedriver``) and saves one PNG per page at
1280x800: login, overview, events, an event (its failed attempts), dead and held.
Not a test (pytest does not collect ``docs/``); needs a few seconds and no network.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from trigger_engine.config import config_from_dict
from trigger_engine.core.signing import secret_key
from trigger_engine.db.store import Store
from trigger_engine.ops import logs
from trigger_engine.polling.source import Source
from trigger_engine.runtime.daemon import Daemon
from trigger_engine.sandbox.demo import DEMO_KEY, DemoView, demo_config, free_port, receiver_app
from trigger_engine.sandbox.server import SimulatorThread
from trigger_engine.sandbox.simulator import Simulator
from trigger_engine.threads import in_daemon_thread

SIZE = (1280, 800)
SECRET = "whsec_" + "c2NyZWVuc2hvdHMtZGVtby1zZWNyZXQtMjQ="  # this run's receiver only


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


def _failing() -> web.Application:
    async def hook(_request: web.Request) -> web.Response:
        return web.json_response({"error": "billing is down for maintenance"}, status=500)

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


def _api(base: str, token: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 (a loopback address of this run)
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def _shoot(base: str, token: str, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    def wait_for(what: str, ok: Any) -> None:
        deadline = time.monotonic() + 60
        while True:
            sinks = {s["name"]: s for s in _api(base, token, "/api/v1/status")["sinks"]}
            if ok(sinks):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"no {what} after 60 s: {sinks}")
            time.sleep(0.3)

    # what the pages should show: dead deliveries at billing, then a few held at archive
    wait_for("dead deliveries", lambda sinks: sinks["billing"]["dead"] >= 4)
    _api(base, token, "/api/v1/sinks/archive/pause", {})
    wait_for("held deliveries", lambda sinks: sinks["archive"]["held"] >= 3)
    page = _api(base, token, "/api/v1/events?type=lead.new&status=dead&sink=billing&limit=1")
    event_id = page["events"][0]["id"]

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-lcd-text",  # grey antialiasing: fewer colours, smaller PNGs
        "--force-color-profile=srgb",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.execute_cdp_cmd(  # the page's own size, whatever the window's frame takes
            "Emulation.setDeviceMetricsOverride",
            {"width": SIZE[0], "height": SIZE[1], "deviceScaleFactor": 1, "mobile": False},
        )
        driver.get(f"{base}/login")
        driver.save_screenshot(str(out / "login.png"))
        driver.find_element(By.NAME, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        time.sleep(0.5)
        for name, path in (
            ("overview", "/"),
            ("events", "/events"),
            ("event", f"/events/{event_id}"),
            ("deliveries", "/deliveries"),
        ):
            driver.get(base + path)
            time.sleep(0.3)  # fonts and layout settle
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"{out / name}.png: {driver.title}")
    finally:
        driver.quit()
    _shrink(sorted(out.glob("*.png")))


def _shrink(pngs: list[Path]) -> None:
    """With ``pngquant`` (apt-get install pngquant): 256 colours, a third of the size."""
    tool = shutil.which("pngquant")
    if tool is None:
        print("pngquant not found: the PNGs are left as Chromium wrote them")
        return
    subprocess.run(  # noqa: S603 (our own files)
        [tool, "--force", "--skip-if-larger", "--strip", "--ext", ".png", "256", *map(str, pngs)],
        check=True,
    )
    total = sum(p.stat().st_size for p in pngs)
    print(f"{len(pngs)} PNGs, {total // 1024} KB in all")


async def _main(out: Path, workdir: Path) -> None:
    view = DemoView(io.StringIO())  # the demo's lines are not wanted here
    good, good_port = await _serve(receiver_app(view, secret_key(SECRET)))
    bad, bad_port = await _serve(_failing())
    sim = Simulator(api_key=DEMO_KEY, seed=20261201, initial=5)
    console_port = free_port()
    token = secrets.token_urlsafe(16)
    base = f"http://127.0.0.1:{console_port}"
    try:
        with SimulatorThread(sim, new_item_interval=0.5) as api:
            raw = demo_config(
                api_url=api.base_url,
                sink_url=f"http://127.0.0.1:{good_port}/hook",
                secret=SECRET,
                console_port=console_port,
                console_token=token,
                workdir=workdir,
                interval=1.0,
            )
            raw["sinks"] += [
                {
                    "name": "billing",
                    "url": f"http://127.0.0.1:{bad_port}/hook",
                    "secret": SECRET,
                    "events": ["lead.new"],
                    "retry": {"schedule": ["1s"]},
                },
                {"name": "archive", "url": f"http://127.0.0.1:{good_port}/hook", "secret": SECRET},
            ]
            config = config_from_dict(raw)
            store = await in_daemon_thread(Store.open, config.database_url())
            try:
                with Source(config.source) as source:
                    daemon = Daemon(config, store, source)

                    async def shoot() -> None:
                        while True:  # the console answers once the daemon serves
                            try:
                                await in_daemon_thread(_api, base, token, "/api/v1/status")
                                break
                            except OSError:
                                await asyncio.sleep(0.1)
                        try:
                            await in_daemon_thread(_shoot, base, token, out)
                        finally:
                            daemon.signal_stop("screenshots taken")

                    task = asyncio.create_task(shoot())
                    await daemon.run()
                    await task
            finally:
                store.close()
    finally:
        await good.cleanup()
        await bad.cleanup()


def main() -> int:
    """Take the screenshots into ``argv[1]`` (default ``docs/screenshots``)."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    logs.setup(level=logging.CRITICAL)  # the daemon's lines are not wanted here
    with tempfile.TemporaryDirectory(prefix="trigger-engine-screenshots-") as tmp:
        asyncio.run(_main(out, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
