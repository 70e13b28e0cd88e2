"""One poll through the real store, the upstream faked with httpx.MockTransport."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from trigger_engine.config import Config, config_from_dict
from trigger_engine.db.schema import events, seen_keys
from trigger_engine.db.store import Store
from trigger_engine.polling.poller import Poller
from trigger_engine.polling.source import Source

KEY = "alfred-key-77e1"
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response]


def make_config(db_url: str, triggers: dict[str, Any] | None = None) -> Config:
    return config_from_dict(
        {
            "engine": {"database": db_url},
            "source": {"base_url": "http://alfred.test/api"},
            "accounts": [{"name": "acme", "api_key": KEY}],
            "triggers": triggers or {"leads": {}},
            "sinks": [{"name": "crm", "url": "http://crm.test/hook"}],
        }
    )


class Upstream:
    """The fake API: answers with whatever ``reply`` currently is."""

    def __init__(self) -> None:
        self.reply: Handler = lambda _r: httpx.Response(200, json=[])
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def poller_for(config: Config, store: Store, upstream: Upstream) -> Poller:
    source = Source(config.source, transport=httpx.MockTransport(upstream))
    return Poller(config, store, source, rand=lambda: 0.5)


def count(store: Store, table: Any) -> int:
    with store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_items_without_a_key_are_skipped_with_a_warning_naming_the_field(
    db_url: str, store: Store, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(db_url)
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    poller.poll(account, trigger)
    upstream.reply = lambda _r: httpx.Response(
        200, json=[{"id": "a"}, {"name": "no id"}, {"id": None}, {"id": ""}, "junk", {"id": "b"}]
    )
    with caplog.at_level(logging.WARNING):
        report = poller.poll(account, trigger)
    assert (report.new_events, report.keyless) == (2, 4)
    warnings = [r for r in caplog.records if r.getMessage() == "poll.items_without_key"]
    assert len(warnings) == 1
    context = warnings[0].te_context  # type: ignore[attr-defined]
    assert (context["trigger"], context["field"], context["skipped"]) == ("leads", "id", 4)


def test_composite_and_nested_keys_from_the_config(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(
        db_url,
        {"leads": {"key": ["campaign.key", "person.key"], "on_first_poll": "emit"}},
    )
    poller = poller_for(config, store, upstream)
    same_person_two_campaigns = [
        {"campaign": {"key": 46}, "person": {"key": "P1"}},
        {"campaign": {"key": 47}, "person": {"key": "P1"}},
        {"campaign": {"key": 46}, "person": {"key": "P1"}, "status": "repeated"},
    ]
    upstream.reply = lambda _r: httpx.Response(200, json=same_person_two_campaigns)
    report = poller.poll(config.accounts[0], config.triggers["leads"])
    assert (report.new_events, report.duplicates) == (2, 1)
    with store.db.engine.connect() as conn:
        keys = set(conn.execute(select(seen_keys.c.key)).scalars())
    assert keys == {'[46,"P1"]', '[47,"P1"]'}


@pytest.mark.parametrize(
    "reply",
    [
        lambda _r: httpx.Response(500),
        lambda _r: httpx.Response(401),
        lambda _r: httpx.Response(200, text="<html>maintenance</html>"),
        lambda _r: httpx.Response(200, content=b'[{"id": "new-1"}, {"id": "ne'),
        lambda _r: httpx.Response(200, json={"leads": [{"id": "new-1"}]}),
    ],
    ids=["500", "401", "html", "truncated", "object"],
)
def test_a_failed_poll_marks_nothing_and_fires_nothing(
    db_url: str, store: Store, upstream: Upstream, reply: Handler
) -> None:
    config = make_config(db_url)
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    upstream.reply = lambda _r: httpx.Response(200, json=[{"id": "old"}])
    poller.poll(account, trigger)
    upstream.reply = reply
    with freeze_time(T0):
        report = poller.poll(account, trigger)
    assert not report.ok
    assert KEY not in (report.error or "")
    assert (count(store, seen_keys), count(store, events)) == (1, 0)
    state = store.polls.state("acme", "leads")
    assert state is not None
    assert state.consecutive_failures == 1
    assert state.backoff_until == T0 + timedelta(seconds=300)  # one interval, rand=0.5
    assert state.last_error == report.error
    # the API recovers: the new item fires once, nothing was lost
    upstream.reply = lambda _r: httpx.Response(200, json=[{"id": "new-1"}, {"id": "old"}])
    recovered = poller.poll(account, trigger)
    assert (recovered.ok, recovered.new_events) == (True, 1)


def test_a_first_poll_that_fails_is_not_the_first_poll(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url)
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    upstream.reply = lambda _r: httpx.Response(503)
    assert not poller.poll(account, trigger).ok
    upstream.reply = lambda _r: httpx.Response(200, json=[{"id": "existing"}])
    report = poller.poll(account, trigger)
    assert (report.first_poll, report.remembered, report.new_events) == (True, 1, 0)


def test_consecutive_failures_back_off_exponentially(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url)
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    upstream.reply = lambda _r: httpx.Response(502)
    waits = []
    with freeze_time(T0):
        for _ in range(6):
            poller.poll(account, trigger)
            state = store.polls.state("acme", "leads")
            assert state is not None and state.backoff_until is not None
            waits.append((state.backoff_until - T0).total_seconds())
    assert waits == [300, 600, 1200, 2400, 3600, 3600]


def test_the_key_travels_as_the_auth_param_and_extra_params_are_sent(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, {"leads": {"params": {"status": "active", "limit": 100}}})
    poller_for(config, store, upstream).poll(config.accounts[0], config.triggers["leads"])
    (request,) = upstream.requests
    assert request.url.path == "/api/leads"
    assert dict(request.url.params) == {"api_key": KEY, "status": "active", "limit": "100"}


# ------------------------------------------------------------------- the store fails a poll


def test_a_poll_the_database_refuses_fails_as_store_and_is_recorded_where_possible(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    """A full disk: the poll fails with outcome ``store``, nothing is marked seen, the next
    poll after the database recovers fires the item once; the trigger is never paused
    for it (pausing would not fix our own database)."""
    config = make_config(db_url, {"leads": {"pause_after_failures": 2, "pause_after": "1ms"}})
    store.db.retry_waits = ()
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    upstream.reply = lambda _r: httpx.Response(200, json=[{"id": "old"}])
    poller.poll(account, trigger)
    upstream.reply = lambda _r: httpx.Response(200, json=[{"id": "new-1"}, {"id": "old"}])
    if store.dialect == "postgresql":
        with store.db.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'No space left on device' USING ERRCODE = 'disk_full'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER full_disk BEFORE INSERT ON seen_keys EXECUTE FUNCTION refuse()"
            )
    else:
        with store.db.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            driver.execute("PRAGMA query_only = 1")  # every write refused
    reports = [poller.poll(account, trigger) for _ in range(3)]
    assert [(r.ok, r.outcome) for r in reports] == [(False, "store")] * 3
    assert "No space left on device" in (reports[0].error or "") or "readonly" in (
        reports[0].error or ""
    )
    if store.dialect == "postgresql":  # the failure itself could be written down
        state = store.polls.state("acme", "leads")
        assert state is not None
        assert (state.last_outcome, state.consecutive_failures, state.paused) == ("store", 3, False)
        assert "No space left on device" in (state.last_error or "")
        with store.db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER full_disk ON seen_keys")
    else:
        with store.db.engine.connect() as conn:
            driver = conn.connection.driver_connection
            driver.execute("PRAGMA query_only = 0")
    assert (count(store, seen_keys), count(store, events)) == (1, 0)
    recovered = poller.poll(account, trigger)
    assert (recovered.ok, recovered.new_events) == (True, 1)
