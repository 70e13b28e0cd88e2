"""The console's logout, the actions not covered by test_console_pages (sink enable and
test event, trigger retry, replay of ticked events), the status ``quarantined`` in the API
and the events page, the addresses the live script polls, and a reload that changes
``[console]`` taking effect at once; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.integration.test_admin_api import AUTH, T0, TOKEN, fire, make_config
from tests.integration.test_console_pages import SCRIPT, Browser, csrf_of, run
from tests.receiver import Answer, Receiver
from trigger_engine.config import Config, config_from_dict
from trigger_engine.db.schema import quarantine
from trigger_engine.db.store import Store
from trigger_engine.ops.health import Health
from trigger_engine.ops.http_api import make_app
from trigger_engine.ops.metrics import Metrics
from trigger_engine.runtime import console
from trigger_engine.states import PollOutcome
from trigger_engine.types import EventFilter


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def test_logout_clears_the_session_and_needs_the_csrf_token(store: Store) -> None:
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        _, text, _ = await b.get("/login")
        assert 'action="/logout"' not in text  # no Log out button before logging in
        await b.login()
        _, text, _ = await b.get("/")
        assert 'action="/logout"' in text and ">Log out</button>" in text
        status, _, _ = await b.post("/logout", {})
        assert status == 403  # like every action: the CSRF token
        status, _, _ = await b.get("/")
        assert status == 200
        status, _, response = await b.post("/logout", {"csrf_token": csrf_of(text)})
        assert status == 303 and response.headers["Location"].startswith("/login")
        assert response.cookies["te_session"].value == ""
        jar = b.client.session.cookie_jar.filter_cookies(URL(str(b.client.make_url("/"))))
        assert not jar.get("te_session")
        _, page, _ = await b.get(response.headers["Location"])
        assert "Logged out." in page
        status, _, _ = await b.get("/")
        assert status == 401

    run(config, store, test)


def test_enable_test_event_retry_and_replay_of_ticked_events(store: Store) -> None:
    fire(store, [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    store.sinks.set_enabled("ops", False, reason="410 Gone", now=T0)
    store.polls.record_failure(
        "acme",
        "leads",
        outcome=PollOutcome.TRANSIENT,
        error="HTTP 503",
        backoff_until=T0 + timedelta(hours=1),
        now=T0,
    )
    with Receiver(lambda _r: Answer(status=200)) as crm:
        config = make_config(str(store.db.engine.url), crm.url)

        async def test(b: Browser) -> None:
            await b.login()
            _, text, _ = await b.get("/")
            csrf = {"csrf_token": csrf_of(text)}
            for action in ("enable", "test"):
                assert f'action="/sinks/ops/{action}"' in text
            _, _, response = await b.post("/sinks/ops/enable", csrf)
            assert not store.sinks.stats()["ops"].disabled
            _, page, _ = await b.get(response.headers["Location"])
            assert "sink ops enabled" in page
            _, _, response = await b.post("/sinks/crm/test", csrf)
            _, page, _ = await b.get(response.headers["Location"])
            assert re.search(r"test event sent to crm: HTTP 200 in \d+ ms", page)
            assert [r.json()["type"] for r in crm.requests] == ["engine.test"]
            _, _, response = await b.post("/triggers/acme/leads/retry", csrf)
            _, page, _ = await b.get(response.headers["Location"])
            assert "acme/leads: backoff cleared" in page
            assert store.polls.state("acme", "leads").backoff_until is None  # type: ignore[union-attr]
            # replay the events ticked on the events page
            _, text, _ = await b.get("/events")
            assert 'form="replay-selected"' in text and 'action="/events/replay"' in text
            _, _, response = await b.post("/events/replay", csrf)
            _, page, _ = await b.get(response.headers["Location"])
            assert "Tick the events to replay first." in page
            _, _, response = await b.post("/events/replay", {**csrf, "event": "no-such"})
            _, page, _ = await b.get(response.headers["Location"])
            assert "no event no-such" in page

        run(config, store, test)


def test_replay_of_ticked_events_queues_them_again(store: Store) -> None:
    fire(store, [{"id": "1"}, {"id": "2"}])
    ids = [e.id for e in store.events.list(EventFilter(), limit=10)]
    claimed = store.deliveries.claim_due(
        owner="n", now=T0 + timedelta(hours=1), lease=60, capacity={"crm": 10, "ops": 10}
    )
    assert len(claimed) == 4
    store.deliveries.release_claims("n")
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        _, text, _ = await b.get("/events")
        form = {"csrf_token": csrf_of(text)}
        origin = str(b.client.make_url("/")).rstrip("/")
        response = await b.client.post(
            "/events/replay",
            data=[("csrf_token", form["csrf_token"]), ("event", ids[0]), ("event", ids[1])],
            headers={"Origin": origin},
            allow_redirects=False,
        )
        _, page, _ = await b.get(response.headers["Location"])
        assert "replayed 4 deliveries of 2 events." in page

    run(config, store, test)


def _quarantine(store: Store, key: str) -> None:
    with store.db.tx() as conn:
        conn.execute(
            quarantine.insert().values(
                account="acme",
                trigger="leads",
                key=key,
                reason=f"poisoned item {SCRIPT}",
                first_seen_at=T0,
                last_seen_at=T0 + timedelta(minutes=5),
                polls=3,
            )
        )


def test_status_quarantined_in_the_api_and_the_events_page(store: Store) -> None:
    fire(store, [{"id": "1"}])
    _quarantine(store, "poison")
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        response = await b.client.get("/api/v1/events?status=quarantined", headers=AUTH)
        doc = await response.json()
        assert response.status == 200
        assert doc["events"] == [] and doc["next_cursor"] is None
        (item,) = doc["quarantined"]
        assert item["key"] == "poison" and item["status"] == "quarantined"
        assert item["type"] == "lead.new" and item["polls"] == 3 and item["id"] is None
        # with a delivery status too: both; with a sink or a search: no quarantined item
        response = await b.client.get(
            "/api/v1/events",
            params=[("status", "quarantined"), ("status", "pending")],
            headers=AUTH,
        )
        doc = await response.json()
        assert len(doc["events"]) == 1 and len(doc["quarantined"]) == 1
        for extra in ({"sink": "crm"}, {"search": "poison"}):
            response = await b.client.get(
                "/api/v1/events", params={"status": "quarantined", **extra}, headers=AUTH
            )
            assert "quarantined" not in await response.json()
        response = await b.client.get("/api/v1/events", headers=AUTH)
        assert "quarantined" not in await response.json()  # only when asked for
        response = await b.client.get("/api/v1/events?status=quarantind", headers=AUTH)
        assert response.status == 400 and "quarantined" in (await response.json())["error"]
        # replay has no quarantined items to queue: the CLI's refusal
        response = await b.client.post(
            "/api/v1/replay", json={"since": "1d", "status": "quarantined"}, headers=AUTH
        )
        assert response.status == 400
        # the events page: the same filter, the reason escaped
        await b.login()
        status, text, _ = await b.get("/events", params={"status": "quarantined"})
        assert status == 200 and "<h2>Quarantined items</h2>" in text
        assert html.escape(f"poisoned item {SCRIPT}") in text and SCRIPT not in text
        assert "No events match." in text

    run(config, store, test)


def test_the_pages_carry_the_addresses_the_live_script_polls(store: Store) -> None:
    fire(store, [{"id": str(i)} for i in range(3)])
    newest = [e.id for e in store.events.list(EventFilter(), limit=10)]
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        _, text, _ = await b.get("/events", params={"sink": "crm", "limit": "2"})
        live = re.search(r'<table id="events" data-live="([^"]*)">', text)
        assert live
        address = html.unescape(live.group(1))
        assert address.startswith("/api/v1/events?") and "sink=crm" in address
        # the session cookie is enough for the script's GET
        response = await b.client.get(address)
        assert response.status == 200
        assert [e["id"] for e in (await response.json())["events"]] == newest[:2]
        assert re.findall(r'<tr data-event="([^"]+)">', text) == newest[:2]
        older = re.search(r'<a rel="next" href="([^"]+)">older</a>', text)
        assert older
        _, rest, _ = await b.get(html.unescape(older.group(1)))
        assert '<table id="events" data-live="">' in rest  # an older page stays as it is
        _, text, _ = await b.get(f"/events/{newest[0]}")
        live = re.search(r'<div id="event" data-live="([^"]+)">', text)
        assert live and html.unescape(live.group(1)) == f"/api/v1/events/{newest[0]}"
        assert '<section data-delivery="crm">' in text
        assert '<span data-field="next_attempt_at">' in text
        response = await b.client.get(html.unescape(live.group(1)))
        assert (await response.json())["id"] == newest[0]

    run(config, store, test)


def test_a_reload_changing_the_console_takes_effect_at_once(store: Store) -> None:
    url = str(store.db.engine.url)
    configs: list[Config] = [make_config(url, "http://127.0.0.1:9")]
    other = "another-console-token-5678"

    def with_console(console_table: dict[str, str] | None) -> Config:
        raw = {
            "engine": {"database": url, "listen": "127.0.0.1:9464"},
            "accounts": [{"name": "acme", "api_key": "k"}],
            "triggers": {"leads": {}},
            "sinks": [{"name": "crm", "url": "http://127.0.0.1:9/hook"}],
        }
        if console_table is not None:
            raw["console"] = console_table
        return config_from_dict(raw)

    async def go() -> None:
        async def ready() -> Health:
            return Health(live=True, ready=True, reasons=())

        app = make_app(
            Metrics(lambda: {}, lambda: T0),  # type: ignore[arg-type]
            readiness=ready,
            liveness=lambda: Health(live=True, ready=True, reasons=()),
            mount=lambda a: console.mount(a, lambda: configs[-1], store, clock=lambda: T0),
        )
        async with TestClient(TestServer(app)) as client:

            async def status(path: str, token: str | None = None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await client.get(path, headers=headers)
                return response.status

            login = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
            assert login.status == 303
            assert await status("/") == 200  # by the session cookie
            assert await status("/api/v1/status", TOKEN) == 200
            # the token changed: the old one and its session refused, the new one let in
            configs.append(with_console({"token": other}))
            assert await status("/api/v1/status", TOKEN) == 401
            assert await status("/") == 401
            assert await status("/api/v1/status", other) == 200
            # [console] removed: off, whatever the token; /metrics still served
            configs.append(with_console(None))
            assert await status("/api/v1/status", other) == 404
            assert await status("/login") == 404
            assert await status("/metrics") == 200
            # added again: on
            configs.append(with_console({"token": other}))
            assert await status("/api/v1/status", other) == 200

    asyncio.run(go())
