"""The web console's pages (``[console]``) against a real store on SQLite and
PostgreSQL, through aiohttp's test server: the login flow, what each page shows, every
upstream value escaped, the actions as POST forms with the CSRF token, and no secret of
the configuration in any page."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.integration.test_admin_api import T0, TOKEN, fire, make_config
from trigger_engine.config import Config
from trigger_engine.db import events as events_module
from trigger_engine.db.store import Store
from trigger_engine.ops.health import Health
from trigger_engine.ops.http_api import make_app
from trigger_engine.ops.metrics import Metrics
from trigger_engine.runtime import console
from trigger_engine.states import DeliveryStatus
from trigger_engine.types import AttemptOutcome, EventFilter

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


class Browser:
    """A cookie-keeping client; every answer checked for the configuration's secrets."""

    def __init__(self, client: TestClient[web.Request, web.Application], config: Config) -> None:
        self.client = client
        self.secrets = config.secrets()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        response = await self.client.get(path, allow_redirects=False, **kwargs)
        text = await response.text()
        for secret in self.secrets:
            assert secret not in text, f"a secret in the page {path}"
        return response.status, text, response

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> tuple[int, str, Any]:
        origin = str(self.client.make_url("/")).rstrip("/")
        headers = {"Origin": origin, **kwargs.pop("headers", {})}
        response = await self.client.post(
            path, data=data, headers=headers, allow_redirects=False, **kwargs
        )
        text = await response.text()
        for secret in self.secrets:
            assert secret not in text, f"a secret in the answer to POST {path}"
        return response.status, text, response

    async def login(self) -> None:
        status, _, response = await self.post("/login", {"token": TOKEN})
        assert status == 303 and response.headers["Location"] == "/"


