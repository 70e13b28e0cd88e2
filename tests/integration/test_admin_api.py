"""The admin API (``[console]``) against a real store on SQLite and PostgreSQL, through
aiohttp's test server: the token is required on every route, each route answers what the
CLI would, changing actions are POSTs, and no secret of the configuration is ever in an
answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.receiver import Answer, Receiver
from trigger_engine.config import Config, config_from_dict
from trigger_engine.core.dedupe import key_items
from trigger_engine.db.store import Store
from trigger_engine.ops.health import Health
from trigger_engine.ops.http_api import make_app
from trigger_engine.ops.metrics import Metrics
from trigger_engine.runtime import console
from trigger_engine.runtime.console.openapi import document
from trigger_engine.states import DeliveryStatus
from trigger_engine.types import EventFilter

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
TOKEN = "console-token-0123456789abcdefXYZ"
API_KEY = "alfred-api-key-SECRET-987"
SINK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADER_VALUE = "Bearer crm-header-SECRET-654"
URL_TOKEN = "urltoken-SECRET-321"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_config(db_url: str, sink_url: str) -> Config:
    return config_from_dict(
        {
            "engine": {"database": db_url, "listen": "127.0.0.1:9464"},
            "console": {"token": TOKEN},
            "accounts": [{"name": "acme", "api_key": API_KEY}],
            "triggers": {"leads": {}},
            "sinks": [
                {
                    "name": "crm",
                    "url": f"{sink_url}/hook?token={URL_TOKEN}",
                    "secret": SINK_SECRET,
                    "headers": {"Authorization": HEADER_VALUE},
                },
                {"name": "ops", "url": f"{sink_url}/ops"},
            ],
        }
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def fire(store: Store, items: list[dict[str, Any]], now: datetime = T0) -> None:
    store.polls.record(
        "acme",
        "leads",
        key_items(items, ["id"]),
        event_type="lead.new",
        emit_first=True,
        sinks=["crm", "ops"],
        now=now,
    )


class Api:
    """Requests to the app, every answer checked for the configuration's secrets."""

    def __init__(self, client: TestClient[web.Request, web.Application], config: Config) -> None:
        self.client = client
        self.secrets = config.secrets()

    async def call(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        response = await self.client.request(method, path, headers=headers, **kwargs)
        text = await response.text()
        for secret in self.secrets:
            assert secret not in text, f"a secret in the answer to {method} {path}"
        body = await response.json() if "json" in response.content_type else text
        return response.status, body, dict(response.headers)


def run(config: Config, store: Store, test: Callable[[Api], Awaitable[None]]) -> None:
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
            await test(Api(client, config))

    asyncio.run(go())


ROUTES = [
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/some-id"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/replay"),
    ("POST", "/api/v1/sinks/crm/pause"),
    ("POST", "/api/v1/sinks/crm/resume"),
    ("POST", "/api/v1/sinks/crm/enable"),
    ("POST", "/api/v1/sinks/crm/test"),
    ("POST", "/api/v1/triggers/acme/leads/pause"),
    ("POST", "/api/v1/triggers/acme/leads/resume"),
    ("POST", "/api/v1/triggers/acme/leads/retry"),
]


def test_every_route_refuses_a_missing_or_wrong_token(store: Store) -> None:
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(api: Api) -> None:
        for method, path in ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},  # no scheme
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Cookie": "te_session=forged"},
            ):
                status, body, head = await api.call(method, path, auth=False, headers=headers)
                assert status == 401, (method, path, headers)
                assert set(body) == {"error"}
                assert head["X-Content-Type-Options"] == "nosniff"
        # the health and metrics pages stay open
        status, _, _ = await api.call("GET", "/healthz", auth=False)
        assert status == 200
        # and nothing changed
        assert not store.sinks.stats().get("crm") or not store.sinks.stats()["crm"].paused

    run(config, store, test)


