"""The admin API against its own OpenAPI document, with schemathesis: the real API on a
real store (SQLite and PostgreSQL), every operation fuzzed and checked (status codes and
bodies as described, undeclared methods refused with Allow, no 5xx): failures 0."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from trigger_engine.clock import now
from trigger_engine.config import config_from_dict
from trigger_engine.core.dedupe import key_items
from trigger_engine.db.store import Store
from trigger_engine.ops.health import Health
from trigger_engine.ops.http_api import make_app
from trigger_engine.ops.metrics import Metrics
from trigger_engine.runtime import console

TOKEN = "schemathesis-token-0123456789"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

# A filter naming an account, a type or a time the engine does not know is a 400 with the
# CLI's sentence: no schema can say which names exist, so 400 is an expected answer to
# schema-valid data too.
CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"""


@pytest.fixture
def served(db_url: str) -> Iterator[str]:
    """The API on a free port, on a loop in a thread; yields its base URL."""
    config = config_from_dict(
        {
            "engine": {"database": db_url, "listen": "127.0.0.1:9464"},
            "console": {"token": TOKEN},
            "accounts": [{"name": "acme", "api_key": "alfred-key-SECRET"}],
            "triggers": {"leads": {}},
            "sinks": [{"name": "crm", "url": "http://127.0.0.1:9/hook"}],
        }
    )
    store = Store.open(db_url)
    items = key_items([{"id": str(i), "name": f"Lead {i}"} for i in range(30)], ["id"])
    store.polls.record(
        "acme", "leads", items, event_type="lead.new", emit_first=True, sinks=["crm"], now=now()
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        async def ready() -> Health:
            return Health(live=True, ready=True, reasons=())

        app = make_app(
            Metrics(lambda: {}, now),  # type: ignore[arg-type]
            readiness=ready,
            liveness=lambda: Health(live=True, ready=True, reasons=()),
            mount=lambda a: console.mount(a, lambda: config, store, clock=now),
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        runner = box["runner"]
        assert isinstance(runner, web.AppRunner)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        store.close()


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_failure(served: str, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{served}/api/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            "25",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated.group(1)) > 300, out[-2000:]
    assert "Tested: 11" in out
    assert "failure" not in out.split("Test cases:")[-1], out[-2000:]
    print(f"schemathesis: {generated.group(1)} test cases generated, 11 operations, 0 failures")