def run(config: Config, store: Store, test: Callable[[Browser], Awaitable[None]]) -> None:
    async def go() -> None:
        async def ready() -> Health:
            return Health(live=True, ready=True, reasons=())

        app = make_app(
            Metrics(lambda: {}, lambda: T0),  # type: ignore[arg-type]
            readiness=ready,
            liveness=lambda: Health(live=True, ready=True, reasons=()),
            mount=lambda a: console.mount(a, lambda: config, store, clock=lambda: T0),
        )
        async with TestClient(TestServer(app)) as client:
            await test(Browser(client, config))

    asyncio.run(go())


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def test_login_flow_and_401_without_the_token(store: Store) -> None:
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")
    fire(store, [{"id": "1", "name": "Ann"}])

    async def test(b: Browser) -> None:
        for path in ("/", "/events", "/events/anything"):
            status, text, response = await b.get(path)
            assert status == 401, path
            assert 'href="/login"' in text and "Ann" not in text and "acme" not in text
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        status, text, _ = await b.get("/login")
        assert status == 200 and 'name="token"' in text and 'type="password"' in text
        status, _, _ = await b.get("/static/console.js")
        assert status == 200
        status, text, _ = await b.post("/login", {"token": "wrong"})
        assert status == 401 and "That is not the token." in text
        assert not b.client.session.cookie_jar.filter_cookies(URL(str(b.client.make_url("/"))))
        status, _, response = await b.post("/login", {"token": TOKEN})
        assert status == 303 and response.headers["Location"] == "/"
        cookie = response.cookies["te_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert TOKEN not in cookie.value
        for path in ("/", "/events"):
            status, _, _ = await b.get(path)
            assert status == 200, path
        # scripts: the Bearer header, no cookie
        b.client.session.cookie_jar.clear()
        status, _, _ = await b.get("/")
        assert status == 401
        status, text, _ = await b.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "acme/leads" in text

    run(config, store, test)


def test_pages_show_the_data_escaped(store: Store) -> None:
    fire(store, [{"id": str(i), "name": f"Lead {i}"} for i in range(4)])
    fire(store, [{"id": "x", "name": SCRIPT}], T0 + timedelta(minutes=1))
    newest = store.events.list(EventFilter(), limit=100)
    claimed = store.deliveries.claim_due(
        owner="n", now=T0 + timedelta(hours=1), lease=60, capacity={"crm": 100}
    )
    target = next(d for d in claimed if d.event_id == newest[0].id)
    store.deliveries.record_attempts(
        [
            AttemptOutcome(
                target.id,
                "crm",
                target.event_id,
                1,
                T0 + timedelta(hours=1),
                321,
                500,
                "HTTP 500",
                DeliveryStatus.FAILED,
                next_attempt_at=T0 + timedelta(hours=2),
                response_body=f"oops {SCRIPT}",
            )
        ],
        owner="n",
    )
    store.deliveries.release_claims("n")
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        status, text, _ = await b.get("/")
        assert status == 200
        assert "acme/leads" in text and 'data-sink="crm"' in text and 'data-sink="ops"' in text
        ops = re.search(r'data-sink="ops">(.*?)</tr>', text)
        assert ops and '<td data-field="pending">5</td>' in ops.group(1)
        assert '<td data-field="items_known">5</td>' in text
        assert "<h2>Nodes</h2>" in text
        assert '<script src="/static/console.js"' in text and "<style" not in text
        # the events list, newest first, the lead's name never a tag
        status, text, _ = await b.get("/events")
        assert status == 200
        ids = re.findall(r'<a href="/events/([^"]+)">', text)
        assert ids == [e.id for e in newest]
        status, text, _ = await b.get("/events", params={"search": "script>"})
        assert re.findall(r'<a href="/events/([^"]+)">', text) == [newest[0].id]
        # filters and the "older" link with the cursor
        status, text, _ = await b.get("/events", params={"limit": "2", "sink": "crm"})
        older = re.search(r'<a rel="next" href="([^"]+)">older</a>', text)
        assert older
        status, rest, _ = await b.get(html.unescape(older.group(1)))
        assert re.findall(r'<a href="/events/([^"]+)">', rest) == [e.id for e in newest[2:4]]
        status, text, _ = await b.get("/events", params={"status": "sent"})
        assert status == 400 and "status" in text
        # one event: payload escaped, the attempt with its answer escaped, Replay
        status, text, _ = await b.get(f"/events/{newest[0].id}")
        assert status == 200
        assert SCRIPT not in text
        assert html.escape(SCRIPT) in text
        assert "HTTP 500" in text and ">321<" in text and ">500<" in text
        assert html.escape(f"oops {SCRIPT}") in text
        assert f'action="/events/{newest[0].id}/replay"' in text
        status, _, _ = await b.get("/events/no-such-event")
        assert status == 404

    run(config, store, test)


def test_a_bounded_search_says_so_on_the_events_page(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search that could read only the newest SEARCH_SCAN_BOUND events it could not look
    up in the index (here a 2-letter term) says so under the list, and one that read them
    all says nothing."""
    monkeypatch.setattr(events_module, "SEARCH_SCAN_BOUND", 2)
    for i in range(4):
        fire(store, [{"id": str(i), "name": f"Lead {i}"}], T0 + timedelta(minutes=i))
    while store.search_index.index_batch():  # as the daemon's indexer would have
        pass
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        status, text, _ = await b.get("/events", params={"search": '0"'})  # the oldest lead
        assert status == 200 and 'id="no-events"' in text
        assert 'id="search-bounded"' in text and "only the newest 2 of the events" in text
        status, text, _ = await b.get("/events", params={"search": "Lead 0"})  # indexed
        assert re.findall(r'<a href="/events/([^"]+)">', text) and "search-bounded" not in text

    run(config, store, test)


def test_actions_are_post_forms_with_the_csrf_token(store: Store) -> None:
    fire(store, [{"id": "1"}, {"id": "2"}])
    event_id = store.events.list(EventFilter(), limit=1)[0].id
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        _, text, _ = await b.get("/")
        csrf = csrf_of(text)
        # without the CSRF token, or from another site: refused, nothing changed
        status, text, _ = await b.post("/sinks/crm/pause", {})
        assert status == 403 and "CSRF" in text
        status, _, _ = await b.post(
            "/sinks/crm/pause", {"csrf_token": csrf}, headers={"Origin": "https://evil.test"}
        )
        assert status == 403
        assert not store.sinks.stats()["crm"].paused
        status, _, response = await b.post("/sinks/crm/pause", {"csrf_token": csrf})
        assert status == 303
        assert store.sinks.stats()["crm"].paused
        _, page, _ = await b.get(response.headers["Location"])
        assert "sink crm paused (2 held, 0 released)" in page
        status, _, response = await b.post("/sinks/crm/resume", {"csrf_token": csrf})
        assert not store.sinks.stats()["crm"].paused
        assert "released" in response.headers["Location"]
        status, _, response = await b.post("/triggers/acme/leads/pause", {"csrf_token": csrf})
        assert status == 303
        assert next(s for s in store.polls.states() if s.trigger == "leads").paused
        _, page, _ = await b.get(response.headers["Location"])
        assert "acme/leads paused" in page
        _, _, response = await b.post("/triggers/acme/leads/retry", {"csrf_token": csrf})
        _, page, _ = await b.get(response.headers["Location"])
        assert "resume it first" in page
        await b.post("/triggers/acme/leads/resume", {"csrf_token": csrf})
        assert not next(s for s in store.polls.states() if s.trigger == "leads").paused
        # replay from the event's page
        before = store.sinks.stats()["crm"].counts.get(DeliveryStatus.PENDING, 0)
        status, _, response = await b.post(f"/events/{event_id}/replay", {"csrf_token": csrf})
        assert status == 303 and response.headers["Location"].startswith(f"/events/{event_id}")
        _, page, _ = await b.get(response.headers["Location"])
        assert f"replayed {event_id}" in page
        assert store.sinks.stats()["crm"].counts.get(DeliveryStatus.PENDING, 0) >= before
        # a flash is escaped
        _, page, _ = await b.get("/", params={"flash": SCRIPT})
        assert SCRIPT not in page and html.escape(SCRIPT) in page
        # GET does not change anything
        status, _, _ = await b.get("/sinks/crm/pause")
        assert status == 405

    run(config, store, test)