def test_status_events_and_one_event(store: Store) -> None:
    fire(store, [{"id": str(i), "name": f"Lead {i}"} for i in range(7)])
    fire(store, [{"id": "x", "name": "<script>alert(1)</script>"}], T0 + timedelta(minutes=1))
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")
    newest = store.events.list(EventFilter(), limit=100)

    async def test(api: Api) -> None:
        status, doc, head = await api.call("GET", "/api/v1/status")
        assert status == 200
        assert head["Content-Security-Policy"].startswith("default-src 'self'")
        assert head["X-Frame-Options"] == "DENY"
        assert head["Referrer-Policy"] == "no-referrer"
        assert [(t["account"], t["trigger"]) for t in doc["triggers"]] == [("acme", "leads")]
        crm = next(s for s in doc["sinks"] if s["name"] == "crm")
        assert crm["pending"] == 8 and crm["url"].endswith("/hook")  # no query shown
        # pages of 3, newest first, keyset cursor, all events once
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            status, page, _ = await api.call("GET", "/api/v1/events", params=params)
            assert status == 200
            seen += [e["id"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [e.id for e in newest]
        # search and filters, as the CLI
        status, page, _ = await api.call("GET", "/api/v1/events", params={"search": "SCRIPT>"})
        assert [e["key"] for e in page["events"]] == ["x"]
        params = [("status", "pending"), ("sink", "crm"), ("type", "lead.new"), ("limit", "2")]
        status, page, _ = await api.call("GET", "/api/v1/events", params=params)
        assert status == 200 and len(page["events"]) == 2 and page["next_cursor"]
        for bad, word in (
            ({"status": "sent"}, "status"),
            ({"type": "lead.nwe"}, "did you mean"),
            ({"since": "yesterday-ish"}, "since"),
            ({"limit": "0"}, "limit"),
            ({"cursor": "nope"}, "cursor"),
            ({"colour": "red"}, "colour"),
            ({"account": "acne"}, "did you mean 'acme'"),
            ({"search": "a\x00b"}, "NUL"),  # PostgreSQL would refuse it: a 400, not a 500
            ({"type": "lead\x00"}, "NUL"),
        ):
            status, body, _ = await api.call("GET", "/api/v1/events", params=bad)
            assert status == 400 and word in body["error"], (bad, body)
        # one event, with its payload exactly
        status, one, _ = await api.call("GET", f"/api/v1/events/{newest[0].id}")
        assert status == 200
        assert one["payload"] == {"id": "x", "name": "<script>alert(1)</script>"}
        assert {d["sink"] for d in one["deliveries"]} == {"crm", "ops"}
        assert all(d["attempt_log"] == [] for d in one["deliveries"])
        status, body, _ = await api.call("GET", "/api/v1/events/no-such-event")
        assert status == 404 and body == {"error": "no event no-such-event"}
        status, body, _ = await api.call("GET", "/api/v1/events/a%00b")
        assert status == 400 and "NUL" in body["error"]

    run(config, store, test)


def test_actions_are_posts_and_do_what_the_cli_does(store: Store) -> None:
    fire(store, [{"id": "1"}, {"id": "2"}])
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(api: Api) -> None:
        for method, path in ROUTES:
            if method == "POST":
                status, body, _ = await api.call("GET", path)
                assert status == 405 and "error" in body, path
        status, body, _ = await api.call("POST", "/api/v1/sinks/crm/pause")
        assert status == 200 and body["held"] == 2 and body["paused"] is True
        assert store.sinks.stats()["crm"].counts[DeliveryStatus.HELD] == 2
        status, body, _ = await api.call("POST", "/api/v1/sinks/crm/resume")
        assert status == 200 and body["released"] == 2 and body["paused"] is False
        status, body, _ = await api.call("POST", "/api/v1/sinks/crm/enable")
        assert status == 200 and body["disabled"] is False
        status, body, _ = await api.call("POST", "/api/v1/sinks/crn/pause")
        assert status == 404 and "did you mean 'crm'" in body["error"]
        status, body, _ = await api.call("POST", "/api/v1/triggers/acme/leads/pause")
        assert status == 200 and body["paused"] is True
        assert next(s for s in store.polls.states() if s.trigger == "leads").paused
        status, body, _ = await api.call("POST", "/api/v1/triggers/acme/leads/retry")
        assert status == 409 and "paused" in body["error"]
        status, body, _ = await api.call("POST", "/api/v1/triggers/acme/leads/resume")
        assert status == 200 and body["paused"] is False
        status, body, _ = await api.call("POST", "/api/v1/triggers/acme/leads/retry")
        assert status == 200 and body["cleared"] is False
        status, body, _ = await api.call("POST", "/api/v1/triggers/acme/lead/pause")
        assert status == 404 and "did you mean 'leads'" in body["error"]

    run(config, store, test)


def test_replay_selects_like_the_cli(store: Store) -> None:
    fire(store, [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    first = store.events.list(EventFilter(), limit=10)[-1].id
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(api: Api) -> None:
        status, body, _ = await api.call("POST", "/api/v1/replay", json={})
        assert status == 400 and "event" in body["error"]
        status, body, _ = await api.call(
            "POST", "/api/v1/replay", json={"since": "1h", "dry_run": True, "sink": "crm"}
        )
        assert status == 200 and body["dry_run"] is True
        status, body, _ = await api.call(
            "POST", "/api/v1/replay", json={"event": [first], "sink": ["crm"]}
        )
        assert status == 200 and body["queued"] == 1 and body["events"] == 1
        status, body, _ = await api.call("POST", "/api/v1/replay", json={"event": "nope"})
        assert status == 404 and body["error"] == "no event nope"
        status, body, _ = await api.call("POST", "/api/v1/replay", json={"event": ["a\x00"]})
        assert status == 400 and "NUL" in body["error"]
        status, body, _ = await api.call("POST", "/api/v1/replay", data=b"[1")
        assert status == 400 and "JSON object" in body["error"]
        status, body, _ = await api.call("POST", "/api/v1/replay", json={"evnt": ["x"]})
        assert status == 400 and "evnt" in body["error"]

    run(config, store, test)


def test_a_test_event_is_signed_and_sent(store: Store) -> None:
    with Receiver(lambda _r: Answer(status=200)) as receiver:
        config = make_config(str(store.db.engine.url), receiver.url)

        async def test(api: Api) -> None:
            status, body, _ = await api.call("POST", "/api/v1/sinks/crm/test")
            assert status == 200 and body["ok"] is True and body["status_code"] == 200
            [got] = receiver.wait_for(1)
            assert got.headers["webhook-id"] == body["webhook_id"]
            assert got.headers["webhook-signature"].startswith("v1,")
            assert got.headers["authorization"] == HEADER_VALUE

        run(config, store, test)


def test_cookie_posts_need_same_origin_and_the_csrf_token(store: Store) -> None:
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")
    access = console.security.Access(lambda: TOKEN)
    cookie = f"te_session={access.session_value()}"

    async def test(api: Api) -> None:
        status, _, _ = await api.call(
            "GET", "/api/v1/status", auth=False, headers={"Cookie": cookie}
        )
        assert status == 200
        path = "/api/v1/sinks/crm/pause"
        origin = f"http://{api.client.host}:{api.client.port}"
        for headers, expected in (
            ({"Cookie": cookie}, 403),  # no origin
            ({"Cookie": cookie, "Origin": "http://evil.test"}, 403),
            ({"Cookie": cookie, "Origin": origin}, 403),  # no CSRF token
            ({"Cookie": cookie, "Origin": origin, "X-CSRF-Token": "x"}, 403),
            ({"Cookie": cookie, "Sec-Fetch-Site": "cross-site", "X-CSRF-Token": "x"}, 403),
            ({"Cookie": cookie, "Origin": origin, "X-CSRF-Token": access.csrf_value()}, 200),
        ):
            status, _, _ = await api.call("POST", path, auth=False, headers=headers)
            assert status == expected, headers

    run(config, store, test)


def test_the_openapi_document_describes_every_route(store: Store) -> None:
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")
    app = web.Application()
    console.mount(app, lambda: config, store, clock=lambda: T0)
    mounted = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")  # not the console's pages
    }
    described = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert mounted == described
