"""``trigger-engine demo``: the whole engine in one process, with no account and no network.

The embedded Meet Alfred simulator adds leads, connections and campaigns over time; the
engine polls it on short intervals, with a temporary SQLite database; a local receiver
verifies each webhook's signature and shows what arrived, until Ctrl-C or ``--duration``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import secrets
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Final, TextIO

import orjson
from aiohttp import web

from trigger_engine.config import config_from_dict
from trigger_engine.core.signing import secret_key, sign
from trigger_engine.db.store import Store
from trigger_engine.polling.source import Source
from trigger_engine.runtime.daemon import Daemon
from trigger_engine.sandbox.server import SimulatorThread
from trigger_engine.sandbox.simulator import Simulator
from trigger_engine.states import DeliveryStatus
from trigger_engine.threads import in_daemon_thread
from trigger_engine.types import AttemptOutcome, PollReport

DEMO_KEY = "demo"

_DUMB_TERMINALS: Final = ("dumb", "unknown")  # TERM values that cannot show colour
# SGR codes of the words a style is made of ("bold red": both).
_SGR: Final = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def _describe(kind: str, data: dict[str, Any]) -> str:
    if kind == "lead.new":
        person = data.get("person") or {}
        campaign = (data.get("campaign") or {}).get("name", "")
        return f"{person.get('name') or data.get('id')} — {person.get('current_title') or ''}" + (
            f" (campaign: {campaign})" if campaign else ""
        )
    if kind == "connection.new":
        return f"{data.get('name')} — {data.get('headline') or ''}"
    if kind == "campaign.new":
        return f"#{data.get('key')} {data.get('name')}"
    return str(data.get("id", ""))


class LineWriter:
    """Writes whole lines to ``out``, in colour only where colour is welcome.

    Colour (ANSI SGR codes) when ``out`` is a terminal, ``NO_COLOR`` is unset or empty
    (https://no-color.org) and ``TERM`` is not ``dumb`` or ``unknown``; plain text otherwise,
    so that a pipe, a file or a test reads exactly the words. Safe to call from several threads.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self.colour = (
            out.isatty()
            and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM", "").lower() not in _DUMB_TERMINALS
        )

    def line(self, text: str, style: str | None = None) -> None:
        """Write ``text`` and a newline, then flush; ``style``: words of :data:`_SGR`."""
        if style is not None and self.colour:
            codes = ";".join(_SGR[word] for word in style.split())
            text = f"\x1b[{codes}m{text}\x1b[0m"
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()


class DemoView:
    """One line per happening: polls, deliveries and what the receiver got."""

    def __init__(self, out: TextIO) -> None:
        self.writer = LineWriter(out)
        self.received = 0
        self.verified = 0

    def line(self, text: str, style: str | None = None) -> None:
        """Write one line, in ``style`` where colour is welcome."""
        self.writer.line(text, style)

    def poll(self, report: PollReport) -> None:
        """One line for a poll that failed, seeded, or found new items."""
        if not report.ok:
            self.line(f"  poll  {report.trigger:<11} failed: {report.error}", "red")
        elif report.first_poll:
            self.line(
                f"  poll  {report.trigger:<11} first poll: {report.remembered} existing items "
                "remembered, not fired (Zapier's rule)",
                "dim",
            )
        elif report.new_events:
            self.line(f"  poll  {report.trigger:<11} {report.new_events} new", "cyan")

    def attempt(self, outcome: AttemptOutcome) -> None:
        """One line per delivery attempt."""
        status = outcome.status_code if outcome.status_code is not None else outcome.error
        self.line(
            f"  send  {outcome.event_id} attempt {outcome.attempt} → {status} "
            f"({outcome.new_status}, {outcome.duration_ms} ms)",
            "green" if outcome.new_status == DeliveryStatus.DELIVERED else "yellow",
        )


def receiver_app(view: DemoView, key: bytes) -> web.Application:
    """The demo's receiver: verifies each webhook's signature and shows it on ``view``."""

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        h = request.headers
        expected = sign(key, h["webhook-id"], int(h["webhook-timestamp"]), body)
        ok = hmac.compare_digest(expected, h.get("webhook-signature", ""))
        event = orjson.loads(body)
        view.received += 1
        view.verified += ok
        mark = "signature verified" if ok else "BAD SIGNATURE"
        view.line(
            f"  recv  {event['type']:<15} {_describe(event['type'], event['data'])}  [{mark}]",
            "bold" if ok else "bold red",
        )
        return web.Response(status=204 if ok else 400)

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


def demo_config(
    *,
    api_url: str,
    sink_url: str,
    secret: str,
    console_port: int,
    console_token: str,
    workdir: Path,
    interval: float,
) -> dict[str, Any]:
    """The demo's configuration (as a dict): the simulator's account, its three triggers
    on short intervals, one signed sink, the console on 127.0.0.1:``console_port``, a
    SQLite database in ``workdir`` (``docs/screenshots.py`` adds sinks to it)."""
    return {
        "engine": {
            "database": f"sqlite:///{workdir / 'demo.db'}",
            "listen": f"127.0.0.1:{console_port}",
        },
        "console": {"token": console_token},
        "source": {"base_url": api_url, "timeout": "5s"},
        "accounts": [{"name": "demo", "api_key": DEMO_KEY}],
        "triggers": {
            "leads": {"interval": interval},
            "connections": {"interval": interval * 1.5},
            "campaigns": {"interval": interval * 3},
        },
        "sinks": [{"name": "receiver", "url": sink_url, "secret": secret}],
    }


async def _main(duration: float | None, interval: float, view: DemoView, workdir: Path) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    runner = web.AppRunner(receiver_app(view, secret_key(secret)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sim = Simulator(api_key=DEMO_KEY, seed=secrets.randbelow(10**6), initial=5)
    console_port = free_port()
    console_token = secrets.token_urlsafe(16)  # this run's only: printed for the user
    try:
        with SimulatorThread(sim, new_item_interval=interval) as api:
            config = config_from_dict(
                demo_config(
                    api_url=api.base_url,
                    sink_url=f"http://127.0.0.1:{port}/hook",
                    secret=secret,
                    console_port=console_port,
                    console_token=console_token,
                    workdir=workdir,
                    interval=interval,
                )
            )
            view.line(f"Meet Alfred simulator: {api.base_url} (api_key={DEMO_KEY})")
            view.line(f"webhook receiver:      http://127.0.0.1:{port}/hook (signed, verified)")
            view.line(f"database:              {workdir / 'demo.db'} (temporary)")
            view.line(
                f"console:               http://127.0.0.1:{console_port}/ "
                f"(token {console_token}, this run's only)"
            )
            view.line("new items appear every few seconds; Ctrl-C to stop\n")
            store = await in_daemon_thread(Store.open, config.database_url())
            try:
                with Source(config.source) as source:
                    daemon = Daemon(
                        config, store, source, on_poll=view.poll, on_attempt=view.attempt
                    )
                    await daemon.run(stop_after=duration)
            finally:
                store.close()
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A port on 127.0.0.1 that is free now (the console's, for this run)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(duration: float | None, *, interval: float = 2.0, out: TextIO = sys.stdout) -> int:
    """``trigger-engine demo``: run until Ctrl-C or for ``duration`` seconds; returns 0."""
    view = DemoView(out)
    with tempfile.TemporaryDirectory(prefix="trigger-engine-demo-") as tmp:
        asyncio.run(_main(duration, interval, view, Path(tmp)))
    view.line(
        f"\nstopped: {view.received} webhooks received, {view.verified} with a verified signature"
    )
    return 0
